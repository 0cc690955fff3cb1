"""Shared fixtures: tiny, CPU-only, offline, seeded."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")

CHROMIUM = "/usr/bin/chromium"  # Debian's package: apt-get install -y chromium (Playwright downloads no browser)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium():
    """Headless system Chromium through Playwright, one per test module (the upload page's and the book's tests)."""
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (Playwright must not "
                    "download its own browser here)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def tiny_folder(tmp_path, rng):
    """An ImageFolder of 16x16 PNGs: 3 classes x 6 images, plus the clutter real folders have."""
    root = tmp_path / "catalog"
    for c, colour in zip(["bag", "shoe", "shirt"], [(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (root / c).mkdir(parents=True)
        for i in range(6):
            arr = np.clip(np.array(colour) + rng.integers(-20, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    (root / ".ipynb_checkpoints").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / ".ipynb_checkpoints" / "x.png")
    (root / "bag" / "notes.txt").write_text("not an image")
    (root / "shoe" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "shirt" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3))


def _make_catalog(root, rng, per_class=12, classes=("bag", "shoe", "shirt")):
    """root/<class>/<i>.png: 20x20 colour images, one colour per class (learnable in a few steps)."""
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    for c, colour in zip(classes, colours):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(np.array(colour) + rng.integers(-30, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def make_catalog(rng):
    """A factory: ``make_catalog(root, per_class=12, classes=(...))`` writes an ImageFolder catalog and returns it."""
    return lambda root, per_class=12, classes=("bag", "shoe", "shirt"): _make_catalog(root, rng, per_class, classes)
