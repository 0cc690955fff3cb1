"""Frozen-backbone features, cached on disk, so linear probes and stacking train in seconds.

The cache key is a hash of (the backbone's identity, the dataset's content, the transform) -- change any of them and
the features are recomputed; run the same thing twice and the second run reads a file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["dataset_fingerprint", "feature_extractor", "extract_features", "model_fingerprint", "fit_linear_probe",
           "probe_to_linear"]


def dataset_fingerprint(ds: Dataset) -> str:
    """A content hash of a dataset: pixels+labels for in-memory arrays, (path, size, mtime, label) for files."""
    h = hashlib.sha256()
    if isinstance(ds, Subset):
        h.update(dataset_fingerprint(ds.dataset).encode())
        h.update(np.asarray(ds.indices, np.int64).tobytes())
    elif hasattr(ds, "images") and hasattr(ds, "targets"):
        h.update(np.ascontiguousarray(ds.images).tobytes())
        h.update(np.asarray(ds.targets, np.int64).tobytes())
    elif hasattr(ds, "samples"):
        for p, y in ds.samples:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}|{y}\n".encode())
    else:
        raise TypeError(f"cannot fingerprint a {type(ds).__name__}; use ArrayDataset, CatalogDataset or Subset")
    h.update(repr(getattr(ds, "transform", None)).encode())
    return h.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """A hash of a model's parameters and buffers (its exact weights)."""
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


@torch.inference_mode()
def extract_features(backbone: nn.Module, data: Dataset, *, key: dict[str, Any] | None = None,
                     batch_size: int = 256, device: str = "auto", cache_dir: str | os.PathLike | None = None,
                     progress: bool = True, channels_last: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Features of every item of ``data`` under ``backbone``, read from the cache when possible.

    Args:
        backbone: maps a batch ``(B, C, H, W)`` to features ``(B, D)`` (see :func:`feature_extractor`).
        data: a dataset yielding ``(x, y)``; its transform is part of the key.
        key: what identifies the backbone, e.g. ``{"arch": "tf_efficientnet_lite0", "weights": "imagenet"}``.
            None = hash the backbone's weights (always correct, ~0.1 s for a small model).
        cache_dir: default ``<project>/runs/cache/features``.

    Returns:
        ``features`` float32 ``(N, D)`` and ``targets`` int64 ``(N,)``.
    """
    from .evaluate import nhwc
    from .paths import cache_dir as default_cache
    from .progress import progress_bar
    from .train import resolve_device

    ident = {"backbone": key if key is not None else model_fingerprint(backbone), "data": dataset_fingerprint(data),
             "n": len(data)}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]
    folder = Path(cache_dir) if cache_dir is not None else default_cache() / "features"
    path = folder / f"{digest}.pt"
    if path.is_file():
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return obj["features"].numpy(), obj["targets"].numpy()
    dev = resolve_device(device)
    was = backbone.training
    backbone.eval().to(dev)
    feats, ys = [], []
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    with nhwc(backbone, channels_last):
        for x, y in progress_bar(loader, desc="features", leave=False, disable=not progress):
            x = x.to(dev)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            feats.append(backbone(x).float().flatten(1).cpu())
            ys.append(torch.as_tensor(y))
    backbone.train(was)
    out = {"features": torch.cat(feats), "targets": torch.cat(ys).long(), "ident": json.dumps(ident, default=str)}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(out, tmp)
    os.replace(tmp, path)
    return out["features"].numpy(), out["targets"].numpy()


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
    Grad-CAM, export or serving).
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
