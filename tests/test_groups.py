"""Products with several photos (issue 24, items 0-1): a split never cuts a product, declared (--group-by) or found
in the pixels (near-duplicates), and a photo under two labels is an error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from prodvision.data import load_dataset, pattern_groups, product_groups, shot_pattern_hint
from prodvision.errors import DataError


def _shots(root, rng, products=8, shots=3, classes=("bag", "shoe")):
    """A shop's catalog: per class, ``products`` products photographed ``shots`` times (a product's shots share its
    pattern, shifted a little, so they are alike but not near-duplicates)."""
    for c in classes:
        (root / c).mkdir(parents=True)
        for p in range(products):
            base = rng.integers(0, 255, (24, 24, 3))
            for s in range(shots):
                arr = np.roll(base, 3 * s, axis=1).astype(np.uint8)
                Image.fromarray(arr).resize((32, 32)).save(root / c / f"{c}{p:02d}_{s + 1}.png")
    return root


def test_pattern_groups_and_their_errors():
    assert pattern_groups(["a/tote_1.jpg", "a/tote_2.png", "b/x_10.jpg"], r"^(.+)_\d+$") == ["a/tote", "a/tote", "b/x"]
    with pytest.raises(DataError, match="not a valid regular expression"):
        pattern_groups(["a.jpg"], "(")
    with pytest.raises(DataError, match=r"1 of 2 file\(s\), e.g. 'b/plain.jpg'"):
        pattern_groups(["a/x_1.jpg", "b/plain.jpg"], r"^(.+)_\d+$")


def test_product_groups_join_declared_ids_and_near_duplicate_pairs():
    ids = product_groups(5, ["p", "q", "p", "r", "s"], [(1, 3)])
    assert ids[0] == ids[2] and ids[1] == ids[3] and len(set(ids)) == 3
    assert len(set(product_groups(4, None, [(0, 1), (1, 2)]))) == 2


def test_shot_pattern_hint():
    assert "--group-by" in shot_pattern_hint([f"tote_{i}.jpg" for i in (1, 2, 3)] + ["cap_1.jpg", "cap_2.jpg"])
    assert shot_pattern_hint(["tote.jpg", "cap.jpg", "scarf.jpg"]) is None
    assert shot_pattern_hint(["bag/0.png", "bag/1.png", "bag/2.png"]) is None  # numbered files are not shots


def test_a_split_never_cuts_a_product(tmp_path, rng):
    root = _shots(tmp_path / "shop", rng)
    src = load_dataset(root, group_by=r"^(.+)_\d+$")
    assert src.grouping().count == 16 and src.grouping().declared.startswith("--group-by")
    names = src.item_ids(range(len(src.pool)))
    sp = src.split(seed=0)
    product = {i: names[i].rsplit("_", 1)[0] for i in range(len(names))}
    parts = [{product[int(i)] for i in part} for part in (sp.train, sp.val, sp.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    # without the pattern the shots are independent images, and sibling shots do land on both sides
    loose = load_dataset(root).split(seed=0)
    loose_parts = [{product[int(i)] for i in part} for part in (loose.train, loose.test)]
    assert loose_parts[0] & loose_parts[1]


def test_near_duplicates_are_grouped_and_a_photo_under_two_labels_is_refused(tmp_path, rng):
    root = tmp_path / "shop"
    for c in ("bag", "shoe"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            photo = Image.fromarray(rng.integers(0, 255, (6, 6, 3)).astype(np.uint8)).resize((48, 48))  # smooth
            photo.save(root / c / f"{c}{i}.png")
    im = Image.open(root / "bag" / "bag0.png")
    im.save(root / "bag" / "bag0_copy.png", compress_level=1)  # the same pixels, other bytes
    im.resize((96, 96)).save(root / "bag" / "bag0_big.png")  # the same photo, resized
    src = load_dataset(root)
    g = src.grouping()
    assert len(g.near_duplicate_pairs) == 3 and g.count == len(src.pool) - 2
    sp = src.split(seed=0)
    names = src.item_ids(range(len(src.pool)))
    where = {names[int(i)]: k for k, part in enumerate((sp.train, sp.val, sp.test)) for i in part}
    assert where["bag/bag0.png"] == where["bag/bag0_copy.png"] == where["bag/bag0_big.png"]
    im.save(root / "shoe" / "also_a_shoe.png")
    with pytest.raises(DataError, match=r"bag/bag0.*'bag'.*also_a_shoe.png \('shoe'\).*one photo under two labels"):
        load_dataset(root).split(seed=0)


def test_train_records_the_groups_and_scan_reports_them(tmp_path, rng, capsys):
    from prodvision.cli import main

    root = _shots(tmp_path / "shop", rng)
    assert main(["data", "scan", str(root)]) == 0
    captured = capsys.readouterr()
    assert "bag 24 images / 24 products" in captured.out and "--group-by" in captured.err  # the hint
    assert main(["data", "scan", str(root), "--group-by", r"^(.+)_\d+$"]) == 0
    assert "bag 24 images / 8 products" in capsys.readouterr().out
    from prodvision.recipes import Recipe, prepare_data

    data = prepare_data(Recipe(name="g", data=str(root), size=28, group_by=r"^(.+)_\d+$"))
    rec = data.split["groups"]
    assert rec["declared"].startswith("--group-by") and rec["count"] == 16 and rec["images"] == 48
    json.dumps(data.split)  # split.json is written from it
    assert Recipe(name="g", data=str(root)).key() != Recipe(name="g", data=str(root), group_by="^(.+)_").key()
    assert "group_by" not in Recipe(name="g").experiment()  # the keys of recipes without groups are unchanged


def test_group_by_is_checked_where_it_is_parsed(capsys):
    from prodvision.cli import main

    assert main(["train", "--data", "x", "--out", "r", "--group-by", "("]) == 2
    assert "must be a regular expression" in capsys.readouterr().err
    with pytest.raises(DataError, match="builtin dataset"):
        load_dataset("fashion-mnist", group_by="x")


def test_evaluate_refuses_re_saved_training_images(tmp_path, rng, capsys):
    """The held-out check sees content, not bytes: training images re-saved with other bytes (and resized) are
    refused by evaluate --split all on the copy, and flagged with --allow-overlap (issue 24, item 1)."""
    from prodvision.cli import main

    root = tmp_path / "shop"
    for c in ("bag", "shoe"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            photo = Image.fromarray(rng.integers(0, 255, (6, 6, 3)).astype(np.uint8)).resize((32, 32))
            photo.save(root / c / f"{c}{i}.png")
    out = tmp_path / "run"
    assert main(["train", "--data", str(root), "--out", str(out), "--size", "16", "--epochs", "1",
                 "--batch-size", "8", "--device", "cpu"]) == 0
    split = json.loads((out / "split.json").read_text())
    copy = tmp_path / "reencoded"
    for rel, _ in split["train"][:3] + split["test"][:2]:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(root / rel).resize((48, 48)).save(copy / rel, compress_level=1)  # other bytes, same photo
    capsys.readouterr()
    assert main(["evaluate", str(out / "best.pt"), "--data", str(copy), "--split", "all"]) == 2
    err = capsys.readouterr().err
    assert "3 of the 5 images were used to train or validate" in err and "same photo re-saved" in err
    assert main(["evaluate", str(out / "best.pt"), "--data", str(copy), "--split", "all", "--allow-overlap"]) == 0
    assert err.count("near-duplicate of a training image") == 0 and \
        capsys.readouterr().err.count("near-duplicate of a training image") == 3


def test_a_csv_group_column_declares_the_products(tmp_path, rng):
    root = _shots(tmp_path / "shop", rng, products=6)
    rows = ["path,label,group"] + [f"{p.relative_to(root).as_posix()},{p.parent.name},{p.stem.rsplit('_', 1)[0]}"
                                   for p in sorted(root.rglob("*.png"))]
    (root / "catalog.csv").write_text("\n".join(rows) + "\n")
    src = load_dataset(root / "catalog.csv")
    g = src.grouping()
    assert g.declared == "CSV group column" and g.count == 12
    names = src.item_ids(range(len(src.pool)))
    sp = src.split(seed=0)
    parts = [{names[int(i)].rsplit("_", 1)[0] for i in part} for part in (sp.train, sp.val, sp.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    with pytest.raises(DataError, match="use one of them"):
        load_dataset(root / "catalog.csv", group_by="x").grouping()
    (root / "bad.csv").write_text("path,label,group\nbag/bag00_1.png,bag,\n")
    with pytest.raises(DataError, match=r"line 2 \('bag/bag00_1.png'\) has an empty 'group'"):
        load_dataset(root / "bad.csv")


def test_the_overlap_check_finds_re_saved_icons_of_the_builtin_set(tmp_path):
    """A model trained on the builtin icon set: a re-saved copy of one of its training icons is found in the pixels
    (the builtin name is no folder path, and must not read as 'training data not here')."""
    from prodvision.data import CatalogDataset, load_product_icons
    from prodvision.report import _near_training_images

    icons = load_product_icons()
    src = load_dataset("product-icons")
    rel = src.item_ids([0])[0]
    (tmp_path / "apparel").mkdir()
    Image.open(icons.samples[0][0]).convert("RGB").resize((100, 100)).save(tmp_path / "apparel" / "copy.png")
    ds = CatalogDataset.from_folder(tmp_path)
    twins, note = _near_training_images({"data": "product-icons", "items": "files", "train": [[rel, "x"]],
                                         "val": []}, ds)
    assert note is None and [t for _, t in twins] == [rel]
    twins, note = _near_training_images({"data": str(tmp_path / "gone"), "items": "files", "train": [], "val": []}, ds)
    assert twins == [] and "is not here" in note


def test_a_corrupt_training_file_does_not_block_scoring_the_intact_test_split(tmp_path, make_catalog, capsys):
    """Issue 24, item 10: one training file corrupted after training changed the data's fingerprint, so evaluate
    refused the (intact) test split and then refused --split all too."""
    from prodvision.cli import main

    data = make_catalog(tmp_path / "catalog")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--epochs", "1", "--out", str(out), "--size", "16", "--batch-size", "8",
                 "--device", "cpu"]) == 0
    split = json.loads((out / "split.json").read_text())
    (data / split["train"][0][0]).write_bytes(b"not an image any more")
    capsys.readouterr()
    assert main(["evaluate", str(out / "best.pt"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"]["n"] == len(split["test"])
    assert "changed since training" in captured.err and "unchanged: scoring them" in captured.err
    (data / split["test"][0][0]).write_bytes(b"a test file broken too")
    assert main(["evaluate", str(out / "best.pt")]) == 2  # the test split itself changed: refused, as before
