"""The committed colour product-icon set (``data/product-icons/``): 3D emoji renders and flat clip art."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

from ..errors import DataNotFoundError
from ..paths import repo_root
from .catalog import CatalogDataset

__all__ = ["product_icons_dir", "load_product_icons", "icon_groups"]


def product_icons_dir() -> Path:
    """The folder of the committed product-icon set (needs a prodvision checkout)."""
    root = repo_root()
    folder = root / "data" / "product-icons" if root else None
    if folder is None or not folder.is_dir():
        raise DataNotFoundError(
            "data/product-icons/ was not found: the product-icon set ships with the prodvision repository; "
            "run from inside a checkout (git clone ...) or pass the folder to CatalogDataset.from_folder()."
        )
    return folder


#: The set's own documentation at its top level: part of the set, not files the loader failed to use.
SET_FILES = ("README.md", "ATTRIBUTION.md", "MANIFEST.csv")


def load_product_icons(*, transform: Callable | None = None, verify: bool = True) -> CatalogDataset:
    """The product-icon set through the ImageFolder loader (RGB PNGs, one folder per class). Anything it skips is
    reported (``skipped``), except the set's own documentation files (``SET_FILES``)."""
    root = product_icons_dir()
    ds = CatalogDataset.from_folder(root, transform=transform, verify=verify)
    ds.skipped = [s for s in ds.skipped if not (Path(s.path).parent == root and Path(s.path).name in SET_FILES)]
    return ds


def icon_groups(ds: CatalogDataset) -> list[str]:
    """A group id per sample (the source image it was made from), for splits that keep variants together."""
    manifest = Path(ds.root) / "MANIFEST.csv"
    groups = {}
    if manifest.is_file():
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh):
                groups[row["path"]] = row.get("origin") or row["path"]
    return [groups.get(str(Path(p).relative_to(ds.root)), p) for p, _ in ds.samples]
