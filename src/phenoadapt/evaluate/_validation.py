"""Checks shared by the metrics: enough rows for neighbours, labels that make sense."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import schema
from ..errors import OptionError, TableError
from ..profiles.cleaning import check_features
from ..profiles.table import feature_columns, feature_matrix


def check_neighbours(n_samples: int, n_neighbors: int, method: str, parameter: str) -> None:
    """Raise when ``n_neighbors`` neighbours cannot be found among ``n_samples`` rows.

    A row is never its own neighbour, so at most ``n_samples - 1`` are available.
    """
    if n_neighbors < 1:
        raise OptionError(f"{parameter} must be at least 1, got {n_neighbors}")
    if n_samples - 1 < n_neighbors:
        raise TableError(
            f"{method} uses {n_neighbors} neighbours but there are only {n_samples} samples "
            f"({max(n_samples - 1, 0)} possible neighbours each); set {parameter} to at most "
            f"{max(n_samples - 1, 1)} or evaluate more samples"
        )


def check_labels(
    labels: np.ndarray, n_samples: int, name: str, minimum_groups: int = 2
) -> np.ndarray:
    """Return ``labels`` as an array after checking its length and number of groups."""
    labels = np.asarray(labels)
    if labels.shape != (n_samples,):
        raise ValueError(f"{name} must have one entry per sample ({n_samples}), got {labels.shape}")
    if len(np.unique(labels)) < minimum_groups:
        raise TableError(
            f"{name} takes {len(np.unique(labels))} distinct value(s); this metric needs at "
            f"least {minimum_groups}"
        )
    return labels


def as_matrix(X: np.ndarray) -> np.ndarray:
    """``X`` as a finite float64 2-D array, or a clear error."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array (samples, features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise TableError(
            "the features hold NaN or infinite values; drop those columns with "
            "phenoadapt.profiles.clean_features (CLI: --clean)"
        )
    if len(X) > 1 and X.shape[1] and not np.ptp(X, axis=0).any():
        # Identical rows leave every neighbour tied: a score would be an artefact of
        # tie-breaking (e.g. a collapsed embedding scoring "perfect" batch mixing).
        raise TableError(
            f"all {len(X)} samples are identical (every feature is constant), so there is "
            "nothing to compare; check that the embedding has not collapsed and that the "
            "right feature columns were chosen"
        )
    return X


def table_matrix(table: pd.DataFrame, features: Sequence[str] | None, purpose: str) -> np.ndarray:
    """The feature columns of ``table`` as a float64 matrix, refused when unfit for scores.

    NaN/infinite columns would turn every distance into NaN; a constant column
    carries no information and, for cosine similarity, acts as a shared offset
    that pulls all profiles together.  Both are named in the message with the
    purpose, and the fix (``clean_features``) is given.
    """
    features = list(features) if features is not None else feature_columns(table)
    if len(table) < 2:
        raise TableError(f"{purpose} needs at least 2 rows, the table has {len(table)}")
    try:
        check_features(table, features)
    except TableError as exc:
        raise TableError(f"{purpose}: {exc}") from None
    return feature_matrix(table, features)


def check_metadata(table: pd.DataFrame, columns: Sequence[str], purpose: str) -> None:
    """Raise when a metadata column the metric groups by has missing values.

    A missing plate or treatment would otherwise become a group of its own
    (``"nan"``) and silently distort the score.
    """
    for column in columns:
        missing = table[column].isna().to_numpy()
        if missing.any():
            where = [c for c in (schema.PLATE, schema.WELL) if c in table.columns and c != column]
            rows = table.loc[missing, where].astype(str).head(5)
            named = ", ".join(" ".join(r) for r in rows.itertuples(index=False)) if where else ""
            example = f" (e.g. {named})" if named else ""
            raise TableError(
                f"{purpose}: {int(missing.sum())} row(s) have no {column}{example}; fill it in "
                "(e.g. from the plate map) or drop those rows"
            )


def cosine_similarity_matrix(X: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities of the rows of ``X`` (zero rows get similarity 0)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    unit = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return unit @ unit.T
