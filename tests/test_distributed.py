"""The same fit under torchrun: 2 gloo processes on CPU agree with each other and with one process."""

from __future__ import annotations

import pytest

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

pytestmark = pytest.mark.slow  # real data and trained models, or other processes

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from torch.utils.data import TensorDataset
    from prodvision.train import TrainConfig, fit
    out = sys.argv[1]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 2))
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.1, device="cpu", channels_last=False, schedule="cosine")
    hist = fit(model, TensorDataset(x, y), None, cfg, progress=False)
    rank = int(os.environ.get("RANK", "0"))
    torch.save({"state": model.state_dict(), "loss": hist["train_loss"]}, f"{out}/rank{rank}.pt")
""")


def test_two_gloo_processes_match_each_other_and_one_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(script), str(tmp_path / "ddp")], check=True, env=env, timeout=300)
    subprocess.run([sys.executable, str(script), str(tmp_path / "single")], check=True, env=env, timeout=300)
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    one = torch.load(tmp_path / "single" / "rank0.pt", weights_only=True)
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), f"ranks disagree on {k}"
        torch.testing.assert_close(r0["state"][k], one["state"][k], rtol=1e-4, atol=1e-5)
    assert r0["loss"] == r1["loss"]  # train metrics are all-reduced
    torch.testing.assert_close(torch.tensor(r0["loss"]), torch.tensor(one["loss"]), rtol=1e-4, atol=1e-5)
    # and training moved the weights (the comparison is not between two untouched models)
    torch.manual_seed(0)
    init = torch.nn.Conv2d(3, 8, 3, padding=1).weight
    assert not torch.allclose(init, r0["state"]["0.weight"])
