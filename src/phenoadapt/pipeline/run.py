"""Plates -> cells -> adapted predictions, embeddings and tables: the one job behind CLI and GUI.

For each plate: check that the checkpoint fits (channels, classes, controls),
segment every field (or take the cells of a given table) and cut crops the
checkpoint's size, predict every cell with the chosen batch-norm method
(CS-ARM-BN by default: statistics of a sample of 512 cells of the same plate,
a third treated, or the paper's chunks of 64 treated + 128 controls), then
summarize per well and score against the plate map's MoA where it is known.
A checkpoint trained on sites (its model-input contract's ``unit == "site"``,
:class:`phenoadapt.model_input.ModelInput`) is given one tile per field
instead (:mod:`.tiles`; nothing is segmented) and
its ``cells`` table has one row per field.  Plates run one after the other, so
only one plate's crops are in memory at a time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import schema
from ..adapt.methods import (
    DEFAULT_CONTEXT_SIZE,
    DEFAULT_CONTROLS_PER_CONTEXT,
    METHODS,
    MIN_CONTROLS,
    ContextSpec,
    Method,
    Runtime,
    parse_context,
    parse_method,
    predict_plate,
    summarize_wells,
)
from ..cells.params import SegmentationParams
from ..cells.process import FieldFailure
from ..errors import ContextError, ModelError, OptionError, PhenoadaptError
from ..evaluate.accuracy import accuracy_table
from ..models import default_model_path
from ..nn.runtime import select_device
from ..plate.model import Plate
from ..plate.platemap.canonical import DEFAULT_CONTROLS
from ..plate.wells import well_position
from ..progress import CancelFn, ProgressFn
from ..scale import open_scheduler
from ..train.checkpoint import Checkpoint, check_classes
from ..train.predict import load_ensemble
from .context_tasks import ClusterNetwork, cluster_network
from .crops import checkpoint_crop_params, field_count
from .record import run_record
from .runner import plate_inputs, unadapted_features
from .tiles import checkpoint_tiles

#: Network families that classify MoA (ABRA is a ResNet with an angular-margin head).
CLASSIFIER_FAMILIES = ("resnet", "abra")


@dataclass
class RunConfig:
    """Settings of a prediction run.

    Attributes
    ----------
    checkpoint
        A classifier checkpoint (``.safetensors``), or a list of them averaged as
        an ensemble; None = the shipped default model (phenoadapt.models).
    method
        ``erm``, ``adabn``, ``arm-bn``, ``ben`` or ``cs-arm-bn`` (default).
    device
        ``auto`` (CUDA when available), ``cpu``, ``cuda``...
    batch_size
        Crops per forward pass (halved on out-of-memory errors).
    treated_per_context, controls_per_context, min_controls, allow_fallback, seed
        Plate contexts (see :func:`phenoadapt.adapt.plan_contexts`); with a
        site-unit checkpoint contexts count sites (fields) instead of cells.
    context, context_size
        Which cells give each plate's statistics: ``"chunks"`` (the paper's 64
        treated + 128 controls per chunk), ``"plate"`` (every cell) or
        ``"sample"`` (``context_size`` random cells); None: the method's default
        (see :class:`phenoadapt.adapt.ContextChoice`).
    min_control_sites
        ``min_controls`` for a site-unit checkpoint (8: a field tile pools the
        pixels of many cells, and 4 control wells x 2 sites should suffice).
    wells
        Wells to predict; every imaged well when None.
    segmentation
        Segmentation parameters; None: those the checkpoint was trained with
        (its model-input contract, ``metadata.model_input.segmentation``), else the defaults.
    segmentation_overrides
        Fields of the segmentation parameters to change on top of those, e.g.
        ``{"nucleus_channel": "Hoechst"}`` for a plate whose stains are named
        otherwise than the training plates'.
    compare_unadapted
        Also compute features with the training statistics (ERM) for "before"
        views next to the adapted ones.
    return_embeddings
        Return the adapted pooled features (single checkpoints only).
    """

    checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None
    method: str = "cs-arm-bn"
    device: str = "auto"
    batch_size: int = 256
    treated_per_context: int | str | None = None
    controls_per_context: int = DEFAULT_CONTROLS_PER_CONTEXT
    context: str | None = None
    context_size: int = DEFAULT_CONTEXT_SIZE
    min_controls: int = MIN_CONTROLS["cell"]
    min_control_sites: int = MIN_CONTROLS["site"]
    allow_fallback: bool = False
    seed: int = 0
    wells: list[str] | None = None
    segmentation: SegmentationParams | None = None
    segmentation_overrides: dict[str, Any] = field(default_factory=dict)
    compare_unadapted: bool = True
    return_embeddings: bool = True

    def __post_init__(self) -> None:
        self.method = parse_method(self.method).value
        if self.batch_size < 1:
            raise OptionError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.min_controls < 1 or self.min_control_sites < 1 or self.controls_per_context < 1:
            raise OptionError(
                "min_controls, min_control_sites and controls_per_context must be at least 1."
            )
        if self.context is not None:
            try:
                self.context = parse_context(self.context).value
            except ValueError as exc:
                raise OptionError(str(exc)) from None
        if self.context_size < 1:
            raise OptionError(f"context_size must be at least 1, got {self.context_size}.")
        self.contexts()  # a contradiction (e.g. chunk size and context) is refused now

    def contexts(self, unit: str = "cell") -> ContextSpec:
        """How the plates' contexts are drawn, for a model whose inputs are ``unit``."""
        return ContextSpec(
            context=self.context, context_size=self.context_size,
            treated_per_context=self.treated_per_context,
            controls_per_context=self.controls_per_context,
            min_controls=self.min_control_sites if unit == "site" else self.min_controls,
            allow_fallback=self.allow_fallback, seed=self.seed,
        )  # fmt: skip

    def runtime(self) -> Runtime:
        """How the network runs: the models are already on the device (:func:`load_models`)."""
        return Runtime(device=None, batch_size=self.batch_size)


