"""Every number the command line takes is checked where it is parsed: one line naming the option, its range and a
fix, exit status 2, before PyTorch is imported. A one-class catalog is refused before training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prodvision.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent


def _imported(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime``'s report ("import time: self | cumulative | name")."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines() if line.startswith("import time:")
            and "|" in line}


@pytest.mark.parametrize("argv, expect", [
    (["train", "--out", "r", "--batch-size", "0"], "argument --batch-size: must be a positive integer (got 0)"),
    (["train", "--out", "r", "--size", "100000"], "from 8 to 4096 (got 100000); larger inputs do not fit in memory"),
    (["train", "--out", "r", "--size", "-32"], "(got -32); did you mean 32?"),
    (["serve", "m.pt", "--port", "99999"], "argument --port: must be a TCP port from 1 to 65535 (got 99999)"),
    (["cam", "m.pt", "x.png", "--out", "o", "--size", "0"], "argument --size: must be a side in pixels"),
    (["export", "m.pt", "--opset", "5"], "argument --opset: must be an ONNX opset from 7 to 20 (got 5)"),
])
def test_a_bad_value_exits_2_in_one_line_without_importing_torch(argv, expect):
    """The README promises argument errors start without PyTorch: the whole command, run as a user runs it."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "prodvision", *argv], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    lines = [line for line in r.stderr.splitlines() if not line.startswith("import time:")]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith(f"prodvision {argv[0]}: error: ") and expect in lines[0], lines
    imported = _imported(r.stderr)
    assert "prodvision.cli" in imported  # the report is read right...
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}  # ...and torch is not in it


