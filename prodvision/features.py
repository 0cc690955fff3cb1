"""Frozen-network outputs computed once and cached on disk: penultimate features for linear probes, and a frozen
trunk's activations at a stage boundary for training only the last stage.

The cache key is a hash of (what the network is, the dataset's content, its transform, the view) -- change any of them
and the outputs are recomputed; run the same thing twice and the second run reads a file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .cache import atomic_write, make_key, read_or_discard
from .data.sources import fingerprint
from .evaluate import predict
from .paths import cache_dir as default_cache
from .runtime import allocator, resolve_device, seed_everything

__all__ = ["dataset_fingerprint", "feature_extractor", "extract_features", "model_fingerprint", "fit_linear_probe",
           "probe_to_linear", "trunk_activations", "ViewsDataset", "hog_features"]


def dataset_fingerprint(ds: Dataset) -> str:
    """A content hash of a dataset's images and labels and of its transform (a different transform, other outputs)."""
    transform = getattr(ds.dataset if isinstance(ds, Subset) else ds, "transform", None)
    return make_key({"content": fingerprint(ds), "transform": repr(transform)}, length=32)


def model_fingerprint(model: nn.Module) -> str:
    """A hash of a model's parameters and buffers (its exact weights)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def feature_extractor(model: nn.Module, classifier: str) -> nn.Module:
    """A copy of ``model`` whose classifier is ``nn.Identity``: it returns the penultimate features ``(B, D)``."""
    fx = copy.deepcopy(model)
    parent, _, child = classifier.rpartition(".")
    setattr(fx.get_submodule(parent) if parent else fx, child, nn.Identity())
    return fx.eval()


def extract_features(backbone: nn.Module, data: Dataset, *, key: dict[str, Any] | None = None,
                     batch_size: int = 256, device: str = "auto", cache_dir: str | os.PathLike | None = None,
                     progress: bool = True, channels_last: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of ``backbone`` for every item of ``data`` (flattened), read from the cache when possible.

    Args:
        backbone: maps a batch ``(B, C, H, W)`` to features ``(B, ...)`` (see :func:`feature_extractor`).
        data: a dataset yielding ``(x, y)``; its content and transform are part of the key.
        key: what identifies the backbone, e.g. ``{"arch": "tf_efficientnet_lite0", "weights": "imagenet"}``.
            None = hash the backbone's weights (always correct, ~0.1 s for a small model).
        cache_dir: default ``<cache>/features``.

    Returns:
        ``features`` float32 ``(N, D)`` and ``targets`` int64 ``(N,)``.
    """
    ident = {"backbone": key if key is not None else model_fingerprint(backbone), "data": dataset_fingerprint(data),
             "n": len(data)}
    path = Path(cache_dir if cache_dir is not None else default_cache() / "features") / f"{make_key(ident, 24)}.pt"
    cached = read_or_discard(path, lambda p: _read_features(p, len(data)))
    if cached is not None:
        return cached
    if resolve_device(device).type == "cpu":
        allocator("reuse")  # a frozen network at photo sizes runs faster when activations stay in the heap
    feats, ys = predict(backbone, DataLoader(data, batch_size=batch_size, shuffle=False), device=device,
                        progress=progress, channels_last=channels_last)
    obj = {"features": torch.from_numpy(feats), "targets": torch.from_numpy(ys)}
    atomic_write(path, lambda fh: torch.save(obj, fh))
    return feats, ys


