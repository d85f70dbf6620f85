"""Whole fields as model inputs: one downscaled tile per site (the CS-ARM-BN paper's unit).

A classifier or embedder trained on *sites* sees each field of view whole,
resized to ``size x size`` pixels, instead of one crop per segmented cell.
Nothing is segmented: rows of the tile table are (plate, well, site), labelled
from the plate map like cells.  Shared by :mod:`.training`, :mod:`.run` and
:mod:`.embed` so that every model sees the tiles it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from skimage.transform import resize

from .. import schema
from ..adapt.methods import MIN_CONTROLS
from ..cells.process import FieldFailure
from ..errors import CellsError, PhenoadaptError
from ..model_input import ModelInput, plate_channels
from ..plate.model import Plate
from ..progress import CancelFn, ProgressFn, check_cancel
from ..train.checkpoint import CheckpointMetadata
from .crops import PlateCrops, attach_platemap

#: Default side of a field tile, pixels (fields are downscaled to this).
DEFAULT_TILE_SIZE = 128
#: Fewest control *sites* a plate needs for BEN / CS-ARM-BN with a site model (the
#: one rule, per unit, is :data:`phenoadapt.adapt.methods.MIN_CONTROLS`).
DEFAULT_MIN_CONTROL_SITES = MIN_CONTROLS["site"]


def checkpoint_unit(meta: CheckpointMetadata) -> str:
    """Unit a checkpoint was trained on (``cell`` or ``site``), from its model-input contract."""
    return meta.model_input.unit


def checkpoint_tiles(meta: CheckpointMetadata | ModelInput, plate: Plate) -> tuple[list[int], int]:
    """Plate channels (in the checkpoint's order) and tile size for a site-unit checkpoint.

    Raises
    ------
    ModelError
        When the plate lacks a channel the checkpoint needs, or the checkpoint
        records no tile size.
    """
    contract = meta.model_input if isinstance(meta, CheckpointMetadata) else meta
    return list(plate_channels(contract, plate)), contract.image_size()


def resize_field(image: np.ndarray, size: int) -> np.ndarray:
    """A ``(C, H, W)`` field resized to ``(C, size, size)`` float32 raw intensities.

    Bilinear with anti-aliasing (a Gaussian pre-filter when downscaling, so fine
    structures average instead of aliasing); intensities keep their range.
    """
    tile = resize(
        image.astype(np.float32, copy=False), (image.shape[0], size, size), order=1,
        preserve_range=True, anti_aliasing=True,
    )  # fmt: skip
    return tile.astype(np.float32, copy=False)


def field_tiles(
    plate: Plate,
    channels: Sequence[int],
    size: int,
    wells: Sequence[str] | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    failures: list[FieldFailure] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Every field of a plate resized to a ``size x size`` tile of the given channels.

    Parameters
    ----------
    plate
        The plate.
    channels
        Plate channel indices, in the model's order.
    size
        Tile side in pixels.
    wells
        Restrict to these wells (all imaged wells when None).
    progress
        ``progress("tiles", done_fields, total_fields)`` after each field.
    cancel
        Polled before each field; raises :class:`~phenoadapt.errors.Cancelled`.
    failures
        When given, a field that cannot be read is appended here (as a
        :class:`~phenoadapt.cells.process.FieldFailure`) and skipped; otherwise
        its error propagates.

    Returns
    -------
    tiles, table
        ``(n_fields, len(channels), size, size)`` float32 and one row per tile
        (``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``).
    """
    if size < 8:
        raise PhenoadaptError(f"Tile size {size} is too small: give at least 8 pixels.")
    keys = list(plate.fields(None if wells is None else list(wells)))
    picked = list(channels)
    tiles, rows = [], []
    for i, (well, site) in enumerate(keys):
        check_cancel(cancel, f"Tiling of plate {plate.plate_id}")
        try:
            image = plate.read_field(well, site)[picked]
        except (PhenoadaptError, OSError, ValueError) as exc:
            if failures is None:
                raise
            failures.append(FieldFailure(well, int(site), f"could not be read: {exc}"))
            continue
        tiles.append(resize_field(image, size))
        rows.append({schema.PLATE: plate.plate_id, schema.WELL: well, schema.SITE: int(site)})
        if progress is not None:
            progress("tiles", i + 1, len(keys))
    images = np.stack(tiles) if tiles else np.empty((0, len(picked), size, size), np.float32)
    return images, pd.DataFrame(rows, columns=[schema.PLATE, schema.WELL, schema.SITE])


def plate_tiles(
    plate: Plate,
    channels: Sequence[int],
    size: int,
    *,
    platemap: Any | None = None,
    wells: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> PlateCrops:
    """One tile per field of a plate, with role, treatment and MoA from the plate map.

    The site-unit counterpart of :func:`.crops.plate_crops`: rows of the table
    are fields (no ``cell_id`` or centroid), a field that cannot be read is a
    failure and the rest of the plate goes on.

    Raises
    ------
    CellsError
        When no field of the plate could be read.
    """
    failures: list[FieldFailure] = []
    images, table = field_tiles(
        plate, channels, size, wells, progress=progress, cancel=cancel, failures=failures
    )
    if not len(table):
        reasons = "; ".join(f"{f.well} site {f.site}: {f.message}" for f in failures[:3])
        raise CellsError(
            f"No field of plate {plate.plate_id} could be tiled"
            + (f" ({reasons})" if reasons else "")
            + ": check the plate files and the wells chosen."
        )
    return PlateCrops(images, attach_platemap(table, platemap), failures)
