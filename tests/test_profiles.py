"""Feature tables: reading, feature detection, cleaning, selection, aggregation, normalization."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.errors import TableError
from phenoadapt.profiles import (
    aggregate_profiles,
    check_features,
    clean_features,
    control_mask,
    correlation_filter,
    drop_position_features,
    feature_columns,
    feature_matrix,
    normalize_profiles,
    read_table,
    require_columns,
)


def small_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 12
    return pd.DataFrame(
        {
            schema.PLATE: ["P1"] * 6 + ["P2"] * 6,
            schema.WELL: [f"A{i:02d}" for i in range(1, n + 1)],
            schema.TREATMENT: ["DMSO", "DMSO", "a", "a", "b", "b"] * 2,
            schema.MOA: ["DMSO", "DMSO", "m1", "m1", "m2", "m2"] * 2,
            schema.ROLE: ["control", "control", "treated", "treated", "treated", "treated"] * 2,
            "Cells_Area": rng.normal(100, 10, n),
            "Nuclei_Intensity": rng.normal(5, 1, n),
            "emb_0": rng.normal(0, 1, n),
            "Cells_Name": ["x"] * n,  # not numeric: never a feature
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".tsv", ".parquet"])
def test_read_table_formats_round_trip(tmp_path, suffix):
    table = small_table()
    path = tmp_path / f"profiles{suffix}"
    if suffix == ".parquet":
        table.to_parquet(path)
    else:
        table.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    read = read_table(path)
    pd.testing.assert_frame_equal(read, table, check_dtype=False)


def test_read_table_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_table(tmp_path / "missing.csv")
    bad = tmp_path / "profiles.xlsx"
    bad.write_text("x")
    with pytest.raises(TableError, match="unknown table format '.xlsx'"):
        read_table(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TableError, match="empty"):
        read_table(empty)


def test_feature_columns_by_prefix_and_type():
    table = small_table()
    assert feature_columns(table) == ["Cells_Area", "Nuclei_Intensity", "emb_0"]
    with pytest.raises(TableError, match="no numeric feature columns"):
        feature_columns(table[[schema.PLATE, schema.WELL]])


def test_require_columns_lists_what_is_there():
    with pytest.raises(TableError, match="NSCB needs the column.*Metadata_Batch.*Metadata_Plate"):
        require_columns(small_table(), [schema.BATCH], "NSCB")


def test_check_and_clean_name_nan_and_constant_columns():
    table = small_table()
    table["Cells_Broken"] = np.nan
    table.loc[3, "Nuclei_Intensity"] = np.nan
    table["Cytoplasm_Flat"] = 2.0
    with pytest.raises(TableError) as info:
        check_features(table)
    message = str(info.value)
    assert "Cells_Broken" in message and "Nuclei_Intensity" in message
    assert "Cytoplasm_Flat" in message and "clean_features" in message
    with pytest.raises(TableError, match="Cells_Broken"):
        feature_matrix(table)

    cleaned, report = clean_features(table)
    assert report.nan_columns == ["Nuclei_Intensity", "Cells_Broken"]
    assert report.constant_columns == ["Cytoplasm_Flat"]
    assert report.kept == ["Cells_Area", "emb_0"]
    assert feature_columns(cleaned) == ["Cells_Area", "emb_0"]
    assert "dropped 2 with NaN" in report.summary()
    check_features(cleaned)  # no error once clean


def test_clean_features_refuses_to_drop_everything():
    table = small_table()[[schema.PLATE, "Cells_Area"]].assign(Cells_Area=1.0)
    with pytest.raises(TableError, match="all 1 feature columns"):
        clean_features(table)


def test_aggregate_profiles_mean_median_and_metadata():
    table = small_table()
    table.loc[0, "Cells_Area"] = 1e6  # one outlier control on P1
    mean = aggregate_profiles(table, [schema.TREATMENT], ["Cells_Area"])
    median = aggregate_profiles(table, [schema.TREATMENT], ["Cells_Area"], method="median")
    assert list(mean[schema.TREATMENT]) == ["DMSO", "a", "b"]
    dmso = table[table[schema.TREATMENT] == "DMSO"]["Cells_Area"]
    assert mean.loc[0, "Cells_Area"] == pytest.approx(dmso.mean())
    assert median.loc[0, "Cells_Area"] == pytest.approx(dmso.median())
    # MoA and role are constant within a treatment and carried over; plate and well are not.
    assert schema.MOA in mean.columns and schema.ROLE in mean.columns
    assert schema.PLATE not in mean.columns and schema.WELL not in mean.columns
    assert list(mean["Metadata_Count"]) == [4, 4, 4]
    with pytest.raises(ValueError, match="mean' or 'median"):
        aggregate_profiles(table, [schema.TREATMENT], method="max")


def test_correlation_filter_drops_collinear_copies():
    rng = np.random.default_rng(1)
    base = rng.normal(size=200)
    table = pd.DataFrame(
        {
            "Cells_A": base,
            "Cells_A_copy": 3 * base + 0.01 * rng.normal(size=200),
            "Cells_B": rng.normal(size=200),
            "Cells_C": rng.normal(size=200),
        }
    )
    kept = correlation_filter(table, threshold=0.9)
    assert len(kept) == 3
    assert ("Cells_A" in kept) != ("Cells_A_copy" in kept)
    assert {"Cells_B", "Cells_C"} <= set(kept)
    assert correlation_filter(table, threshold=1.0) == list(table.columns)


def test_drop_position_features():
    names = ["Cells_AreaShape_Center_X", "Nuclei_Location_Center_Y", "Cells_AreaShape_Area"]
    assert drop_position_features(names) == ["Cells_AreaShape_Area"]


def test_normalize_profiles_methods_keep_metadata():
    table = small_table()
    for method in ("none", "zscore", "control-zscore", "phenotype", "sphering"):
        out = normalize_profiles(table, method)
        assert list(out[schema.WELL]) == list(table[schema.WELL])
        assert feature_columns(out) == ["Cells_Area", "Nuclei_Intensity", "emb_0"]
    centred = normalize_profiles(table, "phenotype", fraction=1.0)
    controls = control_mask(table)
    for plate in ("P1", "P2"):
        rows = controls & (table[schema.PLATE] == plate).to_numpy()
        assert np.allclose(centred.loc[rows, "Cells_Area"].mean(), 0.0)
    tvn = normalize_profiles(table, "tvn", n_components=2)
    assert feature_columns(tvn) == ["emb_0", "emb_1"]
    with pytest.raises(ValueError, match="unknown correction"):
        normalize_profiles(table, "harmony")
    with pytest.raises(TableError, match="Metadata_Role"):
        normalize_profiles(table.drop(columns=schema.ROLE), "control-zscore")
