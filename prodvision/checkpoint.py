"""Checkpoints: one dict with everything needed to resume or deploy, written atomically, read with weights_only.

A checkpoint holds ``model`` (state_dict), ``optimizer``, ``scheduler``, ``epoch`` (completed epochs), ``rng``
(torch, numpy, python and DataLoader generator states), ``config`` (``asdict(TrainConfig)``), ``classes``,
``arch``, ``model_kwargs``, ``in_chans``, ``input`` (the preprocessing spec) and ``metrics``/``history``.
Everything is stored as tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)`` reads it:
loading a checkpoint never runs code from the file.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import atomic_write
from .errors import ProdvisionError, first_line

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
    such a crash leaves behind is removed by the next save to the same path (:func:`cache.atomic_write`). The file
    gets the umask's permissions.
    """
    path = Path(path)
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
        CheckpointError: missing, truncated or corrupt, holding objects other than tensors and plain data (refused
            for safety: unpickling them could run code), or not a prodvision checkpoint. The message is one line
            that names the file and says what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    truncated = _truncated(path)
    if truncated:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({truncated}); the copy or the write was cut "
                              f"short. {AGAIN}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if WEIGHTS_ONLY_REFUSED in str(e):  # torch's message goes on to suggest weights_only=False: not for this file
            found = re.search(r"GLOBAL (\S+)", str(e))
            raise CheckpointError(
                f"{path}: contains objects other than tensors, numbers, strings, lists and dicts"
                f"{f' ({found[1]})' if found else ''}; refused for safety, since loading them could run code from the "
                "file. A prodvision checkpoint never holds such objects: use one written by prodvision train"
            ) from None
        raise CheckpointError(f"{path}: corrupt checkpoint ({first_line(e)}). {AGAIN}") from None
    except Exception as e:  # torch raises many types (RuntimeError, EOFError, KeyError) for damaged or foreign files
        raise CheckpointError(f"{path}: corrupt checkpoint, or not a PyTorch file ({first_line(e)}). {AGAIN}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a prodvision checkpoint (no format={FORMAT!r} field)")
    return obj


#: What a damaged checkpoint's error says to do.
AGAIN = "Re-train it (prodvision train with --no-resume, or into a new --out folder) or copy it again from its source"
#: The start of torch's message when ``weights_only=True`` meets a global it does not allow.
WEIGHTS_ONLY_REFUSED = "Weights only load failed"


def _truncated(path: Path) -> str | None:
    """Why ``path`` is visibly cut short, or None. ``torch.save`` writes a zip archive whose directory is at the end,
    so a file that starts like one but has no readable directory lost its end; an empty file lost everything."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty"
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return None  # not a zip archive: torch's legacy format, or not a checkpoint at all
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError):
        return f"{size} bytes: the end of the zip archive torch writes is missing"

