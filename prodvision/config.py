"""The configuration dataclasses: what to train, how to preprocess and augment, what an image loader or the service
accepts. Small, frozen, with a comment on each default, passed explicitly (``fit(model, data, val, cfg)``).

They live in one module that imports neither torch nor the rest of the package, so the ``prodvision`` command
line can build its ``--help`` (whose defaults come from here) in a fraction of a second. Each stage re-exports the
ones it uses: ``prodvision.train.TrainConfig``, ``prodvision.transforms.AugmentConfig`` and ``InputSpec``,
``prodvision.data.ImageLimits``, ``prodvision.serve.ServeConfig``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "InputSpec", "AugmentConfig", "TrainConfig", "ImageLimits", "ServeConfig",
           "CAM_METHODS", "PHOTO_SIZE", "MIN_INPUT_SIZE", "MAX_INPUT_SIZE", "ONNX_OPSET", "ONNX_OPSETS", "FINETUNE_MODES", "WISE_DEFAULT",
           "finetune_defaults", "default_batch_size"]

#: Per-channel (R, G, B) mean of ImageNet's training images on a 0-1 scale: the normalisation of ImageNet weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: Per-channel (R, G, B) standard deviation of ImageNet's training images, on a 0-1 scale.
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Inputs at least this many pixels on a side count as photo resolution (fast, non-deterministic CPU training).
PHOTO_SIZE = 96
#: The smallest input side the command line accepts: below 8 px the poolings of the small nets leave nothing (mini_resnet
#: at 1 px died in max_pool2d). Archs that pool more say so in ``ArchSpec.min_size`` (VGG: 32), checked by ``Recipe``.
MIN_INPUT_SIZE = 8
#: The largest input side the command line accepts: at 4096 px one image gives a ResNet-18's first convolution
#: 64 x 2048 x 2048 float32 activations (1 GiB), so larger sides cannot train or explain on any common machine.
MAX_INPUT_SIZE = 4096
#: ONNX opsets ``prodvision export`` writes with torch's TorchScript-based exporter (``dynamo=False``): from
#: ``torch.onnx``'s minimum (7) to the highest that exporter supports (20; above it torch only warns). Some archs need
#: more than the minimum: EfficientNet-Lite's "same" padding needs opset 11.
ONNX_OPSETS = (7, 20)
ONNX_OPSET = 17  # the default of prodvision export
#: Class activation map methods of :func:`prodvision.explain.cam` (wrappers of the grad-cam package's classes).
CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "eigencam", "scorecam", "layercam", "hirescam", "eigengradcam")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


class _Dict:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict`; JSON lists become tuples again. Unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        _check(not unknown, f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(names)}")
        return cls(**{k: _tuples(v) for k, v in d.items()})


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


@dataclass(frozen=True)
class InputSpec(_Dict):
    """What a model expects: square ``size``, channel count and per-channel mean/std (for 3 channels)."""

    size: int = 224  # side in pixels after resize
    in_chans: int = 3  # 1 for greyscale models (pretrained stems are adapted by summing first-conv weights)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bicubic" for TF-ported EfficientNet-Lite
    crop_pct: float = 1.0  # 1.0 = resize the whole image to size x size (no centre crop); 0.875 = ImageNet style
    # "fashion-mnist": convert photos the way Zalando's became Fashion-MNIST (trim, square, negate, greyscale) before
    # resizing; None = plain resize. Set for models trained on Fashion-MNIST, applied by predict/serve.
    photo_style: str | None = None

    def __post_init__(self):
        _check(self.size >= 1 and self.in_chans in (1, 3), f"InputSpec: size {self.size} / in_chans {self.in_chans}")
        _check(self.interpolation in ("bilinear", "bicubic", "nearest"), f"unknown interpolation {self.interpolation!r}")
        _check(self.photo_style in (None, "fashion-mnist"), f"unknown photo_style {self.photo_style!r}")

    def norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """mean/std with one entry per input channel (greyscale uses the average of the RGB statistics)."""
        if self.in_chans == len(self.mean):
            return tuple(self.mean), tuple(self.std)
        if self.in_chans == 1:
            return (sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std),)
        raise ConfigError(f"in_chans={self.in_chans} does not match mean {self.mean}")


@dataclass(frozen=True)
class AugmentConfig(_Dict):
    """The article's augmentations (rotation, crop, flip, scale, brightness/contrast) and a few more."""

    hflip: float = 0.5  # probability of a horizontal flip (product photos are mostly left-right symmetric)
    crop_padding: int = 0  # random crop after zero-padding by this many pixels (translation), 0 = off
    scale: tuple[float, float] | None = None  # RandomResizedCrop area range, e.g. (0.6, 1.0); None = off
    rotation: float = 0.0  # max degrees of random rotation, 0 = off
    brightness: float = 0.0  # ColorJitter strength, 0 = off
    contrast: float = 0.0
    erasing: float = 0.0  # probability of RandomErasing (occlusion), 0 = off
    fill: int = 0  # background value for rotation corners: 0 for Fashion-MNIST (black), 255 for white catalog shots
    # probability of replacing a white catalog background with a patch of a real photo (prodvision.data.backgrounds,
    # "train" pool), so a model trained on studio shots learns to ignore cluttered backgrounds; image files only
    background: float = 0.0


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "cosine_restarts", "constant")


