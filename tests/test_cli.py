"""The command line: train through the recipe path, honest evaluation, resume checks and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prodvision.checkpoint import load_checkpoint, save_checkpoint
from prodvision.cli import build_parser, main
from prodvision.serve import free_port

REPO = Path(__file__).resolve().parent.parent


TINY = ["--arch", "mini_resnet", "--size", "16", "--in-chans", "3", "--batch-size", "8", "--lr", "0.05",
        "--device", "cpu"]


def _train(data, out, *extra, epochs="2"):
    return main(["train", "--data", str(data), "--epochs", epochs, "--out", str(out), *TINY, *extra])


@pytest.mark.slow
def test_train_then_evaluate_the_held_out_split(tmp_path, make_catalog, capsys):
    data = make_catalog(tmp_path / "catalog")
    out = tmp_path / "run"
    assert _train(data, out) == 0
    text = capsys.readouterr().out
    assert "train_loss" in text and "best val_acc=" in text and "estimated time" in text
    assert {p.name for p in out.iterdir()} >= {"recipe.json", "split.json", "history.json", "best.pt", "last.pt"}
    ck = load_checkpoint(out / "best.pt")
    assert ck["arch"] == "mini_resnet" and ck["classes"] == ["bag", "shirt", "shoe"] and ck["input"]["size"] == 16
    assert 0 < ck["calibration"]["threshold"] <= 1  # the "unsure" threshold, chosen on validation
    split = json.loads((out / "split.json").read_text())
    test_files = {rel for rel, _ in split["test"]}
    assert test_files and not test_files & {rel for rel, _ in split["train"]}
    assert main(["evaluate", str(out / "best.pt"), "--json", "--device", "cpu"]) == 0  # --data: the training data
    res = json.loads(capsys.readouterr().out)
    assert res["summary"]["n"] == len(test_files) < 36 and 0 <= res["summary"]["accuracy"] <= 1  # held out only
    assert {r["class"] for r in res["per_class"]} >= {"bag", "shirt", "shoe"}
    assert main(["evaluate", str(out / "best.pt"), "--split", "all", "--data", str(data)]) == 2  # trained-on images
    assert "were used to train" in capsys.readouterr().err
    assert main(["evaluate", str(out / "best.pt"), "--split", "all", "--allow-overlap", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"]["n"] == 36 and "WARNING" in captured.err
    report = tmp_path / "report"
    assert main(["evaluate", str(out / "best.pt"), "--out", str(report)]) == 0
    assert {p.name for p in report.iterdir()} == {"summary.json", "per_class.csv", "confusion_matrix.png",
                                                  "reliability.png", "top_losses.png"}


def test_resume_continues_only_the_same_run(tmp_path, make_catalog, capsys):
    data = make_catalog(tmp_path / "catalog")
    out = tmp_path / "run"
    assert _train(data, out) == 0
    assert _train(data, out) == 0  # the same settings: nothing left to do
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    capsys.readouterr()
    record = (out / "recipe.json").read_bytes()
    assert _train(data, out, "--num-workers", "1") == 0  # how it runs, not what it trains: resumes, and says so
    assert "num_workers 0 -> 1" in capsys.readouterr().out and (out / "recipe.json").read_bytes() == record
    assert main(["train", "--data", str(data), "--epochs", "2", "--out", str(out), *TINY[:-4], "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.05 -> 0.1" in err and err.count("\n") == 1  # one line naming what differs
    assert _train(data, out, "--arch", "mini_vgg") == 2
    assert "arch: 'mini_resnet' -> 'mini_vgg'" in capsys.readouterr().err
    assert _train(data, out, "--no-resume", epochs="1") == 0  # a fresh run replaces it


@pytest.mark.slow
def test_two_seeded_cli_runs_are_bit_identical(tmp_path, make_catalog):
    data = make_catalog(tmp_path / "catalog")
    for name in ("a", "b"):
        assert _train(data, tmp_path / name, "--seed", "3") == 0
    a, b = (load_checkpoint(tmp_path / n / "last.pt")["model"] for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_kill_9_then_resume_equals_the_uninterrupted_cli_run(tmp_path):
    args = ["train", "--data", "fashion-mnist", "--labels-per-class", "100", "--val-per-class", "20", "--epochs", "4",
            "--batch-size", "64", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "prodvision", *args]
    subprocess.run([*cmd, "--out", str(tmp_path / "ref")], check=True, env=env, capture_output=True, timeout=600)
    run = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= done < 4, "the kill must interrupt the run"
    subprocess.run([*cmd, "--out", str(run)], check=True, env=env, capture_output=True, timeout=600)
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(tmp_path / "ref" / name), load_checkpoint(run / name)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    assert load_checkpoint(run / "last.pt")["history"]["resumed_from"] == done


def _good_checkpoint(path: Path, classes=("bag",)) -> Path:
    from prodvision.models import create_model

    model = create_model("mini_resnet", len(classes), in_chans=3, widths=(4, 8, 8))
    save_checkpoint({"model": model.state_dict(), "arch": "mini_resnet", "classes": list(classes), "in_chans": 3,
                     "model_kwargs": {"widths": (4, 8, 8)}, "input": {"size": 16, "in_chans": 3}}, path)
    return path


def _bad_checkpoint(path: Path) -> Path:
    save_checkpoint({"model": {"fc.weight": torch.zeros(2, 2)}, "arch": "mini_resnet", "classes": ["a", "b"],
                     "input": {"size": 28, "in_chans": 1}}, path)  # the right format tag, weights of nothing
    return path


@pytest.mark.parametrize("case", ["cuda", "unknown_device", "bad_contents", "corrupt_onnx_predict",
                                  "corrupt_onnx_serve", "one_image_class", "empty_folder", "missing_checkpoint",
                                  "no_such_dir", "wise_without_lp_ft"])
def test_bad_input_is_one_line_exit_2(case, tmp_path, make_catalog, capsys, monkeypatch):
    data = make_catalog(tmp_path / "catalog")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x01garbage that is not a protobuf")
    argv, expect = {
        "cuda": (["train", "--data", str(data), "--out", str(tmp_path / "r"), "--device", "cuda"], "CUDA is not available"),
        "unknown_device": (["train", "--data", str(data), "--out", str(tmp_path / "r"), "--device", "gpu"], "unknown device"),
        "bad_contents": (["evaluate", str(_bad_checkpoint(tmp_path / "bad.pt"))], "do not fit arch 'mini_resnet' with 2 classes: "),
        "corrupt_onnx_predict": (["predict", str(onnx), str(data)], "not a readable ONNX model"),
        "corrupt_onnx_serve": (["serve", str(onnx), "--port", str(free_port())], "not a readable ONNX model"),
        "one_image_class": (["train", "--data", str(make_catalog(tmp_path / "few", per_class=1, classes=("hat",))
                                                    .parent / "few"), "--out", str(tmp_path / "r")], "'hat' has 1"),
        "empty_folder": (["evaluate", str(_good_checkpoint(tmp_path / "ok.pt")), "--data", str(tmp_path / "nothing"),
                          "--split", "all"], "no usable images"),
        "missing_checkpoint": (["evaluate", str(tmp_path / "missing.pt")], "no such checkpoint"),
        "no_such_dir": (["data", "scan", str(tmp_path / "nowhere")], "not a directory"),
        "wise_without_lp_ft": (["train", "--data", str(data), "--out", str(tmp_path / "r"), "--wise", "0.5"],
                               "needs --weights and --finetune full or last_stage"),
    }[case]
    if case == "cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if case == "one_image_class":  # the other classes have plenty; one has a single image
        make_catalog(tmp_path / "few", per_class=8, classes=("bag", "shoe"))
    if case == "empty_folder":
        (tmp_path / "nothing" / "bag").mkdir(parents=True)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err and err.count("\n") == 1, err
    if case == "bad_contents":  # it says what does not fit
        assert " missing (e.g. " in err and "1 of the wrong shape (e.g. fc.weight)" in err


def test_skipped_files_are_listed_with_reasons_and_counted(tmp_path, make_catalog, capsys):
    data = make_catalog(tmp_path / "catalog")
    (data / "bag" / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "shoe" / "notes.txt").write_text("supplier notes")
    assert _train(data, tmp_path / "run", epochs="1") == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "notes.txt" in err and "2 file(s) skipped" in err


def test_jfif_and_jpe_are_images(tmp_path, make_catalog):
    from prodvision.data import CatalogDataset

    data = make_catalog(tmp_path / "catalog", per_class=3)
    Image.open(data / "bag" / "0.png").convert("RGB").save(data / "bag" / "x.jfif", format="JPEG")
    Image.open(data / "bag" / "1.png").convert("RGB").save(data / "bag" / "y.jpe", format="JPEG")
    ds = CatalogDataset.from_folder(data)
    assert {Path(p).name for p, _ in ds.samples} >= {"x.jfif", "y.jpe"} and not ds.skipped


def test_the_cli_imports_no_torch_and_help_shows_every_default():
    code = "import sys, prodvision.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"  # `prodvision --help` and argument errors never pay for importing torch
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    for name in ("train", "evaluate", "predict", "cam", "serve", "export"):
        helptext = subs[name].format_help()
        opts = [a for a in subs[name]._actions if a.option_strings and a.default is not None
                and a.help not in (None, "==SUPPRESS==") and a.dest != "help" and not isinstance(a.default, bool)]
        assert opts and all(f"--{a.dest.replace('_', '-')}" in helptext for a in opts)
        assert helptext.count("(default:") >= len(opts), name


def test_weights_bring_the_transfer_defaults():
    from prodvision.cli import _recipe_from_args
    from prodvision.config import WISE_DEFAULT

    def recipe(*extra):
        args = build_parser().parse_args(["train", "--data", "product-icons", "--arch", "tf_efficientnet_lite0",
                                          "--out", "r", *extra])
        return _recipe_from_args(args)

    r = recipe("--weights", "imagenet")
    t = r.train
    assert r.finetune == "full" and r.wise == WISE_DEFAULT and t.monitor == "epoch" and t.freeze_bn_stats
    assert (t.optimizer, t.lr, t.batch_size, r.augment.scale) == ("adamw", 5e-5, 16, (0.6, 1.0))
    assert recipe("--weights", "imagenet", "--wise", "1").wise is None  # the fine-tuned network as it is
    assert recipe("--weights", "imagenet", "--finetune", "last_stage").wise is None
    assert recipe("--weights", "imagenet", "--finetune", "probe").wise is None
    assert recipe().wise is None and recipe().train.monitor == "val_acc"  # from scratch: the best epoch on validation


def test_cli_lists_match_the_library():
    """Every --flag with fixed choices offers exactly what the library accepts (one list, no drift)."""
    from prodvision import cli, explain
    from prodvision.config import OPTIMIZERS, SCHEDULES
    from prodvision.recipes import FINETUNE_MODES

    def choices(command, flag):
        sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices[command]
        return tuple(next(a for a in sub._actions if flag in a.option_strings).choices)

    assert choices("train", "--finetune") == FINETUNE_MODES
    assert choices("train", "--optimizer") == OPTIMIZERS
    assert choices("train", "--schedule") == SCHEDULES
    usable = set(explain._methods()) - {"randomcam"}
    assert set(choices("cam", "--method")) == usable
    assert set(choices("serve", "--cam-method")) == usable