@dataclass
class RunResult:
    """Predictions of one or more plates.

    Attributes
    ----------
    cells
        One row per cell (per field for a site-unit checkpoint, without
        ``cell_id`` or centroid): metadata, ``cell_id`` (label value in the field's cell
        label image from :func:`phenoadapt.cells.segment_field` with the same
        parameters), centroid, ``adapt_method``, ``prob_<class>``,
        ``predicted_moa``, ``confidence``, ``uncertainty``.
    wells
        One row per (plate, well): ``n_cells``, mean probabilities, prediction,
        confidence, uncertainty, ``agreement`` and the well's metadata.
    classes
        Class names of the checkpoint.
    methods
        Method actually used per plate (after a fallback).
    embeddings, embeddings_unadapted
        ``(n_cells, d)`` features under the adapted and the training statistics
        (rows aligned with ``cells``; NaN for cells not predicted); None when not
        asked for or with an ensemble.
    accuracy
        Per plate: ``n_cells``, ``cell_accuracy``, ``n_wells``, ``well_accuracy``
        over treated cells whose MoA the checkpoint knows; None when no plate has one.
    failures
        Fields that failed (the rest of their plate ran), as ``FieldFailure``
        with the plate in ``plate_failures``.
    plate_failures
        Plate id of each entry of ``failures``.
    segmentation
        The segmentation parameters used (what reproduces ``cell_id`` labels);
        None for a site-unit checkpoint.
    unit
        ``cell`` or ``site``: what a row of ``cells`` is.  With sites,
        ``n_cells`` and ``cell_accuracy`` (wells, accuracy) count fields.
    record
        Settings and provenance of the run with its ``run_id``
        (:func:`phenoadapt.pipeline.record.run_record`), set by :func:`run_plates`.
    """

    cells: pd.DataFrame
    wells: pd.DataFrame
    classes: tuple[str, ...]
    methods: dict[str, str]
    embeddings: np.ndarray | None = field(default=None, repr=False)
    embeddings_unadapted: np.ndarray | None = field(default=None, repr=False)
    accuracy: pd.DataFrame | None = None
    failures: list[FieldFailure] = field(default_factory=list)
    plate_failures: list[str] = field(default_factory=list)
    segmentation: SegmentationParams | None = None
    unit: str = "cell"
    record: dict[str, Any] | None = None


