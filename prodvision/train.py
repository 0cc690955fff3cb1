"""The training engine: ``fit(model, train, val, cfg) -> History``, built from ``train_one_epoch`` and ``evaluate``.

Read :func:`train_step` and :func:`train_one_epoch` first: they are the training loop of every PyTorch course
(forward, loss, backward, step, zero_grad). :func:`fit` adds what a real run needs around them, each in a helper of
its own: checkpoints every epoch and exact resume (:func:`_resume`, :func:`_save`), the best epoch on validation,
early stopping, mixed precision on GPU, deterministic mode on CPU, DDP under ``torchrun``, and progress with a time
estimate, throughput and peak memory per epoch.

Data order comes from a ``DistributedSampler`` seeded by ``cfg.seed`` (also with one process), so one process with
batch B and N processes with batch B/N see the same global batches. Every RNG is re-seeded from
``(cfg.seed, epoch, rank)`` at the start of each epoch, so in deterministic mode a resumed run reproduces the
uninterrupted one bit for bit (on one CPU kind). The fast path (photo-resolution inputs, or CUDA) is not
bit-reproducible: resuming it continues correctly but gives slightly different numbers.
"""

from __future__ import annotations

import contextlib
import math
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
from .config import RUNTIME_FIELDS, TrainConfig
from .errors import ConfigError
from .evaluate import loss_and_accuracy, predict
from .models import classifier_name, param_groups
from .progress import progress_bar
from .runtime import (allocator, deterministic_mode, dist_info, peak_rss_mb, preserve_modes, release_memory,
                      reset_peak_rss, resolve_device, resolve_modes, seed_everything, seed_worker, train_mode)

__all__ = ["TrainConfig", "History", "fit", "train_step", "train_one_epoch", "evaluate", "make_loader",
           "make_optimizer", "make_scheduler", "lr_find", "suggest_lr", "diverged"]


@dataclass
class History:
    """Per-epoch records: ``epoch, train_loss, train_acc, val_loss, val_acc, lr, time_s, img_per_s, peak_rss_mb``."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    stopped_early: bool = False
    resumed_from: int | None = None
    checkpoint: str | None = None  # path of the best checkpoint, when fit had an out_dir
    wise: dict[str, float] | None = None  # LP-FT with WiSE-FT: alpha, the fine-tuned epoch and the average's val metrics

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.epochs)

    def __getitem__(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- building blocks
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
    """SGD (Nesterov momentum) or AdamW over the trainable parameters; with ``body_lr_mult != 1`` the classifier
    (``cfg.head``, default: the arch's) trains at ``lr`` and the rest at ``lr * body_lr_mult``."""
    if cfg.body_lr_mult != 1.0:
        groups = param_groups(model, head=cfg.head or classifier_name(model), lr=cfg.lr,
                              body_lr=cfg.lr * cfg.body_lr_mult, weight_decay=cfg.weight_decay)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    if not any(g["params"] for g in groups):
        raise ConfigError("the model has no trainable parameters (everything is frozen)")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step learning-rate schedule over ``cfg.epochs * steps_per_epoch`` steps."""
    total = max(1, cfg.epochs * steps_per_epoch)
    peaks = [g["lr"] for g in opt.param_groups]
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=total, pct_start=cfg.warmup_pct,
                                                   cycle_momentum=cfg.optimizer == "sgd")
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=total // cfg.cycles)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)  # "constant"


def _batch_mix(cfg: TrainConfig, num_classes: int | None):
    """torchvision's MixUp/CutMix on whole batches (they need the class count), or None."""
    if not (cfg.mixup or cfg.cutmix):
        return None
    if not num_classes:
        raise ConfigError("mixup/cutmix need the class names: pass classes= to fit or use a dataset with .classes")
    from torchvision.transforms import v2

    ops = ([v2.MixUp(alpha=cfg.mixup, num_classes=num_classes)] if cfg.mixup else []) + \
          ([v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes)] if cfg.cutmix else [])
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def _autocast(cfg: TrainConfig, device: torch.device):
    if not (cfg.amp in ("bf16", "fp16") or (cfg.amp == "auto" and device.type == "cuda")):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if cfg.amp == "fp16" else torch.bfloat16)


