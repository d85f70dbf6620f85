"""Two-dimensional UMAP maps of embeddings, reproducible with a seed.

Speed (see ``docs/umap-speed.md``):

- rows with more than :data:`PCA_DIMENSIONS` features are first reduced by a
  seeded PCA (nearest neighbours and the fuzzy graph cost grow with the number
  of features; 50 principal components keep the neighbourhoods of embeddings);
- numba's compiled code is kept on disk in the user's cache folder
  (:func:`numba_cache_dir`), so only the first fit ever on a machine pays the
  compilation, not the first fit of every session;
- on a CUDA machine with RAPIDS cuML installed, cuML's UMAP is used.

- Euclidean neighbours are exact for every size (:func:`blockwise_neighbours`:
  tiles of BLAS products on every core, a numba kernel cached on disk, a float64
  check); other metrics above :data:`DESCENT_MIN_ROWS` rows use pynndescent's
  descent on every core (:func:`descent_neighbours`; umap-learn runs it on one
  thread when seeded);
- above :data:`LARGE_MAP_MIN_ROWS` rows the layout starts from the PCA of the
  rows and runs :func:`layout_epochs` epochs (100, fewer above 50,000 rows).

What is deterministic: with umap-learn, the same input, options and ``seed``
give the same map bit for bit on the same machine and library versions.  The
Euclidean neighbours are exact, ties broken by index, so they do not depend on
the number of cores; the descent used for other metrics above
:data:`DESCENT_MIN_ROWS` rows is seeded, but its result depends on the thread
count.  The layout runs on one thread (a parallel layout updates shared
coordinates in a racy order, so it is not offered).  The PCA is seeded too.
cuML's map is seeded but GPU reductions may differ in the last bits between
runs and devices.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema
from ..errors import OptionError
from . import _blockwise
from ._validation import as_matrix, check_neighbours, table_matrix

#: Features kept by the PCA that runs before UMAP (rows with more features are reduced).
PCA_DIMENSIONS = 50

#: The UMAP implementations: ``auto`` takes cuML on a CUDA machine where it is installed.
BACKENDS = ("auto", "umap-learn", "cuml")

_CACHE_ENABLED = False


def numba_cache_dir() -> Path:
    """The folder for numba's compiled code: the user cache folder of phenoadapt.

    ``platformdirs.user_cache_dir("phenoadapt")/numba`` when platformdirs is
    installed, otherwise ``~/.cache/phenoadapt/numba``.  ``NUMBA_CACHE_DIR``, when
    already set, wins.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return Path.home() / ".cache" / "phenoadapt" / "numba"
    return Path(user_cache_dir("phenoadapt")) / "numba"


def _use_numba_cache() -> None:
    """Point numba's on-disk cache at :func:`numba_cache_dir` (before numba compiles).

    numba reads ``NUMBA_CACHE_DIR`` when it is first imported, so the variable
    is set here, before ``import umap``; if numba was already imported by
    someone else, its config is set directly (it is read when a cache is made).
    """
    folder = numba_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: numba falls back to compiling every session
        return
    os.environ.setdefault("NUMBA_CACHE_DIR", str(folder))
    numba = sys.modules.get("numba")
    if numba is not None and not numba.config.CACHE_DIR:
        numba.config.CACHE_DIR = str(folder)


def _cache_compiled_functions() -> None:
    """Turn on numba's disk cache for the jitted functions of umap and pynndescent.

    Most of them are declared without ``cache=True`` and are compiled anew in
    every session (10-60 s on the first fit).  ``enable_caching`` is what
    ``cache=True`` does; functions numba cannot cache (they take a function as
    an argument) are compiled as before, with numba's warning silenced.
    """
    global _CACHE_ENABLED
    if _CACHE_ENABLED:
        return
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("umap", "pynndescent")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(value._cache, NullCache):
                value.enable_caching()
    _CACHE_ENABLED = True


def _cuda_available() -> bool:
    """Whether a CUDA device can be used (torch, a dependency, asks the driver)."""
    import torch

    return bool(torch.cuda.is_available())


def _cuml_umap() -> type | None:
    """cuML's UMAP class when cuML is installed and a CUDA device exists, else None."""
    try:
        manifold = importlib.import_module("cuml.manifold")
    except ImportError:
        return None
    return manifold.UMAP if _cuda_available() else None


def reduce_dimensions(
    X: np.ndarray, n_components: int | None = PCA_DIMENSIONS, seed: int = 0
) -> np.ndarray:
    """The first ``n_components`` principal components of ``X`` (seeded), or ``X``.

    ``X`` is returned unchanged when it has at most ``n_components`` features
    or ``n_components`` is None.
    """
    if n_components is None or X.shape[1] <= n_components:
        return X
    from sklearn.decomposition import PCA

    n_components = min(n_components, len(X))
    return PCA(n_components=n_components, random_state=seed).fit_transform(X)


