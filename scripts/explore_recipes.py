"""Compare candidate recipes for the course's main Fashion-MNIST model: accuracy per CPU second, on validation only.

    python scripts/explore_recipes.py 8:24,48,96 8:16,32,64:2,2,2 5:32,64,128
    python scripts/explore_recipes.py 8:24,48,96 --nchw          # the same recipe in the NCHW memory format

Each candidate is ``EPOCHS:WIDTHS[:DEPTHS]``; everything else (data, split, flip augmentation, one-cycle SGD, batch
size, seed, memory format) is the main recipe of ``prodvision.course``. Each one is trained through the recipe cache
(``$PRODVISION_CACHE``; a second call only evaluates) and scored on the 6,000 validation images, plain and with flip
test-time augmentation. The test set is never touched: recipes are chosen here, and notebook 03 / 07 then touch the
test set once. Results are appended to ``runs/explore_recipes.jsonl``.

Measured on the 2-core CPU machine with ``--nchw`` (before the main recipe moved to NHWC; one run each), and the
chosen recipe again in NHWC:

=========================  =======  =======  =================
candidate                  train s  val acc  val acc, flip TTA
=========================  =======  =======  =================
5:32,64,128 --nchw         ~480     0.9312   0.9323
5:24,48,96 --nchw          328      0.9277   0.9308
8:16,32,64 --nchw          326      0.9257   0.9325
8:16,32,64:2,2,2 --nchw    483      0.9328   0.9375
8:24,48,96 --nchw          522      0.9355   0.9380
8:24,48,96 (main)          441      0.9362   0.9372
=========================  =======  =======  =================

NHWC and NCHW compute the same model with different rounding, so the two 8:24,48,96 rows differ by noise.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from torch.utils.data import DataLoader

from prodvision import course
from prodvision.evaluate import accuracy, predict
from prodvision.paths import project_dir
from prodvision.recipes import get_or_train, prepare_data


def parse_candidate(text: str) -> tuple[int, tuple[int, ...], tuple[int, ...] | None]:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"candidate {text!r}: expected EPOCHS:WIDTHS[:DEPTHS], e.g. 8:24,48,96")
    try:
        ints = [tuple(int(v) for v in p.split(",")) for p in parts[1:]]
        epochs = int(parts[0])
    except ValueError:
        raise SystemExit(f"candidate {text!r}: epochs, widths and depths must be integers") from None
    return epochs, ints[0], ints[1] if len(ints) > 1 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("candidates", nargs="+", help="EPOCHS:WIDTHS[:DEPTHS], e.g. 8:24,48,96")
    ap.add_argument("--nchw", action="store_true", help="train in NCHW instead of the main recipe's NHWC")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out = project_dir() / "runs" / "explore_recipes.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    for text in args.candidates:
        epochs, widths, depths = parse_candidate(text)
        r = course.default_recipe("main", epochs=epochs, widths=widths, device=args.device)
        if depths:
            r = replace(r, model_kwargs={**r.model_kwargs, "depths": depths})
        if args.nchw:
            r = replace(r, train=replace(r.train, channels_last=False))
        t = time.perf_counter()
        trained = get_or_train(r)
        train_s = time.perf_counter() - t
        val = DataLoader(prepare_data(r).val, batch_size=1000)
        plain = accuracy(*predict(trained.model, val, device=args.device))
        tta = accuracy(*predict(trained.model, val, tta=[lambda x: x, lambda x: x.flip(-1)], device=args.device))
        row = {"candidate": text, "nchw": args.nchw, "cached": trained.cached, "train_s": round(train_s),
               "val_acc": round(plain, 4), "val_acc_flip_tta": round(tta, 4)}
        print(json.dumps(row), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
