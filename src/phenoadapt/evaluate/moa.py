"""Nearest-neighbour MoA accuracy on treatment-level profiles: NSC and NSCB.

The BBBC021 convention (Ljosa et al. 2013; Ando et al. 2017): each treatment
(compound at one concentration) is a query; its MoA is predicted as the MoA of its
most similar other treatment (cosine similarity), where the neighbour may not be

- **NSC**: the same compound (any concentration);
- **NSCB**: the same compound nor from the same batch (e.g. imaging week), which
  rewards profiles that carry biology rather than batch.

A query whose MoA has no eligible partner cannot be answered correctly: its rows
are dropped, as queries and as candidates (for BBBC021's NSCB this removes the two
MoAs imaged in a single week, leaving 92 of 103 treatments).  The number dropped is
reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import TableError
from ..profiles.table import feature_columns, feature_matrix, require_columns
from ._validation import as_matrix, check_labels, cosine_similarity_matrix


@dataclass(frozen=True)
class NeighbourAccuracy:
    """Result of a nearest-neighbour MoA evaluation.

    Attributes
    ----------
    accuracy
        Fraction of evaluated queries whose neighbour has their MoA.
    per_query
        ``query`` (row position), ``neighbour``, ``moa``, ``predicted``, ``similarity``
        and ``correct`` of each evaluated query.
    n_dropped
        Rows dropped because their MoA had no eligible partner.
    """

    accuracy: float
    per_query: pd.DataFrame
    n_dropped: int

    @property
    def n_queries(self) -> int:
        """Number of evaluated queries."""
        return len(self.per_query)


def nearest_neighbour_moa(
    X: np.ndarray,
    moa: np.ndarray,
    exclude: Sequence[np.ndarray] = (),
) -> NeighbourAccuracy:
    """1-nearest-neighbour MoA accuracy with cosine similarity.

    Parameters
    ----------
    X
        ``(n, d)`` treatment-level profiles.
    moa
        MoA of each row.
    exclude
        Label arrays (e.g. compound, batch): a candidate that shares any of these
        labels with the query is not eligible.  The query itself is never eligible.

    Returns
    -------
    NeighbourAccuracy
    """
    X = as_matrix(X)
    moa = check_labels(moa, len(X), "moa", minimum_groups=1)
    eligible = ~np.eye(len(X), dtype=bool)
    for labels in exclude:
        labels = check_labels(labels, len(X), "exclusion labels", minimum_groups=1)
        eligible &= labels[:, None] != labels[None, :]
    same = moa[:, None] == moa[None, :]
    answerable = (eligible & same).any(axis=1)
    keep = np.flatnonzero(answerable)
    if len(keep) == 0:
        raise TableError(
            "nearest-neighbour MoA: no profile has an eligible partner of the same MoA; "
            "check the MoA, compound and batch columns"
        )
    similarity = cosine_similarity_matrix(X[keep])
    allowed = eligible[np.ix_(keep, keep)]
    similarity = np.where(allowed, similarity, -np.inf)
    best = similarity.argmax(axis=1)
    per_query = pd.DataFrame(
        {
            "query": keep,
            "neighbour": keep[best],
            "moa": moa[keep],
            "predicted": moa[keep[best]],
            "similarity": similarity[np.arange(len(keep)), best],
        }
    )
    per_query["correct"] = per_query["moa"] == per_query["predicted"]
    return NeighbourAccuracy(
        accuracy=float(per_query["correct"].mean()),
        per_query=per_query,
        n_dropped=int(len(X) - len(keep)),
    )


def nsc_nscb(
    profiles: pd.DataFrame,
    features: Sequence[str] | None = None,
    *,
    moa_column: str,
    compound_column: str,
    batch_column: str | None = None,
) -> dict[str, NeighbourAccuracy]:
    """NSC (and NSCB when ``batch_column`` is given) of treatment-level profiles.

    Parameters
    ----------
    profiles
        One row per treatment (see :func:`phenoadapt.profiles.aggregate_profiles`).
    features
        Feature columns (default: all).
    moa_column, compound_column, batch_column
        Metadata columns.

    Returns
    -------
    dict
        ``{"nsc": ..., "nscb": ...}`` (``"nscb"`` only with a batch column).
    """
    needed = [moa_column, compound_column] + ([batch_column] if batch_column else [])
    require_columns(profiles, needed, "NSC/NSCB")
    profiles = profiles[profiles[moa_column].notna()]
    features = list(features) if features is not None else feature_columns(profiles)
    X = feature_matrix(profiles, features)
    moa = profiles[moa_column].astype(str).to_numpy()
    compound = profiles[compound_column].astype(str).to_numpy()
    result = {"nsc": nearest_neighbour_moa(X, moa, [compound])}
    if batch_column:
        batch = profiles[batch_column].astype(str).to_numpy()
        result["nscb"] = nearest_neighbour_moa(X, moa, [compound, batch])
    return result
