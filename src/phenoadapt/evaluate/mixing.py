r"""Batch-mixing scores: how much of the batch can still be read from an embedding.

Three complementary views, all to be computed on treated rows only (controls are
the reference a correction aligns, so including them flatters it):

- :func:`batch_knn_accuracy`: leave-one-out k-nearest-neighbour prediction of the
  batch; near the chance level when batches mix, near 1 when they cluster.
- :func:`batch_silhouette`: silhouette score with batches as clusters; about 0 or
  below when batches overlap, towards 1 when they separate.
- :func:`lisi`: local inverse Simpson's index (Korsunsky et al. 2019, Harmony): for
  each row, a perplexity-calibrated Gaussian weighting of its neighbours and the
  inverse Simpson index of the batch labels under those weights,

  .. math:: \mathrm{LISI}_i = 1 \Big/ \sum_b \Big(\sum_{j \in N_i,\ y_j = b} p_{ij}\Big)^2,
            \qquad p_{ij} \propto \exp(-\beta_i \lVert x_i - x_j\rVert^2),

  with :math:`\beta_i` chosen so that the entropy of :math:`p_{i\cdot}` equals
  :math:`\log(\text{perplexity})`.  It reads as the effective number of batches in a
  neighbourhood: 1 when all neighbours share one batch, the number of batches when
  they are evenly mixed.  Higher is better mixing.

All three should be read together with a biology metric (MoA retrieval), which a
correction must not destroy while it mixes batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import pairwise_distances_chunked, silhouette_score

from .. import schema
from ..errors import OptionError, TableError
from ..profiles.table import control_mask, require_columns
from ._validation import as_matrix, check_labels, check_metadata, check_neighbours, table_matrix

_LISI_ITERATIONS = 50
_LISI_TOLERANCE = 1e-5


def _neighbours(
    X: np.ndarray, k: int, metric: str, ignore_same: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of the ``k`` nearest other rows of each row, nearest first.

    A row is never its own neighbour (excluded by index, so duplicated rows still
    neighbour each other); with ``ignore_same``, neither is a row sharing its label.
    Distances are computed in chunks, so memory stays bounded for large tables.
    """

    def nearest(chunk: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(start, start + len(chunk))
        chunk = chunk.copy()
        chunk[np.arange(len(chunk)), rows] = np.inf
        if ignore_same is not None:
            chunk[ignore_same[rows][:, None] == ignore_same[None, :]] = np.inf
        order = np.argsort(chunk, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(chunk, order, axis=1)

    parts = list(pairwise_distances_chunked(X, reduce_func=nearest, metric=metric))
    indices = np.concatenate([p[0] for p in parts])
    distances = np.concatenate([p[1] for p in parts])
    if not np.isfinite(distances).all():
        raise TableError(
            f"fewer than {k} eligible neighbours for some rows once rows of the same group "
            "are ignored; lower n_neighbors"
        )
    return indices, distances


def batch_knn_accuracy(
    X: np.ndarray,
    batches: np.ndarray,
    n_neighbors: int = 5,
    metric: str = "euclidean",
    ignore_same: np.ndarray | None = None,
) -> float:
    """Leave-one-out accuracy of predicting each row's batch from its nearest neighbours.

    Each row's batch is predicted by a majority vote of its ``n_neighbors`` nearest
    other rows; ties go to the batch of the nearest tied neighbour.

    Parameters
    ----------
    X
        ``(n, d)`` embeddings or profiles (treated rows only, by convention).
    batches
        Batch (or plate) label of each row.
    n_neighbors
        Neighbours that vote.
    metric
        Distance (``"euclidean"`` or ``"cosine"``, any scikit-learn metric).
    ignore_same
        Optional group labels (e.g. treatment): neighbours of the query's own group
        do not vote.  Where each treatment was imaged in one batch only, its
        replicates are near each other for biological reasons and would reveal the
        batch; ignoring them measures batch structure among different treatments.

    Returns
    -------
    float
        Accuracy in [0, 1]; compare with :func:`majority_fraction` (chance level).
    """
    X = as_matrix(X)
    batches = check_labels(batches, len(X), "batches")
    check_neighbours(len(X), n_neighbors, "kNN batch prediction", "n_neighbors")
    if ignore_same is not None:
        ignore_same = check_labels(ignore_same, len(X), "ignore_same", minimum_groups=1)
    codes = np.unique(batches, return_inverse=True)[1]
    indices, _ = _neighbours(X, n_neighbors, metric, ignore_same)
    neighbour_codes = codes[indices]
    correct = 0
    for row, votes in enumerate(neighbour_codes):
        counts = np.bincount(votes)
        winners = np.flatnonzero(counts == counts.max())
        # Tie-break: the winner whose first appearance among the neighbours is nearest.
        prediction = votes[np.isin(votes, winners)][0]
        correct += prediction == codes[row]
    return correct / len(X)


def majority_fraction(labels: np.ndarray) -> float:
    """Frequency of the most common label: the accuracy of always guessing it."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def batch_silhouette(X: np.ndarray, batches: np.ndarray, metric: str = "euclidean") -> float:
    """Mean silhouette width with batches as clusters (lower = better mixing).

    Raises
    ------
    phenoadapt.errors.TableError
        With fewer than 2 batches or when every row is its own batch.
    """
    X = as_matrix(X)
    batches = check_labels(batches, len(X), "batches")
    if len(np.unique(batches)) >= len(X):
        raise TableError(
            f"the silhouette by batch needs batches with several rows; the {len(X)} samples "
            f"fall in {len(np.unique(batches))} batches"
        )
    return float(silhouette_score(X, batches, metric=metric))


def _calibrated_weights(squared: np.ndarray, perplexity: float) -> np.ndarray:
    """Gaussian weights over one row's neighbours with entropy log(perplexity).

    Bisection on the precision :math:`\\beta` (entropy falls as :math:`\\beta` grows),
    as in t-SNE and the reference LISI code.  Distances are shifted by their minimum
    before exponentiation, which leaves the normalized weights unchanged but avoids
    underflow.
    """
    target = np.log(perplexity)
    shifted = squared - squared.min()
    beta, low, high = 1.0, 0.0, np.inf
    weights = np.full(len(squared), 1.0 / len(squared))
    for _ in range(_LISI_ITERATIONS):
        unnormalized = np.exp(-beta * shifted)
        weights = unnormalized / unnormalized.sum()
        nonzero = weights > 0
        entropy = -np.sum(weights[nonzero] * np.log(weights[nonzero]))
        if abs(entropy - target) < _LISI_TOLERANCE:
            break
        if entropy > target:  # too flat: sharpen
            low = beta
            beta = beta * 2 if np.isinf(high) else (beta + high) / 2
        else:  # too peaked: flatten
            high = beta
            beta = (beta + low) / 2
    return weights


def lisi(X: np.ndarray, labels: np.ndarray, perplexity: float = 30.0) -> np.ndarray:
    """Local inverse Simpson's index of ``labels`` around every row of ``X``.

    Parameters
    ----------
    X
        ``(n, d)`` embeddings.
    labels
        Batch label of each row (or any categorical label).
    perplexity
        Effective neighbourhood size; ``3 * perplexity`` nearest neighbours (rounded
        down) are weighted, as in the reference implementation.

    Returns
    -------
    numpy.ndarray
        One LISI value per row, between 1 and the number of distinct labels.

    Raises
    ------
    phenoadapt.errors.TableError
        When there are not ``3 * perplexity`` other rows.
    """
    X = as_matrix(X)
    labels = check_labels(labels, len(X), "labels", minimum_groups=1)
    if perplexity <= 1:
        raise OptionError(f"perplexity must be greater than 1, got {perplexity}")
    k = int(3 * perplexity)
    if len(X) - 1 < k:
        largest = max((len(X) - 1) // 3, 1)
        raise TableError(
            f"LISI with perplexity {perplexity:g} weights {k} neighbours but there are only "
            f"{len(X)} samples; set the perplexity to at most {largest} or evaluate more samples"
        )
    codes = np.unique(labels, return_inverse=True)[1]
    indices, distances = _neighbours(X, k, "euclidean")
    scores = np.empty(len(X))
    for row in range(len(X)):
        weights = _calibrated_weights(distances[row] ** 2, perplexity)
        per_label = np.bincount(codes[indices[row]], weights=weights)
        scores[row] = 1.0 / np.sum(per_label**2)
    return scores


@dataclass(frozen=True)
class BatchMixing:
    """Batch-mixing scores of one embedding (treated rows only)."""

    knn_accuracy: float
    chance: float
    silhouette: float
    lisi: float
    n_batches: int
    n_samples: int

    def as_dict(self) -> dict[str, float | int]:
        """The scores as a flat dictionary (for JSON)."""
        return {
            "batch_knn_accuracy": self.knn_accuracy,
            "batch_chance": self.chance,
            "batch_silhouette": self.silhouette,
            "batch_lisi": self.lisi,
            "n_batches": self.n_batches,
            "n_mixing_samples": self.n_samples,
        }


def batch_mixing(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    *,
    batch_column: str = schema.PLATE,
    role_column: str | None = schema.ROLE,
    group_column: str | None = None,
    n_neighbors: int = 5,
    perplexity: float = 30.0,
    metric: str = "euclidean",
) -> BatchMixing:
    """kNN batch accuracy, silhouette and mean LISI of a table, without its control rows.

    Parameters
    ----------
    table
        Feature table.
    features
        Feature columns (default: all).
    batch_column
        The batch to predict (plate, week, lab).
    role_column
        When present, rows whose role is ``control`` are left out.
    group_column
        Optional column (e.g. treatment) whose shared values are ignored as
        neighbours by the kNN batch prediction (see :func:`batch_knn_accuracy`).
    n_neighbors, perplexity, metric
        Passed to :func:`batch_knn_accuracy` and :func:`lisi`.
    """
    require_columns(
        table, [batch_column] + ([group_column] if group_column else []), "batch-mixing scores"
    )
    if role_column is not None and role_column in table.columns:
        table = table[~control_mask(table, role_column)]
    purpose = "batch-mixing scores"
    check_metadata(table, [batch_column] + ([group_column] if group_column else []), purpose)
    X = table_matrix(table, features, f"{purpose} (on the non-control rows)")
    batches = table[batch_column].astype(str).to_numpy()
    groups = table[group_column].astype(str).to_numpy() if group_column else None
    return BatchMixing(
        knn_accuracy=batch_knn_accuracy(X, batches, n_neighbors, metric, groups),
        chance=majority_fraction(batches),
        silhouette=batch_silhouette(X, batches, metric),
        lisi=float(lisi(X, batches, perplexity).mean()),
        n_batches=int(len(np.unique(batches))),
        n_samples=int(len(X)),
    )
