"""Exact neighbours tile by tile: equal to scikit-learn's, deterministic, bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from phenoadapt.evaluate import _blockwise
from phenoadapt.evaluate.projection import blockwise_neighbours, exact_neighbours


def clusters(n: int = 700, dim: int = 6, seed: int = 0) -> np.ndarray:
    """Points around 7 far-apart centres (so some tiles can be skipped)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20, size=(7, dim))
    return (centres[rng.integers(0, 7, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def brute(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distance in float64; itself first, then distance, then index."""
    X = X.astype(np.float64)
    full = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    key = full.copy()
    np.fill_diagonal(key, -1.0)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(full, order, axis=1)


def test_equal_to_sklearn_across_block_and_chunk_boundaries() -> None:
    # 700 rows in blocks of 64 and tiles of 100 columns: ragged last block and
    # tile, and tiles whose width is not a multiple of the kernel's 16-column chunk.
    X = clusters()
    indices, distances, index = blockwise_neighbours(X, 12, block_rows=64, block_columns=100)
    expected_indices, expected_distances = brute(X, 12)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(indices, exact_neighbours(X, 12)[0])
    assert index is None and indices.dtype == np.int64 and distances.dtype == np.float32


def test_same_result_for_any_threads_and_tiles() -> None:
    X = clusters(n=900, dim=10, seed=1)
    first = blockwise_neighbours(X, 9, n_jobs=1)
    for rows, columns, jobs in [(32, 48, 2), (900, 900, 1), (7, 1000, 3)]:
        other = blockwise_neighbours(X, 9, block_rows=rows, block_columns=columns, n_jobs=jobs)
        np.testing.assert_array_equal(other[0], first[0])
        np.testing.assert_array_equal(other[1], first[1])


def test_ties_are_broken_by_index_and_itself_comes_first() -> None:
    # A 6 x 6 integer grid, twice: every point has a duplicate at distance 0 and
    # many neighbours at exactly equal distances.
    grid = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2)
    X = np.concatenate([grid, grid]).astype(np.float32)
    indices, distances, _ = blockwise_neighbours(X, 7, block_rows=8, block_columns=16)
    expected, _ = brute(X, 7)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(indices[:, 0], np.arange(len(X)))
    assert np.all(distances[:, 1] == 0)  # the duplicate, right after itself


def test_rows_not_proven_exact_are_redone(monkeypatch) -> None:
    """With an error bound too large to prove anything, every row takes the float64 path."""
    X = clusters(n=300)
    fast, _, redone = _blockwise.search(X, 10, 64, 64, 1)
    assert redone == 0
    monkeypatch.setattr(_blockwise, "_float32_error_bound", lambda exact: np.full(len(exact), 1e9))
    slow, _, redone = _blockwise.search(X, 10, 64, 64, 1)
    assert redone == 300
    np.testing.assert_array_equal(slow, fast)


def test_tiles_stay_within_the_block_size_and_far_tiles_are_skipped(monkeypatch) -> None:
    from phenoadapt.evaluate import _knn_kernel

    shapes: list[tuple[int, int]] = []
    original = _knn_kernel.select_tile

    def spy(products, *rest):
        shapes.append(products.shape)
        return original(products, *rest)

    monkeypatch.setattr(_knn_kernel, "select_tile", spy)
    X = clusters(n=2000, dim=8)
    indices, _, _ = blockwise_neighbours(X, 10, block_rows=50, block_columns=80)
    assert max(rows for rows, _ in shapes) <= 50 and max(cols for _, cols in shapes) <= 80
    every_tile = len(range(0, 2000, 50)) * len(range(0, 2000, 80))
    assert len(shapes) < every_tile / 2  # the clusters are far apart: most tiles skipped
    np.testing.assert_array_equal(indices, exact_neighbours(X, 10)[0])


def test_memory_does_not_grow_with_the_square_of_the_rows() -> None:
    X = clusters(n=6000, dim=8)
    blockwise_neighbours(X[:500], 10)  # compile or load the kernel first
    tracemalloc.start()
    try:
        blockwise_neighbours(X, 10, block_rows=128, block_columns=128, n_jobs=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    all_pairs = 6000 * 6000 * 4  # 144 MB of float32 distances
    assert peak < all_pairs / 20


def test_spatial_order_is_a_deterministic_permutation() -> None:
    X = clusters(n=1000).astype(np.float64)
    order = _blockwise.spatial_order(X, 64)
    assert np.array_equal(np.sort(order), np.arange(1000))
    assert np.array_equal(order, _blockwise.spatial_order(X, 64))
    # Consecutive rows in that order are close: leaves much tighter than the whole.
    leaf_spread = np.mean([X[order[i : i + 64]].std(0).sum() for i in range(0, 1000, 64)])
    assert leaf_spread < 0.5 * X.std(0).sum()


@pytest.mark.parametrize("n", [16, 17])
def test_few_rows_every_row_a_candidate(n: int) -> None:
    X = clusters(n=n)
    np.testing.assert_array_equal(blockwise_neighbours(X, 15)[0], brute(X, 15)[0])
