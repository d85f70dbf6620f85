"""Aggregating profiles: cells -> wells, wells -> treatments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd

from .table import feature_columns, metadata_columns, require_columns

#: Column added by :func:`aggregate_profiles`: how many rows each profile summarizes.
COUNT = "Metadata_Count"


def aggregate_profiles(
    table: pd.DataFrame,
    by: Sequence[str],
    features: Sequence[str] | None = None,
    method: Literal["mean", "median"] = "mean",
) -> pd.DataFrame:
    """One profile per group of rows: the mean or median of each feature.

    Parameters
    ----------
    table
        Feature table (e.g. one row per well).
    by
        Metadata columns that identify a group (e.g. ``["Metadata_Treatment"]``).
    features
        Feature columns to aggregate (default: all feature columns).
    method
        ``"mean"`` or ``"median"``; the median resists a single failed well.

    Returns
    -------
    pandas.DataFrame
        One row per group, sorted by ``by``: the ``by`` columns, every other metadata
        column that takes a single value within each group (e.g. the MoA of a
        treatment), :data:`COUNT`, then the aggregated features.
    """
    by = list(by)
    require_columns(table, by, "aggregating profiles")
    if method not in ("mean", "median"):
        raise ValueError(f"aggregation method must be 'mean' or 'median', not {method!r}")
    features = list(features) if features is not None else feature_columns(table)
    groups = table.groupby(by, sort=True, observed=True, dropna=False)
    profiles = groups[features].agg(method)
    others = [c for c in metadata_columns(table) if c not in by and c != COUNT]
    # A metadata column is carried over only when it is constant inside every group,
    # so that no arbitrary "first value" sneaks into the treatment-level table.
    constant = [c for c in others if (groups[c].nunique(dropna=False) <= 1).all()]
    meta = groups[constant].first() if constant else pd.DataFrame(index=profiles.index)
    meta[COUNT] = groups.size()
    meta = meta.reset_index()[by + constant + [COUNT]]
    values = pd.DataFrame(profiles.to_numpy(), columns=features)
    return pd.concat([meta, values], axis=1)
