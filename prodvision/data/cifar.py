"""CIFAR-10 (the article's dataset), when it is available locally: ``data/cifar-10/cifar-10-batches-py``.

It is not shipped by any offline source here; ``torchvision.datasets.CIFAR10(root, download=True)`` fetches it
when online. Loaded into an :class:`~prodvision.data.ArrayDataset` (``(N, 32, 32, 3)`` uint8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..paths import project_dir
from .fashion import ArrayDataset, DatasetNotFoundError

__all__ = ["cifar10_root", "load_cifar10"]


def cifar10_root() -> Path:
    return project_dir() / "data" / "cifar-10"


def load_cifar10(root: str | Path | None = None, *, download: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    """CIFAR-10 ``(train, test)`` (50,000 / 10,000). torchvision checks the archive's MD5.

    Raises:
        DatasetNotFoundError: not present (and ``download`` is False or fails), naming where to put it.
    """
    from torchvision.datasets import CIFAR10

    root = Path(root) if root is not None else cifar10_root()
    try:
        tr, te = CIFAR10(str(root), train=True, download=download), CIFAR10(str(root), train=False, download=download)
    except (RuntimeError, OSError) as e:
        raise DatasetNotFoundError(
            f"CIFAR-10 is not in {root} ({e}). Download it when online with "
            f"torchvision.datasets.CIFAR10({str(root)!r}, download=True), or copy cifar-10-batches-py/ there."
        ) from None
    return (ArrayDataset(tr.data, np.array(tr.targets), list(tr.classes)),
            ArrayDataset(te.data, np.array(te.targets), list(te.classes)))
