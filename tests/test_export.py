"""Export to ONNX / TorchScript with metadata, parity on real product icons, int8 quantisation and pruning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prodvision.checkpoint import save_checkpoint
from prodvision.data import CatalogDataset, product_icons_dir
from prodvision.export import (compression_table, export_checkpoint, parity_check, prune_global,
                              quantize_onnx, sparsity)
from prodvision.models import create_model
from prodvision.deployed import deploy_metadata, load_deployed, weights_sha256
from prodvision.transforms import InputSpec, eval_transform

ICON_CLASSES = ["apparel", "beverages", "computers", "electronics", "fruit", "musical_instruments",
                "sports_equipment"]


def make_checkpoint(path: Path, *, widths=(4, 8, 8), spec: InputSpec | None = None, seed: int = 0) -> Path:
    """A tiny mini_resnet checkpoint over the product-icon classes (random weights)."""
    torch.manual_seed(seed)
    spec = spec or InputSpec(size=32, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    m = create_model("mini_resnet", len(ICON_CLASSES), in_chans=3, widths=widths)
    save_checkpoint({"model": m.state_dict(), "classes": ICON_CLASSES, "arch": "mini_resnet",
                     "model_kwargs": {"widths": widths}, "in_chans": 3, "input": spec.to_dict(), "config": {},
                     "metrics": {}}, path)
    return path


def icon_batch(spec: InputSpec, n: int, offset: int = 0) -> torch.Tensor:
    """``n`` real product icons preprocessed with ``spec``, spread over the classes: (n, 3, S, S)."""
    ds = CatalogDataset.from_folder(product_icons_dir(), verify=False, transform=eval_transform(
        size=spec.size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std, interpolation=spec.interpolation,
        crop_pct=spec.crop_pct))
    idx = np.linspace(0, len(ds) - 1, n * 3).astype(int)[offset::3][:n]
    return torch.stack([ds[int(i)][0] for i in idx])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    ck = make_checkpoint(d / "tiny.pt")
    return ck, export_checkpoint(ck, d)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*deprecated:FutureWarning")
def test_metadata_is_in_both_formats(exported):
    import onnx

    ck, paths = exported
    state = torch.load(ck, weights_only=True)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(paths["onnx"])).metadata_props}
    extra = {"prodvision.json": ""}
    torch.jit.load(str(paths["torchscript"]), _extra_files=extra)
    ts_meta = json.loads(extra["prodvision.json"])
    for meta in (props, ts_meta):
        assert meta["classes"] == ICON_CLASSES
        assert meta["arch"] == "mini_resnet" and meta["in_chans"] == 3
        assert meta["input"]["size"] == 32 and meta["input"]["mean"] == [0.5] * 3
        assert meta["input"]["interpolation"] == "bilinear"
        assert meta["weights_sha256"] == weights_sha256(state["model"])
    assert len(props["weights_sha256"]) == 64


def test_weights_hash_identifies_the_weights():
    m = create_model("mini_resnet", 3, in_chans=3, widths=(4, 8, 8))
    sd = m.state_dict()
    h = weights_sha256(sd)
    assert weights_sha256(dict(reversed(list(sd.items())))) == h  # key order does not matter
    sd2 = {k: v.clone() for k, v in sd.items()}
    sd2["fc.bias"][0] += 1e-6
    assert weights_sha256(sd2) != h


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_parity_on_product_icons(exported, fmt):
    ck, paths = exported
    eager = load_deployed(ck)
    images = icon_batch(eager.input_spec, 16)
    r = parity_check(eager.module, paths[fmt], images)
    assert r.n == 16
    assert r.max_abs_diff <= 1e-4
    assert r.top1_identical


def test_onnx_batch_axis_is_dynamic(exported):
    ck, paths = exported
    dep, eager = load_deployed(paths["onnx"], threads=1), load_deployed(ck)
    for b in (1, 5):  # the graph was traced with batch 2
        x = icon_batch(eager.input_spec, b)
        assert dep.logits(x).shape == (b, len(ICON_CLASSES))
        np.testing.assert_allclose(dep.logits(x), eager.logits(x), atol=1e-4)


def test_exported_files_load_without_training_code(exported):
    """A process where `import prodvision` fails can still load and run both files and read their metadata."""
    ck, paths = exported
    code = f"""
