"""`prodvision predict` / `cam` / `export`: same preprocessing as training, per-file errors, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prodvision.cli import main
from prodvision.data import CatalogDataset, product_icons_dir
from prodvision.export import export_checkpoint
from prodvision.deployed import load_deployed
from prodvision.predict import expand_inputs
from prodvision.transforms import InputSpec, eval_transform
from test_export import ICON_CLASSES, make_checkpoint

# Not the defaults: bicubic + centre crop + ImageNet statistics, so a preprocessing mismatch cannot hide.
SPEC = InputSpec(size=40, in_chans=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 interpolation="bicubic", crop_pct=0.875)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    ck = make_checkpoint(d / "tiny.pt", spec=SPEC)
    paths = export_checkpoint(ck, d)
    return {"pt": ck, "onnx": paths["onnx"], "ts": paths["torchscript"]}


@pytest.fixture
def image_dir(tmp_path):
    """Three real icons, one non-image with a .png name, one hidden image and a text file."""
    icons = product_icons_dir()
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    shutil.copy(next((icons / "fruit").glob("*.png")), d / "a_fruit.png")
    shutil.copy(next((icons / "apparel").glob("*.png")), d / "c_apparel.png")
    shutil.copy(next((icons / "computers").glob("*.png")), d / "sub" / "d_computer.png")
    (d / "b_bad.png").write_text("this is not a PNG")
    shutil.copy(next((icons / "fruit").glob("*.png")), d / ".hidden.png")
    (d / "notes.txt").write_text("not an image either")
    return d


@pytest.mark.parametrize("backend", ["onnx", "ts", "pt"])
def test_predict_preprocessing_equals_the_dataset(models, backend):
    """The tensor predict builds for a file is the tensor training's dataset gives for it."""
    dep = load_deployed(models[backend])
    assert dep.input_spec == SPEC  # read back from the file's metadata
    ds = CatalogDataset.from_folder(product_icons_dir(), verify=False, transform=eval_transform(
        size=SPEC.size, in_chans=SPEC.in_chans, mean=SPEC.mean, std=SPEC.std, interpolation=SPEC.interpolation,
        crop_pct=SPEC.crop_pct))
    for i in np.linspace(0, len(ds) - 1, 6).astype(int):
        x_ds, _ = ds[int(i)]
        x_pred = dep.preprocess(ds.samples[int(i)][0])
        assert x_pred.shape == (3, SPEC.size, SPEC.size)
        torch.testing.assert_close(x_pred, x_ds, rtol=0, atol=0)


def test_expand_inputs_walks_sorted_and_skips_hidden(image_dir):
    files, skipped = expand_inputs([image_dir])
    assert [f.relative_to(image_dir).as_posix() for f in files] == [
        "a_fruit.png", "b_bad.png", "c_apparel.png", "sub/d_computer.png"]
    assert [f.name for f in skipped] == ["notes.txt"]


def test_predict_json_reports_bad_file_and_classifies_the_rest(models, image_dir, capsys):
    rc = main(["predict", str(models["onnx"]), str(image_dir), "--json", "--top-k", "2"])
    out, err = capsys.readouterr()
    assert rc == 1
    results = json.loads(out)["results"]
    names = [Path(r["filename"]).name for r in results]
    assert names == ["a_fruit.png", "b_bad.png", "c_apparel.png", "d_computer.png"]
    bad = results[1]
    assert bad["error"]["code"] == "not_image" and "top_k" not in bad
    for r in results[:1] + results[2:]:
        assert len(r["top_k"]) == 2 and r["top_k"][0]["label"] in ICON_CLASSES
        assert r["top_k"][0]["probability"] >= r["top_k"][1]["probability"]
    assert "b_bad.png" in err and "not an image" in err
    assert "notes.txt" in err  # skipped non-image files are reported, not silently dropped


