"""Batch prediction on image files: walk folders, classify every image, flag the unsure ones, report the bad ones.

:func:`predict_images` runs a :class:`prodvision.deployed.DeployedModel` (ONNX, TorchScript or checkpoint) over
paths, bytes or file objects; one bad file never stops the others. A prediction whose top probability is below the
model's "unsure" threshold (chosen on validation for a target precision when it was trained) is marked
``"unsure": true`` -- an answer for a person to check, not a bare top-1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .config import ImageLimits
from .data.images import IMG_EXTENSIONS, ImageLoadError, ImageSource
from .deployed import DeployedModel

__all__ = ["expand_inputs", "top_k", "predict_images"]


# ---------------------------------------------------------------------------------------------- prediction
def expand_inputs(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Files to classify: named files as given, directories walked in sorted order.

    Hidden files and folders (``.name``) are skipped. In directories only image extensions are taken; the other
    files are returned as the second list so the caller can report them (a named file is always tried).

    Returns:
        ``(files, skipped_non_images)``.
    """
    files, skipped = [], []
    for p in map(Path, paths):
        if not p.is_dir():
            files.append(p)
            continue
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                f = Path(dirpath) / name
                (files if name.lower().endswith(IMG_EXTENSIONS) else skipped).append(f)
    return files, skipped


def top_k(logits: np.ndarray, classes: Sequence[str], k: int = 3) -> list[list[dict[str, Any]]]:
    """Softmax probabilities' ``k`` best classes per row of ``logits`` ``(B, K)``: ``[{"label", "probability"}]``."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)  # (B, K)
    k = max(1, min(int(k), p.shape[1]))
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return [[{"label": classes[j], "probability": float(row[j])} for j in idx] for row, idx in zip(p, order)]


def predict_images(model: DeployedModel, sources: Sequence[ImageSource], *, names: Sequence[str] | None = None,
                   k: int = 3, limits: ImageLimits = ImageLimits(), batch_size: int = 32,
                   unsure_below: float | None = None) -> list[dict[str, Any]]:
    """Classify images; one bad file never stops the others.

    Args:
        sources: paths, raw bytes or binary file objects.
        names: how each source is named in the results (default: the path).
        unsure_below: top probability under which a prediction is "unsure" (default: the model's own threshold;
            a model without one marks nothing).

    Returns:
        One dict per source, in order: ``{"filename", "label", "probability", "unsure", "top_k": [{"label",
        "probability"}, ...]}`` or ``{"filename", "error": {"code", "reason"}}`` (an :class:`ImageLoadError` code).
    """
    threshold = model.unsure_below if unsure_below is None else unsure_below
    if names is not None and len(names) != len(sources):
        raise ValueError(f"{len(names)} names for {len(sources)} sources: give one name per source")
    names = [str(n) for n in names] if names is not None else [
        str(s) if isinstance(s, (str, os.PathLike)) else getattr(s, "name", f"<upload {i}>")
        for i, s in enumerate(sources)]
    results: list[dict[str, Any]] = [{"filename": n} for n in names]
    ok: list[tuple[int, torch.Tensor]] = []
    for i, (src, name) in enumerate(zip(sources, names)):
        try:
            ok.append((i, model.preprocess(src, limits=limits, name=name)))
        except ImageLoadError as e:
            results[i]["error"] = {"code": e.code, "reason": e.reason}
    for start in range(0, len(ok), batch_size):
        chunk = ok[start:start + batch_size]
        logits = model.logits(torch.stack([x for _, x in chunk]))  # (b, K)
        for (i, _), tk in zip(chunk, top_k(logits, model.classes, max(k, 1))):
            best = tk[0]
            results[i].update(label=best["label"], probability=best["probability"],
                              unsure=threshold is not None and best["probability"] < threshold, top_k=tk)
    return results
