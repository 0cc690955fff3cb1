"""The training engine: determinism, exact resume after SIGKILL, checkpoints, early stopping, schedules, lr_find."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from prodvision.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from prodvision.train import TrainConfig, fit

REPO = Path(__file__).resolve().parent.parent


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + (x[:, 1].mean((1, 2)) > 0).long()  # 3 learnable classes
    return TensorDataset(x, y)


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Dropout(0.1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, 3))


CFG = TrainConfig(epochs=3, batch_size=16, lr=0.05, device="cpu", channels_last=False)


def test_fit_learns_and_records_history():
    ds = _data()
    model = _model()
    hist = fit(model, ds, _data(48, seed=1), CFG, progress=False)
    df = hist.to_frame()
    assert list(df["epoch"]) == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s", "img_per_s"} <= set(df.columns)
    assert df["train_loss"].iloc[-1] < df["train_loss"].iloc[0]
    assert hist.best_epoch in (1, 2, 3) and hist.best_metric == df["val_acc"].max()


def test_same_seed_same_numbers():
    a, b = _model(), _model()
    ha = fit(a, _data(), _data(48, 1), CFG, progress=False)
    hb = fit(b, _data(), _data(48, 1), CFG, progress=False)
    assert ha["train_loss"] == hb["train_loss"]
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c = _model()
    hc = fit(c, _data(), _data(48, 1), TrainConfig(**{**CFG.to_dict(), "seed": 1}), progress=False)
    assert hc["train_loss"] != ha["train_loss"]  # the seed really changes the data order


def test_checkpoint_contents_and_weights_only(tmp_path):
    model = _model()
    fit(model, _data(), _data(48, 1), CFG, out_dir=tmp_path, progress=False, classes=["a", "b", "c"],
        meta={"arch": "tiny"})
    ck = load_checkpoint(tmp_path / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config", "classes", "arch", "metrics"} <= set(ck)
    assert ck["epoch"] == 3 and ck["classes"] == ["a", "b", "c"] and ck["config"]["lr"] == 0.05
    assert {"torch", "numpy", "python", "generator"} <= set(ck["rng"])
    assert (tmp_path / "best.pt").is_file()
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a prodvision checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint({"x": torch.zeros(1)}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt")["x"].shape == (1,)


def test_early_stopping(monkeypatch):
    model = _model()
    cfg = TrainConfig(**{**CFG.to_dict(), "epochs": 30, "lr": 0.0, "early_stopping": 2, "schedule": "constant"})
    hist = fit(model, _data(), _data(48, 1), cfg, progress=False)  # lr 0: only BN statistics move
    assert hist.stopped_early and len(hist.epochs) == hist.best_epoch + 2 < 30
    val = hist["val_acc"]
    assert max(val[hist.best_epoch:]) <= hist.best_metric  # nothing after the best epoch beat it


def test_snapshots_at_cycle_ends(tmp_path):
    cfg = TrainConfig(**{**CFG.to_dict(), "epochs": 4, "schedule": "cosine_restarts", "cycles": 2})
    fit(_model(), _data(), _data(48, 1), cfg, out_dir=tmp_path, progress=False)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["epoch002.pt", "epoch004.pt"]


def test_frozen_model_is_an_error():
    model = _model()
    for p in model.parameters():
        p.requires_grad = False
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(model, _data(), None, CFG, progress=False)


SCRIPT = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_train import _data, _model
    from prodvision.train import TrainConfig, fit
    out, slow = sys.argv[1], float(sys.argv[2])
    cfg = TrainConfig(epochs=6, batch_size=16, lr=0.05, device="cpu", channels_last=False)
    model = _model()
    fit(model, _data(), _data(48, 1), cfg, out_dir=out, progress=False,
        on_epoch_end=lambda rec: time.sleep(slow))
    torch.save(model.state_dict(), out + "/final.pt")
""")


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(REPO / "tests")))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(script), str(ref), "0"], check=True, env=env, timeout=300)
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(run), "1.0"], env=env)
    deadline = time.time() + 120
    while not (run / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # now inside the sleep after an epoch, or in the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = load_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= done < 6, "the kill must interrupt the run"
    subprocess.run([sys.executable, str(script), str(run), "0"], check=True, env=env, timeout=300)
    a = torch.load(ref / "final.pt", weights_only=True)
    b = torch.load(run / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_checkpoint(run / "last.pt")["history"]["resumed_from"] == done


def test_lr_find_returns_a_curve():
    from prodvision.train import lr_find

    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = lr_find(model, _data(), TrainConfig(batch_size=16, device="cpu", channels_last=False), num_iter=30,
                  progress=False)
    assert len(res["lrs"]) == len(res["losses"]) > 5
    assert np.all(np.diff(res["lrs"]) > 0) and res["lrs"][0] < res["suggestion"] < res["lrs"][-1]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), "lr_find must restore the model"


def test_lr_suggestion_comes_from_before_the_minimum_of_a_u_shaped_curve():
    """Synthetic range test: flat, then falling (steepest at 1e-2), minimum at 1e-1, then blowing up."""
    from prodvision.train import suggest_lr

    lrs = np.logspace(-6, 1, 120)
    t = np.log10(lrs)
    losses = 2.3 - 1.5 / (1 + np.exp(-4 * (t + 2))) + np.where(t > -1, 20 * (t + 1) ** 2, 0.0)
    res = suggest_lr(lrs, losses)
    assert res["lr_min"] == pytest.approx(0.1, rel=0.15)
    assert res["suggestion"] == pytest.approx(0.01, rel=0.15) and res["suggestion"] < res["lr_min"]
    assert res["lr_min_div10"] == pytest.approx(res["lr_min"] / 10)
    # however steep the blow-up after the minimum, the suggestion never comes from there
    assert suggest_lr(lrs, losses + np.where(t > -1, 1e3 * (t + 1), 0.0))["suggestion"] == res["suggestion"]


def test_lr_range_test_stops_on_divergence_not_on_noise():
    from prodvision.train import diverged

    rng = np.random.default_rng(0)
    flat = 2.3 + 0.05 * rng.standard_normal(40)  # lr still too small to train: noise around the start
    assert not any(diverged(flat[:i]) for i in range(6, 41))
    curve = np.concatenate([[2.3, 2.2, 1.5, 0.8, 0.6, 0.7, 1.2, 2.0], [2.5]])
    assert not diverged(curve[:-1]) and diverged(curve)  # above the start and 1.5x the minimum
    assert diverged([2.3, 2.2, float("nan")]) and diverged([2.3, 2.2, float("inf")])


def test_mixup_cutmix_train_and_need_classes():
    cfg = TrainConfig(**{**CFG.to_dict(), "mixup": 0.4, "cutmix": 1.0, "epochs": 2})
    with pytest.raises(ValueError, match="class names"):
        fit(_model(), _data(), None, cfg, progress=False)
    hist = fit(_model(), _data(), _data(48, 1), cfg, progress=False, classes=["a", "b", "c"])
    assert len(hist.epochs) == 2 and np.isfinite(hist["train_loss"]).all()


def test_course_registry_round_trips_recipes(tmp_path, monkeypatch):
    from prodvision import course

    monkeypatch.setenv("PRODVISION_CACHE", str(tmp_path))
    default = course.recipe("main")
    assert default == course.default_recipe("main")
    bigger = course.default_recipe("main", epochs=30, widths=(64, 128, 256))
    course.register("main", bigger)
    back = course.recipe("main")
    assert back == bigger and back.key() == bigger.key()
    with pytest.raises(ValueError, match="unknown role"):
        course.default_recipe("nope")


def test_micro_batches_give_the_same_update():
    """Chunks of 4 with summed, share-weighted gradients = one step on the batch of 16 (no BatchNorm here)."""
    from prodvision.train import train_step

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = _data(16).tensors
    nets = [net, __import__("copy").deepcopy(net)]
    outs = []
    for m, mb in zip(nets, (None, 4)):
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        outs.append(train_step(m, x, y, opt, torch.nn.CrossEntropyLoss(label_smoothing=0.1), micro_batch=mb))
    torch.testing.assert_close(outs[0][0], outs[1][0])  # the batch loss
    torch.testing.assert_close(outs[0][1], outs[1][1])  # the logits
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="micro_batch"):
        TrainConfig(micro_batch=0)


def test_epoch_line_shows_a_fine_tuning_learning_rate(capsys):
    from prodvision.train import _log

    for lr, shown in ((5e-5, "lr=5.00e-05"), (0.198, "lr=0.1980"), (0.0, "lr=0.0000")):
        _log({"epoch": 1, "train_loss": 0.5, "lr": lr, "time_s": 3.2}, None, True)
        line = capsys.readouterr().out
        assert f" {shown} " in line and "time_s=3" in line, line
