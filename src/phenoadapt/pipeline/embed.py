"""Embeddings of cells, sites and wells with a trained PhenoProfiler, and their corrections.

Three steps, each usable alone:

1. **per-image embeddings** (:func:`embed_images`, :func:`embed_plate`): the
   network's embedding of every crop (or tile).  The batch-norm statistics the
   network normalizes with are either its training running statistics (no
   adaptation) or those of a *plate context* (AdaBN, ARM-BN, BEN or CS-ARM-BN,
   :mod:`phenoadapt.adapt.methods`): CS-ARM-BN pools treated images and the
   plate's negative controls, by default in one sampled context of 512 cells
   per plate (a third treated; ``context="chunks"``: the paper's 64 + 128);
2. **aggregation** (:func:`aggregate_embeddings`): mean or median of the cell
   embeddings of each site or well;
3. **embedding correction** (:func:`correct_embeddings`) at the output level,
   with each plate's control rows: PhenoProfiler's phenotype correction
   (subtract 0.7 x the plate's control mean) or TVN
   (:mod:`phenoadapt.adapt.embedding`).

A correction is named by a string: ``"none"``, ``"phenotype"``, ``"tvn"``, a
batch-norm method (``"cs-arm-bn"``, ``"adabn"``, ``"arm-bn"``, ``"ben"``;
``"bn"`` means CS-ARM-BN), or a batch-norm method and an embedding correction
joined by ``+`` (``"cs-arm-bn+phenotype"``).

What the network takes from a plate (unit, crop or tile size, crop scale,
channels, segmentation) is the checkpoint's model-input contract
(:class:`phenoadapt.model_input.ModelInput`), read as prediction reads it; the
plate contexts are a :class:`~phenoadapt.adapt.methods.ContextSpec` (with the
same fewest-controls rule, 32 control cells or 8 control sites) and run through
:func:`~phenoadapt.adapt.methods.run_contexts` like the classifier's.

Tables follow :mod:`phenoadapt.schema`: ``Metadata_*`` columns first (plate,
well, site...), at cell level the cell's ``cell_id`` and centroid, at site and
well level ``Metadata_Cell_Count``, then ``emb_0`` ... ``emb_{d-1}``.  Rows of
excluded wells are left out.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import schema
from ..adapt.embedding import phenotype_correction, tvn
from ..adapt.methods import (
    METHODS,
    TRAIN_METHODS,
    ContextSpec,
    Method,
    Runtime,
    parse_method,
)
from ..cells.crops import CropParams, CropStream
from ..cells.params import SegmentationParams
from ..cells.profiles import CELL_COUNT
from ..cells.table import MAP_COLUMNS, well_metadata
from ..errors import CellsError, ContextError, ModelError, OptionError
from ..model_input import ModelInput, plate_channels
from ..nn.runtime import forward_in_batches, select_device
from ..plate.model import Plate
from ..progress import CancelFn, ProgressFn
from ..scale import open_scheduler
from ..schema import embedding_columns  # re-exported: phenoadapt.embed's API
from ..train.augment import center_crop
from ..train.checkpoint import Checkpoint, load_checkpoint
from .context_tasks import cluster_network
from .runner import EmbedRunner, embed_contexts
from .tiles import field_tiles

LEVELS = ("cell", "site", "well")
STATISTICS = ("mean", "median")
EMBEDDING_CORRECTIONS = ("none", "phenotype", "tvn")
EMBEDDER_FAMILY = "phenoprofiler"
_LEVEL_KEYS = {
    "cell": (schema.PLATE, schema.WELL, schema.SITE),
    "site": (schema.PLATE, schema.WELL, schema.SITE),
    "well": (schema.PLATE, schema.WELL),
}
_CELL_COLUMNS = (schema.CELL_ID, schema.CENTROID_Y, schema.CENTROID_X)
#: Methods whose training uses plate-context statistics (ARM-BN, CS-ARM-BN): read from
#: the one method table, so a new method with plate episodes is covered.
_CONTEXT_TRAINED = frozenset(
    m.value for m in TRAIN_METHODS if METHODS[m].uses_treated or METHODS[m].uses_controls
)
#: How embeddings are computed unless told otherwise: the models stay on their device,
#: float32 without channels-last, a context's statistics from one pass whatever its size.
EMBED_RUNTIME = Runtime(device=None, max_pass_size=None, amp=False, channels_last=False)


# --------------------------------------------------------------------------- corrections


@dataclass(frozen=True)
class Correction:
    """What is done to embeddings: batch-norm statistics, then an embedding correction.

    Attributes
    ----------
    bn_method
        Batch-norm procedure (None: the training running statistics).
    embedding
        ``"none"``, ``"phenotype"`` or ``"tvn"``.
    """

    bn_method: Method | None = None
    embedding: str = "none"

    @property
    def needs_controls(self) -> bool:
        """Whether the plate's control wells must be known."""
        bn_controls = self.bn_method is not None and METHODS[self.bn_method].needs_controls
        return bn_controls or self.embedding != "none"

    @property
    def name(self) -> str:
        """Canonical spelling (``"cs-arm-bn+phenotype"``)."""
        parts = [] if self.bn_method is None else [self.bn_method.value]
        if self.embedding != "none" or not parts:
            parts.append(self.embedding)
        return "+".join(parts)


