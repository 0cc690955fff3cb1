"""The one image loader: modes, EXIF, and every bad-input case refused with a typed error naming the file."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from prodvision.data import ImageLimits, ImageLoadError, load_image
from prodvision.data.images import decoded_nbytes


def _save(im: Image.Image, path, fmt="PNG", **kw):
    im.save(path, fmt, **kw)
    return path


def test_rgba_is_composited_on_white(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 0] = 255  # red ...
    arr[:4, :, 3] = 255  # ... opaque in the top half, fully transparent in the bottom half
    out = np.asarray(load_image(_save(Image.fromarray(arr, "RGBA"), tmp_path / "a.png")))
    assert out.shape == (8, 8, 3)
    assert (out[:4] == [255, 0, 0]).all()
    assert (out[4:] == [255, 255, 255]).all()  # white, not black


def test_la_and_palette_transparency(tmp_path):
    la = Image.fromarray(np.stack([np.full((4, 4), 10, np.uint8), np.zeros((4, 4), np.uint8)], -1), "LA")
    assert (np.asarray(load_image(_save(la, tmp_path / "la.png"))) == 255).all()
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.info["transparency"] = 0
    out = np.asarray(load_image(_save(p, tmp_path / "p.png", transparency=0)))
    assert (out == 255).all()


def test_cmyk_converted(tmp_path):
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(load_image(_save(cmyk, tmp_path / "c.jpg", "JPEG", quality=100)))
    assert out.shape == (4, 4, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_16bit_is_rescaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768], [65535, 1000]], np.uint16)
    im = Image.fromarray(arr)  # mode I;16
    out = np.asarray(load_image(_save(im, tmp_path / "g16.png"), mode="L"))
    assert out.tolist() == [[0, 128], [255, 4]]  # 65535 -> 255, 32768 -> 128; clipping would give 255 everywhere


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = _save(im, tmp_path / "o.jpg", "JPEG", exif=exif.tobytes())
    assert load_image(path).size == (10, 20)


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("source", ["path", "bytes"])
def test_decompression_bomb_refused_before_decoding(tmp_path, source):
    data = _png_header_only(100_000, 100_000)  # 10 gigapixels claimed by a ~60-byte file
    src = data if source == "bytes" else (tmp_path / "bomb.png").write_bytes(data) and tmp_path / "bomb.png"
    with pytest.raises(ImageLoadError) as e:
        load_image(src, name="bomb.png")
    assert e.value.code == "decompression_bomb"
    assert "bomb.png" in str(e.value)


def test_limits_are_configurable(tmp_path):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "ok.png")
    assert load_image(path).size == (100, 100)
    with pytest.raises(ImageLoadError) as e:
        load_image(path, limits=ImageLimits(max_pixels=5000))
    assert e.value.code == "decompression_bomb"


def test_absurd_aspect_ratio_refused(tmp_path):
    path = _save(Image.new("RGB", (2000, 10)), tmp_path / "strip.png")
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    assert e.value.code == "bad_size" and "aspect" in e.value.reason and "strip.png" in str(e.value)


def test_truncated_refused(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    assert e.value.code == "truncated" and "cut.jpg" in str(e.value)


@pytest.mark.parametrize("content,code", [(b"", "empty"), (b"hello, I am text", "not_image")])
def test_empty_and_non_image_refused(tmp_path, content, code):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    assert e.value.code == code and str(path) in str(e.value)


def test_missing_and_too_large(tmp_path):
    with pytest.raises(ImageLoadError) as e:
        load_image(tmp_path / "nope.png")
    assert e.value.code == "missing"
    path = _save(Image.new("RGB", (64, 64)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError) as e:
        load_image(path, limits=ImageLimits(max_bytes=10))
    assert e.value.code == "too_large"


def test_error_pickles_for_worker_processes():
    import pickle

    err = pickle.loads(pickle.dumps(ImageLoadError("a.png", "truncated", "cut short")))
    assert (err.source, err.code, err.reason) == ("a.png", "truncated", "cut short")


def test_greyscale_mode_and_bad_mode(tmp_path):
    path = _save(Image.new("RGB", (4, 4), (255, 0, 0)), tmp_path / "r.png")
    assert load_image(path, mode="L").mode == "L"
    with pytest.raises(ValueError, match="mode"):
        load_image(path, mode="CMYK")


def _photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Smooth random colour blobs: photo-like, so scaled decodes can be compared with full-size ones."""
    small = np.random.default_rng(seed).integers(0, 256, (12, 18, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_reduced_decode_leaves_smaller_images_exactly_alone(fmt):
    data = _bytes(_photo((700, 500)), fmt)
    full = np.asarray(load_image(data))
    for side in (700, 701, 2000):  # longest side already <= max_decode_side
        assert np.array_equal(np.asarray(load_image(data, max_decode_side=side)), full)
    half = load_image(data, max_decode_side=350)  # 700 // 350 = 2: reduced
    assert half.size == (350, 250)


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "LA"), ("GIF", "P"),
                                      ("PNG", "I;16"), ("TIFF", "RGB"), ("JPEG", "CMYK")])
