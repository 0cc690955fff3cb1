"""Evaluation: predict once, pure metrics on arrays (checked against hand-computed values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from prodvision import evaluate as ev


def _logits(pred, k=3, margin=2.0):
    out = np.zeros((len(pred), k), np.float32)
    out[np.arange(len(pred)), pred] = margin
    return out


def test_predict_restores_mode_and_applies_tta(tiny_model):
    x = torch.rand(10, 3, 8, 8)
    loader = DataLoader(TensorDataset(x, torch.arange(10) % 3), batch_size=4)
    tiny_model.train()
    logits, y = ev.predict(tiny_model, loader, device="cpu")
    assert logits.shape == (10, 3) and y.tolist() == (np.arange(10) % 3).tolist() and tiny_model.training
    with torch.no_grad():
        expect = (tiny_model.eval()(x) + tiny_model(x.flip(-1))) / 2
    tta, _ = ev.predict(tiny_model, loader, device="cpu", tta=[lambda t: t, lambda t: t.flip(-1)])
    np.testing.assert_allclose(tta, expect.numpy(), rtol=1e-5, atol=1e-6)


def test_predict_runs_nhwc_and_hands_the_model_back_in_nchw(tiny_model):
    x = torch.rand(10, 3, 8, 8)
    loader = DataLoader(TensorDataset(x, torch.arange(10) % 3), batch_size=4)
    seen = []
    tiny_model[0].register_forward_pre_hook(lambda m, inp: seen.append(m.weight.is_contiguous()))
    nchw, _ = ev.predict(tiny_model, loader, device="cpu", channels_last=False)
    fast, _ = ev.predict(tiny_model, loader, device="cpu")
    np.testing.assert_allclose(fast, nchw, rtol=1e-5, atol=1e-6)
    assert seen == [True] * 3 + [False] * 3  # NCHW weights, then NHWC ones during the second call
    assert tiny_model[0].weight.is_contiguous()  # handed back as it came
    assert not any(p.is_inference() for p in tiny_model.parameters())  # and still trainable (Grad-CAM needs backward)
    tiny_model(x).sum().backward()
    already = tiny_model.to(memory_format=torch.channels_last)
    ev.predict(already, loader, device="cpu")
    assert not already[0].weight.is_contiguous()  # a model that was NHWC stays NHWC


def test_accuracy_topk_prf():
    y = np.array([0, 1, 2, 2])
    logits = np.array([[3, 2, 1], [3, 2, 1], [1, 2, 3], [3, 2, 1]], np.float32)  # 2 of 4 right
    assert ev.accuracy(logits, y) == 0.5
    assert ev.top_k_accuracy(logits, y, k=2) == 0.75
    m = ev.prf(logits, y)
    # class 0: P=1/3 R=1; class 1: P=0 R=0; class 2: P=1 R=1/2
    assert m["precision_macro"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 + 0 + 0.5) / 3)
    rep = ev.classification_report_df(logits, y, ["a", "b", "c"])
    assert rep.loc["a", "recall"] == 1.0 and rep.loc["c", "support"] == 2


def test_confusion_and_most_confused():
    y = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 2, 2, 1, 2])
    cm = ev.confusion(_logits(pred), y)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 2], [0, 0, 1]]
    mc = ev.most_confused(_logits(pred), y, ["a", "b", "c"], k=2)
    assert mc.iloc[0].tolist() == ["b", "c", 2] and mc.iloc[1].tolist() == ["a", "b", 1]


def test_hierarchical_metrics():
    classes = ["tee", "shirt", "sneaker", "boot"]
    groups = {"tee": "tops", "shirt": "tops", "sneaker": "footwear", "boot": "footwear"}
    y = np.array([0, 1, 2, 3, 0])
    pred = np.array([1, 1, 3, 3, 2])  # one within-tops error, one within-footwear error, one across-group error
    m = ev.hierarchical_metrics(_logits(pred, 4), y, classes, groups)
    assert m["fine_acc"] == 0.4 and m["coarse_acc"] == 0.8
    assert (m["errors"], m["within_group_errors"], m["across_group_errors"]) == (3, 2, 1)
    with pytest.raises(ValueError, match="no group"):
        ev.hierarchical_metrics(_logits(pred, 4), y, classes, {"tee": "tops"})


def test_ece_and_temperature_scaling(rng):
    n, k = 4000, 5
    y = rng.integers(0, k, n)
    noise = rng.normal(0, 1, (n, k))
    noise[np.arange(n), y] += 1.5
    # with unit Gaussian noise the Bayes posterior is softmax(1.5 * noise): those logits are calibrated
    overconfident = noise * 3.0  # twice the calibrated scale, as a net trained to near-zero loss often is
    t = ev.fit_temperature(overconfident, y)
    assert 1.8 < t < 2.2  # recovers the factor 3.0 / 1.5
    before = ev.expected_calibration_error(ev.softmax(overconfident), y)
    after = ev.expected_calibration_error(ev.softmax(overconfident, t), y)
    assert after < before / 2
    perfect = np.eye(k)[y]
    assert ev.expected_calibration_error(perfect, y) == pytest.approx(0.0)


def test_top_losses_order():
    y = np.array([0, 1, 2])
    logits = np.array([[5, 0, 0], [5, 0, 0], [0, 0, 1]], np.float32)
    tl = ev.top_losses(logits, y, k=2)
    assert tl["index"].tolist() == [1, 2] and tl.iloc[0]["pred"] == 0


@pytest.mark.parametrize("name", sorted(ev.SHIFTS))
def test_shifts_keep_shape_and_range_and_change_images(name):
    x = torch.rand(4, 1, 28, 28)
    strengths = [s for s in ev.SHIFTS[name] if s != 0]
    out = ev.apply_shift(x, name, strengths[-1])
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_robustness_table(tiny_model):
    imgs = torch.randint(0, 255, (12, 3, 16, 16), dtype=torch.uint8)
    y = np.arange(12) % 3
    df = ev.robustness_table(tiny_model, imgs, y, mean=(0.5,) * 3, std=(0.5,) * 3, device="auto",
                             shifts={"brightness": (0.0, 0.5), "blur": (0.0, 1.0)}, label="tiny")
    assert list(df.columns) == ["model", "shift", "strength", "accuracy"] and len(df) == 4
    base = df[df["strength"] == 0.0]["accuracy"].unique()
    assert len(base) == 1  # strength 0 is the unshifted accuracy for every shift


def test_log_loss_per_item_is_cross_entropy_per_image_at_any_temperature():
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(50, 7)) * 5, rng.integers(0, 7, 50)
    for t in (1.0, 2.5):
        want = torch.nn.functional.cross_entropy(torch.from_numpy(logits / t), torch.from_numpy(targets),
                                                 reduction="none").numpy()
        np.testing.assert_allclose(ev.log_loss_per_item(logits, targets, t), want, rtol=1e-10, atol=1e-12)


def test_ece_interval_brackets_the_ece_and_shrinks_with_more_images():
    rng = np.random.default_rng(1)

    def overconfident(n):  # confidence ~0.95, accuracy ~0.7: ECE about 0.25
        probs = np.full((n, 2), 0.05)
        probs[:, 0] = 0.95
        targets = (rng.random(n) > 0.7).astype(int)
        return probs, targets

    small, large = overconfident(200), overconfident(5000)
    ece, lo, hi = ev.ece_interval(*small)
    assert ece == pytest.approx(ev.expected_calibration_error(*small))
    assert lo <= ece <= hi and 0.15 < ece < 0.35
    ece_l, lo_l, hi_l = ev.ece_interval(*large)
    assert (hi_l - lo_l) < (hi - lo) / 3  # ~sqrt(25) = 5 times narrower
