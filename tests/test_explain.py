"""Grad-CAM wrapper: every ARCHS entry, frozen and train-mode models, per-image targets, hooks released."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prodvision import explain
from prodvision.errors import ConfigError
from prodvision.models import ARCHS, create_model


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_cam_on_every_arch_has_input_size_and_unit_range(name):
    torch.manual_seed(0)
    in_chans = ARCHS[name].input.in_chans
    size = 64 if name.startswith(("vgg", "googlenet")) else 32  # VGG pools 5 times
    model = create_model(name, 4, in_chans=in_chans).eval()
    x = torch.randn(2, in_chans, size, size)
    maps = explain.cam(model, x, targets=[0, 3], arch=name)
    assert maps.shape == (2, size, size) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def _small():
    torch.manual_seed(0)
    return create_model("mini_resnet", 3, widths=(4, 8, 8))


@pytest.mark.parametrize("method", explain.CAM_METHODS)
def test_every_method_runs(method):
    maps = explain.cam(_small(), torch.randn(2, 1, 16, 16), targets=[0, 1], method=method, arch="mini_resnet")
    assert maps.shape == (2, 16, 16) and 0 <= maps.min() and maps.max() <= 1


def test_frozen_train_mode_model_is_restored_and_hooks_released():
    model = _small()
    for p in model.parameters():
        p.requires_grad = False
    model.layer1.requires_grad_(True)  # a partly frozen model: flags must come back exactly
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    layer = model.get_submodule("layer3")
    maps = explain.cam(model, torch.randn(3, 1, 16, 16), targets=[2, 1, 0], arch="mini_resnet")
    assert maps.max() > 0  # gradients did flow through the frozen layers
    assert model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not layer._forward_hooks and all(p.grad is None for p in model.parameters())


def test_targets_are_per_image():
    model = _small().eval()
    x = torch.randn(1, 1, 16, 16).repeat(2, 1, 1, 1)
    a = explain.cam(model, x, targets=[0, 1], arch="mini_resnet")
    b = explain.cam(model, x[:1], targets=[1], arch="mini_resnet")
    np.testing.assert_allclose(a[1], b[0], atol=1e-5)  # image 2 was explained for class 1, not class 0
    with pytest.raises(ValueError, match="one target per image"):
        explain.cam(model, x, targets=[0], arch="mini_resnet")


def test_layer_choice_and_errors():
    model = _small()
    with pytest.raises(ValueError, match="arch="):
        explain.cam(model, torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="unknown CAM method"):
        explain.cam(model, torch.randn(1, 1, 16, 16), arch="mini_resnet", method="magic")
    maps = explain.cam(model, torch.randn(1, 1, 16, 16), layer="layer1")
    assert maps.shape == (1, 16, 16)


def test_sanity_check_and_faithfulness():
    model = _small().eval()
    x = torch.randn(4, 1, 16, 16)
    res = explain.sanity_check(model, x, arch="mini_resnet")
    assert res["spearman"].shape == (4,) and 0 <= res["mean_abs_spearman"] <= 1
    blank = np.isnan(res["spearman"])
    np.testing.assert_allclose(res["abs_spearman"][~blank], np.abs(res["spearman"][~blank]))
    assert (res["abs_spearman"][blank] == 1).all()
    assert not np.allclose(res["trained"], res["random"])
    f = explain.faithfulness(model, x, res["trained"], targets=[0, 1, 2, 0], percentiles=(20, 80))
    assert set(f) == {"road_combined", "road_morf", "road_lerf", "confidence_change"}
    assert all(v.shape == (4,) and np.isfinite(v).all() for v in f.values())  # per image, for intervals


def test_road_combined_is_grad_cams_definition():
    """faithfulness computes LeRF and MoRF once and combines them; under one seed that is exactly grad-cam's
    ROADCombined (which imputes both again), and road_combined = (LeRF - MoRF) / 2."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = _small().eval()
    x = torch.randn(3, 1, 16, 16)
    maps = explain.random_maps(3, (16, 16), seed=0)
    torch.manual_seed(5)
    ours = explain.faithfulness(model, x, maps, targets=[0, 1, 2], percentiles=(20, 60))
    torch.manual_seed(5)
    theirs = ROADCombined(percentiles=[20, 60])(x, maps, [ClassifierOutputSoftmaxTarget(t) for t in (0, 1, 2)], model)
    np.testing.assert_allclose(ours["road_combined"], np.asarray(theirs).reshape(3), rtol=0, atol=1e-7)
    np.testing.assert_allclose(ours["road_combined"], (ours["road_lerf"] - ours["road_morf"]) / 2)


