"""Preprocessing presets built with ``torchvision.transforms.v2`` from a model's input spec.

Training and inference share :func:`eval_transform`'s resize/normalise steps, so a photo classified by
``prodvision predict`` or the HTTP service becomes exactly the tensor the model was evaluated on.
Inputs may be PIL images (from :func:`prodvision.data.load_image`) or uint8 ``(C, H, W)`` tensors.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from .backgrounds import RandomBackground, background_patches
from .config import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig, InputSpec
from .errors import ConfigError

__all__ = ["InputSpec", "eval_transform", "train_transform", "spec_transform", "AugmentConfig", "BatchAugment",
           "is_batchable", "photo_to_fashion_mnist", "fashion_mnist_to_photo", "IMAGENET_MEAN", "IMAGENET_STD"]

_INTERP = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
           "nearest": v2.InterpolationMode.NEAREST}


def _channels(in_chans: int) -> list:
    # Greyscale images for a 3-channel model are repeated; colour images for a 1-channel model become luma.
    return [v2.Grayscale(num_output_channels=in_chans) if in_chans == 1 else _ToRGB()]


class _ToRGB(v2.Transform):
    """Repeat a 1-channel image tensor to 3 channels; leave 3-channel images alone."""

    def transform(self, inpt, params):
        if isinstance(inpt, torch.Tensor) and inpt.ndim >= 3 and inpt.shape[-3] == 1:
            return inpt.expand(*inpt.shape[:-3], 3, *inpt.shape[-2:]).clone()
        return inpt


def eval_transform(*, size: int, in_chans: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   interpolation: str = "bilinear", crop_pct: float = 1.0) -> v2.Compose:
    """Deterministic preprocessing: resize (and optional centre crop) -> float -> channels -> normalise.

    Returns:
        A transform mapping a PIL image or uint8 ``(C, H, W)`` tensor to float32 ``(in_chans, size, size)``.
    """
    spec = InputSpec(size=size, in_chans=in_chans, mean=tuple(mean), std=tuple(std),
                     interpolation=interpolation, crop_pct=crop_pct)
    m, s = spec.norm()
    interp = _INTERP[interpolation]
    resize = ([v2.Resize((size, size), interpolation=interp, antialias=True)] if crop_pct >= 1.0 else
              [v2.Resize(int(round(size / crop_pct)), interpolation=interp, antialias=True), v2.CenterCrop(size)])
    return v2.Compose([v2.ToImage(), *resize, *_channels(in_chans), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(m, s)])


def spec_transform(spec: InputSpec, *, deploy: bool = False) -> v2.Compose:
    """:func:`eval_transform` for an :class:`InputSpec`. With ``deploy=True`` a spec's ``photo_style`` is applied
    first (uploaded photos become what the model was trained on; in-memory dataset images already are). Every image
    *file* takes the deploy path: ``prodvision predict``, the service and ``prodvision evaluate`` on a folder or CSV."""
    t = eval_transform(size=spec.size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std,
                       interpolation=spec.interpolation, crop_pct=spec.crop_pct)
    if deploy and spec.photo_style == "fashion-mnist":
        return v2.Compose([v2.Lambda(lambda im: photo_to_fashion_mnist(im, size=spec.size)), t])
    return t


def photo_to_fashion_mnist(image, *, size: int = 28, tolerance: float = 0.05):
    """Convert a product photo the way Zalando's photos became Fashion-MNIST (Xiao et al., 2017, section 2).

    The paper's steps: trim the edges close to the corner colour (within 5% of the intensity range), resize the
    longer edge to 28 px, sharpen (Gaussian, radius and sigma 1), extend the shorter edge to 28 px with the product
    centred, negate, convert to 8-bit greyscale. A catalog photo (dark product on a light background) thus becomes a
    light product on black. An image whose background is already dark (e.g. a Fashion-MNIST image saved as PNG) is
    only trimmed and centred, not negated twice.

    Args:
        image: a PIL image (any mode; :func:`prodvision.data.load_image` gives RGB).
        size: the output side (28 for Fashion-MNIST models).

    Returns:
        A greyscale (mode "L") PIL image of ``size`` x ``size``.
    """
    import numpy as np
    from PIL import Image, ImageFilter, ImageOps

    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)  # (H, W, 3)
    corners = np.stack([rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]])
    background = np.median(corners, axis=0)  # (3,)
    mask = np.abs(rgb - background).max(-1) > tolerance * 255  # (H, W): pixels that are not background
    if mask.any():
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        rgb = rgb[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    im = Image.fromarray(rgb.astype(np.uint8))
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    im = im.filter(ImageFilter.UnsharpMask(radius=1, percent=100, threshold=0))
    bg = tuple(int(v) for v in background)
    canvas = Image.new("RGB", (size, size), bg)
    canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    grey = canvas.convert("L")
    return ImageOps.invert(grey) if float(np.mean(background)) > 127 else grey


def fashion_mnist_to_photo(image, rng, *, side: tuple[int, int] = (80, 160), fill: tuple[float, float] = (0.5, 0.9),
                           max_aspect: float = 1.5):
    """Render a Fashion-MNIST image the way a catalog shows a product: a controlled stand-in for a product photo.

    The light-on-black garment becomes a dark, colour-tinted product on white, enlarged (bicubic) to fill a random
    ``fill`` fraction of a canvas whose shorter side is drawn from ``side`` and whose aspect ratio goes up to
    ``max_aspect``, at a random position: what :func:`photo_to_fashion_mnist` undoes and a plain resize does not.

    Args:
        image: a ``(28, 28)`` uint8 array or greyscale PIL image (light product on black).
        rng: a ``numpy.random.Generator``; every random choice (size, aspect, position, colour) comes from it.

    Returns:
        An RGB PIL image.
    """
    import numpy as np
    from PIL import Image

    a = np.asarray(image, dtype=np.float32) / 255.0  # (28, 28): the garment's "ink"
    short = int(rng.integers(side[0], side[1] + 1))
    w, h = (round(short * float(rng.uniform(1.0, max_aspect))), short)
    if rng.random() < 0.5:
        w, h = h, w
    g = max(8, round(min(w, h) * float(rng.uniform(*fill))))  # the garment's side in the photo
    big = np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((g, g), Image.Resampling.BICUBIC),
                     dtype=np.float32) / 255.0
    colour = rng.uniform(0, 160, size=3).astype(np.float32)  # a dark-to-mid product colour
    photo = np.full((h, w, 3), 255.0, dtype=np.float32)
    top, left = int(rng.integers(0, h - g + 1)), int(rng.integers(0, w - g + 1))
    ink = big[..., None]
    photo[top:top + g, left:left + g] = 255.0 * (1 - ink) + colour * ink
    return Image.fromarray(photo.round().clip(0, 255).astype(np.uint8), mode="RGB")


def train_transform(*, size: int, in_chans: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    interpolation: str = "bilinear", augment: AugmentConfig = AugmentConfig()) -> v2.Compose:
    """Training preprocessing: the :func:`eval_transform` steps with ``augment``'s random changes in between."""
    spec = InputSpec(size=size, in_chans=in_chans, mean=tuple(mean), std=tuple(std), interpolation=interpolation)
    m, s = spec.norm()
    interp = _INTERP[interpolation]
    a = augment
    steps: list = []
    if a.background:
        steps.append(RandomBackground(background_patches(256, 128, pool="train", seed=0), p=a.background))
    steps.append(v2.ToImage())
    if a.scale is not None:
        steps.append(v2.RandomResizedCrop(size, scale=a.scale, interpolation=interp, antialias=True))
    else:
        steps.append(v2.Resize((size, size), interpolation=interp, antialias=True))
    if a.crop_padding:
        steps.append(v2.RandomCrop(size, padding=a.crop_padding, padding_mode="edge"))
    if a.hflip:
        steps.append(v2.RandomHorizontalFlip(a.hflip))
    if a.rotation:
        steps.append(v2.RandomRotation(a.rotation, interpolation=v2.InterpolationMode.BILINEAR, fill=a.fill))
    if a.brightness or a.contrast:
        steps.append(v2.ColorJitter(brightness=a.brightness or None, contrast=a.contrast or None))
    steps += [*_channels(in_chans), v2.ToDtype(torch.float32, scale=True), v2.Normalize(m, s)]
    if a.erasing:
        steps.append(v2.RandomErasing(p=a.erasing, value=0))
    return v2.Compose(steps)


