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

A caller that will shrink the image anyway (the HTTP service feeds a 224 px model) can pass ``max_decode_side``: a
JPEG is then decoded at 1/2, 1/4 or 1/8 scale by the decoder itself (``Image.draft``), other formats are reduced by
an integer factor right after decoding, so the full-size buffer is freed at once. :func:`decoded_nbytes` estimates,
from the header alone, how much memory such a load takes (the service reserves it before decoding).
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import ImageLimits
from ..errors import ProdvisionError

__all__ = ["IMG_EXTENSIONS", "ImageLimits", "ImageLoadError", "decoded_nbytes", "load_image", "probe_image"]

#: File extensions treated as images by the dataset loaders (lower case, with the dot).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]


class ImageLoadError(ProdvisionError, ValueError):
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


_PILLOW_LIMIT = threading.Lock()


def _open_header(data: bytes) -> Image.Image:
    """``Image.open`` with Pillow's own pixel limit lifted: our limits (checked right after, from the same header)
    replace it, so ``max_pixels`` above Pillow's default (~179 Mpx) works. The lock keeps threads from racing on the
    module-level setting; it is restored at once."""
    with _PILLOW_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open_checked(data: bytes, name: str, limits: ImageLimits) -> Image.Image:
    """Open the header only and refuse bad sizes before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = _open_header(data)
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


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow allocates per pixel of ``mode``: 1 byte for 1/L/P, 2 for 16-bit, else 4 (RGB is stored as RGBX)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def _draft_size(size: tuple[int, int], max_decode_side: int) -> tuple[int, int]:
    """The size to ask ``Image.draft`` for: its scale (1, 2, 4 or 8) then keeps the longest side >= the target."""
    w, h = size
    longest = max(w, h)
    if longest <= max_decode_side:
        return size
    return max(1, w * max_decode_side // longest), max(1, h * max_decode_side // longest)


def _reduce_factor(size: tuple[int, int], max_decode_side: int | None) -> int:
    """The integer factor that shrinks ``size`` as far as possible with its longest side staying >= the target."""
    return 1 if max_decode_side is None else max(1, max(size) // max_decode_side)


#: Modes whose pixels cannot be box-averaged as stored (palette indices, bits, 16-bit): converted before reducing.
_CONVERT_BEFORE_REDUCE = ("1", "P", "I;16", "I;16L", "I;16B", "I;16N")


def _check_decode_side(max_decode_side: int | None) -> None:
    if max_decode_side is not None and (not isinstance(max_decode_side, int) or max_decode_side < 1):
        raise ValueError(f"max_decode_side must be a positive int or None, not {max_decode_side!r}")


def decoded_nbytes(source: ImageSource, *, limits: ImageLimits = ImageLimits(), name: str | None = None,
                   max_decode_side: int | None = None) -> int:
    """Estimate, from the header only, the peak memory in bytes of ``load_image(source, max_decode_side=...)``.

    That is the decoded buffer (``w * h`` times what Pillow stores per pixel of the file's mode: 4 bytes for RGB,
    which Pillow pads to RGBX; at the reduced JPEG draft size when ``max_decode_side`` allows one) plus the RGB
    result (after the reduction). Conversion temporaries of exotic modes (palette with transparency, 16-bit) are
    not counted: this sizes admission control, it is not an exact bound.

    Args:
        source: a path, raw bytes or a binary file object (a file object is read; pass bytes to reuse them).
        limits, name: as for :func:`load_image`; the same header checks run.
        max_decode_side: as for :func:`load_image`.

    Raises:
        ImageLoadError: the header is refused (the same errors :func:`load_image` raises before decoding).
    """
    _check_decode_side(max_decode_side)
    if name is None:
        name = str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<upload>")
    im = _open_checked(_read_bytes(source, name, limits), name, limits)
    if max_decode_side is not None and max(im.size) > max_decode_side:
        im.draft(im.mode, _draft_size(im.size, max_decode_side))  # JPEG: sets the decode scale; others: no-op
    w, h = im.size
    f = _reduce_factor(im.size, max_decode_side)
    full = w * h * _bytes_per_pixel(im.mode)
    if f >= 2 and im.mode in _CONVERT_BEFORE_REDUCE:
        full += w * h * 8  # converted at full size (RGBA, then composited) before the reduction
    return full + -(-w // f) * -(-h // f) * 4


def load_image(
    source: ImageSource, *, mode: str = "RGB", limits: ImageLimits = ImageLimits(), name: str | None = None,
    max_decode_side: int | None = None,
) -> Image.Image:
    """Load one image safely and consistently.

    Args:
        source: a path, raw bytes or a binary file object.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (greyscale).
        limits: sizes refused before decoding.
        name: how the file is named in errors (defaults to the path, or ``"<upload>"``).
        max_decode_side: for a caller that will shrink the image: the longest side it needs, at least. None (the
            default) decodes at full size. Otherwise a JPEG is decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``)
            and any image whose longest side is still >= 2x this is reduced by an integer factor (box filter) right
            after decoding, freeing the full-size buffer; the result's longest side stays >= ``max_decode_side``
            (an image already smaller is returned exactly as with None).

    Returns:
        A fully decoded ``PIL.Image.Image`` in ``mode``, EXIF orientation applied, uint8 per channel.

    Raises:
        ImageLoadError: the file is missing, empty, too large, not an image, a decompression bomb, of an
            absurd size or aspect ratio, truncated or otherwise undecodable. The message names the file.
        ValueError: ``mode`` is not RGB/L, or ``max_decode_side`` is not a positive int.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', not {mode!r}")
    _check_decode_side(max_decode_side)
    if name is None:
        name = str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<upload>")
    data = _read_bytes(source, name, limits)
    im = _open_checked(data, name, limits)
    try:
        im.seek(0)  # first frame of animated GIF/WebP/TIFF
        if max_decode_side is not None and max(im.size) > max_decode_side:
            im.draft(im.mode, _draft_size(im.size, max_decode_side))  # JPEG: decoded at 1/2-1/8 scale; others: no-op
        im.load()
        factor = _reduce_factor(im.size, max_decode_side)
        if factor >= 2:
            ImageOps.exif_transpose(im, in_place=True)  # no full-size copy
            if im.mode in _CONVERT_BEFORE_REDUCE:
                im = _to_rgb_or_l(im, mode)
            im = im.reduce(factor)  # the full-size buffer goes with the last reference to the decoded image
        else:
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
