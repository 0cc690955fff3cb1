"""Federated learning, simulated: FedAvg across stores that never share their images (McMahan et al., 2017).

Each simulated store (client) holds a non-IID slice of the catalog -- a Dirichlet mix of categories, as a shoe
shop and a clothing shop would have. Every round, the server sends the global model to a fraction of the stores,
each trains locally for ``local_epochs``, and the server averages their weights, weighted by their sample counts.
Only weights travel; the bytes sent per round are counted.

Baselines: **centralised** training on the union of the data (what you would do if sharing were allowed) and
**local-only** training (each store alone).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["FedConfig", "dirichlet_partition", "fedavg", "average_states", "train_local", "local_only",
           "centralised", "state_bytes"]


@dataclass(frozen=True)
class FedConfig:
    """A FedAvg run."""

    rounds: int = 10  # communication rounds
    local_epochs: int = 1  # passes over its own data per store per round
    fraction: float = 1.0  # share of stores taking part in each round
    lr: float = 0.05  # local SGD learning rate (of the first round)
    lr_schedule: str = "cosine"  # "cosine": decays over the rounds to ~0 (same for every setting); "constant"
    momentum: float = 0.9  # local SGD momentum (reset each round: the optimiser state stays on the store)
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"


def dirichlet_partition(targets: Sequence[int], n_clients: int, *, alpha: float = 0.5, seed: int = 0,
                        min_size: int = 10) -> list[np.ndarray]:
    """Split item indices over ``n_clients`` with class proportions drawn from Dirichlet(``alpha``) per class.

    Small ``alpha`` (0.1) gives stores with one or two categories; large (100) approaches an IID split. Draws again
    until every store has at least ``min_size`` items.
    """
    y = np.asarray(targets)
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * n_clients)) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"could not give each of {n_clients} stores {min_size} items with alpha={alpha}")


def state_bytes(model: nn.Module) -> int:
    """Bytes of the weights one model transfer sends."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def average_states(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted average of state_dicts (float tensors); integer buffers (BN counters) take the first store's."""
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = sum(wi * s[k].double() for wi, s in zip(w, states)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def round_lr(cfg: FedConfig, r: int) -> float:
    """Learning rate of round ``r`` (1-based): cosine decay over the rounds, so the last rounds settle instead of
    oscillating around the optimum (with a constant rate, BN statistics and weights jump from round to round)."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (r - 1) / cfg.rounds))
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; use 'cosine' or 'constant'")


def train_local(model: nn.Module, data: Dataset, *, epochs: int, lr: float, momentum: float, batch_size: int,
                generator: torch.Generator, device: str = "cpu") -> None:
    """Plain SGD on one store's data, in place."""
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)
    for _ in range(epochs):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


@torch.inference_mode()
def _accuracy(model: nn.Module, data: Dataset, device: str) -> float:
    model.eval()
    correct = n = 0
    for x, y in DataLoader(data, batch_size=1000):
        correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
        n += len(y)
    return correct / max(n, 1)


def fedavg(make_model: Callable[[], nn.Module], data: Dataset, parts: Sequence[np.ndarray], test: Dataset,
           cfg: FedConfig, *, progress: bool = True) -> list[dict]:
    """Run FedAvg; returns one record per round: ``round, test_acc, clients, mb_sent`` (cumulative, both ways)."""
    from .progress import progress_bar

    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    global_model = make_model().to(cfg.device)
    per_transfer = state_bytes(global_model)
    history, sent = [], 0
    for r in progress_bar(range(1, cfg.rounds + 1), desc="FedAvg rounds", disable=not progress, leave=False):
        m = max(1, int(round(cfg.fraction * len(parts))))
        chosen = np.sort(rng.choice(len(parts), m, replace=False))
        states, sizes = [], []
        for k in chosen:
            local = copy.deepcopy(global_model)
            train_local(local, Subset(data, parts[k]), epochs=cfg.local_epochs, lr=round_lr(cfg, r),
                        momentum=cfg.momentum, batch_size=cfg.batch_size, generator=g, device=cfg.device)
            states.append(local.state_dict())
            sizes.append(len(parts[k]))
        global_model.load_state_dict(average_states(states, sizes))
        sent += 2 * m * per_transfer  # model down to each store and back
        history.append({"round": r, "test_acc": _accuracy(global_model, test, cfg.device), "clients": int(m),
                        "mb_sent": sent / 2**20})
    return history


def centralised(make_model: Callable[[], nn.Module], data: Dataset, test: Dataset, cfg: FedConfig, *,
                progress: bool = True) -> list[dict]:
    """The same model trained on all the data in one place, one epoch per 'round' (same passes over the data)."""
    from .progress import progress_bar

    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = make_model()
    out = []
    for r in progress_bar(range(1, cfg.rounds + 1), desc="centralised", disable=not progress, leave=False):
        train_local(model, data, epochs=cfg.local_epochs, lr=round_lr(cfg, r), momentum=cfg.momentum,
                    batch_size=cfg.batch_size, generator=g, device=cfg.device)
        out.append({"round": r, "test_acc": _accuracy(model, test, cfg.device)})
    return out


def local_only(make_model: Callable[[], nn.Module], data: Dataset, parts: Sequence[np.ndarray], test: Dataset,
               cfg: FedConfig, *, progress: bool = True) -> list[dict]:
    """Each store trains alone for ``rounds * local_epochs`` epochs (the same per-round learning rates and momentum
    resets as FedAvg); returns its global test accuracy."""
    from .progress import progress_bar

    out = []
    for k, idx in enumerate(progress_bar(parts, desc="local-only stores", disable=not progress, leave=False)):
        torch.manual_seed(cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed + k)
        model = make_model()
        for r in range(1, cfg.rounds + 1):
            train_local(model, Subset(data, idx), epochs=cfg.local_epochs, lr=round_lr(cfg, r),
                        momentum=cfg.momentum, batch_size=cfg.batch_size, generator=g, device=cfg.device)
        out.append({"store": k, "items": len(idx), "test_acc": _accuracy(model, test, cfg.device)})
    return out
