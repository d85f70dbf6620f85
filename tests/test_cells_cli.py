"""``phenoadapt segment``: tables written atomically, failures reported, bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_cells_plate import write_plate

from phenoadapt import schema
from phenoadapt.cells import CELL_COUNT
from phenoadapt.cli import main


@pytest.fixture(scope="module")
def plate_dir(tmp_path_factory) -> Path:
    return write_plate(tmp_path_factory.mktemp("cli") / "SYN002", broken=("B03", 1))


def _segment(plate_dir: Path, *extra: str) -> int:
    return main(["segment", str(plate_dir), "--nucleus-diameter", "16", "--no-texture", *extra])


def test_segment_writes_cells_and_profiles(plate_dir, tmp_path, capsys):
    platemap = tmp_path / "map.csv"
    pd.DataFrame(
        {"well": ["B02", "C05"], "treatment": ["DMSO", "taxol"], "moa": [None, "tubulin"]}
    ).to_csv(platemap, index=False)
    cells, wells, sites = tmp_path / "cells.csv", tmp_path / "wells.csv", tmp_path / "sites.csv.gz"
    status = _segment(
        plate_dir,
        "--platemap",
        str(platemap),
        "--out",
        str(cells),
        "--per-well",
        str(wells),
        "--per-site",
        str(sites),
        "--workers",
        "2",
    )
    out, err = capsys.readouterr()
    assert status == 0
    assert "3 of 4 fields segmented" in out
    assert "well B03, site 1" in err and "all zero" in err  # the failed field is named
    settings = json.loads((tmp_path / "cells.segmentation.json").read_text())
    assert settings["nucleus_diameter_px"] == 16 and not settings["nucleus_diameter_estimated"]
    assert (settings["nucleus_channel"], settings["cell_channel"]) == ("DNA", "AGP")
    assert [c["role"] for c in settings["channels"]] == ["DNA", "ER", "RNA", "AGP", "Mito"]
    table = pd.read_csv(cells)
    assert list(table.columns[:9]) == [
        schema.PLATE,
        schema.WELL,
        schema.SITE,
        schema.CELL_ID,
        schema.CENTROID_Y,
        schema.CENTROID_X,
        schema.ROLE,
        schema.TREATMENT,
        schema.MOA,
    ]
    assert set(table[schema.WELL]) == {"B02", "C05"}
    assert set(table.loc[table[schema.WELL] == "B02", schema.ROLE]) == {"control"}
    assert set(table.loc[table[schema.WELL] == "C05", schema.TREATMENT]) == {"taxol"}
    per_well = pd.read_csv(wells)
    assert per_well[CELL_COUNT].sum() == len(table)
    assert len(pd.read_csv(sites)) == 3
    assert not list(tmp_path.glob(".*.part"))  # no temporary file left behind


def test_segment_never_overwrites_without_flag(plate_dir, tmp_path, capsys):
    out = tmp_path / "cells.csv"
    out.write_text("keep me")
    assert _segment(plate_dir, "--out", str(out), "--wells", "C05", "--workers", "1") == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert (
        _segment(plate_dir, "--out", str(out), "--wells", "C05", "--workers", "1", "--overwrite")
        == 0
    )
    assert set(pd.read_csv(out)[schema.WELL]) == {"C05"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nucleus-diameter", "-4"], "nucleus_diameter=-4"),
        (
            ["--wells", "B03", "--nucleus-diameter", "16"],
            "No cell was found in any of the 1 fields",
        ),
        (["--wells", "B03"], "too few nuclei stand out"),
        (["--nucleus-channel", "nope"], "has no nope channel"),
        (["--wells", "H11"], "Wells H11 were not imaged on plate SYN002"),
        (["--wells", "B-2"], "not a well name"),
        (["--cytoplasm-channel", "Tubulin"], "no Tubulin channel"),
        (["--backend", "cellpose"], "pip install cellpose"),
        (["--workers", "0"], "at least 1"),
    ],
)
def test_segment_bad_input_exits_2(plate_dir, tmp_path, capsys, monkeypatch, args, message):
    import sys

    monkeypatch.setitem(sys.modules, "cellpose", None)
    out = tmp_path / "cells.csv"
    status = main(["segment", str(plate_dir), "--out", str(out), "--workers", "1", *args])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_segment_outputs_get_permissions_from_the_umask(plate_dir, tmp_path):
    """The segment/embed writer used to leave mkstemp's owner-only 0600 files."""
    import os

    out = tmp_path / "cells.csv"
    before = os.umask(0o022)
    try:
        assert _segment(plate_dir, "--out", str(out), "--wells", "C05", "--workers", "1") == 0
    finally:
        os.umask(before)
    assert out.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "cells.segmentation.json").stat().st_mode & 0o777 == 0o644
