"""All metrics of one feature table in one call, as used by ``phenoadapt evaluate``.

:func:`evaluate_table` computes what the table's metadata allows:

=================================  ======================================================
metric                             needs
=================================  ======================================================
accuracy per plate                 ``predicted_moa``, MoA and plate columns
mAP phenotypic activity            treatment and role columns, control rows
mAP phenotypic consistency, FoE    MoA column constant within each treatment
NSC / NSCB                         MoA and compound columns / and a batch column
kNN batch accuracy, silhouette,    a batch column (default ``Metadata_Batch``, else the
LISI (treated rows only)           plate column) with at least two batches
=================================  ======================================================

Retrieval metrics use treatment-level profiles (treated rows aggregated per
treatment); batch-mixing scores use the rows as given, without the controls.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from .. import schema
from ..profiles.aggregate import aggregate_profiles
from ..profiles.cleaning import check_features
from ..profiles.normalize import normalize_profiles
from ..profiles.table import control_mask, feature_columns, metadata_columns
from .accuracy import accuracy_per_plate
from .mixing import batch_mixing
from .moa import nsc_nscb
from .retrieval import folds_of_enrichment, map_activity, map_consistency

Scalar = float | int | str


@dataclass
class EvaluationReport:
    """Metrics of one table, details per group and notes on what was skipped and why.

    Attributes
    ----------
    metrics
        Flat ``name -> value`` dictionary (JSON-ready).
    details
        Per-group tables: ``map_activity`` (per treatment), ``map_consistency`` (per
        MoA), ``nsc``/``nscb`` (per query), ``accuracy`` (per plate).
    notes
        Human-readable reasons for metrics that were not computed.
    """

    metrics: dict[str, Scalar] = field(default_factory=dict)
    details: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """Metrics and notes as a JSON document (NaN written as null)."""
        clean = {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in self.metrics.items()
        }
        return json.dumps({"metrics": clean, "notes": self.notes}, indent=2)

    def format(self) -> str:
        """A small aligned table of the computed metrics, with the notes below."""
        lines = [f"{'metric':<38} {'value':>10}  direction"]
        for key, label, direction in _ROWS:
            if key in self.metrics:
                value = self.metrics[key]
                shown = f"{value:10.3f}" if isinstance(value, float) else f"{value!s:>10}"
                lines.append(f"{label:<38} {shown}  {direction}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


_ROWS: tuple[tuple[str, str, str], ...] = (
    ("correction", "correction", ""),
    ("n_rows", "rows", ""),
    ("n_features", "features", ""),
    ("accuracy_mean", "accuracy, mean over plates", "higher is better"),
    ("accuracy_std", "accuracy, std over plates", ""),
    ("map_activity", "mAP activity (vs controls)", "higher is better"),
    ("fraction_active", "fraction of treatments active", "higher is better"),
    ("map_consistency", "mAP consistency (same MoA)", "higher is better"),
    ("folds_of_enrichment", "folds of enrichment (99th pct)", "higher is better"),
    ("nsc", "NSC 1-NN MoA accuracy", "higher is better"),
    ("nscb", "NSCB 1-NN MoA accuracy", "higher is better"),
    ("batch_knn_accuracy", "kNN batch accuracy (treated rows)", "lower is better"),
    ("batch_chance", "kNN batch chance level", ""),
    ("batch_silhouette", "silhouette by batch", "lower is better"),
    ("batch_lisi", "LISI of batches", "higher is better"),
    ("n_batches", "batches", ""),
)


def evaluate_table(
    table: pd.DataFrame,
    *,
    features: Sequence[str] | None = None,
    correction: str = "none",
    plate_column: str = schema.PLATE,
    batch_column: str | None = None,
    role_column: str = schema.ROLE,
    treatment_column: str = schema.TREATMENT,
    moa_column: str = schema.MOA,
    compound_column: str | None = None,
    aggregate: Literal["mean", "median"] = "mean",
    n_neighbors: int = 5,
    perplexity: float = 30.0,
    null_size: int = 10_000,
    threshold: float = 0.05,
    seed: int = 0,
) -> EvaluationReport:
    """Correct a feature table and compute every metric its metadata allows.

    Parameters
    ----------
    table
        Feature table, one row per well (or cell, or site).
    features
        Feature columns (default: all ``Cells_*``/``Cytoplasm_*``/``Nuclei_*``/``emb_*``).
    correction
        One of :data:`phenoadapt.profiles.METHODS`, applied per ``plate_column``.
    plate_column, batch_column, role_column, treatment_column, moa_column, compound_column
        Metadata columns; ``batch_column`` defaults to ``Metadata_Batch`` when present,
        else the plate column.  Without ``compound_column``, NSC/NSCB are skipped.
    aggregate
        How treatment-level profiles are formed from the treated rows.
    n_neighbors, perplexity
        kNN batch prediction and LISI neighbourhoods.
    null_size, threshold, seed
        mAP permutation test.

    Returns
    -------
    EvaluationReport

    Raises
    ------
    phenoadapt.errors.TableError
        For NaN or constant features (use ``clean_features``), missing columns a
        requested correction needs, or too few rows for the neighbourhoods.
    """
    features = list(features) if features is not None else feature_columns(table)
    check_features(table, features)
    report = EvaluationReport()
    corrected = normalize_profiles(
        table, correction, features=features, plate_column=plate_column, role_column=role_column
    )
    space = [c for c in corrected.columns if c not in metadata_columns(corrected)]
    report.metrics.update(correction=correction, n_rows=len(table), n_features=len(space))

    if {schema.PREDICTION, moa_column, plate_column} <= set(table.columns):
        accuracy = accuracy_per_plate(
            table, label_column=moa_column, plate_column=plate_column, role_column=role_column
        )
        report.metrics.update(accuracy_mean=accuracy.mean, accuracy_std=accuracy.std)
        report.details["accuracy"] = accuracy.per_plate.rename("accuracy").to_frame()

    has_roles = role_column in corrected.columns
    controls = control_mask(corrected, role_column) if has_roles else np.zeros(len(corrected), bool)
    _activity(
        report,
        corrected,
        space,
        treatment_column,
        role_column,
        plate_column,
        controls,
        null_size,
        threshold,
        seed,
    )
    _moa_metrics(
        report,
        corrected[~controls],
        space,
        treatment_column,
        moa_column,
        compound_column,
        batch_column or _default_batch(corrected, plate_column),
        aggregate,
        null_size,
        threshold,
        seed,
    )
    # Replicates (and other doses) of one compound sit in one batch in many screens;
    # as neighbours they would reveal the batch through biology, so they do not vote.
    group = next((c for c in (compound_column, treatment_column) if c in corrected.columns), None)
    _mixing(
        report,
        corrected,
        space,
        batch_column or _default_batch(corrected, plate_column),
        role_column if has_roles else None,
        group,
        n_neighbors,
        perplexity,
    )
    return report


def _default_batch(table: pd.DataFrame, plate_column: str) -> str:
    return schema.BATCH if schema.BATCH in table.columns else plate_column


def _activity(
    report: EvaluationReport,
    corrected: pd.DataFrame,
    space: list[str],
    treatment_column: str,
    role_column: str,
    plate_column: str,
    controls: np.ndarray,
    null_size: int,
    threshold: float,
    seed: int,
) -> None:
    if treatment_column not in corrected.columns or role_column not in corrected.columns:
        report.notes.append(
            f"mAP activity skipped: needs {treatment_column} and {role_column} columns"
        )
        return
    if not controls.any():
        report.notes.append("mAP activity skipped: the table has no control rows")
        return
    same_plate = plate_column if plate_column in corrected.columns else None
    result = map_activity(
        corrected,
        space,
        treatment_column=treatment_column,
        role_column=role_column,
        same_plate_column=same_plate,
        null_size=null_size,
        threshold=threshold,
        seed=seed,
    )
    report.metrics.update(map_activity=result.mean_map, fraction_active=result.fraction_significant)
    report.details["map_activity"] = result.per_group


def _moa_metrics(
    report: EvaluationReport,
    treated: pd.DataFrame,
    space: list[str],
    treatment_column: str,
    moa_column: str,
    compound_column: str | None,
    batch_column: str,
    aggregate: Literal["mean", "median"],
    null_size: int,
    threshold: float,
    seed: int,
) -> None:
    if treatment_column not in treated.columns or moa_column not in treated.columns:
        report.notes.append(
            f"MoA metrics skipped: need {treatment_column} and {moa_column} columns"
        )
        return
    profiles = aggregate_profiles(treated, [treatment_column], space, aggregate)
    if moa_column not in profiles.columns:
        report.notes.append(f"MoA metrics skipped: {moa_column} varies within a treatment")
        return
    profiles = profiles[profiles[moa_column].notna()]
    report.metrics["n_treatments"] = len(profiles)
    distinct = compound_column if compound_column in profiles.columns else treatment_column
    consistency = map_consistency(
        profiles,
        space,
        moa_column=moa_column,
        different=[distinct],
        role_column=None,
        null_size=null_size,
        threshold=threshold,
        seed=seed,
    )
    report.metrics["map_consistency"] = consistency.mean_map
    report.details["map_consistency"] = consistency.per_group
    foe = folds_of_enrichment(
        profiles[space].to_numpy(),
        profiles[moa_column].astype(str).to_numpy(),
        ignore_same=profiles[distinct].astype(str).to_numpy(),
    )
    report.metrics["folds_of_enrichment"] = foe.mean_odds_ratio
    if compound_column is None or compound_column not in profiles.columns:
        report.notes.append("NSC/NSCB skipped: no compound column (--compound-column)")
        return
    batch = batch_column if batch_column in profiles.columns else None
    results = nsc_nscb(
        profiles, space, moa_column=moa_column, compound_column=compound_column, batch_column=batch
    )
    for name, result in results.items():
        report.metrics[name] = result.accuracy
        report.metrics[f"{name}_queries"] = result.n_queries
        report.details[name] = result.per_query
    if batch is None:
        report.notes.append(f"NSCB skipped: {batch_column} is missing or varies within a treatment")


def _mixing(
    report: EvaluationReport,
    corrected: pd.DataFrame,
    space: list[str],
    batch_column: str,
    role_column: str | None,
    group_column: str | None,
    n_neighbors: int,
    perplexity: float,
) -> None:
    if batch_column not in corrected.columns:
        report.notes.append(f"batch mixing skipped: no {batch_column} column")
        return
    treated = corrected if role_column is None else corrected[~control_mask(corrected, role_column)]
    if treated[batch_column].nunique() < 2:
        report.notes.append(f"batch mixing skipped: fewer than two values of {batch_column}")
        return
    mixing = batch_mixing(
        corrected,
        space,
        batch_column=batch_column,
        role_column=role_column,
        group_column=group_column,
        n_neighbors=n_neighbors,
        perplexity=perplexity,
    )
    report.metrics.update(mixing.as_dict())
    report.metrics["batch_column"] = batch_column
