"""Figures. Each function returns a matplotlib ``Figure``; ``save=`` writes it to ``figures/<name>.png``.

Plots read results (histories, DataFrames, arrays); models never plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .paths import figures_dir

__all__ = ["save_figure", "montage", "augmentation_gallery", "learning_curves", "confusion_matrix_plot",
           "per_class_bars", "reliability_diagram", "top_losses_grid", "cam_grid", "gain_cost_plot",
           "robustness_curves", "to_display", "caption_image", "contact_sheet"]


def save_figure(fig, name: str, folder: str | Path | None = None, dpi: int = 110) -> Path:
    """Save ``fig`` as ``<folder or figures/>/<name>.png`` (stable name, no timestamp metadata)."""
    folder = Path(folder) if folder is not None else figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path


def _finish(fig, save: str | None):
    fig.tight_layout()
    if save:
        save_figure(fig, save)
    return fig


def to_display(img) -> np.ndarray:
    """Any of uint8/float, ``(H, W)``, ``(1|3, H, W)`` or ``(H, W, 3)`` -> an array imshow understands."""
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 1)
    return a


def montage(images: Sequence, labels: Sequence[str] | None = None, *, ncols: int = 10, size: float = 1.3,
            title: str | None = None, save: str | None = None, cmap: str = "gray"):
    """A labelled grid of images."""
    import matplotlib.pyplot as plt

    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_display(images[i]), cmap=cmap, vmin=0, vmax=255 if np.asarray(to_display(images[i])).dtype == np.uint8 else 1)
            if labels is not None:
                ax.set_title(str(labels[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


def augmentation_gallery(rows: Mapping[str, Sequence], *, size: float = 1.4, save: str | None = None):
    """One row per augmentation: ``{"rotation": [img, img, ...], ...}`` (first column is usually the original)."""
    import matplotlib.pyplot as plt

    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(ncols * size, len(rows) * size), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(imgs):
                ax.imshow(to_display(imgs[c]), cmap="gray")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return _finish(fig, save)


def learning_curves(histories: Mapping[str, object] | object, *, save: str | None = None):
    """Loss and accuracy per epoch (train dashed, val solid) for one or several :class:`~prodvision.train.History`."""
    import matplotlib.pyplot as plt

    if not isinstance(histories, Mapping):
        histories = {"model": histories}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, h) in enumerate(histories.items()):
        df = h.to_frame() if hasattr(h, "to_frame") else h
        color = f"C{i}"
        a1.plot(df["epoch"], df["train_loss"], "--", color=color, label=f"{name} train")
        a2.plot(df["epoch"], df["train_acc"], "--", color=color, label=f"{name} train")
        if "val_loss" in df:
            a1.plot(df["epoch"], df["val_loss"], "-o", color=color, ms=3, label=f"{name} val")
            a2.plot(df["epoch"], df["val_acc"], "-o", color=color, ms=3, label=f"{name} val")
    a1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    a2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    a2.legend(fontsize=7)
    return _finish(fig, save)


def confusion_matrix_plot(cm: np.ndarray, classes: Sequence[str], *, save: str | None = None):
    """Counts and row-normalised (recall) confusion matrices side by side (seaborn heatmaps)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", xticklabels=classes, yticklabels=classes, ax=axes[0], cbar=False,
                annot_kws={"fontsize": 7})
    sns.heatmap(norm, annot=True, fmt=".2f", cmap="Blues", xticklabels=classes, yticklabels=classes, ax=axes[1],
                vmin=0, vmax=1, cbar=False, annot_kws={"fontsize": 7})
    axes[0].set(title="counts", xlabel="predicted", ylabel="true")
    axes[1].set(title="normalised by true class (recall)", xlabel="predicted", ylabel="true")
    return _finish(fig, save)


def per_class_bars(report, metrics: Sequence[str] = ("precision", "recall", "f1-score"), *, save: str | None = None):
    """Grouped bars of per-class metrics from :func:`prodvision.evaluate.classification_report_df`."""
    import matplotlib.pyplot as plt

    df = report.drop(index=[i for i in ("accuracy", "macro avg", "weighted avg") if i in report.index])
    fig, ax = plt.subplots(figsize=(max(6, len(df) * 0.9), 3.6))
    x = np.arange(len(df))
    w = 0.8 / len(metrics)
    for i, m in enumerate(metrics):
        ax.bar(x + i * w - 0.4 + w / 2, df[m], w, label=m)
    ax.set_xticks(x, df.index, rotation=30, ha="right")
    lo = max(0.0, float(df[list(metrics)].min().min()) - 0.1)
    ax.set(ylim=(lo, 1.0), ylabel="score")
    ax.legend(fontsize=8, ncol=len(metrics))
    return _finish(fig, save)