# ---------------------------------------------------------------------------------------------- batched versions
class BatchAugment(torch.nn.Module):
    """:func:`train_transform` for a whole batch at once, with **independent random parameters per image**.

    ``torchvision.transforms.v2`` draws one set of random parameters per call, so on a batch every image would get
    the same flip and crop. This module draws them per image and applies them with batched tensor ops (gather,
    ``roi_align``, ``grid_sample``), which is much faster than a per-image v2 pipeline on small in-memory images
    (Fashion-MNIST) and runs on the GPU as well. The deterministic tail (``ToDtype`` + ``Normalize``) is v2's.

    Input: uint8 ``(B, C, H, W)``. Output: float32 ``(B, in_chans, size, size)`` normalised.
    """

    batched = True

    def __init__(self, *, size: int, in_chans: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 interpolation: str = "bilinear", augment: AugmentConfig = AugmentConfig()):
        super().__init__()
        if augment.background:
            raise ConfigError("background augmentation needs catalog images on a white background (image files), "
                              "not in-memory arrays")
        self.size, self.in_chans, self.augment, self.interpolation = size, in_chans, augment, interpolation
        m, s = InputSpec(size=size, in_chans=in_chans, mean=tuple(mean), std=tuple(std)).norm()
        self.tail = v2.Compose([*_channels(in_chans), v2.ToDtype(torch.float32, scale=True), v2.Normalize(m, s)])

    def extra_repr(self) -> str:
        return f"size={self.size}, in_chans={self.in_chans}, augment={self.augment}, tail={self.tail}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import roi_align

        a, (b, c, h, w), dev = self.augment, x.shape, x.device
        x = x.float()  # (B, C, H, W) in 0..255
        if a.scale is not None:  # RandomResizedCrop, sampled as torchvision does, then resized
            x0, y0, cw, ch = _resized_crop_boxes(b, h, w, a.scale, dev)
            boxes = torch.stack([torch.arange(b, device=dev, dtype=x.dtype), x0, y0, x0 + cw, y0 + ch], 1).to(x.dtype)
            x = roi_align(x, boxes, output_size=(self.size, self.size), spatial_scale=1.0, sampling_ratio=2,
                          aligned=True)
        elif (h, w) != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode=self.interpolation,
                                                antialias=True, align_corners=False)
        h = w = self.size
        if a.crop_padding:  # translate by up to crop_padding px, replicating the border (like RandomCrop's edge mode)
            p = a.crop_padding
            dy = torch.randint(-p, p + 1, (b, 1), device=dev)
            dx = torch.randint(-p, p + 1, (b, 1), device=dev)
            rows = (torch.arange(h, device=dev)[None] + dy).clamp(0, h - 1)  # (B, H)
            cols = (torch.arange(w, device=dev)[None] + dx).clamp(0, w - 1)  # (B, W)
            x = x[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
        if a.hflip:
            flip = torch.rand(b, device=dev) < a.hflip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if a.rotation:
            ang = torch.empty(b, device=dev).uniform_(-a.rotation, a.rotation) * torch.pi / 180
            cos, sin = ang.cos(), ang.sin()
            theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                                 torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)  # (B, 2, 3)
            grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
            fill = float(a.fill)
            x = torch.nn.functional.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                                                align_corners=False) + fill
        if a.brightness:
            f = torch.empty(b, 1, 1, 1, device=dev).uniform_(max(0.0, 1 - a.brightness), 1 + a.brightness)
            x = x * f
        if a.contrast:
            f = torch.empty(b, 1, 1, 1, device=dev).uniform_(max(0.0, 1 - a.contrast), 1 + a.contrast)
            gray = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - gray) * f + gray
        x = x.clamp(0, 255).round().to(torch.uint8)
        out = self.tail(x)
        if a.erasing:  # RandomErasing: a rectangle of 2-33% of the image set to 0, per image with prob. erasing
            area = torch.empty(b, device=dev).uniform_(0.02, 0.33) * h * w
            logr = torch.empty(b, device=dev).uniform_(torch.log(torch.tensor(0.3)), torch.log(torch.tensor(3.3)))
            eh = (area / logr.exp()).sqrt().clamp(1, h).floor()
            ew = (area * logr.exp()).sqrt().clamp(1, w).floor()
            y0 = (torch.rand(b, device=dev) * (h - eh + 1)).floor()
            x0 = (torch.rand(b, device=dev) * (w - ew + 1)).floor()
            yy = torch.arange(h, device=dev)[None, :, None]
            xx = torch.arange(w, device=dev)[None, None, :]
            box = (yy >= y0[:, None, None]) & (yy < (y0 + eh)[:, None, None]) & \
                  (xx >= x0[:, None, None]) & (xx < (x0 + ew)[:, None, None])  # (B, H, W)
            on = (torch.rand(b, device=dev) < a.erasing)[:, None, None]
            out = out.masked_fill((box & on)[:, None], 0.0)
        return out


