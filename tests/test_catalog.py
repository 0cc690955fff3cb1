"""User catalogs: ImageFolder and CSV manifests, scans that report every skipped file, and the scan CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from prodvision.cli import main
from prodvision.data import CatalogDataset, load_product_icons, scan_folder


def _codes(ds):
    return {s.path.split("/")[-1]: s.code for s in ds.skipped}


def test_from_folder_classes_and_skips(tiny_folder):
    ds = CatalogDataset.from_folder(tiny_folder)
    assert ds.classes == ["bag", "shirt", "shoe"]  # sorted, and .ipynb_checkpoints is not a class
    assert len(ds) == 18
    assert _codes(ds) == {"x.png": "hidden", "notes.txt": "extension", "broken.jpg": "not_image", "empty.png": "empty"}
    img, y = ds[0]
    assert img.mode == "RGB" and img.size == (16, 16) and y == 0


def test_class_order_is_deterministic_and_saved(tiny_folder, tmp_path):
    a = CatalogDataset.from_folder(tiny_folder)
    b = CatalogDataset.from_folder(tiny_folder)
    assert a.samples == b.samples
    a.save_classes(tmp_path / "classes.json")
    assert json.loads((tmp_path / "classes.json").read_text())["classes"] == a.classes
    # a saved class order is honoured, and folders outside it are reported
    c = CatalogDataset.from_folder(tiny_folder, classes=["shoe", "bag"])
    assert c.classes == ["shoe", "bag"] and {y for _, y in c.samples} == {0, 1}
    assert any(s.code == "no_label" and "shirt" in s.reason for s in c.skipped)


def test_unverified_folder_raises_naming_the_file_when_read(tiny_folder):
    from prodvision.data import ImageLoadError
    import pytest

    ds = CatalogDataset.from_folder(tiny_folder, verify=False)
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.jpg")]
    assert bad, "without verification the bad file stays in the list"
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        ds[bad[0]]


def test_from_csv_manifest(tiny_folder, tmp_path):
    rows = ["path,label", "bag/0.png,bag", "shoe/1.png,shoe", "shoe/broken.jpg,shoe", "shirt/2.png,", "a,b,c",
            "bag/missing.png,bag"]
    csv_path = tiny_folder / "manifest.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    ds = CatalogDataset.from_csv(csv_path)
    assert isinstance(ds, CatalogDataset) and ds.classes == ["bag", "shoe"]
    assert len(ds) == 2
    codes = sorted(s.code for s in ds.skipped)
    assert codes == ["bad_row", "missing", "no_label", "not_image"]


def test_a_file_listed_with_two_labels_is_an_error_naming_both_rows(tiny_folder, capsys):
    """Issue 24 item 10: the same file under two labels was accepted silently."""
    from prodvision.errors import DataError

    csv_path = tiny_folder / "manifest.csv"
    csv_path.write_text("path,label\nbag/0.png,bag\nshoe/1.png,shoe\n./bag/0.png,shirt\n")
    with pytest.raises(DataError, match=r"line 2 labels 'bag/0.png' 'bag' and line 4 labels './bag/0.png' 'shirt'"):
        CatalogDataset.from_csv(csv_path)
    assert main(["train", "--data", str(csv_path), "--out", str(tiny_folder.parent / "run")]) == 2
    assert "manifest.csv: line 2" in capsys.readouterr().err
    csv_path.write_text("path,label\nbag/0.png,bag\nshoe/1.png,shoe\nbag/0.png,bag\n")  # the same row twice
    ds = CatalogDataset.from_csv(csv_path)
    assert len(ds) == 2 and [(s.code, s.path.rsplit(":", 1)[-1]) for s in ds.skipped] == [("duplicate", "4")]


def test_kaggle_style_manifest(tmp_path):
    (tmp_path / "images").mkdir()
    for i in (15970, 39386):
        Image.fromarray(np.full((8, 8, 3), i % 255, np.uint8)).save(tmp_path / "images" / f"{i}.jpg")
    (tmp_path / "styles.csv").write_text("id,gender,articleType\n15970,Men,Shirts\n39386,Men,Jeans\n")
    ds = CatalogDataset.from_csv(tmp_path / "styles.csv", path_col="id", label_col="articleType",
                                 path_format="images/{}.jpg")
    assert ds.classes == ["Jeans", "Shirts"] and len(ds) == 2 and not ds.skipped


def test_scan_folder_reports_everything_and_deletes_nothing(tiny_folder):
    before = sorted(p for p in tiny_folder.rglob("*"))
    report = scan_folder(tiny_folder)
    assert len(report.ok) == 18
    assert report.counts == {"ok": 18, "refused": 4, "empty": 1, "extension": 1, "hidden": 1, "not_image": 1}
    assert sorted(p for p in tiny_folder.rglob("*")) == before


def test_scan_cli_text_and_json(tiny_folder, capsys):
    assert main(["data", "scan", str(tiny_folder)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok       ") == 0  # only the problems, then the summary and the per-class counts
    assert "refused  " in out and "broken.jpg" in out and "summary: ok=18, refused=4" in out
    assert "classes: " in out and "images / " in out and "product groups" in out
    assert main(["data", "scan", str(tiny_folder), "--verbose"]) == 0
    assert capsys.readouterr().out.count("ok       ") == 18
    assert main(["data", "scan", str(tiny_folder), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["summary"]["refused"] == 4 and {r["code"] for r in js["refused"]} >= {"empty", "not_image"}
    assert main(["data", "scan", str(tiny_folder), "--strict"]) == 1


def test_the_icon_sets_documentation_is_not_reported_but_anything_else_is(tmp_path, monkeypatch):
    from prodvision.data import icons

    root = tmp_path / "product-icons"
    (root / "bag").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 90, 0, 0)).save(root / "bag" / f"{i}.png")
    for name in (*icons.SET_FILES, "notes.txt"):
        (root / name).write_text("x")
    (root / "bag" / "README.md").write_text("inside a class folder: not the set's documentation")
    monkeypatch.setattr(icons, "product_icons_dir", lambda: root)
    assert sorted(s.path.split("/")[-1] for s in load_product_icons().skipped) == ["README.md", "notes.txt"]


def test_product_icon_set_loads_through_image_folder():
    ds = load_product_icons()
    counts = np.bincount(ds.targets, minlength=len(ds.classes))
    assert len(ds.classes) >= 6 and counts.min() >= 40
    assert not ds.skipped  # the set's README/MANIFEST/ATTRIBUTION are its documentation, not skipped data
    img, _ = ds[0]
    assert img.mode == "RGB" and img.size == (128, 128)
    styles = {p.split("/")[-1].split("_")[0] for p, _ in ds.samples}
    assert styles == {"emoji", "clipart"}


def test_a_symlinked_sub_folder_is_listed_as_skipped(tiny_folder, tmp_path):
    """Issue 24, item 10: os.walk does not follow a symlinked folder; its images were left out without a word."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tiny_folder / "bag" / "more").symlink_to(elsewhere, target_is_directory=True)
    report = scan_folder(tiny_folder)
    assert any(s.code == "symlink" and s.path.endswith("bag/more") for s in report.refused)
    ds = CatalogDataset.from_folder(tiny_folder, verify=False)
    assert any(s.code == "symlink" for s in ds.skipped)
