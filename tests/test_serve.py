"""The HTTP service against a real uvicorn process on 127.0.0.1: results, the error table, health, OpenAPI."""

from __future__ import annotations

import asyncio
import io
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from prodvision.data import product_icons_dir
from prodvision.serve import ServeConfig, create_app, serving
from test_export import ICON_CLASSES, make_checkpoint

#: Small limits so the error paths are cheap to hit.
CONFIG = ServeConfig(max_upload_mb=1.0, max_pixels=1_000_000, max_files=8, top_k=3, threads=1)
# One server per test session, shared with test_serve_browser.py (starting one costs seconds of imports).
_SHARED: dict = {"server": None, "users": 0, "stack": None}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """``(base_url, classes)`` of a running ``python -m prodvision serve`` on a tiny checkpoint; always stopped."""
    if _SHARED["server"] is None:
        d = tmp_path_factory.mktemp("serve")
        ck = make_checkpoint(d / "tiny.pt")
        stack = ExitStack()
        url, _ = stack.enter_context(serving(ck, config=CONFIG, log_path=d / "serve.log", timeout=120))
        _SHARED.update(server=(url, ICON_CLASSES), stack=stack)
    _SHARED["users"] += 1
    yield _SHARED["server"]
    _SHARED["users"] -= 1
    if _SHARED["users"] == 0:
        _SHARED["stack"].close()  # terminates the process
        _SHARED.update(server=None, stack=None)


def icons(n: int) -> list[Path]:
    files = sorted(product_icons_dir().glob("*/*.png"))
    return [files[int(i)] for i in np.linspace(0, len(files) - 1, n).astype(int)]


def png_bytes(mode: str, size: tuple[int, int], noise: bool = False) -> bytes:
    buf = io.BytesIO()
    if noise:  # incompressible pixels, so cutting the file loses image data
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    else:
        Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_health_ready_and_openapi(server):
    url, _ = server
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{url}/readyz")
    assert r.status_code == 200 and r.json()["backend"] == "onnx"
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/predict", "/cam", "/healthz", "/readyz"} <= set(spec["paths"])
    assert "text/html" in httpx.get(f"{url}/").headers["content-type"]
    assert httpx.get(f"{url}/model").json()["classes"] == ICON_CLASSES


def test_readyz_is_503_until_the_warm_up_ran(tmp_path):
    """In-process, without the lifespan (which starts the warm-up): not ready; after warm_up(): ready."""
    app = create_app(make_checkpoint(tmp_path / "m.pt"), CONFIG)

    async def get(path):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get(path)

    r = asyncio.run(get("/readyz"))
    assert r.status_code == 503 and r.json()["status"] == "warming_up"
    assert asyncio.run(get("/healthz")).status_code == 200
    app.state.warm_up()
    assert asyncio.run(get("/readyz")).status_code == 200


def test_predict_one_image(server):
    url, classes = server
    f = icons(1)[0]
    r = httpx.post(f"{url}/predict", files={"files": (f.name, f.read_bytes(), "image/png")})
    assert r.status_code == 200
    (res,) = r.json()["results"]
    assert res["filename"] == f.name
    probs = [t["probability"] for t in res["top_k"]]
    assert [t["label"] for t in res["top_k"]][0] in classes and len(probs) == 3
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_batch_of_8_with_one_bad_file(server):
    url, classes = server
    good = icons(7)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in good]
    files.insert(3, ("files", ("broken.png", b"definitely not an image", "image/png")))
    r = httpx.post(f"{url}/predict", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["filename"] for x in results] == [p.name for p in good[:3]] + ["broken.png"] + [p.name for p in good[3:]]
    assert results[3]["error"]["code"] == "not_image" and "top_k" not in results[3]
    ok = [x for i, x in enumerate(results) if i != 3]
    assert all(x["top_k"][0]["label"] in classes and "error" not in x for x in ok)


@pytest.mark.parametrize("name,data,status,code", [
    ("notes.txt", b"hello, I am text", 415, "not_image"),
    ("bomb.png", png_bytes("1", (4000, 4000)), 422, "decompression_bomb"),  # 16 Mpx, a few KB on the wire
    ("strip.png", png_bytes("RGB", (900, 10)), 422, "bad_size"),  # absurd aspect ratio
    ("truncated.png", png_bytes("RGB", (64, 64), noise=True)[:6000], 422, "truncated"),
    ("empty.png", b"", 400, "empty"),
], ids=["not_image", "bomb", "aspect", "truncated", "empty"])
def test_bad_images_get_4xx_with_a_reason(server, name, data, status, code):
    url, _ = server
    r = httpx.post(f"{url}/predict", files={"files": (name, data, "image/png")})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code and name in body["error"]["reason"]
    assert body["results"][0]["error"]["code"] == code


def test_request_over_the_body_limit_is_413(server):
    url, _ = server
    big = np.random.default_rng(0).bytes(CONFIG.max_body + 100_000)
    r = httpx.post(f"{url}/predict", files={"files": ("big.png", big, "image/png")})  # has Content-Length
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

    def chunks():  # no Content-Length: counted while reading
        for i in range(0, len(big), 64 * 1024):
            yield big[i:i + 64 * 1024]

    r = httpx.post(f"{url}/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["reason"]


def test_malformed_requests_are_400_and_too_many_files_413(server):
    url, _ = server
    r = httpx.post(f"{url}/predict", data={"other": "field"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = httpx.post(f"{url}/predict", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 400
    f = icons(1)[0].read_bytes()
    r = httpx.post(f"{url}/predict", files=[("files", (f"{i}.png", f, "image/png")) for i in range(9)])
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_files"


def test_cam_returns_a_png_overlay(server):
    url, classes = server
    f = icons(1)[0]
    r = httpx.post(f"{url}/cam", files={"file": (f.name, f.read_bytes(), "image/png")}, data={"target": classes[2]})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-cam-target"] == classes[2]
    assert np.asarray(Image.open(io.BytesIO(r.content))).shape == (224, 224, 3)
    r = httpx.post(f"{url}/cam", files={"file": (f.name, f.read_bytes(), "image/png")}, data={"target": "cars"})
    assert r.status_code == 400 and "cars" in r.json()["error"]["reason"]
    r = httpx.post(f"{url}/cam", files={"file": ("x.txt", b"text", "text/plain")})
    assert r.status_code == 415
