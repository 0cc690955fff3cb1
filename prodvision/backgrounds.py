"""Complex backgrounds: product icons composited onto patches of real photos that ship offline.

The product-icon set has plain white backgrounds, like studio catalog shots. Sellers' own photos do not: a bag on a
kitchen table, shoes on gravel. To measure (and train against) that, :func:`foreground_mask` recovers each icon's
silhouette (the white background connected to the border), and :func:`composite` puts the product on a patch of a
real photo. The photos come from the scikit-image and scikit-learn wheels (no download); they are split into
disjoint pools, so a model trained with one pool's backgrounds is tested on photos it has never seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from .errors import ConfigError

__all__ = ["BACKGROUND_POOLS", "background_photos", "background_patches", "foreground_mask", "composite", "place",
           "RandomBackground"]

#: Offline photos by pool: "train" backgrounds for augmentation, "test" backgrounds for evaluation (disjoint).
BACKGROUND_POOLS = {
    "train": ("skimage:coffee", "skimage:astronaut", "sklearn:china.jpg", "skimage:brick", "skimage:grass"),
    "test": ("skimage:rocket", "sklearn:flower.jpg", "skimage:gravel", "skimage:immunohistochemistry"),
}


def background_photos(pool: str = "train") -> list[np.ndarray]:
    """The pool's photos as RGB uint8 arrays ``(H, W, 3)`` (greyscale textures repeated to 3 channels)."""
    if pool not in BACKGROUND_POOLS:
        raise ConfigError(f"unknown background pool {pool!r}; choose from {sorted(BACKGROUND_POOLS)}")
    out = []
    for name in BACKGROUND_POOLS[pool]:
        lib, item = name.split(":")
        if lib == "skimage":
            import skimage.data

            arr = getattr(skimage.data, item)()
        else:
            from sklearn.datasets import load_sample_image

            arr = load_sample_image(item)
        arr = np.asarray(arr, dtype=np.uint8)
        out.append(np.repeat(arr[..., None], 3, -1) if arr.ndim == 2 else arr[..., :3])
    return out


def background_patches(n: int, size: int, *, pool: str = "train", seed: int = 0) -> np.ndarray:
    """``n`` random ``size`` x ``size`` crops (scale 0.3-1.0 of the shorter side, resized) from the pool's photos.

    Returns:
        uint8 ``(n, size, size, 3)``.
    """
    rng = np.random.default_rng(seed)
    photos = background_photos(pool)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        ph = photos[rng.integers(len(photos))]
        h, w = ph.shape[:2]
        side = int(rng.uniform(0.3, 1.0) * min(h, w))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(ph[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(crop)
    return out


def foreground_mask(image: np.ndarray, *, tolerance: int = 12) -> np.ndarray:
    """The product's silhouette in a catalog image on a white background: ``True`` where the product is.

    Background = near-white pixels (every channel within ``tolerance`` of 255) connected to the image border, so
    white parts inside the product (a white shirt's body, a label) stay foreground.

    Args:
        image: RGB uint8 ``(H, W, 3)``.

    Returns:
        bool ``(H, W)``.
    """
    white = (np.asarray(image) >= 255 - tolerance).all(-1)  # (H, W)
    labels, _ = ndimage.label(white)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, border[border > 0])
    return ~background


def composite(image: np.ndarray, background: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
    """The product of ``image`` (white background) on ``background`` (same size); edges feathered by one pixel.

    Returns:
        RGB uint8 ``(H, W, 3)``.
    """
    image, background = np.asarray(image, np.float32), np.asarray(background, np.float32)
    if image.shape != background.shape:
        raise ConfigError(f"image {image.shape} and background {background.shape} must have the same shape")
    m = foreground_mask(image.astype(np.uint8)) if mask is None else mask
    alpha = ndimage.uniform_filter(m.astype(np.float32), size=3)[..., None]  # (H, W, 1), soft edge
    return (alpha * image + (1 - alpha) * background).round().clip(0, 255).astype(np.uint8)


def place(image: np.ndarray, background: np.ndarray, *, scale: float, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """The product of ``image`` (white background) shrunk to ``scale`` of the background's size and put at a random
    position on ``background``: a product in a scene, with its silhouette known (for localisation tests).

    Args:
        image: RGB uint8 ``(h, w, 3)`` on a white background.
        background: RGB uint8 ``(H, W, 3)``.
        scale: side of the product's image relative to the background's, in ``(0, 1]``.
        rng: draws the position.

    Returns:
        ``(scene, mask)``: RGB uint8 ``(H, W, 3)`` and bool ``(H, W)``, ``True`` on the product's pixels.
    """
    if not 0 < scale <= 1:
        raise ConfigError(f"place: scale must be in (0, 1], got {scale}")
    background = np.asarray(background, np.uint8)
    big_h, big_w = background.shape[:2]
    h, w = max(1, round(scale * big_h)), max(1, round(scale * big_w))
    small = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize((w, h), Image.Resampling.BILINEAR))
    y, x = int(rng.integers(0, big_h - h + 1)), int(rng.integers(0, big_w - w + 1))
    canvas = np.full_like(background, 255)
    canvas[y:y + h, x:x + w] = small
    mask = np.zeros((big_h, big_w), bool)
    mask[y:y + h, x:x + w] = foreground_mask(small)
    return composite(canvas, background, mask=mask), mask


@dataclass
class RandomBackground:
    """A transform for PIL catalog images: put the product on a random background patch (augmentation), or on a
    fixed patch per call order when ``patches`` is indexed explicitly by :meth:`fixed`."""

    patches: np.ndarray = field(repr=False)  # (P, S, S, 3) uint8 background patches
    p: float = 1.0  # probability of replacing the background

    def __repr__(self) -> str:  # part of a dataset's cache key: name what determines the patches
        return f"RandomBackground(p={self.p}, patches={self.patches.shape}, sum={int(self.patches.sum())})"

    def __call__(self, image: Image.Image) -> Image.Image:
        import torch

        if float(torch.rand(())) >= self.p:
            return image
        bg = self.patches[int(torch.randint(len(self.patches), ()))]
        return self.apply(image, bg)

    @staticmethod
    def apply(image: Image.Image, background: np.ndarray) -> Image.Image:
        rgb = image.convert("RGB")
        bg = Image.fromarray(background).resize(rgb.size, Image.Resampling.BILINEAR)
        return Image.fromarray(composite(np.asarray(rgb), np.asarray(bg)))
