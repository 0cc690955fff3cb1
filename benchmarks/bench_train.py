"""Training-engine performance, as ratios measured in one run (issue: models and training engine).

1. ``fit`` overhead: images/s of ``fit`` vs a bare PyTorch loop, same model / batch / data.     target >= 0.95
2. achieved training GFLOP/s of resnet18 at 64 px vs an sgemm peak measured here.                target >= 0.60
3. linear probe on cached features vs recomputing the features every epoch.                     target >= 10x
4. data loading vs training: loader images/s / training images/s at the notebook settings.      target >= 5x

    python benchmarks/bench_train.py            # full
    python benchmarks/bench_train.py --quick    # a smoke run (numbers not meaningful)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader


def sgemm_peak(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def bare_loop(model, loader, epochs: int, lr: float, channels_last: bool) -> float:
    """The reference: the plainest correct loop over the same loader, in the same memory format as fit (img/s)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    n, t = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(y)
    return n / (time.perf_counter() - t)


def fit_overhead(quick: bool) -> float:
    from prodvision.models import create_model
    from prodvision.recipes import prepare_data
    from prodvision.course import default_recipe
    from prodvision.runtime import resolve_device, resolve_modes
    from prodvision.train import TrainConfig, fit, make_loader

    r = default_recipe("main")
    data = prepare_data(r)
    n = 2560 if quick else 25600
    train = data.train.subset(np.arange(n), transform=data.train.transform)
    cfg = TrainConfig(**{**r.train.to_dict(), "epochs": 1, "label_smoothing": 0.1})
    results = {"bare": [], "fit": []}
    _, channels_last = resolve_modes(cfg, resolve_device(cfg.device))  # fit's memory format: the bare loop matches it
    for rep in range(1 if quick else 2):  # alternate to spread machine noise over both
        torch.manual_seed(0)
        model = create_model("mini_resnet", 10, **r.model_kwargs)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        loader = make_loader(train, batch_size=cfg.batch_size, shuffle=True, seed=0)
        results["bare"].append(bare_loop(model, loader, 1, cfg.lr, channels_last))
        torch.manual_seed(0)
        model = create_model("mini_resnet", 10, **r.model_kwargs)
        h = fit(model, train, None, cfg, progress=False)
        results["fit"].append(h["img_per_s"][0])
    bare, fitted = np.median(results["bare"]), np.median(results["fit"])
    print(f"[1] bare loop {bare:.0f} img/s, fit {fitted:.0f} img/s -> ratio {fitted / bare:.3f} (target >= 0.95)")
    return fitted / bare


def resnet18_efficiency(quick: bool) -> float:
    from prodvision.models import create_model, describe

    peak = sgemm_peak(1024 if quick else 2048)
    model = create_model("resnet18", 10).to(memory_format=torch.channels_last)
    flops_fwd = describe(model, (3, 64, 64)).iloc[-1]["flops"]
    bs, steps = 64, 3 if quick else 10
    x = torch.randn(bs, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    step = float(np.median(times))
    gflops = 3 * flops_fwd * bs / step / 1e9  # forward + backward (~2x forward)
    print(f"[2] resnet18 @64px training: {gflops:.1f} GFLOP/s of {peak:.1f} sgemm peak -> {gflops / peak:.2f} "
          f"(target >= 0.60)")
    return gflops / peak


def probe_speedup(quick: bool) -> float:
    from prodvision.features import extract_features, feature_extractor
    from prodvision.models import create_model
    from prodvision.recipes import Recipe, prepare_data

    r = Recipe(name="bench", arch="tf_efficientnet_lite0", weights="imagenet", size=64, in_chans=1,
               labels_per_class=20 if quick else 100)
    data = prepare_data(r)
    train = data.train.subset(range(len(data.train)), transform=data.val.transform)
    fx = feature_extractor(create_model("tf_efficientnet_lite0", 1000, weights="imagenet", in_chans=1), "classifier")
    epochs = 3 if quick else 10

    def head_epoch(head, opt, f, y):
        """One epoch of minibatch SGD on a linear head: identical work on both sides."""
        f, y = torch.as_tensor(f), torch.as_tensor(y)
        for i in range(0, len(y), 64):
            loss = torch.nn.functional.cross_entropy(head(f[i:i + 64]), y[i:i + 64])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def new_head():
        torch.manual_seed(0)
        head = torch.nn.Linear(1280, len(data.classes))
        return head, torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)

    with tempfile.TemporaryDirectory() as tmp:
        extract_features(fx, train, key={"b": 1}, cache_dir=tmp, progress=False)  # fill the cache
        t = time.perf_counter()
        head, opt = new_head()
        for _ in range(epochs):  # cached: read the features from disk each epoch, train the head
            f, y = extract_features(fx, train, key={"b": 1}, cache_dir=tmp, progress=False)
            head_epoch(head, opt, f, y)
        cached = time.perf_counter() - t
        t = time.perf_counter()
        head, opt = new_head()
        for e in range(epochs):  # recomputing: the frozen backbone runs over every image every epoch
            with tempfile.TemporaryDirectory() as fresh:
                f, y = extract_features(fx, train, key={"b": 1}, cache_dir=fresh, progress=False)
            head_epoch(head, opt, f, y)
        recompute = time.perf_counter() - t
    print(f"[3] linear head (SGD), {epochs} epochs on {len(train)} images: cached features {cached:.2f} s, recomputed "
          f"{recompute:.2f} s -> {recompute / cached:.1f}x (target >= 10x)")
    return recompute / cached


def loader_ratio(quick: bool) -> float:
    from prodvision.course import default_recipe
    from prodvision.recipes import prepare_data
    from prodvision.train import make_loader

    r = default_recipe("main")
    data = prepare_data(r)
    loader = make_loader(data.train, batch_size=r.train.batch_size, shuffle=True, seed=0)
    n, t = 0, time.perf_counter()
    for i, (x, y) in enumerate(loader):
        n += len(y)
        if quick and i == 20:
            break
    load = n / (time.perf_counter() - t)
    from prodvision.models import create_model

    model = create_model("mini_resnet", 10, **r.model_kwargs)
    sub = data.train.subset(np.arange(2560), transform=data.train.transform)
    train_ips = bare_loop(model, DataLoader(sub, batch_size=r.train.batch_size), 1, 0.1, channels_last=False)
    print(f"[4] loader {load:.0f} img/s vs training {train_ips:.0f} img/s -> {load / train_ips:.1f}x (target >= 5x)")
    return load / train_ips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, numbers not meaningful")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    r = {"fit_overhead": fit_overhead(args.quick), "resnet18_fraction_of_peak": resnet18_efficiency(args.quick),
         "probe_speedup": probe_speedup(args.quick), "loader_ratio": loader_ratio(args.quick)}
    targets = {"fit_overhead": 0.95, "resnet18_fraction_of_peak": 0.60, "probe_speedup": 10.0, "loader_ratio": 5.0}
    print("summary: " + ", ".join(f"{k}={v:.3g} ({'ok' if v >= targets[k] else 'below target'})" for k, v in r.items()))


if __name__ == "__main__":
    main()
