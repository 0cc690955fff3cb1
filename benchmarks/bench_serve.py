"""HTTP overhead of ``POST /predict`` vs the bare model call, and a short bounded concurrent load.

1. Latency: p50/p95 over ``--requests`` sequential requests of one real product icon, against (a) the bare ONNX
   Runtime call on the preprocessed tensor and (b) the in-process pipeline (decode + preprocess + model).
   Overhead = p50(HTTP) / p50(bare) - 1; target <= 20% (meaningful for a model whose call dominates, e.g. resnet18).
2. Load: ``--clients`` concurrent httpx clients in a *second process* send ``--load-requests`` requests in at most
   ``--load-seconds``; checks that none failed and reports the server's RSS growth (psutil).
3. Huge uploads: ``--huge`` (16) concurrent uploads of a 40-Mpx solid-colour PNG (~125 KB on the wire, 160 MB
   decoded), against a fresh server without a decode budget (``decode_budget_mb`` = 1 TB) and one with the default
   budget; reports each server's peak RSS (VmHWM) at start and after the burst, and requests/s. Linux only.

    python benchmarks/bench_serve.py                  # resnet18 (random weights) @ 224 px, 200 requests
    python benchmarks/bench_serve.py --quick          # smoke setting: mini_resnet @ 32 px, few requests (< 30 s)
    python benchmarks/bench_serve.py --model runs/icons/best.pt
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _client(url: str, image: str, clients: int, requests: int, seconds: float) -> None:
    """Load generator (runs in its own process): prints one JSON line with status counts and errors."""
    import threading

    import httpx

    data = Path(image).read_bytes()
    deadline = time.monotonic() + seconds
    counts: dict[str, int] = {}
    lock = threading.Lock()
    todo = iter(range(requests))

    def worker() -> None:
        with httpx.Client(timeout=30) as c:
            while time.monotonic() < deadline:
                with lock:
                    if next(todo, None) is None:
                        return
                try:
                    r = c.post(f"{url}/predict", files={"files": ("icon.png", data, "image/png")})
                    key = str(r.status_code) if r.status_code != 200 or "top_k" in r.json()["results"][0] else "bad"
                except httpx.HTTPError as e:
                    key = type(e).__name__
                with lock:
                    counts[key] = counts.get(key, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"counts": counts, "seconds": time.monotonic() - t0}))


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of ``pid`` in bytes (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def _huge_burst(ck: Path, cfg, n: int, log: Path) -> dict:
    """``n`` concurrent uploads of a 40-Mpx PNG to a fresh server: peak RSS at start and after, status counts, time."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from PIL import Image

    from prodvision.serve import serving

    buf = io.BytesIO()
    Image.new("RGB", (8000, 5000), (200, 60, 40)).save(buf, "PNG", compress_level=9)
    data = buf.getvalue()
    with serving(ck, config=cfg, log_path=log) as (url, proc):
        start = _vm_hwm(proc.pid)

        def post(i: int) -> str:
            try:
                return str(httpx.post(f"{url}/predict", files={"files": (f"huge{i}.png", data, "image/png")},
                                      timeout=600).status_code)
            except httpx.HTTPError as e:
                return type(e).__name__

        t0 = time.monotonic()
        with ThreadPoolExecutor(n) as pool:
            codes = list(pool.map(post, range(n)))
        seconds = time.monotonic() - t0
        peak = _vm_hwm(proc.pid)
    return {"start": start, "peak": peak, "seconds": seconds, "counts": {c: codes.count(c) for c in sorted(set(codes))},
            "wire_bytes": len(data)}


def _checkpoint(arch: str, size: int, path: Path) -> Path:
    from prodvision.checkpoint import save_checkpoint
    from prodvision.models import create_model
    from prodvision.transforms import InputSpec

    m = create_model(arch, 7, in_chans=3)
    spec = InputSpec(size=size, in_chans=3)
    return save_checkpoint({"model": m.state_dict(), "classes": [f"c{i}" for i in range(7)], "arch": arch,
                            "model_kwargs": {}, "in_chans": 3, "input": spec.to_dict(), "config": {},
                            "metrics": {}}, path)


