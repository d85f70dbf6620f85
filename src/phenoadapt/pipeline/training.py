"""Plates and plate maps -> crops -> a trained classifier checkpoint (ERM, ARM-BN or CS-ARM-BN).

Every plate is segmented (or its cells taken from a table), one crop per cell is
cut in the Cell Painting channel order (or, with ``unit="site"``, every field is
resized whole to one tile: :mod:`.tiles`), the input normalization is fitted on the
training plates' crops, and :func:`phenoadapt.train.train_model` trains a ResNet
with plate episodes.  The checkpoint records the crop size and channels, so
:func:`phenoadapt.pipeline.run_plates` cuts the same crops at test time.

Under ``torchrun`` every process segments the plates (the same crops, in the
same order) and takes its share of each step's episodes; rank 0 writes the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..adapt.methods import DEFAULT_CONTROLS_PER_CONTEXT, DEFAULT_TREATED_PER_CONTEXT
from ..cells.crops import CropParams
from ..cells.params import SegmentationParams
from ..cells.process import FieldFailure
from ..errors import OptionError, PhenoadaptError, PlateMapError
from ..model_input import UNITS, ModelInput
from ..nn import INPUT_SCALINGS, ResNetConfig, build_resnet, fit_input_scaling
from ..nn.abra import AbraNetConfig, build_abra
from ..plate.model import Plate
from ..progress import CancelFn, ProgressFn
from ..train import CellData, TrainConfig, TrainResult, save_checkpoint, split_plates, train_model
from ..train import distributed as dist_utils
from ..train.abra import AbraConfig
from ..train.checkpoint import SUFFIX
from . import trust
from .crops import field_count, model_channels, plate_crops
from .tiles import DEFAULT_TILE_SIZE, plate_tiles


class CheckpointExistsError(PhenoadaptError, FileExistsError):
    """A checkpoint file that training would replace."""


@dataclass
class TrainRunConfig:
    """Settings of :func:`train_plates`.

    Attributes
    ----------
    method
        ``cs-arm-bn`` (default), ``arm-bn`` or ``erm``.
    unit
        ``cell`` (default): one crop per segmented cell; ``site``: one tile per
        field, the whole field resized to ``tile_size`` (no segmentation).  Rows
        of the episodes are then sites: 64 treated + 128 control *sites* per
        plate (a plate with fewer gives all it has, see
        :class:`~phenoadapt.train.samplers.PlateEpisodeSampler`).
    tile_size, tile_input_size
        Site unit only: tile side in pixels (128), and the random crop of tiles
        in training / centre crop at test (None: whole tiles).  ``crop_size``,
        ``crop_scale``, ``input_size`` and ``segmentation`` are for cells only.
    arch, width, stem
        ResNet architecture (``resnet10``...), first-stage width and stem.
    input_scaling
        ``log1p`` (default): clip each channel at the 99.99th percentile of the
        training pixels, then ``log1p``; ``image``: divide each crop's (or
        tile's) channel by its own 99.99th percentile, 8 bits, as the official
        CS-ARM-BN code (see :func:`phenoadapt.nn.fit_input_scaling`; on cell
        crops it lost in-domain accuracy, docs/protocol.md).  Recorded in the
        checkpoint: prediction applies the same scaling.
    crop_size, crop_scale
        Crops cut around each cell (pixels) and the resampling before cutting.
    input_size
        Random crop of this size during training, centre crop at test time;
        None uses crops whole.
    max_epochs, patience, lr
        Training length, early stopping (on validation plates) and learning rate.
    treated_per_episode, controls_per_episode, plates_per_step
        Episode sizes (64 treated + 128 controls per plate, 8 plates per step).
    max_steps_per_epoch
        Cap on optimizer steps per epoch (quick runs).
    validation_plates
        Plate ids held out for early stopping; None: ``n_validation`` drawn at random.
    n_validation
        Plates held out when ``validation_plates`` is None (0: train on all, no early stop).
    wells
        Wells used on every plate; all imaged wells when None.
    segmentation
        Segmentation parameters; defaults when None.
    batch_size
        Crops gathered per step of the crop stream.
    seed, device
        Seed of everything random; ``auto``/``cpu``/``cuda``.
    overwrite
        Replace an existing checkpoint file.
    extra
        JSON-ready notes stored in the checkpoint metadata (``metadata.extra``); what
        the model takes is its contract (:meth:`model_input`), not these notes.
    abra
        Train with ABRA (adversarial feature-statistics perturbation, angular-margin
        head, alignment loss; see docs/abra.md) on top of ``method``; None: off.
        Not available under torchrun.
    """

    method: str = "cs-arm-bn"
    unit: str = "cell"
    tile_size: int = DEFAULT_TILE_SIZE
    tile_input_size: int | None = None
    arch: str = "resnet10"
    width: int = 16
    stem: str = "small"
    input_scaling: str = "log1p"
    crop_size: int = 48
    crop_scale: float = 1.0
    input_size: int | None = 40
    max_epochs: int = 30
    patience: int = 8
    lr: float = 1e-3
    # Training episodes have the size of the test-time contexts (the paper's L and C).
    treated_per_episode: int = DEFAULT_TREATED_PER_CONTEXT
    controls_per_episode: int = DEFAULT_CONTROLS_PER_CONTEXT
    plates_per_step: int = 8
    max_steps_per_epoch: int | None = None
    validation_plates: list[str] | None = None
    n_validation: int = 0
    wells: list[str] | None = None
    segmentation: SegmentationParams | None = None
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    abra: AbraConfig | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise PhenoadaptError(
                f"Unknown unit {self.unit!r}: use 'cell' (one crop per cell) or 'site' (one "
                "tile per field)."
            )
        if self.unit == "site":
            if self.tile_size < 8:
                raise PhenoadaptError(f"tile_size {self.tile_size}: give at least 8 pixels.")
            if self.tile_input_size is not None and not 1 <= self.tile_input_size <= self.tile_size:
                raise PhenoadaptError(
                    f"tile_input_size {self.tile_input_size} must be between 1 and the tile "
                    f"size {self.tile_size} (None: whole tiles)."
                )
        if self.input_scaling not in INPUT_SCALINGS:
            raise OptionError(
                f"Unknown input_scaling {self.input_scaling!r}: use 'log1p' (global clip + "
                "log1p, the default) or 'image' (each image by its own 99.99th percentile)."
            )
        self._check_counts()
        # Build the trainer's config now so that a bad method, epoch count or learning
        # rate is refused before any plate is read or segmented.
        self.train_config()

    def _check_counts(self) -> None:
        counts = {
            "width": (self.width, 1), "crop_size": (self.crop_size, 8),
            "batch_size": (self.batch_size, 1), "plates_per_step": (self.plates_per_step, 1),
            "treated_per_episode": (self.treated_per_episode, 1),
            "controls_per_episode": (self.controls_per_episode, 0),
            "n_validation": (self.n_validation, 0),
        }  # fmt: skip
        for name, (value, least) in counts.items():
            if value < least:
                raise OptionError(f"{name} {value}: give at least {least}.")
        if self.crop_scale <= 0:
            raise OptionError(
                f"crop_scale {self.crop_scale}: give a positive scale (1 = as imaged)."
            )

    @property
    def image_size(self) -> int:
        """Side of the images the network is given: crops (cells) or tiles (sites)."""
        return self.tile_size if self.unit == "site" else self.crop_size

    @property
    def model_input_size(self) -> int | None:
        """Random / centre crop of those images (``input_size`` or ``tile_input_size``)."""
        return self.tile_input_size if self.unit == "site" else self.input_size

    def model_input(self, trained: ModelInput) -> ModelInput:
        """The model-input contract of a model trained with these settings.

        ``trained`` is the trainer's (channels, classes, sizes); the unit, crop
        scale and segmentation are this run's.
        """
        if self.unit == "site":
            return replace(trained, unit="site", size=self.tile_size, segmentation=None)
        return replace(
            trained, unit="cell", crop_scale=float(self.crop_scale),
            segmentation=self.segmentation or SegmentationParams(),
        )  # fmt: skip

    def train_config(self) -> TrainConfig:
        """The :class:`~phenoadapt.train.TrainConfig` of this run."""
        return TrainConfig(
            method=self.method, max_epochs=self.max_epochs, patience=self.patience, lr=self.lr,
            treated_per_episode=self.treated_per_episode,
            controls_per_episode=self.controls_per_episode, plates_per_step=self.plates_per_step,
            input_size=self.model_input_size, seed=self.seed, device=self.device,
            max_steps_per_epoch=self.max_steps_per_epoch, abra=self.abra,
        )  # fmt: skip


@dataclass
class TrainRunResult:
    """Outcome of :func:`train_plates`.

    Attributes
    ----------
    path
        The checkpoint written.
    result
        The trainer's result (model, history, best epoch...).
    cells_per_plate
        Number of crops (cells, or tiles for a site model) per plate.
    failures
        Fields that failed, with their plate in ``plate_failures``.
    """

    path: Path
    result: TrainResult
    cells_per_plate: dict[str, int]
    failures: list[FieldFailure] = field(default_factory=list)
    plate_failures: list[str] = field(default_factory=list)


def checkpoint_target(out: str | os.PathLike, overwrite: bool) -> Path:
    """The checkpoint path (``.safetensors`` added); refused if it exists and not ``overwrite``."""
    path = Path(out)
    if not path.suffix:
        path = path.with_suffix(SUFFIX)
    if path.exists() and not overwrite:
        raise CheckpointExistsError(
            f"{path} already exists: choose another --out, or pass --overwrite "
            "(overwrite=True) to replace it."
        )
    if path.exists() and path.is_dir():
        raise CheckpointExistsError(f"{path} is a folder: give a file name for the checkpoint.")
    return path


def _gather_crops(
    plates: Sequence[Plate],
    platemaps: Sequence[Any],
    config: TrainRunConfig,
    cells: Sequence[pd.DataFrame | None],
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> tuple[np.ndarray, pd.DataFrame, tuple[str, ...], list[FieldFailure], list[str]]:
    """Crops (or field tiles) of every plate in the model's channel order, with their table."""
    picked, names = model_channels(plates[0])
    for plate in plates[1:]:
        if model_channels(plate)[1] != names:
            raise PlateMapError(
                f"Plate {plate.plate_id} has channels {model_channels(plate)[1]} but plate "
                f"{plates[0].plate_id} has {names}: training plates must share their channels."
            )
    total = sum(field_count(p, config.wells) for p in plates)
    images, tables, failures, failure_plates = [], [], [], []
    before = 0
    for plate, platemap, table in zip(plates, platemaps, cells, strict=True):
        own, _ = model_channels(plate)
        crop = CropParams(
            size=config.crop_size, scale=config.crop_scale,
            channels=tuple(plate.channels[i].name for i in own),
        )  # fmt: skip

        def report(_stage: str, done: int, _total: int, base: int = before) -> None:
            if progress is not None:
                progress("segment", base + done, total)

        if config.unit == "site":
            crops = plate_tiles(
                plate, own, config.tile_size, platemap=platemap, wells=config.wells,
                progress=report, cancel=cancel,
            )  # fmt: skip
        else:
            crops = plate_crops(
                plate, crop, platemap=platemap, segmentation=config.segmentation,
                wells=config.wells, cells=table, batch_size=config.batch_size, progress=report,
                cancel=cancel,
            )  # fmt: skip
        before += field_count(plate, config.wells)
        images.append(crops.images)
        tables.append(crops.table)
        failures += crops.failures
        failure_plates += [plate.plate_id] * len(crops.failures)
    return np.concatenate(images), pd.concat(tables, ignore_index=True), names, failures, \
        failure_plates  # fmt: skip


