"""Class activation maps with the ``grad-cam`` package (pytorch-grad-cam): what a classifier looks at.

:func:`cam` wraps grad-cam's methods; it does not re-implement them. It adds what a course needs around them:

* the default target layer of every :data:`prodvision.models.ARCHS` entry;
* works on frozen models (``requires_grad=False``) by asking for the gradient on the *input* instead of changing
  the model, and on models in train mode: the train/eval mode and every ``requires_grad`` flag are restored;
* one target class per image in a batch;
* hooks always released (grad-cam's own ``__exit__`` swallows IndexError, so we release in ``finally``);
* a sanity check against a randomised model and grad-cam's ROAD / confidence-change faithfulness metrics.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import nn

from .config import CAM_METHODS
from .errors import ConfigError
from .models import get_arch
from .runtime import eval_mode, module_device

if TYPE_CHECKING:
    from .deployed import DeployedModel

__all__ = ["CAM_METHODS", "cam", "target_layer", "randomize", "sanity_check", "cascading_randomization", "random_maps",
           "mass_on", "faithfulness", "overlay", "upsample_cam", "Explanation", "explain_image"]


def _methods() -> dict[str, type]:
    import pytorch_grad_cam as pgc

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
            "eigencam": pgc.EigenCAM, "scorecam": pgc.ScoreCAM, "layercam": pgc.LayerCAM, "hirescam": pgc.HiResCAM,
            "eigengradcam": pgc.EigenGradCAM,
            "randomcam": pgc.RandomCAM}  # a baseline (random channel weights), not an explanation: not in CAM_METHODS


def target_layer(model: nn.Module, arch: str | None = None, layer: str | None = None) -> nn.Module:
    """The module to explain: ``layer`` by name, else the arch's default ``cam_layer``."""
    if layer is None:
        if arch is None:
            raise ConfigError("pass arch= (a key of ARCHS) or layer= (a module name) to choose the CAM target layer")
        layer = get_arch(arch).cam_layer
    return model.get_submodule(layer)


def cam(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | None = None, *, method: str = "gradcam",
        arch: str | None = None, layer: str | None = None, batch_size: int = 32) -> np.ndarray:
    """Class activation maps for a batch.

    Args:
        model: a classifier returning ``(B, K)`` logits.
        images: normalised input ``(B, C, H, W)`` float tensor.
        targets: one class index per image (None = each image's predicted class).
        method: one of :data:`CAM_METHODS`.
        arch, layer: the target layer (see :func:`target_layer`).
        batch_size: images explained at a time (and ScoreCAM's forward batch: one forward per channel).

    Returns:
        ``(B, H, W)`` float32 maps in [0, 1] at the input's resolution (each map min-max scaled by grad-cam).
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    methods = _methods()
    if method not in methods:
        raise ConfigError(f"unknown CAM method {method!r}; choose from {list(methods)}")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images: give one target per image")
    layer_module = target_layer(model, arch, layer)
    quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext()
    out = []
    with eval_mode(model):  # grad-cam sets eval mode; every submodule's own flag comes back afterwards
        explainer = methods[method](model=model, target_layers=[layer_module])
        if method == "scorecam":
            explainer.batch_size = batch_size
        try:
            for start in range(0, len(images), batch_size):  # bounded memory: a chunk's activations at a time
                x = images[start:start + batch_size].detach().to(module_device(model)).clone().requires_grad_(True)
                tg = None if targets is None else [ClassifierOutputTarget(int(t))
                                                   for t in targets[start:start + batch_size]]
                with torch.enable_grad(), quiet:  # ScoreCAM draws a tqdm bar per image; keep notebooks readable
                    out.append(explainer(input_tensor=x, targets=tg))
        finally:
            explainer.activations_and_grads.release()
            model.zero_grad(set_to_none=True)
    maps = np.concatenate(out)
    return np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0)


def randomize(model: nn.Module, seed: int = 0, modules: Sequence[str] | None = None) -> nn.Module:
    """A copy of ``model`` with parameters re-drawn at random (the model-randomisation sanity test).

    Args:
        modules: re-draw only the parameters inside these submodules (None = all): cascading randomisation
            re-draws more and more of the network, from the classifier down.
    """
    g = torch.Generator().manual_seed(seed)
    rnd = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in rnd.named_parameters():
            if modules is None or any(name == m or name.startswith(m + ".") for m in modules):
                p.copy_(torch.randn(p.shape, generator=g) * (p.std() if p.numel() > 1 else 1.0))
    return rnd


def _predicted(model: nn.Module, images: torch.Tensor) -> list[int]:
    with torch.inference_mode(), eval_mode(model):
        return model(images.to(module_device(model))).argmax(1).tolist()


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image Spearman rank correlation of two stacks of maps ``(B, H, W)``; NaN where either map is constant
    (a blank map has no ranking: it is neither correlated nor decorrelated)."""
    from scipy.stats import spearmanr

    return np.array([spearmanr(u.ravel(), v.ravel()).statistic if u.std() and v.std() else np.nan
                     for u, v in zip(a, b)])


