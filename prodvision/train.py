"""The training engine: ``fit`` with checkpoints, exact resume, determinism, early stopping and DDP.

``fit(model, train_data, val_data, cfg) -> History``. The same call runs

* on one CPU or GPU (``cfg.device="auto"``), and
* under ``torchrun --nproc_per_node=N`` with DistributedDataParallel (NCCL on GPU, gloo on CPU): each rank takes
  ``cfg.batch_size // world_size`` images of the same global batch.

Data order comes from a ``DistributedSampler`` seeded by ``cfg.seed`` (also with one process), so one process with
batch B and N processes with batch B/N see the same global batches. Every RNG is re-seeded from
``(cfg.seed, epoch, rank)`` at the start of each epoch, so resuming from an epoch checkpoint reproduces the
uninterrupted run bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state

__all__ = ["TrainConfig", "History", "fit", "evaluate_loss_acc", "make_loader", "resolve_device", "seed_everything",
           "seed_worker", "make_optimizer", "make_scheduler", "deterministic_mode", "resolve_modes", "lr_find"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Stored (``asdict``) in every checkpoint and run record."""

    epochs: int = 5  # passes over the training set
    batch_size: int = 256  # global batch; each of N DDP ranks takes batch_size // N
    optimizer: str = "sgd"  # "sgd" (momentum, Nesterov) or "adamw"
    lr: float = 0.1  # peak learning rate (for the head when body_lr_mult != 1)
    body_lr_mult: float = 1.0  # body lr = lr * body_lr_mult: discriminative learning rates for fine-tuning
    head: str = "fc"  # module name of the classifier, used when body_lr_mult != 1
    momentum: float = 0.9  # SGD momentum (AdamW beta1 stays 0.9)
    weight_decay: float = 5e-4  # L2 / decoupled weight decay
    schedule: str = "onecycle"  # "onecycle", "cosine", "cosine_restarts" (snapshot ensembles), "constant"
    warmup_pct: float = 0.2  # fraction of steps warming up (onecycle)
    cycles: int = 1  # cosine_restarts: number of cycles; a snapshot is saved at the end of each
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    mixup: float = 0.0  # MixUp alpha (0 = off); with cutmix > 0 too, each batch picks one of the two
    cutmix: float = 0.0  # CutMix alpha (0 = off)
    amp: str = "auto"  # "auto" = bf16 autocast on CUDA, off on CPU (bf16 is ~20x slower on CPUs without it)
    clip_grad_norm: float | None = None  # max gradient norm, None = no clipping
    seed: int = 0  # seeds init-independent randomness: data order, augmentation, dropout
    device: str = "auto"  # "auto" = cuda if available else cpu; or "cpu", "cuda", "cuda:1"
    num_workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    # NHWC memory format: ~25% faster convolutions on CPU (oneDNN) and tensor cores on GPU, but oneDNN's NHWC backward
    # is not bit-reproducible with several threads, so None = on exactly when training is not deterministic
    channels_last: bool | None = None
    deterministic: bool | None = None  # None = deterministic on CPU (and channels_last off), off on CUDA (for speed)
    early_stopping: int | None = None  # stop after this many epochs without val improvement, None = off
    monitor: str = "val_acc"  # metric for best-checkpoint selection and early stopping (higher is better)
    eval_batch_size: int = 512  # batch size for validation
    tensorboard: bool = False  # also log scalars to <out_dir>/tb (needs the tensorboard package)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class History:
    """Per-epoch records: ``epoch, train_loss, train_acc, val_loss, val_acc, lr, time_s, img_per_s``."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    stopped_early: bool = False
    resumed_from: int | None = None
    checkpoint: str | None = None  # path of the best checkpoint, when fit had an out_dir

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.epochs)

    def __getitem__(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- small helpers
def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and random from the worker's torch seed (set by the generator)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def resolve_modes(cfg: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    """``(deterministic, channels_last)`` as :func:`fit` applies them on ``device``: deterministic by default on CPU,
    and NHWC by default exactly when not deterministic (oneDNN's NHWC backward is not bit-reproducible)."""
    deterministic = cfg.deterministic if cfg.deterministic is not None else device.type == "cpu"
    channels_last = cfg.channels_last if cfg.channels_last is not None else not deterministic
    return deterministic, channels_last


@contextlib.contextmanager
def deterministic_mode(enabled: bool):
    """Turn deterministic algorithms on (or off) for the block, restoring the previous settings afterwards."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev[2]
        if prev[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group under torchrun if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def make_loader(data: Dataset | DataLoader, *, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                rank: int = 0, world_size: int = 1, drop_last: bool = False) -> DataLoader:
    """A DataLoader over ``data`` (a Dataset, or a DataLoader whose dataset and collate_fn are reused).

    Training loaders use a seeded ``DistributedSampler`` (also for one process): call ``loader.sampler.set_epoch``.
    """
    collate = None
    if isinstance(data, DataLoader):
        collate, data = data.collate_fn, data.dataset
    sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last) if (shuffle or world_size > 1) else None
    g = torch.Generator()
    g.manual_seed(seed)
    kw = {"collate_fn": collate} if collate is not None else {}
    return DataLoader(data, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=g, drop_last=drop_last and sampler is None,
                      persistent_workers=False, pin_memory=torch.cuda.is_available(), **kw)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    from .models import param_groups

    if cfg.body_lr_mult != 1.0:
        groups = param_groups(model, head=cfg.head, lr=cfg.lr, body_lr=cfg.lr * cfg.body_lr_mult,
                              weight_decay=cfg.weight_decay)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    if not any(g["params"] for g in groups):
        raise ValueError("the model has no trainable parameters (everything is frozen)")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose from ['adamw', 'sgd']")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step LR schedule."""
    total = max(1, cfg.epochs * steps_per_epoch)
    peaks = [g["lr"] for g in opt.param_groups]
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=total, pct_start=cfg.warmup_pct,
                                                   cycle_momentum=cfg.optimizer == "sgd")
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "cosine_restarts":
        if cfg.epochs % cfg.cycles:
            raise ValueError(f"epochs ({cfg.epochs}) must be a multiple of cycles ({cfg.cycles})")
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=total // cfg.cycles)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose from ['constant', 'cosine', 'cosine_restarts', 'onecycle']")


