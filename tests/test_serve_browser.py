"""The upload page in headless Chromium (system /usr/bin/chromium through Playwright; no browser download)."""

from __future__ import annotations

import base64
import json
import shutil

import httpx
import pytest

from prodvision.paths import figures_dir
from test_serve import icon_classifier, server  # noqa: F401 -- the trained checkpoint and its uvicorn process

#: What the shop owner must not read outside the technical details.
JARGON = ("efficientnet", "onnx", "grad-cam", "gradcam", "torch", "logit", "softmax", "_")


@pytest.fixture(scope="module")
def page(chromium):
    pg = chromium.new_page(viewport={"width": 1000, "height": 700})
    yield pg
    pg.close()


def pretty(label: str) -> str:
    """The page's plain-language form of a class name."""
    s = label.replace("_", " ")
    return s[:1].upper() + s[1:]


CARDS_DONE = ("(n) => { const cards = document.querySelectorAll('[data-testid=result-card]');"
              " return cards.length === n && [...cards].every((c) => !c.querySelector('.pending')); }")
CAMS_DONE = ("(n) => [...document.querySelectorAll('[data-testid=result-card] .cam img')]"
             ".filter((im) => im.complete && im.naturalWidth === 224).length === n")


def test_upload_page_classifies_several_photos(server, icon_classifier, page, tmp_path):  # noqa: F811
    """Three held-out icons at once (one the model is unsure of, when the test split has one): one card each with the
    true class in plain words, three bars, the unsure badge exactly where /predict says so, and the heatmap."""
    url, classes = server
    picks = icon_classifier.right_ones(3)
    uploads = []
    for h in picks:
        uploads.append(tmp_path / h.path.name)
        shutil.copy(h.path, uploads[-1])
    expected = httpx.post(f"{url}/predict", files=[("files", (p.name, p.read_bytes(), "image/png"))
                                                   for p in uploads]).json()["results"]
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(url + "/")
    page.wait_for_function("document.getElementById('limits').textContent.startsWith('Up to')", timeout=10_000)
    assert page.evaluate("prettyLabel('musical_instruments')") == "Musical instruments"
    intro = page.inner_text("#intro")
    assert "Musical instruments" in intro and "musical_instruments" not in intro
    page.set_input_files("#file", [str(p) for p in uploads])
    page.wait_for_function(CARDS_DONE, arg=len(uploads), timeout=20_000)

    cards = page.locator("[data-testid=result-card]")
    for i, (h, res) in enumerate(zip(picks, expected)):
        card = cards.nth(i)
        assert card.get_attribute("data-filename") == h.path.name
        assert card.locator(".top1").inner_text().strip() == pretty(h.label), (h, res)
        bars = card.locator(".bar")
        assert bars.count() == 3
        assert [bars.nth(j).locator(".label").inner_text() for j in range(3)] == [pretty(t["label"])
                                                                                  for t in res["top_k"]]
        assert float(bars.nth(0).locator(".pct").inner_text().rstrip("%")) == pytest.approx(
            100 * res["probability"], abs=0.06)
        badge = card.locator(".badge-unsure")
        assert badge.count() == int(res["unsure"]), res
        if res["unsure"]:
            assert "please check" in badge.inner_text().lower()
            assert "less confident than the level chosen" in badge.get_attribute("title")
        assert card.locator(".card-error").count() == 0
    page.wait_for_function(CAMS_DONE, arg=len(uploads), timeout=40_000)
    assert page.locator(".cam figcaption").first.inner_text() == "Where the model looked"

    owner_text = page.evaluate("(() => { const c = document.body.cloneNode(true);"
                               " c.querySelector('#details').remove(); c.querySelectorAll('script, .name')"
                               ".forEach((e) => e.remove()); return c.innerText.toLowerCase(); })()")
    assert not [w for w in JARGON if w in owner_text], owner_text
    page.click("#details summary")
    tech = page.inner_text("#tech")
    info = httpx.get(f"{url}/model").json()
    assert info["arch"] in tech and info["backend"] in tech and info["weights_sha256"][:12] in tech
    assert f"{len(classes)} classes" in tech
    assert page.inner_text("#error").strip() == ""
    assert not errors, errors
    out = figures_dir() / "serve_upload_page.png"  # make test points $PRODVISION_FIGURES at a temporary folder
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000