# --------------------------------------------------------------------------- checks


def load_models(config: RunConfig) -> list[Checkpoint]:
    """Load the checkpoint(s) of a run on its device; :class:`ModelError` if unfit."""
    paths = config.checkpoint
    if paths is None:
        paths = default_model_path()
    checkpoints = load_ensemble(paths, device=select_device(config.device))
    for ckpt in checkpoints:
        family = ckpt.metadata.network.get("family")
        if family not in CLASSIFIER_FAMILIES or not hasattr(ckpt.model, "classify"):
            raise ModelError(
                f"{ckpt.path} holds a {family!r} network, not an MoA classifier: predictions "
                "need a checkpoint written by `phenoadapt train` (PhenoProfiler checkpoints "
                "go to `phenoadapt embed`)."
            )
    units = {str(c.path): c.metadata.model_input.unit for c in checkpoints}
    if len(set(units.values())) > 1:
        listed = ", ".join(f"{p}: {u}" for p, u in units.items())
        raise ModelError(
            f"The ensemble mixes checkpoints trained on cells and on sites ({listed}): their "
            "inputs differ (cell crops vs field tiles); ensemble checkpoints of one unit."
        )
    return checkpoints


def _unit_word(unit: str) -> str:
    return "sites" if unit == "site" else "cells"


def _check_plate(
    plate: Plate, platemap: Any | None, checkpoints: list[Checkpoint], config: RunConfig
) -> None:
    """Every check that needs no pixel: channels, classes and control wells."""
    meta = checkpoints[0].metadata
    unit = meta.model_input.unit
    if unit == "site":
        checkpoint_tiles(meta, plate)  # channels and tile size
    else:
        checkpoint_crop_params(meta, plate)  # channels and crop size
    if platemap is None:
        if METHODS[parse_method(config.method)].needs_controls and not config.allow_fallback:
            raise ContextError(
                f"Plate {plate.plate_id} has no plate map, so its negative controls are unknown: "
                f"{METHODS[parse_method(config.method)].label} needs them. Give the plate map "
                "(--platemap), choose a method without controls (erm, adabn, arm-bn), or allow "
                "the fallback (--allow-fallback; RunConfig(allow_fallback=True))."
            )
        return
    imaged = set(config.wells) if config.wells is not None else set(plate.wells)
    _check_something_to_run(plate.plate_id, platemap, imaged)
    method = parse_method(config.method)
    _check_negative_controls_marked(
        plate.plate_id, platemap, imaged, METHODS[method].label, meta.classes
    )
    try:
        check_classes(meta, platemap.moas("treated"))
    except ModelError as exc:
        raise ModelError(f"Plate {plate.plate_id}: {exc}") from None
    controls = [w for w in platemap.controls if w in imaged]
    if METHODS[method].needs_controls and not controls and not config.allow_fallback:
        raise ContextError(
            f"Plate {plate.plate_id}: the plate map marks no imaged well as a negative control, "
            f"and {METHODS[method].label} needs at least "
            f"{config.contexts(unit).min_controls_for(unit)} control {_unit_word(unit)}. "
            f"Mark the DMSO wells with role 'control' in the plate map, or allow the fallback "
            f"to {METHODS[METHODS[method].fallback].label} (--allow-fallback; "
            "RunConfig(allow_fallback=True))."
        )


def _check_something_to_run(plate_id: str, platemap: Any, imaged: set[str]) -> None:
    """Refuse a plate whose imaged wells are all excluded: there would be no cell to predict."""
    wanted = [w for w in (*platemap.treated, *platemap.controls) if w in imaged]
    if not wanted:
        raise ContextError(
            f"Nothing to run on plate {plate_id}: its plate map marks none of its "
            f"{len(imaged)} imaged wells as treated or control. Mark treated and control wells "
            "in the Plate map and controls dock (or give a plate map with --platemap)."
        )


