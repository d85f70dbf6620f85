"""Plate-context batch-norm adaptation for feature tables (CellProfiler profiles).

The image pipeline adapts a ResNet to a plate by recomputing its batch-norm
statistics from that plate's crops.  Here the same methods run on a *feature
table* (one row per well or cell, numeric features, ``Metadata_Plate`` and
``Metadata_Role``): an :class:`~phenoadapt.nn.mlp.MLPClassifier` with
``BatchNorm1d`` layers is trained with the plate-episode trainer of
:mod:`phenoadapt.train` and used with the plate-context statistics of
:mod:`phenoadapt.adapt`:

========== =============================== =====================================
method     trained with                    test-time statistics of a plate
========== =============================== =====================================
erm        mixed minibatches               training running statistics
adabn      (an ERM model)                  all rows of the plate
ben        (an ERM or CS-ARM-BN model)     the plate's control rows
arm-bn     one plate per forward pass      the plate's treated rows
cs-arm-bn  one plate's treated + controls  the plate's treated + control rows
========== =============================== =====================================

Nothing is reimplemented: training is :func:`phenoadapt.train.train_model` on a
:class:`~phenoadapt.train.CellData` whose "images" are the ``(n, F)`` feature rows,
prediction is :func:`phenoadapt.adapt.predict_plate`.  A table of wells is small,
so a context is by default the whole plate (``context="plate"``) and a
plate needs at least one control row (``min_controls=1``) for BEN and CS-ARM-BN.

Bad input is refused with a message naming what to fix: NaN or constant feature
columns (:class:`~phenoadapt.errors.TableError`, drop them with
:func:`~phenoadapt.profiles.clean_features`), missing metadata columns
(``TableError``), treated rows without an MoA (``PlateMapError``), a plate without
control rows for a method that needs them (:class:`~phenoadapt.errors.ContextError`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema
from ..adapt.methods import (
    DEFAULT_CONTEXT_SIZE,
    DEFAULT_CONTROLS_PER_CONTEXT,
    METHODS,
    TRAIN_METHODS,
    ContextSpec,
    Method,
    PlatePredictions,
    Runtime,
    parse_method,
    predict_plate,
)
from ..errors import ContextError, ModelError, TableError
from ..nn.mlp import MLPClassifier, MLPConfig, build_mlp
from ..profiles.cleaning import check_features
from ..profiles.table import _shorten, feature_columns, feature_matrix, require_columns
from ..progress import CancelFn, ProgressFn
from ..train.checkpoint import CheckpointMetadata, load_checkpoint, save_checkpoint
from ..train.data import CellData
from ..train.trainers import TrainConfig, TrainResult, train_model

#: Default test-time method of each training method: its own.
TEST_METHOD = {m.value: m.value for m in TRAIN_METHODS}


@dataclass
class TableModel:
    """A trained feature-table network with what is needed to apply it.

    Attributes
    ----------
    model
        The MLP (eval mode), with its input standardization.
    features
        Feature columns, in the order the network reads them.
    classes
        Class names, in the order of the outputs.
    method
        Training method; also the default test-time method.
    result
        The training run (history, plates); None for a loaded checkpoint.
    """

    model: MLPClassifier
    features: tuple[str, ...]
    classes: tuple[str, ...]
    method: str
    result: TrainResult | None = None

    def save(self, path: str | os.PathLike) -> Path:
        """Write a safetensors + JSON checkpoint (features stored as the channel names)."""
        if self.result is not None:
            metadata = self.result.checkpoint_metadata()
        else:
            metadata = CheckpointMetadata(
                network=self.model.spec(), classes=self.classes, channel_names=self.features,
                method=self.method,
            )  # fmt: skip
        return save_checkpoint(path, self.model, metadata)


def load_table_model(path: str | os.PathLike) -> TableModel:
    """Load a :class:`TableModel` written by :meth:`TableModel.save` (never unpickles).

    Raises
    ------
    phenoadapt.errors.ModelError
        When the checkpoint holds an image network rather than a feature MLP.
    """
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint.model, MLPClassifier):
        raise ModelError(
            f"{path} holds a {checkpoint.metadata.architecture} image network; feature tables "
            "need a checkpoint trained with phenoadapt.profiles.train_table_model."
        )
    meta = checkpoint.metadata
    return TableModel(checkpoint.model, meta.channel_names, meta.classes, meta.method)


# --------------------------------------------------------------------------- checks


def check_table(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    *,
    purpose: str,
    labelled: bool = False,
) -> list[str]:
    """Check a feature table for plate-context adaptation; return its feature columns.

    Parameters
    ----------
    table
        Rows with ``Metadata_Plate``, ``Metadata_Role`` (and ``Metadata_MoA`` when
        ``labelled``) and numeric features.
    features
        Feature columns to use (default: all of :func:`~.table.feature_columns`).
    purpose
        What the table is for, quoted in messages.
    labelled
        Also require the MoA column (training).

    Raises
    ------
    phenoadapt.errors.TableError
        Missing metadata or feature columns, NaN/infinite or constant features, or
        no rows.
    """
    if table.empty:
        raise TableError(f"{purpose}: the feature table has no rows")
    needed = [schema.PLATE, schema.ROLE] + ([schema.MOA] if labelled else [])
    require_columns(table, needed, purpose)
    if features is None:
        features = feature_columns(table)
    features = list(features)
    missing = [f for f in features if f not in table.columns]
    if missing:
        raise TableError(
            f"{purpose}: the table lacks {len(missing)} feature column(s) the model reads: "
            f"{_shorten(missing)}. Measure the same features as the training table."
        )
    check_features(table, features)
    return features


def check_controls(table: pd.DataFrame, method: str | Method, purpose: str) -> None:
    """Raise :class:`ContextError` naming the plates without control rows, if ``method`` needs them.

    Only plates that have treated rows count: a plate of controls alone is not
    predicted by a method that needs treated statistics anyway.
    """
    m = parse_method(method)
    if not METHODS[m].uses_controls or m is Method.ADABN:
        return
    roles = table[schema.ROLE].astype(str).str.lower()
    plates = table[schema.PLATE].astype(str)
    has_controls = set(plates[roles == schema.Role.CONTROL.value])
    lacking = sorted(set(plates) - has_controls)
    if lacking:
        raise ContextError(
            f"{purpose}: plate(s) {_shorten(lacking)} have no control rows, but "
            f"{METHODS[m].label} takes its statistics from each plate's negative controls. Mark "
            f"the control wells ({schema.ROLE} 'control', e.g. DMSO), drop those plates, or use "
            "'arm-bn' (treated rows only)."
        )


def _rows(table: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    return feature_matrix(table, features).astype(np.float32)


# --------------------------------------------------------------------------- training


def table_config(method: str = "cs-arm-bn", **overrides: object) -> TrainConfig:
    """A :class:`~phenoadapt.train.TrainConfig` suited to a table of wells.

    Every plate is one episode (its treated rows and all its controls, up to 64
    and 128), 8 plates per Adam step, no augmentation, no validation-based early
    stopping unless validation plates are given; CPU by default.  ``overrides``
    replace any field (``max_epochs=50``, ``lr=3e-4``...).
    """
    base = TrainConfig(method=method, max_epochs=100, flip=False, rot90=False, device="cpu",
                       val_treated_per_context=None)  # fmt: skip
    return replace(base, **overrides) if overrides else base


def train_table_model(
    table: pd.DataFrame,
    method: str = "cs-arm-bn",
    *,
    features: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    hidden: Sequence[int] = (512, 128),
    dropout: float = 0.0,
    config: TrainConfig | None = None,
    validation: pd.DataFrame | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> TableModel:
    """Train an MLP on a feature table with ERM, ARM-BN or CS-ARM-BN episodes.

    Parameters
    ----------
    table
        Training rows: ``Metadata_Plate``, ``Metadata_Role`` (``control`` /
        ``treated``; other roles are ignored), ``Metadata_MoA`` of treated rows,
        numeric features.  Control rows carry no label; they shape the batch-norm
        statistics of CS-ARM-BN episodes and the input standardization.
    method
        ``"erm"``, ``"arm-bn"`` or ``"cs-arm-bn"``.
    features
        Feature columns (default: all numeric ``Cells_``/``Cytoplasm_``/``Nuclei_``/``emb_``).
    classes
        Class order (default: sorted MoAs of the treated rows).
    hidden, dropout
        Network shape (see :class:`~phenoadapt.nn.mlp.MLPConfig`).
    config
        Training settings (default :func:`table_config` for ``method``); its
        ``method`` and ``seed`` are replaced by the arguments.
    validation
        Optional held-out plates for early stopping on the validation loss.
    seed
        Seed of the initial weights and of the episodes.
    progress, cancel
        Passed to :func:`~phenoadapt.train.train_model`.

    Returns
    -------
    TableModel

    Raises
    ------
    phenoadapt.errors.TableError
        Missing columns, NaN or constant features.
    phenoadapt.errors.PlateMapError
        Treated rows without an MoA.
    phenoadapt.errors.ContextError
        CS-ARM-BN with a plate that has no control rows.
    """
    method = parse_method(method).value
    features = check_table(table, features, purpose=f"training {method}", labelled=True)
    check_controls(table, method, f"training {method}")
    if method == Method.ARM_BN.value:
        table = _drop_single_treated_plates(table)
    data = CellData.from_table(_rows(table, features), table, classes, channel_names=features)
    val = None
    if validation is not None:
        check_table(validation, features, purpose="validation", labelled=True)
        val = CellData.from_table(
            _rows(validation, features), validation, data.classes, channel_names=features
        )
    config = replace(config or table_config(method), method=method, seed=seed)
    model = build_mlp(MLPConfig(len(features), len(data.classes), tuple(hidden), dropout), seed)
    # Standardize with every row of the training plates, controls included: no labels used.
    model.fit_standardization(np.asarray(data.images, dtype=np.float64))
    result = train_model(model, data, val, config, progress=progress, cancel=cancel)
    return TableModel(model, tuple(features), data.classes, method, result)


def _drop_single_treated_plates(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the plates with at least two treated rows (ARM-BN training).

    An ARM-BN episode normalizes with the statistics of one plate's treated rows;
    a plate with a single treated row has no variance to normalize with (train-mode
    batch norm refuses a batch of one), so it cannot form an episode.
    """
    treated = table[schema.ROLE].astype(str).str.lower() == schema.Role.TREATED.value
    counts = table.loc[treated, schema.PLATE].astype(str).value_counts()
    single = sorted(counts[counts < 2].index)
    if not single:
        return table
    if len(single) == counts.size:
        raise ContextError(
            "ARM-BN training needs plates with at least two treated rows; every plate has one. "
            "Train 'cs-arm-bn' (controls join the statistics) or 'erm'."
        )
    warnings.warn(
        f"ARM-BN: plate(s) {_shorten(single)} have a single treated row and no variance to "
        "normalize with; they are left out of training.",
        stacklevel=3,
    )
    return table[~table[schema.PLATE].astype(str).isin(single)]


