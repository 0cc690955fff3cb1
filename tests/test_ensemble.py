"""Ensembles on predictions: each combiner against hand-computed results; stacking uses validation only."""

from __future__ import annotations

import numpy as np
import pytest

from prodvision import ensemble as en
from prodvision.evaluate import accuracy, softmax


def _noisy_members(rng, y, k, m=3, noise=1.6):
    out = []
    for _ in range(m):
        lg = rng.normal(0, noise, (len(y), k))
        lg[np.arange(len(y)), y] += 1.5
        out.append(lg)
    return out


def test_average_and_soft_vote():
    a = np.log(np.array([[0.6, 0.4], [0.2, 0.8]]))
    b = np.log(np.array([[0.2, 0.8], [0.4, 0.6]]))
    np.testing.assert_allclose(en.average([a, b]), [[0.4, 0.6], [0.3, 0.7]])
    assert en.soft_vote([a, b]).tolist() == [1, 1]


def test_hard_vote_majority_and_tiebreak():
    def one_hot(pred, p=0.9):
        out = np.full((len(pred), 3), (1 - p) / 2)
        out[np.arange(len(pred)), pred] = p
        return np.log(out)
    members = [one_hot([0, 1, 2]), one_hot([0, 2, 2]), one_hot([1, 1, 0], p=0.95)]
    assert en.hard_vote(members).tolist() == [0, 1, 2]
    tie = [one_hot([0]), one_hot([1], p=0.95)]
    assert en.hard_vote(tie).tolist() == [1]  # 1 vote each: the more confident member breaks the tie


def test_weights_fitted_on_validation_prefer_the_good_member(rng):
    y = rng.integers(0, 4, 2000)
    good = _noisy_members(rng, y, 4, m=1, noise=0.5)[0]
    bad = rng.normal(0, 1, (2000, 4))
    w = en.fit_weights([good, bad], y)
    assert w[0] > 0.8 and w.sum() == pytest.approx(1.0)
    p = en.weighted_average([good, bad], w)
    assert accuracy(p, y) >= accuracy(en.average([good, bad]), y)
    with pytest.raises(ValueError, match="non-negative"):
        en.weighted_average([good, bad], [1.0])


def test_ensemble_beats_members_on_independent_errors(rng):
    y = rng.integers(0, 5, 3000)
    members = _noisy_members(rng, y, 5, m=5)
    best_single = max(accuracy(m, y) for m in members)
    assert accuracy(en.average(members), y) > best_single + 0.03


def test_stacking_fits_on_validation_and_predicts_test(rng):
    y_val, y_test = rng.integers(0, 3, 1500), rng.integers(0, 3, 1500)
    # member 0 always swaps classes 0 and 1: only a learned combiner can fix that
    def members(y):
        m = _noisy_members(rng, y, 3, m=2, noise=0.8)
        m[0] = m[0][:, [1, 0, 2]]
        return m
    st = en.Stacker().fit(members(y_val), y_val)
    test_members = members(y_test)
    p = st.predict_proba(test_members)
    assert p.shape == (1500, 3)
    assert accuracy(p, y_test) > accuracy(en.average(test_members), y_test) + 0.05
    with pytest.raises(RuntimeError, match="fit"):
        en.Stacker().predict_proba(test_members)


def test_diversity_and_gain_cost(rng):
    y = rng.integers(0, 3, 500)
    ms = dict(zip("abc", _noisy_members(rng, y, 3)))
    div = en.diversity_table(ms, y)
    assert len(div) == 3 and ((div["disagreement"] > 0) & (div["disagreement"] < 1)).all()
    assert en.disagreement(ms["a"], ms["a"]) == 0.0
    table = en.gain_cost_table([{"name": "a", "accuracy": 0.90, "forward_passes": 1},
                                {"name": "b", "accuracy": 0.91, "forward_passes": 1},
                                {"name": "avg", "accuracy": 0.93, "forward_passes": 2}])
    assert table.loc[2, "gain_vs_best_single"] == pytest.approx(2.0) and table.loc[2, "relative_cost"] == 2
    assert softmax(np.zeros((1, 4))).sum() == pytest.approx(1.0)