# ---------------------------------------------------------------------------------------------- the loop
def train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor, opt: torch.optim.Optimizer,
               crit: nn.Module, *, amp_ctx=None, clip_grad_norm: float | None = None,
               micro_batch: int | None = None) -> tuple[torch.Tensor, ...]:
    """One optimisation step: forward, loss, backward, (clip), step. Returns detached ``(loss, logits (B, K))``.

    With ``micro_batch``, the batch is processed in chunks whose losses are weighted by their share of the batch
    and whose gradients add up before the one step: the same update with a chunk's activation memory.
    """
    opt.zero_grad(set_to_none=True)
    chunks = range(0, len(x), micro_batch or len(x))
    losses, outs = [], []
    for i, start in enumerate(chunks):
        sl = slice(start, start + (micro_batch or len(x)))
        last = i == len(chunks) - 1
        sync = model.no_sync() if (not last and hasattr(model, "no_sync")) else contextlib.nullcontext()
        with sync, amp_ctx or contextlib.nullcontext():
            logits = model(x[sl])
            loss = crit(logits, target[sl])
        (loss * (len(logits) / len(x))).backward()
        losses.append(loss.detach() * len(logits))
        outs.append(logits.detach())
    if clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    opt.step()
    return torch.stack(losses).sum() / len(x), torch.cat(outs)


def train_one_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, sched, crit: nn.Module, *,
                    device: torch.device, channels_last: bool = False, mix=None, amp_ctx=None,
                    clip_grad_norm: float | None = None, micro_batch: int | None = None, freeze_bn_stats: bool = False,
                    desc: str = "train", progress: bool = False,
                    on_step: Callable[[int, int, float], None] | None = None) -> dict[str, float]:
    """One pass over ``loader`` in train mode (frozen BatchNorm layers stay in eval mode, see ``train_mode``).

    Returns ``train_loss``, ``train_acc`` (on the augmented/mixed batches as trained), ``images``, ``time_s``.
    """
    train_mode(model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model,
               freeze_bn_stats=freeze_bn_stats)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, t0 = 0, time.perf_counter()
    bar = progress_bar(loader, desc=desc, leave=False, disable=not progress)
    for i, (x, y) in enumerate(bar):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        x, target = mix(x, y) if mix is not None else (x, y)  # MixUp/CutMix: soft (B, K) targets
        loss, logits = train_step(model, x, target, opt, crit, amp_ctx=amp_ctx, clip_grad_norm=clip_grad_norm,
                                  micro_batch=micro_batch)
        sched.step()
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if on_step is not None:
            on_step(i + 1, len(loader), time.perf_counter() - t0)
    bar.close()
    return {"train_loss": float(loss_sum) / max(seen, 1), "train_acc": float(correct) / max(seen, 1),
            "images": seen, "time_s": time.perf_counter() - t0}


def evaluate(model: nn.Module, loader: DataLoader, *, device: torch.device, channels_last: bool = False) -> dict:
    """Validation loss and accuracy (eval mode, through :func:`prodvision.evaluate.predict`)."""
    logits, y = predict(model, loader, device=device, channels_last=channels_last)
    loss, acc = loss_and_accuracy(logits, y)
    return {"val_loss": loss, "val_acc": acc}