def reliability_diagram(bins: Mapping[str, object], *, save: str | None = None):
    """Accuracy vs confidence per bin for one or more calibrations, e.g. ``{"T=1": df, "T=1.4": df2}``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    for name, df in bins.items():
        d = df[df["count"] > 0]
        ax.plot(d["confidence"], d["accuracy"], "o-", ms=4, label=name)
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title="reliability diagram")
    ax.legend(fontsize=8)
    return _finish(fig, save)


def top_losses_grid(images: Sequence, table, classes: Sequence[str], *, ncols: int = 8, save: str | None = None):
    """Images with the highest loss, titled ``true / predicted / p(pred)`` (``table`` from ``top_losses``)."""
    labels = [f"{classes[r.target]}\n→ {classes[r.pred]} ({r.p_pred:.2f})" for r in table.itertuples()]
    return montage([images[i] for i in table["index"]], labels, ncols=ncols, size=1.5, save=save)


def cam_grid(overlays: Sequence[np.ndarray], titles: Sequence[str], *, ncols: int = 6, size: float = 2.0,
             row_labels: Sequence[str] | None = None, save: str | None = None):
    """A grid of CAM overlays (uint8 RGB from :func:`prodvision.explain.overlay`)."""
    import matplotlib.pyplot as plt

    n = len(overlays)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.12), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        ax.spines[:].set_visible(False)
        if i < n:
            ax.imshow(overlays[i])
            ax.set_title(titles[i], fontsize=8)
    if row_labels:
        for r, lab in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(lab, fontsize=9)
    return _finish(fig, save)


def gain_cost_plot(table, *, save: str | None = None):
    """Accuracy vs relative inference cost for members and ensembles (``gain_cost_table`` output)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.scatter(table["relative_cost"], table["accuracy"] * 100, c=(table["forward_passes"] > 1), cmap="coolwarm")
    for r in table.itertuples():
        ax.annotate(r.name, (r.relative_cost, r.accuracy * 100), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set(xlabel="inference cost (forward passes, relative)", ylabel="test accuracy (%)",
           title="ensemble gain vs cost")
    return _finish(fig, save)


def robustness_curves(df, *, save: str | None = None):
    """Accuracy vs shift strength, one panel per shift, one line per model (``robustness_table`` output)."""
    import matplotlib.pyplot as plt

    shifts = list(dict.fromkeys(df["shift"]))
    fig, axes = plt.subplots(1, len(shifts), figsize=(3.0 * len(shifts), 3.1), squeeze=False)
    for ax, s in zip(axes[0], shifts):
        d = df[df["shift"] == s]
        for i, (m, g) in enumerate(d.groupby("model", sort=False)):
            ax.plot(g["strength"], g["accuracy"], "o-", ms=3, color=f"C{i}", label=m)
        ax.set(title=s, xlabel="strength", ylim=(0, 1))
    axes[0, 0].set_ylabel("accuracy")
    axes[0, -1].legend(fontsize=7)
    return _finish(fig, save)


def caption_image(image: np.ndarray, lines: Sequence[str], *, pad: int = 6, line_height: int = 14) -> np.ndarray:
    """An RGB uint8 image ``(H, W, 3)`` with the caption ``lines`` written on white below it (PIL, no matplotlib)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    out = Image.new("RGB", (img.width, img.height + pad * 2 + line_height * len(lines)), "white")
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(lines):
        draw.text((pad, img.height + pad + i * line_height), text, fill=(20, 20, 20))
    return np.asarray(out)


def contact_sheet(images: Sequence[np.ndarray], *, ncols: int = 6, gap: int = 4) -> np.ndarray:
    """Tile RGB uint8 images (any sizes) row by row on white: ``(H, W, 3)`` uint8."""
    from PIL import Image

    tiles = [Image.fromarray(np.asarray(im, dtype=np.uint8)).convert("RGB") for im in images]
    w, h = max(t.width for t in tiles), max(t.height for t in tiles)
    nrows = int(np.ceil(len(tiles) / ncols))
    sheet = Image.new("RGB", (ncols * w + (ncols + 1) * gap, nrows * h + (nrows + 1) * gap), "white")
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        sheet.paste(t, (gap + c * (w + gap), gap + r * (h + gap)))
    return np.asarray(sheet)
