"""Preprocessing presets (torchvision.transforms.v2) and their batched twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from prodvision.data import ArrayDataset
from prodvision.transforms import AugmentConfig, BatchAugment, eval_transform, is_batchable, train_transform


@pytest.mark.parametrize("in_chans", [1, 3])
def test_eval_transform_shapes_for_pil_and_tensor(in_chans, rng):
    t = eval_transform(size=32, in_chans=in_chans, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    rgb = Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    grey = tv_tensors.Image(torch.from_numpy(rng.integers(0, 255, (1, 28, 28), dtype=np.uint8)))
    for x in (rgb, grey):
        out = t(x)
        assert out.shape == (in_chans, 32, 32) and out.dtype == torch.float32


def test_eval_normalisation_values():
    t = eval_transform(size=2, in_chans=1, mean=(0.5,), std=(0.5,))
    x = tv_tensors.Image(torch.tensor([[[0, 255], [255, 0]]], dtype=torch.uint8))
    torch.testing.assert_close(t(x), torch.tensor([[[-1.0, 1.0], [1.0, -1.0]]]))


def test_presets_are_keyword_only():
    with pytest.raises(TypeError):
        eval_transform(32)  # type: ignore[misc]
    with pytest.raises(TypeError):
        train_transform(32)  # type: ignore[misc]


def test_batched_eval_equals_per_image(rng):
    images = rng.integers(0, 255, (20, 28, 28), dtype=np.uint8)
    t = eval_transform(size=32, in_chans=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    assert is_batchable(t)
    ds = ArrayDataset(images, np.arange(20) % 10, [str(i) for i in range(10)], t)
    batch = ds.__getitems__(list(range(20)))
    for i, (x, y) in enumerate(batch):
        torch.testing.assert_close(x, ds[i][0])
        assert y == i % 10
    assert not is_batchable(train_transform(size=28, augment=AugmentConfig(hflip=0.5)))


def test_batch_augment_flip_and_translate_per_image(rng):
    x = torch.from_numpy(rng.integers(0, 255, (64, 1, 12, 12), dtype=np.uint8))
    ident = BatchAugment(size=12, in_chans=1, mean=(0.0,), std=(1 / 255,), augment=AugmentConfig(hflip=0.0))
    torch.testing.assert_close(ident(x), x.float())  # no augmentation: just scaling/normalising
    flip = BatchAugment(size=12, in_chans=1, mean=(0.0,), std=(1 / 255,), augment=AugmentConfig(hflip=0.5))
    torch.manual_seed(0)
    out = flip(x)
    flipped = torch.tensor([torch.equal(o, xi.float().flip(-1)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi.float()) for o, xi in zip(out, x)])
    assert (flipped | kept).all() and 10 < flipped.sum() < 54  # each image decided on its own
    shift = BatchAugment(size=12, in_chans=1, mean=(0.0,), std=(1 / 255,),
                         augment=AugmentConfig(hflip=0.0, crop_padding=2))
    out = shift(x)
    for o, xi in zip(out, x):  # every output is the input translated by (dy, dx) in [-2, 2], borders replicated
        centre = o[0, 4:8, 4:8]
        assert any(torch.equal(centre, xi[0, 4 + dy:8 + dy, 4 + dx:8 + dx].float())
                   for dy in range(-2, 3) for dx in range(-2, 3))


def test_an_in_memory_item_with_a_batch_transform_is_that_item_of_a_batch(rng):
    from prodvision.data import ArrayDataset

    imgs = rng.integers(0, 255, (6, 12, 12), dtype=np.uint8)
    ds = ArrayDataset(imgs, np.arange(6) % 2, ["a", "b"],
                      BatchAugment(size=16, in_chans=1, mean=(0.0,), std=(1 / 255,), augment=AugmentConfig(hflip=0.0)))
    x, y = ds[4]  # one item (e.g. to probe a trunk's output shape) goes through the batch path
    assert x.shape == (1, 16, 16) and y == 0
    torch.testing.assert_close(x, ds.__getitems__([4])[0][0])


def test_batch_augment_all_ops_shapes_and_range():
    torch.manual_seed(0)
    x = torch.randint(0, 255, (16, 3, 40, 40), dtype=torch.uint8)
    aug = AugmentConfig(hflip=0.5, scale=(0.5, 1.0), rotation=20, brightness=0.4, contrast=0.4, erasing=1.0, fill=255)
    t = BatchAugment(size=32, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3, augment=aug)
    out = t(x)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert ((out == 0).all(1).flatten(1).any(1)).all()  # every image has an erased patch (erasing=1.0)


# ---------------------------------------------------------------------------------------------- distributions
def _both(augment: AugmentConfig, x: torch.Tensor, size: int):
    """The same augmentation by BatchAugment (whole batch) and by torchvision's v2 pipeline (image by image);
    outputs in 0..255 (identity normalisation) so they can be measured alike."""
    common = dict(size=size, in_chans=x.shape[1], mean=(0.0,) * x.shape[1], std=(1 / 255,) * x.shape[1])
    torch.manual_seed(0)
    batched = BatchAugment(**common, augment=augment)(x)
    per = train_transform(**common, augment=augment)
    torch.manual_seed(1)
    single = torch.stack([per(tv_tensors.Image(xi)) for xi in x])
    return batched, single


def test_batch_augment_flip_rate_matches_torchvision():
    x = torch.zeros(2000, 1, 8, 8, dtype=torch.uint8)
    x[:, :, :, :2] = 255  # a bar on the left: flipped images have it on the right
    a, b = _both(AugmentConfig(hflip=0.3), x, 8)
    rates = [float((o[:, 0, 0, -1] > 128).float().mean()) for o in (a, b)]
    for r in rates:  # binomial(2000, 0.3): sd ~0.010
        assert abs(r - 0.3) < 0.04, rates
    assert abs(rates[0] - rates[1]) < 0.05


def test_batch_augment_crop_area_matches_torchvision():
    """RandomResizedCrop: read each crop's box from a coordinate image (x and y ramps in two channels)."""
    n, s = 1500, 64
    ramp = torch.linspace(0, 255, s).round().to(torch.uint8)
    x = torch.stack([ramp.expand(s, s), ramp[:, None].expand(s, s), torch.zeros(s, s, dtype=torch.uint8)])
    x = x.expand(n, 3, s, s).contiguous()
    a, b = _both(AugmentConfig(hflip=0.0, scale=(0.5, 1.0)), x, 32)

    def areas(out):
        w = (out[:, 0].amax((1, 2)) - out[:, 0].amin((1, 2))) / 255
        h = (out[:, 1].amax((1, 2)) - out[:, 1].amin((1, 2))) / 255
        return (w * h).numpy()

    ours, theirs = areas(a), areas(b)
    for v in (ours, theirs):  # the requested range (the box edges are read ~one output pixel inside)
        assert np.quantile(v, 0.01) > 0.4 and np.quantile(v, 0.99) <= 1.0
    assert abs(ours.mean() - theirs.mean()) < 0.03 and abs(np.median(ours) - np.median(theirs)) < 0.04


