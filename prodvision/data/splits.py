"""Seeded, stratified train/val/test splits and a perceptual-hash near-duplicate (leak) check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image
from scipy.fft import dct
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

__all__ = ["Split", "stratified_split", "kfold_split", "phash", "hamming_min", "near_duplicates", "pixel_nearest"]


@dataclass(frozen=True)
class Split:
    """Index arrays into one dataset; disjoint, each sorted."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_split(
    targets: Sequence[int], *, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
    groups: Sequence | None = None,
) -> Split:
    """Split indices ``0..N-1`` into train/val/test with the same class mix in each (80/10/10 by default).

    Args:
        targets: class index of each item.
        fractions: train, val, test fractions; must sum to 1. A zero val or test fraction gives an empty part.
        seed: the same seed and targets always give the same split.
        groups: optional group id per item (e.g. variants of one source image); a group never straddles parts.
            Stratification is then approximate (whole groups are assigned).
    """
    y = np.asarray(targets)
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    idx = np.arange(len(y))
    f_train, f_val, f_test = fractions
    if groups is not None:
        return _group_split(y, np.asarray(groups), fractions, seed)
    rest_idx, test_idx = (idx, idx[:0]) if f_test == 0 else train_test_split(
        idx, test_size=f_test, stratify=y, random_state=seed)
    if f_val == 0:
        train_idx, val_idx = rest_idx, idx[:0]
    else:
        train_idx, val_idx = train_test_split(
            rest_idx, test_size=f_val / (f_train + f_val), stratify=y[rest_idx], random_state=seed + 1)
    return Split(np.sort(train_idx), np.sort(val_idx), np.sort(test_idx))


def kfold_split(targets: Sequence[int], *, k: int, fold: int, seed: int = 0, groups: Sequence | None = None) -> Split:
    """Fold ``fold`` of a seeded, stratified ``k``-fold cross-validation: that fold is held out (its two stratified
    halves are val and test), the other ``k - 1`` folds train. Over ``fold = 0..k-1`` every item is held out exactly
    once, so the held-out predictions of the k runs are one prediction per item (unlike repeated random splits, whose
    held-out sets overlap).

    Args:
        groups: optional group id per item; a group never straddles train and the held-out fold (scikit-learn's
            ``StratifiedGroupKFold``: stratification is then approximate).
    """
    y = np.asarray(targets)
    if not 2 <= k <= len(y) or not 0 <= fold < k:
        raise ValueError(f"k-fold split: need 2 <= k <= {len(y)} and 0 <= fold < k, got k={k}, fold={fold}")
    idx = np.arange(len(y))
    g = None if groups is None else np.asarray(groups)

    def folds(items: np.ndarray, n: int, s: int):
        if g is None:
            return StratifiedKFold(n, shuffle=True, random_state=s).split(items, y[items])
        return StratifiedGroupKFold(n, shuffle=True, random_state=s).split(items, y[items], g[items])

    train_pos, held_pos = list(folds(idx, k, seed))[fold]
    held = idx[held_pos]
    val_pos, test_pos = next(iter(folds(held, 2, seed + 1)))  # two halves of the held-out fold
    return Split(np.sort(idx[train_pos]), np.sort(held[val_pos]), np.sort(held[test_pos]))


def _group_split(y: np.ndarray, groups: np.ndarray, fractions, seed: int) -> Split:
    # One row per group, labelled by the group's class; split the groups stratified, then expand.
    uniq, first = np.unique(groups, return_index=True)
    gy = y[first]
    g = stratified_split(gy, fractions=fractions, seed=seed)
    parts = [np.flatnonzero(np.isin(groups, uniq[p])) for p in (g.train, g.val, g.test)]
    return Split(*parts)


def phash(images: np.ndarray | Sequence[Image.Image], *, hash_size: int = 8, highfreq_factor: int = 4) -> np.ndarray:
    """Perceptual hashes (the ``imagehash.phash`` algorithm, vectorised): one ``uint64`` per image.

    Args:
        images: ``(N, H, W)`` uint8 greyscale array or a sequence of PIL images.

    Returns:
        ``(N,)`` uint64; bit k is set where DCT coefficient k of the 8x8 low-frequency block exceeds its median.
    """
    if hash_size * hash_size > 64:
        raise ValueError("hash_size must be <= 8 to fit a uint64")
    n = hash_size * highfreq_factor
    pils = [Image.fromarray(a) for a in images] if isinstance(images, np.ndarray) else list(images)
    small = np.stack([np.asarray(im.convert("L").resize((n, n), Image.Resampling.LANCZOS), dtype=np.float64)
                      for im in pils])  # (N, n, n)
    coeffs = dct(dct(small, axis=1), axis=2)[:, :hash_size, :hash_size].reshape(len(small), -1)  # (N, 64)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    weights = np.left_shift(np.uint64(1), np.arange(bits.shape[1] - 1, -1, -1, dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    b = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(b, axis=-1).sum(-1)


def hamming_min(queries: np.ndarray, refs: np.ndarray, *, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the smallest Hamming distance to any reference hash and that reference's index."""
    dist = np.empty(len(queries), np.int64)
    arg = np.empty(len(queries), np.int64)
    for s in range(0, len(queries), chunk):
        d = _popcount(queries[s: s + chunk, None] ^ refs[None, :])  # (chunk, M)
        arg[s: s + chunk] = d.argmin(1)
        dist[s: s + chunk] = d[np.arange(len(d)), arg[s: s + chunk]]
    return dist, arg


def near_duplicates(test_hashes: np.ndarray, train_hashes: np.ndarray, *, max_distance: int = 4) -> dict:
    """How many test images have a near-twin (phash distance <= ``max_distance``) in train.

    Returns:
        ``{"count", "fraction", "max_distance", "test_index", "train_index", "distance"}`` where the index arrays
        list each leaking test image and its nearest train image.
    """
    dist, arg = hamming_min(test_hashes, train_hashes)
    leak = np.flatnonzero(dist <= max_distance)
    return {
        "count": int(len(leak)), "fraction": float(len(leak) / max(len(test_hashes), 1)),
        "max_distance": max_distance, "test_index": leak, "train_index": arg[leak], "distance": dist[leak],
    }


def pixel_nearest(queries: np.ndarray, refs: np.ndarray, *, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest neighbour in pixel space: for each query image, the RMSE (0-255 scale) to its closest reference
    image and that image's index. Confirms perceptual-hash candidates (``(N, H, W[, C])`` uint8 inputs).

    Cost: one ``(chunk, D) @ (D, M)`` matrix product per chunk -- about 1 TFLOP for Fashion-MNIST's 10k x 60k.
    """
    import torch

    r = torch.from_numpy(refs.reshape(len(refs), -1)).float()
    rn = (r * r).sum(1)
    dims = r.shape[1]
    dist = np.empty(len(queries), np.float64)
    arg = np.empty(len(queries), np.int64)
    for s in range(0, len(queries), chunk):
        q = torch.from_numpy(queries[s: s + chunk].reshape(-1, dims)).float()
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ r.T + rn[None]  # (chunk, M) squared L2
        v, i = d2.min(1)
        dist[s: s + chunk] = (v.clamp(min=0) / dims).sqrt().numpy()
        arg[s: s + chunk] = i.numpy()
    return dist, arg
