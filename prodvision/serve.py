"""Real-time HTTP service: FastAPI app factory (:func:`create_app`) and :func:`run` (uvicorn).

Endpoints:

* ``POST /predict`` -- multipart, one or several images under the field ``files`` ->
  ``{"results": [{"filename", "top_k": [{"label", "probability"}]} | {"filename", "error": {"code", "reason"}}]}``.
  A batch with some bad files is 200 (one error entry per bad file); if *every* file fails, the status is the
  first failure's (see :data:`STATUS`) and the body also has a top-level ``error``.
* ``POST /cam`` -- one image (field ``file``), optional form field ``target`` (a class name) -> Grad-CAM overlay
  PNG. Needs the eager model, i.e. a checkpoint (``.pt``); 501 otherwise.
* ``GET /healthz`` (live), ``GET /readyz`` (503 until the start-up warm-up prediction ran), ``GET /model``
  (metadata), ``GET /`` (upload page), ``/openapi.json`` and ``/docs``.

A checkpoint is exported to a temporary ONNX file at start-up and served with ONNX Runtime (the file is deleted
once loaded); the eager model is kept for ``/cam``. Bad input never gives a 500: the request body is capped before
it is read (413), and every :class:`prodvision.data.ImageLoadError` code maps to a 4xx status.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .data.images import ImageLimits, ImageLoadError
from .predict import DeployedModel, load_deployed, predict_images, top_k

__all__ = ["ServeConfig", "STATUS", "create_app", "run", "serving", "free_port"]

log = logging.getLogger("prodvision.serve")

#: HTTP status for each ImageLoadError code.
STATUS = {"empty": 400, "missing": 400, "not_image": 415, "unreadable": 415, "truncated": 422,
          "too_large": 413, "decompression_bomb": 422, "bad_size": 422}


@dataclass(frozen=True)
class ServeConfig:
    """Limits and options of the service."""

    max_upload_mb: float = 10.0  # max request body (all files together); also the per-file byte limit
    max_pixels: int = 40_000_000  # per image, from the header, before decoding (decompression bombs -> 422)
    max_side: int = 20_000  # longest image side in px
    max_files: int = 16  # files per /predict request
    top_k: int = 3  # classes returned per image
    threads: int | None = None  # ONNX Runtime intra_op_num_threads (None = let ORT decide)
    cam_method: str = "gradcam"  # a prodvision.explain.CAM_METHODS entry

    @property
    def max_body(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_body, max_pixels=self.max_pixels, max_side=self.max_side)


def _error(status: int, code: str, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "reason": reason}, **extra}, status_code=status)


class _BodyLimit:
    """ASGI middleware: refuse a POST body over ``max_bytes`` with 413, from Content-Length or while reading it.

    The body is read here (at most ``max_bytes``) and replayed to the app, so a chunked upload without a
    Content-Length is cut off as soon as it passes the limit instead of being buffered whole.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _send_json(self, send, status: int, code: str, reason: str) -> None:
        import json

        body = json.dumps({"error": {"code": code, "reason": reason}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_big = f"request body is over the limit of {self.max_bytes:,} bytes (server option --max-upload-mb)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await self._send_json(send, 400, "bad_request", f"invalid Content-Length {length!r}")
            if int(length) > self.max_bytes:
                return await self._send_json(send, 413, "too_large", too_big)
        chunks, n = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            n += len(msg.get("body", b""))
            if n > self.max_bytes:
                return await self._send_json(send, 413, "too_large", too_big)
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        return await self.app(scope, replay, send)


def _warm_up(predictor: DeployedModel, config: ServeConfig) -> None:
    """Run one full prediction (PNG decode -> preprocessing -> model) so the first request is not a cold one."""
    from PIL import Image

    buf = io.BytesIO()
    size = predictor.input_spec.size
    Image.new("RGB", (size, size), (200, 180, 160)).save(buf, format="PNG")
    res = predict_images(predictor, [buf.getvalue()], names=["<warm-up>"], k=config.top_k, limits=config.limits())
    if "top_k" not in res[0]:
        raise RuntimeError(f"warm-up prediction failed: {res[0]}")


def create_app(model_path: str | os.PathLike, config: ServeConfig = ServeConfig()) -> FastAPI:
    """Build the FastAPI app for a ``.pt`` checkpoint, ``.onnx`` or ``.ts`` model.

    The model is loaded here (so a bad path fails at start-up); the warm-up prediction runs in a background
    thread when the app starts (``/readyz`` answers 503 until it has succeeded). ``app.state.warm_up()`` runs it
    synchronously (for tests without a lifespan).
    """
    model_path = Path(model_path)
    loaded = load_deployed(model_path, threads=config.threads)
    eager = loaded.module
    if loaded.backend == "eager":  # serve with ONNX Runtime; keep the eager model for /cam
        from .export import export_onnx

        with tempfile.TemporaryDirectory(prefix="prodvision-serve-") as tmp:
            predictor = load_deployed(export_onnx(eager, loaded.meta, Path(tmp) / "model.onnx"),
                                      threads=config.threads)  # ORT holds the graph in memory; the file can go
        predictor.path = model_path
    else:
        predictor = loaded
    state = {"ready": False, "error": None}
    cam_lock = threading.Lock()  # grad-cam puts hooks on the shared eager model: one CAM at a time

    def warm_up() -> None:
        try:
            _warm_up(predictor, config)
            state["ready"] = True
            log.info("warm-up prediction done; ready")
        except Exception as e:  # noqa: BLE001 -- reported by /readyz and the log, never swallowed
            state["error"] = f"{type(e).__name__}: {e}"
            log.exception("warm-up prediction failed")

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=warm_up, name="prodvision-warm-up", daemon=True).start()
        yield

    app = FastAPI(title="prodvision", version="1", lifespan=lifespan,
                  description=f"Product image classifier ({loaded.meta['arch']}, {len(predictor.classes)} classes: "
                              f"{', '.join(predictor.classes)}). Limits: {asdict(config)}")
    app.add_middleware(_BodyLimit, max_bytes=config.max_body)
    app.state.warm_up, app.state.predictor, app.state.config = warm_up, predictor, config

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return _error(400, "bad_request", f"malformed request ({where}); send multipart/form-data with the image "
                                          "file(s) under 'files' (/predict) or 'file' (/cam)")

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness: 200 while the process serves."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "warm-up not done (or failed)"}})
    def readyz():
        """Readiness: 200 once the start-up warm-up prediction has run, 503 before."""
        if state["ready"]:
            return {"status": "ready", "backend": predictor.backend, "model": model_path.name}
        body = {"status": "failed", "reason": state["error"]} if state["error"] else {"status": "warming_up"}
        return JSONResponse(body, status_code=503)

    @app.get("/model")
    def model_info() -> dict:
        """The served model's metadata: classes, input spec, arch, weights hash; whether /cam is available."""
        return {**predictor.meta, "backend": predictor.backend, "cam": eager is not None, "top_k": config.top_k}

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        """The upload page."""
        from importlib.resources import files

        return HTMLResponse((files(__package__) / "static" / "index.html").read_text(encoding="utf-8"))

    @app.post("/predict", responses={400: {}, 413: {}, 415: {}, 422: {}})
    def predict(files: list[UploadFile] = File(..., description="one or more image files")):
        """Classify one or several images (multipart field ``files``); returns the top-k classes per file."""
        if len(files) > config.max_files:
            return _error(413, "too_many_files", f"{len(files)} files; the limit is {config.max_files} per request "
                                                 "(server option --max-files)")
        names = [f.filename or f"<file {i}>" for i, f in enumerate(files)]
        data = [f.file.read() for f in files]
        results = predict_images(predictor, data, names=names, k=config.top_k, limits=config.limits())
        failed = [r for r in results if "error" in r]
        if results and len(failed) == len(results):
            first = failed[0]["error"]
            return JSONResponse({"results": results, "error": {**first, "reason": f"{failed[0]['filename']}: "
                                                                                  f"{first['reason']}"}},
                                status_code=STATUS.get(first["code"], 400))
        return {"results": results}

    @app.post("/cam", response_class=Response, responses={200: {"content": {"image/png": {}}}, 501: {}})
    def cam_endpoint(file: UploadFile = File(..., description="one image"),
                     target: str | None = Form(None, description="class to explain (default: the predicted one)")):
        """Grad-CAM overlay (PNG) of one image for ``target`` or the predicted class."""
        from urllib.parse import quote

        from PIL import Image

        from .data.images import load_image
        from .explain import cam, overlay

        if eager is None:
            return _error(501, "cam_unavailable", f"CAM needs the eager model; this server runs {model_path.name} "
                                                  "(start it with the training checkpoint .pt)")
        name = file.filename or "<upload>"
        try:
            image = load_image(file.file.read(), limits=config.limits(), name=name)
        except ImageLoadError as e:
            return _error(STATUS.get(e.code, 400), e.code, f"{name}: {e.reason}")
        classes = predictor.classes
        if target not in (None, "") and target not in classes:
            return _error(400, "unknown_target", f"target {target!r} is not one of the model's classes {classes}")
        x = predictor.transform(image)[None]  # (1, C, S, S)
        pred = top_k(predictor.logits(x), classes, 1)[0][0]["label"]
        label = target or pred
        with cam_lock:
            maps = cam(eager, x, [classes.index(label)], method=config.cam_method, arch=predictor.meta["arch"])
        buf = io.BytesIO()
        Image.fromarray(overlay(predictor.view(image), maps[0], size=224)).save(buf, "PNG")
        return Response(buf.getvalue(), media_type="image/png",
                        headers={"X-CAM-Target": quote(label), "X-Predicted": quote(pred)})  # URL-encoded

    return app


def run(model_path: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
        config: ServeConfig = ServeConfig(), log_level: str = "info") -> None:
    """Serve ``model_path`` with uvicorn until interrupted."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(create_app(model_path, config), host=host, port=port, log_level=log_level, timeout_keep_alive=5)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def serving(model_path: str | os.PathLike, *, config: ServeConfig = ServeConfig(), host: str = "127.0.0.1",
            port: int | None = None, log_path: str | os.PathLike | None = None,
            timeout: float = 120.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``python -m prodvision serve`` in a subprocess until ``/readyz`` is 200; always stopped on exit.

    For tests, benchmarks and notebooks. Yields ``(base_url, process)``.

    Raises:
        RuntimeError: the server exited or was not ready within ``timeout`` s (the message has its log's tail).
    """
    import httpx

    port = port or free_port(host)
    cmd = [sys.executable, "-m", "prodvision", "serve", str(model_path), "--host", host, "--port", str(port),
           "--max-upload-mb", str(config.max_upload_mb), "--max-pixels", str(config.max_pixels),
           "--max-files", str(config.max_files), "--top-k", str(config.top_k), "--cam-method", config.cam_method,
           "--log-level", "warning"]
    if config.threads is not None:
        cmd += ["--threads", str(config.threads)]
    with tempfile.TemporaryDirectory(prefix="prodvision-serving-") as tmp:
        log_file = Path(log_path or Path(tmp) / "serve.log")
        with open(log_file, "wb") as log_fh:
            proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT)
        url = f"http://{host}:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with code {proc.returncode}; its log ends with:\n"
                                       f"{log_file.read_text(errors='replace')[-3000:]}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after {timeout:g} s; its log ends with:\n"
                                       f"{log_file.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