def _check_negative_controls_marked(
    plate_id: str, platemap: Any, imaged: set[str], method_label: str, classes: Sequence[str]
) -> None:
    """Refuse DMSO wells marked as treated: they are the plate's negative controls.

    Unless the model has a class for them (a model trained to recognise DMSO).
    """
    treated = set(platemap.treated) & imaged
    negatives = [
        w
        for w in platemap.wells_where(treatment=list(DEFAULT_CONTROLS))
        if w in treated and platemap.record(w).get(schema.MOA) not in classes
    ]
    if negatives:
        shown = ", ".join(sorted(negatives, key=well_position)[:6])
        more = f" and {len(negatives) - 6} more" if len(negatives) > 6 else ""
        raise ContextError(
            f"Plate {plate_id}: wells {shown}{more} hold {'/'.join(DEFAULT_CONTROLS)} but are "
            f"marked as treated. They are the plate's negative controls: mark them as controls "
            f"(Plate map and controls dock, or role 'control' in the plate map), which is what "
            f"{method_label} adapts with."
        )


def _check_control_cells(
    plate_id: str, table: pd.DataFrame, config: RunConfig, unit: str = "cell"
) -> None:
    """Too few control cells (or sites) -> a message saying how many are needed."""
    method = parse_method(config.method)
    info = METHODS[method]
    if not info.needs_controls or config.allow_fallback:
        return
    n = int((table[schema.ROLE].astype(str).str.lower() == schema.Role.CONTROL.value).sum())
    least = config.contexts(unit).min_controls_for(unit)
    if n < least:
        raise ContextError(
            f"Plate {plate_id} has {n} control {_unit_word(unit)} but {info.label} needs at "
            f"least {least} ("
            + ("min_control_sites" if unit == "site" else "min_controls")
            + "): image more control wells, mark more wells as controls, lower "
            "--min-controls, or allow the fallback to "
            f"{METHODS[info.fallback].label} (--allow-fallback; RunConfig(allow_fallback=True))."
        )


def segmentation_for(config: RunConfig, checkpoint: Checkpoint) -> SegmentationParams:
    """The run's segmentation: the config's, else the checkpoint's training one, else defaults.

    ``config.segmentation_overrides`` apply on top (the rule is
    :meth:`phenoadapt.model_input.ModelInput.segmentation_for`).
    """
    return checkpoint.metadata.model_input.segmentation_for(
        config.segmentation, config.segmentation_overrides
    )


# --------------------------------------------------------------------------- prediction


def _predict_one(
    images: np.ndarray,
    table: pd.DataFrame,
    checkpoints: list[Checkpoint],
    config: RunConfig,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    network: ClusterNetwork | None = None,
    plate_id: str = "",
) -> tuple[Any, np.ndarray | None]:
    """Adapted predictions of one plate's crops, and the unadapted features when asked.

    With ``network`` (a scheduler), the contexts and the unadapted pass run as
    tasks on its workers; without, here.
    """
    meta = checkpoints[0].metadata
    single = len(checkpoints) == 1
    unit = meta.model_input.unit
    predictions = predict_plate(
        [c.model for c in checkpoints], images, table, meta.classes, config.method,
        contexts=config.contexts(unit), runtime=config.runtime(), unit=unit,
        input_size=meta.model_input.input_size,
        return_embeddings=single and config.return_embeddings, progress=progress, cancel=cancel,
        runner=None if network is None else network.runner(plate_id),
    )  # fmt: skip
    unadapted = None
    if single and config.compare_unadapted:
        done = np.isfinite(predictions.cells[f"{schema.PROB_PREFIX}{meta.classes[0]}"].to_numpy())
        rows = np.flatnonzero(done)
        if network is None:
            feats = unadapted_features(
                checkpoints[0].model, images, rows, meta.input_size, config.batch_size,
                progress, cancel,
            )  # fmt: skip
        else:
            feats = network.unadapted(
                plate_id, images, rows, input_size=meta.input_size,
                batch_size=config.batch_size, progress=progress, cancel=cancel,
            )  # fmt: skip
        unadapted = np.full((len(table), feats.shape[1]), np.nan, dtype=np.float32)
        unadapted[rows] = feats
    elif progress is not None:
        progress("predict", 1, 1)
    return predictions, unadapted


