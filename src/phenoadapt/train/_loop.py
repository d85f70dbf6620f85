"""Pieces of a training loop shared by the classifier and PhenoProfiler trainers.

- :func:`step_generator`: the augmentation randomness of one step, derived from
  the run's seed and the step's coordinates (so any process of a job, and any
  re-run, draws the same numbers);
- :func:`place_for_training` / :func:`restore_after_training`: move the model
  to the training device and memory layout, and back to the layout a
  checkpoint and inference expect.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU torch generator seeded from ``seed`` and the step's ``keys``.

    Parameters
    ----------
    seed
        The run's seed.
    *keys
        Coordinates of the step (e.g. epoch, step, episode); different keys give
        independent streams.

    Returns
    -------
    torch.Generator
        Seeded with 64 bits drawn by a :class:`numpy.random.SeedSequence`.
    """
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def place_for_training(model: nn.Module, device: torch.device, channels_last: bool) -> None:
    """Move ``model`` to ``device`` (in place), in channels-last layout when asked."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)


def restore_after_training(model: nn.Module, channels_last: bool) -> None:
    """Give ``model`` back its contiguous layout (if it was channels-last) and eval mode."""
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.eval()
