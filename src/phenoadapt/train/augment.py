"""Image augmentation for training: random crop, flips and 90-degree rotations.

Microscopy has no preferred orientation, so flips and quarter turns are free
augmentations; a random crop (centre crop at test) adds translation.  All
randomness comes from a :class:`torch.Generator` on the CPU, so an episode is
augmented identically on any device and in any process of a distributed job.
"""

from __future__ import annotations

import torch

from phenoadapt.errors import OptionError


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """An independent random ``size x size`` window of each image of a batch ``(n, C, h, w)``."""
    n, _, h, w = x.shape
    if size > h or size > w:
        raise OptionError(f"Cannot crop {size}x{size} windows from {h}x{w} images.")
    if size == h and size == w:
        return x
    top = torch.randint(0, h - size + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, w - size + 1, (n,), generator=generator).to(x.device)
    offsets = torch.arange(size, device=x.device)
    rows = (top[:, None] + offsets)[:, None, :, None]  # (n, 1, size, 1)
    cols = (left[:, None] + offsets)[:, None, None, :]  # (n, 1, 1, size)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return x[batch, channels, rows, cols]


def center_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central ``size x size`` window (no-op for None or the full size)."""
    if size is None:
        return x
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise OptionError(f"Cannot crop {size}x{size} windows from {h}x{w} images.")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def random_flip_rotate(
    x: torch.Tensor, generator: torch.Generator, *, flip: bool = True, rot90: bool = True
) -> torch.Tensor:
    """Random horizontal flip and quarter turn of each image (turns need square images)."""
    n = x.shape[0]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        if mask.any():
            x = x.clone()
            idx = mask.nonzero().flatten().to(x.device)
            x[idx] = x[idx].flip(-1)
    if rot90 and x.shape[-1] == x.shape[-2]:
        turns = torch.randint(0, 4, (n,), generator=generator)
        if (turns > 0).any():
            x = x.clone()
            for k in (1, 2, 3):
                idx = (turns == k).nonzero().flatten().to(x.device)
                if len(idx):
                    x[idx] = torch.rot90(x[idx], k, dims=(-2, -1))
    return x


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    crop_size: int | None = None,
    flip: bool = True,
    rot90: bool = True,
) -> torch.Tensor:
    """Random crop (when ``crop_size`` is set), flip and rotation of a batch.

    Feature vectors ``(n, F)`` (profile tables) have no geometry and are returned
    unchanged: flipping would reorder the features.
    """
    if x.ndim == 2:
        return x
    if crop_size is not None:
        x = random_crop(x, crop_size, generator)
    return random_flip_rotate(x, generator, flip=flip, rot90=rot90)