def parse_correction(text: str | Correction) -> Correction:
    """Read a correction name such as ``"tvn"``, ``"bn"`` or ``"cs-arm-bn+phenotype"``.

    Raises
    ------
    OptionError
        For an unknown name (a ValueError), naming the valid ones.
    """
    if isinstance(text, Correction):
        return text
    bn: Method | None = None
    embedding = "none"
    valid = (
        f"use none, phenotype, tvn, a batch-norm method ({', '.join(m.value for m in Method)}, "
        "or bn = cs-arm-bn), or both joined by '+' (e.g. cs-arm-bn+phenotype)"
    )
    parts = [p.strip().lower() for p in str(text).split("+") if p.strip()]
    if not parts or len(parts) > 2:
        raise OptionError(f"Unknown correction {text!r}: {valid}.")
    for part in parts:
        if part in EMBEDDING_CORRECTIONS:
            if embedding != "none":
                raise OptionError(f"Correction {text!r} names two embedding corrections: {valid}.")
            embedding = part
            continue
        try:
            method = parse_method("cs-arm-bn" if part == "bn" else part)
        except ValueError:
            raise OptionError(f"Unknown correction {part!r} in {text!r}: {valid}.") from None
        if bn is not None:
            raise OptionError(f"Correction {text!r} names two batch-norm methods: {valid}.")
        bn = None if method is Method.ERM else method
    return Correction(bn, embedding)


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class ProfileOptions:
    """What is made of a plate's image embeddings: level, aggregation, correction.

    The options of :func:`embed_plate` that travel as one (as a
    :class:`~phenoadapt.adapt.methods.ContextSpec` does for contexts and a
    :class:`~phenoadapt.adapt.methods.Runtime` for the device); checked when made.

    Attributes
    ----------
    level
        ``"cell"``, ``"site"`` or ``"well"`` (:data:`LEVELS`).
    statistic
        Aggregation of the cell embeddings per site or well (:data:`STATISTICS`).
    correction
        A correction name (module docstring) or a :class:`Correction`; read into
        a :class:`Correction`.
    fraction
        Phenotype correction's factor (0.7 in PhenoProfiler).

    Raises
    ------
    OptionError
        An unknown level, statistic or correction.
    """

    level: str = "well"
    statistic: str = "mean"
    correction: Correction | str = Correction()
    fraction: float = 0.7

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise OptionError(f"Unknown level {self.level!r}: use one of {LEVELS}.")
        if self.statistic not in STATISTICS:
            raise OptionError(f"Unknown statistic {self.statistic!r}: use one of {STATISTICS}.")
        object.__setattr__(self, "correction", parse_correction(self.correction))

    @property
    def bn_method(self) -> Method | None:
        """The batch-norm procedure of the correction (None: running statistics)."""
        return self.parsed.bn_method

    @property
    def parsed(self) -> Correction:
        """The correction, typed (``correction`` is always one after construction)."""
        assert isinstance(self.correction, Correction)
        return self.correction

    def table(self, cells: pd.DataFrame) -> pd.DataFrame:
        """Aggregate a per-image embedding table to the level, then correct it."""
        return correct_embeddings(
            aggregate_embeddings(cells, self.level, self.statistic),
            self.parsed.embedding,
            self.fraction,
        )


