"""The bad-input sweep (issue 13), kept as tests: every input is built here, small.

Each bad input gets exit status 2 with a message naming the problem and the fix,
or a warning naming the skipped well and site; never a traceback, never a
half-written or replaced output, never an empty output folder.  A short fuzz
test feeds random TIFF headers, truncated files and odd file names to the plate
reader: only :class:`~phenoadapt.errors.PhenoadaptError` or clean skips.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_fixtures import CHANNELS, make_checkpoint, make_plate
from safetensors.torch import save_file

from phenoadapt import schema
from phenoadapt.cli import EXIT_USER_ERROR, main
from phenoadapt.errors import PhenoadaptError
from phenoadapt.nn import Normalization, phenoprofiler
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.synthetic import read_cells
from phenoadapt.profiles import read_table
from phenoadapt.train import CheckpointMetadata, read_checkpoint_metadata, save_checkpoint
from phenoadapt.train.checkpoint import METADATA_KEY

BAD_SITE = "r01c03f01p01-ch2sk1fk1fl1.tiff"  # well A03, site 1, channel ER


# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny plate (8 wells, 1 site, 128 px), a classifier, an embedder, a cells table."""
    root = tmp_path_factory.mktemp("bad_inputs")
    _, _, plate = make_plate(root / "plates", "p1", seed=3)
    norm = Normalization("log1p", (5.5,) * 5, (1.0,) * 5, None)
    embedder = phenoprofiler(
        5, 3, 6, arch="resnet10", width=4, stem="small", heads=2, normalization=norm, seed=0
    ).eval()
    meta = CheckpointMetadata(
        network={}, classes=("DMSO", "a", "b"), channel_names=CHANNELS, method="erm",
        crop_size=16, extra={"kind": "embedder", "unit": "cell", "crop_scale": 0.5},
    )  # fmt: skip
    cells = root / "cells.csv"
    read_cells(plate).to_csv(cells, index=False)
    return {
        "plate": plate,
        "ckpt": make_checkpoint(root / "model.safetensors"),
        "embedder": save_checkpoint(root / "embedder.safetensors", embedder, meta),
        "cells": cells,
    }


def cli(argv: list, capsys) -> tuple[int, str]:
    """Run the CLI in-process; no traceback and no 'bug' message, whatever the input."""
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return status, err


def copy_plate(base, tmp_path: Path, change=None) -> Path:
    """A copy of the tiny plate (folder named as its plate id); ``change(array, name)`` per file."""
    target = tmp_path / "plate" / "p1"
    shutil.copytree(base["plate"], target)
    if change is not None:
        for path in sorted(target.glob("*.tiff")):
            changed = change(tifffile.imread(path), path.name)
            if changed is not None:
                tifffile.imwrite(path, changed)
    return target


def _predict(plate: Path, ckpt, out: Path) -> list:
    return ["predict", "--plate", plate, "--platemap", plate / "platemap.csv", "--checkpoint",
            ckpt, "--out", out, "--device", "cpu", "--min-controls", "1",
            "--controls-per-context", "16"]  # fmt: skip


def _commands(base, plate: Path, out: Path) -> dict[str, list]:
    """The four commands that read pixels, on ``plate``, writing under ``out``."""
    return {
        "predict": _predict(plate, base["ckpt"], out / "predict"),
        "segment": ["segment", plate, "--nucleus-diameter", "16", "--no-texture", "--workers",
                    "1", "--out", out / "segment" / "cells.csv"],
        "train": ["train", "--plate", plate, "--platemap", plate / "platemap.csv", "--out",
                  out / "train" / "m.safetensors", "--width", "4", "--crop-size", "24",
                  "--crop-scale", "0.5", "--input-size", "20", "--epochs", "1",
                  "--max-steps-per-epoch", "1", "--treated-per-episode", "16",
                  "--controls-per-episode", "16", "--plates-per-step", "2",
                  "--nucleus-diameter", "16", "--device", "cpu"],
        "embed": ["embed", plate, "--checkpoint", base["embedder"], "--platemap",
                  plate / "platemap.csv", "--cells", base["cells"], "--device", "cpu",
                  "--out", out / "embed" / "e.csv"],
    }  # fmt: skip


