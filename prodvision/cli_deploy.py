"""Deployment subcommands of ``prodvision``: ``export``, ``predict``, ``cam`` and ``serve``.

Examples::

    prodvision export runs/icons/best.pt --out deploy/ --check data/product-icons
    prodvision predict deploy/best.onnx photos/ --top-k 3 --json
    prodvision cam runs/icons/best.pt photo.jpg --out overlay.png --target apparel
    prodvision serve deploy/best.onnx --port 8000 --max-upload-mb 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def _cmd_export(args) -> int:
    from .export import export_checkpoint, parity_check
    from .predict import expand_inputs, load_deployed

    paths = export_checkpoint(args.checkpoint, args.out, formats=args.format, opset=args.opset)
    for fmt, p in paths.items():
        print(f"wrote {fmt:<12s} {p} ({p.stat().st_size / 2**20:.2f} MB)")
    if not args.check:
        return 0
    eager = load_deployed(args.checkpoint)
    files, _ = expand_inputs([args.check])
    images = []
    for f in files[: args.check_n]:
        images.append(eager.preprocess(f))  # a bad file raises ImageLoadError naming it (exit 2)
    if not images:
        raise ValueError(f"{args.check}: no image files to check parity on")
    import torch

    batch = torch.stack(images)  # (N, C, S, S)
    ok = True
    for fmt, p in paths.items():
        r = parity_check(eager.module, p, batch)
        good = r.ok(args.atol)
        ok &= good
        print(f"parity {fmt:<12s} max|diff|={r.max_abs_diff:.2e} top-1 identical={r.top1_identical} "
              f"on {r.n} images: {'ok' if good else f'FAILED (tolerance {args.atol:g})'}")
    return 0 if ok else 1


def _cmd_predict(args) -> int:
    from .data import ImageLimits
    from .predict import expand_inputs, load_deployed, predict_images

    model = load_deployed(args.model, threads=args.threads)
    files, skipped = expand_inputs(args.inputs)
    for f in skipped:
        print(f"skipped  {f}: not an image file extension", file=sys.stderr)
    if not files:
        raise ValueError(f"no image files found in {' '.join(args.inputs)}")
    results = predict_images(model, files, k=args.top_k, limits=ImageLimits(max_pixels=args.max_pixels),
                             batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"model": str(args.model), "results": results}, indent=1))
    for r in results:
        if "error" in r:
            print(f"error    {r['filename']}: {r['error']['reason']} [{r['error']['code']}]", file=sys.stderr)
        elif not args.json:
            print(f"{r['filename']}\t" + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top_k"]))
    return 1 if any("error" in r for r in results) else 0


def _cmd_cam(args) -> int:
    from PIL import Image

    from .data import ImageLimits, load_image
    from .explain import cam, overlay
    from .predict import load_deployed, top_k

    if Path(args.model).suffix.lower() not in (".pt", ".pth"):
        raise ValueError(f"{args.model}: CAM needs the eager model; pass the training checkpoint (.pt), "
                         "not an exported .onnx/.ts file")
    model = load_deployed(args.model)
    classes = model.classes
    if args.target is not None and args.target not in classes:
        raise ValueError(f"--target {args.target!r} is not one of the model's classes {classes}")
    image = load_image(args.image, limits=ImageLimits(max_pixels=args.max_pixels))
    x = model.transform(image)[None]  # (1, C, S, S)
    best = top_k(model.logits(x), classes, 1)[0][0]
    label = args.target or best["label"]
    maps = cam(model.module, x, [classes.index(label)], method=args.method, arch=model.meta["arch"])  # (1, S, S)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(model.view(image), maps[0], size=args.size)).save(out)
    print(f"wrote {out}: {args.method} for class {label!r} (predicted {best['label']!r}, p={best['probability']:.3f})")
    return 0


def _cmd_serve(args) -> int:
    from .serve import ServeConfig, run

    cfg = ServeConfig(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, max_files=args.max_files,
                      top_k=args.top_k, threads=args.threads, cam_method=args.cam_method)
    run(args.model, host=args.host, port=args.port, config=cfg, log_level=args.log_level)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export``, ``predict``, ``cam`` and ``serve`` to the ``prodvision`` subcommands."""
    from .explain import CAM_METHODS
    from .serve import ServeConfig

    d = ServeConfig()
    e = sub.add_parser("export", help="export a checkpoint to ONNX and TorchScript, with its metadata")
    e.add_argument("checkpoint", help="a .pt checkpoint written by prodvision train")
    e.add_argument("--out", default=".", help="output folder, or a file path whose suffix is set per format")
    e.add_argument("--format", nargs="+", default=["onnx", "torchscript"], choices=["onnx", "torchscript"])
    e.add_argument("--opset", type=int, default=17, help="ONNX opset")
    e.add_argument("--check", default=None, metavar="DIR", help="parity check on images in DIR (exit 1 if it fails)")
    e.add_argument("--check-n", type=int, default=32, help="images used by --check")
    e.add_argument("--atol", type=float, default=1e-4, help="largest allowed |logit difference| for --check")
    e.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", help="classify image files or folders (exit 1 if any file fails)")
    p.add_argument("model", help="a checkpoint .pt, or an exported .onnx / .ts")
    p.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR", help="image files and/or folders (walked, sorted)")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print {'results': [...]} JSON on stdout")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--max-pixels", type=int, default=50_000_000, help="refuse larger images (decompression bombs)")
    p.set_defaults(func=_cmd_predict)

    c = sub.add_parser("cam", help="write a Grad-CAM overlay PNG for one image (checkpoint models only)")
    c.add_argument("model", help="a checkpoint .pt (CAM needs the eager model)")
    c.add_argument("image")
    c.add_argument("--out", required=True, help="output PNG")
    c.add_argument("--method", default="gradcam", choices=CAM_METHODS)
    c.add_argument("--target", default=None, help="class name to explain (default: the predicted class)")
    c.add_argument("--size", type=int, default=224, help="side of the overlay in px")
    c.add_argument("--max-pixels", type=int, default=50_000_000)
    c.set_defaults(func=_cmd_cam)

    s = sub.add_parser("serve", help="HTTP service: POST /predict, POST /cam, upload page at /")
    s.add_argument("model", help="a checkpoint .pt (exported to ONNX at start-up; enables /cam), .onnx or .ts")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="max request body in MB")
    s.add_argument("--max-pixels", type=int, default=d.max_pixels, help="max pixels per image (else 422)")
    s.add_argument("--max-files", type=int, default=d.max_files, help="max files per /predict request")
    s.add_argument("--top-k", type=int, default=d.top_k)
    s.add_argument("--threads", type=int, default=d.threads, help="ONNX Runtime intra-op threads (default: ORT's)")
    s.add_argument("--cam-method", default=d.cam_method, choices=CAM_METHODS)
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=_cmd_serve)
