"""Federated learning, simulated: FedAvg across stores that never share their images (McMahan et al., 2017).

Each simulated store (client) holds a non-IID slice of the catalog -- a Dirichlet mix of categories, as a shoe
shop and a clothing shop would have. Every round, the server sends the global model to a fraction of the stores,
each trains locally for ``local_epochs``, and the server averages their weights, weighted by their sample counts.
Only weights travel; the bytes sent per round are counted.

Baselines: **centralised** training on the union of the data (what you would do if sharing were allowed) and
**local-only** training (each store alone). A drift fix: **FedProx** (Li et al., 2020) adds ``mu/2 * ||w - w_global||^2``
to each store's loss, so local training cannot wander far from the global model.

Every record counts **sequential optimisation steps**: in a FedAvg round the stores train in parallel, so the round
costs the server's clock as many steps as the busiest store takes (``local_epochs * ceil(n_k / batch_size)``), not
their sum. Comparing FedAvg with centralised training at equal passes over the data hides that FedAvg then took far
fewer sequential steps; compare at equal steps, or run both to convergence.

Privacy: only weights travel, but weights and updates still leak information about the images they were trained on
(membership and reconstruction attacks). Secure aggregation (the server sees only the sum of updates) and
differential privacy (clipped, noised updates) are what make federated training private; this simulation has neither.
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

from .errors import ConfigError
from .evaluate import accuracy, predict
from .progress import progress_bar
from .train import train_step

__all__ = ["FedConfig", "dirichlet_partition", "fedavg", "average_states", "train_local", "local_only",
           "centralised", "state_bytes", "round_lr", "local_steps"]


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
    mu: float = 0.0  # FedProx proximal strength (0 = plain FedAvg)
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
    raise ConfigError(f"unknown lr_schedule {cfg.lr_schedule!r}; use 'cosine' or 'constant'")


def local_steps(n_items: int, cfg: FedConfig) -> int:
    """Optimisation steps a store with ``n_items`` images takes in one round."""
    return cfg.local_epochs * math.ceil(n_items / cfg.batch_size)


def train_local(model: nn.Module, data: Dataset, *, epochs: int, lr: float, momentum: float, batch_size: int,
                generator: torch.Generator, device: str = "cpu", mu: float = 0.0) -> None:
    """SGD on one store's data, in place (the same :func:`prodvision.train.train_step` as ``fit``); with ``mu > 0``
    the FedProx term ``mu/2 * ||w - w_start||^2`` keeps the weights near the model the round started from."""
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    start = [p.detach().clone() for p in model.parameters()] if mu else []

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(logits, y)
        if mu:
            loss = loss + mu / 2 * sum(((p - s) ** 2).sum() for p, s in zip(model.parameters(), start))
        return loss

    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)
    for _ in range(epochs):
        for x, y in loader:
            train_step(model, x.to(device), y.to(device), opt, loss_fn)


def _accuracy(model: nn.Module, data: Dataset, device: str) -> float:
    logits, y = predict(model, DataLoader(data, batch_size=1000), device=device)
    return accuracy(logits, y)


def fedavg(make_model: Callable[[], nn.Module], data: Dataset, parts: Sequence[np.ndarray], test: Dataset,
           cfg: FedConfig, *, progress: bool = True, return_model: bool = False):
    """Run FedAvg (FedProx with ``cfg.mu > 0``); one record per round: ``round, test_acc, clients, mb_sent``
    (cumulative, both ways) and ``sequential_steps`` (cumulative: the busiest chosen store's steps per round).
    With ``return_model``: ``(history, final global model)``."""
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    global_model = make_model().to(cfg.device)
    per_transfer = state_bytes(global_model)
    history, sent, steps = [], 0, 0
    for r in progress_bar(range(1, cfg.rounds + 1), desc="FedAvg rounds", disable=not progress, leave=False):
        m = max(1, int(round(cfg.fraction * len(parts))))
        chosen = np.sort(rng.choice(len(parts), m, replace=False))
        states, sizes = [], []
        for k in chosen:
            local = copy.deepcopy(global_model)
            train_local(local, Subset(data, parts[k]), epochs=cfg.local_epochs, lr=round_lr(cfg, r),
                        momentum=cfg.momentum, batch_size=cfg.batch_size, generator=g, device=cfg.device, mu=cfg.mu)
            states.append(local.state_dict())
            sizes.append(len(parts[k]))
        global_model.load_state_dict(average_states(states, sizes))
        sent += 2 * m * per_transfer  # model down to each store and back
        steps += max(local_steps(len(parts[k]), cfg) for k in chosen)  # stores train in parallel
        history.append({"round": r, "test_acc": _accuracy(global_model, test, cfg.device), "clients": int(m),
                        "mb_sent": sent / 2**20, "sequential_steps": steps})
    return (history, global_model) if return_model else history


def centralised(make_model: Callable[[], nn.Module], data: Dataset, test: Dataset, cfg: FedConfig, *,
                progress: bool = True, return_model: bool = False):
    """The same model trained on all the data in one place, ``local_epochs`` per 'round' (the same passes over the
    data as a FedAvg round with every store); records ``round, test_acc, sequential_steps`` (cumulative)."""
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = make_model()
    out = []
    for r in progress_bar(range(1, cfg.rounds + 1), desc="centralised", disable=not progress, leave=False):
        train_local(model, data, epochs=cfg.local_epochs, lr=round_lr(cfg, r), momentum=cfg.momentum,
                    batch_size=cfg.batch_size, generator=g, device=cfg.device)
        out.append({"round": r, "test_acc": _accuracy(model, test, cfg.device),
                    "sequential_steps": r * local_steps(len(data), cfg)})
    return (out, model) if return_model else out


def local_only(make_model: Callable[[], nn.Module], data: Dataset, parts: Sequence[np.ndarray], test: Dataset,
               cfg: FedConfig, *, progress: bool = True, return_models: bool = False):
    """Each store trains alone for ``rounds * local_epochs`` epochs (the same per-round learning rates and momentum
    resets as FedAvg); returns its global test accuracy (with ``return_models``: ``(records, models)``)."""
    out, models = [], []
    for k, idx in enumerate(progress_bar(parts, desc="local-only stores", disable=not progress, leave=False)):
        torch.manual_seed(cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed + k)
        model = make_model()
        for r in range(1, cfg.rounds + 1):
            train_local(model, Subset(data, idx), epochs=cfg.local_epochs, lr=round_lr(cfg, r),
                        momentum=cfg.momentum, batch_size=cfg.batch_size, generator=g, device=cfg.device)
        out.append({"store": k, "items": len(idx), "test_acc": _accuracy(model, test, cfg.device)})
        models.append(model)
    return (out, models) if return_models else out
