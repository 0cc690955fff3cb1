"""Model ensembles on predictions: average, weighted average, hard/soft voting, stacking, snapshots and TTA.

Every function combines the outputs of several :func:`prodvision.evaluate.predict` calls -- ``(N, K)`` logit
arrays of the same items in the same order -- so an ensemble never re-runs a model. Weights and stacking models
are fitted on **validation** predictions and then applied to test predictions (no leakage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .evaluate import softmax

__all__ = ["average", "weighted_average", "fit_weights", "hard_vote", "soft_vote", "Stacker", "disagreement",
           "diversity_table", "gain_cost_table"]


def _probs(logits_list: Sequence[np.ndarray]) -> np.ndarray:
    shapes = {lg.shape for lg in logits_list}
    if len(shapes) != 1:
        raise ValueError(f"members' predictions have different shapes {sorted(shapes)}")
    return np.stack([softmax(lg) for lg in logits_list])  # (M, N, K)


def average(logits_list: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the members' probabilities. Returns ``(N, K)`` probabilities."""
    return _probs(logits_list).mean(0)


def soft_vote(logits_list: Sequence[np.ndarray]) -> np.ndarray:
    """Soft voting: the class with the largest summed probability (same argmax as :func:`average`); ``(N,)``."""
    return average(logits_list).argmax(1)


def weighted_average(logits_list: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of probabilities; weights are normalised to sum to 1. Returns ``(N, K)``."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(logits_list) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {len(logits_list)} non-negative weights with a positive sum, got {list(w)}")
    return np.tensordot(w / w.sum(), _probs(logits_list), axes=1)


def fit_weights(val_logits: Sequence[np.ndarray], val_targets: np.ndarray) -> np.ndarray:
    """Member weights minimising validation log-loss of the weighted average (softmax-parametrised, L-BFGS)."""
    from scipy.optimize import minimize

    p = _probs(val_logits)  # (M, N, K)
    y = np.asarray(val_targets)
    py = p[:, np.arange(len(y)), y]  # (M, N): each member's probability of the true class

    def loss(a: np.ndarray) -> float:
        w = np.exp(a - a.max())
        w /= w.sum()
        return float(-np.log(np.clip(w @ py, 1e-12, None)).mean())

    res = minimize(loss, np.zeros(len(p)), method="L-BFGS-B")
    w = np.exp(res.x - res.x.max())
    return w / w.sum()


def hard_vote(logits_list: Sequence[np.ndarray]) -> np.ndarray:
    """Majority vote of the members' top-1 classes; ties go to the class with the larger summed probability."""
    p = _probs(logits_list)  # (M, N, K)
    votes = np.zeros(p.shape[1:])
    np.add.at(votes, (np.arange(p.shape[1])[None, :].repeat(len(p), 0), p.argmax(2)), 1.0)  # (N, K) vote counts
    return (votes + 1e-6 * p.mean(0)).argmax(1)  # the tie-break term is far below one vote


@dataclass
class Stacker:
    """Stacking: a multinomial logistic regression on the members' concatenated log-probabilities, standardised.

    Fit on validation predictions, evaluate on test predictions. Standardising matters for speed: raw
    log-probabilities span ~0 to -28, and L-BFGS needed ~1,000 iterations on them (10 s for 3,000 images) vs ~70.
    """

    C: float = 1.0  # inverse L2 strength of the logistic regression
    model: object | None = None

    @staticmethod
    def _features(logits_list: Sequence[np.ndarray]) -> np.ndarray:
        return np.log(np.clip(_probs(logits_list), 1e-12, None)).transpose(1, 0, 2).reshape(len(logits_list[0]), -1)

    def fit(self, val_logits: Sequence[np.ndarray], val_targets: np.ndarray) -> "Stacker":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
        self.model.fit(self._features(val_logits), val_targets)
        return self

    def predict_proba(self, logits_list: Sequence[np.ndarray]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("Stacker.fit(...) must be called on validation predictions first")
        return self.model.predict_proba(self._features(logits_list))


def disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of items on which two members' top-1 predictions differ."""
    return float((a.argmax(1) != b.argmax(1)).mean())


def diversity_table(members: Mapping[str, np.ndarray], targets: np.ndarray):
    """Pairwise disagreement and the correlation of correctness between members, as a long DataFrame."""
    import pandas as pd

    names = list(members)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ca = members[a].argmax(1) == targets
            cb = members[b].argmax(1) == targets
            corr = float(np.corrcoef(ca, cb)[0, 1]) if ca.std() and cb.std() else float("nan")
            rows.append({"a": a, "b": b, "disagreement": disagreement(members[a], members[b]),
                         "both_wrong": float((~ca & ~cb).mean()), "error_correlation": corr})
    return pd.DataFrame(rows)


def gain_cost_table(rows: Sequence[dict]):
    """A table of accuracy gain vs inference cost.

    Args:
        rows: one dict per member or ensemble: ``name``, ``accuracy``, ``forward_passes`` (models x TTA views)
            and optionally ``ms_per_image``.

    Returns:
        A DataFrame with ``gain_vs_best_single`` (accuracy points) and ``relative_cost`` (vs the cheapest row).
    """
    import pandas as pd

    df = pd.DataFrame(list(rows))
    single = df[df["forward_passes"] == 1]["accuracy"].max()
    df["gain_vs_best_single"] = (df["accuracy"] - single) * 100
    df["relative_cost"] = df["forward_passes"] / df["forward_passes"].min()
    return df
