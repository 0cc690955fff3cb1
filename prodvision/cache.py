"""The one on-disk cache helper: a key from what identifies a result, atomic writes, a DONE marker per folder.

Trained models (:mod:`prodvision.recipes`), frozen features (:mod:`prodvision.features`) and the course's saved
predictions (:mod:`prodvision.course`) all use it. A result is stored under ``<cache>/<kind>/<name>-<key>``; a
folder counts as complete only once ``DONE`` is written, and every file is written to a temporary name first and
renamed into place, so a killed process never leaves a half-written result that a later run would trust.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, BinaryIO, TypeVar

from .errors import first_line
from .paths import cache_dir

T = TypeVar("T")

__all__ = ["make_key", "entry", "is_done", "mark_done", "atomic_write", "atomic_write_text", "read_or_discard",
           "remove_stale_temp_files", "clear"]

DONE = "DONE"


def make_key(ident: Any, length: int = 16) -> str:
    """A short hex digest of ``ident`` (anything JSON can encode, dict keys sorted): equal idents, equal keys."""
    text = json.dumps(ident, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def entry(kind: str, name: str, key: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of one cached result: ``<root or $PRODVISION_CACHE or runs/cache>/<kind>/<name>-<key>``."""
    return Path(root if root is not None else cache_dir()) / kind / f"{name}-{key}"


def is_done(folder: str | os.PathLike) -> bool:
    return (Path(folder) / DONE).is_file()


def mark_done(folder: str | os.PathLike) -> None:
    """Declare ``folder`` complete (written last, after every file of the result)."""
    atomic_write_text(Path(folder) / DONE, "ok\n")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, fsync it and rename it to ``path``.

    The temporary file is ``.<name>.<pid>.<random>.tmp``. One that a killed writer left behind (no process has its
    id any more, or its name carries no id) is removed by the next write to the same path; one whose writer still
    runs is left alone, so two processes may write the same path at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_or_discard(path: str | os.PathLike, read: Callable[[Path], T]) -> T | None:
    """``read(path)`` for a cached, recomputable file; None when there is none or it is damaged.

    A damaged entry -- truncated, not the format ``read`` expects, or contents ``read`` rejects by raising -- is
    named in a one-line warning on stderr and deleted, so the caller recomputes it instead of dying on the reader's
    traceback. Only for caches: a file that cannot be recomputed (a checkpoint) must raise instead.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read(path)
    except Exception as e:  # torch/numpy raise many types (RuntimeError, EOFError, UnpicklingError...) for bad files
        print(f"WARNING: {path}: damaged cache entry ({first_line(e)}); deleting and recomputing it", file=sys.stderr,
              flush=True)
        path.unlink(missing_ok=True)
        return None


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write` calls to ``path`` left next to it; returns them."""
    path = Path(path)
    prefix = f".{path.name}."
    stale = []
    for tmp in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = tmp.name[len(prefix):-len(".tmp")].split(".")[0]
        if not (pid.isdigit() and _alive(int(pid))):
            tmp.unlink(missing_ok=True)
            stale.append(tmp)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OverflowError:
        return False
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it (and put it back at once)
    os.umask(mask)
    return mask


def clear(kind: str, root: str | os.PathLike | None = None) -> None:
    """Delete every cached result of one kind (e.g. ``"recipes"``)."""
    shutil.rmtree(Path(root if root is not None else cache_dir()) / kind, ignore_errors=True)
