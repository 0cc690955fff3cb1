"""Export a trained checkpoint to ONNX and TorchScript with its metadata; parity checks; int8 and pruned variants.

An exported file is self-describing: it carries the class names, the input spec (size, in_chans, mean/std,
interpolation, crop_pct), the arch and the SHA-256 of the checkpoint's weights. ONNX keeps them in
``metadata_props`` (one entry per field, JSON-encoded values); TorchScript in the ``prodvision.json`` extra file.
Loading needs only ``onnxruntime`` or ``torch.jit.load`` -- see :func:`prodvision.deployed.load_deployed`.

Compression (:func:`compression_table`): dynamic and static int8 quantisation with ``onnxruntime.quantization``
(static calibrated on real images) and global L1 magnitude pruning with ``torch.nn.utils.prune``, each measured for
size, latency and accuracy against fp32 on the same labelled data.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import ONNX_OPSET, ONNX_OPSETS
from .deployed import META_FIELDS, TS_EXTRA_FILE, DeployedModel, deploy_metadata, load_deployed
from .errors import ConfigError, DataError
from .evaluate import predict
from .models import load_model
from .runtime import eval_mode

__all__ = ["ParityResult", "export_onnx", "export_torchscript", "export_checkpoint", "parity_check", "quantize_onnx",
           "prune_global", "sparsity", "measure_latency", "compression_table"]

ONNX_INPUT, ONNX_OUTPUT = "input", "logits"


# ---------------------------------------------------------------------------------------------- export
def _example(meta: Mapping[str, Any], batch: int = 2) -> torch.Tensor:
    size = int(meta["input"]["size"])
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, int(meta["in_chans"]), size, size, generator=g)  # (B, C, S, S)


# ---------------------------------------------------------------------------------------------- export
def export_onnx(model: nn.Module, meta: Mapping[str, Any], path: str | os.PathLike, *, opset: int = ONNX_OPSET) -> Path:
    """Export ``model`` (eval mode) to ONNX with a dynamic batch axis and ``meta`` in ``metadata_props``.

    The graph maps ``input`` float32 ``(B, in_chans, size, size)`` (normalised) to ``logits`` ``(B, K)``.
    Uses the TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs ``onnxscript``.

    Raises:
        ConfigError: ``opset`` is outside ``config.ONNX_OPSETS``, or too old for one of the model's layers.
    """
    import onnx

    lo, hi = ONNX_OPSETS
    if not lo <= opset <= hi:
        raise ConfigError(f"ONNX opset {opset} is outside {lo}..{hi}, the opsets torch's TorchScript-based exporter "
                          f"writes; the default is {ONNX_OPSET}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with eval_mode(model), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # "legacy TorchScript-based ONNX export"
            torch.onnx.export(model, (_example(meta),), str(path), dynamo=False, opset_version=opset,
                              input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                              dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}})
    except torch.onnx.errors.OnnxExporterError as e:  # e.g. a padding that opsets below 11 cannot express
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        newer = f"; try a newer opset, e.g. the default {ONNX_OPSET}" if opset < ONNX_OPSET else ""
        raise ConfigError(f"{meta.get('arch', 'this model')} cannot be exported to ONNX opset {opset}: {first}"
                          + newer) from None
    proto = onnx.load(str(path))
    _set_onnx_meta(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _set_onnx_meta(proto, meta: Mapping[str, Any]) -> None:
    keep = [p for p in proto.metadata_props if p.key not in META_FIELDS]
    del proto.metadata_props[:]
    for p in keep:
        proto.metadata_props.add(key=p.key, value=p.value)
    for k in META_FIELDS:
        proto.metadata_props.add(key=k, value=json.dumps(meta.get(k)))


def export_torchscript(model: nn.Module, meta: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Trace ``model`` to TorchScript and save it with ``meta`` as the ``prodvision.json`` extra file.

    TorchScript is deprecated upstream (FutureWarning from torch >= 2.10); ONNX is the preferred format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with eval_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        traced = torch.jit.trace(model, _example(meta))
        torch.jit.save(traced, str(path), _extra_files={TS_EXTRA_FILE: json.dumps(meta)})
    return path


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike,
                      formats: Sequence[str] = ("onnx", "torchscript"), *, opset: int = ONNX_OPSET) -> dict[str, Path]:
    """Export a prodvision checkpoint. ``out`` is a folder, or a file path whose suffix is replaced per format.

    Returns:
        ``{"onnx": path.onnx, "torchscript": path.ts}`` for the requested ``formats``.
    """
    bad = [f for f in formats if f not in ("onnx", "torchscript")]
    if bad or not formats:
        raise ConfigError(f"unknown export format(s) {bad or formats}; choose from ['onnx', 'torchscript']")
    model, ck = load_model(checkpoint)
    meta = deploy_metadata(ck, checkpoint)
    out = Path(out)
    stem = out / Path(checkpoint).stem if (out.is_dir() or not out.suffix) else out.with_suffix("")
    paths = {}
    if "onnx" in formats:
        paths["onnx"] = export_onnx(model, meta, stem.with_suffix(".onnx"), opset=opset)
    if "torchscript" in formats:
        paths["torchscript"] = export_torchscript(model, meta, stem.with_suffix(".ts"))
    return paths


# ---------------------------------------------------------------------------------------------- parity
@dataclass(frozen=True)
class ParityResult:
    """Exported vs eager outputs on the same inputs."""

    max_abs_diff: float  # max |logits_exported - logits_eager| over the batch
    top1_identical: bool  # the predicted class is the same for every image
    top1_agreement: float  # fraction of images with the same predicted class
    n: int  # images compared

    def ok(self, atol: float = 1e-4) -> bool:
        return self.top1_identical and self.max_abs_diff <= atol


def parity_check(model: nn.Module, exported, images: torch.Tensor) -> ParityResult:
    """Compare an exported model with the eager ``model`` on preprocessed ``images`` ``(B, C, H, W)``.

    Args:
        exported: a path (.onnx / .ts) or a :class:`prodvision.deployed.DeployedModel`.
    """
    dep = exported if isinstance(exported, DeployedModel) else load_deployed(exported)
    with torch.inference_mode(), eval_mode(model):
        ref = model(images).float().numpy()  # (B, K)
    got = dep.logits(images)  # (B, K)
    if got.shape != ref.shape:
        raise ValueError(f"exported model gives logits of shape {got.shape}, eager gives {ref.shape}")
    same = got.argmax(1) == ref.argmax(1)
    return ParityResult(float(np.abs(got - ref).max()), bool(same.all()), float(same.mean()), int(len(ref)))


# ---------------------------------------------------------------------------------------------- compression
def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, *, mode: str = "dynamic",
                  calibration: torch.Tensor | None = None, per_channel: bool = True) -> Path:
    """int8-quantise an ONNX model with ``onnxruntime.quantization``; metadata is kept.

    Args:
        mode: ``"dynamic"`` (int8 weights, activations quantised at run time) or ``"static"`` (int8 weights and
            activations, QDQ format, activation ranges calibrated on ``calibration``).
        calibration: preprocessed real images ``(N, C, H, W)`` for ``"static"`` (a few dozen are enough).
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if mode not in ("dynamic", "static"):
        raise ConfigError(f"unknown quantisation mode {mode!r}; choose 'dynamic' or 'static'")
    if mode == "static" and (calibration is None or len(calibration) == 0):
        raise ConfigError("static quantisation needs calibration images: pass calibration=(N, C, H, W) real images")

    class _Reader(CalibrationDataReader):
        def __init__(self, x: np.ndarray, batch: int = 8):
            self._it = iter([{ONNX_INPUT: x[i:i + batch]} for i in range(0, len(x), batch)])

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))  # shape inference + graph optimisation, as ORT recommends
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)
        else:
            quantize_static(str(pre), str(dst), _Reader(calibration.float().numpy()), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return dst


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def prune_global(model: nn.Module, amount: float) -> nn.Module:
    """A copy of ``model`` with the ``amount`` fraction of smallest-``|w|`` conv/linear weights set to zero (global L1).

    ``prune.remove`` makes the zeros permanent (plain ``weight`` parameters, no masks or hooks left).
    """
    from torch.nn.utils import prune

    if not 0.0 <= amount < 1.0:
        raise ConfigError(f"prune amount must be in [0, 1), got {amount}")
    pruned = copy.deepcopy(model)
    params = _prunable(pruned)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for m, name in params:
        prune.remove(m, name)
    return pruned


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all conv/linear weights."""
    ws = [m.weight.detach() for m, _ in _prunable(model)]
    return float(sum(int((w == 0).sum()) for w in ws) / max(1, sum(w.numel() for w in ws)))


def measure_latency(dep, shape: tuple[int, int, int], *, batch_sizes: Iterable[int] = (1, 32), repeats: int = 20,
                    warmup: int = 3) -> dict[int, float]:
    """Median seconds per call of ``dep.logits`` on random ``(b, *shape)`` inputs, for each batch size ``b``."""
    out = {}
    for b in batch_sizes:
        x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(b))
        for _ in range(warmup):
            dep.logits(x)
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            dep.logits(x)
            times.append(time.perf_counter() - t0)
        out[b] = float(np.median(times))
    return out


def _predict_all(dep: DeployedModel, dataset, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true class indices ``(N,)``, ``(N,)`` over a labelled dataset (through ``evaluate.predict``)."""
    if len(dataset) == 0:
        raise DataError("the accuracy dataset is empty: pass a labelled dataset of preprocessed images")
    logits, ys = predict(dep.logits, DataLoader(dataset, batch_size=batch_size))
    return logits.argmax(1), ys


def compression_table(checkpoint: str | os.PathLike, dataset, *, calibration: torch.Tensor,
                      prune_amounts: Sequence[float] = (0.3, 0.5, 0.7), workdir: str | os.PathLike | None = None,
                      threads: int | None = None, batch_size: int = 32, repeats: int = 20):
    """fp32 ONNX vs int8 (dynamic, static) vs pruned variants: size, latency and accuracy, all measured.

    Args:
        checkpoint: a prodvision checkpoint.
        dataset: labelled ``(x (C, H, W) float32 preprocessed, y int)`` items, e.g. a ``CatalogDataset`` with the
            model's ``eval_transform``; accuracy is computed on it for every variant.
        calibration: preprocessed real images ``(N, C, H, W)`` for static quantisation (use other images than
            ``dataset``'s to avoid calibrating on the test set).
        prune_amounts: global L1 pruning fractions; each pruned model is exported to fp32 ONNX.
        workdir: where the variant files are written (default: a temporary folder, deleted afterwards).
        threads: ONNX Runtime ``intra_op_num_threads`` (None = ORT's default).

    Returns:
        A pandas DataFrame indexed by variant with ``size_mb``, ``gzip_mb`` (dense files only shrink when
        compressed, which is where pruning pays), ``sparsity``, ``ms_per_img_b1``, ``img_per_s_b32``,
        ``accuracy`` and ``top1_agreement`` (with fp32).
    """
    import pandas as pd

    model, ck = load_model(checkpoint)
    meta = deploy_metadata(ck, checkpoint)
    shape = (meta["in_chans"], meta["input"]["size"], meta["input"]["size"])
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(workdir or tmp)
        wd.mkdir(parents=True, exist_ok=True)
        files = {"fp32": (export_onnx(model, meta, wd / "fp32.onnx"), sparsity(model))}
        files["int8-dynamic"] = (quantize_onnx(files["fp32"][0], wd / "int8_dynamic.onnx", mode="dynamic"), None)
        files["int8-static"] = (quantize_onnx(files["fp32"][0], wd / "int8_static.onnx", mode="static",
                                              calibration=calibration), None)
        for a in prune_amounts:
            pm = prune_global(model, a)
            files[f"pruned-{a:g}"] = (export_onnx(pm, meta, wd / f"pruned_{a:g}.onnx"), sparsity(pm))
        ref_pred = None
        rows = []
        for name, (path, sp) in files.items():
            dep = load_deployed(path, threads=threads)
            lat = measure_latency(dep, shape, batch_sizes=(1, batch_size), repeats=repeats)
            preds, ys = _predict_all(dep, dataset, batch_size)
            ref_pred = preds if ref_pred is None else ref_pred
            raw = path.read_bytes()
            rows.append({"variant": name, "size_mb": len(raw) / 2**20, "gzip_mb": len(gzip.compress(raw)) / 2**20,
                         "sparsity": sp, "ms_per_img_b1": 1e3 * lat[1], "img_per_s_b32": batch_size / lat[batch_size],
                         "accuracy": float((preds == ys).mean()),
                         "top1_agreement": float((preds == ref_pred).mean())})
    return pd.DataFrame(rows).set_index("variant")