@dataclass(frozen=True)
class TrainConfig(_Dict):
    """How to train. Stored (``asdict``) in every checkpoint and run record."""

    epochs: int = 5  # passes over the training set
    batch_size: int = 256  # global batch; each of N DDP ranks takes batch_size // N (photos: see default_batch_size)
    # Split each batch into chunks of this many images whose gradients are summed before the step: the same update
    # at a fraction of the activation memory (benchmarks/bench_finetune.py measures it); BatchNorm then normalises
    # over each chunk. None = the whole batch at once.
    micro_batch: int | None = None
    optimizer: str = "sgd"  # "sgd" (momentum, Nesterov) or "adamw"
    lr: float = 0.1  # peak learning rate (for the head when body_lr_mult != 1)
    body_lr_mult: float = 1.0  # body lr = lr * body_lr_mult: discriminative learning rates for fine-tuning
    head: str | None = None  # module name of the classifier for body_lr_mult (None = the arch's, from ArchSpec)
    momentum: float = 0.9  # SGD momentum (AdamW beta1 stays 0.9)
    weight_decay: float = 5e-4  # L2 / decoupled weight decay
    schedule: str = "onecycle"  # "onecycle", "cosine", "cosine_restarts" (snapshot ensembles), "constant"
    warmup_pct: float = 0.2  # fraction of steps warming up (onecycle)
    cycles: int = 1  # cosine_restarts: number of cycles; a snapshot is saved at the end of each
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    mixup: float = 0.0  # MixUp alpha (0 = off); with cutmix > 0 too, each batch picks one of the two
    cutmix: float = 0.0  # CutMix alpha (0 = off)
    amp: str = "auto"  # "auto" = bf16 autocast on CUDA, off on CPU (bf16 is ~20x slower on CPUs without it)
    clip_grad_norm: float | None = None  # max gradient norm, None = no clipping
    seed: int = 0  # seeds init-independent randomness: data order, augmentation, dropout
    device: str = "auto"  # "auto" = cuda if available else cpu; or "cpu", "cuda", "cuda:1"
    num_workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    # Reproducibility vs speed. deterministic=True: the same seed gives bit-identical weights and a resumed run equals
    # an uninterrupted one (on one CPU kind). None = on for CPU training of small images (< PHOTO_SIZE px, the course's
    # Fashion-MNIST models) and off for photo-resolution fine-tuning and on CUDA, where it is markedly slower
    # (depthwise convolutions most; benchmarks/bench_finetune.py measures the cost).
    deterministic: bool | None = None
    # NHWC memory format: faster convolutions on CPU (oneDNN) and tensor cores on GPU, but oneDNN's NHWC backward is not
    # bit-reproducible for every layer shape, so None = on exactly when training is not deterministic
    channels_last: bool | None = None
    # Fine-tuning pretrained weights on a few hundred images: True keeps every BatchNorm layer on its pretrained
    # running statistics (eval mode) while its scale and shift still train, so batches of a small, augmented
    # dataset do not shift the features a linear-probe head was fitted on. Frozen layers' BatchNorm is always kept.
    freeze_bn_stats: bool = False
    early_stopping: int | None = None  # stop after this many epochs without val improvement, None = off
    # metric for best-checkpoint selection and early stopping (higher is better); "epoch" keeps the last epoch, so
    # that validation can be reported alongside the test set without having chosen anything
    monitor: str = "val_acc"
    eval_batch_size: int = 512  # batch size for validation
    tensorboard: bool = False  # also log scalars to <out_dir>/tb (needs the tensorboard package)

    def __post_init__(self):
        _check(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs must be a positive integer, got {self.epochs}")
        _check(self.batch_size >= 1 and self.eval_batch_size >= 1, f"batch sizes must be >= 1, got {self.batch_size}")
        _check(self.lr >= 0 and self.body_lr_mult >= 0, f"learning rates must be >= 0, got lr={self.lr}")
        _check(self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose from {list(OPTIMIZERS)}")
        _check(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; choose from {list(SCHEDULES)}")
        _check(self.amp in ("auto", "bf16", "fp16", "off"), f"unknown amp {self.amp!r}; use auto, bf16, fp16 or off")
        _check(self.cycles >= 1 and self.epochs % self.cycles == 0 or self.schedule != "cosine_restarts",
               f"epochs ({self.epochs}) must be a multiple of cycles ({self.cycles}) for cosine_restarts")
        _check(0 <= self.label_smoothing < 1 and self.mixup >= 0 and self.cutmix >= 0,
               "label_smoothing must be in [0, 1) and mixup/cutmix alphas >= 0")
        _check(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        _check(self.micro_batch is None or self.micro_batch >= 1, f"micro_batch must be >= 1, got {self.micro_batch}")


#: Settings that change how fast or where training runs, never the trained model: not part of a recipe's cache key,
#: and free to change when a run is resumed.
RUNTIME_FIELDS = ("device", "num_workers", "eval_batch_size", "tensorboard")


@dataclass(frozen=True)
class ImageLimits(_Dict):
    """What :func:`prodvision.data.load_image` accepts. Checked from the header, before any pixel is decoded."""

    max_bytes: int = 50 * 1024 * 1024  # a 50 MB file is already far beyond any catalog photo
    max_pixels: int = 50_000_000  # ~7000 x 7000; a decoded RGB image of this size is 150 MB
    max_side: int = 20_000  # longest side in pixels
    min_side: int = 1  # raise to refuse thumbnails/tracking pixels
    max_aspect: float = 20.0  # longest side / shortest side; banners and strips are not product photos


_LIMITS = ImageLimits()


@dataclass(frozen=True)
class ServeConfig(_Dict):
    """Limits and options of the HTTP service (``prodvision serve``)."""

    max_upload_mb: float = 10.0  # max request body (all files together); also the per-file byte limit
    max_pixels: int = _LIMITS.max_pixels  # per image, from the header, before decoding (decompression bombs -> 422)
    max_side: int = _LIMITS.max_side  # longest image side in px
    max_files: int = 16  # files per request (/predict; /cam takes one), counted by the multipart parser
    top_k: int = 3  # classes returned per image
    threads: int | None = None  # ONNX Runtime intra_op_num_threads (None = let ORT decide)
    cam_method: str = "gradcam"  # one of CAM_METHODS
    # Memory the service may spend on decoding uploads at once (decoded pixels, MB). Each image reserves its decoded
    # size before it is decoded; uploads wait for room, so 16 concurrent 40-Mpx PNGs cannot take gigabytes.
    decode_budget_mb: float = 256.0
    # A client that stalls is answered 408 and dropped: its request head (line and headers) must be complete within
    # header_timeout_s of connecting (or of the end of the previous response on a kept-alive connection), and its
    # whole body within body_timeout_s of the head. At 10 MB, 30 s asks for a link of at least 2.8 Mbit/s.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __post_init__(self):
        _check(self.cam_method in CAM_METHODS, f"unknown CAM method {self.cam_method!r}; choose from {CAM_METHODS}")
        _check(self.max_files >= 1 and self.top_k >= 1 and self.max_upload_mb > 0 and self.decode_budget_mb > 0,
               "max_files, top_k, max_upload_mb and decode_budget_mb must be positive")
        _check(self.header_timeout_s > 0 and self.body_timeout_s > 0,
               f"header_timeout_s ({self.header_timeout_s}) and body_timeout_s ({self.body_timeout_s}) must be "
               "positive")

    @property
    def max_body(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_body, max_pixels=self.max_pixels, max_side=self.max_side)


#: Ways to use pretrained weights: a linear probe on frozen features; LP-FT of the last stage (from cached trunk
#: activations) or of the whole network. Both fine-tunes start from the probe's head (Kumar et al., 2022).
FINETUNE_MODES = ("probe", "last_stage", "full")


#: WiSE-FT's mixing weight for ``prodvision train --weights ...`` (LP-FT of everything), fixed in advance: the fixed
#: value Wortsman et al. (2022) report beside the best one, with the probe-initialised network in the place of their
#: zero-shot model. ``scripts/transfer_default.py`` compares the result with the linear probe over ten splits.
WISE_DEFAULT = 0.5


def finetune_defaults(mode: str) -> dict[str, Any]:
    """TrainConfig settings that suit fine-tuning pretrained weights from a probe's head (LP-FT): AdamW at a small
    learning rate with a cosine decay, so the pretrained features move little; the last stage alone can take a
    larger one. The run keeps its last epoch (``monitor="epoch"``): choosing among a few epochs on a validation split
    of a few dozen images picks noise (the winner's curse). Used by ``prodvision train --weights ...`` for every flag
    the user leaves unset."""
    if mode not in FINETUNE_MODES:
        raise ConfigError(f"unknown finetune mode {mode!r}; choose from {list(FINETUNE_MODES)}")
    common = dict(optimizer="adamw", schedule="cosine", weight_decay=0.05, label_smoothing=0.1, freeze_bn_stats=True,
                  monitor="epoch")
    return {"probe": dict(epochs=1), "last_stage": dict(common, epochs=15, lr=3e-4),
            "full": dict(common, epochs=6, lr=5e-5)}[mode]


def default_batch_size(size: int) -> int:
    """A training batch that fits a laptop at this input size: activation memory grows with batch x size^2, and
    ``benchmarks/bench_finetune.py`` measures the peak at 224 px (bs 16 and 32)."""
    return 256 if size <= 32 else 128 if size <= 64 else 64 if size <= 128 else 32 if size < 160 else 16