# --------------------------------------------------------------------- 1. formula injection

FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "@SUM(A1)", "-2+3", "\tcmd", "\rcmd"]


def _map_with(plate: Path, names: dict[str, str], column: str = schema.TREATMENT) -> Path:
    table = pd.read_csv(plate / "platemap.csv", dtype=str)
    for well, name in names.items():
        table.loc[table[schema.WELL] == well, column] = name
    path = plate.parent / "formula_map.csv"
    table.to_csv(path, index=False, lineterminator="\r\n")  # raw, as a spreadsheet writes
    return path


def _formula_cells(path: Path) -> list[str]:
    """Text cells of a CSV file that a spreadsheet would run (not numbers)."""
    bad = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            for cell in row:
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                    try:
                        float(cell)
                    except ValueError:
                        bad.append(cell)
    return bad


def test_platemap_check_warns_and_convert_neutralises_formulas(base, tmp_path, capsys):
    plate = copy_plate(base, tmp_path)
    wells = ["A02", "A03", "A04", "A05", "A06", "A08"]
    source = _map_with(plate, dict(zip(wells, FORMULAS, strict=True)))
    status, err = cli(["platemap", "check", source], capsys)
    assert status == 0
    assert "would run as formulas in a spreadsheet" in err and "rename them" in err
    assert '\'=HYPERLINK("http://x","y")\' (Metadata_Treatment, well A02)' in err
    assert "'+1+1'" in err and "'@SUM(A1)'" in err
    out = tmp_path / "converted.csv"
    assert cli(["platemap", "convert", source, out], capsys)[0] == 0
    assert _formula_cells(out) == []
    assert "'=HYPERLINK" in out.read_text(encoding="utf-8")
    back = read_platemap(out)  # the reader of phenoadapt's own tables undoes the quote
    # (plate maps strip spaces, tabs and CRs around names: "\tcmd" is read as "cmd")
    assert {back.record(w)[schema.TREATMENT] for w in wells} == {f.strip() for f in FORMULAS}
    written = pd.read_csv(out)
    assert pd.api.types.is_float_dtype(written[schema.CONCENTRATION])  # numbers stay numbers


def test_predict_tables_neutralise_formula_names_and_round_trip(base, tmp_path, capsys):
    plate = copy_plate(base, tmp_path)
    source = _map_with(plate, {"A02": FORMULAS[0], "A03": "+1+1"})
    out = tmp_path / "out"
    argv = _predict(plate, base["ckpt"], out)
    argv[argv.index("--platemap") + 1] = source
    assert cli(argv, capsys)[0] == 0
    for name in ("cells.csv", "wells.csv"):
        assert _formula_cells(out / name) == [], name
    wells = read_table(out / "wells.csv")
    assert set(FORMULAS[:1] + ["+1+1"]) <= set(wells[schema.TREATMENT])
    assert pd.api.types.is_float_dtype(wells.select_dtypes("number").iloc[:, 0])


# ------------------------------------------------- 2./5. bad planes: skipped with well and site


def _uint8_site(array: np.ndarray, name: str):
    return (array // 256).astype(np.uint8) if name == BAD_SITE else None


def _float_plate_with(value: float):
    def change(array: np.ndarray, name: str) -> np.ndarray:
        array = array.astype(np.float32)
        if name == BAD_SITE:
            array[3, 3] = value
        return array

    return change


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_uint8_site, "holds uint8 pixels but the plate's are uint16"),
        (_float_plate_with(np.inf), "holds infinite pixel values"),
        (_float_plate_with(np.nan), "holds NaN pixel values"),
    ],
    ids=["uint8-in-uint16", "inf", "nan"],
)
def test_a_bad_plane_skips_its_site_in_every_command(base, tmp_path, capsys, change, problem):
    plate = copy_plate(base, tmp_path, change)
    for name, argv in _commands(base, plate, tmp_path / "out").items():
        status, err = cli(argv, capsys)
        assert status == 0, (name, err)
        assert "well A03, site 1, channel ER" in err and problem in err, (name, err)
        assert "skipped" in err and "re-export" in err, (name, err)
    cells = pd.read_csv(tmp_path / "out" / "predict" / "cells.csv", dtype={schema.WELL: str})
    assert "A03" not in set(cells[schema.WELL]) and len(cells) > 0