# ---------------------------------------------------------------------------------------------- fit
def fit(model: nn.Module, train_data: Dataset | DataLoader, val_data: Dataset | DataLoader | None,
        cfg: TrainConfig, *, out_dir: str | Path | None = None, resume: bool = True,
        classes: Sequence[str] | None = None, meta: dict[str, Any] | None = None, progress: bool = True,
        on_epoch_end: Callable[[dict], None] | None = None) -> History:
    """Train ``model`` in place and return its :class:`History`.

    Args:
        model: the network (on any device; it is moved to ``cfg.device``).
        train_data, val_data: Datasets (or DataLoaders whose dataset/collate_fn are reused) yielding ``(x, y)``.
        cfg: the training configuration.
        out_dir: where ``last.pt`` (every epoch), ``best.pt`` (best ``cfg.monitor``) and snapshots go; None = none.
        resume: continue from ``out_dir/last.pt`` if it exists; its config and ``meta["arch"]`` must match.
        classes: class names saved in checkpoints (default: ``train_data.classes`` if present).
        meta: extra checkpoint fields (``arch``, ``model_kwargs``, ``in_chans``, ``input``...).
        progress: progress bars, a time estimate after the first steps, one line per epoch (rank 0 only).
        on_epoch_end: called with each epoch's record.

    At the end the model holds the **best** epoch's weights when there is validation data (else the last).
    """
    rank, world, local_rank = dist_info()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise ConfigError(f"batch_size {cfg.batch_size} is not divisible by the world size {world}")
    classes = list(classes if classes is not None else getattr(getattr(train_data, "dataset", train_data), "classes", []))
    out = Path(out_dir) if out_dir is not None else None
    deterministic, channels_last = resolve_modes(cfg, device, _input_size(train_data))
    if device.type == "cpu":
        allocator("reuse")  # activations stay in the heap between steps: faster at photo sizes
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(train_data, batch_size=cfg.batch_size // world, shuffle=True, seed=cfg.seed,
                         num_workers=cfg.num_workers, rank=rank, world_size=world)
    val_loader = None if val_data is None else make_loader(val_data, batch_size=cfg.eval_batch_size, shuffle=False,
                                                          num_workers=cfg.num_workers)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, len(loader))
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    crit, mix = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), _batch_mix(cfg, len(classes) or None)
    hist, best_state = History(), None
    if out is not None and resume and (out / "last.pt").is_file():
        hist, best_state = _resume(out, model, opt, sched, loader, cfg, meta)
    writer = _tensorboard(cfg, out, rank)
    show = progress and rank == 0
    estimate = _Estimate(cfg.epochs - len(hist.epochs), show)
    bad_epochs = 0 if hist.best_epoch is None else len(hist.epochs) - hist.best_epoch
    with deterministic_mode(deterministic):
        for epoch in range(len(hist.epochs), cfg.epochs):
            if cfg.early_stopping is not None and bad_epochs >= cfg.early_stopping:
                hist.stopped_early = True
                break
            seed_everything(cfg.seed * 1000 + epoch * 10 + rank)  # augmentation/dropout randomness per (epoch, rank)
            loader.generator.manual_seed(cfg.seed * 1000 + epoch)
            loader.sampler.set_epoch(epoch)
            reset_peak_rss()
            tr = train_one_epoch(net, loader, opt, sched, crit, device=device, channels_last=channels_last, mix=mix,
                                 amp_ctx=_autocast(cfg, device), clip_grad_norm=cfg.clip_grad_norm,
                                 micro_batch=cfg.micro_batch, freeze_bn_stats=cfg.freeze_bn_stats,
                                 desc=f"epoch {epoch + 1}/{cfg.epochs}", progress=show, on_step=estimate)
            rec = {"epoch": epoch + 1, "train_loss": tr["train_loss"], "train_acc": tr["train_acc"],
                   "lr": opt.param_groups[-1]["lr"], "time_s": tr["time_s"],
                   "img_per_s": tr["images"] * world / tr["time_s"]}
            if world > 1:  # average the train metrics over ranks so every rank logs the same numbers
                t = torch.tensor([rec["train_loss"], rec["train_acc"]], device=device)
                dist.all_reduce(t)
                rec["train_loss"], rec["train_acc"] = (t / world).tolist()
            if val_loader is not None:
                rec.update(evaluate(model, val_loader, device=device, channels_last=channels_last))
            rec["peak_rss_mb"] = peak_rss_mb()
            hist.epochs.append(rec)
            score = rec.get(cfg.monitor)
            improved = score is not None and (hist.best_metric is None or score > hist.best_metric)
            if improved:
                hist.best_epoch, hist.best_metric, bad_epochs = epoch + 1, score, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            if out is not None and rank == 0:
                _save(out, model, opt, sched, loader, cfg, classes, hist, meta, improved)
            _log(rec, writer, show)
            if on_epoch_end is not None:
                on_epoch_end(rec)
    if writer is not None:
        writer.close()
    if best_state is not None and val_loader is not None:
        model.load_state_dict(best_state)
    if channels_last:  # hand the model back in the default format, the one a checkpoint loads into
        model.to(memory_format=torch.contiguous_format)
    if device.type == "cpu":
        release_memory()  # give the peak's free memory back to the OS
    return hist


