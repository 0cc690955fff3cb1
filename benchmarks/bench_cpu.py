"""Which CPU is this, and how well does the course use it? One printout to compare two machines (issue "fast on every
CPU the course meets").

The course's cost depends several-fold on the CPU kind it lands on (AMD EPYC, Xeon with AVX-512, Xeon with AMX), so
every figure here is also given as a ratio to the machine's own fp32 matmul rate (sgemm), which makes printouts from
two machines comparable:

* the CPU model, the ISA flags that decide which kernels run (AVX2, AVX-512, AVX512-BF16/FP16, AMX), PyTorch's
  dispatch capability, the oneDNN / MKL builds and the thread count;
* sgemm GFLOP/s (2048 x 2048, fp32, this process's threads);
* conv GFLOP/s (forward + backward) for the course's MiniResNet layer shapes (28 px, batch 256), NCHW vs NHWC and
  deterministic algorithms on vs off;
* training images/s of the course's main MiniResNet (widths 24/48/96, 28 px, batch 256, SGD; NCHW, deterministic:
  how ``fit`` runs it on CPU) and of EfficientNet-Lite0 at 128 and 224 px (batch 32, NHWC, not deterministic: the
  fine-tuning fast path), each also per GFLOP/s of sgemm.

The issue's target reads off the last column: on every kind, MiniResNet and Lite0 images/s per sgemm GFLOP/s within
0.8x of the AMD EPYC kind's. Paste the whole printout into a report from another machine.

    python benchmarks/bench_cpu.py            # ~2 min on 2 cores
    python benchmarks/bench_cpu.py --quick    # fewer repetitions (noisier)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

def cpu_facts() -> dict:
    """CPU model and kind (:func:`prodvision.results.cpu_kind`), and what PyTorch was built with and dispatches to."""
    from prodvision.results import cpu_kind

    kind = cpu_kind()
    return {"cpu": kind["cpu"], "family/model": kind["family_model"], "flags": kind["isa"] or "none of the ISA flags",
            "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
            "onednn": str(torch.backends.mkldnn.is_available()) + (
                f" v{torch._C._onednn_version()}" if hasattr(torch._C, "_onednn_version") else ""),
            "mkl": str(torch.backends.mkl.is_available()), "threads": torch.get_num_threads()}


def best_seconds(fn, reps: int) -> float:
    fn()  # warm-up: kernel selection, allocation
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def sgemm_gflops(reps: int, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / best_seconds(lambda: a @ b, reps) / 1e9


def conv_gflops(c: int, hw: int, batch: int, *, channels_last: bool, deterministic: bool, reps: int) -> float:
    """Forward + backward (input and weight gradients) of a 3x3 conv c -> c at hw x hw: 3 x the forward FLOPs."""
    x = torch.randn(batch, c, hw, hw, requires_grad=True)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        conv = conv.to(memory_format=torch.channels_last)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        sec = best_seconds(lambda: conv(x).sum().backward(), reps)
    finally:
        torch.use_deterministic_algorithms(prev)
    return 3 * 2 * batch * c * c * 9 * hw * hw / sec / 1e9


def train_images_per_s(model: nn.Module, size: int, in_chans: int, batch: int, steps: int, *, channels_last: bool,
                       deterministic: bool) -> float:
    """Images/s of forward, cross-entropy, backward and an SGD step, after one warm-up step."""
    x, y = torch.randn(batch, in_chans, size, size), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    try:
        step()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        return batch * steps / (time.perf_counter() - t)
    finally:
        torch.use_deterministic_algorithms(prev)


KERNELS = r"""
import torch, torch.nn as nn
torch.manual_seed(0)
for cl in (False, True):
    x = torch.randn(256, 24, 28, 28, requires_grad=True)
    conv = nn.Conv2d(24, 24, 3, padding=1, bias=False)
    if cl:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        conv = conv.to(memory_format=torch.channels_last)
    conv(x).sum().backward()
"""


def onednn_kernels() -> list[str]:
    """The oneDNN implementations chosen for the main model's first conv (forward and backward, NCHW and NHWC), from
    ``ONEDNN_VERBOSE=1`` in a fresh process: "primitive: implementation" lines, e.g. ``convolution:
    brg_conv_fwd:avx512_core``. Empty when PyTorch ran the convolution without oneDNN."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}
    out = subprocess.run([sys.executable, "-c", KERNELS], env=env, capture_output=True, text=True, timeout=300).stdout
    seen = []
    for line in out.splitlines():
        parts = line.split(",")
        if len(parts) > 6 and parts[0].startswith("onednn_verbose") and "exec" in parts[:5]:
            i = parts.index("exec")
            kind, impl, prop = parts[i + 2], parts[i + 3], parts[i + 4]
            entry = f"{kind} ({prop}): {impl}"
            if entry not in seen:
                seen.append(entry)
    return seen


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and steps (noisier numbers)")
    args = ap.parse_args(argv)
    reps, steps = (2, 3) if args.quick else (5, 10)
    torch.manual_seed(0)
    from prodvision.models import create_model

    facts = cpu_facts()
    for k, v in facts.items():
        print(f"{k:>12}: {v}")
    peak = sgemm_gflops(reps)
    print(f"{'sgemm':>12}: {peak:.0f} GFLOP/s (2048x2048 fp32, {facts['threads']} threads)")
    kernels = onednn_kernels()
    print(f"{'oneDNN':>12}: " + ("; ".join(kernels) if kernels else "no oneDNN primitive ran for the course's conv "
                                 "(PyTorch's own kernels)") + "\n")

    print("conv 3x3 forward+backward, batch 256 (the main MiniResNet's layer shapes): GFLOP/s and / sgemm")
    print(f"{'shape':>16} {'NCHW det':>10} {'NCHW':>10} {'NHWC det':>10} {'NHWC':>10}")
    for c, hw in ((24, 28), (24, 14), (48, 7), (96, 4)):
        row = [conv_gflops(c, hw, 256, channels_last=cl, deterministic=det, reps=reps)
               for cl in (False, True) for det in (True, False)]
        print(f"{f'{c}ch @ {hw}px':>16} " + " ".join(f"{g:6.1f} {g / peak:.2f}" for g in row))

    print("\ntraining images/s, and per sgemm GFLOP/s (compare this column across machines)")
    cases = [("MiniResNet 24/48/96, 28 px, b256, NCHW det (the course's fit)",
              lambda: create_model("mini_resnet", 10, in_chans=1, widths=(24, 48, 96)), 28, 1, 256, False, True),
             ("MiniResNet 24/48/96, 28 px, b256, NHWC", lambda: create_model("mini_resnet", 10, in_chans=1,
                                                                            widths=(24, 48, 96)), 28, 1, 256, True,
              False),
             ("Lite0, 128 px, b32, NHWC (fine-tuning fast path)",
              lambda: create_model("tf_efficientnet_lite0", 10), 128, 3, 32, True, False),
             ("Lite0, 224 px, b32, NHWC", lambda: create_model("tf_efficientnet_lite0", 10), 224, 3, 32, True, False)]
    for name, build, size, chans, batch, cl, det in cases:
        rate = train_images_per_s(build(), size, chans, batch, steps, channels_last=cl, deterministic=det)
        print(f"  {name:<62} {rate:8.0f} img/s  {rate / peak:6.2f} img/s per GFLOP/s")


if __name__ == "__main__":
    main()
