"""Exact nearest neighbours tile by tile: BLAS products, a numba kernel, a float64 check.

The search behind :func:`phenoadapt.evaluate.projection.blockwise_neighbours`.
Callers point numba's disk cache at the user cache folder first
(``projection._use_numba_cache``): :func:`search` imports the kernel's module,
and with it numba.
"""

from __future__ import annotations

import numpy as np

#: Rows and columns of one tile: each worker holds one ``BLOCK_ROWS x
#: BLOCK_COLUMNS`` float32 tile of dot products (256 KiB, in a core's L2 cache)
#: whatever the number of rows.  Small column tiles have small radii, so more of
#: them are skipped (on 30,000 stand-in cells 256 columns took 0.98 CPU s, 2,048
#: columns 1.63 s).
BLOCK_ROWS = 256
BLOCK_COLUMNS = 256

#: Candidates kept per row beyond ``n_neighbors`` by the float32 search, so the
#: float64 check of :func:`blockwise_neighbours` rarely has to redo a row.
CANDIDATE_MARGIN = 8

#: float32's unit roundoff: the error bound of the tiles' dot products is a
#: multiple of it.
_FLOAT32_ROUNDOFF = 2.0**-24


def search(
    X: np.ndarray, k: int, block_rows: int, block_columns: int, n_jobs: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Indices, float64 squared distances and the number of rows redone in float64.

    See :func:`phenoadapt.evaluate.projection.blockwise_neighbours`.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from ..scale import default_workers

    problem = _Problem(X, k, block_rows, block_columns)
    # One BLAS thread per worker: the workers are the parallelism.
    with threadpool_limits(limits=1), ThreadPoolExecutor(n_jobs or default_workers()) as pool:
        redone = sum(pool.map(problem.search_block, range(0, problem.n, block_rows)))
    return problem.indices, problem.squared, redone


class _Problem:
    """The arrays one search shares between its workers (each writes its own rows).

    The rows are put in a spatial order (:func:`spatial_order`) so that a block
    of rows and a tile of columns each cover a small region: a tile whose
    every row is provably farther than a block's current candidates is skipped
    (the triangle inequality on the tile's centre and radius), and the nearest
    tiles are visited first, which tightens the candidates early.  Skipping only
    leaves out columns that could not have entered, so the result is the same.
    """

    def __init__(self, X: np.ndarray, k: int, block_rows: int, block_columns: int) -> None:
        exact = np.asarray(X, dtype=np.float64)
        self.exact = exact - exact.mean(axis=0)  # smaller norms: smaller float32 rounding
        self.n, self.k = len(exact), k
        self.m = min(self.n, k + CANDIDATE_MARGIN)
        self.block_rows, self.block_columns = block_rows, block_columns
        self.slack = _float32_error_bound(self.exact)
        self.order = spatial_order(self.exact, block_rows)
        ordered = self.exact[self.order]
        self.ordered = ordered
        self.rounded = ordered.astype(np.float32)
        self.norms = np.einsum("ij,ij->i", ordered, ordered)
        self.rounded_norms = np.einsum(
            "ij,ij->i", self.rounded, self.rounded, dtype=np.float64
        ).astype(np.float32)
        self.starts = np.arange(0, self.n, block_columns)
        sizes = np.diff(np.append(self.starts, self.n))
        self.centres = np.add.reduceat(ordered, self.starts) / sizes[:, None]
        tile_of_row = np.repeat(np.arange(len(self.starts)), sizes)
        spread = np.sqrt(np.einsum("ij,ij->i", *(ordered - self.centres[tile_of_row],) * 2))
        self.radii = np.maximum.reduceat(spread, self.starts)
        # Rounding of the centre distances below (float64, a sum of d terms).
        self.tolerance = 1e-7 * (1.0 + np.sqrt(self.norms.max(initial=0.0)))
        self.indices = np.empty((self.n, k), dtype=np.int64)
        self.squared = np.empty((self.n, k), dtype=np.float64)

    def search_block(self, start: int) -> int:
        """Search the rows ``start:start + block_rows`` (in spatial order); rows redone."""
        from . import _knn_kernel

        rows = np.arange(start, min(start + self.block_rows, self.n))
        values = np.full((len(rows), self.m), _knn_kernel.EMPTY, dtype=np.float32)
        candidates = np.full((len(rows), self.m), np.iinfo(np.int64).max, dtype=np.int64)
        scaled = -2.0 * self.rounded[rows]  # exact in float32: a power of two
        minima = np.empty((len(rows), self.block_columns // _knn_kernel.CHUNK), np.float32)
        # One buffer for every tile: a fresh 2 MiB array per tile costs page faults.
        buffer = np.empty((len(rows), self.block_columns), dtype=np.float32)
        lower = self._lower_bounds(rows)
        reach = self.norms[rows] + self.slack[self.order[rows]]
        for tile in np.argsort(lower.min(axis=0), kind="stable"):
            # Every column of the tile is farther than each row's worst candidate.
            if np.all(lower[:, tile] > values[:, 0] + reach):
                continue
            first = self.starts[tile]
            columns = self.rounded[first : first + self.block_columns]
            products = buffer[:, : len(columns)]
            np.matmul(scaled, columns.T, out=products)
            norms = self.rounded_norms[first : first + self.block_columns]
            _knn_kernel.select_tile(products, norms, first, values, candidates, minima)
        original = self.order[rows]
        return _check_candidates(
            self.exact,
            original,
            self.order[candidates],
            values,
            self.slack,
            self.indices,
            self.squared,
        )

    def _lower_bounds(self, rows: np.ndarray) -> np.ndarray:
        """``(rows, tiles)``: a lower bound on the squared distance to any row of each tile."""
        x = self.ordered[rows]
        centre_sq = (
            self.norms[rows][:, None]
            + np.einsum("ij,ij->i", self.centres, self.centres)[None, :]
            - 2.0 * x @ self.centres.T
        )
        gap = np.sqrt(np.maximum(centre_sq, 0.0)) - self.radii - self.tolerance
        return np.maximum(gap, 0.0) ** 2


def spatial_order(X: np.ndarray, leaf: int) -> np.ndarray:
    """A permutation of the rows of ``X`` that keeps nearby rows together.

    Halves each group of rows at the median of its widest coordinate (largest
    variance; a stable sort, so ties keep their order) until groups have at
    most ``leaf`` rows: a k-d tree's leaf order.  Deterministic.
    """
    order = np.arange(len(X))
    groups = [(0, len(X))]
    while groups:
        low, high = groups.pop()
        if high - low <= leaf:
            continue
        part = X[order[low:high]]
        axis = int(np.argmax(part.var(axis=0)))
        order[low:high] = order[low:high][np.argsort(part[:, axis], kind="stable")]
        middle = (low + high) // 2
        groups += [(low, middle), (middle, high)]
    return order


def _float32_error_bound(exact: np.ndarray) -> np.ndarray:
    """Per row, a bound on the error of its float32 tile values ``|y|^2 - 2 x.y``.

    Rounding the rows to float32 and a ``d``-term dot product in any order
    (BLAS blocks and fuses as it likes) are each within ``(d + 2) u`` of the
    magnitudes involved, ``2 |x| |y| + |y|^2`` with ``|y|`` at most the largest
    norm ``R``; twice the sum of the textbook bounds, to be safe.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", exact, exact))
    largest = norms.max(initial=0.0)
    d = exact.shape[1]
    return 2.0 * (d + 8) * _FLOAT32_ROUNDOFF * (2.0 * norms * largest + largest**2)


def _check_candidates(
    exact: np.ndarray,
    rows: np.ndarray,
    candidates: np.ndarray,
    values: np.ndarray,
    slack: np.ndarray,
    indices: np.ndarray,
    squared: np.ndarray,
) -> int:
    """Measure a block's candidates in float64, sort them, redo rows not proven exact."""
    k = indices.shape[1]
    x = exact[rows]
    measured = np.einsum("ijk,ijk->ij", *(exact[candidates] - x[:, None],) * 2)
    # Itself first (a duplicate row is at distance 0 too), then distance, then index.
    key = np.where(candidates == rows[:, None], -1.0, measured)
    order = np.lexsort((candidates, key), axis=1)[:, :k]
    kept = np.take_along_axis(candidates, order, axis=1)
    kept_squared = np.take_along_axis(measured, order, axis=1)
    # Rows left out have a float32 value >= the heap's root (values[:, 0]); their
    # true value |y|^2 - 2 x.y is then at least root - slack.
    row_norms = np.einsum("ij,ij->i", x, x)
    proven = kept_squared[:, -1] - row_norms < values[:, 0] - slack[rows]
    proven |= values.shape[1] == len(exact)  # every row is a candidate: nothing left out
    for i in np.flatnonzero(~proven):
        kept[i], kept_squared[i] = _full_row(exact, rows[i], k)
    indices[rows], squared[rows] = kept, kept_squared
    return int((~proven).sum())


def _full_row(exact: np.ndarray, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One row's exact neighbours against every row, in float64 (the rare fallback)."""
    measured = np.einsum("ij,ij->i", *(exact - exact[row],) * 2)
    key = measured.copy()
    key[row] = -1.0
    order = np.lexsort((np.arange(len(exact)), key))[:k]
    return order, measured[order]