# --------------------------------------------------------------------------- prediction


def predict_table(
    table_model: TableModel,
    table: pd.DataFrame,
    method: str | Method | None = None,
    *,
    treated_per_context: int | str | None = None,
    controls_per_context: int = DEFAULT_CONTROLS_PER_CONTEXT,
    min_controls: int = 1,
    allow_fallback: bool = False,
    return_embeddings: bool = True,
    seed: int = 0,
    context: str | None = None,
    context_size: int = DEFAULT_CONTEXT_SIZE,
) -> PlatePredictions:
    """Predict (and embed) every row of a feature table with plate-context statistics.

    Parameters
    ----------
    table_model
        From :func:`train_table_model` or :func:`load_table_model`.
    table
        Rows with ``Metadata_Plate``, ``Metadata_Role`` and the model's features.
    method
        Test-time method (default: the training method's own; see the module table).
    treated_per_context
        Treated rows per chunk, or ``"plate"``.  With neither this nor
        ``context``, one context per plate (a table of wells is small).
    controls_per_context, min_controls, allow_fallback, seed
        See :func:`phenoadapt.adapt.plan_contexts`.
    context, context_size
        ``"chunks"``, ``"plate"`` or ``"sample"`` (``context_size`` rows); see
        :class:`phenoadapt.adapt.ContextChoice`.
    return_embeddings
        Also return the embeddings (:attr:`PlatePredictions.embeddings`).

    Returns
    -------
    PlatePredictions
        ``cells`` has one row per table row (here a well or a cell).

    Raises
    ------
    phenoadapt.errors.TableError
        Missing metadata or feature columns, NaN or constant features.
    phenoadapt.errors.ContextError
        A plate without controls for BEN / CS-ARM-BN (unless ``allow_fallback``).

    Notes
    -----
    ARM-BN predicts only plates with treated rows (a warning names the others).
    """
    method = parse_method(method or TEST_METHOD[table_model.method])
    purpose = f"adapting with {METHODS[method].label}"
    features = check_table(table, table_model.features, purpose=purpose)
    if not allow_fallback:
        check_controls(table, method, purpose)
    if method is Method.ARM_BN:
        table = _plates_with_treated(table)
    rows = _rows(table, features)
    if context is None and treated_per_context is None:
        context = "plate"
    # Rows are profiles, not images: a plate needs one control row (not the images' rule).
    spec = ContextSpec(
        context=context, context_size=context_size, treated_per_context=treated_per_context,
        controls_per_context=controls_per_context, min_controls=min_controls,
        allow_fallback=allow_fallback, seed=seed,
    )  # fmt: skip
    runtime = Runtime(device=None, max_pass_size=max(len(rows), 1))
    return predict_plate(
        table_model.model,
        rows,
        table.reset_index(drop=True),
        table_model.classes,
        method,
        contexts=spec,
        runtime=runtime,
        return_embeddings=return_embeddings,
    )


