"""From a plate to the crops a checkpoint needs: channels, crop size, segmentation, plate map.

Shared by prediction (:mod:`.run`) and training (:mod:`.training`) so that a
model sees at test time exactly the kind of crops it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..cells.crops import CropParams, CropStream, crop_channels
from ..cells.params import SegmentationParams
from ..cells.process import FieldFailure
from ..cells.table import MAP_COLUMNS, well_metadata
from ..errors import CellsError
from ..model_input import ModelInput, plate_channels
from ..plate.channels import ChannelRole
from ..plate.model import Plate
from ..progress import CancelFn, ProgressFn
from ..train.checkpoint import CheckpointMetadata


@dataclass
class PlateCrops:
    """Every crop of a plate with its per-cell rows (row ``i`` describes crop ``i``)."""

    images: np.ndarray
    table: pd.DataFrame
    failures: list[FieldFailure] = field(default_factory=list)


def model_channels(plate: Plate) -> tuple[list[int], tuple[str, ...]]:
    """Plate channels a new model is trained on, and the names stored in its checkpoint.

    The Cell Painting roles the plate has, in model order (DNA, ER, RNA, AGP,
    Mito); the role name is stored so that any plate whose channels have these
    roles fits the checkpoint, whatever the instrument calls them.
    """
    picked = crop_channels(plate.channels, CropParams())
    names = tuple(
        plate.channels[i].role.value
        if plate.channels[i].role not in (ChannelRole.OTHER, ChannelRole.BRIGHTFIELD)
        else plate.channels[i].name
        for i in picked
    )
    return picked, names


def checkpoint_crop_params(meta: CheckpointMetadata | ModelInput, plate: Plate) -> CropParams:
    """Crop parameters that give ``plate`` crops fit for a checkpoint's model-input contract.

    Raises
    ------
    ModelError
        When the plate lacks a channel the checkpoint needs (naming it and the
        plate's channels), or the checkpoint records no crop size.
    """
    contract = meta.model_input if isinstance(meta, CheckpointMetadata) else meta
    picked = plate_channels(contract, plate)
    return CropParams(
        size=contract.image_size(),
        scale=float(contract.crop_scale),
        channels=tuple(plate.channels[i].name for i in picked),
    )


def attach_platemap(table: pd.DataFrame, platemap: Any | None) -> pd.DataFrame:
    """Role, treatment, MoA and concentration from the plate map (they win over the table's).

    Without a plate map, cells whose role is unknown count as treated: their
    compound is unknown, and methods that need controls say so.
    """
    table = table.copy()
    if platemap is not None and not table.empty:
        meta = {w: well_metadata(platemap, w) for w in table[schema.WELL].astype(str).unique()}
        for column in MAP_COLUMNS:
            table[column] = [meta[w][column] for w in table[schema.WELL].astype(str)]
    elif schema.ROLE not in table.columns or table[schema.ROLE].isna().all():
        table[schema.ROLE] = schema.Role.TREATED.value
        for column in (schema.TREATMENT, schema.MOA):
            if column not in table.columns:
                table[column] = None
    return table


def plate_crops(
    plate: Plate,
    crop: CropParams,
    *,
    platemap: Any | None = None,
    segmentation: SegmentationParams | None = None,
    wells: Sequence[str] | None = None,
    cells: pd.DataFrame | None = None,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    scheduler: Any | None = None,
) -> PlateCrops:
    """Segment a plate (or take its cells from a table) and cut one crop per cell.

    Parameters
    ----------
    plate
        The plate.
    crop
        Crop parameters (see :func:`checkpoint_crop_params`).
    platemap
        Plate map giving role, treatment, MoA and concentration.
    segmentation
        Segmentation parameters (defaults when None).
    wells
        Restrict to these wells.
    cells
        A per-cell table (e.g. from ``phenoadapt segment``) whose centroids are
        cropped instead of segmenting.
    batch_size
        Crops gathered per step of the stream.
    progress
        ``progress(done_fields, total_fields)`` is reported as stage ``"crops"``.
    cancel
        Polled before each field.
    scheduler
        None: fields are segmented and cropped in this process.  Otherwise a
        dask scheduler or client (:func:`phenoadapt.scale.open_scheduler`):
        fields run as tasks, the crops come back in plate order.

    Raises
    ------
    CellsError
        When no field of the plate gave a cell.
    """
    if cells is not None:
        cells = cells.copy()
        cells[schema.WELL] = cells[schema.WELL].astype(str)
    stream = CropStream(
        plate, wells=None if wells is None else list(wells), batch_size=max(int(batch_size), 1),
        crop=crop, segmentation=segmentation or SegmentationParams(), platemap=platemap,
        cells=cells, progress=progress, cancel=cancel, scheduler=scheduler,
    )  # fmt: skip
    batches = list(stream)
    if not batches:
        reasons = "; ".join(f"{f.well} site {f.site}: {f.message}" for f in stream.failures[:3])
        raise CellsError(
            f"No cell was found on plate {plate.plate_id}"
            + (f" ({reasons})" if reasons else "")
            + ": check the segmentation settings (nucleus diameter) and the wells chosen."
        )
    images = np.concatenate([b.crops for b in batches]) if len(batches) > 1 else batches[0].crops
    table = pd.concat([b.cells for b in batches], ignore_index=True)
    return PlateCrops(images, attach_platemap(table, platemap), list(stream.failures))


def field_count(plate: Plate, wells: Sequence[str] | None) -> int:
    """Number of fields a crop stream will visit (for progress totals)."""
    return sum(1 for _ in plate.fields(None if wells is None else list(wells)))
