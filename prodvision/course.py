"""The course's shared models: recipes one notebook trains and later notebooks reuse.

Notebook 03 trains the Fashion-MNIST models and notebook 04 the product-icon models; each registers the recipe it
used (``register``), and later notebooks ask for a model by role (``recipe("main")``) and get exactly that one --
also when the earlier notebook ran with bigger papermill settings on a GPU. A notebook run on its own, before the
earlier one ever ran, gets the default recipe and trains it (once: the recipe cache keeps it).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from .recipes import Recipe
from .train import TrainConfig
from .transforms import AugmentConfig

__all__ = ["ROLES", "default_recipe", "register", "recipe", "recipe_from_dict"]

_FMNIST_AUG = AugmentConfig(hflip=0.5, crop_padding=2)
_ICON_AUG = AugmentConfig(hflip=0.5, scale=(0.6, 1.0), fill=255)  # white catalog background
# role -> (recipe name, arch, data, weights, size, in_chans, model kwargs, augmentation, TrainConfig defaults)
_DEFAULTS: dict[str, dict[str, Any]] = {
    "main": dict(name="fmnist_mini_resnet", arch="mini_resnet", widths=(32, 64, 128), augment=_FMNIST_AUG,
                 train=dict(epochs=5, batch_size=256, lr=0.1)),
    # cosine restarts, one cycle per epoch: its end-of-cycle snapshots make the snapshot ensemble of notebook 07
    "vgg": dict(name="fmnist_mini_vgg", arch="mini_vgg", widths=(16, 32, 64), augment=_FMNIST_AUG,
                train=dict(epochs=2, batch_size=256, lr=0.1, schedule="cosine_restarts", cycles=2)),
    # EfficientNet-Lite0 ImageNet weights, fully fine-tuned with the body at 1/10 of the head's learning rate
    "icons_lite0": dict(name="icons_lite0_full", arch="tf_efficientnet_lite0", data="product-icons",
                        weights="imagenet", size=96, augment=_ICON_AUG,
                        train=dict(epochs=8, batch_size=32, lr=0.01, body_lr_mult=0.1, head="classifier")),
    # MiniResNet from scratch on the icons at 64 px
    "icons_resnet": dict(name="icons_scratch_curve", arch="mini_resnet", data="product-icons", size=64, in_chans=3,
                         widths=(32, 64, 128), augment=_ICON_AUG, train=dict(epochs=15, batch_size=32, lr=0.05)),
}
ROLES = tuple(_DEFAULTS)


def default_recipe(role: str, *, epochs: int | None = None, widths: tuple[int, ...] | None = None,
                   size: int | None = None, batch_size: int | None = None, lr: float | None = None, seed: int = 0,
                   device: str = "auto") -> Recipe:
    """The default recipe for ``role`` (see ``ROLES``), with optional overrides. All use label smoothing 0.1."""
    if role not in _DEFAULTS:
        raise ValueError(f"unknown role {role!r}; choose from {ROLES}")
    d = _DEFAULTS[role]
    t = dict(d["train"])
    if epochs is not None:
        t["epochs"] = epochs
        if t.get("schedule") == "cosine_restarts":
            t["cycles"] = epochs
    t.update({k: v for k, v in (("batch_size", batch_size), ("lr", lr)) if v is not None})
    cfg = TrainConfig(**t, label_smoothing=0.1, seed=seed, device=device)
    kwargs = {"widths": tuple(widths or d["widths"])} if "widths" in d else {}
    return Recipe(name=d["name"], arch=d["arch"], data=d.get("data", "fashion-mnist"), weights=d.get("weights"),
                  size=size or d.get("size"), in_chans=d.get("in_chans"), model_kwargs=kwargs, augment=d["augment"],
                  train=cfg)


def _registry() -> Path:
    from .paths import cache_dir

    return cache_dir() / "course.json"


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Inverse of ``Recipe.to_dict()`` (nested configs rebuilt, lists back to tuples)."""
    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    d = dict(d)
    d["augment"] = AugmentConfig(**{k: tup(v) for k, v in d["augment"].items()})
    d["train"] = TrainConfig(**d["train"])
    d["model_kwargs"] = {k: tup(v) for k, v in d.get("model_kwargs", {}).items()}
    for k in ("classes", "trainable"):
        if d.get(k) is not None:
            d[k] = tup(d[k])
    names = {f.name for f in fields(Recipe)}
    return Recipe(**{k: v for k, v in d.items() if k in names})


def register(role: str, r: Recipe) -> None:
    """Record that the course's ``role`` model is ``r``."""
    path = _registry()
    path.parent.mkdir(parents=True, exist_ok=True)
    reg = json.loads(path.read_text()) if path.is_file() else {}
    reg[role] = r.to_dict()
    path.write_text(json.dumps(reg, indent=1, default=str) + "\n")


def recipe(role: str, *, device: str = "auto") -> Recipe:
    """The registered recipe for ``role``, else the default one (on ``device``)."""
    path = _registry()
    reg = json.loads(path.read_text()) if path.is_file() else {}
    if role in reg:
        return recipe_from_dict(reg[role])
    return default_recipe(role, device=device)
