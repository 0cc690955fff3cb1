"""Where and how computations run: devices, seeds, determinism, memory formats, train/eval modes, memory use.

Kept out of the teaching path (``train.py`` reads as the training loop); everything here is a small helper that
``fit``, ``predict`` and the command line share.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .config import PHOTO_SIZE, TrainConfig
from .errors import ConfigError

__all__ = ["resolve_device", "preserve_modes", "seed_everything", "seed_worker", "resolve_modes", "deterministic_mode", "dist_info",
           "eval_mode", "train_mode", "nhwc", "module_device", "peak_rss_mb", "reset_peak_rss", "current_rss_mb",
           "allocator", "release_memory"]

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; otherwise the named device, checked to exist.

    Raises:
        ConfigError: an unknown device name, or a CUDA/MPS device this machine does not have.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for, but CUDA is not available here "
                              f"(torch {torch.__version__}); use --device cpu or auto")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was asked for, but Apple's MPS backend is not available here; use cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and random from the worker's torch seed (set by the generator)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def resolve_modes(cfg: TrainConfig, device: torch.device, input_size: int | None = None) -> tuple[bool, bool]:
    """``(deterministic, channels_last)`` as :func:`prodvision.train.fit` applies them.

    Deterministic by default on CPU for small inputs (< ``PHOTO_SIZE`` px: the course's Fashion-MNIST models, which
    then train and resume bit-exactly), not for photo-resolution inputs or on CUDA (the fast path). NHWC by default
    exactly when not deterministic: oneDNN's NHWC backward is not bit-reproducible for every layer shape.
    """
    small = input_size is not None and input_size < PHOTO_SIZE
    deterministic = cfg.deterministic if cfg.deterministic is not None else (device.type == "cpu" and small)
    channels_last = cfg.channels_last if cfg.channels_last is not None else not deterministic
    return deterministic, channels_last


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Turn deterministic algorithms on (or leave them off) for the block, restoring the previous settings."""
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


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group under torchrun if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def module_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module without any)."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode for the block; afterwards every submodule's own train/eval flag is restored.

    Restoring per submodule matters for fine-tuning, where frozen BatchNorm layers stay in eval mode inside a model
    that is otherwise training (see :func:`train_mode`).
    """
    with preserve_modes(model):
        model.eval()
        yield model


@contextlib.contextmanager
def preserve_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Whatever the block does to train/eval flags (e.g. :func:`train_mode` for a trial run), every submodule's own
    flag is what it was afterwards. The one place that saves and restores them: library code does not write
    ``model.train(was)`` or ``m.training = ...`` (tests/test_structure.py checks)."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, was in flags:
            m.training = was


def train_mode(model: nn.Module, *, freeze_bn_stats: bool = False) -> nn.Module:
    """``model.train()``, except BatchNorm layers whose parameters are all frozen, which stay in eval mode
    (with ``freeze_bn_stats``: every BatchNorm layer stays in eval mode; trainable ones still learn their scale and
    shift, but normalise with the pretrained running statistics).

    A frozen block must compute what it computed during pretraining: in train mode its BatchNorm layers would
    normalise with each batch's statistics and overwrite their running statistics with those of a few hundred
    product photos (Kornblith et al., 2019; timm and fastai freeze them the same way). ``freeze(..., train_bn=True)``
    keeps BN parameters trainable, and those layers then train normally.
    """
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if freeze_bn_stats or (params and not any(p.requires_grad for p in params)):
                m.eval()
    return model


@contextlib.contextmanager
def nhwc(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Hold ``model``'s 4-D weights in NHWC (channels_last) for the block, then put them back in NCHW.

    NHWC inputs alone are not enough on CPU: with NCHW weights oneDNN reorders every call. A model whose weights are
    already NHWC (or that has none) is left as it is.
    """
    convert = enabled and any(p.ndim == 4 and not p.is_contiguous(memory_format=torch.channels_last)
                              for p in model.parameters())
    # outside inference mode (predict runs in it): weights made there could never take part in a backward again
    if convert:
        with torch.inference_mode(False):
            model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if convert:
            with torch.inference_mode(False):
                model.to(memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------------------------------- memory (Linux)
def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MB since start or the last :func:`reset_peak_rss` (None off Linux)."""
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


def current_rss_mb() -> float | None:
    """Resident memory of this process now, in MB (None off Linux)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Reset the peak that :func:`peak_rss_mb` reports to the current RSS (Linux: ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- glibc allocator
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # <malloc.h>
_POLICY: str | None = None


def _mallopt():
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def allocator(policy: str) -> bool:
    """Set glibc's allocator policy for this process (a no-op elsewhere; returns whether it was applied).

    * ``"reuse"`` -- for training and feature extraction on CPU: freed blocks, however large, stay in the heap for
      the next step (``M_MMAP_MAX=0``, ``M_TRIM_THRESHOLD`` at its maximum). By default glibc maps every block above
      its threshold fresh from the OS and unmaps it when freed, so each training step page-faults its activations
      in again, which makes photo-size training on CPU markedly slower (benchmarks/bench_finetune.py measures
      both). The price: the process keeps its peak memory until :func:`release_memory`.
    * ``"return"`` -- for a long-running service: blocks of 4 MB or more are always mapped and unmapped, so decoded
      uploads give their memory back (without it, request threads each keep tens of MB after a large image).

    glibc cannot be put back exactly as it was (any setting turns off its dynamic threshold), so this is a
    process-wide choice, like ``torch.set_num_threads``; the last policy set wins.
    """
    global _POLICY
    if policy not in ("reuse", "return"):
        raise ConfigError(f"unknown allocator policy {policy!r}; use 'reuse' or 'return'")
    mallopt = _mallopt()
    if mallopt is None:
        return False
    if policy == "reuse":
        ok = mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    else:
        ok = mallopt(_M_MMAP_MAX, 65536) and mallopt(_M_MMAP_THRESHOLD, 4 << 20) and mallopt(_M_TRIM_THRESHOLD, 4 << 20)
    _POLICY = policy if ok else _POLICY
    return bool(ok)


def release_memory() -> None:
    """Give the heap's free memory back to the OS (``malloc_trim``): after training under the ``"reuse"`` policy,
    RSS falls from its peak to what is still in use."""
    import ctypes
    import gc

    gc.collect()
    if _mallopt() is not None:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
