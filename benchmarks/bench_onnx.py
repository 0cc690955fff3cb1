"""ONNX Runtime vs torch eager throughput on the same model and batch (target: ORT >= 1.25x eager).

Both run on the CPU with the same thread count, on the same random input, after a warm-up; the number is the
median over ``--repeats`` calls. Random weights (speed does not depend on their values).

    python benchmarks/bench_onnx.py                      # resnet18 @ 224 px and mini_resnet, batch 32
    python benchmarks/bench_onnx.py --quick              # smoke setting: small sizes, few repeats (< 30 s)
    python benchmarks/bench_onnx.py --threads 4 --batch-size 64
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from prodvision.deployed import DeployedModel, load_deployed
from prodvision.export import export_onnx, measure_latency
from prodvision.models import create_model

#: name -> (arch, model kwargs, default size, quick size)
MODELS = {"resnet18": ("resnet18", {}, 224, 96), "mini_resnet": ("mini_resnet", {}, 64, 32)}


def eager_runner(model: torch.nn.Module, meta: dict) -> DeployedModel:
    """The eager model behind the same ``.logits`` interface as an exported one."""
    model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return DeployedModel(Path("<eager>"), "eager", meta, run, module=model)


def bench(name: str, *, size: int, batch_size: int, repeats: int, threads: int | None) -> dict:
    arch, kwargs, _, _ = MODELS[name]
    model = create_model(arch, 10, in_chans=3, **kwargs).eval()
    meta = {"classes": [str(i) for i in range(10)], "in_chans": 3, "arch": arch,
            "input": {"size": size, "in_chans": 3, "mean": [0.5] * 3, "std": [0.5] * 3,
                      "interpolation": "bilinear", "crop_pct": 1.0}}
    with tempfile.TemporaryDirectory() as tmp:
        ort_model = load_deployed(export_onnx(model, meta, Path(tmp) / f"{name}.onnx"), threads=threads)
    shape = (3, size, size)
    t_eager = measure_latency(eager_runner(model, meta), shape, batch_sizes=(batch_size,), repeats=repeats)
    t_ort = measure_latency(ort_model, shape, batch_sizes=(batch_size,), repeats=repeats)
    eager_ips, ort_ips = batch_size / t_eager[batch_size], batch_size / t_ort[batch_size]
    return {"model": name, "size": size, "batch": batch_size, "eager_img_s": eager_ips, "ort_img_s": ort_ips,
            "ratio": ort_ips / eager_ips}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch and ORT intra-op threads (default: library's)")
    ap.add_argument("--quick", action="store_true", help="smoke setting: small inputs, batch 8, 2 repeats, 1 thread")
    args = ap.parse_args(argv)
    if args.quick and args.threads is None:
        args.threads = 1  # single-threaded smoke run: OpenMP spinning on a shared machine distorts 2-thread timings
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # a script, not the library: a global setting is fine here
    batch, repeats = (8, 2) if args.quick else (args.batch_size, args.repeats)
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, ORT threads "
          f"{args.threads or 'default'}{' (--quick: smoke setting, not a measurement)' if args.quick else ''}")
    rows = []
    for name in args.models:
        size = MODELS[name][3] if args.quick else MODELS[name][2]
        r = bench(name, size=size, batch_size=batch, repeats=repeats, threads=args.threads)
        rows.append(r)
        print(f"{r['model']:<12s} {r['size']:>3d}px batch {r['batch']:>3d}: eager {r['eager_img_s']:8.1f} img/s, "
              f"onnxruntime {r['ort_img_s']:8.1f} img/s, ratio {r['ratio']:.2f}x")
    print("SUMMARY onnxruntime/eager throughput: " + ", ".join(
        f"{r['model']} {r['ratio']:.2f}x ({'meets' if r['ratio'] >= 1.25 else 'below'} the 1.25x target)"
        for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