def test_an_odd_first_file_does_not_set_the_plates_pixel_type(base, tmp_path, capsys):
    first = "r01c01f01p01-ch1sk1fk1fl1.tiff"
    plate = copy_plate(
        base, tmp_path, lambda a, n: (a // 256).astype(np.uint8) if n == first else None
    )
    assert open_plate(plate).dtype == np.uint16  # most files are uint16
    status, err = cli(_commands(base, plate, tmp_path / "out")["segment"], capsys)
    assert status == 0 and "well A01, site 1, channel DNA" in err and "uint8" in err


def test_a_plate_with_no_usable_site_is_refused(base, tmp_path, capsys):
    plate = copy_plate(base, tmp_path, _float_plate_with(np.nan))
    for path in plate.glob("*-ch1*.tiff"):  # every DNA plane NaN
        array = tifffile.imread(path)
        array[0, 0] = np.nan
        tifffile.imwrite(path, array)
    status, err = cli(_commands(base, plate, tmp_path / "out")["segment"], capsys)
    assert status == EXIT_USER_ERROR and "NaN pixel values" in err
    assert "the field looks empty" not in err
    assert not (tmp_path / "out").exists()  # no empty output folder


def test_an_image_far_larger_than_the_fields_is_refused_from_its_header(base, tmp_path, capsys):
    plate = copy_plate(base, tmp_path)
    with tifffile.TiffWriter(plate / BAD_SITE) as tiff:  # 3.2 GB of pixels, never written
        tiff.write(shape=(40_000, 40_000), dtype=np.uint16)
    status, err = cli(["info", plate, "--check"], capsys)
    assert status == EXIT_USER_ERROR and "40000x40000" in err and "128x128" in err
    status, err = cli(_commands(base, plate, tmp_path / "out")["segment"], capsys)
    assert status == 0 and "40000x40000" in err and "was not read" in err


def test_truncated_tiff_found_by_info_check_and_skipped_when_read(base, tmp_path, capsys):
    plate = copy_plate(base, tmp_path)
    bad = plate / BAD_SITE
    bad.write_bytes(bad.read_bytes()[:2000])
    status, err = cli(["info", plate, "--check"], capsys)
    assert status == EXIT_USER_ERROR and BAD_SITE in err
    status, err = cli(_commands(base, plate, tmp_path / "out")["segment"], capsys)
    assert status == 0 and BAD_SITE in err and "skipped" in err


def test_a_multipage_tiff_is_not_called_rgb(base, tmp_path, capsys):
    plate = copy_plate(base, tmp_path)
    plane = tifffile.imread(plate / BAD_SITE)
    tifffile.imwrite(plate / BAD_SITE, np.stack([plane, plane, plane]), photometric="minisblack")
    status, err = cli(["info", plate, "--check"], capsys)
    # Its first page is the plane (as for any multi-page plane file); never "RGB".
    assert status in (0, EXIT_USER_ERROR) and "RGB" not in err


# --------------------------------------------------------------------- 3. symbolic link loops


def test_symbolic_link_loops_are_no_traceback(base, tmp_path, capsys):
    plate = copy_plate(base, tmp_path)
    os.symlink(plate, plate / "loop")  # the folder inside itself
    os.symlink(plate / "self.tiff", plate / "self.tiff")  # a link to itself
    status, err = cli(["info", plate, "--check"], capsys)
    assert status in (0, EXIT_USER_ERROR)


# --------------------------------------------------------------------- 4. crafted checkpoints


def _crafted(base, tmp_path: Path, name: str, edit) -> Path:
    doc = json.loads(read_checkpoint_metadata(base["ckpt"]).to_json())
    from safetensors.torch import load_file

    tensors = load_file(str(base["ckpt"]))
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path), metadata={METADATA_KEY: edit(doc)})
    return path


