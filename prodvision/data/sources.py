"""Datasets by name: ``load_dataset("fashion-mnist" | "cifar10" | "product-icons" | folder | CSV)``.

The one place that turns a name into data. Training (:mod:`prodvision.recipes`) and the command line's
``evaluate`` both call it, so a folder is read, split and fingerprinted the same way by both. A :class:`Source`
holds the pool that train/validation (and test, when the data has no official test set) are split from, its content
fingerprint (what cache keys and stored splits refer to), and every file that was skipped, with the reason.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

from ..errors import DataError, DataNotFoundError
from ..progress import progress_bar
from .catalog import CatalogDataset, Skipped
from .cifar import load_cifar10
from .fashion import ArrayDataset, load_fashion_mnist
from .groups import ProductGroups, near_duplicate_pairs, pattern_groups, product_groups
from .icons import icon_groups, load_product_icons
from .splits import Split, kfold_split, stratified_split

__all__ = ["Source", "load_dataset", "fingerprint", "file_digest", "BUILTIN"]

#: Dataset names load_dataset knows besides folders and CSV files.
BUILTIN = ("fashion-mnist", "cifar10", "product-icons")
MIN_PER_CLASS = 3  # a stratified 80/10/10 split needs at least this many images of every class


@dataclass
class Source:
    """A labelled image collection: the pool that splits are drawn from, and its official test set if it has one.

    ``pool`` and ``test`` carry no transform; :func:`prodvision.recipes.prepare_data` adds them per split.
    """

    name: str  # as given to load_dataset (a builtin name, or the folder / CSV path)
    pool: ArrayDataset | CatalogDataset
    test: ArrayDataset | CatalogDataset | None  # None: split 80/10/10 from the pool
    classes: list[str]
    groups: list[str] | None = None  # per pool item: variants of one source image stay in one part
    skipped: list[Skipped] = field(default_factory=list)
    group_by: str | None = None  # a catalog's file-name pattern of product ids (see prodvision.data.groups)
    _fingerprint: str | None = field(default=None, repr=False)
    _grouping: ProductGroups | None = field(default=None, repr=False)

    def grouping(self) -> ProductGroups | None:
        """Which images of a folder or CSV catalog are one product: the ``group_by`` pattern's ids joined with the
        near-duplicates found in the pixels (computed once). None for the builtin datasets (their groups, if any,
        are ``groups``).

        Raises:
            DataError: the pattern is invalid or leaves files without a product; one photo is listed under two
                labels (both files are named).
        """
        if self._grouping is None and isinstance(self.pool, CatalogDataset) and self.name not in BUILTIN:
            n = len(self.pool)
            names = self.item_ids(range(n))
            column = self.pool.product_ids
            if column is not None and self.group_by:
                raise DataError(f"{self.name}: the CSV has a group column and --group-by {self.group_by!r} is given "
                                "too; use one of them")
            declared = pattern_groups(names, self.group_by) if self.group_by else \
                [column[p] for p, _ in self.pool.samples] if column is not None else None
            how = f"--group-by '{self.group_by}'" if self.group_by else "CSV group column" if column is not None else None
            with progress_bar(total=n, desc="near-duplicates", unit="img", leave=False, disable=n < 1000) as bar:
                pairs = near_duplicate_pairs(lambda i: self.pool[i][0], n, progress=bar.update)
            targets = self.pool.targets
            clash = [(i, j) for i, j in pairs if targets[i] != targets[j]]
            if clash:
                i, j = clash[0]
                raise DataError(f"{self.name}: {names[i]} ({self.classes[targets[i]]!r}) and {names[j]} "
                                f"({self.classes[targets[j]]!r}) are one photo under two labels ({len(clash)} such "
                                "pair(s)); keep the right label and remove the other file")
            self._grouping = ProductGroups(product_groups(n, declared, pairs), how, pairs)
        return self._grouping

    def fingerprint(self) -> str:
        """A content hash of every image and label of the pool and the test set (computed once)."""
        if self._fingerprint is None:
            h = hashlib.sha256(fingerprint(self.pool).encode())
            h.update(fingerprint(self.test).encode() if self.test is not None else b"-")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def split(self, *, seed: int = 0, val_fraction: float = 0.1, cv_fold: tuple[int, int] | None = None) -> Split:
        """Indices into ``pool``: train/val (and test when there is no official test set), stratified and seeded.
        ``cv_fold=(i, k)``: fold i of a k-fold cross-validation instead (:func:`kfold_split`; no official test set).

        Raises:
            DataError: a class has too few images to be split (the message names it and gives every class's count).
        """
        targets = np.asarray(self.pool.targets)
        counts = Counter(targets.tolist())
        few = [f"{self.classes[c]!r} has {counts.get(c, 0)}" for c in range(len(self.classes))
               if counts.get(c, 0) < MIN_PER_CLASS]
        if few:
            raise DataError(f"{self.name}: a stratified split needs at least {MIN_PER_CLASS} images per class, but "
                            f"{', '.join(few)}; add images or remove that class folder")
        fractions = (1 - val_fraction, val_fraction, 0.0) if self.test is not None else (0.8, 0.1, 0.1)
        if cv_fold is not None and self.test is not None:
            raise DataError(f"{self.name} has an official test set: cross-validation folds (cv_fold={cv_fold}) are "
                            "for folders and CSV catalogs without one")
        groups = self.groups
        if groups is None and (g := self.grouping()) is not None and g.count < len(g.ids):
            groups = g.ids  # products with several images: a split never cuts one
        try:
            if cv_fold is not None:
                return kfold_split(targets, k=cv_fold[1], fold=cv_fold[0], seed=seed, groups=groups)
            return stratified_split(targets, fractions=fractions, seed=seed, groups=groups)
        except ValueError as e:  # scikit-learn: e.g. fewer test images than classes
            per = ", ".join(f"{c}={counts.get(i, 0)}" for i, c in enumerate(self.classes))
            raise DataError(f"{self.name}: cannot split {len(targets)} images into {fractions} ({e}); "
                            f"images per class: {per}") from None

    def item_ids(self, indices: Sequence[int], dataset: Dataset | None = None) -> list:
        """Stable names of items: file paths relative to the folder for image files, indices for in-memory data."""
        ds = self.pool if dataset is None else dataset
        if isinstance(ds, CatalogDataset):
            root = Path(ds.root) if ds.root else None
            return [_relative(ds.samples[int(i)][0], root) for i in indices]
        return [int(i) for i in indices]


def _relative(path: str, root: Path | None) -> str:
    p = Path(path)
    if root is not None:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            pass
    return p.as_posix()


def load_dataset(name_or_path: str | os.PathLike, *, classes: Sequence[str] | None = None,
                 verify: bool = True, group_by: str | None = None) -> Source:
    """The labelled data behind a name: ``"fashion-mnist"``, ``"cifar10"``, ``"product-icons"``, an image folder
    (one sub-folder per class) or a CSV manifest (``path``/``label`` columns).

    Args:
        classes: a class order to use (e.g. a trained model's): folders/labels not in it are skipped and reported.
        verify: decode every image file now and skip (and report) the ones that fail.
        group_by: for a folder or CSV catalog, a regular expression whose first group (searched in each file's
            relative path without extension) names the product, e.g. ``'^(.+)_\\d+$'`` for ``tote_1.jpg``,
            ``tote_2.jpg``: the shots of one product never straddle a split (:meth:`Source.grouping`).

    Raises:
        DatasetNotFoundError: a builtin dataset is not available here.
        DataNotFoundError / DataError: a folder or CSV that is missing or cannot be used.
    """
    name = str(name_or_path)
    if group_by is not None and name in BUILTIN:
        raise DataError(f"group_by={group_by!r}: {name} is a builtin dataset with its own groups; group_by is for "
                        "folders and CSV catalogs")
    if group_by is not None:
        pattern_groups([], group_by)  # an invalid pattern fails here, before any image is read
    if name == "fashion-mnist":
        fm = load_fashion_mnist()
        return Source(name, fm.train, fm.test, list(fm.classes))
    if name == "cifar10":
        train, test = load_cifar10()
        return Source(name, train, test, list(train.classes))
    if name == "product-icons":
        ds = load_product_icons(verify=verify)
        return Source(name, ds, None, list(ds.classes), groups=icon_groups(ds), skipped=list(ds.skipped))
    path = Path(name)
    if path.suffix.lower() == ".csv":
        ds = CatalogDataset.from_csv(path, classes=classes, verify=verify)
    elif path.is_dir():
        ds = CatalogDataset.from_folder(path, classes=classes, verify=verify)
    elif not path.exists():
        raise DataNotFoundError(f"{name}: no such folder or CSV file, and not one of {list(BUILTIN)}")
    else:
        raise DataError(f"{name}: not a folder of class sub-folders or a .csv manifest")
    if len(ds) == 0:
        why = f"; {len(ds.skipped)} file(s) skipped, e.g. {ds.skipped[0].path}: {ds.skipped[0].reason}" if ds.skipped else ""
        raise DataError(f"{name}: no usable images{why}")
    return Source(name, ds, None, list(ds.classes), skipped=list(ds.skipped), group_by=group_by)


# ---------------------------------------------------------------------------------------------- content hashes
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 of the bytes, per process


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (memoised per process while its size and mtime stay the same)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def fingerprint(ds: Dataset) -> str:
    """A content hash of a dataset's images and labels (not of its transform).

    In-memory arrays hash their pixels; image files hash their
    bytes, relative path and label, so editing, adding or relabelling a file changes the fingerprint.
    """
    h = hashlib.sha256()
    if isinstance(ds, Subset):
        h.update(fingerprint(ds.dataset).encode())
        h.update(np.asarray(ds.indices, np.int64).tobytes())
    elif isinstance(ds, ArrayDataset):
        h.update(np.ascontiguousarray(ds.images).tobytes())  # Fashion-MNIST's 47 MB: ~0.1 s
        h.update(np.asarray(ds.targets, np.int64).tobytes())
    elif isinstance(ds, CatalogDataset):
        root = Path(ds.root) if ds.root else None
        for p, y in ds.samples:
            h.update(f"{_relative(p, root)}|{y}|{file_digest(p)}\n".encode())
        h.update("|".join(ds.classes).encode())
    elif hasattr(ds, "tensors"):  # TensorDataset
        for t in ds.tensors:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    else:
        raise TypeError(f"cannot fingerprint a {type(ds).__name__}; use ArrayDataset, CatalogDataset, TensorDataset "
                        "or a Subset of one")
    return h.hexdigest()
