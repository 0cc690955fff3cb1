"""A deployable model loaded from ONNX, TorchScript or a checkpoint, and batch prediction on image files.

:func:`load_deployed` reads the metadata an exported file carries (classes, input spec) so that inference uses the
same loader (:func:`prodvision.data.load_image`) and preprocessing (:func:`prodvision.transforms.eval_transform`)
as training. ONNX and TorchScript files need no training code; a ``.pt`` checkpoint is rebuilt with
:mod:`prodvision.models` and also keeps the eager model (``.module``) for Grad-CAM.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .data.images import IMG_EXTENSIONS, ImageLimits, ImageLoadError, ImageSource, load_image
from .transforms import InputSpec, eval_transform

__all__ = ["DeployedModel", "load_deployed", "expand_inputs", "top_k", "predict_images", "SUFFIXES"]

#: File suffixes :func:`load_deployed` understands, and the backend each one uses.
SUFFIXES = {".onnx": "onnx", ".ts": "torchscript", ".pt": "eager", ".pth": "eager"}


@dataclass
class DeployedModel:
    """A classifier ready for inference plus its metadata (see :data:`prodvision.export.META_FIELDS`)."""

    path: Path
    backend: str  # "onnx", "torchscript" or "eager"
    meta: dict[str, Any]
    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)  # float32 (B, C, S, S) -> logits (B, K)
    module: nn.Module | None = field(default=None, repr=False)  # the eager model (checkpoints only), for CAM

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def input_spec(self) -> InputSpec:
        d = dict(self.meta["input"])
        return InputSpec(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})

    @property
    def transform(self):
        """The model's ``eval_transform``: PIL image -> float32 ``(in_chans, size, size)``."""
        s = self.input_spec
        return eval_transform(size=s.size, in_chans=s.in_chans, mean=s.mean, std=s.std,
                              interpolation=s.interpolation, crop_pct=s.crop_pct)

    def preprocess(self, source: ImageSource, *, limits: ImageLimits = ImageLimits(),
                   name: str | None = None) -> torch.Tensor:
        """Load one image exactly as training does; returns float32 ``(in_chans, size, size)``.

        Raises:
            ImageLoadError: the file is refused (the error names it and carries a ``code``).
        """
        return self.transform(load_image(source, mode="RGB", limits=limits, name=name))

    def view(self, image) -> np.ndarray:
        """A PIL image as the model sees it (resize, centre crop; not normalised): uint8 ``(S, S, 3)``."""
        from torchvision.transforms.v2 import functional as F

        s = self.input_spec
        if s.crop_pct >= 1.0:
            image = F.resize(image, [s.size, s.size], antialias=True)
        else:
            image = F.center_crop(F.resize(image, int(round(s.size / s.crop_pct)), antialias=True), [s.size, s.size])
        return np.asarray(image.convert("RGB"))

    def logits(self, x: torch.Tensor) -> np.ndarray:
        """Logits float32 ``(B, K)`` for a preprocessed batch ``(B, C, S, S)``."""
        if x.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        return np.asarray(self.run(x.detach().cpu().float().contiguous().numpy()), dtype=np.float32)


def load_deployed(path: str | os.PathLike, *, threads: int | None = None) -> DeployedModel:
    """Load a ``.onnx`` (ONNX Runtime), ``.ts`` (TorchScript) or ``.pt`` (prodvision checkpoint) model.

    Args:
        threads: ONNX Runtime ``intra_op_num_threads`` (None = let ORT decide); ignored by the torch backends.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown suffix, or an ONNX/TorchScript file without prodvision metadata.
    """
    path = Path(path)
    backend = SUFFIXES.get(path.suffix.lower())
    if backend is None:
        raise ValueError(f"{path}: unknown model file type {path.suffix!r}; use one of {sorted(SUFFIXES)} "
                         "(a checkpoint from prodvision train, or a file from prodvision export)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if backend == "onnx":
        return _load_onnx(path, threads)
    if backend == "torchscript":
        return _load_torchscript(path)
    from .cli import load_model
    from .export import deploy_metadata

    model, ck = load_model(path)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return DeployedModel(path, "eager", deploy_metadata(ck, path), run, module=model)


def _check_meta(meta: dict, path: Path) -> dict:
    missing = [k for k in ("classes", "input", "in_chans") if meta.get(k) is None]
    if missing:
        raise ValueError(f"{path}: no prodvision metadata ({missing} missing); export the model with "
                         "`prodvision export CHECKPOINT` so it carries its classes and input spec")
    return meta


def _load_onnx(path: Path, threads: int | None) -> DeployedModel:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    from .export import META_FIELDS

    props = sess.get_modelmeta().custom_metadata_map
    try:
        meta = {k: json.loads(v) for k, v in props.items() if k in META_FIELDS}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: metadata_props are not prodvision's JSON values ({e})") from None
    inp = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {inp: x})[0]

    return DeployedModel(path, "onnx", _check_meta(meta, path), run)


def _load_torchscript(path: Path) -> DeployedModel:
    extra = {"prodvision.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        try:
            ts = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as e:
            raise ValueError(f"{path}: not a readable TorchScript file ({e})") from None
    meta = json.loads(extra["prodvision.json"]) if extra["prodvision.json"] else {}
    ts.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return ts(torch.from_numpy(x)).float().numpy()

    return DeployedModel(path, "torchscript", _check_meta(meta, path), run)


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
                   k: int = 3, limits: ImageLimits = ImageLimits(), batch_size: int = 32) -> list[dict[str, Any]]:
    """Classify images; one bad file never stops the others.

    Args:
        sources: paths, raw bytes or binary file objects.
        names: how each source is named in the results (default: the path).

    Returns:
        One dict per source, in order: ``{"filename", "top_k": [{"label", "probability"}, ...]}`` or
        ``{"filename", "error": {"code", "reason"}}`` (``code`` is an :class:`ImageLoadError` code).
    """
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
        for (i, _), tk in zip(chunk, top_k(logits, model.classes, k)):
            results[i]["top_k"] = tk
    return results