def umap_coordinates(
    X: np.ndarray,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    seed: int = 0,
    *,
    pca_dimensions: int | None = PCA_DIMENSIONS,
    backend: str = "auto",
) -> np.ndarray:
    """UMAP coordinates ``(n, 2)`` of the rows of ``X``.

    Parameters
    ----------
    X
        One row per sample.
    n_neighbors, min_dist, metric
        UMAP's options.
    seed
        The same seed gives the same map (see the module notes on what is deterministic).
    pca_dimensions
        Rows with more features are first reduced to this many principal
        components (seeded PCA); None maps the features as they are.
    backend
        ``"auto"`` (cuML on a CUDA machine where it is installed, else
        umap-learn), ``"umap-learn"`` or ``"cuml"``.

    Returns
    -------
    numpy.ndarray
        float64 coordinates, one row per row of ``X``.

    Raises
    ------
    phenoadapt.errors.TableError
        When there are not more rows than ``n_neighbors``, naming both numbers.
    phenoadapt.errors.OptionError
        An unknown ``backend``, or ``"cuml"`` where cuML or a CUDA device is missing.
    """
    if backend not in BACKENDS:
        raise OptionError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    X = as_matrix(X)
    check_neighbours(len(X), n_neighbors, "UMAP", "n_neighbors")
    X = np.ascontiguousarray(reduce_dimensions(X, pca_dimensions, seed), dtype=np.float32)
    options = dict(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric)
    cuml_umap = _cuml_umap() if backend != "umap-learn" else None
    if backend == "cuml" and cuml_umap is None:
        raise OptionError(
            "backend 'cuml' needs RAPIDS cuML and a CUDA device; install cuML on a GPU "
            "machine or use backend='umap-learn'"
        )
    if cuml_umap is not None:
        coordinates = cuml_umap(**options, random_state=seed).fit_transform(X)
        # cuML returns a cupy array for cupy input and numpy for numpy; .get() copies to host.
        return np.asarray(getattr(coordinates, "get", lambda: coordinates)(), dtype=np.float64)
    return _umap_learn(X, options, seed)


#: Above this many rows, neighbours for metrics other than Euclidean come from
#: pynndescent's descent on every core (below, umap-learn finds them itself).
#: Euclidean neighbours are always exact (:func:`blockwise_neighbours`).
DESCENT_MIN_ROWS = 50_000


def exact_neighbours(X: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray, None]:
    """Each row's ``n_neighbors`` nearest rows (itself first), as umap-learn takes them.

    Returns
    -------
    (indices, distances, None)
        ``(n, k)`` int64 indices and float32 Euclidean distances; no search index
        (the maps are never extended to new points).
    """
    from sklearn.neighbors import NearestNeighbors

    search = NearestNeighbors(n_neighbors=n_neighbors, algorithm="brute").fit(X)
    distances, indices = search.kneighbors(X)
    return indices.astype(np.int64), distances.astype(np.float32), None


def blockwise_neighbours(
    X: np.ndarray,
    n_neighbors: int,
    *,
    block_rows: int = _blockwise.BLOCK_ROWS,
    block_columns: int = _blockwise.BLOCK_COLUMNS,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray, None]:
    """Exact Euclidean neighbours of every row, tile by tile (BLAS and a small kernel).

    The squared distances of a ``block_rows x block_columns`` tile come from one
    float32 matrix product; a numba kernel keeps each row's ``n_neighbors +``
    ``CANDIDATE_MARGIN`` (8) smallest.  These candidates are then measured again
    in float64 and sorted: itself first, then by distance, ties by index.  A row
    is exact when its ``n_neighbors``-th float64 distance is below every row left
    out by the float32 search, allowing for float32's worst-case rounding; the
    rare rows that fail this test are searched again in float64 against all rows.
    So the result is the exact neighbours, the same for any ``n_jobs`` and tile
    size, with nothing compiled per session (the kernel is cached on disk).

    Parameters
    ----------
    X
        ``(n, d)`` rows (float; distances do not change when they are centred,
        which is done first for precision).
    n_neighbors
        Neighbours per row, itself included.
    block_rows, block_columns
        The tile: each worker holds ``block_rows x block_columns`` float32 dot
        products, plus ``block_rows x (n_neighbors + 8) x d`` float64 for the check.
    n_jobs
        Worker threads (default every core); each takes whole blocks of rows.

    Returns
    -------
    (indices, distances, None)
        As :func:`exact_neighbours`.
    """
    # numba's cache folder must be set before the kernel's module imports numba.
    _use_numba_cache()
    indices, squared, _ = _blockwise.search(X, n_neighbors, block_rows, block_columns, n_jobs)
    return indices, np.sqrt(squared).astype(np.float32), None


