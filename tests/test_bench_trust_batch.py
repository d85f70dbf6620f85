"""Smoke tests of bench_plate_trust.py and bench_batch_correction.py: their scoring and tables."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_batch_correction as batch  # noqa: E402
import bench_plate_trust as trust  # noqa: E402

from phenoadapt import schema  # noqa: E402
from phenoadapt.profiles import load_bbbc021  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "bbbc021"


def _trust_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for seed in (0, 1):
        for k, role in enumerate(["training (held-out wells)"] * 2 + ["validation", "new lab"] * 2):
            d = 0.2 + 0.3 * k + rng.normal(0, 0.01)
            rows.append({"seed": seed, "plate": f"p{k}", "role": role, "lab": "lab1",
                         "d_erm": d, "d_cs-arm-bn": d, "limit_erm": 0.5,
                         "limit_cs-arm-bn": 0.5, "acc_erm": 0.5 - 0.1 * d, "acc_cs": 0.5,
                         "n_controls": 100})  # fmt: skip
    table = pd.DataFrame(rows)
    table["erm_drop"] = 0.5 - table["acc_erm"]
    table["recovery"] = table["acc_cs"] - table["acc_erm"]
    return table


def test_trust_correlations_and_report() -> None:
    table = _trust_table()
    corr = trust.correlations(table)
    drop = corr[(corr["distance"] == "d_erm") & (corr["outcome"] == "erm_drop")].iloc[0]
    assert drop["rho"] == pytest.approx(1.0) and drop["n"] == 8 and drop["seeds"] == 2
    text = trust.render(table, corr, 1.0)
    assert "| p5 | new lab |" in text and "ERM accuracy drop | 1.00" in text


def test_batch_scores_of_bbbc021_and_markdown() -> None:
    table = load_bbbc021(DATA)
    corrected = batch.BBBC021_METHODS[0][2](table)
    scores = batch.score_bbbc021(corrected)
    assert set(batch.COLUMNS) <= set(scores)
    assert scores["NSC"] == pytest.approx(0.864, abs=0.002)  # docs/bbbc021.md's global z-score
    assert 1.0 <= scores["iLISI"] <= 10.0 and 0.0 <= scores["kBET"] <= 1.0
    text = batch.markdown([{"method": "m", "kind": "k", **scores}], "note")
    assert text.startswith("note") and "| m | k |" in text
    assert schema.BATCH in corrected.columns
