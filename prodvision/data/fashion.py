"""Fashion-MNIST: 70,000 real Zalando catalog photos (28x28 greyscale, 10 product classes). MIT licence.

Sources, tried in this order:

1. an explicit ``root``;
2. ``$PRODVISION_DATA`` (a folder holding the files, or holding ``fashion-mnist/``);
3. the repository's ``data/fashion-mnist/``;
4. the Debian package path ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``);
5. torchvision's download into ``data/fashion-mnist/`` when online (``download=True``).

Every file is checked against the SHA-256 of its *decompressed* content, so the Debian ``.gz`` files (whose
gzip headers differ from upstream's) and torchvision's downloads both verify.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataNotFoundError, ProdvisionError
from ..paths import repo_root
from ..transforms import is_batchable

__all__ = [
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_GROUPS", "ArrayDataset", "FashionMNIST", "DatasetNotFoundError",
    "DatasetChecksumError", "load_fashion_mnist", "find_fashion_mnist",
]

#: The 10 class names in label order (label ``i`` is ``FASHION_MNIST_CLASSES[i]``).
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
#: A coarse product taxonomy over the 10 classes (used for hierarchical metrics).
FASHION_MNIST_GROUPS = {
    "T-shirt/top": "tops", "Pullover": "tops", "Coat": "tops", "Shirt": "tops",
    "Trouser": "bottoms", "Dress": "dresses",
    "Sandal": "footwear", "Sneaker": "footwear", "Ankle boot": "footwear", "Bag": "bags",
}
DEBIAN_PATH = Path("/usr/share/datasets/fashion-mnist")

# SHA-256 of the decompressed IDX files (identical for the Debian package and the upstream/torchvision files).
_FILES = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 60000),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60000),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 10000),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10000),
}

HOW_TO_GET = (
    "Fashion-MNIST was not found. Get it one of two ways:\n"
    "  * offline, from Debian: sudo apt-get install dataset-fashion-mnist   (files land in /usr/share/datasets/fashion-mnist)\n"
    "  * online: prodvision data fetch --download   (torchvision downloads it into data/fashion-mnist/)\n"
    "or put the four *-ubyte(.gz) files in a folder and pass root=... or set PRODVISION_DATA to it."
)


class DatasetNotFoundError(DataNotFoundError):
    """No source of a dataset was found; the message says how to get it."""


class DatasetChecksumError(ProdvisionError, ValueError):
    """A dataset file is present but corrupt: it cannot be decoded, or its content does not match the published
    checksum. The message names the file and how to replace it."""


class ArrayDataset(Dataset):
    """In-memory images ``(N, H, W)`` or ``(N, H, W, C)`` uint8 with integer targets and class names.

    Items are ``(transform(image), target)`` where ``image`` is a ``torchvision.tv_tensors.Image`` uint8 tensor
    of shape ``(C, H, W)`` (C = 1 for greyscale).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, classes: list[str], transform: Callable | None = None):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images, self.targets, self.classes, self.transform = images, np.asarray(targets, np.int64), classes, transform

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> torch.Tensor:
        from torchvision import tv_tensors

        x = torch.from_numpy(self.images[i])
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)  # (C, H, W)
        return tv_tensors.Image(x)

    def __getitem__(self, i: int):
        if getattr(self.transform, "batched", False):  # a batch transform (BatchAugment) takes (B, C, H, W)
            return self.__getitems__([i])[0]
        x = self.image(i)
        return (self.transform(x) if self.transform else x), int(self.targets[i])

    def __getitems__(self, indices: list[int]) -> list:
        """A whole batch at once (DataLoader uses this): batchable transforms run once on ``(B, C, H, W)``."""
        if self.transform is None or not is_batchable(self.transform):
            return [self[i] for i in indices]
        from torchvision import tv_tensors

        x = torch.from_numpy(self.images[np.asarray(indices)])
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (B, C, H, W)
        x = self.transform(x if getattr(self.transform, "batched", False) else tv_tensors.Image(x))
        return list(zip(x.as_subclass(torch.Tensor).unbind(0), self.targets[np.asarray(indices)].tolist()))

    def subset(self, indices, *, transform: Callable | None = None) -> "ArrayDataset":
        idx = np.asarray(indices)
        return ArrayDataset(self.images[idx], self.targets[idx], self.classes, transform or self.transform)

    def with_transform(self, transform: Callable | None) -> "ArrayDataset":
        return ArrayDataset(self.images, self.targets, self.classes, transform)

    def __repr__(self) -> str:
        return f"ArrayDataset({len(self)} images of {self.images.shape[1:]}, {len(self.classes)} classes)"


@dataclass
class FashionMNIST:
    """The official split: ``train`` (60,000) and ``test`` (10,000), plus where it was loaded from."""

    train: ArrayDataset
    test: ArrayDataset
    source: str

    @property
    def classes(self) -> list[str]:
        return self.train.classes


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _candidates(root: str | os.PathLike | None) -> list[tuple[str, Path]]:
    out = []
    if root is not None:
        out.append(("root argument", Path(root)))
    if os.environ.get("PRODVISION_DATA"):
        env = Path(os.environ["PRODVISION_DATA"])
        out += [("$PRODVISION_DATA", env / "fashion-mnist"), ("$PRODVISION_DATA", env)]
    repo = repo_root()
    if repo is not None:
        out.append(("repository data/", repo / "data" / "fashion-mnist"))
        out.append(("repository data/ (torchvision layout)", repo / "data" / "fashion-mnist" / "FashionMNIST" / "raw"))
    out.append(("Debian package dataset-fashion-mnist", DEBIAN_PATH))
    return out


