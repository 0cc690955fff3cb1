"""Honest evaluation of a trained checkpoint: its held-out images, and a report of files a shop can read.

A checkpoint remembers its split (``split`` in the checkpoint; ``split.json`` in the run folder): the data's
fingerprint, the seed and fractions, and for image folders the files of each part with a content digest.
:func:`heldout` uses it to score exactly the images the model never trained on; given other data it refuses images
whose content matches a training or validation image (unless allowed), because scoring them inflates accuracy.
:func:`write_report` writes the confusion matrix, per-class report, top losses and calibration with the package's
metric and plotting functions.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import evaluate as ev
from . import viz
from .config import InputSpec
from .data.catalog import CatalogDataset, Skipped
from .data.groups import near_duplicate_pairs
from .data.images import load_image
from .data.sources import BUILTIN, Source, file_digest, load_dataset
from .errors import DataError
from .transforms import spec_transform

__all__ = ["Heldout", "heldout", "write_report", "display_images"]


@dataclass
class Heldout:
    """The images to score and what they are."""

    dataset: Any  # items (x float (C, S, S), y int)
    description: str  # e.g. "the held-out test split of product-icons (41 images)"
    skipped: list[Skipped] = field(default_factory=list)


def heldout(ck: dict[str, Any], *, data: str | None = None, split: str = "test",
            allow_overlap: bool = False) -> Heldout:
    """The images a checkpoint should be scored on.

    Args:
        ck: a loaded prodvision checkpoint (``classes``, ``input`` and, from prodvision's training, ``split``).
        data: a dataset name, folder or CSV (default: the one the checkpoint was trained on).
        split: ``"test"`` or ``"val"`` (that part of the training run's split, when ``data`` is the training data),
            or ``"all"`` (every image of ``data``).
        allow_overlap: score images whose content is in the training or validation split too.

    Raises:
        DataError: the data's classes differ from the model's, a part of the split cannot be found, or images the
            model was trained on would be scored (without ``allow_overlap``).
    """
    rec = ck.get("split") or {}
    name = data or rec.get("data")
    if name is None:
        raise DataError("the checkpoint does not record its training data; pass --data")
    classes = list(ck["classes"])
    source = load_dataset(name, classes=classes if Path(str(name)).exists() else None)
    if list(source.classes) != classes:
        raise DataError(f"{name}: its classes {source.classes} differ from the model's {classes}")
    spec = InputSpec.from_dict(dict(ck["input"]))
    # Image files are preprocessed as `prodvision predict` and the service do (load_image, then the deploy transform
    # with the model's photo conversion); in-memory datasets already are what the model was trained on.
    tf = spec_transform(spec, deploy=isinstance(source.pool, CatalogDataset))
    same = rec.get("fingerprint") == source.fingerprint()
    intact = not same and split != "all" and _part_is_intact(rec, source, split)
    if intact:  # e.g. one training file corrupted since: the recorded part is still there, byte for byte
        same = True
        print(f"note: {name} has changed since training (its content fingerprint differs), but all "
              f"{len(rec[split])} {split} files recorded at training time are there unchanged: scoring them",
              file=sys.stderr, flush=True)
    if split != "all" and not rec:
        raise DataError("the checkpoint has no split record (it was not trained by prodvision's recipes); "
                        "use --split all with --data")
    if split == "all" or not same:
        if split != "all":
            raise DataError(f"{name} is not the data this model was trained on (its content differs), so its "
                            f"'{split}' split is unknown; use --split all to score every image of it")
        ds = source.test if source.test is not None else source.pool  # data with an official test set: that set
        _refuse_overlap(rec, source, ds, allow_overlap)
        what = "official test set" if source.test is not None else "images"
        n_skipped = len(source.skipped)
        desc = (f"all {len(ds)} {what} of {name}" if not n_skipped else  # "all" only when nothing was left out
                f"{len(ds)} {what} of {name} ({n_skipped} file(s) skipped, not scored)")
        return Heldout(ds.subset(range(len(ds)), transform=tf), desc, source.skipped)
    if split == "test" and rec.get("official_test"):
        return Heldout(source.test.subset(range(len(source.test)), transform=tf),
                       f"the official test set of {name} ({len(source.test)} images)", source.skipped)
    if rec.get("items") == "files":
        want = {rel for rel, _ in rec[split]}
        ids = source.item_ids(range(len(source.pool)))
        idx = [i for i, rel in enumerate(ids) if rel in want]
        if len(idx) != len(want):
            raise DataError(f"{name}: {len(want) - len(idx)} of the {len(want)} {split} images recorded at training "
                            "time are missing now")
    else:  # in-memory data: recompute the seeded split
        fold = tuple(rec["cv_fold"]) if rec.get("cv_fold") else None
        sp = source.split(seed=rec.get("seed", 0), val_fraction=rec.get("fractions", [0.9, 0.1])[1], cv_fold=fold)
        idx = getattr(sp, split)
    ds = source.pool.subset(idx, transform=tf)
    return Heldout(ds, f"the held-out {split} split of {name} ({len(idx)} images, never trained on)", source.skipped)


def _part_is_intact(rec: dict, source: Source, split: str) -> bool:
    """Whether every file of the recorded ``split`` of an image-folder run is in ``source`` with the recorded
    content digest (the rest of the data may have changed)."""
    if rec.get("items") != "files" or not rec.get(split) or not hasattr(source.pool, "samples"):
        return False
    here = dict(zip(source.item_ids(range(len(source.pool))), (p for p, _ in source.pool.samples)))
    return all(rel in here and file_digest(here[rel])[:16] == digest for rel, digest in rec[split])


def _refuse_overlap(rec: dict, source: Source, ds, allow: bool) -> None:
    """Images of ``ds`` that are a training/validation image of the run -- the same bytes, or the same photo
    re-saved, resized or re-encoded (a near-duplicate: :func:`prodvision.data.near_duplicate_pairs`, against the
    training folder when it is still there) -- are refused unless ``allow``."""
    if rec.get("items") != "files" or not hasattr(ds, "samples"):
        return
    seen = {digest for part in ("train", "val") for _, digest in rec.get(part, [])}
    hits = {p for p, _ in ds.samples if file_digest(p)[:16] in seen}
    twins, note = _near_training_images(rec, ds)
    hits |= {p for p, _ in twins}
    if note:
        print(f"note: {note}", file=sys.stderr, flush=True)
    if hits and not allow:
        example = next(((p, t) for p, t in twins if p in hits), None)
        like = f" (e.g. {example[0]} is the training image {example[1]})" if example else f" (e.g. {sorted(hits)[0]})"
        raise DataError(f"{len(hits)} of the {len(ds)} images were used to train or validate this model, as the same "
                        f"file or the same photo re-saved{like}; scoring them would inflate accuracy. Evaluate the "
                        "held-out split (--split test, the default) or pass --allow-overlap to score them anyway")
    if hits:
        print(f"WARNING: {len(hits)} of {len(ds)} images were used in training (same file or near-duplicate); "
              "accuracy on them is not a held-out estimate", file=sys.stderr, flush=True)
        for p, t in twins[:20]:
            print(f"  near-duplicate of a training image: {p} ~ {t}", file=sys.stderr)


def _near_training_images(rec: dict, ds) -> tuple[list[tuple[str, str]], str | None]:
    """``(image of ds, training/validation file it duplicates)`` pairs found in the pixels, and a note when the
    check could not run (the training data is no longer where the run recorded it)."""
    name = rec.get("data")
    if not name or not (name in BUILTIN or Path(str(name)).exists()):
        return [], (f"the training data {name!r} is not here, so only byte-identical copies of training images were "
                    "looked for (not re-saved or resized ones)")
    train_src = load_dataset(name, verify=False)
    ids = train_src.item_ids(range(len(train_src.pool)))
    wanted = {rel for part in ("train", "val") for rel, _ in rec.get(part, [])}
    tidx = [i for i, rel in enumerate(ids) if rel in wanted]
    n_train = len(tidx)

    def load(i: int):
        return train_src.pool[tidx[i]][0] if i < n_train else load_image(ds.samples[i - n_train][0])

    pairs = near_duplicate_pairs(load, n_train + len(ds.samples))
    return [(ds.samples[j - n_train][0], ids[tidx[i]]) for i, j in pairs if i < n_train <= j], None


def write_report(out_dir: str | Path, logits: np.ndarray, targets: np.ndarray, classes: Sequence[str], *,
                 images: Sequence | None = None, summary: dict | None = None) -> dict[str, Path]:
    """Write ``summary.json``, ``per_class.csv``, ``confusion_matrix.png``, ``reliability.png`` and (with
    ``images``, the inputs as displayable arrays in dataset order) ``top_losses.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "summary.json", "per_class": out / "per_class.csv"}
    paths["summary"].write_text(json.dumps(summary or {}, indent=1, default=float) + "\n")
    ev.classification_report_df(logits, targets, classes).to_csv(paths["per_class"], float_format="%.4f")
    k = len(classes)
    figs = {"confusion_matrix": viz.confusion_matrix_plot(ev.confusion(logits, targets, k), list(classes)),
            "reliability": viz.reliability_diagram({"model": ev.reliability_bins(ev.softmax(logits), targets)})}
    if images is not None:
        table = ev.top_losses(logits, targets, k=min(16, len(targets)))
        figs["top_losses"] = viz.top_losses_grid(images, table, list(classes), ncols=8)
    import matplotlib.pyplot as plt

    for name, fig in figs.items():
        paths[name] = viz.save_figure(fig, name, out)
        plt.close(fig)
    return paths


class display_images:  # noqa: N801 -- a lazy sequence, used like a list
    """The images of a dataset as displayable uint8 arrays, loaded only when indexed (for top-loss grids)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> np.ndarray:
        if hasattr(self.ds, "images"):
            return np.asarray(self.ds.images[int(i)])
        return np.asarray(load_image(self.ds.samples[int(i)][0]))
