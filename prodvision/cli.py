"""The ``prodvision`` command line: data checks, training, evaluation (and, from ``cli_deploy``, export/predict/serve).

Examples::

    prodvision data fetch                      # locate (or download) Fashion-MNIST and verify its checksums
    prodvision data scan data/product-icons    # check every file the way training loads it
    prodvision train --data fashion-mnist --arch mini_resnet --epochs 5 --out runs/mini_resnet
    prodvision evaluate runs/mini_resnet/best.pt --data fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


# ---------------------------------------------------------------------------------------------- data
def _cmd_data_scan(args) -> int:
    from .data import ImageLimits, scan_folder

    report = scan_folder(args.dir, limits=ImageLimits(max_pixels=args.max_pixels), progress=not args.json)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        for p in report.ok:
            print(f"ok       {p}")
        for s in report.refused:
            print(f"refused  {s.path}: {s.reason} [{s.code}]")
        print("summary: " + ", ".join(f"{k}={v}" for k, v in report.counts.items()))
    return 1 if (args.strict and report.refused) else 0


def _cmd_data_fetch(args) -> int:
    from .data import load_fashion_mnist

    fm = load_fashion_mnist(download=args.download)
    print(f"Fashion-MNIST: {len(fm.train)} train / {len(fm.test)} test images, SHA-256 verified; from {fm.source}")
    return 0


# ---------------------------------------------------------------------------------------------- train / evaluate
def _recipe_from_args(args):
    from .recipes import Recipe
    from .train import TrainConfig
    from .transforms import AugmentConfig

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      schedule=args.schedule, label_smoothing=args.label_smoothing, seed=args.seed, device=args.device,
                      num_workers=args.num_workers, weight_decay=args.weight_decay)
    aug = AugmentConfig(hflip=0.5 if args.augment else 0.0, crop_padding=2 if args.augment else 0)
    return Recipe(name=Path(args.out).name, arch=args.arch, data=args.data, size=args.size, in_chans=args.in_chans,
                  weights=args.weights, augment=aug, train=cfg)


def _cmd_train(args) -> int:
    from .models import create_model, freeze
    from .recipes import prepare_data
    from .train import fit

    recipe = _recipe_from_args(args)
    data = prepare_data(recipe)
    print(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test, {len(data.classes)} classes")
    model = create_model(recipe.arch, len(data.classes), weights=recipe.weights, in_chans=data.input.in_chans)
    if args.trainable:
        freeze(model, args.trainable)
    meta = {"arch": recipe.arch, "model_kwargs": {}, "in_chans": data.input.in_chans, "input": data.input.to_dict(),
            "recipe": json.dumps(recipe.to_dict(), default=str)}
    hist = fit(model, data.train, data.val, recipe.train, out_dir=args.out, resume=not args.no_resume,
               classes=data.classes, meta=meta)
    _print_table(hist.to_frame())
    print(f"best {recipe.train.monitor}={hist.best_metric:.4f} at epoch {hist.best_epoch}; checkpoint {hist.checkpoint}")
    return 0


def load_model(checkpoint: str | Path):
    """Rebuild a model from a prodvision checkpoint: ``(model, checkpoint_dict)``."""
    from .checkpoint import load_checkpoint
    from .models import create_model

    ck = load_checkpoint(checkpoint)
    model = create_model(ck["arch"], len(ck["classes"]), in_chans=ck.get("in_chans"), **ck.get("model_kwargs", {}))
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def _eval_dataset(data: str, classes: list[str], ispec):
    from .data import CatalogDataset, load_fashion_mnist, load_product_icons
    from .transforms import eval_transform

    et = eval_transform(size=ispec.size, in_chans=ispec.in_chans, mean=ispec.mean, std=ispec.std,
                        interpolation=ispec.interpolation)
    if data == "fashion-mnist":
        return load_fashion_mnist(test_transform=et).test
    if data == "product-icons":
        ds = load_product_icons(transform=et)
    elif data.endswith(".csv"):
        ds = CatalogDataset.from_csv(data, transform=et, classes=classes)
    else:
        ds = CatalogDataset.from_folder(data, transform=et, classes=classes)
    for s in ds.skipped:
        print(f"skipped  {s.path}: {s.reason} [{s.code}]", file=sys.stderr)
    return ds


def _cmd_evaluate(args) -> int:
    from torch.utils.data import DataLoader

    from .evaluate import classification_report_df, predict, prf, top_k_accuracy
    from .transforms import InputSpec

    model, ck = load_model(args.checkpoint)
    ispec = InputSpec(**ck["input"])
    ds = _eval_dataset(args.data, list(ck["classes"]), ispec)
    if list(ds.classes) != list(ck["classes"]):
        raise SystemExit(f"error: the data's classes {ds.classes} differ from the model's {ck['classes']}")
    logits, y = predict(model, DataLoader(ds, batch_size=args.batch_size), device=args.device, progress=True)
    summary = {**prf(logits, y), "n": int(len(y))}
    if logits.shape[1] > 3:  # with 3 classes or fewer, top-3 is always 1
        summary["top3_accuracy"] = top_k_accuracy(logits, y, k=3)
    report = classification_report_df(logits, y, ck["classes"])
    if args.json:
        print(json.dumps({"summary": summary, "per_class": report.reset_index().to_dict(orient="records")}, indent=1))
    else:
        _print_table(report)
        print("\n" + "\n".join(f"{k:>20s}  {v:.4f}" if isinstance(v, float) else f"{k:>20s}  {v}"
                               for k, v in summary.items()))
    return 0


def _print_table(df) -> None:
    import pandas as pd

    with pd.option_context("display.width", 140, "display.max_columns", 20, "display.precision", 4):
        print(df.to_string())


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .models import ARCHS

    p = argparse.ArgumentParser(prog="prodvision", description="Deep learning on product images.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="datasets: fetch and check")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("scan", help="check every file of an image folder the way training loads it (deletes nothing)")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--max-pixels", type=int, default=50_000_000, help="refuse larger images (decompression bombs)")
    s.add_argument("--strict", action="store_true", help="exit 1 if any file is refused")
    s.set_defaults(func=_cmd_data_scan)
    f = dsub.add_parser("fetch", help="locate Fashion-MNIST (repo data/, $PRODVISION_DATA, Debian) and verify it")
    f.add_argument("--download", action="store_true", help="download with torchvision if no local copy exists")
    f.set_defaults(func=_cmd_data_fetch)

    t = sub.add_parser("train", help="train a model")
    t.add_argument("--data", default="fashion-mnist", help="fashion-mnist, product-icons, an image folder or a CSV")
    t.add_argument("--arch", default="mini_resnet", choices=sorted(ARCHS))
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--out", required=True, help="run folder: last.pt, best.pt (resumes if last.pt exists)")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    t.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine", "cosine_restarts", "constant"])
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--size", type=int, default=None, help="input side in px (default: the arch's)")
    t.add_argument("--in-chans", type=int, default=None, choices=[1, 3])
    t.add_argument("--weights", default=None, help="imagenet, or a prodvision checkpoint to start from")
    t.add_argument("--trainable", nargs="*", default=None, help="freeze all but these modules (e.g. fc layer4)")
    t.add_argument("--augment", action="store_true", help="random flip + crop")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="ignore an existing last.pt")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data", default="fashion-mnist", help="fashion-mnist (test set), product-icons, a folder or CSV")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_evaluate)

    from . import cli_deploy  # export / predict / cam / serve

    cli_deploy.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DatasetNotFoundError, ImageLoadError
    from .models import PretrainedWeightsUnavailable

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DatasetNotFoundError, PretrainedWeightsUnavailable, CheckpointError, ImageLoadError,
            NotADirectoryError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
