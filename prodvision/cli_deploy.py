"""Deployment subcommands of ``prodvision``: ``export``, ``predict``, ``cam`` and ``serve``.

Examples::

    prodvision export runs/icons/best.pt --out deploy/ --check data/product-icons
    prodvision predict deploy/best.onnx photos/ --top-k 3 --json
    prodvision cam runs/icons/best.pt photos/ more.jpg --out cams/        # one captioned PNG each + a contact sheet
    prodvision serve deploy/best.onnx --port 8000 --max-upload-mb 10

Like ``cli``, this module imports nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .cli_args import FRACTION, INPUT_SIZE, OPSET, PORT, POSITIVE, number
from .config import CAM_METHODS, MAX_INPUT_SIZE, MIN_INPUT_SIZE, ONNX_OPSET, ONNX_OPSETS, ImageLimits, ServeConfig
from .errors import ConfigError, DataError

__all__ = ["register"]


def _cmd_export(args) -> int:
    from .deployed import load_deployed
    from .export import export_checkpoint, parity_check
    from .predict import expand_inputs

    paths = export_checkpoint(args.checkpoint, args.out, formats=args.format, opset=args.opset)
    for fmt, p in paths.items():
        print(f"wrote {fmt:<12s} {p} ({p.stat().st_size / 2**20:.2f} MB)")
    if not args.check:
        return 0
    eager = load_deployed(args.checkpoint)
    files, _ = expand_inputs([args.check])
    images = [eager.preprocess(f) for f in files[: args.check_n]]  # a bad file raises ImageLoadError naming it
    if not images:
        raise DataError(f"{args.check}: no image files to check parity on")
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


def _files(inputs: list[str]) -> list[Path]:
    from .predict import expand_inputs

    files, skipped = expand_inputs(inputs)
    for f in skipped:
        print(f"skipped  {f}: not an image file extension", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} file(s) skipped (listed above)", file=sys.stderr)
    if not files:
        raise DataError(f"no image files found in {' '.join(inputs)}")
    return files


def _cmd_predict(args) -> int:
    from .deployed import load_deployed
    from .predict import predict_images

    model = load_deployed(args.model, threads=args.threads)
    files = _files(args.inputs)
    results = predict_images(model, files, k=args.top_k, limits=ImageLimits(max_pixels=args.max_pixels),
                             batch_size=args.batch_size, unsure_below=args.unsure_below)
    threshold = model.unsure_below if args.unsure_below is None else args.unsure_below
    if args.json:
        print(json.dumps({"model": str(args.model), "unsure_below": threshold, "results": results}, indent=1))
    for r in results:
        if "error" in r:
            print(f"error    {r['filename']}: {r['error']['reason']} [{r['error']['code']}]", file=sys.stderr)
        elif not args.json:
            flag = "UNSURE  " if r["unsure"] else ""
            print(f"{r['filename']}\t{flag}" + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top_k"]))
    if not args.json:
        n_unsure = sum(bool(r.get("unsure")) for r in results)
        if threshold is None:
            print("(this model has no 'unsure' threshold; retrain it with prodvision train to get one)")
        else:
            print(f"{n_unsure} of {len(results)} predictions are unsure (top probability below {threshold:.3f}, "
                  "chosen on validation for the model's target precision): check them by hand")
    return 1 if any("error" in r for r in results) else 0


def _cmd_cam(args) -> int:
    import numpy as np
    from PIL import Image

    from .data import folder_classes, load_image
    from .data.images import ImageLoadError
    from .deployed import load_deployed
    from .explain import explain_image
    from .viz import caption_image, contact_sheet

    if Path(args.model).suffix.lower() not in (".pt", ".pth"):
        raise ConfigError(f"{args.model}: CAM needs the eager model; pass the training checkpoint (.pt), "
                          "not an exported .onnx/.ts file")
    files = _files(args.inputs)
    out = Path(args.out)
    single = len(files) == 1 and out.suffix.lower() == ".png"
    folder = out.parent if single else out
    names, paths = _cam_paths(files, folder)  # a file given twice is refused before any work
    if single:
        paths = [out]
    model = load_deployed(args.model)  # loaded once for every image
    if args.target is not None and args.target not in model.classes:
        raise ConfigError(f"--target {args.target!r} is not one of the model's classes {model.classes}")
    folder.mkdir(parents=True, exist_ok=True)
    by_folder = folder_classes(model.classes)  # "T-shirt_top" -> "T-shirt/top", the way folders hold classes
    tiles, failed = [], 0
    for f, name, path in zip(files, names, paths):
        try:
            image = load_image(f, limits=ImageLimits(max_pixels=args.max_pixels))
        except ImageLoadError as e:
            print(f"error    {f}: {e.reason} [{e.code}]", file=sys.stderr)
            failed += 1
            continue
        ex = explain_image(model, image, target=args.target, method=args.method, size=args.size)
        truth = by_folder.get(Path(f).parent.name)  # an image folder's layout (a folder per class): the true class
        lines = [name, f"predicted {ex.predicted} ({ex.probability:.0%})" + (" - UNSURE" if ex.unsure else ""),
                 *([f"true {truth}" + (" - right" if truth == ex.predicted else " - WRONG")]
                   if truth is not None else []),
                 f"{args.method} for {ex.label}"]
        tile = caption_image(ex.overlay, lines)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(tile).save(path)
        tiles.append(tile)
        print(f"wrote {path}: {args.method} for class {ex.label!r} (predicted {ex.predicted!r}, "
              f"p={ex.probability:.3f}{', unsure' if ex.unsure else ''})")
    if len(tiles) > 1:
        sheet = folder / "contact_sheet.png"
        Image.fromarray(contact_sheet(tiles, ncols=min(6, len(tiles)))).save(sheet)
        print(f"wrote {sheet} ({len(tiles)} images)")
    return 1 if failed else 0


def _cam_paths(files: list[Path], folder: Path) -> tuple[list[str], list[Path]]:
    """Where ``cam`` writes each image's overlay: its path below the inputs' common folder, extension kept, plus
    ``_cam.png`` -- ``photos/a/x.png`` and ``photos/b/x.png`` go to ``OUT/a/x.png_cam.png`` and ``OUT/b/x.png_cam.png``,
    ``a/x.jpg`` beside them to ``OUT/a/x.jpg_cam.png`` -- so no two inputs share an output.

    Returns:
        ``(names, paths)``: each input's path below the common folder (for captions), and its output file.

    Raises:
        ConfigError: the same file is given twice (e.g. a folder and a file in it), which would write one output twice.
    """
    absolute = [Path(os.path.abspath(f)) for f in files]
    root = Path(os.path.commonpath([p.parent for p in absolute]))
    names = [p.relative_to(root).as_posix() for p in absolute]
    paths = [folder / f"{n}_cam.png" for n in names]
    first: dict[Path, Path] = {}
    for f, path in zip(files, paths):
        if path in first:
            raise ConfigError(f"{first[path]} and {f} are the same file, so both would be written to {path}; "
                              "name each image once")
        first[path] = f
    return names, paths


def _check_listen(host: str, port: int) -> None:
    """Fail now, in one line, if ``host:port`` cannot be listened on: uvicorn finds out only after the model has
    loaded, then logs the bind error and exits 3. (Another program may still take the port in between; uvicorn
    reports that.)"""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a closed port's TIME_WAIT is free
            s.bind(address)
    except OSError as e:  # in use, not allowed (ports below 1024), or no such host
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port or --host")


def _cmd_serve(args) -> int:
    _check_listen(args.host, args.port)  # before importing torch and loading the model
    from .serve import run

    cfg = ServeConfig(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, max_side=args.max_side,
                      max_files=args.max_files, top_k=args.top_k, threads=args.threads, cam_method=args.cam_method,
                      decode_budget_mb=args.decode_budget_mb, header_timeout_s=args.header_timeout_s,
                      body_timeout_s=args.body_timeout_s)
    run(args.model, host=args.host, port=args.port, config=cfg, log_level=args.log_level)
    return 0


def register(sub: argparse._SubParsersAction, formatter: type = argparse.ArgumentDefaultsHelpFormatter) -> None:
    """Add ``export``, ``predict``, ``cam`` and ``serve`` to the ``prodvision`` subcommands."""
    d, lim = ServeConfig(), ImageLimits()
    e = sub.add_parser("export", help="export a checkpoint to ONNX and TorchScript, with its metadata",
                       formatter_class=formatter)
    e.add_argument("checkpoint", help="a .pt checkpoint written by prodvision train")
    e.add_argument("--out", default=".", help="output folder, or a file path whose suffix is set per format")
    e.add_argument("--format", nargs="+", default=["onnx", "torchscript"], choices=["onnx", "torchscript"],
                   help="formats to write")
    e.add_argument("--opset", type=OPSET, default=ONNX_OPSET,
                   help=f"ONNX opset, {ONNX_OPSETS[0]} to {ONNX_OPSETS[1]} (torch's TorchScript-based exporter; "
                        "EfficientNet-Lite needs 11 or later)")
    e.add_argument("--check", default=None, metavar="DIR", help="parity check on images in DIR, exit 1 if it fails (default: no check)")
    e.add_argument("--check-n", type=POSITIVE, default=32, help="images used by --check")
    e.add_argument("--atol", type=number(0), default=1e-4, help="largest allowed |logit difference| for --check")
    e.set_defaults(func=_cmd_export)

    p = sub.add_parser("predict", help="classify image files or folders (exit 1 if any file fails)",
                       formatter_class=formatter)
    p.add_argument("model", help="a checkpoint .pt, or an exported .onnx / .ts")
    p.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR", help="image files and/or folders (walked, sorted)")
    p.add_argument("--top-k", type=POSITIVE, default=3, help="classes listed per image")
    p.add_argument("--unsure-below", type=FRACTION, default=None,
                   help="mark predictions below this top probability unsure (default: the model's own threshold)")
    p.add_argument("--json", action="store_true", help="print {'results': [...]} JSON on stdout")
    p.add_argument("--batch-size", type=POSITIVE, default=32, help="images per forward pass")
    p.add_argument("--threads", type=POSITIVE, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    p.add_argument("--max-pixels", type=POSITIVE, default=lim.max_pixels, help="refuse larger images (decompression bombs)")
    p.set_defaults(func=_cmd_predict)

    c = sub.add_parser("cam", help="Grad-CAM overlays of images and folders: one captioned PNG each, a contact sheet",
                       formatter_class=formatter)
    c.add_argument("model", help="a checkpoint .pt (CAM needs the eager model)")
    c.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR")
    c.add_argument("--out", required=True,
                   help="output folder, or a .png path for a single image. Each overlay keeps the image's path below "
                        "the inputs' common folder and its extension: a/x.png -> OUT/a/x.png_cam.png, a/x.jpg -> "
                        "OUT/a/x.jpg_cam.png, b/x.png -> OUT/b/x.png_cam.png; OUT/contact_sheet.png shows them all")
    c.add_argument("--method", default="gradcam", choices=CAM_METHODS, help="CAM method (grad-cam package)")
    c.add_argument("--target", default=None, help="class name to explain (default: each image's predicted class)")
    c.add_argument("--size", type=INPUT_SIZE, default=224, help=f"side of each overlay in px, {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}")
    c.add_argument("--max-pixels", type=POSITIVE, default=lim.max_pixels, help="refuse larger images (decompression bombs)")
    c.set_defaults(func=_cmd_cam)

    s = sub.add_parser("serve", help="HTTP service: POST /predict, POST /cam, upload page at /", formatter_class=formatter)
    s.add_argument("model", help="a checkpoint .pt (exported to ONNX at start-up; enables /cam), .onnx or .ts")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=PORT, default=8000, help="TCP port, 1 to 65535")
    s.add_argument("--max-upload-mb", type=number(0, lo_open=True), default=d.max_upload_mb, help="max request body in MB")
    s.add_argument("--max-pixels", type=POSITIVE, default=d.max_pixels, help="max pixels per image (else 422)")
    s.add_argument("--max-side", type=POSITIVE, default=d.max_side, help="max image side in px (else 422)")
    s.add_argument("--max-files", type=POSITIVE, default=d.max_files, help="max files per /predict request")
    s.add_argument("--decode-budget-mb", type=number(0, lo_open=True), default=d.decode_budget_mb,
                   help="decoded-pixel memory all uploads may use at once; more wait their turn")
    s.add_argument("--header-timeout-s", type=number(0, lo_open=True), default=d.header_timeout_s,
                   help="seconds a client may take to send a request's headers (from connecting, or from the previous "
                        "response); a client that stalls is answered 408 and dropped")
    s.add_argument("--body-timeout-s", type=number(0, lo_open=True), default=d.body_timeout_s,
                   help="seconds a client may take to send a whole request body after its headers (else 408 and "
                        "dropped); raise it for large uploads over slow links")
    s.add_argument("--top-k", type=POSITIVE, default=d.top_k, help="classes returned per image")
    s.add_argument("--threads", type=POSITIVE, default=d.threads, help="ONNX Runtime intra-op threads (default: ORT's)")
    s.add_argument("--cam-method", default=d.cam_method, choices=CAM_METHODS, help="CAM method of POST /cam")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="uvicorn log level")
    s.set_defaults(func=_cmd_serve)
