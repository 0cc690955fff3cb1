"""The course's shared models: recipes one notebook trains and later notebooks reuse.

Notebook 03 trains the Fashion-MNIST models and notebook 04 the product-icon models; each registers the recipe it
used (``register``), and later notebooks ask for a model by role (``recipe("main")``) and get exactly that one --
also when the earlier notebook ran with bigger papermill settings on a GPU. A notebook run on its own, before the
earlier one ever ran, gets the default recipe and trains it (once: the recipe cache keeps it).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from . import cache
from .config import AugmentConfig, TrainConfig
from .errors import ConfigError
from .evaluate import predict
from .features import extract_features, feature_extractor, fit_linear_probe, probe_to_linear
from .models import create_model
from .paths import cache_dir
from .recipes import Recipe, get_or_train, prepare_data

__all__ = ["ROLES", "default_recipe", "register", "recipe", "logits", "icon_features",
           "icons_probe_model", "model", "describe"]

# Fashion-MNIST at an 8-epoch CPU budget: flips only and no label smoothing beat stronger regularisation
# (at 5 epochs, flip + translate + label smoothing 0.1 gave 90.0% test vs 92.0-92.2% for this setting, same time).
_FMNIST_AUG = AugmentConfig(hflip=0.5)
# The two long Fashion-MNIST trainings run in NHWC (channels_last) while keeping deterministic algorithms on: faster
# than NCHW on CPU, and for these two recipes' layer shapes still bit-reproducible (tests/test_course.py checks it;
# oneDNN does not promise that for every shape, so fit's default for small images stays NCHW).
_NHWC = dict(channels_last=True, deterministic=True)
_ICON_AUG = AugmentConfig(hflip=0.5, scale=(0.6, 1.0), fill=255)  # white catalog background
_MAIN_TRAIN = dict(epochs=8, batch_size=256, lr=0.2, **_NHWC)  # one-cycle SGD; the same budget for both networks
# role -> (recipe name, arch, data, weights, size, in_chans, model kwargs, augmentation, TrainConfig defaults)
_DEFAULTS: dict[str, dict[str, Any]] = {
    # the course's main model: MiniResNet, chosen on validation (scripts/explore_recipes.py)
    "main": dict(name="fmnist_mini_resnet", arch="mini_resnet", widths=(24, 48, 96), augment=_FMNIST_AUG,
                 train=_MAIN_TRAIN),
    # a VGG-style network at the same budget: the same data, epochs and optimiser, widths chosen so one epoch
    # takes about as long as the MiniResNet's; notebook 03 compares the two, notebook 07 ensembles them
    "vgg": dict(name="fmnist_mini_vgg", arch="mini_vgg", widths=(16, 32, 64), augment=_FMNIST_AUG,
                train=_MAIN_TRAIN),
    # EfficientNet-Lite0 ImageNet weights on the icons at 160 px: LP-FT of the whole network
    "icons_lite0": dict(name="icons_lite0", arch="tf_efficientnet_lite0", data="product-icons",
                        weights="imagenet", size=160, augment=_ICON_AUG, finetune="full",
                        train=dict(epochs=8, batch_size=32, optimizer="adamw", lr=2e-4, schedule="cosine",
                                   weight_decay=0.05, label_smoothing=0.1)),
    # a small MiniResNet trained long on 200 images (20 per class) without augmentation: it fits every training image
    # (notebook 05 shows what augmentation buys here; notebook 06 calibrates these over-confident models). seed =
    # training seed; notebook 05 trains seeds 0-2 and registers its settings.
    "few_images": dict(name="fmnist_few_images", arch="mini_resnet", widths=(16, 32, 64), augment=AugmentConfig(hflip=0.0),
                       labels_per_class=20, val_per_class=10,
                       train=dict(epochs=150, batch_size=64, lr=0.05, monitor="epoch")),
    # MiniResNet from scratch on the icons at 64 px
    "icons_resnet": dict(name="icons_scratch", arch="mini_resnet", data="product-icons", size=64, in_chans=3,
                         widths=(16, 32, 64), augment=_ICON_AUG,
                         train=dict(epochs=8, batch_size=32, lr=0.05, label_smoothing=0.1)),
}
#: The course's shared models by role: ``main`` and ``vgg`` (Fashion-MNIST), ``icons_lite0`` and ``icons_resnet``.
ROLES = tuple(_DEFAULTS)


_DEFAULT = object()  # "not given" for overrides where None is a meaningful value


def _tuples(v):
    """JSON/YAML lists (e.g. from papermill parameters) as tuples, so recipes hash and compare the same."""
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def default_recipe(role: str, *, epochs: int | None = None, widths: tuple[int, ...] | None = None,
                   size: int | None = None, batch_size: int | None = None, lr: float | None = None, seed: int = 0,
                   device: str = "auto", model_kwargs: dict[str, Any] | None = None,
                   augment: AugmentConfig | dict[str, Any] | None = None, labels_per_class: Any = _DEFAULT) -> Recipe:
    """The default recipe for ``role`` (see ``ROLES``), with optional overrides.

    ``model_kwargs`` adds architecture arguments (e.g. ``{"depths": (2, 2, 2), "stem_pool": False}`` for a bigger
    MiniResNet on a GPU); ``augment`` replaces the augmentation (an ``AugmentConfig`` or a dict of its fields);
    ``labels_per_class`` the number of training images per class (``None`` = all). Overrides equal to the defaults
    give the default recipe (the same cache key).
    """
    if role not in _DEFAULTS:
        raise ConfigError(f"unknown role {role!r}; choose from {ROLES}")
    d = _DEFAULTS[role]
    t = dict(d["train"])
    if epochs is not None:
        t["epochs"] = epochs
        if t.get("schedule") == "cosine_restarts":
            t["cycles"] = epochs
    t.update({k: v for k, v in (("batch_size", batch_size), ("lr", lr)) if v is not None})
    cfg = TrainConfig(**t, seed=seed, device=device)
    kwargs = {"widths": _tuples(widths or d["widths"])} if "widths" in d else {}
    kwargs.update({k: _tuples(v) for k, v in (model_kwargs or {}).items()})
    if isinstance(augment, dict):
        augment = AugmentConfig(**{k: _tuples(v) for k, v in augment.items()})
    lpc = d.get("labels_per_class") if labels_per_class is _DEFAULT else labels_per_class
    return Recipe(name=d["name"], arch=d["arch"], data=d.get("data", "fashion-mnist"), weights=d.get("weights"),
                  size=size or d.get("size"), in_chans=d.get("in_chans"), model_kwargs=kwargs,
                  augment=augment or d["augment"], labels_per_class=lpc, val_per_class=d.get("val_per_class"),
                  train=cfg, finetune=d.get("finetune"))


def _registry() -> Path:
    return cache_dir() / "course.json"


def register(role: str, r: Recipe) -> None:
    """Record that the course's ``role`` model is ``r``."""
    path = _registry()
    reg = json.loads(path.read_text()) if path.is_file() else {}
    reg[role] = r.to_dict()
    cache.atomic_write_text(path, json.dumps(reg, indent=1, default=str) + "\n")


