"""Batch-correction baselines (Harmony, ComBat) and the kBET / graph connectivity scores."""

from __future__ import annotations

import builtins

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.errors import OptionError, PhenoadaptError, TableError
from phenoadapt.evaluate.integration import graph_connectivity, kbet
from phenoadapt.profiles import batch_correction
from phenoadapt.profiles.batch_correction import (
    MissingPackageError,
    combat,
    correct_batches,
    harmony,
)


def _shifted(n: int = 120, d: int = 6, shift: float = 4.0, seed: int = 0):
    """Two batches of the same two groups, batch b shifted in every feature."""
    rng = np.random.default_rng(seed)
    group = np.tile([0, 1], n // 2)
    X = rng.normal(size=(n, d)) + 3.0 * group[:, None] * np.eye(d)[0]
    batch = np.repeat(["a", "b"], n // 2)
    X[batch == "b"] += shift
    return X, batch, group


# ------------------------------------------------------------------ kBET


def test_kbet_hand_cases() -> None:
    # Two far-apart clouds, one per batch: every neighbourhood is one batch -> all rejected.
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(100, 1, (50, 2))])
    batches = np.repeat(["a", "b"], 50)
    assert kbet(X, batches, n_neighbors=10) == 0.0
    # Points on a line, batches alternating: each neighbourhood of 10 holds 5 + 5 -> accepted.
    line = np.arange(100, dtype=float)[:, None]
    alternating = np.tile(["a", "b"], 50)
    assert kbet(line, alternating, n_neighbors=10) == 1.0


def test_kbet_matches_the_chi_square_test_written_out() -> None:
    # A slow, literal reading of the definition with scikit-learn's neighbours.
    from scipy.stats import chisquare
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 3))
    batches = np.array(["a"] * 20 + ["b"] * 30 + ["c"] * 40)
    X[batches == "c"] += 0.8
    k = 12
    _, idx = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X)  # the row itself first
    names, sizes = np.unique(batches, return_counts=True)
    accepted = [
        chisquare([np.sum(batches[row] == b) for b in names], k * sizes / sizes.sum()).pvalue
        >= 0.05
        for row in idx
    ]
    assert kbet(X, batches, n_neighbors=k) == pytest.approx(np.mean(accepted))


def test_kbet_bad_options() -> None:
    X = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(OptionError):
        kbet(X, np.array(list("aabbb")), alpha=1.5)
    with pytest.raises(TableError):
        kbet(X, np.array(list("aabbb")), n_neighbors=10)


# ------------------------------------------------------------------ graph connectivity


def test_graph_connectivity_hand_cases() -> None:
    # Label x: 6 points at 0..5 and 4 points at 100..103; label y: 10 points at 50..59.
    X = np.array([[float(v)] for v in [*range(6), *range(100, 104), *range(50, 60)]])
    labels = np.array(["x"] * 10 + ["y"] * 10)
    # k = 3: no x row reaches the other x cloud, y is one chain: (6/10 + 1) / 2.
    assert graph_connectivity(X, labels, n_neighbors=3) == pytest.approx(0.8)
    with pytest.raises(TableError):
        graph_connectivity(X[:3], labels[:3], n_neighbors=5)


# ------------------------------------------------------------------ Harmony and ComBat


def test_harmony_removes_the_batch_shift_and_keeps_the_groups() -> None:
    pytest.importorskip("harmonypy")
    # A moderate shift (clouds overlap): Harmony's clusters then hold both batches.  Far
    # apart, batch-pure clouds are only partly corrected (its diversity penalty has no
    # mixed cluster to start from).
    X, batch, group = _shifted(n=200, shift=0.5)
    Z = harmony(X, batch, n_components=4, seed=0)
    assert Z.shape == (len(X), 4)
    before, after = kbet(X, batch, n_neighbors=20), kbet(Z, batch, n_neighbors=20)
    assert after > before + 0.1
    # The biological groups stay connected pieces.
    assert graph_connectivity(Z, group, n_neighbors=10) > 0.9
    np.testing.assert_allclose(Z, harmony(X, batch, n_components=4, seed=0))  # deterministic


def test_combat_aligns_batch_means_and_scales() -> None:
    pytest.importorskip("inmoose")
    X, batch, _ = _shifted()
    X[batch == "b"] *= 3.0
    Y = combat(X, batch)
    assert Y.shape == X.shape
    # Features 1-5 (feature 0 also carries a bimodal group effect, which the scaling of
    # batch b stretched: ComBat's location-scale model fits it only on average).
    gap = np.abs(Y[batch == "a", 1:].mean(0) - Y[batch == "b", 1:].mean(0)).max()
    ratio = Y[batch == "b", 1:].std(0) / Y[batch == "a", 1:].std(0)
    assert gap < 0.2 and np.all(np.abs(ratio - 1) < 0.2)
    X[batch == "a", 2] = 1.0  # constant within batch a
    with pytest.raises(TableError, match="constant within batch"):
        combat(X, batch)


def test_correct_batches_on_a_table() -> None:
    pytest.importorskip("harmonypy")
    X, batch, _ = _shifted()
    table = pd.concat(
        [pd.DataFrame({schema.BATCH: batch, schema.ROLE: "treated"}),
         pd.DataFrame(X, columns=[f"Cells_f{i}" for i in range(X.shape[1])])], axis=1,
    )  # fmt: skip
    out = correct_batches(table, "harmony", n_components=3)
    assert list(out.columns) == [schema.BATCH, schema.ROLE, "emb_0", "emb_1", "emb_2"]
    assert correct_batches(table, "zscore").shape == table.shape
    with pytest.raises(PhenoadaptError, match="unknown batch correction"):
        correct_batches(table, "magic")
    with pytest.raises(TableError, match="at least 2 rows per batch"):
        harmony(X[:61], batch[:61])


def test_missing_package_says_what_to_install(monkeypatch) -> None:
    real = builtins.__import__

    def no_harmony(name, *args, **kwargs):
        if name.startswith("harmonypy") or name.startswith("inmoose"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_harmony)
    monkeypatch.setattr(batch_correction.importlib, "import_module", lambda n: no_harmony(n))
    X, batch, _ = _shifted()
    with pytest.raises(MissingPackageError, match=r"pip install 'phenoadapt\[batch\]'"):
        harmony(X, batch)
    with pytest.raises(MissingPackageError, match="inmoose"):
        combat(X, batch)
