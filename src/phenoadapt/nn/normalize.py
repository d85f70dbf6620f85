"""Per-channel input normalization, fitted on training crops and stored in the model.

Crops and field tiles reach a network as raw intensities (uint16 values cast to
float).  The network's first module clips each channel at a high percentile of
the training pixels (saturated or hot pixels would otherwise dominate), applies a
``log1p`` or linear scaling, and standardizes with the mean and standard
deviation of the training pixels.  Keeping these numbers as buffers *inside* the
model (and in the checkpoint metadata) means a checkpoint carries everything
needed to read raw pixels: no preprocessing step can be forgotten or mismatched.

``log1p`` is the default because a multiplicative plate effect (lamp power,
exposure, stain concentration: ``x -> g * x``) becomes an additive offset
``log g`` after it, which per-plate batch-norm statistics remove exactly.

The per-image mode (``image_percentile``) is the input scaling of the official
CS-ARM-BN code: each image and each channel is divided by its *own* high
percentile (99.99th) and clipped to [0, 1], optionally quantized to 8 bits
(``image_levels=255``), before the training-set standardization.  It removes
each image's overall stain scale before any batch-norm layer sees it.  It is
recorded in the normalization (and so in every checkpoint's network spec) as
plain numbers, not buffers: checkpoints written before it existed load
unchanged and keep their global clip + ``log1p``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

TRANSFORMS = ("log1p", "linear")
#: Input scalings a training run chooses by name (:func:`fit_input_scaling`):
#: ``log1p`` = global clip + log1p (default), ``image`` = the official CS-ARM-BN
#: per-image, per-channel 99.99th-percentile scaling to 8 bits.
INPUT_SCALINGS = ("log1p", "image")
#: Percentile and levels of the ``image`` scaling (the official code's values).
OFFICIAL_IMAGE_PERCENTILE = 99.99
OFFICIAL_IMAGE_LEVELS = 255

# A channel whose training pixels are (nearly) constant has no scale to learn;
# dividing by a tiny std would blow up noise, so such channels are only centred.
_MIN_STD = 1e-6


@dataclass(frozen=True)
class Normalization:
    """How raw intensities are scaled before the network sees them.

    Parameters
    ----------
    transform
        ``"log1p"`` (``log(1 + max(x, 0))``) or ``"linear"`` (identity).
    mean, std
        Per-channel mean and standard deviation of the *transformed* training
        pixels, in the model's channel order.
    clip
        Per-channel upper clip in raw intensity units (applied first), or None.
    image_percentile
        None (default): no per-image scaling.  A percentile in (0, 100]: each
        image's channel is divided by its own value at this percentile and
        clipped to [0, 1] *before* ``clip`` and ``transform`` (the official
        CS-ARM-BN input scaling uses 99.99).
    image_levels
        With ``image_percentile``: quantize the scaled values to this many
        levels above zero (255 = the official 8-bit images), or None to keep
        them continuous.
    """

    transform: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip: tuple[float, ...] | None = None
    image_percentile: float | None = None
    image_levels: int | None = None

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(
                f"Unknown normalization transform {self.transform!r}: use one of {TRANSFORMS}."
            )
        n = len(self.mean)
        if len(self.std) != n or (self.clip is not None and len(self.clip) != n):
            raise ValueError(
                f"Normalization has {n} means, {len(self.std)} stds and "
                f"{None if self.clip is None else len(self.clip)} clips: give one per channel."
            )
        if any(not math.isfinite(s) or s <= 0 for s in self.std):
            raise ValueError(f"Normalization std must be positive and finite, got {self.std}.")
        if self.image_percentile is not None and not 0 < self.image_percentile <= 100:
            raise ValueError(
                f"image_percentile must be in (0, 100], got {self.image_percentile}: "
                "use e.g. 99.99, or None for no per-image scaling."
            )
        if self.image_levels is not None and self.image_levels < 1:
            raise ValueError(f"image_levels must be >= 1 or None, got {self.image_levels}.")

    @property
    def n_channels(self) -> int:
        """Number of channels the normalization applies to."""
        return len(self.mean)

    @classmethod
    def identity(cls, n_channels: int) -> Normalization:
        """A normalization that leaves values unchanged (linear, mean 0, std 1)."""
        return cls("linear", (0.0,) * n_channels, (1.0,) * n_channels, None)

    @property
    def per_image(self) -> bool:
        """Whether each image is scaled by its own percentile first."""
        return self.image_percentile is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation (used in checkpoint metadata)."""
        out: dict[str, Any] = {
            "transform": self.transform,
            "mean": list(self.mean),
            "std": list(self.std),
            "clip": None if self.clip is None else list(self.clip),
        }
        # Written only when used, so the spec of a global normalization is
        # byte-for-byte what it was before the per-image mode existed.
        if self.per_image:
            out["image_percentile"] = self.image_percentile
            out["image_levels"] = self.image_levels
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        clip = data.get("clip")
        percentile = data.get("image_percentile")
        levels = data.get("image_levels")
        return cls(
            transform=str(data["transform"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            clip=None if clip is None else tuple(float(v) for v in clip),
            image_percentile=None if percentile is None else float(percentile),
            image_levels=None if levels is None else int(levels),
        )


def scale_per_image(
    x: torch.Tensor, percentile: float = 99.99, levels: int | None = 255
) -> torch.Tensor:
    """Divide each image's channel by its own percentile, clip to [0, 1], quantize.

    The input scaling of the official CS-ARM-BN code (there applied to whole
    fields when converting them to 8 bits): the threshold of a channel is the
    value that ``100 - percentile`` % of its pixels exceed; values above it
    saturate at 1.  A channel whose threshold is not positive (an empty image)
    is left at zero rather than divided by zero.

    Parameters
    ----------
    x
        ``(n, channels, ...)`` raw intensities (negative values count as 0).
    percentile
        Percentile of each image's channel used as its full scale.
    levels
        Quantize to ``floor(v * levels) / levels`` (255: 8-bit images, as
        ``astype(uint8)`` truncates); None keeps values continuous.

    Returns
    -------
    torch.Tensor
        float32 values in [0, 1], same shape as ``x``.
    """
    x = torch.clamp(x.float(), min=0.0)
    n, c = x.shape[0], x.shape[1]
    flat = x.reshape(n * c, -1)
    pixels = flat.shape[1]
    # kthvalue (not torch.quantile): no size limit on whole fields, and the
    # threshold is a pixel value, as the official top-pixel threshold is.
    k = min(pixels, max(1, math.ceil(percentile / 100.0 * pixels)))
    threshold = flat.kthvalue(k, dim=1, keepdim=True).values
    scaled = torch.where(threshold > 0, flat / torch.clamp(threshold, min=1e-12), 0.0)
    scaled = torch.clamp(scaled, 0.0, 1.0)
    if levels is not None:
        scaled = torch.floor(scaled * levels) / levels
    return scaled.reshape(x.shape)


def _as_numpy(crops: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(crops, torch.Tensor):
        return crops.detach().cpu().numpy()
    return np.asarray(crops)


def _transform_np(values: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log1p":
        return np.log1p(np.maximum(values, 0.0))
    return values


def fit_normalization(
    crops: np.ndarray | torch.Tensor,
    *,
    transform: str = "log1p",
    clip_percentile: float | None = 99.99,
    image_percentile: float | None = None,
    image_levels: int | None = 255,
    max_sample_pixels: int = 2_000_000,
    chunk: int = 512,
    seed: int = 0,
) -> Normalization:
    """Fit a :class:`Normalization` on training crops.

    Parameters
    ----------
    crops
        Array ``(n, channels, height, width)`` of raw intensities (any numeric dtype).
    transform
        ``"log1p"`` or ``"linear"``.
    clip_percentile
        Percentile of each channel's raw pixels used as its upper clip (the paper
        clips at the 99.99th); None disables clipping.  Estimated from a random
        sample of at most ``max_sample_pixels`` pixels per channel.  Ignored
        with ``image_percentile`` (each image is then clipped by its own).
    image_percentile, image_levels
        Per-image scaling (see :func:`scale_per_image`, the official CS-ARM-BN
        input scaling): with a percentile (99.99), each crop's channel is
        scaled by its own percentile first, and mean and std are those of the
        scaled pixels; use ``transform="linear"`` to match the official code.
    max_sample_pixels
        Pixel sample size for the percentile estimate.
    chunk
        Crops processed at once when accumulating mean and std (bounds memory).
    seed
        Seed of the pixel sample.

    Returns
    -------
    Normalization
        Mean and std are exact over all pixels of all crops (after clipping and
        the transform), accumulated in float64.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"Unknown normalization transform {transform!r}: use one of {TRANSFORMS}.")
    if crops.ndim != 4 or crops.shape[0] == 0:
        raise ValueError(
            f"fit_normalization needs crops shaped (n, channels, height, width) with n > 0, "
            f"got shape {tuple(crops.shape)}."
        )
    n, c = int(crops.shape[0]), int(crops.shape[1])
    clip: tuple[float, ...] | None = None
    if clip_percentile is not None and image_percentile is None:
        clip = _clip_from_sample(crops, clip_percentile, max_sample_pixels, seed)
    total = np.zeros(c)
    total_sq = np.zeros(c)
    count = 0
    for start in range(0, n, chunk):
        block = _as_numpy(crops[start : start + chunk]).astype(np.float64)
        if image_percentile is not None:
            # The same torch function as the model's forward: identical numbers.
            scaled = scale_per_image(torch.from_numpy(block), image_percentile, image_levels)
            block = scaled.numpy().astype(np.float64)
        if clip is not None:
            block = np.minimum(block, np.asarray(clip)[None, :, None, None])
        block = _transform_np(block, transform)
        total += block.sum(axis=(0, 2, 3))
        total_sq += np.square(block).sum(axis=(0, 2, 3))
        count += block.shape[0] * block.shape[2] * block.shape[3]
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std < _MIN_STD, 1.0, std)
    return Normalization(
        transform,
        tuple(mean.tolist()),
        tuple(std.tolist()),
        clip,
        image_percentile=image_percentile,
        image_levels=image_levels if image_percentile is not None else None,
    )


def _clip_from_sample(
    crops: np.ndarray | torch.Tensor, percentile: float, max_pixels: int, seed: int
) -> tuple[float, ...]:
    """Per-channel percentile of raw pixels, from a random subset of crops."""
    n, _, h, w = (int(s) for s in crops.shape)
    rng = np.random.default_rng(seed)
    n_crops = max(1, min(n, max_pixels // max(1, h * w)))
    idx = np.sort(rng.choice(n, size=n_crops, replace=False))
    sample = _as_numpy(crops[idx] if isinstance(crops, torch.Tensor) else np.asarray(crops)[idx])
    per_channel = np.moveaxis(sample.astype(np.float64), 1, 0).reshape(sample.shape[1], -1)
    return tuple(float(v) for v in np.percentile(per_channel, percentile, axis=1))


def _sync_transform(module: ChannelNormalizer, _incompatible: object) -> None:
    module.transform = "log1p" if bool(module.log_transform) else "linear"


def fit_input_scaling(
    crops: np.ndarray | torch.Tensor, scaling: str = "log1p", *, seed: int = 0
) -> Normalization:
    """Fit the normalization of a named input scaling on training crops.

    Parameters
    ----------
    crops
        ``(n, channels, height, width)`` raw intensities of the training images.
    scaling
        ``"log1p"``: global clip at the 99.99th percentile of the training
        pixels, ``log1p``, standardize (the default of new checkpoints).
        ``"image"``: each image's channel divided by its own 99.99th percentile,
        8 bits, linear, standardize (the official CS-ARM-BN input).
    seed
        Seed of the pixel sample of the percentile estimate.

    Returns
    -------
    Normalization
        Recorded in the network spec, so a checkpoint predicts with it.
    """
    if scaling == "image":
        return fit_normalization(
            crops,
            transform="linear",
            image_percentile=OFFICIAL_IMAGE_PERCENTILE,
            image_levels=OFFICIAL_IMAGE_LEVELS,
            seed=seed,
        )
    if scaling == "log1p":
        return fit_normalization(crops, seed=seed)
    raise ValueError(f"Unknown input scaling {scaling!r}: use one of {INPUT_SCALINGS}.")


class ChannelNormalizer(nn.Module):
    """First module of every phenoadapt network: clip, transform, standardize.

    Mean, std and clip are buffers, so they travel with the weights and move
    with ``.to(device)``.  The module works on any spatial size (crops or tiles).
    """

    def __init__(self, normalization: Normalization) -> None:
        super().__init__()
        self.transform = normalization.transform
        # Plain attributes, not buffers: state dicts of checkpoints written
        # before the per-image mode load strictly; the spec rebuilds them.
        self.image_percentile = normalization.image_percentile
        self.image_levels = normalization.image_levels
        c = normalization.n_channels
        clip = normalization.clip if normalization.clip is not None else (math.inf,) * c
        self.register_buffer("mean", torch.tensor(normalization.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(normalization.std, dtype=torch.float32))
        self.register_buffer("clip", torch.tensor(clip, dtype=torch.float32))
        # The transform travels with the weights too, so loading a state dict
        # into a model built with another normalization gives the stored one.
        self.register_buffer("log_transform", torch.tensor(self.transform == "log1p"))
        self.register_load_state_dict_post_hook(_sync_transform)

    @property
    def n_channels(self) -> int:
        """Number of input channels."""
        return int(self.mean.numel())

    def normalization(self) -> Normalization:
        """The current buffers as a :class:`Normalization` (for checkpoints)."""
        clip = self.clip.tolist()
        return Normalization(
            self.transform,
            tuple(self.mean.tolist()),
            tuple(self.std.tolist()),
            None if all(math.isinf(v) for v in clip) else tuple(clip),
            image_percentile=self.image_percentile,
            image_levels=self.image_levels,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.n_channels:
            raise ValueError(
                f"The model expects {self.n_channels} channels, got an input with {x.shape[1]} "
                f"(shape {tuple(x.shape)}): select the plate channels the checkpoint names."
            )
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.image_percentile is not None:
            x = scale_per_image(x, self.image_percentile, self.image_levels)
        x = torch.minimum(x.float(), self.clip.view(shape))
        if self.transform == "log1p":
            x = torch.log1p(torch.clamp(x, min=0.0))
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        per_image = (
            f", per-image p{self.image_percentile:g}" if self.image_percentile is not None else ""
        )
        return f"channels={self.n_channels}, transform={self.transform}{per_image}"
