"""Evaluation: predict once, then pure metric functions on ``(logits, targets)``.

``predict(model, loader) -> (logits, targets)`` runs the model under ``inference_mode``; everything else here takes
arrays and returns numbers or DataFrames, using scikit-learn where it has the metric.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .errors import ConfigError, DataError
from .progress import progress_bar
from .runtime import eval_mode, module_device, nhwc, resolve_device

__all__ = [
    "predict", "nhwc", "softmax", "loss_and_accuracy", "accuracy", "top_k_accuracy", "classification_report_df",
    "confusion", "prf",
    "hierarchical_metrics", "expected_calibration_error", "reliability_bins", "fit_temperature", "top_losses",
    "most_confused", "confidence_threshold", "SHIFTS", "apply_shift", "robustness_table",
]


@torch.inference_mode()
def predict(model: nn.Module | Callable[[torch.Tensor], Any], loader: DataLoader | Iterable, *,
            device: str | torch.device = "auto", tta: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
            progress: bool = False, channels_last: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Outputs (logits, or features for a feature extractor) for every item of ``loader``: the one inference path.

    Args:
        model: an ``nn.Module``, or any callable mapping a batch to outputs (e.g. an exported model's ``logits``).
            A module runs in eval mode on ``device`` with NHWC weights; afterwards its mode (per submodule), device
            and memory format are what they were.
        loader: yields ``(x, y)`` batches, ``x`` float ``(B, C, H, W)`` or any tensor the model takes.
        tta: test-time augmentation views, e.g. ``[lambda x: x, lambda x: x.flip(-1)]``; outputs are averaged.

    Returns:
        ``outputs`` float32 ``(N, K)`` and ``targets`` int64 ``(N,)``.
    """
    is_module = isinstance(model, nn.Module)
    dev = resolve_device(device)
    outs, ys = [], []
    it = progress_bar(loader, desc="predict", leave=False) if progress else loader
    views = tta or [lambda t: t]
    with contextlib.ExitStack() as stack:
        if is_module:
            home = module_device(model)
            stack.enter_context(eval_mode(model))
            model.to(dev)
            stack.callback(model.to, home)
            stack.enter_context(nhwc(model, channels_last))
        for x, y in it:
            x = x.to(dev) if is_module else x
            if is_module and channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out = torch.stack([torch.as_tensor(model(v(x))).float() for v in views]).mean(0)  # (B, K)
            outs.append(out.cpu().flatten(1))
            ys.append(torch.as_tensor(y))
    if not outs:
        raise DataError("predict: the data is empty (no batches)")
    return torch.cat(outs).numpy(), torch.cat(ys).numpy().astype(np.int64)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def accuracy(logits_or_pred: np.ndarray, targets: np.ndarray) -> float:
    pred = logits_or_pred.argmax(1) if logits_or_pred.ndim == 2 else logits_or_pred
    return float((pred == targets).mean())