def train_plates(
    plates: Sequence[Plate],
    platemaps: Sequence[Any],
    config: TrainRunConfig | None,
    out: str | os.PathLike,
    *,
    cells: Sequence[pd.DataFrame | None] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> TrainRunResult:
    """Train an MoA classifier on plates with plate maps and write its checkpoint.

    Parameters
    ----------
    plates, platemaps
        Training (and validation) plates and one plate map each (roles and MoAs).
    config
        :class:`TrainRunConfig` (default: CS-ARM-BN ResNet-10, 48-pixel crops).
    out
        Checkpoint file (``.safetensors``); never replaced unless ``config.overwrite``.
    cells
        Optional per-cell table per plate whose centroids are cropped instead of
        segmenting (cell unit only).
    progress
        ``progress(stage, done, total)``: ``"segment"`` (fields, also when tiling), ``"train"``
        (optimizer steps), ``"epoch"``.
    cancel
        Polled before every field and step; raises :class:`~phenoadapt.errors.Cancelled`
        (no checkpoint is written).

    Returns
    -------
    TrainRunResult
    """
    config = config or TrainRunConfig()
    train_config = config.train_config()  # validates the method before any work
    path = checkpoint_target(out, config.overwrite)
    plates, platemaps = list(plates), list(platemaps)
    cells = [None] * len(plates) if cells is None else list(cells)
    if not plates or len(platemaps) != len(plates) or len(cells) != len(plates):
        raise PhenoadaptError(
            f"{len(plates)} plates and {len(platemaps)} plate maps: training needs at least one "
            "plate and exactly one plate map per plate (roles and MoAs)."
        )
    if config.unit == "site" and any(c is not None for c in cells):
        raise PhenoadaptError(
            "Cell tables were given but the unit is 'site' (one tile per field, no cells): "
            "drop the cell tables (--cells) or train on cells (unit 'cell')."
        )
    for plate, platemap in zip(plates, platemaps, strict=True):
        if platemap is None:
            raise PlateMapError(
                f"Plate {plate.plate_id} has no plate map: training needs each well's role and MoA."
            )
    images, table, names, failures, failure_plates = _gather_crops(
        plates, platemaps, config, cells, progress, cancel
    )
    data = CellData.from_table(images, table, channel_names=names)
    if config.validation_plates is not None:
        val_ids = sorted(str(p) for p in config.validation_plates)
        unknown = sorted(set(val_ids) - set(data.plates))
        if unknown or len(val_ids) >= len(data.plates):
            raise PhenoadaptError(
                f"Validation plates {val_ids} must be among the plates {data.plates} and leave "
                "at least one for training."
            )
        train_ids = [p for p in data.plates if p not in val_ids]
    else:
        train_ids, val_ids = split_plates(data.plates, config.n_validation, seed=config.seed)
    train, val = data.subset(train_ids), (data.subset(val_ids) if val_ids else None)
    network = ResNetConfig(
        config.arch, len(names), len(data.classes), width=config.width, stem=config.stem,
        normalization=fit_input_scaling(train.images, config.input_scaling, seed=config.seed),
    )  # fmt: skip
    if config.abra is not None:
        # ABRA needs its own head (angular margin) and perturbation points in the backbone.
        model = build_abra(AbraNetConfig(resnet=network), seed=config.seed)
    else:
        model = build_resnet(network, seed=config.seed)
    result = train_model(
        model, train, val, train_config, crop_size=config.image_size, progress=progress,
        cancel=cancel,
    )  # fmt: skip
    # crop_size is the side of the images the network takes: crops, or tiles for sites.
    meta = result.checkpoint_metadata(crop_size=config.image_size)
    meta.model_input = config.model_input(meta.model_input)
    per_plate = table[schema.PLATE].value_counts().sort_index().to_dict()
    notes = {"sites_per_plate": per_plate} if config.unit == "site" else {}
    meta.extra.update({**notes, "cells_per_plate": per_plate, **config.extra})
    meta.extra[trust.METADATA_KEY] = trust.checkpoint_reference(
        result.model, train, val, meta.input_size
    )
    if dist_utils.is_main_process():
        checkpoint_target(path, config.overwrite)  # a file that appeared while training
        save_checkpoint(path, result.model, meta)
    dist_utils.barrier()
    return TrainRunResult(
        path=path,
        result=result,
        cells_per_plate={str(k): int(v) for k, v in meta.extra["cells_per_plate"].items()},
        failures=failures,
        plate_failures=failure_plates,
    )