def _input_size(data) -> int | None:
    """The side of the training inputs (fit's default modes depend on it), from the first item; None if unknown."""
    ds = getattr(data, "dataset", data)
    try:
        x = ds.__getitems__([0])[0][0] if hasattr(ds, "__getitems__") else ds[0][0]
    except Exception:  # noqa: BLE001 -- an unreadable first item is reported by the training loop itself
        return None
    return int(max(x.shape[-2:])) if isinstance(x, torch.Tensor) and x.ndim >= 3 else None


class _Estimate:
    """After the first few steps: one line with the time per epoch and for the whole run."""

    def __init__(self, epochs_left: int, enabled: bool, after: int = 3):
        self.epochs_left, self.enabled, self.after, self.done = epochs_left, enabled, after, not enabled

    def __call__(self, step: int, steps: int, elapsed: float) -> None:
        if self.done or step < min(self.after, steps):
            return
        self.done = True
        per_epoch = elapsed / step * steps
        print(f"estimated time: ~{_duration(per_epoch)} per epoch, ~{_duration(per_epoch * self.epochs_left)} for "
              f"{self.epochs_left} epoch(s) (from the first {step} steps; validation not included)", flush=True)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _resume(out: Path, model, opt, sched, loader, cfg: TrainConfig, meta) -> tuple[History, dict | None]:
    """Load ``out/last.pt`` into model/optimizer/scheduler/RNGs after checking it belongs to this run."""
    ck = load_checkpoint(out / "last.pt")
    saved = {k: v for k, v in ck.get("config", {}).items() if k not in RUNTIME_FIELDS}
    now = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    diff = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now))
            if _jsonable(saved.get(k)) != _jsonable(now.get(k))}
    for k in ("arch", "model_kwargs", "in_chans"):
        if meta and k in meta and _jsonable(ck.get(k)) != _jsonable(meta[k]):
            diff[k] = (ck.get(k), meta[k])
    if diff:
        what = ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ConfigError(f"{out}: the run there was made with other settings ({what}); resume with the same "
                          "settings, or start a fresh run (another --out folder, or --no-resume)")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"], loader.generator)
    start = int(ck["epoch"])
    hist = History(**{**ck["history"], "resumed_from": start})
    best = load_checkpoint(out / "best.pt")["model"] if (out / "best.pt").is_file() else None
    return hist, best


def _jsonable(v):
    return [_jsonable(x) for x in v] if isinstance(v, (list, tuple)) else \
        {k: _jsonable(x) for k, x in v.items()} if isinstance(v, dict) else v