def loss_and_accuracy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``(N, K)`` logits against ``(N,)`` integer targets."""
    lg = torch.as_tensor(logits, dtype=torch.float32)
    loss = nn.functional.cross_entropy(lg, torch.as_tensor(targets, dtype=torch.long)).item()
    return float(loss), accuracy(np.asarray(logits), np.asarray(targets))


def top_k_accuracy(logits: np.ndarray, targets: np.ndarray, k: int = 3) -> float:
    from sklearn.metrics import top_k_accuracy_score

    return float(top_k_accuracy_score(targets, logits, k=k, labels=np.arange(logits.shape[1])))


def prf(logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Accuracy plus macro and weighted precision/recall/F1."""
    from sklearn.metrics import precision_recall_fscore_support

    pred = logits.argmax(1)
    out = {"accuracy": accuracy(pred, targets)}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(targets, pred, average=avg, zero_division=0,
                                                     labels=np.arange(logits.shape[1]))
        out |= {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
    return out


def classification_report_df(logits: np.ndarray, targets: np.ndarray, classes: Sequence[str]):
    """Per-class precision, recall, F1 and support, plus macro/weighted averages, as a DataFrame."""
    import pandas as pd
    from sklearn.metrics import classification_report

    rep = classification_report(targets, logits.argmax(1), labels=np.arange(len(classes)), target_names=list(classes),
                                output_dict=True, zero_division=0)
    return pd.DataFrame(rep).T.rename_axis("class")


def confusion(logits: np.ndarray, targets: np.ndarray, num_classes: int | None = None,
              normalize: str | None = None) -> np.ndarray:
    """Confusion matrix ``C[true, pred]``; ``normalize="true"`` gives per-class recall rows."""
    from sklearn.metrics import confusion_matrix

    k = num_classes or logits.shape[1]
    return confusion_matrix(targets, logits.argmax(1), labels=np.arange(k), normalize=normalize)


def hierarchical_metrics(logits: np.ndarray, targets: np.ndarray, classes: Sequence[str],
                         groups: Mapping[str, str]) -> dict[str, float]:
    """Accuracy at the class level and at a coarse product-group level, and where mistakes fall.

    Args:
        groups: class name -> group name (e.g. Fashion-MNIST's tops/bottoms/dresses/footwear/bags).

    Returns:
        ``fine_acc``, ``coarse_acc`` (prediction in the right group), ``errors``, ``within_group_errors`` (right
        group, wrong class), ``across_group_errors`` and ``within_group_share`` of the errors.
    """
    missing = [c for c in classes if c not in groups]
    if missing:
        raise ValueError(f"no group for classes {missing}")
    names = sorted(set(groups.values()))
    g = np.array([names.index(groups[c]) for c in classes])
    pred = logits.argmax(1)
    wrong = pred != targets
    same_group = g[pred] == g[targets]
    n_err = int(wrong.sum())
    return {"fine_acc": float((~wrong).mean()), "coarse_acc": float(same_group.mean()), "errors": n_err,
            "within_group_errors": int((wrong & same_group).sum()), "across_group_errors": int((wrong & ~same_group).sum()),
            "within_group_share": float((wrong & same_group).sum() / max(n_err, 1))}


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15):
    """Per confidence bin: ``count``, mean ``confidence``, ``accuracy`` (a DataFrame; empty bins have count 0)."""
    import pandas as pd

    conf = probs.max(1)
    correct = probs.argmax(1) == targets
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        m = idx == b
        rows.append({"lo": edges[b], "hi": edges[b + 1], "count": int(m.sum()),
                     "confidence": float(conf[m].mean()) if m.any() else np.nan,
                     "accuracy": float(correct[m].mean()) if m.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean ``|accuracy - confidence|`` over equal-width confidence bins."""
    bins = reliability_bins(probs, targets, n_bins)
    m = bins["count"] > 0
    return float((bins.loc[m, "count"] * (bins.loc[m, "accuracy"] - bins.loc[m, "confidence"]).abs()).sum()
                 / len(targets))


def ece_interval(probs: np.ndarray, targets: np.ndarray, *, n_bins: int = 15, confidence: float = 0.95,
                 n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(ece, low, high)``: :func:`expected_calibration_error` with a bootstrap percentile interval over images.

    ECE is not a mean of per-image values, so :func:`prodvision.claims.claim` cannot bootstrap it; here each draw
    resamples the images (multinomial counts) and recomputes the binned gaps. ``probs`` (N, K), ``targets`` (N,).
    """
    conf = probs.max(1)
    correct = (probs.argmax(1) == targets).astype(np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    onehot = np.eye(n_bins)[np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)]  # (N, bins)
    gap = (correct - conf)[:, None] * onehot  # (N, bins): each image's accuracy - confidence in its bin
    n, rng, draws = len(conf), np.random.default_rng(seed), []
    for start in range(0, n_boot, 200):
        w = rng.multinomial(n, np.full(n, 1 / n), size=min(200, n_boot - start)).astype(np.float64)  # (c, N)
        draws.append(np.abs(w @ gap).sum(1) / n)
    lo, hi = np.quantile(np.concatenate(draws), [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(np.abs(gap.sum(0)).sum() / n), float(lo), float(hi)


def log_loss_per_item(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Each image's negative log-likelihood of its true class under ``softmax(logits / temperature)``: (N,)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    return np.log(np.exp(z).sum(1)) - z[np.arange(len(z)), np.asarray(targets)]


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (fit on validation, never on test)."""
    from scipy.optimize import minimize_scalar

    lg = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(targets)

    def nll(log_t: float) -> float:
        return float(nn.functional.cross_entropy(lg / np.exp(log_t), y))

    res = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(res.x))


def confidence_threshold(logits: np.ndarray, targets: np.ndarray, target_precision: float = 0.95) -> dict:
    """The lowest confidence (top softmax probability) at which the predictions at or above it are right at least
    ``target_precision`` of the time on this data (use validation data; never test).

    Below it a prediction is "unsure": an auto-approval rule sends it to a person. If no threshold reaches the target,
    the threshold is 1.0 (everything is unsure).

    Returns:
        ``{"threshold", "target_precision", "precision" (at the threshold), "coverage" (share at or above it), "n"}``.
    """
    if not 0 < target_precision <= 1:
        raise ConfigError(f"target_precision must be in (0, 1], got {target_precision}")
    conf = softmax(np.asarray(logits, dtype=np.float64)).max(1)
    right = np.asarray(logits).argmax(1) == np.asarray(targets)
    order = np.argsort(-conf, kind="stable")
    prec = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(prec >= target_precision)
    if not len(ok):
        return {"threshold": 1.0, "target_precision": target_precision, "precision": None, "coverage": 0.0,
                "n": int(len(conf))}
    k = int(ok.max())
    t = float(conf[order][k])
    return {"threshold": t, "target_precision": target_precision, "precision": float(prec[k]),
            "coverage": float((conf >= t).mean()), "n": int(len(conf))}


def top_losses(logits: np.ndarray, targets: np.ndarray, k: int = 16):
    """The ``k`` items with the highest cross-entropy: index, target, prediction, loss, p(target), p(pred)."""
    import pandas as pd

    p = softmax(logits)
    loss = -np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, None))
    order = np.argsort(-loss, kind="stable")[:k]
    return pd.DataFrame({"index": order, "target": targets[order], "pred": p[order].argmax(1), "loss": loss[order],
                         "p_target": p[order, targets[order]], "p_pred": p[order].max(1)})


def most_confused(logits: np.ndarray, targets: np.ndarray, classes: Sequence[str], k: int = 5):
    """The ``k`` most frequent (true, predicted) mistakes, counted in both directions separately."""
    import pandas as pd

    cm = confusion(logits, targets, len(classes)).astype(np.int64)
    np.fill_diagonal(cm, 0)
    flat = np.argsort(-cm, axis=None, kind="stable")[:k]
    rows = [(classes[i], classes[j], int(cm[i, j])) for i, j in zip(*np.unravel_index(flat, cm.shape)) if cm[i, j]]
    return pd.DataFrame(rows, columns=["true", "predicted", "count"])


# ---------------------------------------------------------------------------------------------- robustness
def _shift(name: str, s: float, x: torch.Tensor) -> torch.Tensor:
    """Apply one controlled shift of strength ``s`` to float images in [0, 1] ``(B, C, H, W)``."""
    from torchvision.transforms.v2 import functional as F

    if name == "brightness":
        return F.adjust_brightness(x, 1.0 + s)  # s in [-1, 1]: darker/brighter lighting
    if name == "contrast":
        return F.adjust_contrast(x, max(1.0 - s, 0.0))  # s in [0, 1): flatter lighting
    if name == "rotation":
        return F.rotate(x, s, interpolation=F.InterpolationMode.BILINEAR)  # degrees: viewpoint
    if name == "scale":
        h, w = x.shape[-2:]  # s > 0: object smaller (zoom out), size variation
        small = F.resize(x, [max(1, round(h / (1 + s))), max(1, round(w / (1 + s)))], antialias=True)
        ph, pw = h - small.shape[-2], w - small.shape[-1]
        return F.pad(small, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0.0)
    if name == "blur":
        k = 2 * int(round(2 * s)) + 1
        return x if s <= 0 else F.gaussian_blur(x, [k, k], [s, s])  # sigma in pixels: focus
    if name == "occlusion":
        h, w = x.shape[-2:]  # s = side fraction of a centred grey patch (a price tag, a hand)
        ph, pw = int(round(h * s)), int(round(w * s))
        out = x.clone()
        if ph and pw:
            out[..., (h - ph) // 2:(h - ph) // 2 + ph, (w - pw) // 2:(w - pw) // 2 + pw] = 0.5
        return out
    raise ConfigError(f"unknown shift {name!r}; choose from {sorted(SHIFTS)}")


#: Default strengths per shift (the article's lighting / viewpoint / size / background challenges).
SHIFTS: dict[str, tuple[float, ...]] = {
    "brightness": (-0.6, -0.3, 0.0, 0.3, 0.6), "contrast": (0.0, 0.3, 0.6, 0.8),
    "rotation": (0.0, 10.0, 20.0, 30.0, 45.0), "scale": (0.0, 0.25, 0.5, 1.0),
    "blur": (0.0, 0.5, 1.0, 1.5), "occlusion": (0.0, 0.2, 0.35, 0.5),
}


def apply_shift(x01: torch.Tensor, name: str, strength: float) -> torch.Tensor:
    """Public wrapper: shift float images in [0, 1] and clamp back to [0, 1]."""
    return _shift(name, strength, x01).clamp(0, 1)


def robustness_table(model: nn.Module, images_u8: torch.Tensor, targets: np.ndarray, *, mean: Sequence[float],
                     std: Sequence[float], shifts: Mapping[str, Sequence[float]] = SHIFTS, batch_size: int = 500,
                     device: str | torch.device = "auto", label: str = "model"):
    """Accuracy of ``model`` under each shift at each strength, as a tidy DataFrame.

    Args:
        images_u8: uint8 ``(N, C, H, W)`` at the model's input size, before normalisation.
        mean, std: the model's normalisation (applied after the shift).

    Returns:
        Columns ``model, shift, strength, accuracy``.
    """
    import pandas as pd

    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    rows = []
    for name, strengths in shifts.items():
        for st in strengths:
            x = (apply_shift(images_u8.float() / 255.0, name, st) - m) / s  # (N, C, H, W) normalised
            logits, yy = predict(model, DataLoader(TensorDataset(x, y), batch_size=batch_size), device=device)
            rows.append({"model": label, "shift": name, "strength": st, "accuracy": accuracy(logits, yy)})
    return pd.DataFrame(rows)
