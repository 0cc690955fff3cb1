"""Recipes: a complete, hashable description of one trained model; the one training path; and a cache of results.

``train_recipe(recipe, out_dir)`` trains a :class:`Recipe` into a run folder -- the command line's ``prodvision
train`` and the notebooks both train this way. ``get_or_train(recipe)`` returns the trained model from the cache, or
trains it there. A run folder always holds the same files::

    recipe.json   the recipe (and its cache key)          split.json   which images trained, validated and test
    history.json  per-epoch records                       best.pt / last.pt (+ snapshots/)   checkpoints
    DONE          written last: the run is complete

The cache key covers the experiment (every recipe field except run-time knobs such as the device), the data's
content fingerprint and split, and ``CACHE_VERSION``, which is bumped whenever the meaning of training changes; a
code edit that does not change what is trained (a comment, a faster kernel) does not retrain anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import cache
from .checkpoint import load_checkpoint, save_checkpoint
from .config import (FINETUNE_MODES, PHOTO_SIZE, RUNTIME_FIELDS, AugmentConfig, InputSpec, TrainConfig,
                     default_batch_size, finetune_defaults)
from .data.sources import BUILTIN, Source, file_digest, load_dataset
from .errors import ConfigError, DataError
from .evaluate import confidence_threshold, loss_and_accuracy, predict
from .features import extract_features, feature_extractor, fit_linear_probe, probe_to_linear, trunk_activations, ViewsDataset
from .models import classifier_name, create_model, freeze, get_arch, load_model, split_model
from .train import History, fit
from .transforms import BatchAugment, eval_transform, train_transform

__all__ = ["Recipe", "Trained", "PreparedData", "prepare_data", "train_recipe", "get_or_train", "load_run",
           "load_snapshots", "default_batch_size", "finetune_defaults", "wise_average", "clear_cache", "CACHE_VERSION",
           "FINETUNE_MODES"]

#: Bump when what a recipe trains changes meaning (data preparation, initialisation, the training loop's maths).
CACHE_VERSION = 2
@dataclass(frozen=True)
class Recipe:
    """Everything that determines a trained model."""

    name: str  # a readable name; the cache folder is <name>-<key>
    arch: str = "mini_resnet"  # a key of ARCHS
    data: str = "fashion-mnist"  # "fashion-mnist", "cifar10", "product-icons", an image folder or a CSV manifest
    size: int | None = None  # input side in px (None = the arch's default)
    in_chans: int | None = None  # input channels (None = the arch's default)
    weights: str | None = None  # None (random init), "imagenet" or a checkpoint path
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"widths": (16, 32, 64)}
    augment: AugmentConfig = AugmentConfig(hflip=0.0)  # training augmentation (default none)
    train: TrainConfig = TrainConfig()  # optimiser, schedule, epochs...
    classes: tuple[str, ...] | None = None  # train on these classes only (e.g. a product launch)
    labels_per_class: int | None = None  # few-shot: this many training images per class (seeded)
    val_per_class: int | None = None  # cap validation at this many images per class (None = all of the split)
    trainable: tuple[str, ...] | None = None  # freeze all but these modules or "head"/"last_stage" (None = train all)
    finetune: str | None = None  # None, or one of FINETUNE_MODES (needs weights): probe, LP-FT last stage or full
    views: int = 4  # finetune="last_stage": augmented views per training image whose trunk activations are cached
    # WiSE-FT (Wortsman et al., 2022): the kept model is (1 - wise) x the probe-initialised network + wise x the
    # fine-tuned one, weight by weight (None = the fine-tuned network as it is); needs finetune full or last_stage
    wise: float | None = None
    split_seed: int = 0  # seed of the stratified train/val(/test) split
    # (i, k): fold i of a seeded k-fold cross-validation (train on k-1 folds; val and test are the halves of fold i),
    # for data without an official test set; None: the 80/10/10 split
    cv_fold: tuple[int, int] | None = None
    val_fraction: float = 0.1  # validation share (data with an official test set, e.g. Fashion-MNIST's 60k)
    # a folder/CSV catalog's product id: a regex searched in each file's relative path without extension (its first
    # group), so that the shots of one product never straddle a split (None: near-duplicates are still grouped)
    group_by: str | None = None
    target_precision: float = 0.95  # the "unsure" threshold: lowest confidence with this precision on validation

    def __post_init__(self):
        spec = get_arch(self.arch)
        if self.size is not None and self.size < spec.min_size:  # 0 would mean "the default"; 1 px died in a pooling
            raise ConfigError(f"recipe {self.name!r}: size {self.size} is too small for {self.arch}: its poolings need "
                              f"inputs of at least {spec.min_size} px (e.g. --size {spec.min_size}, or leave "
                              "size unset for the arch's default)")
        for name in ("labels_per_class", "val_per_class"):  # 0 would mean "no images"
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"recipe {self.name!r}: {name} must be at least 1 (or None), got {value}")
        if self.finetune is not None and self.finetune not in FINETUNE_MODES:
            raise ConfigError(f"unknown finetune mode {self.finetune!r}; choose from {list(FINETUNE_MODES)}")
        if self.finetune is not None and self.weights is None:
            raise ConfigError(f"finetune={self.finetune!r} needs pretrained weights (weights='imagenet' or a checkpoint)")
        if self.wise is not None:
            if self.finetune not in ("full", "last_stage"):
                raise ConfigError(f"wise={self.wise} averages fine-tuned weights with the probe's: it needs "
                                  f"finetune='full' or 'last_stage', not {self.finetune!r}")
            if not 0.0 <= self.wise <= 1.0:
                raise ConfigError(f"wise must be between 0 (the probe) and 1 (the fine-tuned network), got {self.wise}")
            if self.train.monitor != "epoch":
                raise ConfigError("wise averages the last epoch's weights with the probe's: it needs monitor='epoch', "
                                  f"not {self.train.monitor!r}")
        if self.cv_fold is not None and (len(self.cv_fold) != 2 or not 0 <= self.cv_fold[0] < self.cv_fold[1]
                                         or self.cv_fold[1] < 2):
            raise ConfigError(f"recipe {self.name!r}: cv_fold is (fold, folds) with 0 <= fold < folds and folds >= 2, "
                              f"got {self.cv_fold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        """Inverse of :meth:`to_dict` (nested configs rebuilt, JSON lists back to tuples; unknown keys ignored)."""
        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, list) else v

        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        d["augment"] = AugmentConfig.from_dict(d.get("augment", {}))
        d["train"] = TrainConfig.from_dict(d.get("train", {}))
        d["model_kwargs"] = {k: tup(v) for k, v in d.get("model_kwargs", {}).items()}
        for k in ("classes", "trainable", "cv_fold"):
            if d.get(k) is not None:
                d[k] = tup(d[k])
        return cls(**d)

    def experiment(self) -> dict[str, Any]:
        """The fields that determine the trained model: everything but the run-time knobs (device, workers...)."""
        d = self.to_dict()
        d["train"] = {k: v for k, v in d["train"].items() if k not in RUNTIME_FIELDS}
        for k in ("wise", "cv_fold", "group_by"):  # the keys of recipes from before these fields existed stay as they were
            if d[k] is None:
                del d[k]
        return d

    def key(self, data: "PreparedData | None" = None) -> str:
        """The cache key: the experiment, ``CACHE_VERSION`` and (given prepared data) its content and split."""
        ident = {"recipe": self.experiment(), "version": CACHE_VERSION}
        if data is not None:
            ident["data"] = data.split["fingerprint"]
            ident["split"] = cache.make_key({k: data.split[k] for k in ("train", "val", "test")})
        return cache.make_key(ident, 12)


@dataclass
class PreparedData:
    """The datasets of one recipe (train with augmentation; val and test without) and where they came from."""

    train: Any
    val: Any
    test: Any
    classes: list[str]
    input: InputSpec
    source: Source
    split: dict[str, Any]  # see split_record: fingerprint, seed, fractions and the items of each part


_SOURCES: dict[str, Source] = {}  # builtin datasets, loaded and verified once per process


def _source(name: str, group_by: str | None = None) -> Source:
    if name not in BUILTIN:
        return load_dataset(name, group_by=group_by)
    if name not in _SOURCES:
        _SOURCES[name] = load_dataset(name)
    return _SOURCES[name]


def _input_spec(recipe: Recipe) -> InputSpec:
    base = get_arch(recipe.arch).input
    in_chans = recipe.in_chans or base.in_chans
    mean, std = base.mean, base.std
    if in_chans == 3 and len(mean) == 1:  # a greyscale-default arch used on colour images
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return InputSpec(size=recipe.size or base.size, in_chans=in_chans, mean=mean, std=std,
                     interpolation=base.interpolation,
                     photo_style="fashion-mnist" if recipe.data == "fashion-mnist" else None)


def _few(targets: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(targets == c))[:n] for c in np.unique(targets)]
    return np.sort(np.concatenate(picks))


def prepare_data(recipe: Recipe, source: Source | None = None) -> PreparedData:
    """Datasets for a recipe: :func:`prodvision.data.load_dataset`, its seeded stratified split, then the recipe's
    class subset, few-shot and validation caps, and the transforms of its input spec.

    Data with an official test set (Fashion-MNIST, CIFAR-10) keeps it; validation is a stratified ``val_fraction``
    of its training set. Image folders are split 80/10/10 (grouped by source image for the product-icon set).

    Raises:
        DataError: fewer than 2 classes (a classifier of one class is always right and learns nothing), naming the
            folder or CSV file; a class too small to split.
    """
    source = source or _source(recipe.data, recipe.group_by)
    ispec = _input_spec(recipe)
    common = dict(size=ispec.size, in_chans=ispec.in_chans, mean=ispec.mean, std=ispec.std,
                  interpolation=ispec.interpolation)
    in_memory = source.test is not None and not hasattr(source.pool, "samples")
    tt = (BatchAugment if in_memory else train_transform)(**common, augment=recipe.augment)
    et = eval_transform(**common)
    classes, targets = list(source.classes), np.asarray(source.pool.targets)
    keep = list(range(len(classes)))
    if recipe.classes is not None:
        unknown = set(recipe.classes) - set(classes)
        if unknown:
            raise ConfigError(f"recipe {recipe.name!r}: unknown classes {sorted(unknown)}; choose from {classes}")
        keep = [classes.index(c) for c in recipe.classes]
    if len(keep) < 2:
        which = f"the recipe keeps only {recipe.classes}" if recipe.classes is not None else \
            f"{len(classes)} class found ({', '.join(map(repr, classes))})"
        raise DataError(f"{source.name}: {which}, but a classifier needs at least 2 classes; add a sub-folder "
                        "(or CSV label) of images for each other class")
    sp = source.split(seed=recipe.split_seed, val_fraction=recipe.val_fraction, cv_fold=recipe.cv_fold)
    train_idx = sp.train[np.isin(targets[sp.train], keep)]
    val_idx = sp.val[np.isin(targets[sp.val], keep)]
    if recipe.labels_per_class is not None:
        train_idx = train_idx[_few(targets[train_idx], recipe.labels_per_class, recipe.split_seed)]
    if recipe.val_per_class is not None:  # few-shot runs validate every epoch: keep that cheap
        val_idx = val_idx[_few(targets[val_idx], recipe.val_per_class, recipe.split_seed + 1)]
    test_base = source.test if source.test is not None else source.pool.subset(sp.test)
    test_idx = np.flatnonzero(np.isin(np.asarray(test_base.targets), keep))
    train_ds, val_ds = source.pool.subset(train_idx, transform=tt), source.pool.subset(val_idx, transform=et)
    test_ds = test_base.subset(test_idx, transform=et)
    if recipe.classes is not None:  # relabel to 0..len(keep)-1
        remap = {old: new for new, old in enumerate(keep)}
        for ds in (train_ds, val_ds, test_ds):
            _relabel(ds, remap)
        classes = [classes[i] for i in keep]
    for ds in (train_ds, val_ds, test_ds):
        ds.classes = classes
    test_pool_idx = sp.test[test_idx] if source.test is None else test_idx
    split = split_record(recipe, source, classes, train_idx, val_idx, test_pool_idx)
    return PreparedData(train_ds, val_ds, test_ds, classes, ispec, source, split)


def split_record(recipe: Recipe, source: Source, classes, train_idx, val_idx, test_idx) -> dict[str, Any]:
    """What was trained, validated and tested on: the data's fingerprint, the split's seed and fractions, and the
    items of each part -- file paths (relative to the folder) with a content digest for image folders, indices
    into the training pool (test: into the official test set) for in-memory data."""
    files = hasattr(source.pool, "samples")

    def items(idx):
        if not files:
            return [int(i) for i in idx]
        return [[rel, file_digest(source.pool.samples[int(i)][0])[:16]]
                for rel, i in zip(source.item_ids(idx), idx)]

    fractions = [1 - recipe.val_fraction, recipe.val_fraction, 0.0] if source.test is not None else [0.8, 0.1, 0.1]
    if recipe.cv_fold is not None:
        k = recipe.cv_fold[1]
        fractions = [(k - 1) / k, 0.5 / k, 0.5 / k]
    fold = {} if recipe.cv_fold is None else {"cv_fold": list(recipe.cv_fold)}  # older records stay as they were
    g = source.grouping()
    if g is not None:  # which files were kept together: the declared products and the near-duplicate photos
        ids = source.item_ids(range(len(source.pool)))
        fold["groups"] = {"declared": g.declared, "count": g.count, "images": len(g.ids),
                          "near_duplicates": [[ids[i], ids[j]] for i, j in g.near_duplicate_pairs]}
    return {"data": recipe.data, "fingerprint": source.fingerprint(), "seed": recipe.split_seed, **fold,
            "fractions": fractions, "official_test": source.test is not None, "classes": list(classes),
            "items": "files" if files else "indices", "train": items(train_idx), "val": items(val_idx),
            "test": items(test_idx)}


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
        freeze(model, recipe.trainable)
    return model


def _write_json(path: Path, obj: Any) -> None:
    cache.atomic_write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


def _read_json(path: Path) -> Any:
    """One record of a run folder (``recipe.json``, ``history.json``).

    Raises:
        ConfigError: the file is not complete JSON (cut short or damaged); the message says whether the run can
            resume, i.e. whether the folder still holds a readable ``last.pt`` to continue from.
    """
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno} column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e)
        last = path.parent / "last.pt"
        if path.name == "history.json" and last.is_file():
            fix = (f"the run can resume: train it again into {path.parent} with the same settings (prodvision train "
                   "--out, or train_recipe), which continues from last.pt and writes history.json anew"
                   f"{'; for a cached run, delete its DONE file first' if cache.is_done(path.parent) else ''}")
        else:
            why = "its record recipe.json is lost" if path.name == "recipe.json" else "no last.pt there"
            fix = (f"the run cannot resume ({why}): train it again from scratch (prodvision train --no-resume, "
                   f"or delete {path.parent})")
        raise ConfigError(f"{path}: corrupt, not complete JSON ({where}); {fix}") from None


def _check_run_folder(out: Path, recipe: Recipe, data: PreparedData) -> dict[str, tuple[Any, Any]]:
    """A run folder being resumed must hold a run of the same recipe on the same data.

    Returns:
        ``{field: (stored, now)}`` for the run-time settings (``config.RUNTIME_FIELDS``: device, workers...) that
        differ from the stored run's: they may change on resume, since they do not change what is trained.
    """
    path = out / "recipe.json"
    if not path.is_file():
        return {}
    saved = _read_json(path)
    now = json.loads(json.dumps(recipe.experiment(), default=str))
    old = Recipe.from_dict(saved["recipe"]).experiment() if "recipe" in saved else {}
    old = json.loads(json.dumps(old, default=str))
    diff = [k for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)]
    diff += [f"train.{k}" for k in sorted(set(old.get("train", {})) | set(now.get("train", {})))
             if "train" in diff and old.get("train", {}).get(k) != now["train"].get(k)]
    diff = [d for d in diff if d != "train"]
    if saved.get("data_fingerprint") not in (None, data.split["fingerprint"]):
        diff.append("data (the images or labels changed)")
    if diff:
        details = "; ".join(f"{k}: {_get(old, k)!r} -> {_get(now, k)!r}" for k in diff if not k.startswith("data ("))
        raise ConfigError(f"{out}: holds a run with other settings ({', '.join(diff)}{'; ' + details if details else ''}); "
                          "resume with the same settings, or start a fresh run (another --out folder, or --no-resume)")
    stored, given = saved["recipe"].get("train", {}), json.loads(json.dumps(recipe.train.to_dict(), default=str))
    return {k: (stored[k], given[k]) for k in RUNTIME_FIELDS if k in stored and stored[k] != given[k]}


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def train_recipe(recipe: Recipe, out_dir: str | Path, *, resume: bool = True, progress: bool = True,
                 data: PreparedData | None = None) -> "Trained":
    """Train ``recipe`` into the run folder ``out_dir`` (resuming an interrupted run there) and return the model.

    With ``finetune`` set, the head starts as a linear probe on the frozen features (LP); ``"last_stage"`` then
    trains the last stage and head on the frozen trunk's cached activations (``views`` augmented views per image),
    ``"full"`` the whole network. Afterwards the best model's validation predictions set the confidence below
    which a prediction is flagged "unsure" (``recipe.target_precision``); it is stored in ``best.pt``.

    A resumed run must have the same recipe (else ``ConfigError`` says what differs) and keeps its ``recipe.json``
    as first written; run-time settings that differ from it (``config.RUNTIME_FIELDS``: device, workers...) are
    named in one printed line.
    """
    out = Path(out_dir)
    data = data or prepare_data(recipe)
    if resume and (out / "recipe.json").is_file():  # the run's own record stays as it was written
        runtime = _check_run_folder(out, recipe, data)
        if runtime:
            print(f"{out}: resuming with " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in runtime.items())
                  + ": run-time settings, which do not change what is trained; recipe.json keeps the run's own",
                  flush=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
        record = {"recipe": recipe.to_dict(), "key": recipe.key(data), "data_fingerprint": data.split["fingerprint"],
                  "cache_version": CACHE_VERSION}
        _write_json(out / "recipe.json", record)
    _write_json(out / "split.json", data.split)
    model = _build(recipe, len(data.classes), data.input)
    meta = {"arch": recipe.arch, "model_kwargs": dict(recipe.model_kwargs), "in_chans": data.input.in_chans,
            "input": data.input.to_dict(), "recipe": json.dumps(recipe.to_dict(), default=str),
            "split": data.split if data.split["items"] == "files" else  # index lists: recomputable from the seed
            {k: v for k, v in data.split.items() if k not in ("train", "val", "test")}}
    if recipe.finetune is None:
        hist = fit(model, data.train, data.val, recipe.train, out_dir=out, resume=resume, classes=data.classes,
                   meta=meta, progress=progress)
    else:
        hist = _finetune(recipe, model, data, out, meta, progress, resume)
    _calibrate(out / "best.pt", model, data, recipe)
    _write_json(out / "history.json", hist.to_dict())
    return Trained(model.eval(), recipe, hist, data.classes, data.input, out / "best.pt", cached=False)


def _finetune(recipe: Recipe, model: nn.Module, data: PreparedData, out: Path, meta, progress, resume) -> History:
    """LP, then (optionally) FT: the head is initialised from a linear probe on the frozen features.

    The probe-initialised network is epoch 0 of the history. When checkpoints are chosen on validation
    (``monitor="val_acc"``) it competes with the fine-tuned epochs: fine-tuning that never beats the probe on
    validation leaves the probe as ``best.pt`` (early stopping at zero epochs). With ``recipe.wise`` the kept model
    (``best.pt``) is the weight average of the probe-initialised network and the last epoch (WiSE-FT); ``last.pt``
    stays the fine-tuned network, so a resumed run averages the same two again.
    """
    head = classifier_name(model)
    key = {"arch": recipe.arch, "weights": recipe.weights, "in_chans": data.input.in_chans}
    plain_train = data.train.subset(range(len(data.train)), transform=data.val.transform)  # no augmentation
    fx = feature_extractor(model, head)
    f_tr, y_tr = extract_features(fx, plain_train, key=key, device=recipe.train.device, progress=progress)
    _set(model, head, probe_to_linear(fit_linear_probe(f_tr, y_tr)))
    loss, acc = _val_metrics(model, data, recipe)
    lp = {"epoch": 0, "val_loss": loss, "val_acc": acc}
    lp_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if recipe.finetune == "probe":
        freeze(model, "head")
        hist = History(epochs=[lp], best_epoch=0, best_metric=acc)
    elif recipe.finetune == "full":
        hist = fit(model, data.train, data.val, recipe.train, out_dir=out, resume=resume, classes=data.classes,
                   meta=meta, progress=progress)
    else:
        freeze(model, "last_stage")
        trunk, rest = split_model(model, "last_stage")
        akey = {**key, "trunk": "last_stage"}
        a_tr, y_tr = trunk_activations(trunk, data.train, key=akey, views=recipe.views, seed=recipe.train.seed,
                                       device=recipe.train.device, progress=progress)
        a_val, y_val = trunk_activations(trunk, data.val, key=akey, device=recipe.train.device, progress=progress)
        hist = fit(rest, ViewsDataset(a_tr, y_tr, data.classes), torch.utils.data.TensorDataset(a_val[0], y_val),
                   recipe.train, out_dir=None, classes=data.classes, progress=progress)
    if recipe.finetune != "probe":
        hist.epochs.insert(0, lp)
        if recipe.train.monitor == "val_acc" and hist.best_metric is not None and acc > hist.best_metric:
            model.load_state_dict(lp_state)  # fine-tuning never beat the probe on validation
            hist.best_epoch, hist.best_metric = 0, acc
        if recipe.wise is not None:
            # the fine-tuned end point: a resumed full run's best.pt holds the average already, last.pt never does
            ft = load_checkpoint(out / "last.pt")["model"] if recipe.finetune == "full" else model.state_dict()
            model.load_state_dict(wise_average(lp_state, ft, recipe.wise))
            loss, acc = _val_metrics(model, data, recipe)
            hist.wise = {"alpha": recipe.wise, "epoch": len(hist.epochs) - 1, "val_loss": loss, "val_acc": acc}
    if recipe.finetune != "full" or hist.best_epoch == 0 or recipe.wise is not None:  # best.pt is not fit's
        ck = {"model": model.state_dict(), "epoch": len(hist.epochs) - 1, "config": recipe.train.to_dict(),
              "classes": data.classes, "metrics": hist.wise or hist.epochs[-1], "history": hist.to_dict(),
              "wise": recipe.wise, **meta}
        save_checkpoint(ck, out / "best.pt")  # the whole network: trunk + the trained last stage and head
        if recipe.finetune != "full":
            save_checkpoint(ck, out / "last.pt")
    hist.checkpoint = str(out / "best.pt")
    return hist


def _val_metrics(model: nn.Module, data: PreparedData, recipe: Recipe) -> tuple[float, float]:
    """Validation loss and accuracy of a model ``_finetune`` made outside ``fit`` (the probe, the WiSE average)."""
    logits, y = predict(model, torch.utils.data.DataLoader(data.val, batch_size=64), device=recipe.train.device)
    return loss_and_accuracy(logits, y)


def wise_average(probe: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """WiSE-FT's weight-space average ``(1 - alpha) * probe + alpha * finetuned`` of two state dicts of one network
    (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models"). Both start from the same pretrained weights,
    so the average lies on a path along which accuracy changes smoothly; integer buffers (BatchNorm's batch count)
    are the fine-tuned network's."""
    if probe.keys() != finetuned.keys():
        raise ConfigError("wise_average needs two state dicts of the same network")
    return {k: torch.lerp(probe[k].to(v.dtype), v, alpha) if v.is_floating_point() else v for k, v in finetuned.items()}


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _calibrate(best: Path, model: nn.Module, data: PreparedData, recipe: Recipe) -> None:
    """Store in ``best.pt`` the confidence threshold below which predictions count as "unsure"."""
    logits, y = predict(model, torch.utils.data.DataLoader(data.val, batch_size=256), device=recipe.train.device)
    ck = load_checkpoint(best)
    ck.pop("format", None)
    ck["calibration"] = confidence_threshold(logits, y, recipe.target_precision)
    save_checkpoint(ck, best)


def get_or_train(recipe: Recipe, *, cache_root: str | Path | None = None, progress: bool = True,
                 data: PreparedData | None = None) -> Trained:
    """The trained model for ``recipe``: from the cache if it was trained before, else trained there (resumable).

    Args:
        cache_root: the cache folder (default ``$PRODVISION_CACHE`` or ``<project>/runs/cache``).
        data: already prepared datasets (default: :func:`prepare_data`).
    """
    data = data or prepare_data(recipe)
    folder = cache.entry("recipes", recipe.name, recipe.key(data), cache_root)
    if cache.is_done(folder):
        return load_run(folder)
    trained = train_recipe(recipe, folder, progress=progress, data=data)
    cache.mark_done(folder)
    return trained


def load_run(folder: str | Path) -> Trained:
    """A finished run folder (from ``train_recipe``, ``get_or_train`` or ``prodvision train``) as a :class:`Trained`."""
    folder = Path(folder)
    model, ck = load_model(folder / "best.pt")
    recipe = Recipe.from_dict(_read_json(folder / "recipe.json")["recipe"])
    hist = History(**_read_json(folder / "history.json"))
    ispec = InputSpec.from_dict(ck["input"])
    return Trained(model, recipe, hist, list(ck["classes"]), ispec, folder / "best.pt", cached=True)


def load_snapshots(trained: Trained) -> list[tuple[int, nn.Module]]:
    """The snapshot models a ``cosine_restarts`` recipe saved at the end of each cycle: ``[(epoch, model), ...]``."""
    folder = trained.checkpoint.parent / "snapshots"
    paths = sorted(folder.glob("epoch*.pt"))
    if not paths:
        raise ConfigError(f"{folder}: no snapshots (train with TrainConfig(schedule='cosine_restarts'))")
    out = []
    for p in paths:
        model, ck = load_model(p)
        out.append((int(ck["epoch"]), model))
    return out


def clear_cache(cache_root: str | Path | None = None) -> None:
    """Delete every cached recipe (the next ``get_or_train`` trains again)."""
    cache.clear("recipes", cache_root)
