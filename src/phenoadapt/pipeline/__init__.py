"""Plate -> cells -> adapted predictions and embeddings -> tables, and plates -> a trained model.

- :func:`run_plates` / :func:`run_plate` with a :class:`RunConfig`: segment, crop,
  adapt (CS-ARM-BN by default) and predict; a :class:`RunResult` holds per-cell
  and per-well tables, accuracy per plate, embeddings and the fields that failed;
- :func:`train_plates` with a :class:`TrainRunConfig`: crops of plates with plate
  maps -> :func:`phenoadapt.train.train_model` -> a checkpoint;
- models trained on whole fields (``TrainRunConfig(unit="site")``) take one
  downscaled tile per field instead of a crop per cell (:mod:`.tiles`);
  :func:`plate_inputs` cuts what a checkpoint's model-input contract asks for;
- :mod:`.embed`: PhenoProfiler embeddings of plates per cell, site or well.

Long functions report ``progress(stage, done, total)`` and poll ``cancel()``;
:func:`phenoadapt.progress.iterate_progress` turns them into generators of
progress events for napari workers.  Nothing here imports Qt or napari.
"""

from ..model_input import UNITS
from ..progress import CancelFn, Progress, ProgressFn, check_cancel, iterate_progress
from .crops import PlateCrops, attach_platemap, checkpoint_crop_params, model_channels, plate_crops
from .run import (
    RunConfig,
    RunResult,
    accuracy_table,
    load_models,
    run_methods,
    run_plate,
    run_plates,
    segmentation_for,
)
from .runner import plate_inputs
from .tiles import (
    DEFAULT_MIN_CONTROL_SITES,
    DEFAULT_TILE_SIZE,
    checkpoint_tiles,
    checkpoint_unit,
    field_tiles,
    plate_tiles,
)
from .training import (
    CheckpointExistsError,
    TrainRunConfig,
    TrainRunResult,
    checkpoint_target,
    train_plates,
)

__all__ = [
    "DEFAULT_MIN_CONTROL_SITES",
    "DEFAULT_TILE_SIZE",
    "UNITS",
    "CancelFn",
    "CheckpointExistsError",
    "PlateCrops",
    "Progress",
    "ProgressFn",
    "RunConfig",
    "RunResult",
    "TrainRunConfig",
    "TrainRunResult",
    "accuracy_table",
    "attach_platemap",
    "check_cancel",
    "checkpoint_crop_params",
    "checkpoint_target",
    "checkpoint_tiles",
    "checkpoint_unit",
    "field_tiles",
    "iterate_progress",
    "load_models",
    "model_channels",
    "plate_crops",
    "plate_inputs",
    "plate_tiles",
    "run_methods",
    "run_plate",
    "run_plates",
    "segmentation_for",
    "train_plates",
]
