"""Catalog cleaning: find likely label errors with confident learning (Northcutt et al., 2021) via ``cleanlab``.

Product catalogs have wrong labels: a sandal filed under sneakers, a bag under accessories. Confident learning
compares each item's given label with out-of-fold predicted probabilities -- predictions from a model that never
saw that item -- and flags items whose given label the model confidently disagrees with. We wrap cleanlab (the
field's standard implementation) rather than re-implement it; this module adds the out-of-fold probabilities from
frozen features, the synthetic-noise experiment (flip labels on purpose, count how many are found) and precision /
recall at k.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

__all__ = ["out_of_fold_probabilities", "find_label_issues", "flip_labels", "precision_recall_at_k"]


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0,
                              groups: np.ndarray | None = None, C: float = 1.0, max_iter: int = 1000) -> np.ndarray:
    """Predicted class probabilities for every item from a linear model trained on the *other* folds.

    Args:
        features: ``(N, D)`` float features (e.g. frozen ImageNet features or HOG).
        labels: ``(N,)`` int given labels (possibly noisy).
        groups: ``(N,)`` group ids (e.g. variants of one source image) kept in one fold.

    Returns:
        float ``(N, K)`` probabilities; row i comes from a model that never saw item i (nor its group).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    cv = (StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed) if groups is None
          else StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed))
    return cross_val_predict(model, features, labels, cv=cv, groups=groups, method="predict_proba")


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Indices of likely label errors, most likely first (cleanlab's ``find_label_issues``, ranked by the
    self-confidence of the given label).

    Returns:
        int ``(M,)`` item indices.
    """
    from cleanlab.filter import find_label_issues as cl_find

    return np.asarray(cl_find(labels=np.asarray(labels), pred_probs=np.asarray(probabilities),
                              return_indices_ranked_by="self_confidence"), dtype=np.int64)


def flip_labels(labels: np.ndarray, fraction: float, *, num_classes: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A copy of ``labels`` with ``fraction`` of them changed to another class, uniformly at random.

    Returns:
        ``(noisy_labels (N,), flipped_indices (M,))``.
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    idx = np.sort(rng.choice(len(labels), int(round(fraction * len(labels))), replace=False))
    noisy = labels.copy()
    shift = rng.integers(1, num_classes, len(idx))  # never the same class
    noisy[idx] = (labels[idx] + shift) % num_classes
    return noisy, idx


def precision_recall_at_k(ranked: np.ndarray, truth: np.ndarray, ks: tuple[int, ...]) -> list[dict]:
    """For the top ``k`` of a ranked list of flagged items: how many are true errors (precision) and what share of
    all true errors they are (recall)."""
    truth = set(np.asarray(truth).tolist())
    rows = []
    for k in ks:
        top = np.asarray(ranked)[:k]
        hits = sum(int(i) in truth for i in top)
        rows.append({"k": k, "flagged": len(top), "true_errors": hits, "precision": hits / max(len(top), 1),
                     "recall": hits / max(len(truth), 1)})
    return rows