def test_predict_text_mode_error_line_and_exit_codes(models, image_dir, capsys):
    rc = main(["predict", str(models["ts"]), str(image_dir / "b_bad.png"), str(image_dir / "a_fruit.png")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "a_fruit.png" in out and "b_bad.png" not in out
    assert any("b_bad.png" in line and "[not_image]" in line for line in err.splitlines())
    rc = main(["predict", str(models["ts"]), str(image_dir / "a_fruit.png"), str(image_dir / "missing.png")])
    assert rc == 1 and "[missing]" in capsys.readouterr().err
    assert main(["predict", str(models["ts"]), str(image_dir / "a_fruit.png")]) == 0


def test_all_backends_agree(models, image_dir, capsys):
    outs = {}
    for backend in ("pt", "onnx", "ts"):
        assert main(["predict", str(models[backend]), str(image_dir / "sub"), str(image_dir / "a_fruit.png"),
                     "--json"]) == 0
        outs[backend] = json.loads(capsys.readouterr().out)["results"]
    for backend in ("onnx", "ts"):
        for a, b in zip(outs["pt"], outs[backend]):
            assert [t["label"] for t in a["top_k"]] == [t["label"] for t in b["top_k"]]
            np.testing.assert_allclose([t["probability"] for t in a["top_k"]],
                                       [t["probability"] for t in b["top_k"]], atol=1e-5)


def test_predict_bad_model_path_exits_2(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.onnx"), str(tmp_path)]) == 2
    assert "no such model file" in capsys.readouterr().err
    (tmp_path / "m.h5").write_text("x")
    assert main(["predict", str(tmp_path / "m.h5"), str(tmp_path)]) == 2
    assert "unknown model file type" in capsys.readouterr().err


def test_cam_writes_a_readable_overlay(models, image_dir, tmp_path, capsys):
    out = tmp_path / "figs" / "overlay.png"
    assert main(["cam", str(models["pt"]), str(image_dir / "a_fruit.png"), "--out", str(out),
                 "--target", "fruit"]) == 0
    assert "'fruit'" in capsys.readouterr().out
    arr = np.asarray(Image.open(out))
    assert arr.shape[1:] == (224, 3) and arr.shape[0] > 224 and arr.dtype == np.uint8  # the overlay + a caption
    assert arr[:224].std() > 5  # an actual picture, not a blank
    assert main(["cam", str(models["onnx"]), str(image_dir / "a_fruit.png"), "--out", str(out)]) == 2
    assert "needs the eager model" in capsys.readouterr().err
    assert main(["cam", str(models["pt"]), str(image_dir / "a_fruit.png"), "--out", str(out),
                 "--target", "cars"]) == 2
    assert "not one of the model's classes" in capsys.readouterr().err


def test_cam_outputs_keep_the_relative_path_and_extension(tmp_path, capsys):
    """a/x.png, b/x.png and a/x.jpg are three images and give three overlays, never one overwritten file."""
    icons = sorted((product_icons_dir() / "fruit").glob("*.png"))
    photos = tmp_path / "photos"
    for rel, src in (("a/x.png", icons[0]), ("b/x.png", icons[1]), ("a/x.jpg", icons[2])):
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(src).convert("RGB").save(photos / rel, format="PNG" if rel.endswith(".png") else "JPEG")
    ck = make_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "cams"
    assert main(["cam", str(ck), str(photos), "--out", str(out), "--size", "32"]) == 0
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert written == {"a/x.png_cam.png", "a/x.jpg_cam.png", "b/x.png_cam.png", "contact_sheet.png"}
    assert capsys.readouterr().out.count("wrote ") == 4
    assert main(["cam", str(ck), str(photos / "a" / "x.png"), str(photos / "b" / "x.png"), "--out", str(out / "2"),
                 "--size", "32"]) == 0  # files named one by one: their paths below the common folder
    assert {p.relative_to(out / "2").as_posix() for p in (out / "2").rglob("*_cam.png")} == {"a/x.png_cam.png",
                                                                                           "b/x.png_cam.png"}
    capsys.readouterr()
    assert main(["cam", str(ck), str(photos), str(photos / "a" / "x.png"), "--out", str(out / "3")]) == 2
    err = capsys.readouterr().err
    assert "are the same file" in err and err.count("\n") == 1 and not (out / "3").exists()  # before any work


def test_export_cli_with_parity_check(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "m.pt")
    assert main(["export", str(ck), "--out", str(tmp_path / "out"), "--check", str(product_icons_dir() / "fruit"),
                 "--check-n", "8"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "out" / "m.onnx").is_file() and (tmp_path / "out" / "m.ts").is_file()
    assert sum(line.startswith("parity ") and line.endswith(": ok") for line in out.splitlines()) == 2


# ---------------------------------------------------------------------------------------------- evaluate = predict
def _fashion_checkpoint(path: Path) -> Path:
    """A Fashion-MNIST-shaped checkpoint (28 px greyscale, photo_style fashion-mnist, the 10 class names), untrained."""
    from prodvision.checkpoint import save_checkpoint
    from prodvision.data import FASHION_MNIST_CLASSES
    from prodvision.models import create_model

    torch.manual_seed(0)
    spec = InputSpec(size=28, in_chans=1, mean=(0.5,) * 3, std=(0.5,) * 3, photo_style="fashion-mnist")
    m = create_model("mini_resnet", 10, in_chans=1, widths=(4, 8, 8))
    save_checkpoint({"model": m.state_dict(), "classes": list(FASHION_MNIST_CLASSES), "arch": "mini_resnet",
                     "model_kwargs": {"widths": (4, 8, 8)}, "in_chans": 1, "input": spec.to_dict(), "config": {},
                     "metrics": {}}, path)
    return path


def _photo_folder(root: Path, folders=("Bag", "Sandal"), per=2) -> Path:
    """Catalog-style photos (a dark product on white, off-centre, not square) in one folder per class."""
    rng = np.random.default_rng(1)
    for k, name in enumerate(folders):
        (root / name).mkdir(parents=True)
        for i in range(per):
            arr = np.full((60, 90, 3), 255, np.uint8)
            top, left = rng.integers(2, 20), rng.integers(2, 40)
            arr[top:top + 30 + 5 * k, left:left + 25 + 5 * i] = rng.integers(0, 80, 3)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


def test_evaluate_preprocesses_image_files_as_predict_does(tmp_path):
    """Issue 24 item 8: the same model gave two answers; evaluate skipped the Fashion-MNIST photo conversion."""
    from prodvision.report import heldout
    from prodvision.checkpoint import load_checkpoint

    ck_path = _fashion_checkpoint(tmp_path / "fm.pt")
    data = _photo_folder(tmp_path / "photos")
    held = heldout(load_checkpoint(ck_path), data=str(data), split="all")
    dep = load_deployed(ck_path)
    assert len(held.dataset) == 4
    for i, (path, _) in enumerate(held.dataset.samples):
        torch.testing.assert_close(held.dataset[i][0], dep.preprocess(path), rtol=0, atol=0)


def test_class_names_that_are_not_folder_names_map_both_ways():
    from prodvision.data import FASHION_MNIST_CLASSES, class_folder, folder_classes
    from prodvision.errors import DataError

    assert class_folder("T-shirt/top") == "T-shirt_top" and class_folder("Ankle boot") == "Ankle_boot"
    assert class_folder("Bag") == "Bag"
    back = folder_classes(FASHION_MNIST_CLASSES)
    assert back["T-shirt_top"] == "T-shirt/top" and back["Ankle_boot"] == "Ankle boot" and len(back) == 10
    assert all(back[class_folder(c)] == c for c in FASHION_MNIST_CLASSES)
    with pytest.raises(DataError, match="'a b' and 'a_b'"):
        folder_classes(["a b", "a_b"])


def test_evaluate_reads_mapped_class_folders_and_never_says_all_when_files_were_skipped(tmp_path, capsys):
    ck_path = _fashion_checkpoint(tmp_path / "fm.pt")
    data = _photo_folder(tmp_path / "photos", folders=("T-shirt_top", "Ankle_boot", "Bag"))
    assert main(["evaluate", str(ck_path), "--data", str(data), "--split", "all", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["n"] == 6 and summary["scored"] == f"all 6 images of {data}"
    (data / "Bag" / "notes.txt").write_text("not an image")
    (data / "Not_a_class").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data / "Not_a_class" / "x.png")
    assert main(["evaluate", str(ck_path), "--data", str(data), "--split", "all"]) == 0
    out, err = capsys.readouterr()
    assert f"scored 6 images of {data} (2 file(s) skipped, not scored)" in out and "scored all" not in out
    assert "Not_a_class" in err and "notes.txt" in err
