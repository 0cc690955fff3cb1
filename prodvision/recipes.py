"""Recipes: a complete, hashable description of one trained model, and a cache so it is trained only once.

``get_or_train(recipe)`` returns the trained model for a :class:`Recipe`. The cache key is a hash of the recipe,
the training data's content and the code of the modules that shape training, so a later notebook reuses the
model an earlier one trained, a notebook run on its own trains what it needs, and any change to the recipe, data
or code trains anew. An interrupted training resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .models import ArchSpec, create_model, freeze, get_arch
from .train import History, TrainConfig, fit
from .transforms import AugmentConfig, BatchAugment, InputSpec, eval_transform, train_transform

__all__ = ["Recipe", "Trained", "PreparedData", "prepare_data", "get_or_train", "load_trained", "load_snapshots",
           "code_version", "clear_cache"]

_CODE = ("models.py", "train.py", "transforms.py", "recipes.py", "checkpoint.py", "data/fashion.py",
         "data/catalog.py", "data/images.py", "data/splits.py")


def code_version() -> str:
    """Hash of the source of the modules that determine a trained model."""
    h = hashlib.sha256()
    base = Path(__file__).parent
    for name in _CODE:
        h.update((base / name).read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model."""

    name: str  # a readable name; the cache folder is <name>-<hash>
    arch: str = "mini_resnet"  # a key of ARCHS
    data: str = "fashion-mnist"  # "fashion-mnist", "cifar10", "product-icons", an ImageFolder path or a CSV
    size: int | None = None  # input side in px (None = the arch's default)
    in_chans: int | None = None  # input channels (None = the arch's default)
    weights: str | None = None  # None (random init), "imagenet" or a checkpoint path
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"widths": (16, 32, 64)}
    augment: AugmentConfig = AugmentConfig(hflip=0.0)  # training augmentation (default none)
    train: TrainConfig = TrainConfig()  # optimiser, schedule, epochs...
    classes: tuple[str, ...] | None = None  # train on these classes only (e.g. a product launch)
    labels_per_class: int | None = None  # few-shot: this many training images per class (seeded)
    val_per_class: int | None = None  # cap validation at this many images per class (None = all of the split)
    trainable: tuple[str, ...] | None = None  # freeze everything but these modules (None = train all)
    split_seed: int = 0  # seed of the stratified train/val(/test) split
    val_fraction: float = 0.1  # validation share (Fashion-MNIST: of its 60k train images)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self) -> str:
        ident = {"recipe": self.to_dict(), "code": code_version(), "torch": torch.__version__.split("+")[0]}
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class PreparedData:
    train: Any
    val: Any
    test: Any
    classes: list[str]
    input: InputSpec


def _input_spec(recipe: Recipe, spec: ArchSpec) -> InputSpec:
    base = spec.input
    in_chans = recipe.in_chans or base.in_chans
    mean, std = base.mean, base.std
    if in_chans == 3 and len(mean) == 1:  # a greyscale-default arch used on colour images
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return InputSpec(size=recipe.size or base.size, in_chans=in_chans, mean=mean, std=std,
                     interpolation=base.interpolation)


def _few(targets: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(targets == c))[:n] for c in np.unique(targets)]
    return np.sort(np.concatenate(picks))


def prepare_data(recipe: Recipe) -> PreparedData:
    """Datasets (train with augmentation; val and test without) for a recipe, with its input spec.

    Fashion-MNIST (and CIFAR-10) keep their official test sets; validation is a stratified ``val_fraction`` of its training set.
    Image folders are split 80/10/10 (stratified, and grouped by source image for the product-icon set).
    """
    from .data import load_fashion_mnist, load_product_icons, stratified_split
    from .data.catalog import CatalogDataset
    from .data.icons import icon_groups

    ispec = _input_spec(recipe, get_arch(recipe.arch))
    common = dict(size=ispec.size, in_chans=ispec.in_chans, mean=ispec.mean, std=ispec.std,
                  interpolation=ispec.interpolation)
    tt, et = train_transform(**common, augment=recipe.augment), eval_transform(**common)
    if recipe.data in ("fashion-mnist", "cifar10"):
        tt = BatchAugment(**common, augment=recipe.augment)  # in-memory images: augment whole batches at once
        if recipe.data == "cifar10":
            from .data.cifar import load_cifar10

            base, test = load_cifar10()
        else:
            fm = load_fashion_mnist()
            base, test = fm.train, fm.test
        sp = stratified_split(base.targets, fractions=(1 - recipe.val_fraction, recipe.val_fraction, 0.0),
                              seed=recipe.split_seed)
        train_idx, val_idx = sp.train, sp.val
        classes = list(base.classes)
    else:
        if recipe.data == "product-icons":
            base = load_product_icons()
        elif recipe.data.endswith(".csv"):
            base = CatalogDataset.from_csv(recipe.data)
        else:
            base = CatalogDataset.from_folder(recipe.data)
        groups = icon_groups(base) if recipe.data == "product-icons" else None
        sp = stratified_split(base.targets, fractions=(0.8, 0.1, 0.1), seed=recipe.split_seed, groups=groups)
        train_idx, val_idx, test = sp.train, sp.val, base.subset(sp.test)
        classes = list(base.classes)
    targets = np.asarray(base.targets)
    keep = list(range(len(classes)))
    if recipe.classes is not None:
        unknown = set(recipe.classes) - set(classes)
        if unknown:
            raise ValueError(f"recipe {recipe.name!r}: unknown classes {sorted(unknown)}; choose from {classes}")
        keep = [classes.index(c) for c in recipe.classes]
    train_idx = train_idx[np.isin(targets[train_idx], keep)]
    val_idx = val_idx[np.isin(targets[val_idx], keep)]
    if recipe.labels_per_class is not None:
        train_idx = train_idx[_few(targets[train_idx], recipe.labels_per_class, recipe.split_seed)]
    if recipe.val_per_class is not None:  # few-shot runs validate every epoch: keep that cheap
        val_idx = val_idx[_few(targets[val_idx], recipe.val_per_class, recipe.split_seed + 1)]
    train_ds, val_ds = base.subset(train_idx, transform=tt), base.subset(val_idx, transform=et)
    test_targets = np.asarray(test.targets)
    test_ds = test.subset(np.flatnonzero(np.isin(test_targets, keep)), transform=et)
    if recipe.classes is not None:  # relabel to 0..len(keep)-1
        remap = {old: new for new, old in enumerate(keep)}
        for ds in (train_ds, val_ds, test_ds):
            _relabel(ds, remap)
        classes = [classes[i] for i in keep]
    for ds in (train_ds, val_ds, test_ds):
        ds.classes = classes
    return PreparedData(train_ds, val_ds, test_ds, classes, ispec)


