r"""kBET and graph connectivity: the neighbourhood batch scores of the integration benchmarks.

The JUMP batch-correction benchmark (Arevalo et al., Nat Commun 2024) scores Cell
Painting corrections with the scIB metrics (Luecken et al., Nat Methods 2022).
Silhouette by batch and LISI are in :mod:`.mixing`; these are the two others,
implemented from their published definitions with scikit-learn neighbours (the
reference implementations need R or JAX):

- :func:`kbet`: the k-nearest-neighbour batch-effect test (Büttner et al., Nat
  Methods 2019).  For each row, its neighbourhood (the row and its :math:`k-1`
  nearest other rows) is compared with the global batch frequencies :math:`f_b`
  by Pearson's chi-square test,

  .. math:: \chi^2 = \sum_b \frac{(o_b - k f_b)^2}{k f_b}, \qquad \text{df} = B - 1,

  and rejected when :math:`p < \alpha`.  The score is the **acceptance rate**
  (1 - rejection rate): 1 when every neighbourhood looks like a random draw of
  the batches, 0 when none does.  Higher is better mixing.
- :func:`graph_connectivity`: on the symmetrized k-nearest-neighbour graph, for
  each biological label, the size of the largest connected component of the
  subgraph of that label's rows over the number of its rows; the mean over labels.
  1 when every label's rows are connected (not split by batch); higher is better.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.stats import chi2

from ..errors import OptionError
from ._validation import as_matrix, check_labels, check_neighbours
from .mixing import _neighbours


def kbet(
    X: np.ndarray,
    batches: np.ndarray,
    n_neighbors: int | None = None,
    alpha: float = 0.05,
    metric: str = "euclidean",
) -> float:
    """kBET acceptance rate of the batches of ``X`` (higher = better mixed).

    Parameters
    ----------
    X
        ``(n, d)`` embeddings or profiles.
    batches
        Batch of each row.
    n_neighbors
        Neighbourhood size :math:`k`, the row included (default: the mean batch
        size, at most 50, at least ``3 x`` the number of batches so that the
        chi-square approximation holds, and below ``n``).
    alpha
        Significance level of each test.
    metric
        Distance of the neighbours.

    Returns
    -------
    float
        Fraction of rows whose neighbourhood is not rejected.
    """
    X = as_matrix(X)
    batches = check_labels(batches, len(X), "batches")
    if not 0 < alpha < 1:
        raise OptionError(f"alpha must be between 0 and 1, got {alpha}")
    names, codes = np.unique(batches, return_inverse=True)
    frequencies = np.bincount(codes) / len(codes)
    if n_neighbors is None:
        mean_size = len(X) / len(names)
        n_neighbors = int(min(len(X) - 1, max(3 * len(names), min(50, mean_size))))
    check_neighbours(len(X), n_neighbors - 1, "kBET", "n_neighbors")
    indices, _ = _neighbours(X, n_neighbors - 1, metric)
    observed = np.zeros((len(X), len(names)))
    np.add.at(observed, (np.arange(len(X)), codes), 1.0)  # the row itself
    for column in range(indices.shape[1]):
        np.add.at(observed, (np.arange(len(X)), codes[indices[:, column]]), 1.0)
    expected = n_neighbors * frequencies
    statistic = (((observed - expected) ** 2) / expected).sum(axis=1)
    p_values = chi2.sf(statistic, df=len(names) - 1)
    return float(np.mean(p_values >= alpha))


def graph_connectivity(
    X: np.ndarray, labels: np.ndarray, n_neighbors: int = 15, metric: str = "euclidean"
) -> float:
    """Mean over labels of the largest connected share of the label's rows in the kNN graph.

    Parameters
    ----------
    X
        ``(n, d)`` embeddings or profiles.
    labels
        Biological label of each row (MoA, treatment).
    n_neighbors
        Neighbours per row of the graph (scIB: 15).
    metric
        Distance of the neighbours.

    Returns
    -------
    float
        In (0, 1]; 1 when the rows of every label form one connected piece.
    """
    X = as_matrix(X)
    labels = check_labels(labels, len(X), "labels", minimum_groups=1)
    check_neighbours(len(X), n_neighbors, "graph connectivity", "n_neighbors")
    indices, _ = _neighbours(X, n_neighbors, metric)
    rows = np.repeat(np.arange(len(X)), n_neighbors)
    graph = sparse.coo_matrix((np.ones(rows.size), (rows, indices.ravel())), (len(X), len(X)))
    graph = (graph + graph.T).tocsr()  # undirected, as the scIB neighbour graph
    shares = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        _, component = connected_components(graph[members][:, members], directed=False)
        shares.append(np.bincount(component).max() / len(members))
    return float(np.mean(shares))
