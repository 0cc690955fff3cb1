"""The ``prodvision`` command line: data checks, training, evaluation (and, from ``cli_deploy``, export/predict/cam/serve).

Examples::

    prodvision data fetch                      # locate (or download) Fashion-MNIST and verify its checksums
    prodvision data scan data/product-icons    # check every file the way training loads it
    prodvision train --data fashion-mnist --arch mini_resnet --epochs 5 --out runs/mini_resnet
    prodvision train --data my_photos/ --arch tf_efficientnet_lite0 --weights imagenet --out runs/shop
    prodvision evaluate runs/shop/best.pt --out runs/shop/report   # the held-out test split, with figures

Startup is fast: this module imports only the standard library and the torch-free ``prodvision.config``; each
subcommand imports what it needs. Every number is checked where it is parsed (``prodvision.cli_args``), so a value
out of range is refused in one line naming the option, before PyTorch is imported. Errors about the user's input
(argument errors and :class:`prodvision.errors.ProdvisionError`) print one line and exit with status 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_args import COUNT, FRACTION, INPUT_SIZE, POSITIVE, SEED, Parser, number, product_pattern
from .config import (FINETUNE_MODES, MAX_INPUT_SIZE, MIN_INPUT_SIZE, OPTIMIZERS, PHOTO_SIZE, SCHEDULES, WISE_DEFAULT,
                     AugmentConfig, TrainConfig, default_batch_size, finetune_defaults)
from .errors import ConfigError, ProdvisionError

__all__ = ["main", "build_parser"]

_T = TrainConfig()
_FT, _LS = finetune_defaults("full"), finetune_defaults("last_stage")


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show every default in --help and keep the description's line breaks. A flag whose default is computed
    (None here) states its default in its own help text, so "(default: None)" is not appended to it."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# ---------------------------------------------------------------------------------------------- data
def _cmd_data_scan(args) -> int:
    from .config import ImageLimits
    from .data import scan_folder

    report = scan_folder(args.dir, limits=ImageLimits(max_pixels=args.max_pixels), progress=not args.json)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        if args.verbose:
            for p in report.ok:
                print(f"ok       {p}")
        for s in report.refused:
            print(f"refused  {s.path}: {s.reason} [{s.code}]")
        print("summary: " + ", ".join(f"{k}={v}" for k, v in report.counts.items()))
        _print_catalog_groups(args.dir, args.group_by)
    return 1 if (args.strict and report.refused) else 0


def _print_catalog_groups(folder: str, group_by: str | None) -> None:
    """Per class: images and product groups, as train will split them; and a warning when names look like several
    shots of one product but no groups are declared. Silent for a folder that is not a catalog of class folders."""
    from collections import Counter

    from .data import load_dataset, shot_pattern_hint
    from .errors import DataError

    try:
        src = load_dataset(folder, group_by=group_by)
    except DataError as e:  # not a catalog of class folders (scan checks any folder of images)
        print(f"groups: not computed ({e})")
        return
    g = src.grouping()
    targets = src.pool.targets
    n_img, n_grp = Counter(targets), Counter(t for t, _ in {(targets[i], gid) for i, gid in enumerate(g.ids)})
    print("classes: " + ", ".join(f"{c} {n_img.get(i, 0)} images / {n_grp.get(i, 0)} products"
                                  for i, c in enumerate(src.classes)))
    print(f"groups: {g.summary()}")
    for i, j in g.near_duplicate_pairs[:10]:
        names = src.item_ids([i, j])
        print(f"near-duplicate  {names[0]}  ~  {names[1]}")
    hint = None if group_by else shot_pattern_hint(src.item_ids(range(len(src.pool))))
    if hint:
        print(f"warning: {hint}", file=sys.stderr)


def _cmd_data_fetch(args) -> int:
    from .data import load_fashion_mnist

    fm = load_fashion_mnist(download=args.download)
    print(f"Fashion-MNIST: {len(fm.train)} train / {len(fm.test)} test images, SHA-256 verified; from {fm.source}")
    return 0


def _report_skipped(skipped, what: str) -> None:
    for s in skipped:
        print(f"skipped  {s.path}: {s.reason} [{s.code}]", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} file(s) skipped while {what} (listed above)", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- train
def _recipe_from_args(args):
    """The recipe the flags describe. Unset flags take the dataclasses' defaults, or -- when fine-tuning pretrained
    weights -- the transfer defaults of ``prodvision.config.finetune_defaults``."""
    from .models import get_arch
    from .recipes import Recipe

    spec = get_arch(args.arch)
    size = args.size or spec.input.size
    finetune = args.finetune or ("full" if args.weights else None)
    base = finetune_defaults(finetune) if finetune else {}
    given = {k: getattr(args, k) for k in ("epochs", "lr", "optimizer", "schedule", "weight_decay",
                                            "label_smoothing", "body_lr_mult") if getattr(args, k) is not None}
    batch = args.batch_size or default_batch_size(size)
    deterministic = {"auto": None, "on": True, "off": False}[args.deterministic]
    cfg = TrainConfig(**{**base, **given, "batch_size": batch, "micro_batch": args.micro_batch, "seed": args.seed,
                         "device": args.device, "num_workers": args.num_workers, "deterministic": deterministic})
    augment = _augment(args.augment, size)
    trainable = tuple(args.trainable) if args.trainable else None
    wise = args.wise if args.wise is not None else WISE_DEFAULT if finetune == "full" else None
    if wise is not None and finetune not in ("full", "last_stage"):
        raise ConfigError(f"--wise {wise} averages fine-tuned weights with the probe's: it needs --weights and "
                          "--finetune full or last_stage")
    if wise == 1.0:
        wise = None  # the fine-tuned network as it is
    return Recipe(name=Path(args.out).name, arch=args.arch, data=args.data, size=args.size, in_chans=args.in_chans,
                  weights=args.weights, augment=augment, train=cfg, trainable=trainable, finetune=finetune,
                  labels_per_class=args.labels_per_class, val_per_class=args.val_per_class,
                  split_seed=args.split_seed, target_precision=args.target_precision, wise=wise,
                  group_by=args.group_by)


def _augment(name: str, size: int) -> AugmentConfig:
    if name == "auto":
        name = "photo" if size >= PHOTO_SIZE else "flip"
    return {"none": AugmentConfig(hflip=0.0), "flip": AugmentConfig(hflip=0.5),
            "shift": AugmentConfig(hflip=0.5, crop_padding=2),
            "photo": AugmentConfig(hflip=0.5, scale=(0.6, 1.0), fill=255)}[name]


def _cmd_train(args) -> int:
    from .recipes import prepare_data, train_recipe
    from .runtime import resolve_device

    resolve_device(args.device)  # a device that does not exist fails now, not after preparing the data
    recipe = _recipe_from_args(args)
    data = prepare_data(recipe)
    _report_skipped(data.source.skipped, "reading the data")
    t = recipe.train
    print(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
          f"{len(data.classes)} classes; input {data.input.size} px x {data.input.in_chans} channel(s)")
    groups = data.source.grouping()
    if groups is not None:
        from .data import shot_pattern_hint

        print(f"groups: {groups.summary()}")
        hint = None if recipe.group_by else shot_pattern_hint(data.source.item_ids(range(len(data.source.pool))))
        if hint:
            print(f"warning: the split may put shots of one product on both sides: {hint}", file=sys.stderr)
    print(f"recipe: {recipe.arch}" + (f" from {recipe.weights} weights, fine-tune: {recipe.finetune}"
                                      if recipe.weights else " from random weights")
          + ("; a logistic-regression head on the frozen network's features"
             if recipe.finetune == "probe" else
             f"; {t.epochs} epochs, batch {t.batch_size}, {t.optimizer} lr {t.lr:g}, {t.schedule} schedule")
          + (f"; then the weights averaged, {1 - recipe.wise:g} x probe + {recipe.wise:g} x fine-tuned (WiSE-FT)"
             if recipe.wise is not None else "")
          + f"; run folder {args.out}")
    trained = train_recipe(recipe, args.out, resume=not args.no_resume, data=data)
    _print_table(trained.history.to_frame())
    h = trained.history
    if h.wise is not None:
        print(f"kept: the WiSE-FT average of the probe and epoch {h.wise['epoch']}, val_acc={h.wise['val_acc']:.4f}; "
              f"checkpoint {h.checkpoint}")
    elif t.monitor == "epoch" or h.best_metric is None:
        print(f"kept: the last epoch ({h.best_epoch}); checkpoint {h.checkpoint}")
    else:
        print(f"best {t.monitor}={h.best_metric:.4f} at epoch {h.best_epoch}; checkpoint {h.checkpoint}")
    print(f"next: prodvision evaluate {Path(args.out) / 'best.pt'} --out {Path(args.out) / 'report'}")
    return 0


# ---------------------------------------------------------------------------------------------- evaluate
def _cmd_evaluate(args) -> int:
    from torch.utils.data import DataLoader

    from .claims import wilson_interval
    from .evaluate import classification_report_df, predict, prf, top_k_accuracy
    from .models import load_model
    from .report import display_images, heldout, write_report

    model, ck = load_model(args.checkpoint)
    held = heldout(ck, data=args.data, split=args.split, allow_overlap=args.allow_overlap)
    _report_skipped(held.skipped, "reading the data")
    if len(held.dataset) == 0:
        raise ConfigError(f"no images to evaluate in {held.description}")
    logits, y = predict(model, DataLoader(held.dataset, batch_size=args.batch_size), device=args.device,
                        progress=not args.json)
    n, right = len(y), int((logits.argmax(1) == y).sum())
    lo, hi = wilson_interval(right, n)
    summary = {"scored": held.description, "n": n, **prf(logits, y), "accuracy_95ci": [lo, hi]}
    if logits.shape[1] > 3:  # with 3 classes or fewer, top-3 is always 1
        summary["top3_accuracy"] = top_k_accuracy(logits, y, k=3)
    report = classification_report_df(logits, y, ck["classes"])
    if args.out:
        paths = write_report(args.out, logits, y, ck["classes"], images=display_images(held.dataset),
                             summary=summary)
        summary["report_files"] = {k: str(v) for k, v in paths.items()}
    if args.json:
        print(json.dumps({"summary": summary, "per_class": report.reset_index().to_dict(orient="records")}, indent=1))
        return 0
    print(f"scored {held.description}")
    _print_table(report)
    print(f"\naccuracy {summary['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, {right} of {n}), "
          f"macro F1 {summary['f1_macro']:.4f}" + (f", top-3 {summary['top3_accuracy']:.4f}" if "top3_accuracy" in summary else ""))
    if args.out:
        print("wrote " + ", ".join(str(p) for p in summary["report_files"].values()))
    return 0


def _print_table(df) -> None:
    import pandas as pd

    with pd.option_context("display.width", 140, "display.max_columns", 20, "display.precision", 4):
        print(df.to_string())


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="prodvision", description="Deep learning on product images.", formatter_class=_Help)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="datasets: fetch and check", formatter_class=_Help)
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("scan", help="check every file of an image folder the way training loads it (deletes nothing)",
                        formatter_class=_Help)
    s.add_argument("dir")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--max-pixels", type=POSITIVE, default=50_000_000, help="refuse larger images (decompression bombs)")
    s.add_argument("--strict", action="store_true", help="exit 1 if any file is refused")
    s.add_argument("--verbose", action="store_true", help="list every file that loads, not only the problems")
    s.add_argument("--group-by", type=product_pattern, default=None, metavar="REGEX",
                   help="the product-id pattern train will use (see train --help): report the product groups")
    s.set_defaults(func=_cmd_data_scan)
    f = dsub.add_parser("fetch", help="locate Fashion-MNIST (repo data/, $PRODVISION_DATA, Debian) and verify it",
                        formatter_class=_Help)
    f.add_argument("--download", action="store_true", help="download with torchvision if no local copy exists")
    f.set_defaults(func=_cmd_data_fetch)

    t = sub.add_parser("train", help="train a model into a run folder (resumes an interrupted run there)",
                       formatter_class=_Help, description=(
                           "Fine-tuning pretrained weights (--weights imagenet) starts from a linear probe's head (LP-FT)\n"
                           "and, unless you set them, uses transfer defaults: AdamW, a small learning rate, a cosine\n"
                           "schedule and a batch size that fits the input size. Frozen layers keep their BatchNorm\n"
                           "statistics. Each flag's help gives its default, and the default with --weights where it differs."))
    t.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist, cifar10, product-icons, an image folder (one sub-folder per class) or a CSV")
    t.add_argument("--arch", default="mini_resnet",
                   help="a key of prodvision.models.ARCHS, e.g. mini_resnet, resnet18, tf_efficientnet_lite0 "
                        "(an unknown name lists them all)")
    t.add_argument("--out", required=True, help="run folder: recipe.json, split.json, history.json, best.pt, last.pt")
    t.add_argument("--group-by", type=product_pattern, default=None, metavar="REGEX",
                   help="a catalog's product id: a regex searched in each file's relative path without extension (its "
                        "first group), e.g. '^(.+)_\\d+$' for tote_1.jpg, tote_2.jpg; the shots of one product never "
                        "straddle train/val/test (default: none declared; near-duplicate photos are grouped anyway)")
    t.add_argument("--weights", default=None,
                   help="imagenet, or a prodvision checkpoint to start from (default: none, random initialisation)")
    t.add_argument("--finetune", default=None, choices=FINETUNE_MODES,
                   help="with --weights: probe = linear probe on frozen features; last_stage = probe head, then the "
                        "last stage + head on cached activations; full = probe head, then everything (default)")
    for flag, key, kind, what in (("--epochs", "epochs", POSITIVE, "passes over the training set"),
                                  ("--lr", "lr", number(0, lo_open=True), "peak learning rate")):
        t.add_argument(flag, type=kind, default=None,
                       help=f"{what} (default {getattr(_T, key)}; with --weights: {_FT[key]:g} full, "
                            f"{_LS[key]:g} last_stage)")
    t.add_argument("--batch-size", type=POSITIVE, default=None,
                   help="default by input size: " + ", ".join(f"{default_batch_size(s)} at {s} px"
                                                              for s in (28, 64, 128, 224)))
    t.add_argument("--wise", type=FRACTION, default=None, metavar="ALPHA",
                   help=f"LP-FT: keep (1 - ALPHA) x the probe's weights + ALPHA x the fine-tuned ones (WiSE-FT, "
                        f"Wortsman et al. 2022); 1 = the fine-tuned network (default {WISE_DEFAULT:g} with --finetune "
                        "full, 1 with last_stage; scripts/transfer_default.py compares it with the probe)")
    t.add_argument("--micro-batch", type=POSITIVE, default=None,
                   help="process each batch in chunks of this many images (same update, less memory; BatchNorm "
                        "then normalises per chunk; default: the whole batch at once)")
    for flag, key, choices, kind in (("--optimizer", "optimizer", OPTIMIZERS, str),
                                     ("--schedule", "schedule", SCHEDULES, str),
                                     ("--weight-decay", "weight_decay", None, number(0)),
                                     ("--label-smoothing", "label_smoothing", None, number(0, 1, hi_open=True))):
        t.add_argument(flag, default=None, choices=choices, type=kind,
                       help=f"default {getattr(_T, key)}; with --weights: {_FT[key]}")
    t.add_argument("--body-lr-mult", type=number(0), default=None,
                   help=f"body lr = lr x this, discriminative LRs (default {_T.body_lr_mult})")
    t.add_argument("--size", type=INPUT_SIZE, default=None,
                   help=f"input side in px, {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} (default: the arch's; VGG needs 32)")
    t.add_argument("--in-chans", type=int, default=None, choices=[1, 3], help="input channels (default: the arch's)")
    t.add_argument("--trainable", nargs="+", default=None, metavar="MODULE",
                   help="freeze all but these: head, last_stage, or module names such as layer4 fc (default: "
                        "everything trains, or what --finetune says)")
    t.add_argument("--augment", default="auto", choices=["auto", "none", "flip", "shift", "photo"],
                   help="auto = photo (flip + random resized crop) from 96 px, else flip")
    t.add_argument("--deterministic", default="auto", choices=["auto", "on", "off"],
                   help="on: bit-identical runs and exact resume, but markedly slower at photo sizes (benchmarks/"
                        "bench_finetune.py measures it); auto: on for small images "
                        f"(< {PHOTO_SIZE} px) on CPU, off (fast) for photo-size fine-tuning and on GPU")
    t.add_argument("--labels-per-class", type=POSITIVE, default=None, help="train on this many images per class (default: all)")
    t.add_argument("--val-per-class", type=POSITIVE, default=None, help="validate on this many per class (default: all)")
    t.add_argument("--seed", type=SEED, default=0, help="initialisation, data order and augmentation")
    t.add_argument("--split-seed", type=SEED, default=0, help="the train/val/test split")
    t.add_argument("--target-precision", type=number(0, 1, lo_open=True), default=0.95,
                   help="predictions below the confidence that gives this precision on validation are 'unsure'")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--num-workers", type=COUNT, default=0, help="data-loading worker processes (0: in this process)")
    t.add_argument("--no-resume", action="store_true", help="start afresh even if the run folder has last.pt")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="score a checkpoint on held-out images, with a report", formatter_class=_Help)
    e.add_argument("checkpoint", help="a .pt checkpoint written by prodvision train (its run folder holds the split)")
    e.add_argument("--data", default=None, help="default: the data the checkpoint was trained on")
    e.add_argument("--split", default="test", choices=["test", "val", "all"],
                   help="test/val: that part of the training run's split; all: every image of --data")
    e.add_argument("--allow-overlap", action="store_true",
                   help="score images the model was trained on too (refused by default: it inflates accuracy)")
    e.add_argument("--out", default=None, metavar="DIR",
                   help="also write confusion_matrix.png, per_class.csv, top_losses.png, reliability.png, summary.json "
                        "(default: print only)")
    e.add_argument("--batch-size", type=POSITIVE, default=64, help="images per forward pass")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    e.set_defaults(func=_cmd_evaluate)

    from . import cli_deploy  # export / predict / cam / serve

    cli_deploy.register(sub, _Help)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 for an argument error, printed in one line by argparse)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or an argument error (2): argparse has printed what to print
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except ProdvisionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
