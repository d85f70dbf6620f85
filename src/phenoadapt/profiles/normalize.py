"""Normalizing a feature table with one of the control-based corrections.

This is the table-level face of :mod:`phenoadapt.adapt.embedding`: it picks the
feature columns, the plate (or batch) labels and the control mask from the table's
metadata and returns a table with the same metadata and corrected features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..adapt import embedding
from .table import control_mask, feature_columns, feature_matrix, metadata_columns, require_columns

#: Names accepted by :func:`normalize_profiles` (and the CLI's ``--correction``).
METHODS: tuple[str, ...] = (
    "none",
    "zscore",
    "control-zscore",
    "phenotype",
    "sphering",
    "tvn",
)

#: Methods that need negative controls (and, except sphering, a plate column).
NEEDS_CONTROLS = frozenset(METHODS) - {"none", "zscore"}


def normalize_profiles(
    table: pd.DataFrame,
    method: str,
    *,
    features: Sequence[str] | None = None,
    plate_column: str = schema.PLATE,
    role_column: str = schema.ROLE,
    **options: Any,
) -> pd.DataFrame:
    """Return ``table`` with its features corrected by ``method``.

    Parameters
    ----------
    table
        Feature table with metadata and feature columns.
    method
        One of :data:`METHODS`: ``"none"``; ``"zscore"`` (global);
        ``"control-zscore"`` (per plate, on its controls); ``"phenotype"``
        (subtract ``fraction`` x the plate's control mean, 0.7 by default);
        ``"sphering"`` (ZCA on all controls); ``"tvn"`` (typical variation
        normalization, per plate).
    features
        Feature columns (default: all feature columns of the table).
    plate_column
        The grouping for per-plate methods; pass the batch column to correct per batch.
    role_column
        Column whose value ``control`` marks negative-control rows.
    **options
        Passed to the function of :mod:`phenoadapt.adapt.embedding` (``fraction``,
        ``shrinkage``, ``n_components``, ``regularization``, ``ddof``).

    Returns
    -------
    pandas.DataFrame
        Metadata columns of ``table`` followed by the corrected features.  TVN changes
        the space: its columns are ``emb_0``, ``emb_1``, ... (PCA axes).
    """
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(METHODS)}")
    features = list(features) if features is not None else feature_columns(table)
    X = feature_matrix(table, features)
    meta = table[metadata_columns(table)].reset_index(drop=True)
    if method == "none":
        return _assemble(meta, X, features)
    if method == "zscore":
        return _assemble(meta, embedding.global_zscore(X), features)
    controls = control_mask(table, role_column)
    if method == "sphering":
        return _assemble(meta, embedding.sphering(X, controls, **options), features)
    require_columns(table, [plate_column], f"the {method} correction (per plate)")
    plates = table[plate_column].to_numpy()
    if method == "control-zscore":
        corrected = embedding.control_zscore(X, plates, controls, **options)
    elif method == "phenotype":
        corrected = embedding.phenotype_correction(X, plates, controls, **options)
    else:
        corrected = embedding.tvn(X, plates, controls, **options)
        names = schema.embedding_columns(corrected.shape[1])
        return _assemble(meta, corrected, names)
    return _assemble(meta, corrected, features)


def _assemble(meta: pd.DataFrame, values: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    return pd.concat([meta, pd.DataFrame(values, columns=list(names))], axis=1)
