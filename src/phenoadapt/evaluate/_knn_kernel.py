"""numba kernel of :func:`phenoadapt.evaluate.projection.blockwise_neighbours`.

Kept apart from the projection module because importing it imports numba,
which must happen after :func:`phenoadapt.evaluate.projection._use_numba_cache`
has pointed numba's disk cache at the user cache folder.  ``cache=True``: it is
compiled once per machine (about 2 s) and loaded from disk in later sessions
(it uses no dynamic globals, unlike pynndescent's descent).
"""

from __future__ import annotations

import numba
import numpy as np

#: Columns scanned together: their minimum is taken first (a fixed-length loop
#: that LLVM vectorises) and the columns themselves are only looked at one by one
#: when that minimum reaches the row's current threshold, which after the first
#: tiles is rare.  On the development machine the scan costs 0.4 ns per pair.
CHUNK = 16

#: The heaps start full of this value (not infinity: the chunk minimum is
#: compiled with fastmath, which assumes no infinities).
EMPTY = np.finfo(np.float32).max


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _after(values: np.ndarray, indices: np.ndarray, row: int, a: int, b: int) -> bool:
    """Whether heap entry ``a`` of ``row`` comes after entry ``b`` (value, then index)."""
    if values[row, a] != values[row, b]:
        return values[row, a] > values[row, b]
    return indices[row, a] > indices[row, b]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _sift_down(values: np.ndarray, indices: np.ndarray, row: int) -> None:
    """Restore the max-heap (ordered by value, then index) of ``row`` after its root changed."""
    m = values.shape[1]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= m:
            return
        largest = left
        right = left + 1
        if right < m and _after(values, indices, row, right, left):
            largest = right
        if not _after(values, indices, row, largest, i):
            return
        values[row, i], values[row, largest] = values[row, largest], values[row, i]
        indices[row, i], indices[row, largest] = indices[row, largest], indices[row, i]
        i = largest


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _offer(values: np.ndarray, indices: np.ndarray, row: int, value: float, column: int) -> None:
    """Put ``(value, column)`` in ``row``'s heap if it comes before the heap's root."""
    if value < values[row, 0] or (value == values[row, 0] and column < indices[row, 0]):
        values[row, 0] = value
        indices[row, 0] = column
        _sift_down(values, indices, row)


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
def _chunk_minima(products: np.ndarray, column_norms: np.ndarray, minima: np.ndarray) -> None:
    """``minima[r, j]``: the smallest tile value of row ``r`` in its ``j``-th full chunk.

    Its own function with no calls in it, so that LLVM vectorises it: fastmath
    lets it reorder the minimum (exact in any order); each value is one float32
    addition, rounded the same either way.  Unsigned indices spare numba's
    negative-index wraparound, which also blocks vectorisation.
    """
    rows, columns = products.shape
    for r in range(rows):
        row = products[r]
        for chunk in range(columns // CHUNK):
            start = numba.uint64(chunk * CHUNK)
            lowest = np.float32(EMPTY)
            for c in range(numba.uint64(CHUNK)):
                value = row[start + c] + column_norms[start + c]
                lowest = min(value, lowest)
            minima[r, chunk] = lowest


@numba.njit(cache=True, nogil=True, boundscheck=False)
def select_tile(
    products: np.ndarray,
    column_norms: np.ndarray,
    first_column: int,
    values: np.ndarray,
    indices: np.ndarray,
    minima: np.ndarray,
) -> None:
    """Fold one tile into each row's ``m`` smallest candidates (max-heaps, in place).

    ``products[r, c]`` is ``-2 x_r . y_c`` and ``column_norms[c]`` is ``|y_c|^2``:
    their sum is the squared distance less ``|x_r|^2`` (the same for the whole row,
    so it does not change the order).  The heaps hold the ``m`` smallest
    ``(value, column)`` pairs seen so far; comparing pairs, not values alone,
    makes the kept set independent of the order in which tiles arrive.
    ``minima`` is scratch space of at least ``(rows, columns // CHUNK)``.
    """
    rows, columns = products.shape
    full = columns // CHUNK
    _chunk_minima(products, column_norms, minima)
    for r in range(rows):
        for chunk in range(full):
            if minima[r, chunk] <= values[r, 0]:
                for c in range(chunk * CHUNK, (chunk + 1) * CHUNK):
                    _offer(values, indices, r, products[r, c] + column_norms[c], first_column + c)
        for c in range(full * CHUNK, columns):
            _offer(values, indices, r, products[r, c] + column_norms[c], first_column + c)
