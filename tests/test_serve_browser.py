"""The upload page in headless Chromium (system /usr/bin/chromium through Playwright; no browser download)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from prodvision.data import product_icons_dir
from prodvision.paths import project_dir
from test_serve import server  # noqa: F401 -- the shared uvicorn process (a session fixture)

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


def test_upload_page_shows_prediction_and_cam(server, page, tmp_path):  # noqa: F811
    url, classes = server
    icon = sorted((product_icons_dir() / "fruit").glob("emoji_*.png"))[0]
    upload = tmp_path / icon.name
    shutil.copy(icon, upload)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('classes')", timeout=10_000)
    page.set_input_files("#file", str(upload))
    page.wait_for_function("document.getElementById('top1').textContent.trim().length > 0", timeout=15_000)
    top1 = page.inner_text("#top1").strip()
    assert top1 in classes
    assert page.locator("#bars .bar").count() == 3
    page.wait_for_function("(() => { const im = document.getElementById('cam');"
                           " return im.complete && im.naturalWidth === 224; })()", timeout=20_000)
    assert page.inner_text("#error").strip() == ""
    assert not errors, errors
    out = project_dir() / "figures" / "serve_upload_page.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000