def _save(out: Path, model, opt, sched, loader, cfg: TrainConfig, classes, hist: History, meta, improved: bool):
    """``last.pt`` every epoch, ``best.pt`` when validation improved, a snapshot at each cosine-restart cycle end."""
    epoch = len(hist.epochs)
    ck = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(),
          "scheduler": sched.state_dict(), "epoch": epoch, "rng": rng_state(loader.generator),
          "config": cfg.to_dict(), "classes": classes, "metrics": hist.epochs[-1], "history": hist.to_dict(),
          **(meta or {})}
    if improved:
        hist.checkpoint = str(out / "best.pt")
        ck["history"] = hist.to_dict()
        save_checkpoint(ck, out / "best.pt")
    save_checkpoint(ck, out / "last.pt")
    if cfg.schedule == "cosine_restarts" and epoch % (cfg.epochs // cfg.cycles) == 0:
        save_checkpoint(ck, out / "snapshots" / f"epoch{epoch:03d}.pt")  # the end of a cycle: a snapshot


def _tensorboard(cfg: TrainConfig, out: Path | None, rank: int):
    if not (cfg.tensorboard and out is not None and rank == 0):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tb"))


def _log(rec: dict, writer, show: bool) -> None:
    if writer is not None:
        for k, v in rec.items():
            if k != "epoch" and v is not None:
                writer.add_scalar(k, v, rec["epoch"])
    if show:
        shown = {k: (f"{v:.2e}" if k == "lr" and 0 < v < 1e-3  # fine-tuning rates such as 5e-5, not "0.0000"
                     else f"{v:.4f}" if isinstance(v, float) and k not in ("img_per_s", "peak_rss_mb", "time_s")
                     else f"{v:.0f}" if isinstance(v, float) else v) for k, v in rec.items() if v is not None}
        print(" ".join(f"{k}={v}" for k, v in shown.items()), flush=True)


# ---------------------------------------------------------------------------------------------- LR range test
def lr_find(model: nn.Module, train_data: Dataset | DataLoader, cfg: TrainConfig, *, start_lr: float = 1e-6,
            end_lr: float = 10.0, num_iter: int = 100, beta: float = 0.9, progress: bool = True) -> dict[str, Any]:
    """LR range test (Smith, 2017): raise the learning rate exponentially each step and record the loss.

    Uses :func:`train_step`, ``cfg``'s optimiser and fit's modes. Stops once training has diverged
    (:func:`diverged`). The model's weights and modes are restored afterwards.

    Returns:
        ``{"lrs", "losses" (smoothed), "suggestion", "lr_min", "lr_min_div10"}``; see :func:`suggest_lr`.
    """
    device = resolve_device(cfg.device)
    deterministic, channels_last = resolve_modes(cfg, device, _input_size(train_data))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with preserve_modes(model):  # the trial run leaves the model's weights and train/eval flags as they were
        return _lr_find(model, train_data, cfg, device, deterministic, channels_last, state, start_lr, end_lr,
                        num_iter, beta, progress)


def _lr_find(model, train_data, cfg, device, deterministic, channels_last, state, start_lr, end_lr, num_iter, beta,
             progress) -> dict:
    model.to(device)
    train_mode(model, freeze_bn_stats=cfg.freeze_bn_stats)
    opt = make_optimizer(model, TrainConfig(**{**cfg.to_dict(), "lr": start_lr}))
    ratios = [g["lr"] / start_lr for g in opt.param_groups]  # keeps discriminative LRs in proportion
    gamma = (end_lr / start_lr) ** (1 / max(num_iter - 1, 1))
    loader = make_loader(train_data, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    lrs, losses, avg = [], [], 0.0
    seed_everything(cfg.seed)
    it, bar = iter(loader), progress_bar(total=num_iter, desc="lr_find", leave=False, disable=not progress)
    with deterministic_mode(deterministic):
        for step in range(num_iter):
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(loader)
                x, y = next(it)
            lr = start_lr * gamma ** step
            for g, r in zip(opt.param_groups, ratios):
                g["lr"] = lr * r
            x = x.to(device)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, _ = train_step(model, x, y.to(device), opt, crit)
            avg = beta * avg + (1 - beta) * float(loss)
            smooth = avg / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(smooth)
            bar.update()
            if step >= 5 and diverged(losses):
                break
    bar.close()
    model.load_state_dict(state)
    return {"lrs": np.array(lrs), "losses": np.array(losses), **suggest_lr(lrs, losses)}


def diverged(losses: Sequence[float], *, rise: float = 1.5) -> bool:
    """The LR range test's stop rule: the last smoothed loss is not finite, or it is above the loss the sweep
    started from **and** ``rise`` times the lowest loss so far. (Above the start alone is not enough: while the lr
    is still too small to train, the smoothed loss wanders around its starting value and noise would stop the sweep.)
    """
    last = float(losses[-1])
    return not math.isfinite(last) or (last > float(losses[0]) and last > rise * float(np.nanmin(losses)))


def suggest_lr(lrs: Sequence[float], losses: Sequence[float]) -> dict[str, float]:
    """Where to put the peak learning rate, read from an LR range test -- only from points before the loss minimum.

    * ``suggestion``: the steepest descent of the smoothed loss (per decade of lr) before the minimum, ignoring the
      noisy first tenth of the sweep;
    * ``lr_min``: the lr at the loss minimum; ``lr_min_div10``: a tenth of it (fastai's "minimum / 10" rule).

    Past the minimum the loss is already diverging, so no suggestion can come from there.
    """
    lrs_a, losses_a = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if len(lrs_a) < 3:
        raise ConfigError(f"an LR range test needs at least 3 points, got {len(lrs_a)}")
    lo = int(np.nanargmin(losses_a))
    grads = np.gradient(losses_a, np.log10(lrs_a))
    skip = max(1, len(lrs_a) // 10)
    window = np.arange(skip, max(lo, skip + 1))  # strictly before the minimum
    i = int(window[np.argmin(grads[window])]) if lo > skip else max(lo - 1, 0)
    return {"suggestion": float(lrs_a[i]), "lr_min": float(lrs_a[lo]), "lr_min_div10": float(lrs_a[lo] / 10)}