def test_blank_maps_count_as_failed_sanity_checks(monkeypatch):
    """A method whose randomised maps are blank must not look like perfect decorrelation (|rho| = 0): they count as
    |rho| = 1, and the number of blank maps is reported."""
    model = _small().eval()
    x = torch.randn(4, 1, 16, 16)
    ramp = np.broadcast_to(np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16), (4, 16, 16)).copy()
    calls = iter([ramp, np.zeros_like(ramp)])  # the trained model's maps, then the randomised model's: all blank
    monkeypatch.setattr(explain, "cam", lambda *a, **k: next(calls))
    res = explain.sanity_check(model, x, [0] * 4, arch="mini_resnet")
    assert res["blank_random"] == 4 and res["blank_trained"] == 0
    assert res["mean_abs_spearman"] == 1.0 and np.isnan(res["spearman"]).all()
    calls = iter([ramp, np.zeros_like(ramp), ramp[::-1].copy()])
    df = explain.cascading_randomization(model, x, [0] * 4, ["fc", "layer3"], arch="mini_resnet")
    assert list(df["blank"]) == [4, 0] and np.allclose(df["mean_abs_spearman"], [1.0, 1.0])  # blank; reversed ramp


def test_cascading_randomization_goes_from_the_top_down():
    model = _small().eval()
    x = torch.randn(6, 1, 16, 16)
    stages = ["fc", "layer3", "layer2", "layer1", "stem"]
    df = explain.cascading_randomization(model, x, [0] * 6, stages, arch="mini_resnet")
    assert list(df["randomized"]) == [f"down to {s}" for s in stages]
    assert all(len(r) == 6 and (0 <= r).all() and (r <= 1).all() for r in df["abs_spearman"])
    only_fc = explain.randomize(model, 0, modules=["fc"])
    same = [torch.equal(a, b) for (n, a), b in zip(model.state_dict().items(), only_fc.state_dict().values())
            if n.endswith("weight")]
    assert not same[-1] and all(same[:-1])  # only the classifier was re-drawn


def test_random_maps_baselines():
    rough, smooth = explain.random_maps(3, (28, 28), seed=0), explain.random_maps(3, (28, 28), smooth=3, seed=0)
    for m in (rough, smooth):
        assert m.shape == (3, 28, 28) and m.min() == 0 and m.max() == 1
    roughness = [np.abs(np.diff(m, axis=-1)).mean() for m in (rough, smooth)]
    assert roughness[1] < roughness[0] / 3  # blurred noise is blob-shaped


def test_overlay_is_readable_size():
    img = np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)
    out = explain.overlay(img, np.random.default_rng(1).random((7, 7)), size=224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    up = explain.upsample_cam(np.ones((1, 7, 7), np.float32) * 0.5, (28, 28))
    assert up.shape == (1, 28, 28) and np.allclose(up, 0.5)


def test_mass_on_counts_blank_maps_as_zero():
    maps = np.zeros((3, 4, 4), np.float32)
    maps[0, :2] = 1.0  # all mass in the top half
    maps[1] = 1.0  # uniform
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2] = True  # the top half is the product
    np.testing.assert_allclose(explain.mass_on(maps, masks), [1.0, 0.5, 0.0])  # the blank third map: 0, not 0/0
    with pytest.raises(ConfigError, match="same shape"):
        explain.mass_on(maps, masks[:, :2])