def _pcts(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 95) * 1e3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a checkpoint .pt (default: resnet18 with random weights)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--load-requests", type=int, default=400)
    ap.add_argument("--load-seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads, server and bare call alike")
    ap.add_argument("--huge", type=int, default=16, help="concurrent 40-Mpx PNG uploads (0 = skip that part)")
    ap.add_argument("--quick", action="store_true", help="smoke setting: tiny model, 20 requests, 40 under load")
    ap.add_argument("--client", nargs=5, metavar=("URL", "IMAGE", "CLIENTS", "N", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        url, image, clients, n, seconds = args.client
        _client(url, image, int(clients), int(n), float(seconds))
        return 0

    import httpx
    import psutil

    from prodvision.data import product_icons_dir
    from prodvision.export import export_onnx
    from prodvision.deployed import load_deployed
    from prodvision.predict import predict_images
    from prodvision.serve import ServeConfig, serving

    if args.quick:
        args.requests, args.load_requests, args.load_seconds = 20, 40, 10.0
        args.threads = args.threads or 1
    image = sorted((product_icons_dir() / "fruit").glob("emoji_*.png"))[0]
    data = image.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(args.model) if args.model else _checkpoint(
            "mini_resnet" if args.quick else "resnet18", 32 if args.quick else 224, Path(tmp) / "bench.pt")
        eager = load_deployed(ck)
        bare = load_deployed(export_onnx(eager.module, eager.meta, Path(tmp) / "bare.onnx"), threads=args.threads)
        x = bare.preprocess(data)[None]  # (1, C, S, S)
        cfg = ServeConfig(threads=args.threads, max_files=args.clients + 1)
        with serving(ck, config=cfg, log_path=Path(tmp) / "serve.log") as (url, proc):
            t_bare, t_pipe, t_http = [], [], []
            with httpx.Client(timeout=30) as c:
                for _ in range(3):  # warm-up: connection, allocator, ORT arenas
                    c.post(f"{url}/predict", files={"files": ("icon.png", data, "image/png")})
                    bare.logits(x)
                for _ in range(args.requests):  # interleaved, so background load hits all three alike
                    t0 = time.perf_counter()
                    bare.logits(x)
                    t1 = time.perf_counter()
                    predict_images(bare, [data], names=["icon.png"])
                    t2 = time.perf_counter()
                    r = c.post(f"{url}/predict", files={"files": ("icon.png", data, "image/png")})
                    t3 = time.perf_counter()
                    if r.status_code != 200:
                        raise SystemExit(f"error: /predict answered {r.status_code}: {r.text[:300]}")
                    t_bare.append(t1 - t0)
                    t_pipe.append(t2 - t1)
                    t_http.append(t3 - t2)
            rss0 = psutil.Process(proc.pid).memory_info().rss
            load = subprocess.run([sys.executable, __file__, "--client", url, str(image), str(args.clients),
                                   str(args.load_requests), str(args.load_seconds)],
                                  capture_output=True, text=True, timeout=args.load_seconds + 60)
            rss1 = psutil.Process(proc.pid).memory_info().rss
        if load.returncode != 0:
            raise SystemExit(f"error: the load client failed:\n{load.stderr[-2000:]}")
        res = json.loads(load.stdout.strip().splitlines()[-1])
        huge = {}
        if args.huge > 0:
            for name, budget in [("no budget", 2.0**20), ("budget", ServeConfig().decode_budget_mb)]:
                huge[name] = _huge_burst(ck, ServeConfig(threads=args.threads, max_pixels=50_000_000,
                                                         max_files=args.clients + 1, decode_budget_mb=budget),
                                         args.huge, Path(tmp) / f"huge-{budget:g}.log")
    (b50, b95), (p50, p95), (h50, h95) = _pcts(t_bare), _pcts(t_pipe), _pcts(t_http)
    ok = res["counts"].get("200", 0)
    errors = sum(v for k, v in res["counts"].items() if k != "200")
    print(f"model {ck.name if args.model else eager.meta['arch']} @ {eager.input_spec.size}px, ORT threads "
          f"{args.threads or 'default'}{' (--quick: smoke setting, not a measurement)' if args.quick else ''}")
    print(f"latency ms  p50 / p95: bare model {b50:.2f} / {b95:.2f}, in-process pipeline {p50:.2f} / {p95:.2f}, "
          f"HTTP /predict {h50:.2f} / {h95:.2f}  ({args.requests} requests)")
    print(f"load: {args.clients} clients, {ok} ok + {errors} failed {res['counts']} in {res['seconds']:.1f} s "
          f"({ok / max(res['seconds'], 1e-9):.1f} req/s); server RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MB")
    gb = 2.0**30
    for name, h in huge.items():
        budget = "off (1 TB)" if name == "no budget" else f"{ServeConfig().decode_budget_mb:g} MB"
        print(f"huge uploads, decode budget {budget}: {args.huge} concurrent 40-Mpx PNGs "
              f"({h['wire_bytes'] / 1e3:.0f} KB each) -> {h['counts']} in {h['seconds']:.1f} s "
              f"({args.huge / h['seconds']:.2f} req/s); peak RSS "
              f"{h['start'] / gb:.2f} GB at start -> {h['peak'] / gb:.2f} GB")
    huge_failed = sum(v for h in huge.values() for k, v in h["counts"].items() if not k.startswith(("2", "4")))
    print(f"SUMMARY HTTP overhead p50 {100 * (h50 / b50 - 1):.0f}% p95 {100 * (h95 / b95 - 1):.0f}% over the bare "
          f"model (target <= 20%), pipeline-only p50 {100 * (p50 / b50 - 1):.0f}%; load errors {errors}; "
          f"RSS growth {(rss1 - rss0) / 2**20:+.1f} MB")
    if huge:
        off, on = huge["no budget"], huge["budget"]
        print(f"SUMMARY huge uploads: peak RSS {off['peak'] / gb:.2f} GB without the decode budget, "
              f"{on['peak'] / gb:.2f} GB with it ({off['peak'] / on['peak']:.1f}x less; target <= 1.5 GB); "
              f"{args.huge / off['seconds']:.2f} vs {args.huge / on['seconds']:.2f} req/s; 5xx/failed {huge_failed}")
    return 1 if errors or huge_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