def _abs_rho_blank_as_unchanged(rho: np.ndarray) -> np.ndarray:
    """``|rho|`` per image with a blank (constant) map counted as 1, i.e. as a *failed* randomisation check: a method that
    returns nothing after its weights are re-drawn has not shown that its maps depend on them."""
    return np.where(np.isnan(rho), 1.0, np.abs(rho))


def sanity_check(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | None = None, *,
                 method: str = "gradcam", arch: str | None = None, layer: str | None = None, seed: int = 0) -> dict:
    """Compare the CAMs of ``model`` and of a fully randomised copy (Adebayo et al., 2018).

    Faithful explanations depend on the learned weights, so the two sets of maps should differ: a rank correlation
    near 1 (or near -1: a map's sign can flip, e.g. EigenCAM's principal component) would mean the method shows image
    structure, not what the model learned -- hence the test statistic is ``|Spearman|`` per image.

    A map that comes out constant (blank: e.g. ReLU of a negative sum everywhere) has no ranking; its ``spearman`` is
    NaN and its ``abs_spearman`` 1.0 -- counted as a failure, so blank randomised maps cannot pass the check.

    Returns:
        ``{"spearman": per-image array (NaN where a map is blank), "abs_spearman": per-image absolute rho (1 where blank),
        "mean_abs_spearman": float, "blank_trained": int, "blank_random": int, "trained": maps, "random": maps}``.
    """
    targets = _predicted(model, images) if targets is None else list(targets)
    a = cam(model, images, targets, method=method, arch=arch, layer=layer)
    b = cam(randomize(model, seed), images, targets, method=method, arch=arch, layer=layer)
    rho = _spearman(a, b)
    abs_rho = _abs_rho_blank_as_unchanged(rho)
    return {"spearman": rho, "abs_spearman": abs_rho, "mean_abs_spearman": float(abs_rho.mean()),
            "blank_trained": int((a.std(axis=(1, 2)) == 0).sum()), "blank_random": int((b.std(axis=(1, 2)) == 0).sum()),
            "trained": a, "random": b}


def cascading_randomization(model: nn.Module, images: torch.Tensor, targets: Sequence[int], stages: Sequence[str], *,
                            method: str = "gradcam", arch: str | None = None, layer: str | None = None,
                            seed: int = 0):
    """Adebayo et al.'s cascading randomisation: re-draw the weights of ``stages`` cumulatively from the top (the
    classifier first) and compare each map with the trained model's.

    Args:
        stages: module names from the output towards the input, e.g. ``["fc", "layer3", "layer2", "layer1", "stem"]``.

    Returns:
        A DataFrame with one row per step: ``randomized`` (down to this stage), ``mean_abs_spearman``, ``blank``
        (randomised maps that came out constant, each counted as ``|rho| = 1``) and the per-image ``abs_spearman`` array.
    """
    import pandas as pd

    base = cam(model, images, targets, method=method, arch=arch, layer=layer)
    rows = []
    for i, stage in enumerate(stages):
        rnd = randomize(model, seed, modules=stages[: i + 1])
        maps = cam(rnd, images, targets, method=method, arch=arch, layer=layer)
        rho = _abs_rho_blank_as_unchanged(_spearman(base, maps))
        rows.append({"randomized": f"down to {stage}", "mean_abs_spearman": float(rho.mean()),
                     "blank": int((maps.std(axis=(1, 2)) == 0).sum()), "abs_spearman": rho})
    return pd.DataFrame(rows)


