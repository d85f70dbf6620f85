"""Adapted prediction from checkpoint files: load one or an ensemble, predict a plate.

This is the bridge between training outputs and :func:`phenoadapt.adapt.predict_plate`:
it takes the classes, the test-time crop and the default method from the
checkpoint metadata, and checks that an ensemble's members agree on them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..adapt.methods import Method, PlatePredictions, parse_method, predict_plate
from ..errors import ModelError
from ..nn.runtime import select_device
from .checkpoint import Checkpoint, load_checkpoint


def load_ensemble(
    paths: str | os.PathLike | Sequence[str | os.PathLike], device: str | torch.device = "auto"
) -> list[Checkpoint]:
    """Load one or several checkpoints meant to be averaged.

    Raises
    ------
    ModelError
        When members disagree on classes, channels or test-time crop size.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if not paths:
        raise ModelError("No checkpoint given: pass at least one .safetensors file.")
    target = select_device(device)
    loaded = [load_checkpoint(p, device=target) for p in paths]
    first = loaded[0].metadata
    for ckpt in loaded[1:]:
        meta = ckpt.metadata
        for name in ("classes", "channel_names", "input_size"):
            if getattr(meta, name) != getattr(first, name):
                raise ModelError(
                    f"Checkpoints {loaded[0].path} and {ckpt.path} differ in {name} "
                    f"({getattr(first, name)} vs {getattr(meta, name)}): an ensemble's members "
                    "must share classes, channels and input size."
                )
    return loaded


def predict_with_checkpoints(
    checkpoints: Checkpoint | Sequence[Checkpoint],
    images: np.ndarray | torch.Tensor,
    table: pd.DataFrame,
    method: str | Method | None = None,
    **options: Any,
) -> PlatePredictions:
    """Adapted predictions of a plate with one checkpoint or an ensemble.

    Parameters
    ----------
    checkpoints
        From :func:`load_ensemble` / :func:`~.checkpoint.load_checkpoint`.
    images
        Crops in the checkpoint's channel order (see
        :func:`phenoadapt.model_input.match_channels`), one per table row.
    table
        Per-cell table with plate, well and role.
    method
        Test-time method; None = the training method of the first checkpoint
        (``erm`` checkpoints thus predict with training statistics unless told
        ``adabn`` or ``ben``).
    **options
        Passed to :func:`phenoadapt.adapt.predict_plate` (context sizes, seed,
        ``allow_fallback``, batch size, device, progress, cancel...).
    """
    members = [checkpoints] if isinstance(checkpoints, Checkpoint) else list(checkpoints)
    if not members:
        raise ModelError("No checkpoint given.")
    meta = members[0].metadata
    chosen = parse_method(method if method is not None else meta.method)
    options.setdefault("input_size", meta.input_size)
    return predict_plate([c.model for c in members], images, table, meta.classes, chosen, **options)