#: Above this many rows (umap-learn's own limit for small inputs) the layout
#: starts from the PCA of the rows and runs :data:`LARGE_MAP_EPOCHS` epochs.
LARGE_MAP_MIN_ROWS = 4_096

#: Epochs of the layout above :data:`LARGE_MAP_MIN_ROWS` rows, instead of
#: umap-learn's 500 (up to 10,000 rows) or 200: on 10,000 stand-in cells 100
#: epochs from the PCA took 2.2 CPU s instead of 11.4 (500 epochs, spectral
#: start) for a trustworthiness of 0.9859 vs 0.9864; on 30,000 cells 100 epochs
#: against 200 gave 0.9858 vs 0.9860; on 100,000 cells the spectral start cost
#: ~17 % more time for the same trustworthiness (docs/umap-speed.md).
LARGE_MAP_EPOCHS = 100

#: Above ``EPOCH_BUDGET / LARGE_MAP_EPOCHS`` rows (50,000) the epochs shrink so
#: that rows x epochs stays at this budget, down to :data:`MIN_EPOCHS`: the
#: single-threaded layout is most of a large map's time (on 100,000 stand-in cells
#: 100 epochs took 20.7 CPU s, 60 epochs 13.1, 40 epochs 8.5, with a
#: trustworthiness of 0.986 for each).
EPOCH_BUDGET = 5_000_000
MIN_EPOCHS = 40


def layout_epochs(n_rows: int) -> int:
    """Layout epochs for a map of ``n_rows`` rows above :data:`LARGE_MAP_MIN_ROWS`.

    :data:`LARGE_MAP_EPOCHS` up to 50,000 rows, then ``EPOCH_BUDGET // n_rows``,
    at least :data:`MIN_EPOCHS` (100,000 rows: 50 epochs).
    """
    return int(np.clip(EPOCH_BUDGET // max(n_rows, 1), MIN_EPOCHS, LARGE_MAP_EPOCHS))


def descent_neighbours(
    X: np.ndarray, n_neighbors: int, metric: str, seed: int, n_jobs: int | None = None
) -> tuple[np.ndarray, np.ndarray, None]:
    """Approximate neighbours by pynndescent's nearest-neighbour descent, on every core.

    The parameters umap-learn itself gives pynndescent (trees, iterations,
    candidates), so the neighbours are as good as umap-learn's own; only the
    threads differ: umap-learn runs its descent on one thread when seeded.
    Seeded, the result is the same from run to run for the same number of
    threads (``n_jobs``, default every core), but differs between thread counts.

    Returns
    -------
    (indices, distances, None)
        As :func:`exact_neighbours`.
    """
    from pynndescent import NNDescent

    from ..scale import default_workers

    n = len(X)
    search = NNDescent(
        X,
        n_neighbors=n_neighbors,
        metric=metric,
        n_trees=min(64, 5 + int(round(n**0.5 / 20.0))),
        n_iters=max(5, int(round(np.log2(n)))),
        max_candidates=60,
        low_memory=True,
        random_state=seed,
        n_jobs=n_jobs or default_workers(),
        compressed=False,
    )
    indices, distances = search.neighbor_graph
    return indices.astype(np.int64), distances.astype(np.float32), None


def _umap_learn(X: np.ndarray, options: dict, seed: int) -> np.ndarray:
    """umap-learn's map, seeded (single-threaded layout), with compiled code cached on disk."""
    # The cache folder must be known before numba is imported (by umap).
    _use_numba_cache()
    with warnings.catch_warnings():
        # NumbaWarning: functions it cannot cache; they are compiled each session.
        warnings.filterwarnings("ignore", message=".*[Cc]annot cache")
        import umap

        _cache_compiled_functions()
        extra = _map_options(X, options, seed)
        reducer = umap.UMAP(**options, random_state=seed, n_jobs=1, **extra)
        # Small inputs make umap-learn warn about its spectral initialisation.
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        return np.asarray(reducer.fit_transform(X), dtype=np.float64)


def _map_options(X: np.ndarray, options: dict, seed: int) -> dict:
    """umap-learn's options for ``X``: precomputed neighbours, start and epochs by size."""
    extra: dict = {}
    if options["metric"] == "euclidean":
        extra["precomputed_knn"] = blockwise_neighbours(X, options["n_neighbors"])
    elif len(X) > DESCENT_MIN_ROWS:
        extra["precomputed_knn"] = descent_neighbours(
            X, options["n_neighbors"], options["metric"], seed
        )
    if len(X) > LARGE_MAP_MIN_ROWS:
        extra.update(init="pca", n_epochs=layout_epochs(len(X)))
    return extra


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