def test_batch_augment_rotation_range_matches_torchvision():
    """The angle of a centred bar, from its second moments, is uniform in [-rotation, rotation] for both."""
    n, s = 1500, 33
    x = torch.zeros(n, 1, s, s, dtype=torch.uint8)
    x[:, :, 15:18, 4:29] = 255  # a horizontal bar through the centre
    a, b = _both(AugmentConfig(hflip=0.0, rotation=20, fill=0), x, s)
    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")

    def angles(out):
        w = out[:, 0] / out[:, 0].sum((1, 2), keepdim=True)
        mx, my = (w * xx).sum((1, 2), keepdim=True), (w * yy).sum((1, 2), keepdim=True)
        mu20, mu02 = (w * (xx - mx) ** 2).sum((1, 2)), (w * (yy - my) ** 2).sum((1, 2))
        mu11 = (w * (xx - mx) * (yy - my)).sum((1, 2))
        return np.degrees(0.5 * torch.atan2(2 * mu11, mu20 - mu02).numpy())

    ours, theirs = np.abs(angles(a)), np.abs(angles(b))  # the sign convention of "degrees" may differ: compare |angle|
    for v in (ours, theirs):
        assert v.max() < 21.5 and abs(v.mean() - 10) < 1.0  # |U(-20, 20)| has mean 10
    assert abs(ours.mean() - theirs.mean()) < 1.0


def _garment():
    """A Fashion-MNIST-like image: a light, shaded shape on black spanning the full height (the dataset's framing)."""
    yy, xx = np.mgrid[0:28, 0:28]
    shape = (np.abs(xx - 13.5) < 4 + yy / 3) & (yy >= 0)  # a widening trapezoid: a dress
    return (shape * (120 + 4 * yy)).clip(0, 255).astype(np.uint8)


def test_fashion_mnist_to_photo_is_a_catalog_photo():
    from prodvision.transforms import fashion_mnist_to_photo

    photo = fashion_mnist_to_photo(_garment(), np.random.default_rng(0))
    a = np.asarray(photo)
    assert photo.mode == "RGB" and 80 <= min(a.shape[:2]) <= 160
    assert (a[0, 0] == 255).all() and (a[-1, -1] == 255).all()  # white background
    assert a.min() < 160  # a dark product on it
    again = np.asarray(fashion_mnist_to_photo(_garment(), np.random.default_rng(0)))
    np.testing.assert_array_equal(a, again)  # every random choice comes from the generator
    assert not np.array_equal(np.asarray(fashion_mnist_to_photo(_garment(), np.random.default_rng(1))), a)


def test_photo_to_fashion_mnist_undoes_the_catalog_rendering():
    """The dataset's conversion (trim, resize, centre, negate) recovers the garment from any rendering of it, while
    a plain greyscale resize of the same photo does not look like the dataset at all."""
    from prodvision.transforms import fashion_mnist_to_photo, photo_to_fashion_mnist

    x = _garment().astype(np.float32) / 255
    for s in range(5):
        photo = fashion_mnist_to_photo(_garment(), np.random.default_rng(s))
        back = np.asarray(photo_to_fashion_mnist(photo), dtype=np.float32) / 255
        plain = np.asarray(photo.convert("L").resize((28, 28)), dtype=np.float32) / 255
        assert np.corrcoef(back.ravel(), x.ravel())[0, 1] > 0.9
        assert np.corrcoef(plain.ravel(), x.ravel())[0, 1] < 0.5
