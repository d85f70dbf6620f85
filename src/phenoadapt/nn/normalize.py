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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

TRANSFORMS = ("log1p", "linear")

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
    """

    transform: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip: tuple[float, ...] | None = None

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

    @property
    def n_channels(self) -> int:
        """Number of channels the normalization applies to."""
        return len(self.mean)

    @classmethod
    def identity(cls, n_channels: int) -> Normalization:
        """A normalization that leaves values unchanged (linear, mean 0, std 1)."""
        return cls("linear", (0.0,) * n_channels, (1.0,) * n_channels, None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation (used in checkpoint metadata)."""
        return {
            "transform": self.transform,
            "mean": list(self.mean),
            "std": list(self.std),
            "clip": None if self.clip is None else list(self.clip),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        clip = data.get("clip")
        return cls(
            transform=str(data["transform"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            clip=None if clip is None else tuple(float(v) for v in clip),
        )


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
        sample of at most ``max_sample_pixels`` pixels per channel.
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
    if clip_percentile is not None:
        clip = _clip_from_sample(crops, clip_percentile, max_sample_pixels, seed)
    total = np.zeros(c)
    total_sq = np.zeros(c)
    count = 0
    for start in range(0, n, chunk):
        block = _as_numpy(crops[start : start + chunk]).astype(np.float64)
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
    return Normalization(transform, tuple(mean.tolist()), tuple(std.tolist()), clip)


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


class ChannelNormalizer(nn.Module):
    """First module of every phenoadapt network: clip, transform, standardize.

    Mean, std and clip are buffers, so they travel with the weights and move
    with ``.to(device)``.  The module works on any spatial size (crops or tiles).
    """

    def __init__(self, normalization: Normalization) -> None:
        super().__init__()
        self.transform = normalization.transform
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
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.n_channels:
            raise ValueError(
                f"The model expects {self.n_channels} channels, got an input with {x.shape[1]} "
                f"(shape {tuple(x.shape)}): select the plate channels the checkpoint names."
            )
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = torch.minimum(x.float(), self.clip.view(shape))
        if self.transform == "log1p":
            x = torch.log1p(torch.clamp(x, min=0.0))
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"channels={self.n_channels}, transform={self.transform}"