def require_embedder(checkpoint: Checkpoint) -> Checkpoint:
    """Return ``checkpoint`` if it holds a PhenoProfiler, else raise :class:`ModelError`."""
    family = checkpoint.metadata.network.get("family")
    if family != EMBEDDER_FAMILY or not hasattr(checkpoint.model, "embed"):
        where = f"{checkpoint.path}" if checkpoint.path is not None else "The checkpoint"
        raise ModelError(
            f"{where} holds a {family!r} network ({checkpoint.metadata.architecture}), not a "
            "PhenoProfiler embedder: embeddings need a checkpoint trained with "
            "phenoadapt.train.train_phenoprofiler. Use classifier checkpoints for predictions."
        )
    return checkpoint


def load_embedder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a PhenoProfiler checkpoint (safetensors + JSON; never unpickles).

    Raises
    ------
    ModelError
        Not a checkpoint, or a checkpoint of another kind (e.g. a classifier).
    """
    return require_embedder(load_checkpoint(path, device=device))


# --------------------------------------------------------------------------- per-image embeddings


def _as_tensor(images: np.ndarray | torch.Tensor, idx: np.ndarray | None = None) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return (images if idx is None else images[torch.as_tensor(idx)]).float()
    array = np.asarray(images) if idx is None else np.asarray(images)[idx]
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _model_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device


def check_images(model: nn.Module, images: np.ndarray | torch.Tensor, table: pd.DataFrame) -> None:
    """Raise :class:`ModelError` / ``ValueError`` when images do not fit the model or the table."""
    if getattr(images, "ndim", 0) != 4:
        raise ValueError(
            f"Images must be (n, channels, height, width), got shape {tuple(images.shape)}."
        )
    if int(images.shape[0]) != len(table):
        raise ValueError(f"{int(images.shape[0])} images for {len(table)} table rows.")
    expected = int(getattr(model, "in_channels", images.shape[1]))
    if int(images.shape[1]) != expected:
        raise ModelError(
            f"The embedder takes {expected} channels but the images have {int(images.shape[1])}: "
            "select the plate channels the checkpoint names (its metadata lists them)."
        )


def _usable_rows(table: pd.DataFrame) -> np.ndarray:
    if schema.ROLE not in table.columns:
        return np.ones(len(table), dtype=bool)
    return table[schema.ROLE].astype(str).str.lower().to_numpy() != schema.Role.EXCLUDED.value


def image_embeddings(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    table: pd.DataFrame,
    *,
    bn_method: str | Method | None = None,
    input_size: int | None = None,
    contexts: ContextSpec | None = None,
    runtime: Runtime = EMBED_RUNTIME,
    unit: str = "cell",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    runner: EmbedRunner | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of the images of a table (no aggregation, no embedding correction).

    Parameters
    ----------
    model
        A PhenoProfiler (anything with ``embed``), left as it was.
    images
        ``(n, C, h, w)`` raw intensities, one per table row.
    table
        ``Metadata_Plate`` and ``Metadata_Role`` are needed for plate contexts.
    bn_method
        None or ``"erm"``: running statistics; else the plate-context method.
    input_size
        Centre crop applied first (the checkpoint's ``input_size``).
    contexts
        How plate contexts are drawn (:class:`~phenoadapt.adapt.methods.ContextSpec`).
    runtime
        Batch size, AMP... (:data:`EMBED_RUNTIME` by default; the model is not moved
        unless ``runtime.device`` is set).
    unit
        What an image is (``cell`` or ``site``): sets the fewest controls a
        plate needs (32 cells, 8 sites) unless ``contexts.min_controls`` does.
    progress, cancel
        ``progress("embed", done, total)``; ``cancel()`` raises ``Cancelled``.
    runner
        What embeds the planned contexts: None, :func:`embed_contexts` here; or
        a function with its signature returning the same arrays in the same
        order (dask tasks: :meth:`.context_tasks.ClusterNetwork.embedder`).

    Returns
    -------
    (embeddings, rows)
        ``(k, d)`` float32 embeddings and the positions of the ``k`` rows they
        belong to (excluded wells are left out), in table order.
    """
    check_images(model, images, table)
    method = None if bn_method is None else parse_method(bn_method)
    runtime.place([model])
    device = _model_device(model)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return model.embed(center_crop(x, input_size))

    if method is None or method is Method.ERM:
        rows = np.flatnonzero(_usable_rows(table))
        was_training = model.training
        model.eval()
        try:
            (out,) = forward_in_batches(
                embed, _as_tensor(images, rows), batch_size=runtime.batch_size, device=device,
                cancel=cancel,
            )  # fmt: skip
        finally:
            model.train(was_training)
        if progress is not None:
            progress("embed", 1, 1)
        return out.numpy(), rows
    planned = (contexts or ContextSpec()).plan(table, method, unit=unit)
    n_dim = int(getattr(model, "embedding_dim", 0)) or None
    result: np.ndarray | None = None
    done = np.zeros(len(table), dtype=bool)
    # Statistics once per context (one pass, whatever its size); the context's own
    # cells come out of that pass, the others are embedded in eval mode with them.
    outputs = (runner or embed_contexts)(
        model, images, planned, input_size=input_size, runtime=runtime, progress=progress,
        cancel=cancel,
    )  # fmt: skip
    for ctx, out in zip(planned, outputs, strict=True):
        if result is None:
            result = np.zeros((len(table), n_dim or out.shape[1]), dtype=np.float32)
        result[ctx.predict] = out
        done[ctx.predict] = True
    rows = np.flatnonzero(done)
    if result is None:
        raise ContextError("No image to embed: every well of the table is excluded.")
    return result[rows], rows