def _drop(page, files: list[tuple[str, bytes, str]]) -> None:
    """Drop ``(name, data, type)`` files on the drop zone, as a drag from the desktop does."""
    payload = json.dumps([[n, base64.b64encode(d).decode(), t] for n, d, t in files])
    page.evaluate("""(files) => {
        const dt = new DataTransfer();
        for (const [name, b64, type] of JSON.parse(files)) {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, { type }));
        }
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true }));
    }""", payload)


def test_upload_page_errors_per_file_and_too_many_files(server, icon_classifier, page):  # noqa: F811
    """A dropped batch with a bad file: that card says why, the others are classified; too many files: one message."""
    url, _ = server
    good = icon_classifier.right_ones(1)[0]
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('limits').textContent.startsWith('Up to')", timeout=10_000)

    _drop(page, [(good.path.name, good.path.read_bytes(), "image/png"),
                 ("notes.txt", b"hello, I am text", "text/plain")])
    page.wait_for_function(CARDS_DONE, arg=2, timeout=20_000)
    cards = page.locator("[data-testid=result-card]")
    assert cards.nth(0).locator(".top1").inner_text().strip() == pretty(good.label)
    bad = cards.nth(1)
    assert bad.locator(".top1").count() == 0
    assert bad.get_attribute("data-filename") == "notes.txt" and bad.locator(".name").inner_text() == "notes.txt"
    assert "not a photo we can read" in bad.locator(".card-error").inner_text()
    assert "not an image" in bad.locator(".card-error").get_attribute("title")  # the server's reason
    assert page.inner_text("#error").strip() == ""  # one bad file is not a failed request

    _drop(page, [("empty.png", b"", "image/png")])  # every file failed: the request is a 400
    page.wait_for_function(CARDS_DONE, arg=1, timeout=20_000)
    assert "empty" in page.locator("[data-testid=result-card] .card-error").inner_text()
    assert "could not be checked" in page.inner_text("#error") and "empty" in page.inner_text("#error")

    max_files = httpx.get(f"{url}/model").json()["max_files"]
    _drop(page, [(f"{i}.png", good.path.read_bytes(), "image/png") for i in range(max_files + 1)])
    page.wait_for_function("document.getElementById('error').textContent.includes('at most')", timeout=5_000)
    assert f"at most {max_files}" in page.inner_text("#error")
    assert not errors, errors


def test_upload_page_of_an_exported_model_shows_no_explanations(chromium, tmp_path):
    """Issue 24, item 7: on an ONNX model (which cannot explain) the page classifies, asks /cam nothing and shows no
    explanation picture; its technical details say explanations are not available."""
    from prodvision.export import export_checkpoint
    from prodvision.serve import ServeConfig, serving
    from test_export import make_checkpoint
    from test_serve import icons

    onnx = export_checkpoint(make_checkpoint(tmp_path / "m.pt"), tmp_path / "deploy", formats=("onnx",))["onnx"]
    photos = icons(2)
    with serving(onnx, config=ServeConfig(threads=1), log_path=tmp_path / "serve.log") as (url, _):
        pg = chromium.new_page(viewport={"width": 1000, "height": 700})
        requests: list[str] = []
        errors: list[str] = []
        pg.on("request", lambda r: requests.append(r.url))
        pg.on("pageerror", lambda e: errors.append(str(e)))
        try:
            pg.goto(url + "/")
            pg.wait_for_function("document.getElementById('limits').textContent.startsWith('Up to')", timeout=10_000)
            pg.set_input_files("#file", [str(p) for p in photos])
            pg.wait_for_function(CARDS_DONE, arg=len(photos), timeout=20_000)
            pg.wait_for_timeout(500)  # time for any /cam request the page would (wrongly) send after the results
            cards = pg.locator("[data-testid=result-card]")
            assert all(cards.nth(i).locator(".top1").count() == 1 for i in range(len(photos)))
            assert pg.locator(".cam").count() == 0
            assert "explanations not available" in pg.text_content("#tech")  # in the closed details
        finally:
            pg.close()
    assert not [u for u in requests if u.endswith("/cam")], requests
    assert not errors, errors
