"""Table and image helpers shared by the classifier and PhenoProfiler training data.

:class:`~.data.CellData` and :class:`~.phenoprofiler_data.EmbedderData` both
hold images with one metadata row each; these functions read the well roles,
name the wells behind a problem in error messages, pick rows of the images and
name their channels, the same way for both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .. import schema
from ..errors import PlateMapError


def role_values(table: pd.DataFrame) -> np.ndarray:
    """The lower-cased role (``control``, ``treated``, ``excluded``) of every row.

    Raises
    ------
    PlateMapError
        The table has no role column (no plate map attached).
    """
    if schema.ROLE not in table.columns:
        raise PlateMapError(
            f"The table lacks {schema.ROLE}: attach a plate map that marks control, treated and "
            "excluded wells."
        )
    return table[schema.ROLE].astype(str).str.lower().to_numpy()


def describe_wells(table: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    """``"plate well, plate well, ..."`` for the first ``limit`` distinct wells of ``mask``.

    Error messages use it to point at the wells concerned.
    """
    cols = [c for c in (schema.PLATE, schema.WELL) if c in table.columns]
    pairs = table.loc[mask, cols].astype(str).drop_duplicates().head(limit)
    return ", ".join(" ".join(row) for row in pairs.itertuples(index=False))


def take_images(
    images: np.ndarray | torch.Tensor, positions: np.ndarray
) -> np.ndarray | torch.Tensor:
    """The images at ``positions``, indexed in their own kind (tensor or numpy array)."""
    if isinstance(images, torch.Tensor):
        return images[torch.as_tensor(positions)]
    return np.asarray(images)[positions]


def channel_names_for(names: Sequence[str] | None, n_channels: int, what: str) -> tuple[str, ...]:
    """The given channel names, or ``ch1``, ``ch2``... when None.

    ``what`` names the images (``"crops"``, ``"images"``) in the error raised
    when the number of names differs from ``n_channels``.
    """
    channels = tuple(names) if names else tuple(f"ch{i + 1}" for i in range(n_channels))
    if len(channels) != n_channels:
        raise ValueError(f"{len(channels)} channel names for {n_channels}-channel {what}.")
    return channels