def recipe(role: str, *, device: str = "auto") -> Recipe:
    """The registered recipe for ``role``, else the default one, on ``device`` either way: the device is how a
    model runs, not what it is (not part of the cache key), so a role registered on a GPU loads on a CPU."""
    path = _registry()
    reg = json.loads(path.read_text()) if path.is_file() else {}
    if role in reg:
        r = Recipe.from_dict(reg[role])
        return replace(r, train=replace(r.train, device=device))
    return default_recipe(role, device=device)


_TRAINED_BY = {"main": "03", "vgg": "03", "icons_lite0": "04", "icons_resnet": "03", "few_images": "05"}


def describe(role: str, *, device: str = "auto") -> str:
    """One paragraph: the recipe behind ``role`` and whether it is already trained (in this machine's cache)."""
    r = recipe(role, device=device)
    t = r.train
    source = "registered by notebook " + _TRAINED_BY[role] if role in _registry_roles() else "the default recipe"
    what = (f"{r.arch} {dict(r.model_kwargs)} on {r.data}" + (f" at {r.size} px" if r.size else "")
            + (f", {r.weights} weights, fine-tune {r.finetune}" if r.weights else "")
            + f"; {t.epochs} epochs, batch {t.batch_size}, {t.optimizer} lr {t.lr:g}, seed {t.seed}")
    done = cache.is_done(cache.entry("recipes", r.name, r.key(prepare_data(r))))
    state = ("trained already: loaded from the cache" if done else
             f"not trained yet on this machine: it is trained now (notebook {_TRAINED_BY[role]} normally does it), "
             "with a time estimate printed after its first steps")
    return f"{role!r} model ({source}): {what}. {state}."


