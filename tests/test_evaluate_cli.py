"""``evaluate_table`` and the ``phenoadapt evaluate`` command on BBBC021 and on broken tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.cli import main
from phenoadapt.evaluate import evaluate_table
from phenoadapt.profiles import load_bbbc021


@pytest.fixture(scope="module")
def bbbc021(request) -> pd.DataFrame:
    return load_bbbc021(request.config.rootpath / "tests" / "data" / "bbbc021")


def test_evaluate_table_on_bbbc021_reports_every_metric(bbbc021):
    report = evaluate_table(
        bbbc021, correction="control-zscore", compound_column="Metadata_Compound", null_size=200
    )
    metrics = report.metrics
    assert metrics["batch_column"] == schema.BATCH and metrics["n_batches"] == 10
    assert metrics["nsc_queries"] == 103 and metrics["nscb_queries"] == 92
    assert metrics["nsc"] == pytest.approx(0.825, abs=0.02)
    assert 0.5 < metrics["map_activity"] <= 1 and 0.3 < metrics["map_consistency"] <= 1
    assert metrics["folds_of_enrichment"] > 1
    assert metrics["batch_chance"] < metrics["batch_knn_accuracy"] < 1
    assert 1 <= metrics["batch_lisi"] <= 10
    assert "map_activity" in report.details and len(report.details["nscb"]) == 92
    text = report.format()
    assert "NSCB 1-NN MoA accuracy" in text and "lower is better" in text
    assert report.notes == []


def test_evaluate_table_skips_what_the_metadata_cannot_support(bbbc021):
    table = bbbc021.drop(columns=[schema.MOA, "Metadata_Compound"])
    report = evaluate_table(table, null_size=200)
    assert "nsc" not in report.metrics and "map_consistency" not in report.metrics
    assert any("MoA metrics skipped" in note for note in report.notes)
    assert "map_activity" in report.metrics


def test_cli_prints_table_and_writes_json(bbbc021, tmp_path, capsys):
    path = tmp_path / "wells.csv.gz"
    bbbc021.to_csv(path, index=False)
    out = tmp_path / "out" / "metrics.json"
    status = main(
        ["evaluate", str(path), "--correction", "tvn", "--null-size", "200", "--out", str(out)]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "NSC 1-NN MoA accuracy" in printed and "tvn" in printed
    saved = json.loads(out.read_text())
    assert saved["metrics"]["correction"] == "tvn" and 0 < saved["metrics"]["nscb"] <= 1


def tiny_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 24
    table = pd.DataFrame(rng.normal(size=(n, 3)), columns=["Cells_A", "Cells_B", "Cells_C"])
    table[schema.PLATE] = np.repeat(["P1", "P2"], n // 2)
    table[schema.TREATMENT] = np.tile(["DMSO", "DMSO", "x", "x", "y", "y"], n // 6)
    table[schema.ROLE] = np.where(table[schema.TREATMENT] == "DMSO", "control", "treated")
    return table


def test_cli_names_nan_columns_and_cleans_them(tmp_path, capsys):
    table = tiny_table()
    table.loc[2, "Cells_B"] = np.nan
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    assert main(["evaluate", str(path), "--perplexity", "3", "--null-size", "100"]) == 2
    assert "Cells_B" in capsys.readouterr().err
    status = main(["evaluate", str(path), "--clean", "--perplexity", "3", "--null-size", "100"])
    captured = capsys.readouterr()
    assert status == 0 and "dropped 1 with NaN (Cells_B)" in captured.err
    assert "mAP activity" in captured.out


def test_cli_too_few_samples_for_lisi_says_what_to_set(tmp_path, capsys):
    path = tmp_path / "t.parquet"
    tiny_table().to_parquet(path)
    assert main(["evaluate", str(path), "--null-size", "100"]) == 2
    err = capsys.readouterr().err
    assert "perplexity 30" in err and "only 16 samples" in err and "at most 5" in err


def test_cli_missing_column_for_correction(tmp_path, capsys):
    path = tmp_path / "t.csv"
    tiny_table().drop(columns=schema.PLATE).to_csv(path, index=False)
    assert main(["evaluate", str(path), "--correction", "phenotype"]) == 2
    assert "Metadata_Plate" in capsys.readouterr().err
