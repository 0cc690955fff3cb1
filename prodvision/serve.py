"""Real-time HTTP service: FastAPI app factory (:func:`create_app`) and :func:`run` (uvicorn).

Endpoints:

* ``POST /predict`` -- multipart, one or several images under the field ``files`` ->
  ``{"results": [{"filename", "label", "probability", "unsure", "top_k": [{"label", "probability"}]} |
  {"filename", "error": {"code", "reason"}}]}`` (``unsure``: the top probability is below the model's threshold).
  A batch with some bad files is 200 (one error entry per bad file); if *every* file fails, the status is the
  first failure's (see :data:`STATUS`) and the body also has a top-level ``error``.
* ``POST /cam`` -- one image (field ``file``), optional form field ``target`` (a class name) -> Grad-CAM overlay
  PNG. Needs the eager model, i.e. a checkpoint (``.pt``); on an exported model 409 ``cam_unavailable``, whose
  reason says to serve the ``.pt`` (``GET /model`` says ``"cam": false``, and the upload page shows no explanations).
* ``GET /healthz`` (live), ``GET /readyz`` (503 until the start-up warm-up prediction ran), ``GET /model``
  (metadata, ``unsure_below``, ``max_files``), ``GET /`` (upload page), ``/openapi.json`` and ``/docs``.

A checkpoint is exported to a temporary ONNX file at start-up and served with ONNX Runtime (the file is deleted
once loaded); the eager model is kept for ``/cam``. Bad input never gives a 500: the request body is capped before
it is read (413), and every :class:`prodvision.data.ImageLoadError` code maps to a 4xx status. A client that stalls
is answered 408 and dropped: its request head must be complete within ``ServeConfig.header_timeout_s`` (uvicorn's
h11 protocol with a timer, :func:`header_timeout_protocol`) and its body within ``body_timeout_s`` (``_BodyLimit``).

Memory: a PNG of ~100 KB can decode to 160 MB of pixels, so every upload (``/predict`` and ``/cam``) first reserves its
decoded size, estimated from the header (:func:`prodvision.data.images.decoded_nbytes`), from a
:class:`DecodeBudget` of ``ServeConfig.decode_budget_mb``, and waits for room; and it is decoded at reduced size
(:func:`decode_side`: a few times the model's input, so the preprocessed tensor is unchanged for normal photos).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import ImageLimits, InputSpec, ServeConfig
from .data.images import ImageLoadError, ImageSource, decoded_nbytes, load_image
from .deployed import DeployedModel, load_deployed
from .errors import ConfigError
from .explain import explain_image
from .export import export_onnx
from .predict import predict_images
from .runtime import allocator

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["ServeConfig", "STATUS", "DecodeBudget", "ServedModel", "decode_side", "create_app", "run", "serving",
           "free_port", "header_timeout_protocol"]

log = logging.getLogger("prodvision.serve")

#: HTTP status for each ImageLoadError code.
STATUS = {"empty": 400, "missing": 400, "not_image": 415, "unreadable": 415, "truncated": 422,
          "too_large": 413, "decompression_bomb": 422, "bad_size": 422}


#: Uploads are decoded with their longest side kept >= this many times the model's input size (and >= MIN_DECODE_SIDE):
#: the antialiased resize to the input then starts from at least 4x its size, as it does for a normal photo.
DECODE_MARGIN = 4
MIN_DECODE_SIDE = 512
#: The least any decode reserves from the budget (headers, small buffers, the preprocessed tensor).
MIN_RESERVATION = 1 << 20


def decode_side(spec: InputSpec) -> int:
    """The longest side an upload is decoded at for a model with input ``spec`` (see :data:`DECODE_MARGIN`)."""
    return max(DECODE_MARGIN * spec.size, MIN_DECODE_SIDE)


class DecodeBudget:
    """A weighted semaphore over bytes of decoded pixels, first come first served.

    :meth:`reserve` takes ``max(nbytes, minimum)`` bytes, or the whole capacity for an image larger than it (which then
    decodes alone), and blocks until that much is free and every earlier waiter has been served; strict arrival order
    keeps small uploads from starving a large one.
    """

    def __init__(self, capacity: int, *, minimum: int = MIN_RESERVATION):
        if capacity < 1 or minimum < 1:
            raise ConfigError(f"DecodeBudget: capacity ({capacity}) and minimum ({minimum}) must be positive")
        self.capacity, self.minimum = int(capacity), int(minimum)
        self.in_use = 0
        self.peak = 0  # the most ever reserved at once (for tests and benchmarks)
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    def amount(self, nbytes: int) -> int:
        """What a decode of ``nbytes`` reserves."""
        return min(max(int(nbytes), self.minimum), self.capacity)

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[int]:
        """Hold ``amount(nbytes)`` bytes for the ``with`` block (waiting for room first); yields the amount."""
        n = self.amount(nbytes)
        me = object()
        with self._cond:
            self._queue.append(me)
            try:
                self._cond.wait_for(lambda: self._queue[0] is me and self.in_use + n <= self.capacity)
            finally:
                self._queue.remove(me)
                self._cond.notify_all()  # the next in line may fit too
            self.in_use += n
            self.peak = max(self.peak, self.in_use)
        try:
            yield n
        finally:
            with self._cond:
                self.in_use -= n
                self._cond.notify_all()


@dataclass
class ServedModel(DeployedModel):
    """A :class:`DeployedModel` whose :meth:`preprocess` decodes uploads within a :class:`DecodeBudget` and at reduced
    size (``max_decode_side``); everything else (metadata, ``logits``, ``unsure_below``) is the wrapped model's."""

    budget: DecodeBudget | None = field(default=None, repr=False)
    max_decode_side: int | None = None

    @classmethod
    def wrap(cls, model: DeployedModel, budget: DecodeBudget | None, max_decode_side: int | None) -> ServedModel:
        """``model`` (which is not copied: both share the runtime session) with a budget and a decode side."""
        return cls(**{f.name: getattr(model, f.name) for f in fields(DeployedModel)}, budget=budget,
                   max_decode_side=max_decode_side)

    def load(self, source: ImageSource, *, limits: ImageLimits = ImageLimits(),
             name: str | None = None) -> Image.Image:
        """Decode one upload to an RGB PIL image: header checks, reservation, reduced decode.

        Raises:
            ImageLoadError: the file is refused (from its header, before any reservation, or while decoding).
        """
        if isinstance(source, (bytearray, memoryview)):
            source = bytes(source)
        elif hasattr(source, "read"):  # read once: the estimate and the decode both need the bytes
            name = name if name is not None else getattr(source, "name", "<upload>")
            source = source.read(limits.max_bytes + 1)
        nbytes = decoded_nbytes(source, limits=limits, name=name, max_decode_side=self.max_decode_side)
        with self.budget.reserve(nbytes) if self.budget is not None else nullcontext():
            return load_image(source, mode="RGB", limits=limits, name=name, max_decode_side=self.max_decode_side)

    def preprocess(self, source: ImageSource, *, limits: ImageLimits = ImageLimits(),
                   name: str | None = None) -> torch.Tensor:
        """:meth:`load`, then the model's transform; float32 ``(in_chans, size, size)``."""
        return self.transform(self.load(source, limits=limits, name=name))


