"""Batch-mixing scores (kNN batch accuracy, silhouette, LISI) and UMAP, on known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.errors import TableError
from phenoadapt.evaluate import (
    batch_knn_accuracy,
    batch_mixing,
    batch_silhouette,
    lisi,
    majority_fraction,
    umap_coordinates,
)
from phenoadapt.evaluate.mixing import _calibrated_weights


def separated(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two batches far apart."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 1, (n, 3)), rng.normal(50, 1, (n, 3))])
    return X, np.repeat(["b1", "b2"], n)


def mixed(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two batches drawn from one distribution."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(2 * n, 3)), np.repeat(["b1", "b2"], n)


def test_knn_batch_accuracy_extremes():
    X, batches = separated()
    assert batch_knn_accuracy(X, batches, n_neighbors=5) == 1.0
    X, batches = mixed()
    assert abs(batch_knn_accuracy(X, batches, n_neighbors=5) - 0.5) < 0.1
    assert majority_fraction(np.array(["a", "a", "b"])) == pytest.approx(2 / 3)


def test_knn_batch_accuracy_tie_goes_to_the_nearest_neighbour():
    X = np.array([[0.0], [-1.0], [2.0]])
    batches = np.array(["a", "b", "a"])
    # Row 0: neighbours row 1 (b, nearer) and row 2 (a): a 1-1 tie won by b -> wrong.
    # Row 1: rows 0 and 2 are both a -> wrong.  Row 2: rows 0 (a, nearer) and 1 (b) -> right.
    # (Breaking ties alphabetically would have made row 0 right: 2/3.)
    assert batch_knn_accuracy(X, batches, n_neighbors=2) == pytest.approx(1 / 3)


def test_knn_batch_accuracy_can_ignore_a_group():
    # Replicates of each treatment sit together and in one batch; ignoring them as
    # voters leaves only other treatments, which are spread over both batches.
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 10, (20, 2))
    X = np.repeat(centres, 3, axis=0) + rng.normal(0, 0.01, (60, 2))
    treatment = np.repeat(np.arange(20), 3)
    batches = np.where(treatment % 2 == 0, "w1", "w2")
    assert batch_knn_accuracy(X, batches, n_neighbors=2) == 1.0
    assert batch_knn_accuracy(X, batches, n_neighbors=2, ignore_same=treatment) < 0.8


def test_knn_too_few_samples_says_what_to_set():
    X, batches = separated(n=2)
    with pytest.raises(TableError, match=r"only 4 samples.*set n_neighbors to at most 3"):
        batch_knn_accuracy(X, batches, n_neighbors=5)


def test_silhouette_by_batch():
    assert batch_silhouette(*separated()) > 0.9
    assert abs(batch_silhouette(*mixed())) < 0.05
    with pytest.raises(TableError, match="distinct value"):
        batch_silhouette(np.ones((4, 2)) + np.arange(4)[:, None], np.array(["a"] * 4))


def test_lisi_on_a_regular_simplex_is_the_inverse_simpson_of_the_neighbours():
    # Ten mutually equidistant points: every weighting is uniform, so the LISI of a
    # point is exactly 1 / sum(p_b^2) over its 9 neighbours' labels.
    X = np.eye(10)
    labels = np.array([0] * 5 + [1] * 5)
    scores = lisi(X, labels, perplexity=3)
    assert np.allclose(scores, 1 / ((4 / 9) ** 2 + (5 / 9) ** 2))
    three = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    expected_first = 1 / ((3 / 9) ** 2 + (3 / 9) ** 2 + (3 / 9) ** 2)
    assert lisi(X, three, perplexity=3)[0] == pytest.approx(expected_first)


def test_lisi_separated_is_one_mixed_is_number_of_batches():
    X, batches = separated(n=100)
    assert np.allclose(lisi(X, batches, perplexity=10), 1.0)
    X, batches = mixed(n=300)
    assert 1.85 < lisi(X, batches, perplexity=30).mean() <= 2.0


def test_lisi_weights_reach_the_perplexity():
    rng = np.random.default_rng(5)
    squared = rng.uniform(0, 20, 90) ** 2
    weights = _calibrated_weights(squared, perplexity=30)
    entropy = -np.sum(weights * np.log(weights))
    assert entropy == pytest.approx(np.log(30), abs=1e-4)
    assert weights.sum() == pytest.approx(1.0)
    # Nearer neighbours weigh more (Gaussian kernel).
    order = np.argsort(squared)
    assert np.all(np.diff(weights[order]) <= 1e-15)


def test_lisi_perplexity_too_large_for_the_table():
    X, batches = separated(n=10)
    with pytest.raises(TableError, match=r"perplexity 30 weights 90 neighbours.*at most 6"):
        lisi(X, batches)


def test_batch_mixing_leaves_controls_out():
    rng = np.random.default_rng(0)
    treated = rng.normal(size=(40, 3))
    # Controls cluster perfectly by plate; including them would flatter no one.
    controls = np.vstack([rng.normal(0, 0.01, (10, 3)) + 30, rng.normal(0, 0.01, (10, 3)) - 30])
    table = pd.DataFrame(np.vstack([treated, controls]), columns=["emb_0", "emb_1", "emb_2"])
    table[schema.PLATE] = ["A", "B"] * 20 + ["A"] * 10 + ["B"] * 10
    table[schema.ROLE] = ["treated"] * 40 + ["control"] * 20
    result = batch_mixing(table, n_neighbors=5, perplexity=5)
    assert result.n_samples == 40 and result.n_batches == 2
    assert result.knn_accuracy < 0.75 and result.lisi > 1.5
    assert set(result.as_dict()) >= {"batch_knn_accuracy", "batch_silhouette", "batch_lisi"}


@pytest.mark.slow
def test_umap_is_reproducible_with_a_seed():
    # umap-learn compiles with numba on first use: this test takes ~10-40 s.
    X, _ = separated(n=15)
    first = umap_coordinates(X, n_neighbors=5, seed=3)
    second = umap_coordinates(X, n_neighbors=5, seed=3)
    assert first.shape == (30, 2)
    assert np.array_equal(first, second)
    # The two far-apart batches stay apart in the map.
    gap = np.linalg.norm(first[:15].mean(0) - first[15:].mean(0))
    assert gap > 3 * first[:15].std(0).max()
    with pytest.raises(TableError, match=r"UMAP uses 15 neighbours but there are only 10"):
        umap_coordinates(X[:10], n_neighbors=15)