def _relabel(ds, remap: dict[int, int]) -> None:
    if hasattr(ds, "images"):
        ds.targets = np.array([remap[int(t)] for t in ds.targets], dtype=np.int64)
    else:
        ds.samples = [(p, remap[y]) for p, y in ds.samples]


@dataclass
class Trained:
    """A trained model with everything needed to use it."""

    model: nn.Module
    recipe: Recipe
    history: History
    classes: list[str]
    input: InputSpec
    checkpoint: Path
    cached: bool  # True if it was loaded from the cache rather than trained now


def _build(recipe: Recipe, num_classes: int, ispec: InputSpec) -> nn.Module:
    """The recipe's model. Its random initialisation comes from the recipe's seed alone (not from whatever the
    calling process drew before), and the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)
        model = create_model(recipe.arch, num_classes, weights=recipe.weights, in_chans=ispec.in_chans,
                             **recipe.model_kwargs)
    if recipe.trainable is not None:
        freeze(model, recipe.trainable, train_bn=False)
    return model


def load_trained(recipe: Recipe, folder: Path) -> Trained:
    from .checkpoint import load_checkpoint

    ck = load_checkpoint(folder / "best.pt")
    ispec = InputSpec(**ck["input"])
    model = _build(replace(recipe, weights=None), len(ck["classes"]), ispec)  # structure only; weights come next
    model.load_state_dict(ck["model"])
    hist = History(**json.loads((folder / "history.json").read_text()))
    return Trained(model.eval(), recipe, hist, list(ck["classes"]), ispec, folder / "best.pt", cached=True)


def get_or_train(recipe: Recipe, *, cache: str | Path | None = None, progress: bool = True,
                 data: PreparedData | None = None) -> Trained:
    """Return the model for ``recipe``: from the cache if it was trained before, else train it (resumable).

    Args:
        cache: the cache folder (default ``<project>/runs/cache``).
        data: already prepared datasets (default: :func:`prepare_data`).
    """
    from .paths import cache_dir

    folder = Path(cache or cache_dir()) / "recipes" / f"{recipe.name}-{recipe.key()}"
    if (folder / "DONE").is_file():
        return load_trained(recipe, folder)
    data = data or prepare_data(recipe)
    model = _build(recipe, len(data.classes), data.input)
    meta = {"arch": recipe.arch, "model_kwargs": dict(recipe.model_kwargs), "in_chans": data.input.in_chans,
            "input": data.input.to_dict(), "recipe": json.dumps(recipe.to_dict(), default=str)}
    hist = fit(model, data.train, data.val, recipe.train, out_dir=folder, resume=True, classes=data.classes,
               meta=meta, progress=progress)
    (folder / "history.json").write_text(json.dumps(hist.to_dict(), indent=1) + "\n")
    (folder / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1, default=str) + "\n")
    (folder / "DONE").write_text("ok\n")
    return Trained(model.eval(), recipe, hist, data.classes, data.input, folder / "best.pt", cached=False)


def clear_cache(cache: str | Path | None = None) -> None:
    """Delete every cached recipe (the next ``get_or_train`` trains again)."""
    from .paths import cache_dir

    shutil.rmtree(Path(cache or cache_dir()) / "recipes", ignore_errors=True)


def load_snapshots(trained: Trained) -> list[tuple[int, nn.Module]]:
    """The snapshot models a ``cosine_restarts`` recipe saved at the end of each cycle: ``[(epoch, model), ...]``."""
    from .checkpoint import load_checkpoint

    folder = trained.checkpoint.parent / "snapshots"
    paths = sorted(folder.glob("epoch*.pt"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no snapshots (train with TrainConfig(schedule='cosine_restarts'))")
    out = []
    for p in paths:
        ck = load_checkpoint(p)
        model = _build(replace(trained.recipe, weights=None), len(trained.classes), trained.input)
        model.load_state_dict(ck["model"])
        out.append((int(ck["epoch"]), model.eval()))
    return out