def _read_features(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A features file written by :func:`extract_features`; raises if it is not one for ``n`` items."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    feats, ys = obj["features"], obj["targets"]
    if not (isinstance(feats, torch.Tensor) and isinstance(ys, torch.Tensor) and len(feats) == len(ys) == n):
        raise ValueError(f"holds {len(feats)} features and {len(ys)} targets, not {n} of each")
    return feats.numpy(), ys.numpy()


def trunk_activations(trunk: nn.Module, data: Dataset, *, key: dict[str, Any], views: int = 1, seed: int = 0,
                      batch_size: int = 64, device: str = "auto", progress: bool = True) -> tuple[torch.Tensor, ...]:
    """A frozen trunk's output for every item of ``data``, for ``views`` draws of its (random) transform.

    Training only the layers after a frozen trunk then needs one trunk pass per image and view instead of one per
    image and epoch: with an augmenting transform, each view is one seeded draw of the augmentations.

    Returns:
        ``activations`` float32 ``(views, N, C, h, w)`` and ``targets`` int64 ``(N,)``.
    """
    outs, ys = [], None
    for v in range(views):
        seed_everything(seed * 1000 + v)  # the augmentation draws of view v
        f, y = extract_features(trunk, data, key={**key, "view": v, "seed": seed, "views": views},
                                batch_size=batch_size, device=device, progress=progress)
        outs.append(torch.from_numpy(f))
        ys = y
    x0 = data[0][0]
    with torch.inference_mode():
        shape = trunk.eval()(x0[None].to(next(trunk.parameters()).device)).shape[1:]  # (C, h, w)
    return torch.stack(outs).reshape(views, len(data), *shape), torch.from_numpy(ys)


class ViewsDataset(Dataset):
    """Cached activations ``(V, N, ...)`` with targets: item ``i`` is one of its V views, drawn at random each time
    (from torch's global generator, which ``fit`` seeds per epoch)."""

    def __init__(self, activations: torch.Tensor, targets: torch.Tensor, classes: list[str] | None = None):
        self.activations, self.targets, self.classes = activations, torch.as_tensor(targets), classes or []

    def __len__(self) -> int:
        return self.activations.shape[1]

    def __getitem__(self, i: int):
        v = int(torch.randint(self.activations.shape[0], ()))
        return self.activations[v, i], int(self.targets[i])

    def __getitems__(self, indices: list[int]) -> list:
        idx = torch.as_tensor(indices)
        v = torch.randint(self.activations.shape[0], (len(idx),))
        return list(zip(self.activations[v, idx].unbind(0), self.targets[idx].tolist()))


def fit_linear_probe(features: np.ndarray, targets: np.ndarray, *, C: float = 1.0, max_iter: int = 2000):
    """A linear classifier on frozen features: standardise, then multinomial logistic regression (scikit-learn).

    Returns the fitted pipeline (``.predict``, ``.predict_proba``, ``.decision_function``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter)).fit(features, targets)


def probe_to_linear(probe) -> nn.Linear:
    """Fold a :func:`fit_linear_probe` pipeline (standardise + logistic regression) into one ``nn.Linear``.

    ``W' = W / sigma`` and ``b' = b - W' mu``, so ``linear(f)`` gives the probe's decision function on raw features:
    put it in place of a pretrained model's classifier and the frozen backbone + probe is one ordinary model (for
    Grad-CAM, export, serving, or as the starting head of fine-tuning: LP-FT).
    """
    scaler, lr = probe[0], probe[-1]
    w = lr.coef_ / scaler.scale_[None, :]  # (K, D)
    b = lr.intercept_ - w @ scaler.mean_
    if w.shape[0] == 1:  # binary logistic regression: one logit -> two
        w, b = np.concatenate([-w, w]) / 2, np.concatenate([-b, b]) / 2
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        lin.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    return lin


def hog_features(images: np.ndarray, *, pixels_per_cell: int = 4, cells_per_block: int = 2,
                 orientations: int = 9) -> np.ndarray:
    """Histogram-of-oriented-gradients descriptors (Dalal & Triggs, 2005; scikit-image): the hand-made features
    image classifiers used before CNNs learned their own.

    Args:
        images: uint8 ``(N, H, W)`` greyscale or ``(N, H, W, 3)`` colour (converted to grey).

    Returns:
        float32 ``(N, D)``.
    """
    from skimage.color import rgb2gray
    from skimage.feature import hog

    ims = np.asarray(images)
    return np.stack([hog(rgb2gray(im) if im.ndim == 3 else im, orientations=orientations,
                         pixels_per_cell=(pixels_per_cell,) * 2, cells_per_block=(cells_per_block,) * 2,
                         block_norm="L2-Hys", feature_vector=True) for im in ims]).astype(np.float32)
