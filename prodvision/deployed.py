"""A deployable model and the metadata it carries: :class:`DeployedModel`, :func:`load_deployed`, :func:`deploy_metadata`.

A model ready for inference is an ONNX file (ONNX Runtime), a TorchScript file or a prodvision checkpoint (eager,
which also allows Grad-CAM). Each carries its class names, input spec (size, channels, mean/std, interpolation,
crop, and the photo conversion a Fashion-MNIST model expects), arch, weights hash and its "unsure" threshold, so
prediction uses the same loader (:func:`prodvision.data.load_image`) and preprocessing as training. ONNX and
TorchScript files need no training code. :mod:`prodvision.export` writes such files; :mod:`prodvision.predict` and
:mod:`prodvision.serve` use them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError
from .config import ImageLimits, InputSpec
from .data.images import ImageSource, load_image
from .errors import DataNotFoundError
from .models import load_model
from .transforms import photo_to_fashion_mnist, spec_transform

__all__ = ["DEPLOY_FORMAT", "META_FIELDS", "SUFFIXES", "DeployedModel", "load_deployed", "deploy_metadata",
           "weights_sha256"]

#: The ``format`` field of an exported model's metadata: the version of this metadata layout.
DEPLOY_FORMAT = "prodvision-deploy/1"
#: The metadata every exported file carries (keys of :func:`deploy_metadata`).
META_FIELDS = ("format", "classes", "arch", "model_kwargs", "in_chans", "input", "weights_sha256", "source",
               "torch_version", "calibration")
#: File suffixes :func:`load_deployed` understands, and the backend each one uses.
SUFFIXES = {".onnx": "onnx", ".ts": "torchscript", ".pt": "eager", ".pth": "eager"}
TS_EXTRA_FILE = "prodvision.json"


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor of a state_dict (sorted names, dtype, shape and raw bytes); identifies the weights."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def deploy_metadata(ck: Mapping[str, Any], source: str | os.PathLike | None = None) -> dict[str, Any]:
    """The metadata an exported model carries, from a prodvision checkpoint dict.

    Raises:
        CheckpointError: the checkpoint lacks ``model``/``classes``/``arch``/``input``.
    """
    missing = [k for k in ("model", "classes", "arch", "input") if k not in ck]
    if missing:
        raise CheckpointError(f"{source or 'checkpoint'}: missing {missing}; export needs a checkpoint written by "
                              "prodvision's training (prodvision train, or fit with meta)")
    inp = dict(ck["input"])
    return {"format": DEPLOY_FORMAT, "classes": [str(c) for c in ck["classes"]], "arch": str(ck["arch"]),
            "model_kwargs": json.loads(json.dumps(ck.get("model_kwargs", {}))),
            "in_chans": int(ck.get("in_chans") or inp["in_chans"]), "input": json.loads(json.dumps(inp)),
            "weights_sha256": weights_sha256(ck["model"]), "source": Path(source).name if source else None,
            "torch_version": torch.__version__, "calibration": json.loads(json.dumps(ck.get("calibration")))}


@dataclass
class DeployedModel:
    """A classifier ready for inference plus its metadata (see :data:`META_FIELDS`)."""

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
        return InputSpec.from_dict(dict(self.meta["input"]))

    @property
    def unsure_below(self) -> float | None:
        """Predictions with a lower top probability are "unsure" (chosen on validation for a target precision)."""
        cal = self.meta.get("calibration") or {}
        return cal.get("threshold")

    @property
    def transform(self):
        """Upload -> float32 ``(in_chans, size, size)``: the model's eval transform, after the photo conversion a
        Fashion-MNIST model expects."""
        return spec_transform(self.input_spec, deploy=True)

    def preprocess(self, source: ImageSource, *, limits: ImageLimits = ImageLimits(),
                   name: str | None = None) -> torch.Tensor:
        """Load one image exactly as training does; returns float32 ``(in_chans, size, size)``.

        Raises:
            ImageLoadError: the file is refused (the error names it and carries a ``code``).
        """
        return self.transform(load_image(source, mode="RGB", limits=limits, name=name))

    def view(self, image) -> np.ndarray:
        """A PIL image as the model sees it (photo conversion, resize, centre crop; not normalised): uint8 (S, S, 3)."""
        from torchvision.transforms.v2 import functional as F

        s = self.input_spec
        if s.photo_style == "fashion-mnist":
            image = photo_to_fashion_mnist(image, size=s.size)
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
        DataNotFoundError: no such file.
        CheckpointError: unknown suffix, a file that cannot be read, or one without prodvision metadata.
    """
    path = Path(path)
    backend = SUFFIXES.get(path.suffix.lower())
    if backend is None:
        raise CheckpointError(f"{path}: unknown model file type {path.suffix!r}; use one of {sorted(SUFFIXES)} "
                              "(a checkpoint from prodvision train, or a file from prodvision export)")
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such model file")
    if backend == "onnx":
        return _load_onnx(path, threads)
    if backend == "torchscript":
        return _load_torchscript(path)
    model, ck = load_model(path)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return DeployedModel(path, "eager", deploy_metadata(ck, path), run, module=model)


def _check_meta(meta: dict, path: Path) -> dict:
    missing = [k for k in ("classes", "input", "in_chans") if meta.get(k) is None]
    if missing:
        raise CheckpointError(f"{path}: no prodvision metadata ({missing} missing); export the model with "
                              "`prodvision export CHECKPOINT` so it carries its classes and input spec")
    return meta


def _load_onnx(path: Path, threads: int | None) -> DeployedModel:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own (Fail, InvalidProtobuf, ...) for bad files
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable ONNX model ({first})") from None
    props = sess.get_modelmeta().custom_metadata_map
    try:
        meta = {k: json.loads(v) for k, v in props.items() if k in META_FIELDS}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata_props are not prodvision's JSON values ({e})") from None
    inp = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {inp: x})[0]

    return DeployedModel(path, "onnx", _check_meta(meta, path), run)


def _load_torchscript(path: Path) -> DeployedModel:
    extra = {TS_EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        try:
            ts = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable TorchScript file ({str(e).strip()[:200]})") from None
    meta = json.loads(extra[TS_EXTRA_FILE]) if extra[TS_EXTRA_FILE] else {}
    ts.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return ts(torch.from_numpy(x)).float().numpy()

    return DeployedModel(path, "torchscript", _check_meta(meta, path), run)