def find_fashion_mnist(root: str | os.PathLike | None = None) -> tuple[str, Path] | None:
    """The first source folder that holds all four files, as ``(description, folder)``; None if there is none.

    An explicit ``root`` that lacks the files is an error, not a reason to look elsewhere.
    """
    if root is not None and not all(_file_in(Path(root), stem) for stem in _FILES):
        raise DatasetNotFoundError(f"{root}: does not hold the four Fashion-MNIST files {sorted(_FILES)} (.gz or not)")
    for desc, folder in _candidates(root):
        if all(_file_in(folder, stem) for stem in _FILES):
            return desc, folder
    return None


_DECODED: dict[tuple, np.ndarray] = {}  # (file, size, mtime, stem, verify) -> decoded array, per process


def _read_idx(path: Path, stem: str, verify: bool) -> np.ndarray:
    """Decode (and verify) one idx file. Each file is decompressed and hashed once per process (about 0.4 s for the
    four files); later calls get a fresh copy, so callers may modify what they get."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, stem, verify)
    if key not in _DECODED:
        _DECODED[key] = _decode_idx(path, stem, verify)
    return _DECODED[key].copy()  # writable, owns its memory


def _replace_it(path: Path) -> str:
    """How to get a good copy of a corrupt Fashion-MNIST file, for the error's last words."""
    if path.resolve().is_relative_to(DEBIAN_PATH.resolve()):
        return "reinstall the Debian package: sudo apt-get install --reinstall dataset-fashion-mnist"
    return ("delete it and get the files again: prodvision data fetch --download (online), or the Debian package "
            "dataset-fashion-mnist (offline)")


def _decode_idx(path: Path, stem: str, verify: bool) -> np.ndarray:
    raw = path.read_bytes()
    try:
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile (an OSError): bad header or CRC; EOFError: cut short
        why = "cut short" if isinstance(e, EOFError) else str(e) or type(e).__name__
        raise DatasetChecksumError(f"{path}: corrupt gzip file, it cannot be decompressed ({why}); "
                                   f"{_replace_it(path)}") from None
    expected, count = _FILES[stem]
    if verify and hashlib.sha256(data).hexdigest() != expected:
        raise DatasetChecksumError(
            f"{path}: SHA-256 of the decompressed content does not match the published Fashion-MNIST file "
            f"(expected {expected}); the file is corrupt or a different dataset: {_replace_it(path)}"
        )
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) < 4 + 4 * ndim or magic >> 8 != 0x08 or len(data) != 4 + 4 * ndim + int(np.prod(dims)):
        raise DatasetChecksumError(f"{path}: corrupt or truncated IDX file ({len(data)} bytes do not hold the "
                                   f"uint8 array of shape {tuple(dims)} its header announces); {_replace_it(path)}")
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    if verify and dims[0] != count:
        raise DatasetChecksumError(f"{path}: holds {dims[0]} items, expected {count}")
    arr = arr.copy()
    arr.flags.writeable = False  # the cached master copy
    return arr


def _download(dest: Path) -> Path:
    from torchvision.datasets import FashionMNIST as TVFashionMNIST

    try:
        TVFashionMNIST(str(dest), train=True, download=True)
        TVFashionMNIST(str(dest), train=False, download=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError on bad MD5
        raise DatasetNotFoundError(f"{HOW_TO_GET}\n(download into {dest} failed: {e})") from None
    return dest / "FashionMNIST" / "raw"


def load_fashion_mnist(
    root: str | os.PathLike | None = None, *, verify: bool = True, download: bool = False,
    transform: Callable | None = None, test_transform: Callable | None = None,
) -> FashionMNIST:
    """Load Fashion-MNIST (60,000 train / 10,000 test) from the first source that has it.

    Args:
        root: a folder holding ``train-images-idx3-ubyte(.gz)`` and the other three files.
        verify: check the SHA-256 of every file (about 0.2 s).
        download: if no local source has it, download it with torchvision into the repository's
            ``data/fashion-mnist/`` (needs internet).
        transform, test_transform: applied to each ``(1, 28, 28)`` uint8 image of train / test.

    Raises:
        DatasetNotFoundError: no source has it (the message names both ways to get it).
        DatasetChecksumError: a file is corrupt (cannot be decompressed or decoded, or fails its checksum).
    """
    found = find_fashion_mnist(root)
    if found is None:
        if not download:
            raise DatasetNotFoundError(HOW_TO_GET)
        repo = repo_root()
        dest = (repo / "data" / "fashion-mnist") if repo else Path.cwd() / "data" / "fashion-mnist"
        found = ("torchvision download", _download(dest))
    desc, folder = found
    arrays = {stem: _read_idx(_file_in(folder, stem), stem, verify) for stem in _FILES}
    classes = list(FASHION_MNIST_CLASSES)
    train = ArrayDataset(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"], classes, transform)
    test = ArrayDataset(arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"], classes, test_transform)
    return FashionMNIST(train=train, test=test, source=f"{desc}: {folder}")
