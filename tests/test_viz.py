"""Every figure function returns a Figure and saves under a stable name (Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from prodvision import ensemble, evaluate, viz
from prodvision.train import History


@pytest.fixture
def figdir(tmp_path, monkeypatch):
    monkeypatch.setenv("PRODVISION_FIGURES", str(tmp_path))
    return tmp_path


def test_all_figures(figdir, rng):
    imgs = rng.integers(0, 255, (12, 28, 28), dtype=np.uint8)
    y = np.arange(12) % 3
    logits = rng.normal(0, 1, (12, 3))
    classes = ["a", "b", "c"]
    hist = History(epochs=[{"epoch": e, "train_loss": 1 / e, "train_acc": 0.5, "val_loss": 1.1 / e, "val_acc": 0.4}
                           for e in (1, 2, 3)])
    figs = {
        "montage": viz.montage(list(imgs), [classes[i] for i in y], ncols=6, save="montage"),
        "aug": viz.augmentation_gallery({"orig": list(imgs[:3]), "flip": [i[:, ::-1] for i in imgs[:3]]}, save="aug"),
        "curves": viz.learning_curves({"m": hist}, save="curves"),
        "cm": viz.confusion_matrix_plot(evaluate.confusion(logits, y), classes, save="cm"),
        "bars": viz.per_class_bars(evaluate.classification_report_df(logits, y, classes), save="bars"),
        "rel": viz.reliability_diagram({"T=1": evaluate.reliability_bins(evaluate.softmax(logits), y)}, save="rel"),
        "tl": viz.top_losses_grid(list(imgs), evaluate.top_losses(logits, y, k=4), classes, save="tl"),
        "cam": viz.cam_grid([np.zeros((32, 32, 3), np.uint8)] * 4, ["x"] * 4, ncols=2, save="cam"),
        "gc": viz.gain_cost_plot(ensemble.gain_cost_table([{"name": "a", "accuracy": 0.9, "forward_passes": 1},
                                                           {"name": "e", "accuracy": 0.92, "forward_passes": 2}]),
                                 save="gc"),
        "rob": viz.robustness_curves(pd.DataFrame({"model": ["m"] * 4, "shift": ["blur"] * 2 + ["scale"] * 2,
                                                   "strength": [0, 1, 0, 1], "accuracy": [0.9, 0.5, 0.9, 0.7]}),
                                     save="rob"),
    }
    for name, fig in figs.items():
        assert isinstance(fig, matplotlib.figure.Figure), name
        path = figdir / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 1000, name
