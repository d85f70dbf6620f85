"""Evaluation functions refuse bad input with messages that say what is wrong and how to fix it.

Too few rows for the UMAP neighbours, NaN or constant feature columns, identical
rows, missing metadata columns and missing metadata values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.errors import TableError
from phenoadapt.evaluate import (
    add_umap,
    batch_knn_accuracy,
    batch_mixing,
    batch_silhouette,
    lisi,
    map_activity,
    map_consistency,
    umap_coordinates,
)

FEATURES = [f"emb_{j}" for j in range(4)]


@pytest.fixture()
def table() -> pd.DataFrame:
    """3 plates x (4 controls + 8 treated wells: 4 compounds of 2 MoAs), random embeddings."""
    rng = np.random.default_rng(0)
    per_plate = pd.DataFrame(
        {
            schema.ROLE: ["control"] * 4 + ["treated"] * 8,
            schema.TREATMENT: ["DMSO"] * 4 + [f"c{i % 4}" for i in range(8)],
            schema.MOA: ["DMSO"] * 4 + [f"m{i % 2}" for i in range(8)],
        }
    )
    out = pd.concat([per_plate.assign(**{schema.PLATE: p}) for p in ("P1", "P2", "P3")])
    out = out.reset_index(drop=True)
    out[schema.WELL] = [f"A{i + 1:02d}" for i in range(len(out))]
    out[FEATURES] = rng.normal(size=(len(out), len(FEATURES)))
    return out


def _scores(table: pd.DataFrame) -> dict:
    """Every table-level evaluation function, ready to call."""
    return {
        "batch-mixing": lambda: batch_mixing(table, FEATURES, n_neighbors=3, perplexity=3),
        "activity": lambda: map_activity(table, FEATURES, null_size=50),
        "consistency": lambda: map_consistency(table, FEATURES, null_size=50),
        "UMAP": lambda: add_umap(table, FEATURES, n_neighbors=5),
    }


def test_the_table_is_fine_as_it_is(table):
    mixing = batch_mixing(table, FEATURES, n_neighbors=3, perplexity=3)
    assert mixing.n_samples == 24 and mixing.n_batches == 3
    assert 0 <= map_consistency(table, FEATURES, null_size=50).mean_map <= 1


def test_umap_with_fewer_samples_than_neighbours_names_both_numbers(table):
    with pytest.raises(TableError, match=r"15 neighbours but there are only 10 samples.*at most 9"):
        add_umap(table.head(10), FEATURES, n_neighbors=15)
    X = table[FEATURES].to_numpy()
    with pytest.raises(TableError, match="n_neighbors to at most 14"):
        umap_coordinates(X[:15], n_neighbors=15)
    with pytest.raises(ValueError, match="at least 1"):
        umap_coordinates(X, n_neighbors=0)


@pytest.mark.parametrize("function", ["batch-mixing", "activity", "consistency", "UMAP"])
def test_nan_column_is_named(table, function):
    table.loc[table[schema.ROLE] == "treated", "emb_2"] = np.nan
    with pytest.raises(TableError, match=r"(?s)NaN or infinite.*emb_2.*clean_features"):
        _scores(table)[function]()


@pytest.mark.parametrize("function", ["batch-mixing", "activity", "consistency", "UMAP"])
def test_constant_column_is_named(table, function):
    table["emb_1"] = 3.0
    with pytest.raises(TableError, match=r"(?s)1 constant \(emb_1\).*clean_features"):
        _scores(table)[function]()


def test_the_message_says_which_rows_were_scored(table):
    # Constant among the treated rows only: batch mixing leaves controls out.
    table.loc[table[schema.ROLE] == "treated", "emb_0"] = 1.0
    with pytest.raises(TableError, match="batch-mixing scores \\(on the non-control rows\\)"):
        batch_mixing(table, FEATURES, n_neighbors=3, perplexity=3)


def test_identical_rows_are_refused_by_the_array_functions(table):
    X = np.ones((12, 3))
    batches = np.repeat(["a", "b", "c"], 4)
    for score in (
        lambda: batch_knn_accuracy(X, batches, 3),
        lambda: batch_silhouette(X, batches),
        lambda: lisi(X, batches, perplexity=2),
        lambda: umap_coordinates(X, n_neighbors=5),
    ):
        with pytest.raises(TableError, match="identical.*collapsed"):
            score()


def test_single_row_table(table):
    with pytest.raises(TableError, match="at least 2 rows"):
        add_umap(table.head(1), FEATURES, n_neighbors=1)


@pytest.mark.parametrize(
    ("function", "column"),
    [
        ("batch-mixing", schema.PLATE),
        ("activity", schema.ROLE),
        ("activity", schema.TREATMENT),
        ("consistency", schema.MOA),
        ("consistency", schema.TREATMENT),
    ],
)
def test_missing_metadata_column(table, function, column):
    with pytest.raises(TableError, match=f"needs the column\\(s\\) {column}.*Rename"):
        _scores(table.drop(columns=[column]))[function]()


@pytest.mark.parametrize(
    ("function", "column"),
    [
        ("batch-mixing", schema.PLATE),
        ("activity", schema.TREATMENT),
        ("activity", schema.ROLE),
        ("consistency", schema.TREATMENT),
    ],
)
def test_missing_metadata_values_name_the_row(table, function, column):
    table[column] = table[column].astype(object)
    table.loc[7, column] = None  # a treated well
    with pytest.raises(TableError, match=f"1 row\\(s\\) have no {column} \\(e.g. .*A08\\)"):
        _scores(table)[function]()


def test_rows_without_moa_are_left_out_of_consistency(table):
    # Documented behaviour: an unannotated compound is not an error, it is not scored.
    table[schema.MOA] = table[schema.MOA].astype(object)
    table.loc[table[schema.TREATMENT] == "c0", schema.MOA] = None
    result = map_consistency(table, FEATURES, null_size=50)
    # m0 keeps one compound (c2), so it has no positive pair left and no mAP.
    assert set(result.per_group[schema.MOA]) == {"m1"}