@dataclass(frozen=True)
class EmbedPass:
    """How the images of one table are embedded: :func:`image_embeddings`' settings as one.

    What :func:`embed_images` and :func:`embed_plate` hand on to the step that
    embeds a table's images, so that step's signature names them (they were an
    untyped dict); the fields are :func:`image_embeddings`' keywords.

    Attributes
    ----------
    input_size
        Centre crop applied first (the contract's ``input_size``).
    contexts
        How plate contexts are drawn (None: :class:`~phenoadapt.adapt.methods.ContextSpec`'s
        defaults).
    runtime
        Device, batch size, AMP...
    unit
        ``cell`` or ``site``: what an image is (the fewest controls a plate needs).
    progress, cancel
        Progress and cancellation hooks.
    runner
        What embeds the planned contexts (None: :func:`.runner.embed_contexts`).
    """

    input_size: int | None = None
    contexts: ContextSpec | None = None
    runtime: Runtime = EMBED_RUNTIME
    unit: str = "cell"
    progress: ProgressFn | None = None
    cancel: CancelFn | None = None
    runner: EmbedRunner | None = None

    def embeddings(
        self,
        model: nn.Module,
        images: np.ndarray | torch.Tensor,
        table: pd.DataFrame,
        bn_method: Method | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`image_embeddings` of ``images`` with these settings."""
        return image_embeddings(
            model, images, table, bn_method=bn_method, input_size=self.input_size,
            contexts=self.contexts, runtime=self.runtime, unit=self.unit,
            progress=self.progress, cancel=self.cancel, runner=self.runner,
        )  # fmt: skip


# --------------------------------------------------------------------------- tables


def _metadata_order(table: pd.DataFrame, keys: Iterable[str]) -> list[str]:
    keys = [k for k in keys if k in table.columns]
    rest = [c for c in table.columns if schema.is_metadata(c) and c not in keys]
    return keys + rest


def cell_embedding_table(table: pd.DataFrame, embeddings: np.ndarray) -> pd.DataFrame:
    """Per-image embedding table: the one column order of every cell embedding table.

    ``phenoadapt embed --level cell``, ``phenoadapt predict --embeddings`` (both
    ``embeddings.csv`` and ``embeddings_unadapted.csv``), the API and the GUI's
    UMAP all make their per-cell tables here.  Following pycytominer, metadata
    comes first: ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` (those
    present), then the table's other ``Metadata_*`` columns in their order; then
    ``cell_id``, ``centroid_y``, ``centroid_x`` (those present); then ``emb_0`` ...
    ``emb_{d-1}`` as float32.  Other columns (predictions, probabilities...) are
    left out.

    Parameters
    ----------
    table
        One row per image (cell or field), in the order of ``embeddings``.
    embeddings
        ``(len(table), d)`` array; NaN rows (images not embedded) are kept.

    Returns
    -------
    pandas.DataFrame
        A new table with a fresh index.

    Raises
    ------
    ValueError
        When ``embeddings`` has another number of rows than ``table``.
    """
    if len(table) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings for {len(table)} rows.")
    meta = _metadata_order(table, _LEVEL_KEYS["cell"])
    ids = [c for c in _CELL_COLUMNS if c in table.columns]
    out = table[meta + ids].reset_index(drop=True)
    emb = pd.DataFrame(
        np.asarray(embeddings, dtype=np.float32), columns=embedding_columns(embeddings.shape[1])
    )
    return pd.concat([out, emb], axis=1)


def aggregate_embeddings(
    cells: pd.DataFrame, level: str = "well", statistic: str = "mean"
) -> pd.DataFrame:
    """Aggregate a per-cell embedding table per site or well.

    Parameters
    ----------
    cells
        A :func:`cell_embedding_table` (or any table with ``emb_*`` columns).
    level
        ``"cell"`` (returned unchanged), ``"site"`` or ``"well"``.
    statistic
        ``"mean"`` or ``"median"``.

    Returns
    -------
    pandas.DataFrame
        One row per site or well in first-appearance order: the keys, the other
        metadata (constant within a well), ``Metadata_Cell_Count``, the embeddings.
    """
    if level not in LEVELS:
        raise ValueError(f"Unknown level {level!r}: use one of {LEVELS}.")
    if statistic not in STATISTICS:
        raise ValueError(f"Unknown statistic {statistic!r}: use one of {STATISTICS}.")
    if level == "cell":
        return cells
    keys = list(_LEVEL_KEYS[level])
    missing = [k for k in keys if k not in cells.columns]
    if missing:
        raise CellsError(f"The embedding table lacks {missing}: cannot aggregate per {level}.")
    emb = [c for c in cells.columns if c.startswith(schema.EMBEDDING_PREFIX)]
    meta = [
        c
        for c in _metadata_order(cells, keys)
        if c not in keys and c not in (schema.SITE, CELL_COUNT)
    ]
    groups = cells.groupby(keys, sort=False, dropna=False)
    parts = [groups[meta].first()] if meta else []
    parts.append(groups.size().rename(CELL_COUNT))
    parts.append(getattr(groups[emb], statistic)())
    return pd.concat(parts, axis=1).reset_index()


def correct_embeddings(
    table: pd.DataFrame, correction: str = "phenotype", fraction: float = 0.7
) -> pd.DataFrame:
    """Phenotype correction or TVN of an embedding table with each plate's control rows.

    Parameters
    ----------
    table
        Embedding table with ``Metadata_Plate``, ``Metadata_Role`` and ``emb_*``.
    correction
        ``"none"``, ``"phenotype"`` (subtract ``fraction`` x the plate's control
        mean) or ``"tvn"`` (control PCA whitening + per-plate alignment; the
        number of embedding columns can shrink to the kept components).
    fraction
        Phenotype correction's factor (0.7 in PhenoProfiler).

    Raises
    ------
    ContextError
        No role column, or a plate without (enough) control rows.
    """
    if correction not in EMBEDDING_CORRECTIONS:
        raise ValueError(
            f"Unknown embedding correction {correction!r}: use {EMBEDDING_CORRECTIONS}."
        )
    if correction == "none":
        return table
    _require_roles(table, correction)
    emb = [c for c in table.columns if c.startswith(schema.EMBEDDING_PREFIX)]
    X = table[emb].to_numpy(dtype=np.float64)
    plates = table[schema.PLATE].astype(str).to_numpy()
    controls = table[schema.ROLE].astype(str).str.lower().to_numpy() == schema.Role.CONTROL.value
    if correction == "phenotype":
        corrected = phenotype_correction(X, plates, controls, fraction)
    else:
        corrected = tvn(X, plates, controls)
    out = table.drop(columns=emb).reset_index(drop=True)
    values = pd.DataFrame(
        corrected.astype(np.float32), columns=embedding_columns(corrected.shape[1])
    )
    return pd.concat([out, values], axis=1)


def _require_roles(table: pd.DataFrame, what: str) -> None:
    if schema.PLATE not in table.columns or schema.ROLE not in table.columns:
        raise ContextError(
            f"The {what} correction uses each plate's negative controls, but the table has no "
            f"{schema.ROLE} (or {schema.PLATE}) column: give a plate map that marks the control "
            "wells."
        )


def embed_images(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    table: pd.DataFrame,
    *,
    level: str = "cell",
    statistic: str = "mean",
    correction: str | Correction = "none",
    fraction: float = 0.7,
    input_size: int | None = None,
    contexts: ContextSpec | None = None,
    runtime: Runtime = EMBED_RUNTIME,
    unit: str = "cell",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    runner: EmbedRunner | None = None,
) -> pd.DataFrame:
    """Embedding table of images (crops or tiles) at cell, site or well level.

    Parameters
    ----------
    model
        A PhenoProfiler.
    images, table
        One image per table row (``Metadata_Plate``, ``Metadata_Well``,
        ``Metadata_Site``, ``Metadata_Role``...).
    level, statistic, correction, fraction
        The fields of :class:`ProfileOptions` (output level, aggregation,
        correction such as ``"tvn"`` or ``"cs-arm-bn+phenotype"``, phenotype
        correction's factor).
    input_size, contexts, runtime, unit, runner
        See :func:`image_embeddings`.
    progress, cancel
        Progress and cancellation hooks.

    Returns
    -------
    pandas.DataFrame
        Metadata columns then ``emb_0..emb_{d-1}``.
    """
    profile = ProfileOptions(level, statistic, correction, fraction)
    how = EmbedPass(
        input_size=input_size, contexts=contexts, runtime=runtime, unit=unit,
        progress=progress, cancel=cancel, runner=runner,
    )  # fmt: skip
    return _profile_images(model, images, table, profile, how)


def _profile_images(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    table: pd.DataFrame,
    profile: ProfileOptions,
    how: EmbedPass,
) -> pd.DataFrame:
    """:func:`embed_images` with its options as two: what the table is, how it is embedded."""
    if profile.parsed.needs_controls:
        _require_roles(table, profile.parsed.name)
    table = table.reset_index(drop=True)
    values, rows = how.embeddings(model, images, table, profile.bn_method)
    return profile.table(cell_embedding_table(table.iloc[rows], values))


# --------------------------------------------------------------------------- plates


def _with_platemap(rows: pd.DataFrame, platemap: Any | None) -> pd.DataFrame:
    """Role, treatment, MoA and concentration from the plate map (they win over the table's)."""
    if platemap is None or rows.empty:
        return rows
    rows = rows.copy()
    meta = {w: well_metadata(platemap, w) for w in rows[schema.WELL].astype(str).unique()}
    for column in MAP_COLUMNS:
        rows[column] = [meta[w][column] for w in rows[schema.WELL].astype(str)]
    return rows


def embed_plate(
    plate: Plate,
    checkpoint: Checkpoint | str | os.PathLike,
    platemap: Any | None = None,
    *,
    profile: ProfileOptions = ProfileOptions(),
    cells: pd.DataFrame | None = None,
    wells: Iterable[str] | None = None,
    segmentation: SegmentationParams | Mapping[str, Any] | None = None,
    contexts: ContextSpec | None = None,
    runtime: Runtime = EMBED_RUNTIME,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    scheduler: Any | None = None,
) -> pd.DataFrame:
    """Embed every cell (or field) of a plate and return cell, site or well embeddings.

    What the network is given follows the checkpoint's model-input contract
    (``metadata.model_input``), as :func:`phenoadapt.pipeline.run_plates` does:
    a site checkpoint gets one tile per field of its tile size, a cell
    checkpoint crops of its crop size and scale, cut around cells found with
    the segmentation it was trained with.

    Parameters
    ----------
    plate
        The plate (:func:`phenoadapt.plate.open_plate`).
    checkpoint
        A PhenoProfiler checkpoint (loaded, or a path, loaded on ``runtime.device``
        or the CPU).
    platemap
        Plate map giving roles (needed by corrections that use controls), treatments, MoAs.
    profile
        Level, aggregation and correction of the table (:class:`ProfileOptions`;
        default: well means, no correction).
    cells
        A per-cell table made earlier (``phenoadapt segment``, or a synthetic
        plate's ground truth): crops are cut at its centroids instead of
        segmenting the plate.
    wells
        Restrict to these wells.
    segmentation
        How cells are found when ``cells`` is not given: None, the contract's
        (what the model was trained with), else the defaults;
        :class:`~phenoadapt.cells.SegmentationParams` to replace them; or a
        mapping of fields to change in them, e.g. ``{"nucleus_diameter": 20}``
        (the rule of :meth:`phenoadapt.model_input.ModelInput.segmentation_for`,
        as for predictions).
    contexts
        How plate contexts are drawn for batch-norm corrections
        (:class:`~phenoadapt.adapt.methods.ContextSpec`; fewest controls: 32
        cells or 8 sites unless it says otherwise).
    runtime
        Device, batch size... (:data:`EMBED_RUNTIME` by default).
    progress, cancel
        ``progress(stage, done, total)`` with stages ``crops`` and ``embed``;
        ``cancel()`` raises :class:`~phenoadapt.errors.Cancelled`.
    scheduler
        None: fields are segmented and cropped in this process.  Otherwise a
        dask scheduler or client (:func:`phenoadapt.scale.open_scheduler`):
        fields run as dask tasks and come back in plate order, and with a
        batch-norm correction each plate context is adapted and embedded as a
        task (on the workers with a ``GPU`` resource when there are some,
        :mod:`.context_tasks`), gathered in context order: the tables are the
        same as without one.  Running statistics embed here, batch by batch;
        site-unit checkpoints read their tiles here (their contexts still run
        as tasks).

    Raises
    ------
    ModelError
        Not a PhenoProfiler, channels the plate lacks, no recorded crop or tile
        size, or cell embeddings asked of a site checkpoint.

    Memory: with a batch-norm correction the crops of the plate are held in
    memory (cells x channels x size^2 x 4 bytes) because contexts draw from the
    whole plate; without one, crops are embedded batch by batch as they are cut.
    """
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint, device=select_device(runtime.device or "cpu"))
    require_embedder(checkpoint)
    _warn_running_statistics(checkpoint, profile.parsed)
    _require_platemap(profile.parsed, platemap, cells)
    contract = checkpoint.metadata.model_input
    wells = None if wells is None else list(wells)
    with (
        open_scheduler(scheduler) as client,
        _cluster_embedder(client, checkpoint, profile.parsed, runtime, plate.plate_id) as runner,
        runtime.out_of_memory_said(f"embedding plate {plate.plate_id}", "a smaller batch size"),
    ):
        if contract.unit == "site":
            images, table = _plate_tiles(plate, contract, profile, wells, cancel)
        else:
            stream = _crop_stream(
                plate, contract, platemap, cells, wells, segmentation, client,
                batch_size=runtime.batch_size, progress=progress, cancel=cancel,
            )  # fmt: skip
            if profile.bn_method is None:
                return _embed_streamed(
                    checkpoint.model, stream, plate, platemap, profile,
                    input_size=contract.input_size, runtime=runtime, cancel=cancel,
                )  # fmt: skip
            images, table = _plate_crops(stream, plate)
        how = EmbedPass(
            input_size=contract.input_size, contexts=contexts, runtime=runtime,
            unit=contract.unit, progress=progress, cancel=cancel, runner=runner,
        )  # fmt: skip
        return _profile_images(
            checkpoint.model, images, _with_platemap(table, platemap), profile, how
        )


def _require_platemap(corr: Correction, platemap: Any | None, cells: pd.DataFrame | None) -> None:
    """A correction that uses controls needs the plate map (or a cell table with roles)."""
    has_roles = cells is not None and schema.ROLE in cells.columns
    if corr.needs_controls and platemap is None and not has_roles:
        raise ContextError(
            f"The {corr.name} correction uses the plate's negative controls: give the plate map "
            "(--platemap) that marks the control wells."
        )


def _plate_tiles(
    plate: Plate,
    contract: ModelInput,
    profile: ProfileOptions,
    wells: list[str] | None,
    cancel: CancelFn | None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """One tile of the contract's tile size per field (a site checkpoint)."""
    if profile.level == "cell":
        raise ModelError(
            "This checkpoint embeds whole fields (unit 'site'), so there are no per-cell "
            "embeddings: use level 'site' or 'well'."
        )
    picked = plate_channels(contract, plate)
    return field_tiles(plate, picked, contract.image_size(), wells, cancel=cancel)


def _crop_stream(
    plate: Plate,
    contract: ModelInput,
    platemap: Any | None,
    cells: pd.DataFrame | None,
    wells: list[str] | None,
    segmentation: SegmentationParams | Mapping[str, Any] | None,
    scheduler: Any | None,
    *,
    batch_size: int,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> CropStream:
    """Crops as prediction cuts them: the contract's size, scale, channels, segmentation."""
    picked = plate_channels(contract, plate)
    crop = CropParams(
        size=contract.image_size(), scale=float(contract.crop_scale),
        channels=tuple(plate.channels[i].name for i in picked),
    )  # fmt: skip
    chosen = segmentation if isinstance(segmentation, SegmentationParams) else None
    overrides = None if isinstance(segmentation, SegmentationParams) else segmentation
    return CropStream(
        plate, wells=wells, batch_size=batch_size, crop=crop,
        segmentation=contract.segmentation_for(chosen, overrides), platemap=platemap,
        cells=cells, progress=progress, cancel=cancel, scheduler=scheduler,
    )  # fmt: skip


def _plate_crops(stream: CropStream, plate: Plate) -> tuple[np.ndarray, pd.DataFrame]:
    """Every crop of the plate in memory (contexts draw from the whole plate)."""
    batches = list(stream)
    _report_failures(stream, plate)
    if not batches:
        raise CellsError(f"No cell was found on plate {plate.plate_id}: nothing to embed.")
    images = np.concatenate([b.crops for b in batches])
    return images, pd.concat([b.cells for b in batches], ignore_index=True)


@contextlib.contextmanager
def _cluster_embedder(
    client: Any | None,
    checkpoint: Checkpoint,
    corr: Correction,
    runtime: Runtime,
    plate_id: str,
) -> Iterator[EmbedRunner | None]:
    """Plate contexts as dask tasks when there is a client and a batch-norm correction."""
    if corr.bn_method is None:
        client = None  # running statistics: no context, nothing to send
    # The workers run what this process would: the runtime's device, else the model's
    # (its type only: a worker's cuda:0 is its own device).
    device = runtime.device or _model_device(checkpoint.model).type
    with cluster_network(client, [checkpoint], str(device)) as network:
        yield None if network is None else network.embedder(plate_id)


def _warn_running_statistics(checkpoint: Checkpoint, corr: Correction) -> None:
    """Warn when a plate-context-trained network is used with running statistics."""
    trained = str(getattr(checkpoint.metadata, "method", "") or "")
    if corr.bn_method is None and trained in _CONTEXT_TRAINED:
        # Such a network learnt with plate-context statistics, not running averages.
        warnings.warn(
            f"This checkpoint was trained with {trained} plate episodes but is used with "
            "running batch-norm statistics: use the correction 'bn' (or 'bn+phenotype', "
            "'bn+tvn') to embed with the plate's own context statistics.",
            stacklevel=3,
        )


def _embed_streamed(
    model: nn.Module,
    stream: CropStream,
    plate: Plate,
    platemap: Any | None,
    profile: ProfileOptions,
    *,
    input_size: int | None,
    runtime: Runtime,
    cancel: CancelFn | None,
) -> pd.DataFrame:
    """Running statistics: every batch is embedded on its own, crops are not kept.

    No context, so no contexts, unit or runner; progress is the stream's (``crops``).
    """
    parts = []
    for batch in stream:
        rows = _with_platemap(batch.cells, platemap)
        values, kept = image_embeddings(
            model, batch.crops, rows, input_size=input_size, runtime=runtime, cancel=cancel,
        )  # fmt: skip
        parts.append(cell_embedding_table(rows.iloc[kept], values))
    _report_failures(stream, plate)
    if not parts:
        raise CellsError(f"No cell was found on plate {plate.plate_id}: nothing to embed.")
    return profile.table(pd.concat(parts, ignore_index=True))


def _report_failures(stream: CropStream, plate: Plate) -> None:
    if stream.failures:
        listed = "; ".join(f"{f.well} site {f.site}: {f.message}" for f in stream.failures[:5])
        more = f" and {len(stream.failures) - 5} more" if len(stream.failures) > 5 else ""
        warnings.warn(
            f"{len(stream.failures)} field(s) of plate {plate.plate_id} were skipped "
            f"({listed}{more}).",
            stacklevel=3,
        )
