"""Preprocessing presets built with ``torchvision.transforms.v2`` from a model's input spec.

Training and inference share :func:`eval_transform`'s resize/normalise steps, so a photo classified by
``prodvision predict`` or the HTTP service becomes exactly the tensor the model was evaluated on.
Inputs may be PIL images (from :func:`prodvision.data.load_image`) or uint8 ``(C, H, W)`` tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torchvision.transforms import v2

__all__ = ["InputSpec", "eval_transform", "train_transform", "AugmentConfig", "BatchAugment", "is_batchable",
           "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERP = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC,
           "nearest": v2.InterpolationMode.NEAREST}


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: square ``size``, channel count and per-channel mean/std (for 3 channels)."""

    size: int = 224  # side in pixels after resize
    in_chans: int = 3  # 1 for greyscale models (pretrained stems are adapted by summing first-conv weights)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bicubic" for TF-ported EfficientNet-Lite
    crop_pct: float = 1.0  # 1.0 = resize the whole image to size x size (no centre crop); 0.875 = ImageNet style

    def norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """mean/std with one entry per input channel (greyscale uses the average of the RGB statistics)."""
        if self.in_chans == len(self.mean):
            return tuple(self.mean), tuple(self.std)
        if self.in_chans == 1:
            return (sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std),)
        raise ValueError(f"in_chans={self.in_chans} does not match mean {self.mean}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AugmentConfig:
    """The article's augmentations (rotation, crop, flip, scale, brightness/contrast) and a few more."""

    hflip: float = 0.5  # probability of a horizontal flip (product photos are mostly left-right symmetric)
    crop_padding: int = 0  # random crop after zero-padding by this many pixels (translation), 0 = off
    scale: tuple[float, float] | None = None  # RandomResizedCrop area range, e.g. (0.6, 1.0); None = off
    rotation: float = 0.0  # max degrees of random rotation, 0 = off
    brightness: float = 0.0  # ColorJitter strength, 0 = off
    contrast: float = 0.0
    erasing: float = 0.0  # probability of RandomErasing (occlusion), 0 = off
    fill: int = 0  # background value for rotation corners: 0 for Fashion-MNIST (black), 255 for white catalog shots

    def to_dict(self) -> dict:
        return asdict(self)


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


def train_transform(*, size: int, in_chans: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    interpolation: str = "bilinear", augment: AugmentConfig = AugmentConfig()) -> v2.Compose:
    """Training preprocessing: the :func:`eval_transform` steps with ``augment``'s random changes in between."""
    spec = InputSpec(size=size, in_chans=in_chans, mean=tuple(mean), std=tuple(std), interpolation=interpolation)
    m, s = spec.norm()
    interp = _INTERP[interpolation]
    a = augment
    steps: list = [v2.ToImage()]
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
    ``roi_align``, ``grid_sample``), which is ~50x faster than a per-image v2 pipeline on small in-memory images
    (Fashion-MNIST) and runs on the GPU as well. The deterministic tail (``ToDtype`` + ``Normalize``) is v2's.

    Input: uint8 ``(B, C, H, W)``. Output: float32 ``(B, in_chans, size, size)`` normalised.
    """

    batched = True

    def __init__(self, *, size: int, in_chans: int = 3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 interpolation: str = "bilinear", augment: AugmentConfig = AugmentConfig()):
        super().__init__()
        self.size, self.in_chans, self.augment, self.interpolation = size, in_chans, augment, interpolation
        m, s = InputSpec(size=size, in_chans=in_chans, mean=tuple(mean), std=tuple(std)).norm()
        self.tail = v2.Compose([*_channels(in_chans), v2.ToDtype(torch.float32, scale=True), v2.Normalize(m, s)])

    def extra_repr(self) -> str:
        return f"size={self.size}, in_chans={self.in_chans}, augment={self.augment}, tail={self.tail}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import roi_align

        a, (b, c, h, w), dev = self.augment, x.shape, x.device
        x = x.float()  # (B, C, H, W) in 0..255
        if a.scale is not None:  # RandomResizedCrop: per-image box (area in scale, ratio 3/4..4/3), then resize
            area = torch.empty(b, device=dev).uniform_(*a.scale) * h * w
            logr = torch.empty(b, device=dev).uniform_(torch.log(torch.tensor(3 / 4)), torch.log(torch.tensor(4 / 3)))
            cw = (area * logr.exp()).sqrt().clamp(1, w)
            ch = (area / logr.exp()).sqrt().clamp(1, h)
            x0 = torch.rand(b, device=dev) * (w - cw)
            y0 = torch.rand(b, device=dev) * (h - ch)
            boxes = torch.stack([torch.arange(b, device=dev, dtype=x.dtype), x0, y0, x0 + cw, y0 + ch], 1)
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


def is_batchable(transform) -> bool:
    """True if ``transform`` can be applied to a whole batch with the same result as image by image."""
    if getattr(transform, "batched", False):
        return True
    steps = transform.transforms if isinstance(transform, v2.Compose) else [transform]
    safe = (v2.ToImage, v2.Resize, v2.CenterCrop, v2.Grayscale, v2.ToDtype, v2.Normalize, _ToRGB)
    return all(isinstance(t, safe) for t in steps)