def test_reduced_decode_keeps_the_longest_side_and_the_look(fmt, mode):
    im = _photo((1500, 1000))
    im = Image.fromarray((np.asarray(im.convert("L")).astype(np.uint16) * 257)) if mode == "I;16" else im.convert(mode)
    data = _bytes(im, fmt)
    full = load_image(data)
    small = load_image(data, max_decode_side=384)
    assert small.mode == "RGB" and max(small.size) >= 384 and small.size[0] / small.size[1] == pytest.approx(1.5, 0.01)
    assert max(small.size) < 768  # JPEG: 1/2-scale draft (750 px); others: reduced by 3 (500 px)
    diff = np.abs(np.asarray(full.resize(small.size, Image.Resampling.BOX), np.float32) - np.asarray(small, np.float32))
    assert diff.mean() < (3.0 if mode == "P" else 1.5), diff.mean()  # a dithered palette averages loosest


def test_reduced_decode_drafts_jpeg_and_keeps_exif_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = _bytes(_photo((4000, 2000)), "JPEG", exif=exif.tobytes())
    assert load_image(data).size == (2000, 4000)
    assert load_image(data, max_decode_side=500).size == (250, 500)  # drafted at 1/8 scale, then upright
    assert load_image(data, max_decode_side=600).size == (500, 1000)  # 1/4: the longest side stays >= 600


def test_reduced_decode_composites_transparency_on_white():
    arr = np.zeros((1000, 1600, 4), np.uint8)
    arr[..., 0] = 255
    arr[:500, :, 3] = 255  # opaque red top half, transparent bottom half
    out = np.asarray(load_image(_bytes(Image.fromarray(arr, "RGBA"), "PNG"), max_decode_side=400))
    assert out.shape == (250, 400, 3)
    assert (out[:125] == [255, 0, 0]).all() and (out[125:] == 255).all()


def test_decoded_nbytes_from_the_header():
    png = _bytes(Image.new("RGB", (8000, 5000), (10, 20, 30)), "PNG")  # ~125 KB on the wire
    limits = ImageLimits(max_pixels=50_000_000)
    full = decoded_nbytes(png, limits=limits)
    assert full == 8000 * 5000 * 4 * 2  # decoded buffer (Pillow pads RGB to 4 bytes) + the RGB result
    assert decoded_nbytes(png, limits=limits, max_decode_side=896) == 8000 * 5000 * 4 + 1000 * 625 * 4
    jpeg = _bytes(_photo((4000, 3000)), "JPEG")
    assert decoded_nbytes(jpeg, max_decode_side=500) == 500 * 375 * 4 * 2  # decoded at 1/8 scale: no full buffer
    grey = _bytes(Image.new("L", (100, 50)), "PNG")
    assert decoded_nbytes(grey) == 100 * 50 * (1 + 4)
    with pytest.raises(ImageLoadError) as e:  # the header checks of load_image run first
        decoded_nbytes(_png_header_only(100_000, 100_000), name="bomb.png", max_decode_side=896)
    assert e.value.code == "decompression_bomb" and "bomb.png" in str(e.value)


def test_max_decode_side_must_be_positive():
    data = _bytes(Image.new("RGB", (10, 10)), "PNG")
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match="max_decode_side"):
            load_image(data, max_decode_side=bad)
        with pytest.raises(ValueError, match="max_decode_side"):
            decoded_nbytes(data, max_decode_side=bad)
