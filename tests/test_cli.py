"""The train / evaluate command line on a tiny image folder, and clear errors."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from prodvision.checkpoint import load_checkpoint
from prodvision.cli import main


def _catalog(root, rng, per_class=12):
    for c, colour in zip(["bag", "shoe", "shirt"], [(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = np.clip(np.array(colour) + rng.integers(-30, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_train_then_evaluate(tmp_path, rng, capsys):
    data = _catalog(tmp_path / "catalog", rng)
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--arch", "mini_resnet", "--epochs", "2", "--out", str(out),
                 "--size", "16", "--in-chans", "3", "--batch-size", "8", "--lr", "0.05", "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "train_loss" in text and "best val_acc=" in text
    ck = load_checkpoint(out / "best.pt")
    assert ck["arch"] == "mini_resnet" and ck["classes"] == ["bag", "shirt", "shoe"] and ck["input"]["size"] == 16
    assert main(["evaluate", str(out / "best.pt"), "--data", str(data), "--json", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["summary"]["n"] == 36 and 0 <= res["summary"]["accuracy"] <= 1
    assert {r["class"] for r in res["per_class"]} >= {"bag", "shirt", "shoe"}
    # training again into the same folder resumes: nothing left to do, the history is the same
    assert main(["train", "--data", str(data), "--arch", "mini_resnet", "--epochs", "2", "--out", str(out),
                 "--size", "16", "--in-chans", "3", "--batch-size", "8", "--device", "cpu"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


def test_errors_are_clear(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["data", "scan", str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