def _error(status: int, code: str, reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "reason": reason}, **extra}, status_code=status)


def _error_body(code: str, reason: str) -> bytes:
    """The JSON bytes of the service's one error shape, for answers written below FastAPI (middleware, protocol)."""
    import json

    return json.dumps({"error": {"code": code, "reason": reason}}).encode()


class _BodyLimit:
    """ASGI middleware: refuse a POST body over ``max_bytes`` with 413, from Content-Length or while reading it, and
    one not complete within ``timeout`` s of the request head with 408 (a client that stalls is dropped).

    The body is read here (at most ``max_bytes``) and replayed to the app, so a chunked upload without a
    Content-Length is cut off as soon as it passes the limit instead of being buffered whole; this is the only place
    the service reads a request body, so the time limit holds for every endpoint.
    """

    def __init__(self, app, max_bytes: int, timeout: float):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def _send_json(self, send, status: int, code: str, reason: str) -> None:
        body = _error_body(code, reason)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def _read(self, receive) -> list[bytes] | None:
        """The body's chunks, or None if the client disconnected; stops (returning what it has) past ``max_bytes``."""
        chunks, n = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunks.append(msg.get("body", b""))
            n += len(chunks[-1])
            if n > self.max_bytes or not msg.get("more_body", False):
                return chunks

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
        try:
            chunks = await asyncio.wait_for(self._read(receive), self.timeout)
        except TimeoutError:
            return await self._send_json(send, 408, "timeout", f"request body not complete within {self.timeout:g} s "
                                                               "of its headers (server option --body-timeout-s)")
        if chunks is None:
            return None
        if sum(map(len, chunks)) > self.max_bytes:
            return await self._send_json(send, 413, "too_large", too_big)
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
    synchronously (for tests without a lifespan). Process-wide side effect: on glibc, allocations of 4 MB and more
    are mmap-ed from now on, so decoded images give their memory back (``prodvision.runtime.allocator("return")``).
    """
    model_path = Path(model_path)
    if not allocator("return"):
        log.info("not glibc: the C library's default malloc settings stay (freed decode buffers may be kept)")
    loaded = load_deployed(model_path, threads=config.threads)
    eager = loaded.module
    if loaded.backend == "eager":  # serve with ONNX Runtime; keep the eager model for /cam
        with tempfile.TemporaryDirectory(prefix="prodvision-serve-") as tmp:
            onnx = load_deployed(export_onnx(eager, loaded.meta, Path(tmp) / "model.onnx"),
                                 threads=config.threads)  # ORT holds the graph in memory; the file can go
        onnx.path = model_path
    else:
        onnx = loaded
    budget = DecodeBudget(int(config.decode_budget_mb * 2**20))
    predictor = ServedModel.wrap(onnx, budget, decode_side(onnx.input_spec))
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

    # The multipart parser stops at file max_files + 1 (its default stops at 1,000): see _http_error for the answer.
    app = FastAPI(title="prodvision", version="1", lifespan=lifespan, form_limits={"max_files": config.max_files},
                  description=f"Product image classifier ({loaded.meta['arch']}, {len(predictor.classes)} classes: "
                              f"{', '.join(predictor.classes)}). Limits: {asdict(config)}")
    app.add_middleware(_BodyLimit, max_bytes=config.max_body, timeout=config.body_timeout_s)
    app.state.warm_up, app.state.predictor, app.state.config = warm_up, predictor, config
    app.state.decode_budget = budget

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        """The framework's own errors in the service's shape: an unknown path (404), a wrong method (405), a body the
        multipart parser refuses (400), and more files than ``max_files`` (413, the only file-count check)."""
        from starlette.formparsers import MultiPartException

        if isinstance(exc.__context__, MultiPartException) and str(exc.detail).startswith("Too many files"):
            return _error(413, "too_many_files", f"more than {config.max_files} files; the limit is "
                                                 f"{config.max_files} per request (server option --max-files)")
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        response = _error(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

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
        """The served model's metadata: classes, input spec, arch, weights hash; whether /cam is available; the
        "unsure" threshold (null without one) and the request limits the upload page needs."""
        return {**predictor.meta, "backend": predictor.backend, "cam": eager is not None, "top_k": config.top_k,
                "unsure_below": predictor.unsure_below, "max_files": config.max_files,
                "max_upload_bytes": config.max_body}

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        """The upload page."""
        from importlib.resources import files

        return HTMLResponse((files(__package__) / "static" / "index.html").read_text(encoding="utf-8"))

    @app.post("/predict", responses={400: {}, 413: {}, 415: {}, 422: {}})
    def predict(files: list[UploadFile] = File(..., description="one or more image files")):
        """Classify one or several images (multipart field ``files``); returns the top-k classes per file."""
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

    @app.post("/cam", response_class=Response, responses={200: {"content": {"image/png": {}}}, 400: {}, 409: {},
                                                          413: {}, 415: {}, 422: {}})
    def cam_endpoint(file: UploadFile = File(..., description="one image"),
                     target: str | None = Form(None, description="class to explain (default: the predicted one)")):
        """Grad-CAM overlay (PNG) of one image for ``target`` or the predicted class."""
        from urllib.parse import quote

        from PIL import Image

        if eager is None:
            return _error(409, "cam_unavailable", f"Grad-CAM needs the training checkpoint (.pt): this server runs "
                                                  f"the exported {model_path.name}, which has no gradients. Start it "
                                                  "with `prodvision serve runs/<run>/best.pt` for /cam (/predict "
                                                  "works with either)")
        name = file.filename or "<upload>"
        try:
            image = predictor.load(file.file.read(), limits=config.limits(), name=name)
        except ImageLoadError as e:
            return _error(STATUS.get(e.code, 400), e.code, f"{name}: {e.reason}")
        if target not in (None, "") and target not in predictor.classes:
            return _error(400, "unknown_target", f"target {target!r} is not one of the model's classes "
                                                 f"{predictor.classes}")
        with cam_lock:
            ex = explain_image(loaded, image, target=target or None, method=config.cam_method, size=224)
        buf = io.BytesIO()
        Image.fromarray(ex.overlay).save(buf, "PNG")
        return Response(buf.getvalue(), media_type="image/png",
                        headers={"X-CAM-Target": quote(ex.label), "X-Predicted": quote(ex.predicted),
                                 "X-Probability": f"{ex.probability:.4f}", "X-Unsure": str(ex.unsure).lower()})

    return app


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 HTTP protocol with a time limit on request heads: a client whose request line and headers are not
    complete ``seconds`` after it connected, or after the previous response on a kept-alive connection, is answered
    408 (the service's JSON error) and disconnected. uvicorn has no such limit of its own (its ``timeout_keep_alive``
    stops counting at the first byte of the next request), and an ASGI middleware only runs once the headers are in.

    The timer runs whenever no request is in progress and stops when h11 has parsed a request head; a slow request
    body is :class:`_BodyLimit`'s (``ServeConfig.body_timeout_s``)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = _error_body("timeout", f"request headers not complete within {seconds:g} s (server option "
                                  "--header-timeout-s)")

    class HeaderTimeoutH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request head was parsed: the app has it now
                self._disarm()

        def on_response_complete(self) -> None:
            self._arm()  # first: the super call may start a pipelined request, which disarms it
            super().on_response_complete()
            if self.transport.is_closing():
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self.conn.our_state is h11.IDLE:  # nothing answered on this cycle yet: say why before closing
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                           (b"connection", b"close")]
                try:
                    self.transport.write(self.conn.send(h11.Response(status_code=408, reason=b"Request Timeout",
                                                                     headers=headers))
                                         + self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage()))
                except h11.LocalProtocolError:  # h11 will not answer in this state: just close
                    pass
            self.transport.close()

    return HeaderTimeoutH11Protocol


def run(model_path: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
        config: ServeConfig = ServeConfig(), log_level: str = "info") -> None:
    """Serve ``model_path`` with uvicorn until interrupted (h11, with ``config.header_timeout_s``)."""
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(create_app(model_path, config), host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                http=header_timeout_protocol(config.header_timeout_s))


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
           "--max-side", str(config.max_side), "--max-files", str(config.max_files), "--top-k", str(config.top_k),
           "--cam-method", config.cam_method, "--decode-budget-mb", str(config.decode_budget_mb),
           "--header-timeout-s", str(config.header_timeout_s), "--body-timeout-s", str(config.body_timeout_s),
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