def _deep(doc: dict) -> str:
    return json.dumps(doc)[:-1] + ', "deep": ' + "[" * 200_000 + "]" * 200_000 + "}"


CRAFTED = {
    "deep-json": (_deep, "nested 200,001 levels deep"),
    "huge-json": (lambda d: json.dumps({**d, "pad": "x" * 1_500_000}), "more than the 1,000,000"),
    "width-200000": (
        lambda d: json.dumps({**d, "network": {**d["network"], "width": 200_000}}),
        "width 200,000 (at most 1,024)",
    ),
    "too-many-parameters": (
        lambda d: json.dumps({**d, "network": {**d["network"], "width": 640, "arch": "resnet50"}}),
        "parameters, more than the 250,000,000",
    ),
    "classes-vs-outputs": (
        lambda d: json.dumps({**d, "network": {**d["network"], "num_classes": 7}}),
        "7 outputs but names 3 classes",
    ),
    "shapes": (
        lambda d: json.dumps({**d, "network": {**d["network"], "width": 8}}),
        "do not fit its resnet10 description",
    ),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_checkpoints_are_refused_before_building(base, tmp_path, capsys, name):
    edit, message = CRAFTED[name]
    ckpt = _crafted(base, tmp_path, name, edit)
    out = tmp_path / "out"
    status, err = cli(_predict(base["plate"], ckpt, out), capsys)
    assert status == EXIT_USER_ERROR and message in err, err
    assert "checkpoint" in err or "phenoadapt train" in err
    assert not out.exists()


def test_outputs_are_never_overwritten_by_a_failed_run(base, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cells.csv").write_text("precious\n")
    ckpt = _crafted(base, tmp_path, "wide", CRAFTED["width-200000"][0])
    status, _ = cli([*_predict(base["plate"], ckpt, out), "--overwrite"], capsys)
    assert status == EXIT_USER_ERROR and (out / "cells.csv").read_text() == "precious\n"


# ---------------------------------------------------------- 6. plate-map encodings and wells


def _accented_map(base) -> str:
    text = (base["plate"] / "platemap.csv").read_text(encoding="utf-8")
    return text.replace("nocodazole", "nocodazolé")


@pytest.mark.parametrize(
    ("encoding", "bom", "warned"),
    [
        ("utf-8", b"", None),
        ("utf-8", b"\xef\xbb\xbf", None),
        ("utf-16-le", b"\xff\xfe", None),
        ("utf-16-be", b"\xfe\xff", None),
        ("cp1252", b"", "read as Windows-1252"),
    ],
)
def test_platemap_encodings_are_read(base, tmp_path, capsys, encoding, bom, warned):
    path = tmp_path / "map.csv"
    path.write_bytes(bom + _accented_map(base).encode(encoding))
    status, err = cli(["platemap", "check", path], capsys)
    assert status == 0, err
    assert read_platemap(path).record("A02")[schema.TREATMENT] == "nocodazolé"
    if warned:
        assert warned in err and "map.csv is not UTF-8" in err and "CSV UTF-8" in err
    else:
        assert "warning" not in err


def test_utf16_without_bom_names_the_encoding_not_field_counts(base, tmp_path, capsys):
    path = tmp_path / "map.csv"
    path.write_bytes(_accented_map(base).encode("utf-16-le"))
    status, err = cli(["platemap", "check", path], capsys)
    assert status == EXIT_USER_ERROR and "UTF-16" in err and "CSV UTF-8" in err
    assert "number of fields" not in err


@pytest.mark.parametrize(
    ("well", "fmt", "message"),
    [
        ("A00", None, "'A00' (line 3 of map.csv)"),
        (
            "A00",
            "96",
            "'A00' (line 3 of map.csv). Write a row letter and a column number from 1: "
            "the wells of a 96-well plate (rows A-H, columns 1-12) run from A01 to H12",
        ),
        ("Z99", None, "Z99 (line 3 of map.csv)"),
        ("Z99", "96", "lie outside a 96-well plate (rows A-H, columns 1-12): Z99 (line 3"),
        ("I01", "96", "I01 (line 3 of map.csv)"),
        ("A1x", None, "'A1x' (line 3 of map.csv)"),
    ],
)
def test_bad_wells_name_file_line_and_well(base, tmp_path, capsys, well, fmt, message):
    table = pd.read_csv(base["plate"] / "platemap.csv", dtype=str)
    table.loc[1, schema.WELL] = well  # line 3: the header is line 1
    path = tmp_path / "map.csv"
    table.to_csv(path, index=False)
    status, err = cli(["platemap", "check", path, *(["--format", fmt] if fmt else [])], capsys)
    assert status == EXIT_USER_ERROR and message in err, err
    assert "A01" in err or "columns 1-" in err  # what a valid well looks like


@pytest.mark.parametrize("command", ["predict", "segment", "train", "embed"])
def test_a_failed_run_leaves_no_output_folder(base, tmp_path, capsys, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = _commands(base, empty, tmp_path / "out")[command]
    status, err = cli(argv, capsys)
    assert status == EXIT_USER_ERROR and "holds no files" in err
    assert not (tmp_path / "out").exists()


def test_convert_failure_leaves_no_output(base, tmp_path, capsys):
    plate = copy_plate(base, tmp_path)
    (plate / BAD_SITE).write_bytes(b"II*\x00" + b"\x00" * 10)
    out = tmp_path / "out" / "p1.zarr"
    status, err = cli(["convert", plate, out], capsys)
    assert status == EXIT_USER_ERROR and BAD_SITE in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def fuzz_plate(tmp_path_factory) -> Path:
    """Two wells of five 16 x 16 planes: cheap to copy for every example."""
    folder = tmp_path_factory.mktemp("fuzz") / "p1"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for column in (1, 2):
        for channel in range(1, 6):
            plane = rng.integers(100, 4000, (16, 16), dtype=np.uint16)
            tifffile.imwrite(folder / f"r01c{column:02d}f01p01-ch{channel}sk1fk1fl1.tiff", plane)
    return folder


def _read_everything(folder: Path) -> None:
    """Open a plate and read every plane: a PhenoadaptError is a clean refusal or skip."""
    try:
        plate = open_plate(folder)
    except PhenoadaptError:
        return
    for well, site in plate.fields():
        for channel in plate.channels:
            try:
                plate.read_plane(well, site, channel)
            except PhenoadaptError:
                pass


FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    magic=st.sampled_from([b"II*\x00", b"MM\x00*", b"II+\x00"]),
    tail=st.binary(min_size=0, max_size=400),
)
def test_fuzz_tiff_headers(fuzz_plate, magic, tail):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(fuzz_plate, Path(tmp) / "p1"))
        (folder / "r01c02f01p01-ch3sk1fk1fl1.tiff").write_bytes(magic + tail)
        _read_everything(folder)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=700), which=st.integers(0, 9))
def test_fuzz_truncated_tiffs(fuzz_plate, cut, which):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(fuzz_plate, Path(tmp) / "p1"))
        victim = sorted(folder.iterdir())[which]
        victim.write_bytes(victim.read_bytes()[:cut])
        _read_everything(folder)


_NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=40,
).filter(lambda n: n not in (".", "..") and len(n.encode("utf-8")) < 200)


# Names close to the plate's own (row/column 00, other sites, planes, channels, .tif).
_PHENIX_LIKE = st.from_regex(
    r"\Ar[0-9]{2}c[0-9]{2}f[0-9]{2}p[0-9]{2}-ch[0-9]{1,2}sk1fk1fl1\.tiff?\Z"
)


@FUZZ
@given(names=st.lists(st.one_of(_NAME, _PHENIX_LIKE), min_size=1, max_size=4, unique=True))
def test_fuzz_file_names(fuzz_plate, names):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(fuzz_plate, Path(tmp) / "p1"))
        for name in names:
            (folder / name).write_bytes(b"II*\x00" + b"\x00" * 8)
        _read_everything(folder)