def run_plates(
    plates: Sequence[Plate],
    platemaps: Sequence[Any | None] | None,
    config: RunConfig | None = None,
    *,
    cells: Sequence[pd.DataFrame | None] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    scheduler: Any | None = None,
) -> RunResult:
    """Adapted MoA predictions of every cell and well of some plates.

    Parameters
    ----------
    plates
        Plates from :func:`phenoadapt.plate.open_plate`.
    platemaps
        One plate map (or None) per plate; roles mark the negative controls.
    config
        :class:`RunConfig` (default: the demo model with CS-ARM-BN).
    cells
        Optional per-cell table per plate (e.g. ``phenoadapt segment``) whose
        centroids are cropped instead of segmenting.
    progress
        ``progress(stage, done, total)``: ``"segment"`` (fields of all plates),
        ``"adapt"`` (contexts of the current plate), ``"predict"`` (batches of
        the unadapted pass of the current plate).
    cancel
        Polled before every field, context and batch; raises
        :class:`~phenoadapt.errors.Cancelled`.
    scheduler
        None (default): every plate is segmented and cropped in this process.
        Otherwise a dask scheduler (``"local"``, ``"tcp://host:8786"``, a
        ``distributed.Client``... see :func:`phenoadapt.scale.open_scheduler`):
        fields are segmented and cropped as dask tasks, gathered in plate
        order, then each plate's contexts are adapted and predicted as tasks
        (on the workers with a ``GPU`` resource when there are some,
        :mod:`.context_tasks`), gathered in context order: the tables are
        the same as without one.  Site-unit checkpoints read their tiles
        here whatever the scheduler (their contexts still run as tasks).

    Returns
    -------
    RunResult

    Raises
    ------
    ModelError
        Not a classifier checkpoint, or channels or classes that do not fit a plate.
    ContextError
        No or too few controls for the method (unless ``allow_fallback``), NaN or
        constant crops.
    CellsError
        A plate where no cell was found.
    """
    config = config or RunConfig()
    results = run_methods(
        plates, platemaps, [config.method], config, cells=cells, progress=progress,
        cancel=cancel, scheduler=scheduler,
    )  # fmt: skip
    result = results[config.method]
    result.record = run_record(config, plates, result)
    return result


