"""Finding and dropping feature columns that break distances: NaN and constant ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import TableError
from .table import _shorten, feature_columns


@dataclass(frozen=True)
class CleaningReport:
    """What :func:`clean_features` removed.

    Attributes
    ----------
    nan_columns
        Features dropped because they hold NaN or infinite values.
    constant_columns
        Features dropped because they take a single value (no information, and a
        zero standard deviation that z-scoring would divide by).
    kept
        Features that remain.
    """

    nan_columns: list[str] = field(default_factory=list)
    constant_columns: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        """Number of features removed."""
        return len(self.nan_columns) + len(self.constant_columns)

    def summary(self) -> str:
        """One human-readable line, e.g. for the CLI."""
        parts = [f"kept {len(self.kept)} features"]
        if self.nan_columns:
            parts.append(
                f"dropped {len(self.nan_columns)} with NaN ({_shorten(self.nan_columns, 5)})"
            )
        if self.constant_columns:
            parts.append(
                f"dropped {len(self.constant_columns)} constant "
                f"({_shorten(self.constant_columns, 5)})"
            )
        return "; ".join(parts)


def _constant(values: np.ndarray) -> np.ndarray:
    """Columns whose finite values are all equal (all-NaN columns count as NaN, not constant)."""
    finite = np.isfinite(values)
    high = np.where(finite, values, -np.inf).max(axis=0)
    low = np.where(finite, values, np.inf).min(axis=0)
    return finite.any(axis=0) & (high == low)


def find_bad_features(
    table: pd.DataFrame, features: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """The NaN/infinite and the constant feature columns of ``table``.

    Returns
    -------
    (nan_columns, constant_columns)
        Two lists of column names; a column is listed once, as NaN first.
    """
    features = list(features) if features is not None else feature_columns(table)
    values = table[features].to_numpy(dtype=np.float64)
    has_nan = ~np.isfinite(values).all(axis=0)
    constant = _constant(values) & ~has_nan
    return (
        [features[i] for i in np.flatnonzero(has_nan)],
        [features[i] for i in np.flatnonzero(constant)],
    )


def check_features(table: pd.DataFrame, features: Sequence[str] | None = None) -> None:
    """Raise :class:`~phenoadapt.errors.TableError` naming any NaN or constant feature.

    Use before computing distances; :func:`clean_features` drops the offending columns.
    """
    nan_columns, constant_columns = find_bad_features(table, features)
    problems = []
    if nan_columns:
        problems.append(f"{len(nan_columns)} with NaN or infinite values ({_shorten(nan_columns)})")
    if constant_columns:
        problems.append(f"{len(constant_columns)} constant ({_shorten(constant_columns)})")
    if problems:
        raise TableError(
            "feature columns unfit for distances: "
            + "; ".join(problems)
            + ". Drop them with phenoadapt.profiles.clean_features (CLI: --clean)."
        )


def clean_features(
    table: pd.DataFrame, features: Sequence[str] | None = None
) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop NaN/infinite and constant feature columns.

    Parameters
    ----------
    table
        A feature table.
    features
        The feature columns to inspect (default: :func:`~.table.feature_columns`).

    Returns
    -------
    (cleaned, report)
        A copy of ``table`` without the bad columns, and what was dropped.

    Raises
    ------
    phenoadapt.errors.TableError
        When no feature would remain.
    """
    features = list(features) if features is not None else feature_columns(table)
    nan_columns, constant_columns = find_bad_features(table, features)
    dropped = set(nan_columns) | set(constant_columns)
    kept = [f for f in features if f not in dropped]
    if not kept:
        raise TableError(
            f"all {len(features)} feature columns are NaN or constant; the table holds no "
            "usable measurements"
        )
    cleaned = table.drop(columns=sorted(dropped))
    return cleaned, CleaningReport(nan_columns, constant_columns, kept)
