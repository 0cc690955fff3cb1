"""Compositing products onto background photos: silhouettes, composites and placed scenes."""

import numpy as np
import pytest

from prodvision.backgrounds import composite, foreground_mask, place
from prodvision.errors import ConfigError


def _product(size=40):
    """A red square with a white hole in its middle on a white background (the hole must stay foreground)."""
    img = np.full((size, size, 3), 255, np.uint8)
    img[10:30, 10:30] = (200, 20, 20)
    img[18:22, 18:22] = 255
    return img


def test_foreground_mask_keeps_white_inside_the_product():
    m = foreground_mask(_product())
    assert m[12, 12] and m[20, 20] and not m[2, 2]
    assert m.sum() == 20 * 20


def test_composite_replaces_only_the_background():
    bg = np.zeros((40, 40, 3), np.uint8)
    out = composite(_product(), bg)
    assert (out[0:8, 0:8] == 0).all()  # background pixels come from the photo
    assert (out[12:28, 12:28] == _product()[12:28, 12:28]).all()  # the product is kept (away from its 1-px edge)
    with pytest.raises(ConfigError, match="same shape"):
        composite(_product(), np.zeros((20, 20, 3), np.uint8))


def test_place_puts_the_shrunk_product_where_its_mask_says():
    bg = np.zeros((80, 80, 3), np.uint8)
    scene, mask = place(_product(), bg, scale=0.5, rng=np.random.default_rng(0))
    assert scene.shape == (80, 80, 3) and mask.shape == (80, 80)
    assert 0.04 < mask.mean() < 0.07  # a 20x20-of-40 product at half of 80 px: about 10x10 of 80x80
    ys, xs = np.nonzero(mask)
    inside = scene[ys.min() + 2:ys.max() - 1, xs.min() + 2:xs.max() - 1]
    assert (inside[..., 0] > 150).mean() > 0.7  # red where the mask is
    assert (scene[~mask] < 60).mean() > 0.95  # the black background everywhere else (edges feathered)
    positions = {tuple(np.argwhere(place(_product(), bg, scale=0.5, rng=np.random.default_rng(s))[1])[0])
                 for s in range(5)}
    assert len(positions) > 1  # the position is drawn from the generator
    with pytest.raises(ConfigError, match="scale"):
        place(_product(), bg, scale=0.0, rng=np.random.default_rng(0))