def _batch_mix(cfg: TrainConfig, num_classes: int | None):
    """torchvision's MixUp/CutMix on whole batches (they need the class count), or None."""
    if not (cfg.mixup or cfg.cutmix):
        return None
    if not num_classes:
        raise ValueError("mixup/cutmix need the class names: pass classes= to fit or use a dataset with .classes")
    from torchvision.transforms import v2

    ops = ([v2.MixUp(alpha=cfg.mixup, num_classes=num_classes)] if cfg.mixup else []) + \
          ([v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes)] if cfg.cutmix else [])
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def _autocast(cfg: TrainConfig, device: torch.device):
    use = cfg.amp in ("bf16", "fp16") or (cfg.amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    dtype = torch.float16 if cfg.amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


@torch.inference_mode()
def evaluate_loss_acc(model: nn.Module, loader: DataLoader, device: torch.device, *, channels_last: bool = False,
                      amp_ctx=None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader`` (eval mode; train mode is restored)."""
    was = model.training
    model.eval()
    loss_sum, correct, n = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long), 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp_ctx or contextlib.nullcontext():
            out = model(x)
        loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum")
        correct += (out.argmax(1) == y).sum()
        n += len(y)
    model.train(was)
    return float(loss_sum) / max(n, 1), float(correct) / max(n, 1)


# ---------------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, train_data: Dataset | DataLoader, val_data: Dataset | DataLoader | None,
        cfg: TrainConfig, *, out_dir: str | os.PathLike | None = None, resume: bool = True,
        classes: Sequence[str] | None = None, meta: dict[str, Any] | None = None, progress: bool = True,
        on_epoch_end: Callable[[dict], None] | None = None) -> History:
    """Train ``model`` in place and return its :class:`History`.

    Args:
        model: the network (on any device; it is moved to ``cfg.device``).
        train_data, val_data: Datasets (or DataLoaders whose dataset/collate_fn are reused) yielding ``(x, y)``.
        cfg: the training configuration.
        out_dir: where ``last.pt`` (every epoch), ``best.pt`` (best ``cfg.monitor``) and snapshots go; None = none.
        resume: continue from ``out_dir/last.pt`` if it exists (an interrupted run picks up where it stopped).
        classes: class names saved in checkpoints (default: ``train_data.classes`` if present).
        meta: extra checkpoint fields (``arch``, ``model_kwargs``, ``in_chans``, ``input``...).
        progress: show tqdm progress bars (rank 0 only).
        on_epoch_end: called with each epoch's record.

    At the end the model holds the **best** epoch's weights when there is validation data (else the last).
    """
    from .progress import progress_bar

    rank, world, local_rank = _dist_info()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the world size {world}")
    classes = list(classes if classes is not None else getattr(getattr(train_data, "dataset", train_data), "classes", []))
    out = Path(out_dir) if out_dir is not None else None
    deterministic, channels_last = resolve_modes(cfg, device)
    amp_ctx = _autocast(cfg, device)

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    train_loader = make_loader(train_data, batch_size=cfg.batch_size // world, shuffle=True, seed=cfg.seed,
                               num_workers=cfg.num_workers, rank=rank, world_size=world)
    val_loader = None if val_data is None else make_loader(val_data, batch_size=cfg.eval_batch_size, shuffle=False,
                                                          num_workers=cfg.num_workers)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, len(train_loader))
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    mix = _batch_mix(cfg, len(classes) if classes else None)
    hist, start = History(), 0
    best_state = None

    if out is not None and resume and (out / "last.pt").is_file():
        ck = load_checkpoint(out / "last.pt")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"], train_loader.generator)
        start = int(ck["epoch"])
        hist = History(**{**ck["history"], "resumed_from": start})
        if (out / "best.pt").is_file():
            best_state = load_checkpoint(out / "best.pt")["model"]

    writer = None
    if cfg.tensorboard and out is not None and rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))

    def checkpoint(epoch: int, name: str) -> None:
        save_checkpoint({
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "epoch": epoch, "rng": rng_state(train_loader.generator),
            "config": cfg.to_dict(), "classes": classes, "metrics": hist.epochs[-1] if hist.epochs else {},
            "history": hist.to_dict(), **(meta or {}),
        }, out / name)

    bad_epochs = 0 if hist.best_epoch is None else len(hist.epochs) - hist.best_epoch
    with deterministic_mode(deterministic):
        for epoch in range(start, cfg.epochs):
            if cfg.early_stopping is not None and bad_epochs >= cfg.early_stopping:
                hist.stopped_early = True
                break
            seed_everything(cfg.seed * 1000 + epoch * 10 + rank)  # augmentation/dropout randomness per (epoch, rank)
            train_loader.generator.manual_seed(cfg.seed * 1000 + epoch)
            train_loader.sampler.set_epoch(epoch)
            net.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            bar = progress_bar(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                               disable=not progress or rank)
            for x, y in bar:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                target = y
                if mix is not None:
                    x, target = mix(x, y)  # MixUp/CutMix: mixed images and soft (B, K) targets
                with amp_ctx:
                    logits = net(x)
                    loss = crit(logits, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                opt.step()
                sched.step()
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
            train_time = time.perf_counter() - t0
            rec = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(seen, 1),
                   "train_acc": float(correct) / max(seen, 1), "lr": opt.param_groups[-1]["lr"],
                   "time_s": train_time, "img_per_s": seen * world / train_time}
            if world > 1:  # average the train metrics over ranks so every rank logs the same numbers
                t = torch.tensor([rec["train_loss"], rec["train_acc"]], device=device)
                dist.all_reduce(t)
                rec["train_loss"], rec["train_acc"] = (t / world).tolist()
            if val_loader is not None:
                rec["val_loss"], rec["val_acc"] = evaluate_loss_acc(model, val_loader, device,
                                                                    channels_last=channels_last, amp_ctx=amp_ctx)
            hist.epochs.append(rec)
            score = rec.get(cfg.monitor)
            improved = score is not None and (hist.best_metric is None or score > hist.best_metric)
            if improved:
                hist.best_epoch, hist.best_metric, bad_epochs = epoch + 1, score, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            if out is not None and rank == 0:
                if improved:
                    hist.checkpoint = str(out / "best.pt")
                    checkpoint(epoch + 1, "best.pt")
                checkpoint(epoch + 1, "last.pt")
                if cfg.schedule == "cosine_restarts" and (epoch + 1) % (cfg.epochs // cfg.cycles) == 0:
                    checkpoint(epoch + 1, f"snapshots/epoch{epoch + 1:03d}.pt")  # end of a cycle: a snapshot
            if writer is not None:
                for k, v in rec.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch + 1)
            if progress and rank == 0:
                shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in rec.items()}
                bar.write(" ".join(f"{k}={v}" for k, v in shown.items()))
            if on_epoch_end is not None:
                on_epoch_end(rec)
    if writer is not None:
        writer.close()
    if best_state is not None and val_loader is not None:
        model.load_state_dict(best_state)
    if channels_last:  # hand the model back in the default format, the one a checkpoint loads into
        model.to(memory_format=torch.contiguous_format)
    return hist


def lr_find(model: nn.Module, train_data: Dataset | DataLoader, cfg: TrainConfig, *, start_lr: float = 1e-6,
            end_lr: float = 10.0, num_iter: int = 100, diverge: float = 4.0, beta: float = 0.9,
            progress: bool = True) -> dict[str, Any]:
    """LR range test (Smith, 2017): raise the learning rate exponentially each step and record the loss.

    The model and optimiser state are restored afterwards. Stops early once the smoothed loss exceeds
    ``diverge`` times its minimum.

    Returns:
        ``{"lrs": array, "losses": smoothed losses, "suggestion": lr}`` where the suggestion is the point of
        steepest descent of the smoothed loss (a common default for the peak LR of a one-cycle schedule).
    """
    from .progress import progress_bar

    device = resolve_device(cfg.device)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was = model.training
    model.to(device).train()
    opt = make_optimizer(model, TrainConfig(**{**cfg.to_dict(), "lr": start_lr}))
    ratios = [g["lr"] / start_lr for g in opt.param_groups]  # keeps discriminative LRs in proportion
    gamma = (end_lr / start_lr) ** (1 / max(num_iter - 1, 1))
    loader = make_loader(train_data, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    lrs, losses, avg, best = [], [], 0.0, math.inf
    seed_everything(cfg.seed)
    it, step = iter(loader), 0
    bar = progress_bar(total=num_iter, desc="lr_find", leave=False, disable=not progress)
    with deterministic_mode(device.type == "cpu"):
        while step < num_iter:
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(loader)
                x, y = next(it)
            lr = start_lr * gamma ** step
            for g, r in zip(opt.param_groups, ratios):
                g["lr"] = lr * r
            loss = crit(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            avg = beta * avg + (1 - beta) * float(loss.detach())
            smooth = avg / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(smooth)
            best = min(best, smooth)
            step += 1
            bar.update()
            if not math.isfinite(smooth) or smooth > diverge * best:
                break
    bar.close()
    model.load_state_dict(state)
    model.train(was)
    lrs_a, losses_a = np.array(lrs), np.array(losses)
    grads = np.gradient(losses_a, np.log(lrs_a)) if len(lrs_a) > 2 else np.zeros_like(lrs_a)
    skip = max(1, len(lrs_a) // 10)  # ignore the noisy start
    i = skip + int(np.argmin(grads[skip:-1])) if len(lrs_a) > skip + 1 else 0
    return {"lrs": lrs_a, "losses": losses_a, "suggestion": float(lrs_a[i])}
