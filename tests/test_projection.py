"""UMAP maps: PCA first for many features, cuML when present, numba's cache folder, seeds."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from phenoadapt.errors import OptionError
from phenoadapt.evaluate import projection
from phenoadapt.evaluate.projection import reduce_dimensions, umap_coordinates

SRC = Path(__file__).parents[1] / "src"


class FakeUMAP:
    """Stands in for cuml.manifold.UMAP: records what it was given."""

    calls: list[tuple[dict, np.ndarray]] = []

    def __init__(self, **options: object) -> None:
        self.options = options

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        FakeUMAP.calls.append((self.options, X))
        return X[:, :2] * 2.0


@pytest.fixture
def fake_cuml(monkeypatch):
    """A cuml.manifold module with FakeUMAP, and a CUDA device said to exist."""
    FakeUMAP.calls = []
    cuml = types.ModuleType("cuml")
    manifold = types.ModuleType("cuml.manifold")
    manifold.UMAP = FakeUMAP
    cuml.manifold = manifold
    monkeypatch.setitem(sys.modules, "cuml", cuml)
    monkeypatch.setitem(sys.modules, "cuml.manifold", manifold)
    monkeypatch.setattr(projection, "_cuda_available", lambda: True)
    return FakeUMAP


def blobs(n: int = 60, dim: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5, size=(3, dim))
    return centres[np.arange(n) % 3] + rng.normal(size=(n, dim))


def test_cuml_is_used_when_installed_with_a_cuda_device(fake_cuml):
    X = blobs()
    out = umap_coordinates(X, n_neighbors=7, seed=4)
    options, given = fake_cuml.calls[-1]
    assert options == dict(
        n_components=2, n_neighbors=7, min_dist=0.1, metric="euclidean", random_state=4
    )
    # The PCA ran first: cuML got 50 principal components, not 120 features.
    assert given.shape == (60, 50) and given.dtype == np.float32
    assert out.dtype == np.float64 and out.shape == (60, 2)
    np.testing.assert_allclose(out, given[:, :2].astype(np.float64) * 2.0)


def test_cuml_is_not_used_without_a_cuda_device(fake_cuml, monkeypatch):
    monkeypatch.setattr(projection, "_cuda_available", lambda: False)
    assert projection._cuml_umap() is None
    with pytest.raises(OptionError, match="needs RAPIDS cuML and a CUDA device"):
        umap_coordinates(blobs(), n_neighbors=5, backend="cuml")


def test_cuml_missing_means_umap_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuml.manifold", None)  # import raises ImportError
    assert projection._cuml_umap() is None


def test_unknown_backend_is_named():
    with pytest.raises(OptionError, match="backend must be one of auto, umap-learn, cuml"):
        umap_coordinates(blobs(), backend="tsne")


def test_pca_keeps_few_features_and_is_seeded():
    X = blobs(dim=120)
    first, second = reduce_dimensions(X, 50, seed=1), reduce_dimensions(X, 50, seed=1)
    assert first.shape == (60, 50)
    assert np.array_equal(first, second)
    # Principal components: most of the variance of the three blobs is in the first two.
    assert first[:, :2].var(0).sum() > 0.9 * first.var(0).sum()
    few = blobs(dim=20)
    assert reduce_dimensions(few, 50) is few
    assert reduce_dimensions(X, None) is X


def test_pca_can_be_turned_off(fake_cuml):
    umap_coordinates(blobs(dim=120), n_neighbors=5, pca_dimensions=None)
    assert fake_cuml.calls[-1][1].shape == (60, 120)


def test_numba_cache_folder_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = projection.numba_cache_dir()
    assert folder.parts[-2:] == ("phenoadapt", "numba")
    assert str(folder).startswith(str(tmp_path))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert projection.numba_cache_dir() == tmp_path / "mine"


def test_numba_cache_is_set_before_umap_imports_numba(tmp_path):
    # A fresh interpreter: NUMBA_CACHE_DIR must be in place when numba is first imported.
    code = (
        "import sys\n"
        "from phenoadapt.evaluate import projection\n"
        "assert 'numba' not in sys.modules\n"
        "projection._use_numba_cache()\n"
        "import numba\n"
        "print(numba.config.CACHE_DIR)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(SRC), XDG_CACHE_HOME=str(tmp_path), HOME=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(tmp_path / "phenoadapt" / "numba")
    assert (tmp_path / "phenoadapt" / "numba").is_dir()


@pytest.mark.slow
def test_umap_learn_map_is_the_same_twice_with_pca(monkeypatch):
    # umap-learn compiles with numba on first use (cached on disk afterwards).
    monkeypatch.setitem(sys.modules, "cuml.manifold", None)
    X = blobs(n=90, dim=80)
    first = umap_coordinates(X, n_neighbors=6, seed=2)
    second = umap_coordinates(X, n_neighbors=6, seed=2)
    assert first.shape == (90, 2) and np.array_equal(first, second)
    # The three blobs stay apart.
    centres = np.array([first[i::3].mean(0) for i in range(3)])
    spread = max(first[i::3].std(0).max() for i in range(3))
    assert min(np.linalg.norm(centres[i] - centres[j]) for i, j in [(0, 1), (0, 2), (1, 2)]) > (
        3 * spread
    )


def test_exact_neighbours_match_brute_force_and_include_each_row() -> None:
    from phenoadapt.evaluate.projection import exact_neighbours

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    indices, distances, index = exact_neighbours(X, 4)
    full = np.linalg.norm(X[:, None] - X[None], axis=2)
    np.testing.assert_array_equal(indices[:, 0], np.arange(60))  # itself first, at 0
    np.testing.assert_array_equal(indices, np.argsort(full, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(distances, np.sort(full, axis=1)[:, :4], atol=1e-5)
    assert index is None and distances.dtype == np.float32


@pytest.mark.slow
def test_parallel_descent_is_reproducible_and_close_to_exact() -> None:
    """Two threads, seeded: the same neighbours twice, nearly all the exact ones."""
    from phenoadapt.evaluate.projection import descent_neighbours, exact_neighbours

    X = blobs(n=6000, dim=20).astype(np.float32)
    first = descent_neighbours(X, 10, "euclidean", seed=3, n_jobs=2)
    second = descent_neighbours(X, 10, "euclidean", seed=3, n_jobs=2)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    exact = exact_neighbours(X, 10)[0]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(first[0], exact, strict=True)])
    assert recall > 0.9


@pytest.mark.slow
def test_large_maps_take_exact_neighbours_and_pca_start(monkeypatch):
    """Above LARGE_MAP_MIN_ROWS: blockwise exact neighbours, PCA start; same map twice."""
    import umap

    monkeypatch.setitem(sys.modules, "cuml.manifold", None)
    monkeypatch.setattr(projection, "LARGE_MAP_MIN_ROWS", 100)
    seen: list[dict] = []
    original = umap.UMAP.__init__

    def spy(self, **options):
        seen.append(options)
        original(self, **options)

    monkeypatch.setattr(umap.UMAP, "__init__", spy)
    X = blobs(n=300, dim=30)
    first = umap_coordinates(X, n_neighbors=8, seed=1)
    second = umap_coordinates(X, n_neighbors=8, seed=1)
    assert np.array_equal(first, second)
    assert seen[0]["init"] == "pca" and seen[0]["n_epochs"] == projection.LARGE_MAP_EPOCHS
    indices = seen[0]["precomputed_knn"][0]
    # The neighbours handed over are the exact ones of the 30 features (no PCA: < 50).
    np.testing.assert_array_equal(indices, projection.exact_neighbours(X, 8)[0])


def test_map_options_by_size_and_metric(monkeypatch):
    """Euclidean: exact neighbours at every size; other metrics: descent above its limit."""
    calls: list[str] = []
    monkeypatch.setattr(
        projection, "blockwise_neighbours", lambda X, k: calls.append("blockwise") or "knn"
    )
    monkeypatch.setattr(
        projection, "descent_neighbours", lambda X, k, metric, seed: calls.append(metric) or "nn"
    )
    small, large = np.zeros((50, 3)), np.zeros((projection.DESCENT_MIN_ROWS + 1, 3))
    euclidean = dict(metric="euclidean", n_neighbors=5)
    assert projection._map_options(small, euclidean, 0) == {"precomputed_knn": "knn"}
    assert projection._map_options(large, euclidean, 0) == {
        "precomputed_knn": "knn",
        "init": "pca",
        "n_epochs": projection.layout_epochs(len(large)),
    }
    cosine = dict(metric="cosine", n_neighbors=5)
    assert projection._map_options(small, cosine, 0) == {}  # umap-learn's own search
    assert projection._map_options(large, cosine, 0)["precomputed_knn"] == "nn"
    assert calls == ["blockwise", "blockwise", "cosine"]


def test_layout_epochs_shrink_above_fifty_thousand_rows():
    assert projection.layout_epochs(5_000) == projection.layout_epochs(50_000) == 100
    assert projection.layout_epochs(100_000) == 50
    assert projection.layout_epochs(10_000_000) == projection.MIN_EPOCHS