def _registry_roles() -> set[str]:
    path = _registry()
    return set(json.loads(path.read_text())) if path.is_file() else set()


def model(role: str, *, device: str = "auto"):
    """The course's ``role`` model (:class:`prodvision.recipes.Trained`), trained now if the cache lacks it."""
    return get_or_train(recipe(role, device=device))


VIEWS = {"plain": None, "mirrored": [lambda x: x.flip(-1)]}  # "mirrored": every image flipped left-right


def logits(role: str, split: str, *, view: str = "plain", device: str = "auto"):
    """The course's ``role`` model's logits on Fashion-MNIST's ``split`` ("val" or "test") in one ``view``.

    Notebooks 05-08 all look at the same predictions of the same models; each set is computed once and kept next
    to the model's checkpoint (keyed by the recipe and the checkpoint file, so a retrained model is predicted
    again). Flip TTA is the mean of the "plain" and "mirrored" logits, as ``predict(tta=...)`` computes it.

    Returns:
        ``(logits (N, K) float32, targets (N,) int64)``, like :func:`prodvision.evaluate.predict`.
    """
    if split not in ("val", "test") or view not in VIEWS:
        raise ConfigError(f"split must be 'val' or 'test' and view one of {list(VIEWS)}; got {split!r}, {view!r}")
    r = recipe(role, device=device)
    trained = get_or_train(r)
    st = trained.checkpoint.stat()
    stamp = np.array([st.st_size, st.st_mtime_ns], dtype=np.int64)
    path = trained.checkpoint.parent / "logits" / f"{split}-{view}.npz"
    if path.is_file():
        with np.load(path) as z:
            if np.array_equal(z["stamp"], stamp):
                return z["logits"], z["targets"]
    data = getattr(prepare_data(r), split)
    out, y = predict(trained.model, DataLoader(data, batch_size=1000), tta=VIEWS[view], device=device)
    cache.atomic_write(path, lambda fh: np.savez(fh, logits=out, targets=y, stamp=stamp))
    return out, y


def icon_features(size: int, *, device: str = "auto"):
    """Frozen EfficientNet-Lite0 ImageNet features of the product icons at ``size`` px (cached on disk).

    Returns ``(train_features, train_targets, heldout_features, heldout_targets, data)`` where held-out = the
    validation + test split and ``data`` the prepared datasets.
    """
    data = prepare_data(replace(recipe("icons_lite0", device=device), size=size))
    backbone = feature_extractor(create_model("tf_efficientnet_lite0", 1000, weights="imagenet"), "classifier")
    key = {"arch": "tf_efficientnet_lite0", "weights": "imagenet"}
    train = data.train.subset(range(len(data.train)), transform=data.val.transform)  # no augmentation
    f_tr, y_tr = extract_features(backbone, train, key=key, device=device, progress=False)
    parts = [extract_features(backbone, d, key=key, device=device, progress=False) for d in (data.val, data.test)]
    return f_tr, y_tr, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), data


def icons_probe_model(size: int = 192, *, device: str = "auto"):
    """EfficientNet-Lite0 (ImageNet, frozen) with a linear probe on the icons as its classifier: one ordinary model.

    Returns ``(model, heldout_accuracy, data)``.
    """
    f_tr, y_tr, f_held, y_held, data = icon_features(size, device=device)
    probe = fit_linear_probe(f_tr, y_tr)
    model = create_model("tf_efficientnet_lite0", 1000, weights="imagenet")
    model.classifier = probe_to_linear(probe)
    return model.eval(), float((probe.predict(f_held) == y_held).mean()), data