@pytest.mark.parametrize("argv, expect", [
    # batch sizes, epochs, images per class and other counts
    (["train", "--out", "r", "--batch-size", "-4"], "--batch-size: must be a positive integer (got -4)"),
    (["train", "--out", "r", "--batch-size", "8.5"], "--batch-size: must be a positive integer (got '8.5')"),
    (["evaluate", "m.pt", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["predict", "m.onnx", "x.png", "--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["train", "--out", "r", "--epochs", "0"], "--epochs: must be a positive integer (got 0)"),
    (["train", "--out", "r", "--labels-per-class", "0"], "--labels-per-class: must be a positive integer (got 0)"),
    (["train", "--out", "r", "--val-per-class", "0"], "--val-per-class: must be a positive integer"),
    (["train", "--out", "r", "--micro-batch", "0"], "--micro-batch: must be a positive integer"),
    (["predict", "m.onnx", "x.png", "--top-k", "0"], "--top-k: must be a positive integer"),
    (["serve", "m.onnx", "--max-files", "0"], "--max-files: must be a positive integer"),
    (["serve", "m.onnx", "--threads", "0"], "--threads: must be a positive integer"),
    (["data", "scan", "d", "--max-pixels", "0"], "--max-pixels: must be a positive integer"),
    (["export", "m.pt", "--check-n", "0"], "--check-n: must be a positive integer"),
    (["train", "--out", "r", "--num-workers", "-1"], "--num-workers: must be an integer >= 0 (got -1)"),
    (["train", "--out", "r", "--seed", "-1"], "--seed: must be an integer >= 0 (got -1)"),
    # sizes in pixels
    (["train", "--out", "r", "--size", "0"], "--size: must be a side in pixels from 8 to 4096 (got 0); leave the "
                                             "option out for the default"),
    (["train", "--out", "r", "--size", "4"], "--size: must be a side in pixels from 8 to 4096 (got 4)"),
    (["cam", "m.pt", "x.png", "--out", "o", "--size", "5000"], "(got 5000); larger inputs do not fit in memory"),
    # rates and amounts
    (["train", "--out", "r", "--lr", "0"], "--lr: must be a number > 0 (got 0)"),
    (["train", "--out", "r", "--lr", "nan"], "--lr: must be a number > 0 (got nan)"),
    (["train", "--out", "r", "--lr", "fast"], "--lr: must be a number > 0 (got 'fast')"),
    (["train", "--out", "r", "--weight-decay", "-0.1"], "--weight-decay: must be a number >= 0"),
    (["serve", "m.onnx", "--max-upload-mb", "0"], "--max-upload-mb: must be a number > 0"),
    (["serve", "m.onnx", "--header-timeout-s", "0"], "--header-timeout-s: must be a number > 0"),
    (["serve", "m.onnx", "--body-timeout-s", "-5"], "--body-timeout-s: must be a number > 0 (got -5); e.g. "
                                                    "--body-timeout-s 30, the default"),
    (["export", "m.pt", "--atol", "-1"], "--atol: must be a number >= 0"),
    # fractions and thresholds
    (["train", "--out", "r", "--wise", "1.5"], "--wise: must be a number from 0 to 1 (got 1.5)"),
    (["train", "--out", "r", "--target-precision", "0"], "--target-precision: must be a number > 0 and <= 1"),
    (["train", "--out", "r", "--label-smoothing", "1"], "--label-smoothing: must be a number >= 0 and < 1 (got 1)"),
    (["predict", "m.onnx", "x.png", "--unsure-below", "-0.5"], "--unsure-below: must be a number from 0 to 1"),
    # ports and opsets
    (["serve", "m.onnx", "--port", "0"], "--port: must be a TCP port from 1 to 65535 (got 0)"),
    (["export", "m.pt", "--opset", "21"], "--opset: must be an ONNX opset from 7 to 20 (got 21); torch's"),
])
def test_every_option_family_is_checked_where_it_is_parsed(argv, expect, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a value the parser wrongly accepts runs the command: its run folder "r" goes here
    assert main(argv) == 2
    err = capsys.readouterr().err
    prog = "prodvision " + " ".join(argv[:2] if argv[0] == "data" else argv[:1])
    assert err.startswith(f"{prog}: error: argument --") and expect in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, fix", [
    (["train", "--out", "r", "--batch-size", "0"], "(got 0); leave the option out for its default (--help says which)"),
    (["train", "--out", "r", "--lr", "-1"], "(got -1); leave the option out for its default (--help says which)"),
    (["serve", "m.onnx", "--port", "99999"], "(got 99999); e.g. --port 8000, the default"),
    (["predict", "m.onnx", "x.png", "--top-k", "0"], "(got 0); e.g. --top-k 3, the default"),
    (["export", "m.pt", "--atol", "-1"], "(got -1); e.g. --atol 0.0001, the default"),
    (["train", "--out", "r", "--target-precision", "2"], "(got 2); e.g. --target-precision 0.95, the default"),
    (["cam", "m.pt", "x.png", "--out", "o", "--size", "-32"], "(got -32); did you mean 32?"),  # its own fix, alone
])
def test_every_refusal_ends_with_a_fix(argv, fix, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.rstrip("\n").endswith(fix) and err.count(";") == 1, err


@pytest.mark.parametrize("argv", [
    ["train", "--out", "r", "--size", "8", "--batch-size", "1", "--epochs", "1", "--num-workers", "0", "--seed", "0",
     "--wise", "0", "--target-precision", "1", "--label-smoothing", "0", "--weight-decay", "0"],
    ["train", "--out", "r", "--size", "4096", "--wise", "1", "--lr", "1e-6", "--labels-per-class", "1"],
    ["serve", "m.onnx", "--port", "1"], ["serve", "m.onnx", "--port", "65535"],
    ["export", "m.pt", "--opset", "7"], ["export", "m.pt", "--opset", "20"], ["export", "m.pt", "--atol", "0"],
    ["predict", "m.onnx", "x.png", "--unsure-below", "0"], ["cam", "m.pt", "x.png", "--out", "o", "--size", "8"], ["cam", "m.pt", "x.png", "--out", "o", "--size", "4096"],
])
def test_the_bounds_themselves_are_accepted(argv):
    build_parser().parse_args(argv)  # raises SystemExit if a check refuses a value its range includes


def test_the_opset_range_is_what_the_installed_exporter_writes(tmp_path):
    """config.ONNX_OPSETS may not promise an opset torch's TorchScript-based exporter does not write; the library
    refuses the rest too, and an opset too old for a layer is one line naming the arch, not a traceback."""
    import torch
    from torch.onnx import _constants

    from prodvision.config import ONNX_OPSET, ONNX_OPSETS
    from prodvision.errors import ConfigError
    from prodvision.export import export_onnx

    lo, hi = ONNX_OPSETS
    top = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)
    assert _constants.ONNX_MIN_OPSET <= lo <= ONNX_OPSET <= hi <= top
    meta = {"arch": "rounding", "in_chans": 1, "input": {"size": 4}}

    class Round(torch.nn.Module):
        def forward(self, x):
            return x.round()  # ONNX Round exists from opset 11

    with pytest.raises(ConfigError, match="outside 7..20"):
        export_onnx(Round(), meta, tmp_path / "m.onnx", opset=hi + 1)
    with pytest.raises(ConfigError, match="rounding cannot be exported to ONNX opset 10: .*try a newer opset, e.g. "
                                          "the default 17"):
        export_onnx(Round(), meta, tmp_path / "m.onnx", opset=10)


def test_a_one_class_catalog_is_refused_before_training(tmp_path, make_catalog, capsys):
    data = make_catalog(tmp_path / "one", per_class=8, classes=("hat",))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {data}: 1 class found ('hat'), but a classifier needs at least 2 classes")
    assert err.count("\n") == 1 and not out.exists()  # refused before the run folder was made


def test_a_recipe_refuses_zero_counts_and_sizes_its_arch_cannot_take():
    from prodvision.errors import ConfigError
    from prodvision.recipes import Recipe

    for field in ("labels_per_class", "val_per_class"):
        with pytest.raises(ConfigError, match=f"{field} must be at least 1"):
            Recipe(name="r", **{field: 0})
    for arch, size, least in (("mini_resnet", 0, 8), ("mini_resnet", 4, 8), ("vgg11_bn", 16, 32),
                              ("googlenet", 8, 16)):
        with pytest.raises(ConfigError, match=f"size {size} is too small for {arch}: .* at least {least} px"):
            Recipe(name="r", arch=arch, size=size)
    Recipe(name="r", arch="vgg11_bn", size=32)


def test_a_size_too_small_for_the_arch_is_one_line_before_training(tmp_path, make_catalog, capsys):
    """1 px passed the parser and died in max_pool2d with a traceback; VGG's five poolings need 32 px."""
    data, out = make_catalog(tmp_path / "catalog", per_class=2), tmp_path / "run"
    assert main(["train", "--data", str(data), "--arch", "vgg11_bn", "--size", "16", "--out", str(out),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: recipe 'run': size 16 is too small for vgg11_bn") and "--size 32" in err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mini_vgg", "mini_resnet", "vgg11_bn", "googlenet", "resnet18",
                                  "mobilenet_v3_small", "tf_efficientnet_lite0"])
def test_every_arch_trains_at_its_smallest_size(arch):
    """ArchSpec.min_size is the truth: a training-mode forward and backward pass at that side works, and for the archs
    whose poolings need more than config.MIN_INPUT_SIZE, half of it does not."""
    import torch

    from prodvision.models import ARCHS, create_model

    spec = ARCHS[arch]
    model = create_model(arch, 3, in_chans=spec.input.in_chans).train()
    model(torch.randn(2, spec.input.in_chans, spec.min_size, spec.min_size)).sum().backward()
    if spec.min_size > 8:
        with pytest.raises((RuntimeError, ValueError)):
            model(torch.randn(2, spec.input.in_chans, spec.min_size // 2, spec.min_size // 2))


def test_a_port_in_use_is_one_line_before_the_model_loads(tmp_path):
    """uvicorn found a busy port only after the model had loaded (and exported to ONNX), then exited 3 with its log;
    now the port is tried first, before torch is imported."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "prodvision", "serve", str(tmp_path / "m.onnx"),
                            "--port", str(port)], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = [line for line in r.stderr.splitlines() if not line.startswith("import time:")]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: ") and "choose another --port" in lines[0]
    assert "torch" not in _imported(r.stderr)
