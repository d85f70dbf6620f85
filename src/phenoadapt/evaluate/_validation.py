"""Checks shared by the metrics: enough rows for neighbours, labels that make sense."""

from __future__ import annotations

import numpy as np

from ..errors import TableError


def check_neighbours(n_samples: int, n_neighbors: int, method: str, parameter: str) -> None:
    """Raise when ``n_neighbors`` neighbours cannot be found among ``n_samples`` rows.

    A row is never its own neighbour, so at most ``n_samples - 1`` are available.
    """
    if n_neighbors < 1:
        raise ValueError(f"{parameter} must be at least 1, got {n_neighbors}")
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
    return X


def cosine_similarity_matrix(X: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities of the rows of ``X`` (zero rows get similarity 0)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    unit = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return unit @ unit.T
