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
from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["CAM_METHODS", "cam", "target_layer", "randomize", "sanity_check", "faithfulness", "overlay",
           "upsample_cam"]


def _methods() -> dict[str, type]:
    import pytorch_grad_cam as pgc

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
            "eigencam": pgc.EigenCAM, "scorecam": pgc.ScoreCAM, "layercam": pgc.LayerCAM, "hirescam": pgc.HiResCAM,
            "eigengradcam": pgc.EigenGradCAM}


CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "eigencam", "scorecam", "layercam", "hirescam", "eigengradcam")


def target_layer(model: nn.Module, arch: str | None = None, layer: str | None = None) -> nn.Module:
    """The module to explain: ``layer`` by name, else the arch's default ``cam_layer``."""
    from .models import get_arch

    if layer is None:
        if arch is None:
            raise ValueError("pass arch= (a key of ARCHS) or layer= (a module name) to choose the CAM target layer")
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
        batch_size: ScoreCAM's forward batch (it runs one forward per channel of the target layer).

    Returns:
        ``(B, H, W)`` float32 maps in [0, 1] at the input's resolution (each map min-max scaled by grad-cam).
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    methods = _methods()
    if method not in methods:
        raise ValueError(f"unknown CAM method {method!r}; choose from {list(methods)}")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images: give one target per image")
    layer_module = target_layer(model, arch, layer)
    was_training = model.training
    device = next(model.parameters()).device
    x = images.detach().to(device).clone().requires_grad_(True)  # gradients flow even through a frozen model
    tg = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    explainer = methods[method](model=model, target_layers=[layer_module])  # sets model.eval()
    if method == "scorecam":
        explainer.batch_size = batch_size
    quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext()
    try:
        with torch.enable_grad(), quiet:  # ScoreCAM draws a tqdm bar per image; keep notebooks readable
            maps = explainer(input_tensor=x, targets=tg)
    finally:
        explainer.activations_and_grads.release()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every parameter re-drawn at random (the model-randomisation sanity test)."""
    g = torch.Generator().manual_seed(seed)
    rnd = copy.deepcopy(model)
    with torch.no_grad():
        for p in rnd.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (p.std() if p.numel() > 1 else 1.0))
    return rnd


def sanity_check(model: nn.Module, images: torch.Tensor, targets: Sequence[int] | None = None, *,
                 method: str = "gradcam", arch: str | None = None, layer: str | None = None, seed: int = 0) -> dict:
    """Compare the CAMs of ``model`` and of a randomised copy (Adebayo et al., 2018).

    Faithful explanations depend on the learned weights, so the two sets of maps should differ: a Spearman rank
    correlation near 1 would mean the method shows image structure, not what the model learned.

    Returns:
        ``{"spearman": per-image array, "mean_spearman": float, "trained": maps, "random": maps}``.
    """
    from scipy.stats import spearmanr

    if targets is None:
        with torch.inference_mode():
            was = model.training
            targets = model.eval()(images.to(next(model.parameters()).device)).argmax(1).tolist()
            model.train(was)
    a = cam(model, images, targets, method=method, arch=arch, layer=layer)
    b = cam(randomize(model, seed), images, targets, method=method, arch=arch, layer=layer)
    rho = np.array([spearmanr(u.ravel(), v.ravel()).statistic if u.std() and v.std() else 0.0 for u, v in zip(a, b)])
    return {"spearman": rho, "mean_spearman": float(np.nanmean(rho)), "trained": a, "random": b}


def faithfulness(model: nn.Module, images: torch.Tensor, maps: np.ndarray, targets: Sequence[int],
                 percentiles: Sequence[int] = (20, 40, 60, 80)) -> dict[str, float]:
    """grad-cam's faithfulness metrics for the given CAMs, averaged over the batch.

    * ``road_combined``: ROAD (Rong et al., 2022): (LeRF - MoRF) / 2 confidence change, averaged over
      ``percentiles`` -- higher is more faithful.
    * ``road_morf``: confidence change when the *most* relevant pixels are removed (more negative = better).
    * ``road_lerf``: confidence change when the *least* relevant pixels are removed (closer to 0 = better).
    * ``drop_in_confidence`` / ``increase_in_confidence``: keeping only the CAM-weighted image.
    """
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import (ROADCombined, ROADLeastRelevantFirstAverage,
                                               ROADMostRelevantFirstAverage)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    was = model.training
    model.eval()
    device = next(model.parameters()).device
    x = images.to(device)
    tg = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    try:
        pc = list(percentiles)
        combined = ROADCombined(percentiles=pc)(x, maps, tg, model)
        morf = ROADMostRelevantFirstAverage(percentiles=pc)(x, maps, tg, model)
        lerf = ROADLeastRelevantFirstAverage(percentiles=pc)(x, maps, tg, model)
        change = CamMultImageConfidenceChange()(x, maps, tg, model)
    finally:
        model.train(was)
    return {"road_combined": float(np.mean(combined)), "road_morf": float(np.mean(morf)),
            "road_lerf": float(np.mean(lerf)), "confidence_change": float(np.mean(change)),
            "increase_in_confidence": float(np.mean(change > 0))}


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