def random_maps(n: int, size: tuple[int, int], *, smooth: float = 0.0, seed: int = 0) -> np.ndarray:
    """Baseline "explanations" that know nothing about the model: uniform noise, or with ``smooth`` > 0 noise blurred
    by a Gaussian of that many pixels (blob-shaped like a real CAM). ``(n, H, W)`` float32 in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    maps = rng.random((n, *size)).astype(np.float32)
    if smooth > 0:
        maps = np.stack([gaussian_filter(m, smooth) for m in maps])
    lo, hi = maps.min((1, 2), keepdims=True), maps.max((1, 2), keepdims=True)
    return ((maps - lo) / np.maximum(hi - lo, 1e-8)).astype(np.float32)


def mass_on(maps: np.ndarray, masks: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """The share of each map's mass that falls on its mask (e.g. the product's silhouette): ``(N,)`` in [0, 1].

    A blank map (all zero: no positive evidence anywhere) points nowhere and gets 0, so it counts against any claim
    that the maps find the product. Compare with each mask's share of the image, ``masks.mean(axis=(1, 2))``: what a
    map that knows nothing about the image would put on it.
    """
    maps = np.asarray(maps, np.float64)
    masks = np.asarray(masks, bool)
    if maps.shape != masks.shape:
        raise ConfigError(f"mass_on: maps {maps.shape} and masks {masks.shape} must have the same shape")
    total = maps.sum(axis=(1, 2))
    on = np.where(masks, maps, 0.0).sum(axis=(1, 2))
    return np.where(total > 0, on / np.where(total > 0, total, 1.0), 0.0)


def faithfulness(model: nn.Module, images: torch.Tensor, maps: np.ndarray, targets: Sequence[int],
                 percentiles: Sequence[int] = (20, 40, 60, 80)) -> dict[str, np.ndarray]:
    """grad-cam's faithfulness metrics for the given CAMs, **per image** (average them, or bootstrap their mean).

    * ``road_combined``: ROAD (Rong et al., 2022): (LeRF - MoRF) / 2 change of the target class's probability,
      averaged over ``percentiles`` -- higher is more faithful.
    * ``road_morf``: the change when the *most* relevant pixels are removed (more negative = more faithful).
    * ``road_lerf``: the change when the *least* relevant pixels are removed (closer to 0 = more faithful; a
      negative LeRF means the "irrelevant" pixels mattered).
    * ``confidence_change``: keeping only the CAM-weighted image.

    ROAD's imputation draws noise from torch's global generator: seed it for a repeatable answer. LeRF and MoRF are
    computed once each and combined as grad-cam's ``ROADCombined`` does (``(lerf - morf) / 2``, LeRF drawn first),
    so ``road_combined`` equals ``ROADCombined``'s result under the same seed at half its imputations.
    """
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    x = images.to(module_device(model))
    tg = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    pc = list(percentiles)
    with eval_mode(model):
        lerf = np.asarray(ROADLeastRelevantFirstAverage(percentiles=pc)(x, maps, tg, model), dtype=np.float64)
        morf = np.asarray(ROADMostRelevantFirstAverage(percentiles=pc)(x, maps, tg, model), dtype=np.float64)
        out = {"road_combined": (lerf - morf) / 2, "road_morf": morf, "road_lerf": lerf,
               "confidence_change": CamMultImageConfidenceChange()(x, maps, tg, model)}
    return {k: np.asarray(v, dtype=np.float64).reshape(len(images)) for k, v in out.items()}


def upsample_cam(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize ``(B, h, w)`` maps to ``size`` = (H, W), staying in [0, 1]."""
    t = torch.from_numpy(np.asarray(maps, np.float32))[:, None]
    return nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].clamp(0, 1).numpy()


def overlay(image: np.ndarray, cam_map: np.ndarray, *, size: int | None = 224, alpha: float = 0.5) -> np.ndarray:
    """A readable heat-map overlay: image and CAM both resized to ``size`` px, JET colormap, blended.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)``, uint8 or float in [0, 1].
        cam_map: ``(h, w)`` in [0, 1] (any resolution).

    Returns:
        uint8 ``(size, size, 3)`` RGB.
    """
    from PIL import Image
    from pytorch_grad_cam.utils.image import show_cam_on_image

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    pil = Image.fromarray(img).convert("RGB")
    if size is not None:
        pil = pil.resize((size, size), Image.Resampling.NEAREST if min(img.shape[:2]) < 64 else Image.Resampling.BICUBIC)
    base = np.asarray(pil, dtype=np.float32) / 255.0
    heat = upsample_cam(cam_map[None], base.shape[:2])[0]
    return show_cam_on_image(base, heat, use_rgb=True, image_weight=1 - alpha)


@dataclass
class Explanation:
    """One image explained: the overlay and what the model said about it."""

    overlay: np.ndarray  # uint8 (size, size, 3): the CAM of `label` over the image as the model saw it
    label: str  # the class explained (the target, or the prediction)
    predicted: str  # the top-1 class
    probability: float  # the top-1 class's probability
    unsure: bool  # the top-1 probability is below the model's "unsure" threshold


def explain_image(model: "DeployedModel", image, *, target: str | None = None, method: str = "gradcam",
                  size: int = 224) -> Explanation:
    """Predict one PIL image with a deployed checkpoint model and explain a class with a CAM overlay.

    The one implementation behind ``prodvision cam`` and the service's ``POST /cam``.

    Raises:
        ConfigError: the model has no eager network (an exported .onnx/.ts file), or ``target`` is not a class.
    """
    if model.module is None:
        raise ConfigError(f"{model.path}: CAM needs the eager model; pass the training checkpoint (.pt), "
                          "not an exported .onnx/.ts file")
    classes = model.classes
    if target not in (None, "") and target not in classes:
        raise ConfigError(f"target {target!r} is not one of the model's classes {classes}")
    x = model.transform(image)[None]  # (1, C, S, S)
    logits = model.logits(x)[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    pred = int(p.argmax())
    label = target or classes[pred]
    maps = cam(model.module, x, [classes.index(label)], method=method, arch=model.meta["arch"])  # (1, S, S)
    threshold = model.unsure_below
    return Explanation(overlay(model.view(image), maps[0], size=size), label, classes[pred], float(p[pred]),
                       threshold is not None and float(p[pred]) < threshold)
