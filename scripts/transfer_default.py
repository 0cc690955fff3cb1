#!/usr/bin/env python3
"""Does ``prodvision train --weights imagenet`` with its defaults reach the linear probe on held-out images?

For each split seed, on the product-icon set at the arch's input size (224 px for EfficientNet-Lite0), this runs the
command line twice, exactly as a user would:

* ``prodvision train --data product-icons --arch tf_efficientnet_lite0 --weights imagenet --split-seed S`` (the
  defaults: LP-FT of the whole network, its last epoch averaged with the probe's weights, WiSE-FT);
* the same with ``--finetune probe`` (logistic regression on the frozen features);

and scores on each split's held-out test images (never trained on, never used to choose anything): the probe, the
default, and the fine-tuned network before the average (the run's ``last.pt``). Per-image results of all splits are
pooled; the claims print the paired differences with bootstrap intervals and fail when the default does not reach
the probe's accuracy or when its interval allows it to be more than ``--margin`` behind. An image can sit in the
test split of several seeds, so the pooled interval is somewhat too narrow.

    python scripts/transfer_default.py                       # 10 splits, ~9 min on 2 CPU cores
    python scripts/transfer_default.py --seed 1              # another training seed (the probe does not depend on it)
    python scripts/transfer_default.py --split-seeds 0 1 2   # fewer splits (wider intervals)

Writes ``transfer_default.json`` (``transfer_default_seed<N>.json`` for ``--seed N``: per-split counts, per-image
results and the claims) to the results folder (``PRODVISION_RESULTS``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from prodvision.claims import claim
from prodvision.cli import main as cli
from prodvision.evaluate import predict
from prodvision.models import load_model
from prodvision.paths import results_dir
from prodvision.recipes import load_run, prepare_data
from prodvision.results import machine_info


def correct(model: torch.nn.Module, data) -> np.ndarray:
    logits, y = predict(model, DataLoader(data, batch_size=64))
    return (logits.argmax(1) == y).astype(np.int64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split-seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--arch", default="tf_efficientnet_lite0")
    ap.add_argument("--data", default="product-icons")
    ap.add_argument("--seed", type=int, default=0, help="the training seed (prodvision train --seed)")
    ap.add_argument("--margin", type=float, default=0.02,
                    help="non-inferiority: the interval's low end must be above -margin (a fraction)")
    ap.add_argument("--runs", default=None, help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args()

    base = ["train", "--data", args.data, "--arch", args.arch, "--weights", "imagenet", "--seed", str(args.seed)]
    scored: dict[str, list[np.ndarray]] = {"probe": [], "fine-tuned": [], "default": []}
    splits, t0 = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.runs or tmp)
        for s in args.split_seeds:
            runs = {"default": root / f"default_split{s}", "probe": root / f"probe_split{s}"}
            for name, extra in (("default", []), ("probe", ["--finetune", "probe"])):
                print(f"--- split seed {s}: prodvision {' '.join(base[1:] + extra)}", flush=True)
                if cli(base + extra + ["--split-seed", str(s), "--out", str(runs[name]), "--no-resume"]) != 0:
                    raise SystemExit(f"prodvision train failed for split seed {s} ({name})")
            default = load_run(runs["default"])
            test = prepare_data(default.recipe).test
            finetuned, _ = load_model(runs["default"] / "last.pt")
            row = {"split_seed": s, "test_images": len(test)}
            for name, model in (("probe", load_run(runs["probe"]).model), ("fine-tuned", finetuned),
                                ("default", default.model)):
                c = correct(model, test)
                scored[name].append(c)
                row[name] = int(c.sum())
            splits.append(row)
            print(json.dumps(row), flush=True)
        recipe = default.recipe.to_dict()

    pooled = {k: np.concatenate(v) for k, v in scored.items()}
    n = len(pooled["probe"])
    print(f"\nheld-out test images over {len(splits)} splits: {n}")
    for k, v in pooled.items():
        print(f"  {k:10s} {int(v.sum())}/{n} = {v.mean():.1%}")
    reaches = claim("the CLI's default fine-tune reaches the linear probe's held-out accuracy",
                    pooled["default"], pooled["probe"], op=">=", on="estimate", names=("default", "probe"))
    margin = claim(f"the CLI's default fine-tune is no more than {args.margin:.0%} behind the probe (interval)",
                   pooled["default"], pooled["probe"], op=">", value=-args.margin, names=("default", "probe"))
    # reported, not asserted: what the weight average adds to the fine-tuned network, and plain LP-FT vs the probe
    wise = claim("averaging with the probe's weights does not hurt the fine-tuned network", pooled["default"],
                 pooled["fine-tuned"], op=">=", on="estimate", names=("default", "fine-tuned"), check=False)
    ft = claim("plain LP-FT (last epoch, no average) reaches the probe", pooled["fine-tuned"], pooled["probe"],
               op=">=", on="estimate", names=("fine-tuned", "probe"), check=False)
    out = results_dir() / ("transfer_default.json" if args.seed == 0 else f"transfer_default_seed{args.seed}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join(["prodvision", *base]), "recipe": recipe, "splits": splits,
        "pooled": {k: {"correct": int(v.sum()), "n": n} for k, v in pooled.items()},
        "claims": [asdict(c) for c in (reaches, margin, wise, ft)], "wall_s": round(time.time() - t0, 1),
        "per_image": {k: "".join(map(str, v)) for k, v in pooled.items()},  # 1 = right, split after split
        "machine": machine_info()}, indent=1, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
