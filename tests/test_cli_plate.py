"""The ``phenoadapt info`` and ``phenoadapt convert`` commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from phenoadapt.cli import EXIT_USER_ERROR, main
from phenoadapt.plate import open_plate

PHENIX_DATA = Path(__file__).parent / "data" / "phenix_BR00143976"


def _tiny_plate(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        tifffile.imwrite(folder / name, np.full((5, 6), i, np.uint16))
    return folder


def test_info_real_phenix(capsys):
    assert main(["info", str(PHENIX_DATA), "--plate-id", "BR00143976"]) == 0
    out = capsys.readouterr().out
    assert "plate:" in out and "BR00143976" in out
    assert "layout:" in out and "phenix" in out
    assert "format:" in out and "96-well" in out
    assert "wells:" in out and "1 (C03)" in out
    assert "1 per well, 1 fields" in out
    assert "1080 x 1080" in out and "uint16" in out
    assert "4: DNA" in out and "role DNA" in out and "key 5" in out
    assert "0: brightfield" in out and "role brightfield" in out


def test_info_with_check_and_channels(capsys):
    names = "BF,ConA,Phalloidin,MitoTracker,Hoechst,SYTO14"
    assert main(["info", str(PHENIX_DATA), "--channels", names, "--check"]) == 0
    out = capsys.readouterr().out
    assert "Hoechst" in out and "SYTO14" in out and "role RNA" in out
    assert "check: 6 files read, all fit the plate" in out


def test_info_with_pattern(tmp_path, capsys):
    names = [
        f"{r}_{c}_site{s}_{ch}.tif"
        for r in (1, 2)
        for c in (3, 4)
        for s in (1, 2)
        for ch in ("DAPI", "WGA")
    ]
    folder = _tiny_plate(tmp_path / "custom", names)
    pattern = r"(?P<row>\d+)_(?P<column>\d+)_site(?P<site>\d+)_(?P<channel>\w+)\.tif"
    assert main(["info", str(folder), "--pattern", pattern]) == 0
    out = capsys.readouterr().out
    assert "pattern" in out and "4 (A03, A04, B03, B04)" in out and "2 per well, 8 fields" in out
    assert "DAPI" in out and "role DNA" in out and "WGA" in out and "role AGP" in out


def test_info_errors_exit_2_with_message(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == EXIT_USER_ERROR
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == EXIT_USER_ERROR
    assert "holds no files" in capsys.readouterr().err
    folder = _tiny_plate(tmp_path / "odd", ["scan_B03_pos1_c1.tif", "scan_B03_pos1_c2.tif"])
    (folder / "readme.txt").write_text("hello")
    assert main(["info", str(folder)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("phenoadapt: error: No plate layout recognised")
    assert "--pattern" in err and "Traceback" not in err
    assert main(["info", str(folder), "--pattern", "(?P<well>"]) == EXIT_USER_ERROR
    assert "not a valid regular expression" in capsys.readouterr().err
    assert main(["info", str(PHENIX_DATA), "--channels", "DNA,ER"]) == EXIT_USER_ERROR
    assert "2 channel names given" in capsys.readouterr().err


def test_info_check_finds_truncated_file(tmp_path, capsys):
    for path in PHENIX_DATA.glob("*.tiff"):
        shutil.copy(path, tmp_path / path.name)
    bad = tmp_path / "r03c03f03p01-ch6sk1fk1fl1.tiff"
    bad.write_bytes(bad.read_bytes()[:1000])
    assert main(["info", str(tmp_path)]) == 0  # one header read: opening works
    capsys.readouterr()
    assert main(["info", str(tmp_path), "--check"]) == EXIT_USER_ERROR
    assert "r03c03f03p01-ch6sk1fk1fl1.tiff" in capsys.readouterr().err


def test_convert_and_info_on_the_result(tmp_path, capsys):
    out = tmp_path / "BR00143976.zarr"
    assert main(["convert", str(PHENIX_DATA), str(out), "--plate-id", "BR00143976"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "1 fields" in printed and "DNA" in printed
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "ome-zarr" in info and "BR00143976" in info and "key 5" in info
    back, original = open_plate(out), open_plate(PHENIX_DATA)
    assert np.array_equal(back.read_field("C03", 3), original.read_field("C03", 3))


def test_convert_refuses_to_overwrite(tmp_path, capsys):
    folder = _tiny_plate(
        tmp_path / "ixm", [f"P1_{w}_s1_w{c}.tif" for w in ("A01", "A02") for c in (1, 2)]
    )
    out = tmp_path / "out.zarr"
    assert main(["convert", str(folder), str(out), "--wells", "a1"]) == 0
    assert open_plate(out).wells == ["A01"]
    capsys.readouterr()
    assert main(["convert", str(folder), str(out)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert open_plate(out).wells == ["A01"]  # untouched
    assert (
        main(
            [
                "convert",
                str(folder),
                str(out),
                "--overwrite",
                "--ngff-version",
                "0.4",
                "--pyramid",
                "1",
            ]
        )
        == 0
    )
    assert open_plate(out).wells == ["A01", "A02"]


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "info" in out and "convert" in out