def _resized_crop_boxes(b: int, h: int, w: int, scale: tuple[float, float], dev, attempts: int = 10,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[torch.Tensor, ...]:
    """Per image, ``RandomResizedCrop.get_params``'s box, vectorised: up to ``attempts`` draws of (area in ``scale``,
    log-uniform aspect in ``ratio``) rounded to whole pixels, the first that fits the image wins; if none fits, the
    whole image (clipped to the ratio range). Returns float ``x0, y0, width, height``, each ``(B,)``."""
    area = torch.empty(b, attempts, device=dev).uniform_(*scale) * (h * w)  # (B, A)
    logr = torch.empty(b, attempts, device=dev).uniform_(float(torch.log(torch.tensor(ratio[0]))),
                                                         float(torch.log(torch.tensor(ratio[1]))))
    cw = (area * logr.exp()).sqrt().round()
    ch = (area / logr.exp()).sqrt().round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)  # (B, A)
    first = torch.where(fits.any(1), fits.int().argmax(1), torch.full((b,), -1, device=dev))
    pick = first.clamp(min=0)[:, None]
    cw, ch = cw.gather(1, pick)[:, 0], ch.gather(1, pick)[:, 0]
    in_ratio = w / h
    fw = float(w) if ratio[0] <= in_ratio <= ratio[1] else (float(w) if in_ratio < ratio[0] else round(h * ratio[1]))
    fh = float(h) if ratio[0] <= in_ratio <= ratio[1] else (round(w / ratio[0]) if in_ratio < ratio[0] else float(h))
    none = first < 0
    cw = torch.where(none, torch.full_like(cw, fw), cw)
    ch = torch.where(none, torch.full_like(ch, fh), ch)
    x0 = torch.floor(torch.rand(b, device=dev) * (w - cw + 1))  # integer offsets, as randint(0, w - cw + 1)
    y0 = torch.floor(torch.rand(b, device=dev) * (h - ch + 1))
    return x0, y0, cw, ch


def is_batchable(transform) -> bool:
    """True if ``transform`` can be applied to a whole batch with the same result as image by image."""
    if getattr(transform, "batched", False):
        return True
    steps = transform.transforms if isinstance(transform, v2.Compose) else [transform]
    safe = (v2.ToImage, v2.Resize, v2.CenterCrop, v2.Grayscale, v2.ToDtype, v2.Normalize, _ToRGB)
    return all(isinstance(t, safe) for t in steps)
