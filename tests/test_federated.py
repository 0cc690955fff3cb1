"""FedAvg simulation: non-IID partitions, weighted averaging, and a run that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from prodvision import federated as fl


def test_dirichlet_partition_covers_everything_once_and_is_skewed():
    y = np.repeat(np.arange(10), 100)
    parts = fl.dirichlet_partition(y, 5, alpha=0.1, seed=0)
    allidx = np.concatenate(parts)
    assert len(allidx) == 1000 and len(np.unique(allidx)) == 1000
    mixes = np.array([np.bincount(y[p], minlength=10) / len(p) for p in parts])
    assert mixes.max(1).mean() > 0.4  # small alpha: each store dominated by a few categories
    iid = fl.dirichlet_partition(y, 5, alpha=1000.0, seed=0)
    assert np.array([np.bincount(y[p], minlength=10) / len(p) for p in iid]).max() < 0.2
    again = fl.dirichlet_partition(y, 5, alpha=0.1, seed=0)
    assert all((a == b).all() for a, b in zip(parts, again))


def test_average_states_is_weighted():
    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 6.0]), "n": torch.tensor(5)}
    avg = fl.average_states([a, b], [1, 3])
    torch.testing.assert_close(avg["w"], torch.tensor([3.0, 5.0]))
    assert avg["n"].item() == 3


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    centres = torch.tensor([[2.0, 0], [-2, 0], [0, 2], [0, -2]])
    return TensorDataset(centres[y] + 0.5 * torch.randn(n, 2, generator=g), y)


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def test_fedavg_learns_and_counts_communication():
    train, test = _blobs(400, 0), _blobs(200, 1)
    parts = fl.dirichlet_partition(train.tensors[1].numpy(), 4, alpha=0.3, seed=0)
    cfg = fl.FedConfig(rounds=5, local_epochs=1, lr=0.1, batch_size=32)
    hist = fl.fedavg(_mlp, train, parts, test, cfg, progress=False)
    assert [h["round"] for h in hist] == [1, 2, 3, 4, 5]
    assert hist[-1]["test_acc"] > 0.75 and hist[-1]["test_acc"] > hist[0]["test_acc"]
    per_round = 2 * 4 * fl.state_bytes(_mlp()) / 2**20
    assert hist[-1]["mb_sent"] == pytest.approx(5 * per_round)
    central = fl.centralised(_mlp, train, test, cfg, progress=False)
    local = fl.local_only(_mlp, train, parts, test, cfg, progress=False)
    assert len(central) == 5 and len(local) == 4
    assert central[-1]["test_acc"] > np.mean([r["test_acc"] for r in local])  # a store alone sees too few classes


def test_round_lr_cosine_decays_and_constant_stays():
    cfg = fl.FedConfig(rounds=4, lr=0.1)
    lrs = [fl.round_lr(cfg, r) for r in range(1, 5)]
    assert lrs[0] == pytest.approx(0.1) and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0
    assert fl.round_lr(fl.FedConfig(rounds=4, lr=0.1, lr_schedule="constant"), 4) == 0.1
    with pytest.raises(ValueError, match="lr_schedule"):
        fl.round_lr(fl.FedConfig(lr_schedule="step"), 1)
