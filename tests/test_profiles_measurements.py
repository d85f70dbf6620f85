"""Measurement profiles: per-well medians normalized to each plate's controls, selected features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.errors import OptionError, PhenoadaptError
from phenoadapt.plate.platemap import PlateMap
from phenoadapt.plate.platemap.model import NotEnoughControlsError
from phenoadapt.profiles import (
    build_profiles,
    measurement_profiles,
    robust_zscore,
    select_features,
    well_profiles,
)

AREA = "Nuclei_AreaShape_Area"
MEAN_DNA = "Nuclei_Intensity_MeanIntensity_DNA"


def cell_rows(plate: str, wells: dict[str, tuple[str, str]], values: dict[str, list]) -> list:
    """One per-cell row per value: ``wells`` maps well -> (role, treatment)."""
    rows = []
    for w, (well, (role, treatment)) in enumerate(wells.items()):
        n = len(next(iter(values.values()))[w])
        for i in range(n):
            row = {
                schema.PLATE: plate,
                schema.WELL: well,
                schema.SITE: 1,
                schema.CELL_ID: i + 1,
                schema.CENTROID_Y: 10.0 * i,
                schema.CENTROID_X: 5.0,
                schema.ROLE: role,
                schema.TREATMENT: treatment,
                schema.MOA: None if role == "control" else "moa-" + treatment,
                schema.CONCENTRATION: None,
            }
            row.update({name: column[w][i] for name, column in values.items()})
            rows.append(row)
    return rows


def random_cells(plates=("P1", "P2"), n_controls=6, n_treated=6, n_features=6, seed=0):
    """Several plates of random cells: 3 cells a well, treated wells in two treatments."""
    rng = np.random.default_rng(seed)
    rows = []
    for p, plate in enumerate(plates):
        for w in range(n_controls + n_treated):
            well = f"{'ABCDEFGH'[w // 12]}{w % 12 + 1:02d}"
            control = w < n_controls
            treatment = "DMSO" if control else f"drug{w % 2}"
            shift = 0.0 if control else (2.0 if treatment == "drug0" else -2.0)
            for cell in range(3):
                row = {
                    schema.PLATE: plate,
                    schema.WELL: well,
                    schema.SITE: 1,
                    schema.CELL_ID: cell + 1,
                    schema.ROLE: "control" if control else "treated",
                    schema.TREATMENT: treatment,
                    schema.MOA: None if control else f"moa{w % 2}",
                }
                for f in range(n_features):
                    # Plates differ by an offset and a scale: what normalization removes.
                    value = rng.normal() + shift * (f % 2) * (1 if f < 3 else -1)
                    row[f"Cells_Intensity_Feature{f}_DNA"] = (p + 1) * value + 10 * p
                rows.append(row)
    return pd.DataFrame(rows)


# -- normalization -------------------------------------------------------------------
def test_robust_zscore_matches_hand_computation():
    wells = {
        "A01": ("control", "DMSO"),
        "A02": ("control", "DMSO"),
        "A03": ("control", "DMSO"),
        "B01": ("treated", "taxol"),
    }
    # Medians of the cells: 1, 2, 4 (controls) and 6.
    cells = pd.DataFrame(
        cell_rows(
            "P1",
            wells,
            {
                AREA: [[1, 1, 5], [2, 0, 3], [4], [6, 6, 7]],
                MEAN_DNA: [[3, 3, 3], [3, 3, 3], [3], [3, 3, 3]],
            },
        )
    )
    profiles = well_profiles(cells)
    assert list(profiles[AREA]) == [1, 2, 4, 6]
    normalized, fallbacks = robust_zscore(profiles)
    # median 2; |1-2|, |2-2|, |4-2| = 1, 0, 2 -> MAD 1
    expected = (np.array([1, 2, 4, 6]) - 2) / (1.4826 * 1)
    np.testing.assert_allclose(normalized[AREA], expected)
    # MEAN_DNA is constant on the controls (MAD 0) and everywhere: only centred, not divided.
    np.testing.assert_allclose(normalized[MEAN_DNA], 0.0)
    assert fallbacks == 1


def test_controls_sit_at_zero_median_with_unit_mad_on_every_plate():
    profiles = well_profiles(random_cells())
    normalized, _ = robust_zscore(profiles)
    features = [c for c in normalized.columns if c.startswith("Cells_")]
    for _plate, group in normalized.groupby(schema.PLATE):
        controls = group[group[schema.ROLE] == "control"][features].to_numpy()
        np.testing.assert_allclose(np.median(controls, axis=0), 0.0, atol=1e-12)
        mad = np.median(np.abs(controls), axis=0)
        np.testing.assert_allclose(1.4826 * mad, 1.0, rtol=1e-9)


def test_zero_mad_on_one_plate_falls_back_to_the_controls_of_all_plates():
    cells = random_cells()
    p1 = cells[schema.PLATE] == "P1"
    control = cells[schema.ROLE] == "control"
    cells.loc[p1 & control, "Cells_Intensity_Feature0_DNA"] = 5.0  # no spread on P1's controls
    normalized, fallbacks = robust_zscore(well_profiles(cells))
    assert fallbacks == 1
    values = normalized["Cells_Intensity_Feature0_DNA"]
    assert np.isfinite(values).all() and values.abs().max() < 50


def test_plates_are_normalized_each_on_its_own_controls():
    """P2 is P1 scaled by 2 and shifted by 10: after normalization the plates agree."""
    cells = random_cells(plates=("P1",))
    features = [c for c in cells.columns if c.startswith("Cells_")]
    other = cells.copy()
    other[schema.PLATE] = "P2"
    other[features] = 2 * other[features] + 10
    table = measurement_profiles(pd.concat([cells, other]), feature_select=False)
    one = table[table[schema.PLATE] == "P1"][features].to_numpy()
    two = table[table[schema.PLATE] == "P2"][features].to_numpy()
    np.testing.assert_allclose(one, two, atol=1e-9)
    raw = well_profiles(pd.concat([cells, other]))
    assert not np.allclose(raw[raw[schema.PLATE] == "P1"][features], two)


def test_sphering_gives_the_controls_identity_covariance():
    cells = random_cells(n_controls=24, n_treated=0, n_features=5, seed=3)
    features = [c for c in cells.columns if c.startswith("Cells_")]
    # Correlated features, so that whitening has something to undo.
    cells[features[1]] = cells[features[0]] + 0.5 * cells[features[1]]
    table = measurement_profiles(cells, normalize="sphering", feature_select=False, epsilon=1e-9)
    controls = table[table[schema.ROLE] == "control"][features].to_numpy()
    np.testing.assert_allclose(controls.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.cov(controls, rowvar=False), np.eye(len(features)), atol=1e-6)
    before = measurement_profiles(cells, feature_select=False)
    corr = np.corrcoef(before[features].to_numpy(), rowvar=False)[0, 1]
    assert abs(corr) > 0.5  # the robust z-score alone leaves the correlation


def test_sphering_epsilon_shrinks_and_must_not_be_negative():
    cells = random_cells(n_controls=24, n_treated=0, n_features=3, seed=4)
    table = measurement_profiles(cells, normalize="sphering", feature_select=False, epsilon=1.0)
    features = [c for c in table.columns if c.startswith("Cells_")]
    controls = table[table[schema.ROLE] == "control"][features].to_numpy()
    assert np.all(np.diag(np.cov(controls, rowvar=False)) < 0.9)  # variance / (variance + 1)
    with pytest.raises(OptionError, match="epsilon"):
        measurement_profiles(cells, normalize="sphering", epsilon=-1)


# -- feature selection ----------------------------------------------------------------
def test_feature_selection_drops_constant_missing_duplicate_and_position_features():
    rng = np.random.default_rng(1)
    n = 40
    base = rng.normal(size=n)
    table = pd.DataFrame(
        {
            schema.PLATE: "P1",
            schema.WELL: [f"A{i:02d}" for i in range(n)],
            "Cells_A": base,
            "Cells_B": rng.normal(size=n),
            "Cells_Duplicate": 2 * base + 1,  # |r| = 1 with Cells_A
            "Cells_Constant": 3.0,
            "Cells_Mostly": np.r_[np.ones(n - 1), 2.0],  # 1 of 40 differs: near-constant
            "Cells_Holes": np.r_[rng.normal(size=n - 4), [np.nan] * 4],  # 10% missing
            "Cells_FewHoles": np.r_[rng.normal(size=n - 1), np.nan],  # 2.5%: kept
            "Nuclei_Location_Center_X": rng.normal(size=n),
        }
    )
    selection = select_features(table)
    assert selection.kept == ["Cells_A", "Cells_B", "Cells_FewHoles"]
    assert selection.dropped["Cells_Duplicate"] == "correlated with Cells_A"
    assert selection.dropped["Cells_Constant"] == "near-constant"
    assert selection.dropped["Cells_Mostly"] == "near-constant"
    assert selection.dropped["Cells_Holes"] == "missing in 10% of wells"
    assert selection.dropped["Nuclei_Location_Center_X"] == "position"
    assert selection.summary().startswith("kept 3 of 8 features")
    # Deterministic, whatever the column order: ties go to the first name alphabetically.
    shuffled = table[list(reversed(table.columns))]
    assert sorted(select_features(shuffled).kept) == selection.kept


def test_remaining_missing_values_are_the_control_median_after_normalization():
    cells = random_cells(n_controls=20, n_treated=20)
    cells.loc[cells[schema.WELL] == "B08", "Cells_Intensity_Feature2_DNA"] = np.nan  # 1 of 40
    result = build_profiles(cells)
    assert result.raw["Cells_Intensity_Feature2_DNA"].isna().sum() == 2  # one well per plate
    assert "Cells_Intensity_Feature2_DNA" in result.table.columns
    features = [c for c in result.table.columns if c.startswith("Cells_")]
    assert not result.table[features].isna().any().any()


# -- the table and its consumers ------------------------------------------------------
def test_table_is_pycytominer_style_and_copairs_reads_it():
    table = measurement_profiles(random_cells(n_controls=8, n_treated=8), feature_select=True)
    meta = [c for c in table.columns if c.startswith("Metadata_")]
    features = [c for c in table.columns if not c.startswith("Metadata_")]
    assert list(table.columns) == meta + features  # metadata first
    assert meta[:2] == [schema.PLATE, schema.WELL]
    assert {schema.ROLE, schema.TREATMENT, schema.MOA, "Metadata_Cell_Count"} <= set(meta)
    assert features and all(f.startswith("Cells_") for f in features)
    assert len(table) == 32 and table[features].notna().all().all()

    from copairs import map as copairs_map

    meta_frame = table[meta].astype(str)
    ap = copairs_map.average_precision(
        meta_frame,
        table[features].to_numpy(),
        pos_sameby=[schema.TREATMENT],
        pos_diffby=[],
        neg_sameby=[],
        neg_diffby=[schema.TREATMENT],
        progress_bar=False,
    )
    assert ap["average_precision"].notna().any()

    from phenoadapt.evaluate import map_activity

    activity = map_activity(table, null_size=100, same_plate_column=schema.PLATE)
    # The two drugs shift half of the features by 2 SD: both are retrieved above the controls.
    assert set(activity.per_group[schema.TREATMENT]) == {"drug0", "drug1"}
    assert activity.mean_map > 0.6


def test_platemaps_replace_the_annotation_and_excluded_wells_are_left_out():
    cells = random_cells(plates=("P1",), n_controls=2, n_treated=2)
    cells[[schema.ROLE, schema.TREATMENT, schema.MOA]] = None
    platemap = PlateMap.from_records(
        [
            {"well": "A01", "treatment": "DMSO", "role": "control"},
            {"well": "A02", "treatment": "DMSO", "role": "control"},
            {"well": "A03", "treatment": "taxol", "moa": "tubulin"},
            {"well": "A04", "treatment": "empty", "role": "excluded"},
        ],
        plate_format=96,
    )
    for maps in ({"P1": platemap}, platemap):
        profiles = well_profiles(cells, maps)
        assert list(profiles[schema.WELL]) == ["A01", "A02", "A03"]
        assert list(profiles[schema.ROLE].astype(str)) == ["control", "control", "treated"]
        assert profiles.loc[2, schema.MOA] == "tubulin"
    table = measurement_profiles(cells, {"P1": platemap}, feature_select=False)
    assert len(table) == 3
    # A plate the mapping does not name keeps the table's own annotation.
    both = pd.concat([cells, random_cells(plates=("P2",), n_controls=2, n_treated=2)])
    profiles = well_profiles(both, {"P1": platemap})
    p2 = profiles[profiles[schema.PLATE] == "P2"]
    assert list(p2[schema.ROLE]) == ["control", "control", "treated", "treated"]


def test_a_plate_without_controls_is_refused_with_the_way_forward():
    cells = random_cells()
    cells.loc[cells[schema.PLATE] == "P2", schema.ROLE] = "treated"
    for method in ("robust-zscore", "sphering"):
        with pytest.raises(NotEnoughControlsError) as info:
            measurement_profiles(cells, normalize=method)
        message = str(info.value)
        assert "P2 (0)" in message and "P1" not in message and repr(method) in message
        assert "role 'control'" in message and "'none'" in message
        assert isinstance(info.value, PhenoadaptError)
    raw = measurement_profiles(cells, normalize="none", feature_select=False)
    assert len(raw) == 24


def test_unknown_normalization_and_empty_tables_are_user_errors():
    with pytest.raises(OptionError, match="robust-zscore, sphering, none"):
        measurement_profiles(random_cells(), normalize="mad")
    with pytest.raises(PhenoadaptError, match="no cells"):
        measurement_profiles(random_cells().iloc[:0])


# -- the command line -------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_plates(tmp_path_factory):
    from test_cells_plate import write_plate

    root = tmp_path_factory.mktemp("two")
    plates = [write_plate(root / name) for name in ("SYNA", "SYNB")]
    platemap = root / "map.csv"
    pd.DataFrame(
        {
            "well": ["B02", "B03", "C05"],
            "treatment": ["DMSO", "DMSO", "taxol"],
            "moa": [None, None, "tubulin"],
        }
    ).to_csv(platemap, index=False)
    return plates, platemap


def _segment(plates, *extra: str) -> int:
    from phenoadapt.cli import main

    argv = ["segment", *map(str, plates), "--nucleus-diameter", "16", "--no-texture"]
    return main([*argv, "--workers", "1", *extra])


def test_segment_writes_normalized_profiles_of_two_plates(two_plates, tmp_path, capsys):
    import json

    plates, platemap = two_plates
    cells, wells = tmp_path / "cells.csv", tmp_path / "wells.csv"
    status = _segment(plates, "--platemap", str(platemap), "--out", str(cells), "--per-well",
                      str(wells))  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "8 of 8 fields segmented" in out and "normalization robust-zscore" in out
    assert "kept" in out and "features" in out
    table = pd.read_csv(cells)
    assert set(table[schema.PLATE]) == {"SYNA", "SYNB"}
    profiles = pd.read_csv(wells)
    assert len(profiles) == 6 and set(profiles[schema.PLATE]) == {"SYNA", "SYNB"}
    meta = [c for c in profiles.columns if c.startswith("Metadata_")]
    features = [c for c in profiles.columns if not c.startswith("Metadata_")]
    assert list(profiles.columns) == meta + features and len(features) > 5
    for _plate, group in profiles.groupby(schema.PLATE):
        controls = group[group[schema.ROLE] == "control"][features]
        np.testing.assert_allclose(controls.median(), 0.0, atol=1e-9)
    # The same as the API on the per-cell table.
    expected = measurement_profiles(table)
    assert list(expected.columns) == list(profiles.columns)
    np.testing.assert_allclose(profiles[features], expected[features], rtol=1e-6, atol=1e-9)
    settings = json.loads((tmp_path / "cells.segmentation.json").read_text())
    assert [entry["plate"] for entry in settings["plates"]] == ["SYNA", "SYNB"]

    raw = tmp_path / "raw.csv"
    status = _segment(plates, "--platemap", str(platemap), "--platemap", str(platemap), "--out",
                      str(tmp_path / "c2.csv"), "--per-well", str(raw), "--normalize", "none",
                      "--no-feature-select")  # fmt: skip
    assert status == 0
    raw_table = pd.read_csv(raw)
    assert set(features) < set(raw_table.columns)
    np.testing.assert_allclose(raw_table[features], well_profiles(table)[features], rtol=1e-6)


def test_segment_refuses_at_once_a_plate_without_controls(two_plates, tmp_path, capsys):
    plates, _ = two_plates
    no_controls = tmp_path / "treated.csv"
    pd.DataFrame({"well": ["B02", "B03", "C05"], "treatment": ["a", "b", "c"]}).to_csv(
        no_controls, index=False
    )
    out = tmp_path / "cells.csv"
    argv = ["--out", str(out), "--per-well", str(tmp_path / "w.csv")]
    assert _segment(plates, "--platemap", str(no_controls), *argv) == 2
    err = capsys.readouterr().err
    assert "SYNA (0), SYNB (0)" in err and "role 'control'" in err
    assert not out.exists()  # refused before segmenting
    assert _segment(plates, *argv) == 2  # no plate map at all
    assert "SYNA (0)" in capsys.readouterr().err
    maps = [arg for path in (no_controls, "a.csv", "b.csv") for arg in ("--platemap", str(path))]
    assert _segment(plates, *maps, *argv) == 2
    assert "3 plate maps for 2 plates" in capsys.readouterr().err
    assert _segment(plates, "--plate-id", "X", *argv) == 2
    assert "--plate-id names one plate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        _segment(plates, "--normalize", "mad", *argv)
    assert info.value.code == 2
    assert "invalid choice: 'mad'" in capsys.readouterr().err


def test_benchmark_scores_and_table_run_on_a_small_table():
    """benchmarks/bench_measurement_profiles.py cannot rot (its figures take minutes)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_measurement_profiles as bench

    cells = random_cells(n_controls=8, n_treated=16)
    treated = cells[schema.ROLE] == "treated"
    # Two compounds per MoA, so that MoA consistency has positives.
    half = (cells[schema.WELL].str[1:].astype(int) - 1) // 2 % 2 == 0
    cells.loc[treated & half, schema.TREATMENT] += "-b"
    rows = [bench.score(cells, normalize, select) for normalize, select in bench.SETTINGS]
    assert [row["normalization"] for row in rows] == ["none", "none", "robust-zscore", "sphering"]
    text = bench.markdown(rows, len(cells), 48)
    assert "| robust-zscore | on |" in text and "activity mAP" in text
