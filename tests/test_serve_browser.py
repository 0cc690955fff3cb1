"""The upload page in headless Chromium (system /usr/bin/chromium through Playwright; no browser download)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from prodvision.paths import project_dir
from test_serve import icon_classifier, server  # noqa: F401 -- the trained checkpoint and its uvicorn process

CHROMIUM = "/usr/bin/chromium"  # Debian's package: apt-get install -y chromium
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (Playwright must not "
                    "download its own browser here)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 900, "height": 640})
            yield pg
        finally:
            browser.close()


def test_upload_page_shows_prediction_and_cam(server, icon_classifier, page, tmp_path):  # noqa: F811
    """A held-out test-split icon, uploaded through the page: its true class on top, three bars, the Grad-CAM."""
    url, _ = server
    icon = icon_classifier.showcase
    upload = tmp_path / icon.name
    shutil.copy(icon, upload)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('classes')", timeout=10_000)
    page.set_input_files("#file", str(upload))
    page.wait_for_function("document.getElementById('top1').textContent.trim().length > 0", timeout=15_000)
    assert page.inner_text("#top1").strip() == icon_classifier.showcase_label
    bars = page.locator("#bars .bar")
    assert bars.count() == 3
    assert bars.nth(0).locator(".label").inner_text() == icon_classifier.showcase_label
    assert float(bars.nth(0).locator(".pct").inner_text().rstrip("%")) > 80
    page.wait_for_function("(() => { const im = document.getElementById('preview');"
                           " return im.complete && im.naturalWidth > 0; })()", timeout=10_000)
    page.wait_for_function("(() => { const im = document.getElementById('cam');"
                           " return im.complete && im.naturalWidth === 224; })()", timeout=20_000)
    assert page.inner_text("#cam-note").strip() == f"class: {icon_classifier.showcase_label}"
    assert page.inner_text("#error").strip() == ""
    assert not errors, errors
    out = project_dir() / "figures" / "serve_upload_page.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000
