"""Which images are one product, so that a split never cuts a product in two.

A shop's catalog has several photos of each product. A split that ignores it puts sibling shots of one product in
training and in test, and the test score then measures recognising photos of products the model trained on: it
flatters the model (a catalog of 114 products x 3 shots scored 100% on such a test split and 75% on unseen products).
Groups come from what the catalog says -- a CSV ``group`` column, or a file-name pattern (``--group-by REGEX``) --
joined with the near-duplicates found in the pixels (the same photo re-saved, resized or re-encoded): perceptual-hash
candidates confirmed in pixel space, as notebook 02 does for Fashion-MNIST.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, Sequence

import numpy as np

from ..errors import DataError
from .splits import _popcount, phash

__all__ = ["ProductGroups", "pattern_groups", "near_duplicate_pairs", "product_groups", "shot_pattern_hint",
           "MAX_DISTANCE", "PIXEL_RMSE"]

MAX_DISTANCE = 4  # perceptual-hash Hamming distance (of 64 bits) that makes two images near-duplicate candidates
PIXEL_RMSE = 10.0  # and the greyscale RMSE (0-255, at 32 x 32 px) under which the candidates are one photo
_SIDE = 32


@dataclass(frozen=True)
class ProductGroups:
    """A group id per image, and where the groups came from (for the reports of scan and train)."""

    ids: list[str]  # one per image, in the catalog's order
    declared: str | None  # "csv group column", "--group-by '<regex>'" or None
    near_duplicate_pairs: list[tuple[int, int]]  # image index pairs joined because their pixels are one photo

    @property
    def count(self) -> int:
        return len(set(self.ids))

    def summary(self) -> str:
        n = len(self.ids)
        src = f"groups from the {self.declared}" if self.declared else "no groups declared (each image its own)"
        return (f"{n} images in {self.count} product groups ({src}; {len(self.near_duplicate_pairs)} near-duplicate "
                "pair(s) joined); a split never cuts a group")


def pattern_groups(names: Sequence[str], regex: str, *, where: str = "--group-by") -> list[str]:
    """A group id per file: ``regex`` searched in each relative path without its extension; the id is the first
    capturing group (or the whole match). E.g. ``'^(.+)_\\d+$'`` makes ``bags/tote_1.jpg`` and ``bags/tote_2.jpg``
    one product ``bags/tote``.

    Raises:
        DataError: an invalid pattern, or files it does not match (named: a file without a product is an error,
            not silently its own product).
    """
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise DataError(f"{where} '{regex}': not a valid regular expression ({e})") from None
    ids, unmatched = [], []
    for name in names:
        stem = str(PurePosixPath(name).with_suffix(""))
        m = pattern.search(stem)
        if m is None:
            unmatched.append(name)
            continue
        ids.append(m.group(1) if pattern.groups else m.group(0))
    if unmatched:
        raise DataError(f"{where} '{regex}' matches no product id in {len(unmatched)} of {len(names)} file(s), e.g. "
                        f"{unmatched[0]!r}; fix the pattern (it is searched in the path without extension)")
    return ids


def _thumbnails(load: Callable[[int], object], n: int, progress=None):
    from PIL import Image

    thumbs, hashes = np.empty((n, _SIDE, _SIDE), np.uint8), np.empty(n, np.uint64)
    for i in range(n):
        im = load(i).convert("L")
        thumbs[i] = np.asarray(im.resize((_SIDE, _SIDE), Image.Resampling.BILINEAR))
        hashes[i] = phash([im])[0]
        if progress is not None:
            progress(1)
    return thumbs, hashes


def near_duplicate_pairs(load: Callable[[int], object], n: int, *, max_distance: int = MAX_DISTANCE,
                         pixel_rmse: float = PIXEL_RMSE, progress=None) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of images that are one photo: perceptual hashes within ``max_distance`` bits and
    greyscale pixels (32 x 32) within ``pixel_rmse``. ``load(i)`` returns image i as a PIL image."""
    if n < 2:
        return []
    thumbs, hashes = _thumbnails(load, n, progress)
    flat = thumbs.reshape(n, -1).astype(np.float32)
    pairs = []
    for s in range(0, n, 512):
        d = _popcount(hashes[s:s + 512, None] ^ hashes[None, :])  # (chunk, n)
        for a, b in zip(*np.nonzero(d <= max_distance)):
            i, j = s + int(a), int(b)
            if i < j and float(np.sqrt(np.mean((flat[i] - flat[j]) ** 2))) <= pixel_rmse:
                pairs.append((i, j))
    return pairs


def product_groups(n: int, declared: Sequence[str] | None = None,
                   pairs: Sequence[tuple[int, int]] = ()) -> list[str]:
    """Union of the declared groups and the near-duplicate pairs: one id per image (a declared id where there is
    one, the first image's otherwise)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    if declared is not None:
        first: dict[str, int] = {}
        for i, g in enumerate(declared):
            join(i, first.setdefault(str(g), i))
    for i, j in pairs:
        join(i, j)
    names = [str(declared[i]) if declared is not None else f"#{i}" for i in range(n)]
    return [names[root(i)] for i in range(n)]


def shot_pattern_hint(names: Sequence[str], *, min_share: float = 0.2) -> str | None:
    """A warning when file names look like several shots per product (``tote_1.jpg``, ``tote_2.jpg``) but no groups
    were declared, with the ``--group-by`` pattern that would declare them; None when they do not."""
    pattern = r"^(.+)[-_ ]\d+$"
    matches = [re.match(pattern, str(PurePosixPath(n).with_suffix(""))) for n in names]
    counts = Counter(m.group(1) for m in matches if m)
    shared = sum(c for c in counts.values() if c > 1)
    if not names or shared / len(names) < min_share:
        return None
    example = next(s for s, c in counts.items() if c > 1)
    return (f"{shared} of {len(names)} files share a name up to a trailing number (e.g. {example!r} x "
            f"{counts[example]}): if those are shots of one product, pass --group-by '{pattern}' so that no product "
            "is split between training and test")