def run_methods(
    plates: Sequence[Plate],
    platemaps: Sequence[Any | None] | None,
    methods: Sequence[str],
    config: RunConfig | None = None,
    *,
    cells: Sequence[pd.DataFrame | None] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    scheduler: Any | None = None,
) -> dict[str, RunResult]:
    """Like :func:`run_plates` for several methods, segmenting each plate once.

    Parameters
    ----------
    methods
        Method names (``config.method`` is ignored); the result maps each
        (canonical) name to its :class:`RunResult`.
    plates, platemaps, config, cells, progress, cancel, scheduler
        See :func:`run_plates`.
    """
    config = config or RunConfig()
    methods = list(dict.fromkeys(parse_method(m).value for m in methods))
    if not methods:
        raise PhenoadaptError("No method given: choose among erm, adabn, arm-bn, ben, cs-arm-bn.")
    configs = {m: replace(config, method=m) for m in methods}
    plates = list(plates)
    platemaps = [None] * len(plates) if platemaps is None else list(platemaps)
    cell_tables = [None] * len(plates) if cells is None else list(cells)
    if not plates:
        raise PhenoadaptError("No plate given: pass at least one plate.")
    if len(platemaps) != len(plates) or len(cell_tables) != len(plates):
        raise PhenoadaptError(
            f"{len(plates)} plates but {len(platemaps)} plate maps and {len(cell_tables)} cell "
            "tables: give one plate map (or None) per plate."
        )
    ids = [p.plate_id for p in plates]
    if len(set(ids)) != len(ids):
        raise PhenoadaptError(f"Plate ids must differ to tell the plates apart, got {ids}.")
    # With a scheduler the workers run the network (on their own device): here the
    # checkpoints are only checked and sent, from the CPU.
    checkpoints = load_models(config if scheduler is None else replace(config, device="cpu"))
    meta = checkpoints[0].metadata
    unit = meta.model_input.unit
    if unit == "site" and any(t is not None for t in cell_tables):
        raise ModelError(
            "The checkpoint was trained on whole fields (unit 'site'), so cell tables "
            "(--cells) have no use: drop them, or use a checkpoint trained on cells."
        )
    for plate, platemap in zip(plates, platemaps, strict=True):
        for method_config in configs.values():  # every check before any pixel is read
            _check_plate(plate, platemap, checkpoints, method_config)

    segmentation = None if unit == "site" else segmentation_for(config, checkpoints[0])
    total_fields = sum(field_count(p, config.wells) for p in plates)
    parts: dict[str, list[tuple[Any, np.ndarray | None]]] = {m: [] for m in methods}
    failures: list[FieldFailure] = []
    failure_plates: list[str] = []
    fields_before = 0
    with (
        torch.inference_mode(),
        open_scheduler(scheduler) as client,
        cluster_network(client, checkpoints, config.device) as network,
    ):
        for plate, platemap, table in zip(plates, platemaps, cell_tables, strict=True):

            def report(_stage: str, done: int, _total: int, base: int = fields_before) -> None:
                if progress is not None:
                    progress("segment", base + done, total_fields)

            crops = plate_inputs(
                plate, meta.model_input, platemap=platemap, segmentation=segmentation,
                wells=config.wells, cells=table, batch_size=config.batch_size, progress=report,
                cancel=cancel, scheduler=client,
            )  # fmt: skip
            fields_before += field_count(plate, config.wells)
            failures += crops.failures
            failure_plates += [plate.plate_id] * len(crops.failures)
            for method, method_config in configs.items():
                _check_control_cells(plate.plate_id, crops.table, method_config, unit)
                parts[method].append(
                    _predict_guarded(
                        plate.plate_id, crops.images, crops.table, checkpoints, method_config,
                        progress, cancel, network,
                    )
                )  # fmt: skip
            del crops
    results = {}
    for method in methods:
        result = _merge(parts[method], meta.classes, list(failures), list(failure_plates))
        result.segmentation = segmentation
        result.unit = unit
        results[method] = result
    return results


def _predict_guarded(
    plate_id: str,
    images: np.ndarray,
    table: pd.DataFrame,
    checkpoints: list[Checkpoint],
    config: RunConfig,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    network: ClusterNetwork | None = None,
) -> tuple[Any, np.ndarray | None]:
    """:func:`_predict_one`, with an out-of-memory error that persists turned into a message."""
    hint = f"fewer controls per context (now {config.controls_per_context})"
    with config.runtime().out_of_memory_said(f"predicting plate {plate_id}", hint):
        return _predict_one(images, table, checkpoints, config, progress, cancel, network, plate_id)


def _merge(
    parts: list[tuple[Any, np.ndarray | None]],
    classes: tuple[str, ...],
    failures: list[FieldFailure],
    failure_plates: list[str],
) -> RunResult:
    """One result from the per-plate predictions."""
    cells = pd.concat([p.cells for p, _ in parts], ignore_index=True)
    wells = summarize_wells(cells, classes)
    methods: dict[str, str] = {}
    for p, _ in parts:
        methods.update({plate: Method(m).value for plate, m in p.methods.items()})

    def stack(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    return RunResult(
        cells=cells,
        wells=wells,
        classes=tuple(classes),
        methods=methods,
        embeddings=stack([p.embeddings for p, _ in parts]),
        embeddings_unadapted=stack([u for _, u in parts]),
        accuracy=accuracy_table(cells, wells, classes),
        failures=failures,
        plate_failures=failure_plates,
    )


def run_plate(
    plate: Plate,
    platemap: Any | None = None,
    config: RunConfig | None = None,
    *,
    cells: pd.DataFrame | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    scheduler: Any | None = None,
) -> RunResult:
    """Adapted predictions of one plate (see :func:`run_plates`)."""
    return run_plates(
        [plate], [platemap], config, cells=None if cells is None else [cells],
        progress=progress, cancel=cancel, scheduler=scheduler,
    )  # fmt: skip
