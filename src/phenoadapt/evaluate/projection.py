"""Two-dimensional UMAP maps of embeddings, reproducible with a seed."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import schema
from ._validation import as_matrix, check_neighbours, table_matrix


def umap_coordinates(
    X: np.ndarray,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    seed: int = 0,
) -> np.ndarray:
    """UMAP coordinates ``(n, 2)`` of the rows of ``X`` (umap-learn).

    The same ``seed`` gives the same map (umap-learn then runs single-threaded).

    Raises
    ------
    phenoadapt.errors.TableError
        When there are not more rows than ``n_neighbors``, naming both numbers.
    """
    X = as_matrix(X)
    check_neighbours(len(X), n_neighbors, "UMAP", "n_neighbors")
    # umap-learn imports numba and compiles on first use: import it only when needed.
    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        # Small inputs make umap-learn warn about its spectral initialisation.
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        return np.asarray(reducer.fit_transform(X), dtype=np.float64)


def add_umap(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    **options: object,
) -> pd.DataFrame:
    """A copy of ``table`` with ``umap_1`` and ``umap_2`` columns (see :func:`umap_coordinates`)."""
    coordinates = umap_coordinates(table_matrix(table, features, "UMAP"), **options)
    out = table.copy()
    out[schema.UMAP_1] = coordinates[:, 0]
    out[schema.UMAP_2] = coordinates[:, 1]
    return out
