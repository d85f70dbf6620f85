"""Plate maps: reading (CSV, TSV, aliases, JUMP), writing, validation, roles and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.cli import main
from phenoadapt.errors import ContextError, PlateMapError
from phenoadapt.export import OutputExistsError, OutputNotWritableError
from phenoadapt.plate import PLATE_96, PLATE_384
from phenoadapt.plate.platemap import (
    NotEnoughControlsError,
    PlateMap,
    WellCheck,
    make_platemap,
    parse_role,
    read_jump_platemap,
    read_platemap,
    sniff_delimiter,
    write_platemap,
)
from phenoadapt.schema import Role

JUMP = Path(__file__).parent / "data" / "jump_moa"
JUMP_MAP = JUMP / "JUMP-MOA_compound_platemap.tsv"
JUMP_META = JUMP / "JUMP-MOA_compound_metadata.tsv"
# The 24 DMSO wells of JUMP-MOA, written with an empty broad_sample in the map.
JUMP_DMSO = (
    "A11 B18 D17 D19 E07 E08 F07 F24 G20 G23 H10 I12 "
    "I13 J01 J21 K24 M05 M06 N06 N22 O14 O19 P02 P11"
).split()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write(
        tmp_path / "map.csv",
        "well,compound,moa,dose\n"
        "A1,DMSO,,0\n"
        "a2,taxol,tubulin stabilizer,0.3\n"
        "B01,taxol,tubulin stabilizer,1\n"
        "B02,dmso,,\n"
        "B03,,,\n",
    )


@pytest.fixture(scope="module")
def jump() -> PlateMap:
    return read_jump_platemap(JUMP_MAP, JUMP_META)


# -- reading ---------------------------------------------------------------
def test_read_csv_with_aliases(small: Path) -> None:
    pm = read_platemap(small)
    assert pm.format == PLATE_96
    assert pm.wells == ["A01", "A02", "B01", "B02", "B03"]
    assert pm.controls == ["A01", "B02"]  # DMSO, case-insensitive
    assert pm.treated == ["A02", "B01"]
    assert pm.excluded == ["B03"]  # no treatment
    assert pm.treatments() == ["DMSO", "dmso", "taxol"]
    assert pm.moas() == ["tubulin stabilizer"]
    frame = pm.to_frame()
    assert list(frame.columns) == [
        schema.WELL,
        schema.TREATMENT,
        schema.MOA,
        schema.CONCENTRATION,
        schema.ROLE,
    ]
    assert frame[schema.CONCENTRATION].tolist()[:3] == [0.0, 0.3, 1.0]
    assert np.isnan(frame[schema.CONCENTRATION].iloc[3])
    assert pm.source == small and not pm.modified


def test_read_tsv_and_semicolon_and_header_spellings(tmp_path: Path) -> None:
    tsv = write(tmp_path / "m.tsv", "Well Position\tPert_Iname\tMechanism\nC3\tDMSO\t\nC4\tx\tm1\n")
    semi = write(
        tmp_path / "m.txt", "WellName;Metadata_Treatment;Concentration\nC03;DMSO;1,5\nC04;x;2\n"
    )
    assert sniff_delimiter(tsv) == "\t" and sniff_delimiter(semi) == ";"
    a = read_platemap(tsv)
    assert a.wells == ["C03", "C04"] and a.role_of("c3") is Role.CONTROL and a.moas() == ["m1"]
    with pytest.raises(PlateMapError, match="'1,5' for C03"):
        read_platemap(semi)


def test_sniffer_follows_the_header_not_commas_in_values() -> None:
    # InChI strings in the JUMP metadata are full of commas.
    assert sniff_delimiter(JUMP_META) == "\t"


def test_explicit_columns_and_ignored_role(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "Pos,Drug,Kind\nA01,DMSO,treated\nA02,y,treated\n")
    with pytest.raises(PlateMapError, match="no well column"):
        read_platemap(path)
    pm = read_platemap(path, columns={"well": "Pos", "treatment": "Drug", "role": "Kind"})
    assert pm.controls == []  # the file says A01 is treated
    pm = read_platemap(path, columns={"well": "Pos", "treatment": "Drug", "role": None})
    assert pm.controls == ["A01"]  # role ignored: DMSO rule
    assert "Kind" in pm.to_frame().columns  # unused columns are kept
    with pytest.raises(PlateMapError, match="'Nope' .* not in m.csv"):
        read_platemap(path, columns={"well": "Nope"})
    with pytest.raises(PlateMapError, match="Unknown plate-map field"):
        read_platemap(path, columns={"colour": "Kind"})


def test_role_column_spellings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.csv",
        "well,treatment,pert_type,control_type\n"
        "A01,DMSO,control,negcon\n"
        "A02,TC-S-7004,control,poscon\n"  # JUMP positive control: a labelled, treated well
        "A03,water,control,\n"
        "A04,aloxistatin,trt,\n"
        "A05,,empty,\n",
    )
    pm = read_platemap(path)
    assert [pm.role_of(w) for w in pm.wells] == [
        Role.CONTROL,
        Role.TREATED,
        Role.CONTROL,
        Role.TREATED,
        Role.EXCLUDED,
    ]
    assert parse_role(" Negative Control ") is Role.CONTROL
    assert parse_role("") is None and parse_role(float("nan")) is None


def test_unknown_role_names_the_well(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "well,treatment,role\nA01,DMSO,control\nB07,x,maybe\n")
    with pytest.raises(PlateMapError, match=r"'maybe' at well B07 \(line 3 of m.csv\)"):
        read_platemap(path)


def test_blank_roles_fall_back_to_the_treatment(tmp_path: Path) -> None:
    path = write(tmp_path / "m.csv", "well,treatment,role\nA01,DMSO,\nA02,x,\nA03,x,excluded\n")
    pm = read_platemap(path)
    assert pm.controls == ["A01"] and pm.treated == ["A02"] and pm.excluded == ["A03"]


def test_plate_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.csv",
        "Metadata_Plate,well,treatment\nP1,A01,DMSO\nP1,A02,x\nP2,A01,DMSO\n",
    )
    with pytest.raises(PlateMapError, match=r"2 plates \(P1, P2\).*--plate"):
        read_platemap(path)
    pm = read_platemap(path, plate_id="P2")
    assert pm.plate_id == "P2" and pm.wells == ["A01"]
    with pytest.raises(PlateMapError, match="no rows for plate 'P3'"):
        read_platemap(path, plate_id="P3")
    single = write(tmp_path / "one.csv", "plate,well,treatment\nBR1,A01,DMSO\n")
    assert read_platemap(single).plate_id == "BR1"


# -- the real JUMP plate map -----------------------------------------------
def test_jump_platemap(jump: PlateMap) -> None:
    assert jump.format == PLATE_384 and len(jump) == 384
    assert jump.controls == JUMP_DMSO
    assert jump.counts() == {Role.CONTROL: 24, Role.TREATED: 360, Role.EXCLUDED: 0}
    assert jump.treatments(Role.CONTROL) == ["DMSO"]
    assert len(jump.treatments(Role.TREATED)) == 90
    assert len(jump.moas()) == 47
    assert jump.moas(Role.CONTROL) == []
    a01 = jump.record("A01")
    assert a01[schema.TREATMENT] == "AZ191" and a01[schema.MOA] == "DYRK inhibitor"
    assert a01["broad_sample"] == "BRD-K80935598-001-01-1" and a01[schema.ROLE] is Role.TREATED
    # De-identified compounds keep their placeholder names and their MoA.
    assert jump.wells_where(treatment="Compound2")
    assert set(jump.moas()) >= {"kinesin inhibitor", "PARP inhibitor"}
    # Every compound sits in 4 wells.
    treated = jump.to_frame().query(f"{schema.ROLE} == 'treated'")
    assert treated[schema.TREATMENT].value_counts().eq(4).all()


def test_jump_autodetected_by_read_platemap(jump: PlateMap) -> None:
    assert read_platemap(JUMP_MAP, compound_metadata=JUMP_META) == jump
    meta = pd.read_csv(JUMP_META, sep="\t", dtype=str)
    assert read_platemap(JUMP_MAP, compound_metadata=meta, plate_format=384) == jump


def test_jump_map_alone_uses_the_solvent_for_empty_wells() -> None:
    pm = read_platemap(JUMP_MAP)
    assert pm.controls == JUMP_DMSO
    assert pm.record("A11")[schema.TREATMENT] == "DMSO"
    assert pm.record("A01")[schema.TREATMENT] == "BRD-K80935598-001-01-1"
    assert pm.moas() == []


def test_compound_metadata_errors(tmp_path: Path) -> None:
    meta = pd.read_csv(JUMP_META, sep="\t", dtype=str)
    with pytest.raises(PlateMapError, match="1 compound.*missing from .*BRD-K80935598"):
        read_platemap(JUMP_MAP, compound_metadata=meta.iloc[1:])
    twice = pd.concat([meta, meta.iloc[:1]])
    with pytest.raises(PlateMapError, match="more than once .*BRD-K80935598"):
        read_platemap(JUMP_MAP, compound_metadata=twice)
    with pytest.raises(PlateMapError, match="lacks"):
        read_platemap(JUMP_MAP, compound_metadata=meta.rename(columns={"broad_sample": "id"}))
    other = write(tmp_path / "m.csv", "well,compound\nA01,x\n")
    with pytest.raises(PlateMapError, match="not a JUMP plate map"):
        read_jump_platemap(other, JUMP_META)


# -- writing ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["out.csv", "out.tsv", "out.csv.gz"])
def test_round_trip(tmp_path: Path, jump: PlateMap, name: str) -> None:
    pm = jump.copy()
    pm.plate_id = "BR00116991"
    pm.assign("A01", concentration=3.0)
    pm.set_role(["P24", "A02"], Role.EXCLUDED)
    assert pm.modified
    path = write_platemap(pm, tmp_path / name)
    assert not pm.modified and pm.source == path
    back = read_platemap(path)
    assert back == pm
    assert back.record("A01")[schema.CONCENTRATION] == 3.0 and back.plate_id == "BR00116991"
    sep = "\t" if name.endswith(".tsv") else ","
    if not name.endswith(".gz"):
        assert path.read_text().splitlines()[0].startswith(f"{schema.PLATE}{sep}{schema.WELL}")


def test_write_refuses_to_overwrite(tmp_path: Path, small: Path) -> None:
    pm = read_platemap(small)
    # Written by the one table writer (phenoadapt.export): its errors and rules.
    with pytest.raises(OutputExistsError, match="already exists.*overwrite=True"):
        write_platemap(pm, small)
    pm.set_role("B03", "control")
    write_platemap(pm, small, overwrite=True)
    assert read_platemap(small).controls == ["A01", "B02", "B03"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.csv"]  # no temp file left
    assert small.stat().st_mode & 0o777 == 0o644
    assert write_platemap(pm, tmp_path / "new" / "map.csv").is_file()  # folder created
    with pytest.raises(OutputNotWritableError, match="is a folder"):
        write_platemap(pm, tmp_path)


# -- validation errors -----------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        (
            "well,treatment\nA01,x\nA-9,y\n,z\n",
            {},
            r"2 well name\(s\).*'A-9' \(line 3.*empty well name \(line 4",
        ),
        (
            "well,treatment\nA1,x\nA01,y\nB2,z\nb02,z\n",
            {},
            r"A01 \(lines 2, 3\), B02 \(lines 4, 5\)",
        ),
        (
            "well,treatment\nA01,x\nP24,y\n",
            {"plate_format": 96},
            r"outside a 96-well plate \(rows A-H, columns 1-12\): P24 \(line 3.*--format 384",
        ),
        ("well,treatment\nA01,x\n", {"plate_format": 100}, "Unknown plate format 100"),
        (
            "pos,drug\nA01,x\n",
            {},
            r"Columns found: pos, drug\. Accepted names for the well column: "
            r"Metadata_Well, well, well_position",
        ),
        (
            "well,colour\nA01,red\n",
            {},
            "neither a treatment nor a role column.*Columns found: well, colour",
        ),
        ("", {}, "is empty"),
        ("\n\n", {}, "is empty"),
        ("well,treatment\n\n", {}, "has a header .* but no rows"),
        ("well,treatment,dose\nA01,x,3 uM\n", {}, "'3 uM' for A01"),
        ('well,treatment\nA01,"x\n', {}, "not a readable CSV/TSV"),
    ],
)
def test_read_errors(tmp_path: Path, text: str, kwargs: dict, message: str) -> None:
    path = write(tmp_path / "m.csv", text)
    with pytest.raises(PlateMapError, match=message):
        read_platemap(path, **kwargs)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PlateMapError, match="No plate map at"):
        read_platemap(tmp_path / "missing.csv")
    with pytest.raises(PlateMapError, match="spreadsheet.*CSV"):
        read_platemap(write(tmp_path / "m.xlsx", "x"))


def test_require_controls(small: Path, tmp_path: Path) -> None:
    pm = read_platemap(small)
    assert pm.require_controls() == ["A01", "B02"]
    with pytest.raises(
        NotEnoughControlsError,
        match=r"has 2 negative-control well\(s\) but ARM-BN needs at least 3",
    ):
        pm.require_controls(3, method="ARM-BN")
    with pytest.raises(NotEnoughControlsError, match="1 imaged negative-control"):
        pm.require_controls(2, wells=["A01", "A02"])
    none = read_platemap(write(tmp_path / "n.csv", "well,treatment\nA01,x\nA02,y\n"))
    with pytest.raises(
        ContextError, match=r"0 negative-control.*--controls DMSO.*Treatments on this map: x, y"
    ):
        none.require_controls()
    # Both kinds of error, so that the pipeline and the plate-map checks can catch it.
    assert issubclass(NotEnoughControlsError, PlateMapError)


def test_check_against_imaged_wells(small: Path) -> None:
    pm = read_platemap(small)
    report = pm.check_against(["A01", "a2", "C05"])
    assert isinstance(report, WellCheck) and not report.ok
    assert report.matched == ("A01", "A02")
    assert report.not_in_map == ("C05",)
    assert report.not_imaged == ("B01", "B02")  # B03 is excluded: not expected
    assert report.imaged_controls == ("A01",)
    assert "C05" in report.summary() and "B01" in report.summary()

    class FakePlate:
        wells = ["A01", "A02", "B01", "B02"]

    assert pm.check_against(FakePlate()).ok
    with pytest.raises(PlateMapError, match="None of the 2 imaged wells"):
        pm.check_against(["H11", "H12"])
    with pytest.raises(PlateMapError, match="P24 lie outside a 96-well plate"):
        pm.check_against(["A01", "P24"])
    with pytest.raises(PlateMapError, match="not a well name"):
        pm.check_against(["A01", "field 3"])


# -- control rules and editing ---------------------------------------------
def test_controls_rule_without_role_column(small: Path) -> None:
    pm = read_platemap(small, controls="taxol")
    assert pm.controls == ["A02", "B01"]
    assert pm.treated == ["A01", "B02"]  # DMSO is not a control when another rule is given
    assert not pm.modified
    with pytest.raises(PlateMapError, match=r"has treatment 'DMOS' or 'dmos'; .*DMSO"):
        read_platemap(small, controls=["DMOS", "dmos"])


def test_controls_rule_adds_to_role_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.csv",
        "well,treatment,role\nA01,DMSO,control\nA02,water,treated\nA03,x,treated\n",
    )
    pm = read_platemap(path, controls=["water"])
    assert pm.controls == ["A01", "A02"]


def test_mark_controls_where(small: Path) -> None:
    pm = read_platemap(small)
    pm.set_role("B02", Role.EXCLUDED)
    version = pm.version
    assert pm.mark_controls_where(moa="Tubulin Stabilizer") == ["A02", "B01"]
    assert pm.controls == ["A01", "A02", "B01"]  # B02 stays excluded
    assert pm.version == version + 1
    assert pm.mark_controls_where(treatment="dmso", replace=True) == ["A01"]
    assert pm.controls == ["A01"] and pm.treated == ["A02", "B01"]
    assert pm.mark_controls_where(treatment="DMSO", include_excluded=True) == ["A01", "B02"]
    with pytest.raises(PlateMapError, match="give a treatment or an MoA"):
        pm.mark_controls_where()
    with pytest.raises(PlateMapError, match="No well .* MoA 'x'.*tubulin stabilizer"):
        pm.mark_controls_where(moa="x")


def test_role_changes_and_dirty_flag(small: Path) -> None:
    pm = read_platemap(small)
    assert pm.version == 0 and not pm.modified
    assert pm.set_role(["a1", "A02"], "excluded") == ["A01", "A02"]
    assert pm.role_of("A01") is Role.EXCLUDED and pm.version == 1 and pm.modified
    assert pm.set_role("A01", Role.EXCLUDED) == []  # no change, no new version
    assert pm.version == 1
    twin = pm.copy()
    pm.mark_saved()
    assert not pm.modified and twin.modified
    twin.set_role("A01", "control")
    assert pm.role_of("A01") is Role.EXCLUDED  # copies are independent
    assert pm != twin
    twin.set_role("A01", "excluded")
    assert pm == twin  # equality ignores the version counter
    pm.plate_id = "P7"
    assert pm.modified and pm != twin
    with pytest.raises(PlateMapError, match=r"H12 are not on the plate map \(5 wells of a 96-well"):
        pm.set_role(["A01", "H12"], "control")
    with pytest.raises(PlateMapError, match="Unknown role 'maybe'"):
        pm.set_role("A01", "maybe")
    with pytest.raises(PlateMapError, match="not a well name"):
        pm.role_of("Z")


def test_assign(small: Path) -> None:
    pm = read_platemap(small)
    pm.assign(["C01", "C02"], treatment="DMSO")
    assert pm.controls == ["A01", "B02", "C01", "C02"] and pm.version == 1
    pm.assign("A02", moa=None, concentration=2.5)
    assert pm.record("A02")[schema.MOA] is None and pm.record("A02")[schema.CONCENTRATION] == 2.5
    assert pm.role_of("A02") is Role.TREATED  # the role is kept when not given
    pm.assign("A02", role="control")
    assert pm.role_of("A02") is Role.CONTROL
    version = pm.version
    pm.assign("A02", role="control")
    assert pm.version == version
    with pytest.raises(PlateMapError, match="outside a 96-well"):
        pm.assign("I01", treatment="x")
    with pytest.raises(PlateMapError, match="must be numbers"):
        pm.assign("A01", concentration="lots")


def test_positions_grid_and_lookups(jump: PlateMap) -> None:
    assert jump.rows()[-1] == "P" and jump.columns()[-1] == 24
    assert jump.wells_in_row("B")[:2] == ["B01", "B02"] and len(jump.wells_in_row(2)) == 24
    assert len(jump.wells_in_column(11)) == 16 and "A11" in jump.wells_in_column(11)
    grid = jump.to_grid()
    assert grid.shape == (16, 24) and grid.at["A", 11] == "control" and grid.at["A", 1] == "treated"
    frame = jump.to_frame(positions=True)
    assert frame.loc[frame[schema.WELL] == "P24", [schema.ROW, schema.COLUMN]].values.tolist() == [
        ["P", 24]
    ]
    assert "A11" in jump and "a11" in jump and "Z99" not in jump and "nonsense" not in jump
    assert jump.wells_where(treatment="dmso", role="control") == JUMP_DMSO
    assert "384 wells: 24 control, 360 treated" in repr(jump)


# -- building maps in code -------------------------------------------------
def test_make_platemap() -> None:
    pm = make_platemap(
        96,
        {
            "A01": "taxol",
            "A02": {"treatment": "nocodazole", "concentration": 1.0},
            "A03": {schema.TREATMENT: "DMSO", schema.ROLE: "excluded"},
            "A04": None,
        },
        fill="DMSO",
        moas={"taxol": "tubulin stabilizer", "nocodazole": "tubulin destabilizer"},
        plate_id="synthetic-1",
    )
    assert len(pm) == 96 and len(pm.controls) == 92
    assert pm.role_of("A03") is Role.EXCLUDED and pm.role_of("A04") is Role.EXCLUDED
    assert pm.record("A02")[schema.MOA] == "tubulin destabilizer"
    assert pm.record("A02")[schema.CONCENTRATION] == 1.0
    assert pm.plate_id == "synthetic-1" and not pm.modified
    water = make_platemap(96, {"A01": "x", "A02": "water"}, controls="water")
    assert water.controls == ["A02"]
    only = make_platemap(PLATE_384, {"P24": "x"})
    assert only.wells == ["P24"] and only.format == PLATE_384


def test_from_frame_records_and_blank() -> None:
    records = [{"well": "B2", "compound": "DMSO"}, {"well": "A1", "compound": "x", "moa": "m"}]
    pm = PlateMap.from_records(records, plate_format=96)
    assert pm.wells == ["A01", "B02"] and pm.controls == ["B02"]
    same = PlateMap(pm.to_frame(), 96)
    assert same == pm
    indexed = PlateMap(pm.to_frame().set_index(schema.WELL), 96)
    assert indexed == pm
    blank = PlateMap.blank(384, plate_id="P")
    assert len(blank) == 384 and blank.excluded == blank.wells and blank.treatments() == []
    with pytest.raises(PlateMapError, match="lists no wells"):
        PlateMap.from_frame(pd.DataFrame({"well": []}))


# -- command line ----------------------------------------------------------
def test_cli_check(capsys: pytest.CaptureFixture[str], small: Path) -> None:
    rc = main(
        [
            "platemap",
            "check",
            str(JUMP_MAP),
            "--compound-metadata",
            str(JUMP_META),
            "--format",
            "384",
            "--min-controls",
            "24",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "384 wells (24 control, 360 treated, 0 excluded)" in out
    assert "MoAs: 47" in out and "DMSO (24 wells)" in out
    assert main(["platemap", "check", str(small), "--min-controls", "3"]) == 2
    assert "needs at least 3" in capsys.readouterr().err
    assert main(["platemap", "check", str(small), "--controls", "taxol", "--controls", "DMSO"]) == 0
    assert "DMSO (1 well)" in capsys.readouterr().out


def test_cli_check_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.csv", "well,treatment\nA01,x\nA01,y\n")
    assert main(["platemap", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phenoadapt: error:") and "A01 (lines 2, 3)" in err
    untreated = write(tmp_path / "u.csv", "well,treatment\nA01,x\n")
    assert main(["platemap", "check", str(untreated)]) == 0
    assert "warning: no negative-control wells" in capsys.readouterr().err
    assert main(["platemap", "check", str(tmp_path / "missing.csv")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["platemap", "check", str(untreated), "--format", "100"])
    assert exc.value.code == 2


def test_cli_convert(capsys: pytest.CaptureFixture[str], tmp_path: Path, jump: PlateMap) -> None:
    out = tmp_path / "jump.csv"
    argv = ["platemap", "convert", str(JUMP_MAP), str(out), "--compound-metadata", str(JUMP_META)]
    assert main(argv) == 0
    assert "384 wells" in capsys.readouterr().out
    assert read_platemap(out) == jump
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--controls", "AZ191"]) == 0
    assert len(read_platemap(out).controls) == 28
