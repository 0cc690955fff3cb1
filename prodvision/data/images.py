"""The one image loader used everywhere: training, evaluation, the CLI and the HTTP service.

Every image that enters prodvision goes through :func:`load_image`, so a photo is decoded the same way
whether it comes from a dataset folder, ``prodvision predict`` or an upload to ``prodvision serve``.

What it guarantees:

* EXIF orientation is applied (phone photos come out upright).
* Every PIL mode ends up as ``RGB`` (or ``L``): alpha is composited on white (catalog photos have a white
  background, not a black one), palette transparency included; 16-bit and 32-bit integer images are rescaled
  to 8 bits, not clipped; CMYK and other colour spaces are converted.
* Decompression bombs, absurd sizes and absurd aspect ratios are refused from the header, *before* decoding.
* Zero-byte, truncated and non-image files are refused with :class:`ImageLoadError`, which names the file
  and carries a machine-readable ``code``.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMG_EXTENSIONS", "ImageLimits", "ImageLoadError", "load_image", "probe_image"]

#: File extensions treated as images by the dataset loaders (lower case, with the dot).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]


@dataclass(frozen=True)
class ImageLimits:
    """What :func:`load_image` accepts. Checked from the header, before any pixel is decoded."""

    max_bytes: int = 50 * 1024 * 1024  # a 50 MB file is already far beyond any catalog photo
    max_pixels: int = 50_000_000  # ~7000 x 7000; a decoded RGB image of this size is 150 MB
    max_side: int = 20_000  # longest side in pixels
    min_side: int = 1  # raise to refuse thumbnails/tracking pixels
    max_aspect: float = 20.0  # longest side / shortest side; banners and strips are not product photos


class ImageLoadError(ValueError):
    """An image file was refused. ``code`` is one of :attr:`CODES`; ``str(err)`` names the file and the reason."""

    CODES = ("missing", "empty", "too_large", "not_image", "decompression_bomb", "bad_size", "truncated", "unreadable")

    def __init__(self, source: str, code: str, reason: str):
        if code not in self.CODES:
            raise ValueError(f"unknown ImageLoadError code {code!r}; choose from {self.CODES}")
        self.source, self.code, self.reason = source, code, reason
        super().__init__(f"{source}: {reason} [{code}]")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.source, self.code, self.reason))


def _read_bytes(source: ImageSource, name: str, limits: ImageLimits) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(limits.max_bytes + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageLoadError(name, "missing", "no such file")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageLoadError(name, "too_large", f"file is {size:,} bytes; the limit is {limits.max_bytes:,}")
        data = path.read_bytes()
    if len(data) == 0:
        raise ImageLoadError(name, "empty", "file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageLoadError(name, "too_large", f"data is over the limit of {limits.max_bytes:,} bytes")
    return data


def _open_checked(data: bytes, name: str, limits: ImageLimits) -> Image.Image:
    """Open the header only and refuse bad sizes before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(name, "decompression_bomb", f"refused before decoding: {e}") from None
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not_image", "not an image file PIL can identify") from None
    except (OSError, SyntaxError, ValueError) as e:  # corrupt headers surface as any of these
        raise ImageLoadError(name, "unreadable", f"header could not be read: {e}") from None
    w, h = im.size
    if w * h > limits.max_pixels:
        raise ImageLoadError(
            name, "decompression_bomb", f"{w}x{h} = {w * h:,} pixels is over the limit of {limits.max_pixels:,}"
        )
    if max(w, h) > limits.max_side or min(w, h) < limits.min_side:
        raise ImageLoadError(
            name, "bad_size", f"size {w}x{h} is outside the allowed sides [{limits.min_side}, {limits.max_side}]"
        )
    if max(w, h) / max(min(w, h), 1) > limits.max_aspect:
        raise ImageLoadError(
            name, "bad_size", f"aspect ratio of {w}x{h} is over the limit of {limits.max_aspect:g}:1"
        )
    return im


def _to_rgb_or_l(im: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL mode to ``mode`` ('RGB' or 'L') the way a catalog photo should look."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (and 32-bit int, which PIL uses for 16-bit PNGs) greyscale: rescale 0..65535 -> 0..255.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) <= 65535 else float(arr.max())
        im = Image.fromarray(np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 65535.0 if arr.max() <= 65535 else float(arr.max())
        im = Image.fromarray(np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "L" and "transparency" in im.info:
        im = im.convert("LA")
    elif im.mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode != mode:
        im = im.convert(mode)  # CMYK, YCbCr, LAB, HSV, 1, L -> RGB; RGB -> L (ITU-R 601-2 luma)
    return im


def load_image(
    source: ImageSource, *, mode: str = "RGB", limits: ImageLimits = ImageLimits(), name: str | None = None
) -> Image.Image:
    """Load one image safely and consistently.

    Args:
        source: a path, raw bytes or a binary file object.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (greyscale).
        limits: sizes refused before decoding.
        name: how the file is named in errors (defaults to the path, or ``"<upload>"``).

    Returns:
        A fully decoded ``PIL.Image.Image`` in ``mode``, EXIF orientation applied, uint8 per channel.

    Raises:
        ImageLoadError: the file is missing, empty, too large, not an image, a decompression bomb, of an
            absurd size or aspect ratio, truncated or otherwise undecodable. The message names the file.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', not {mode!r}")
    if name is None:
        name = str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<upload>")
    data = _read_bytes(source, name, limits)
    im = _open_checked(data, name, limits)
    try:
        im.seek(0)  # first frame of animated GIF/WebP/TIFF
        im.load()
        im = ImageOps.exif_transpose(im)
        return _to_rgb_or_l(im, mode)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, "decompression_bomb", str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        text = str(e)
        code = "truncated" if ("truncated" in text or "broken data stream" in text or isinstance(e, EOFError)) else "unreadable"
        raise ImageLoadError(name, code, f"could not be decoded: {text or type(e).__name__}") from None


def probe_image(source: ImageSource, *, limits: ImageLimits = ImageLimits(), name: str | None = None) -> tuple[int, int]:
    """Fully load an image the way training will and return its (width, height); raises :class:`ImageLoadError`."""
    return load_image(source, limits=limits, name=name).size
