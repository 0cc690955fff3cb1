"""Checkpoints: one dict with everything needed to resume or deploy, written atomically, read with weights_only.

A checkpoint holds ``model`` (state_dict), ``optimizer``, ``scheduler``, ``epoch`` (completed epochs), ``rng``
(torch, numpy, python and DataLoader generator states), ``config`` (``asdict(TrainConfig)``), ``classes``,
``arch``, ``model_kwargs``, ``in_chans``, ``input`` (the preprocessing spec) and ``metrics``/``history``.
Everything is stored as tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)`` reads it:
loading a checkpoint never runs code from the file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import atomic_write
from .errors import ProdvisionError

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "CheckpointError"]

FORMAT = "prodvision-checkpoint/1"


class CheckpointError(ProdvisionError, ValueError):
    """A model file (checkpoint, or exported .onnx/.ts) is not readable; the message names the file and the reason."""


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """The state of every random number generator training touches, in weights_only-safe types."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``obj`` to ``path`` atomically: temp file in the same folder, flush + fsync, ``os.replace``, fsync dir.

    A crash (even SIGKILL) at any moment leaves either the old file or the new one, never a torn file; the temp file
    such a crash leaves behind is removed by the next save to the same path. The file gets the umask's permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed while writing
        stale.unlink(missing_ok=True)
    atomic_write(path, lambda fh: torch.save({"format": FORMAT, **obj}, fh))
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: missing, unreadable, or not a prodvision checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, EOFError) for bad files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a prodvision checkpoint (no format={FORMAT!r} field)")
    return obj
