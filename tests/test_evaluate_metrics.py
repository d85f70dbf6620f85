"""Accuracy per plate, mAP (copairs), folds of enrichment and NSC/NSCB on known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact

from phenoadapt import schema
from phenoadapt.errors import TableError
from phenoadapt.evaluate import (
    accuracy_per_plate,
    folds_of_enrichment,
    map_activity,
    map_consistency,
    mean_std,
    nearest_neighbour_moa,
    nsc_nscb,
)


def test_accuracy_per_plate_ignores_controls_and_weights_plates_equally():
    table = pd.DataFrame(
        {
            schema.PLATE: ["A"] * 4 + ["B"] * 2,
            schema.MOA: ["x", "x", "y", "DMSO", "x", "y"],
            schema.PREDICTION: ["x", "y", "y", "x", "x", "x"],
            schema.ROLE: ["treated"] * 3 + ["control"] + ["treated"] * 2,
        }
    )
    result = accuracy_per_plate(table)
    assert result.per_plate.to_dict() == pytest.approx({"A": 2 / 3, "B": 0.5})
    assert result.mean == pytest.approx((2 / 3 + 0.5) / 2)
    assert result.std == pytest.approx(np.std([2 / 3, 0.5], ddof=1))
    assert "over 2 plate(s)" in str(result)
    assert mean_std([0.8]) == (0.8, 0.0)
    with pytest.raises(TableError, match="predicted_moa"):
        accuracy_per_plate(table.drop(columns=schema.PREDICTION))


def activity_table(separated: bool) -> pd.DataFrame:
    """Two plates; treatments 'hit' (far from controls) and 'dud' (like controls)."""
    rng = np.random.default_rng(0)
    rows = []
    for plate in ("P1", "P2"):
        for _ in range(8):
            rows.append((plate, "DMSO", "control", rng.normal(0, 1, 6) + [5, 0, 0, 0, 0, 0]))
        for _ in range(3):
            hit = rng.normal(0, 0.3, 6) + ([0, 8, 0, 0, 0, 0] if separated else [5, 0, 0, 0, 0, 0])
            rows.append((plate, "hit", "treated", hit))
            rows.append((plate, "dud", "treated", rng.normal(0, 1, 6) + [5, 0, 0, 0, 0, 0]))
    meta = pd.DataFrame(
        [r[:3] for r in rows], columns=[schema.PLATE, schema.TREATMENT, schema.ROLE]
    )
    features = pd.DataFrame(np.array([r[3] for r in rows]), columns=[f"emb_{i}" for i in range(6)])
    return pd.concat([meta, features], axis=1)


def test_map_activity_finds_the_active_treatment():
    result = map_activity(activity_table(True), null_size=2000, seed=0)
    per = result.per_group.set_index(schema.TREATMENT)
    assert per.loc["hit", "mean_average_precision"] == pytest.approx(1.0)
    assert per.loc["hit", "below_corrected_p"]
    assert per.loc["dud", "mean_average_precision"] < 0.7
    assert not per.loc["dud", "below_corrected_p"]
    assert result.fraction_significant == 0.5
    same_plate = map_activity(activity_table(True), same_plate_column=schema.PLATE, null_size=500)
    assert (
        same_plate.per_group.set_index(schema.TREATMENT).loc["hit", "mean_average_precision"] == 1
    )


def test_map_activity_needs_controls_and_replicates():
    table = activity_table(True)
    with pytest.raises(TableError, match="negative-control rows"):
        map_activity(table[table[schema.ROLE] == "treated"], null_size=100)
    single = table.drop_duplicates(schema.TREATMENT)
    with pytest.raises(TableError, match="positive pairs"):
        map_activity(single, null_size=100)


def test_map_consistency_perfect_and_random():
    # Four MoAs, three compounds each, along four orthogonal axes: perfect retrieval.
    rng = np.random.default_rng(1)
    moa = np.repeat(["a", "b", "c", "d"], 3)
    X = np.eye(4)[np.repeat(np.arange(4), 3)] + rng.normal(0, 0.05, (12, 4))
    table = pd.DataFrame(X, columns=[f"emb_{i}" for i in range(4)])
    table[schema.MOA] = moa
    table[schema.TREATMENT] = [f"t{i}" for i in range(12)]
    result = map_consistency(table, null_size=2000)
    assert result.mean_map == pytest.approx(1.0)
    assert result.per_group[schema.MOA].tolist() == ["a", "b", "c", "d"]
    shuffled = table.assign(**{schema.MOA: rng.permutation(moa)})
    assert map_consistency(shuffled, null_size=500).mean_map < 0.8


def test_folds_of_enrichment_hand_computed():
    # Six profiles: MoA a = rows 0-2 near one axis, MoA b = rows 3-5 near another.
    X = np.array([[1, 0.0], [1, 0.05], [1, 0.1], [0.0, 1], [0.05, 1], [0.1, 1]], dtype=float)
    moa = np.array(list("aaabbb"))
    result = folds_of_enrichment(X, moa, percentile=50)
    # Same-MoA pairs (6 of 15) are the most similar ones and fill the top half.
    row = result.per_query.iloc[0]
    table = np.array([[row.n_same_above, row.n_other_above], [row.n_same_below, row.n_other_below]])
    assert table.sum() == 5 and row.n_same_above + row.n_same_below == 2
    expected_p = fisher_exact(table, alternative="greater").pvalue
    assert row.p_value == pytest.approx(expected_p)
    corrected = table + 0.5 if (table == 0).any() else table
    expected = corrected[0, 0] * corrected[1, 1] / (corrected[0, 1] * corrected[1, 0])
    assert row.odds_ratio == pytest.approx(expected)
    assert result.mean_odds_ratio > 1 and result.pooled_odds_ratio > 1
    # Shuffled labels: no enrichment on average.
    rng = np.random.default_rng(0)
    many = rng.normal(size=(300, 8))
    random = folds_of_enrichment(many, rng.choice(list("abcdef"), 300))
    assert 0.3 < random.pooled_odds_ratio < 2.5


def test_folds_of_enrichment_ignores_pairs_of_one_compound():
    X = np.array([[1.0, 0], [1.0, 0.01], [0, 1.0], [0.01, 1.0], [1, 1.0], [1, 0.9]])
    moa = np.array(list("aabbab"))
    compound = np.array(["c1", "c1", "c2", "c2", "c3", "c4"])
    result = folds_of_enrichment(X, moa, percentile=90, ignore_same=compound)
    counts = result.per_query[["n_same_above", "n_other_above", "n_same_below", "n_other_below"]]
    # Five partners each, minus the other dose of the same compound for c1 and c2.
    assert counts.sum(axis=1).tolist() == [4, 4, 4, 4, 5, 5]


def test_nearest_neighbour_moa_nsc_and_nscb():
    # Treatments: (compound, batch, moa); the most similar profile of t0 is its own
    # compound's other dose (excluded), then a same-batch profile of another MoA
    # (NSC picks it: wrong), then a same-MoA profile from another batch (NSCB: right).
    X = np.array(
        [
            [1.0, 0.00, 0.0],  # t0: c1, w1, A
            [1.0, 0.01, 0.0],  # t1: c1, w1, A  (same compound)
            [1.0, 0.10, 0.0],  # t2: c2, w1, B  (same batch, other MoA)
            [1.0, 0.30, 0.0],  # t3: c3, w2, A
            [0.0, 1.00, 0.0],  # t4: c4, w2, B
            [0.0, 0.00, 1.0],  # t5: c5, w3, C  (C only in one batch)
        ]
    )
    moa = np.array(["A", "A", "B", "A", "B", "C"])
    compound = np.array(["c1", "c1", "c2", "c3", "c4", "c5"])
    batch = np.array(["w1", "w1", "w1", "w2", "w2", "w3"])
    nsc = nearest_neighbour_moa(X, moa, [compound])
    first = nsc.per_query.set_index("query").loc[0]
    assert first.neighbour == 2 and not first.correct
    nscb = nearest_neighbour_moa(X, moa, [compound, batch])
    assert nscb.per_query.set_index("query").loc[0, "neighbour"] == 3
    # t5 (MoA C) has no eligible partner in either rule and is dropped.
    assert nsc.n_dropped == 1 and 5 not in set(nsc.per_query["query"])
    assert nscb.accuracy == pytest.approx(nscb.per_query["correct"].mean())

    table = pd.DataFrame(X, columns=["emb_0", "emb_1", "emb_2"]).assign(
        Metadata_MoA=moa, Metadata_Compound=compound, Metadata_Batch=batch
    )
    both = nsc_nscb(
        table,
        moa_column=schema.MOA,
        compound_column="Metadata_Compound",
        batch_column=schema.BATCH,
    )
    assert both["nsc"].accuracy == nsc.accuracy and both["nscb"].accuracy == nscb.accuracy
    with pytest.raises(TableError, match="Metadata_Compound"):
        nsc_nscb(
            table.drop(columns="Metadata_Compound"),
            moa_column=schema.MOA,
            compound_column="Metadata_Compound",
        )