def _plates_with_treated(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the plates that have treated rows (ARM-BN has no statistics for the others)."""
    treated = table[schema.ROLE].astype(str).str.lower() == schema.Role.TREATED.value
    plates = table[schema.PLATE].astype(str)
    with_treated = set(plates[treated])
    if not with_treated:
        raise ContextError(
            "ARM-BN computes each plate's statistics from its treated rows, and no plate has "
            "any: check the roles, or use 'ben' (controls only)."
        )
    without = sorted(set(plates) - with_treated)
    if without:
        warnings.warn(
            f"ARM-BN: plate(s) {_shorten(without)} have no treated rows; their rows are not "
            "predicted (use 'cs-arm-bn' or 'ben' to include them).",
            stacklevel=3,
        )
    return table[plates.isin(with_treated).to_numpy()]


def embedding_table(predictions: PlatePredictions) -> pd.DataFrame:
    """The predicted rows' metadata with their adapted embeddings as ``emb_0``, ``emb_1``...

    Rows left out of every context (e.g. role ``excluded``) are dropped.
    """
    if predictions.embeddings is None:
        raise ValueError("The predictions hold no embeddings: predict with return_embeddings.")
    emb = predictions.embeddings
    keep = np.isfinite(emb).all(axis=1)
    cells = predictions.cells
    meta = cells[[c for c in cells.columns if schema.is_metadata(c)]]
    names = schema.embedding_columns(emb.shape[1])
    values = pd.DataFrame(emb[keep].astype(np.float64), columns=names)
    return pd.concat([meta[keep].reset_index(drop=True), values], axis=1)


__all__ = [
    "TEST_METHOD",
    "TableModel",
    "check_controls",
    "check_table",
    "embedding_table",
    "load_table_model",
    "predict_table",
    "table_config",
    "train_table_model",
]