import sys, json
sys.modules["prodvision"] = None  # any import of training code now raises ImportError
import numpy as np, onnxruntime as ort, torch
x = np.load({str(paths['onnx'].parent / 'x.npy')!r})
s = ort.InferenceSession({str(paths['onnx'])!r}, providers=["CPUExecutionProvider"])
meta = {{k: json.loads(v) for k, v in s.get_modelmeta().custom_metadata_map.items() if not k.startswith("onnx.")}}
extra = {{"prodvision.json": ""}}
ts = torch.jit.load({str(paths['torchscript'])!r}, _extra_files=extra)
print(json.dumps({{"classes": meta["classes"], "ts_classes": json.loads(extra["prodvision.json"])["classes"],
                  "onnx": s.run(None, {{"input": x}})[0].tolist(), "ts": ts(torch.from_numpy(x)).tolist()}}))
"""
    eager = load_deployed(ck)
    x = icon_batch(eager.input_spec, 3)
    np.save(paths["onnx"].parent / "x.npy", x.numpy())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["classes"] == ICON_CLASSES and res["ts_classes"] == ICON_CLASSES
    ref = eager.logits(x)
    np.testing.assert_allclose(np.array(res["onnx"]), ref, atol=1e-4)
    np.testing.assert_allclose(np.array(res["ts"]), ref, atol=1e-4)


def test_prune_global_really_zeroes_weights():
    m = create_model("mini_resnet", 3, in_chans=3, widths=(8, 16, 16))
    pm = prune_global(m, 0.5)
    assert sparsity(m) == 0.0
    assert 0.49 <= sparsity(pm) <= 0.51
    assert not any(k.endswith(("_orig", "_mask")) for k in pm.state_dict())  # prune.remove made it permanent
    assert all(not mod._forward_pre_hooks for mod in pm.modules())
    with pytest.raises(ValueError, match="prune amount"):
        prune_global(m, 1.0)


def test_static_quantisation_needs_calibration(exported, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        quantize_onnx(exported[1]["onnx"], tmp_path / "q.onnx", mode="static")
    with pytest.raises(ValueError, match="unknown quantisation mode"):
        quantize_onnx(exported[1]["onnx"], tmp_path / "q.onnx", mode="fp16")


def test_deploy_metadata_refuses_incomplete_checkpoints():
    with pytest.raises(ValueError, match="missing"):
        deploy_metadata({"model": {}, "classes": ["a"]}, "x.pt")


def test_compression_table_measures_every_variant(tmp_path):
    ck = make_checkpoint(tmp_path / "small.pt", widths=(16, 32, 64))
    eager = load_deployed(ck)
    spec = eager.input_spec
    full = CatalogDataset.from_folder(product_icons_dir(), verify=False, transform=eager.transform)
    idx = np.linspace(0, len(full) - 1, 24).astype(int)
    test_ds = full.subset([int(i) for i in idx])
    calib = icon_batch(spec, 8, offset=1)
    df = compression_table(ck, test_ds, calibration=calib, prune_amounts=(0.5,), workdir=tmp_path / "variants",
                           threads=1, batch_size=8, repeats=2)
    assert list(df.index) == ["fp32", "int8-dynamic", "int8-static", "pruned-0.5"]
    xs = torch.stack([test_ds[i][0] for i in range(len(test_ds))])
    ys = np.array(test_ds.targets)
    eager_acc = float((eager.logits(xs).argmax(1) == ys).mean())
    assert df.loc["fp32", "accuracy"] == pytest.approx(eager_acc)  # computed, not assumed
    assert df.loc["fp32", "top1_agreement"] == 1.0
    assert df["accuracy"].between(0, 1).all()
    assert df.loc["int8-dynamic", "size_mb"] < df.loc["fp32", "size_mb"]
    assert df.loc["int8-static", "size_mb"] < df.loc["fp32", "size_mb"]
    assert df.loc["pruned-0.5", "sparsity"] >= 0.49
    assert df.loc["pruned-0.5", "gzip_mb"] < df.loc["fp32", "gzip_mb"]
    assert (df[["ms_per_img_b1", "img_per_s_b32"]] > 0).all().all()
    assert (tmp_path / "variants" / "int8_static.onnx").is_file()
