"""Instrument layouts, patterns suggested for unknown folders, and what the reader declines.

Each instrument layout gets a folder the test writes: 3 wells x 2 sites x 3
channels of tiny TIFFs named as the instrument names them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from phenoadapt.cli import main
from phenoadapt.plate import open_plate
from phenoadapt.plate.channels import ChannelRole
from phenoadapt.plate.readers import (
    NoLayoutError,
    UnmatchedImagesWarning,
    is_plate,
    suggest_pattern,
    write_ome_zarr,
)
from phenoadapt.plate.readers.layouts import detect_layout, match_files, user_layout
from phenoadapt.plate.readers.scan import peek_files
from phenoadapt.plate.wells import well_position

WELLS = ("B03", "B04", "C03")
SITES = (1, 2)


def write_tiffs(folder: Path, names: Iterable[str]) -> list[str]:
    """A tiny 8 x 8 TIFF for each name (pixel values differ per file)."""
    names = list(names)
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, np.full((8, 8), i + 1, np.uint16))
    return names


def _rc(well: str) -> tuple[str, int]:
    return well[0], well_position(well)[1]


def yokogawa(well: str, site: int, channel: int) -> str:
    return (
        f"AssayPlate_Greiner_#781091_{well}_T0001F{site:03d}L01A{channel:02d}Z01C{channel:02d}.tif"
    )


INCELL_WAVES = ("UV - DAPI", "Blue - FITC", "Red - Cy5")


def incell(well: str, site: int, channel: int) -> str:
    row, column = _rc(well)
    return f"{row} - {column:02d}(fld {site} wv {INCELL_WAVES[channel - 1]}).tif"


def incell_z(well: str, site: int, channel: int) -> str:
    row, column = _rc(well)
    return f"{row} - {column:02d}(fld {site} wv {INCELL_WAVES[channel - 1]} z 1).tif"


def columbus(well: str, site: int, channel: int) -> str:
    row, column = well_position(well)
    return f"{row:03d}{column:03d}-{site}-001001{channel:03d}.tif"


def operetta_harmony(well: str, site: int, channel: int) -> str:
    row, column = well_position(well)
    return f"r{row:02d}c{column:02d}f{site:02d}p01-ch{channel}sk1fk1fl1.tiff"


def nikon(well: str, site: int, channel: int) -> str:
    return f"{well}_XY{site:02d}_C{channel}.tif"


def nikon_jobs(well: str, site: int, channel: int) -> str:
    return f"Plate1_Well{well}_T001_XY{site:02d}_Z1_C{channel}.tif"


LAYOUT_CASES: dict[str, tuple[str, Callable[[str, int, int], str]]] = {
    "yokogawa": ("yokogawa", yokogawa),
    "incell": ("incell", incell),
    "incell z": ("incell", incell_z),
    "columbus": ("columbus", columbus),
    "operetta harmony": ("phenix", operetta_harmony),
    "nikon": ("nikon", nikon),
    "nikon jobs": ("nikon", nikon_jobs),
}


def instrument_folder(folder: Path, name: Callable[[str, int, int], str]) -> list[str]:
    names = [name(w, s, c) for w in WELLS for s in SITES for c in (1, 2, 3)]
    return write_tiffs(folder, names)


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_instrument_layout_opens(tmp_path, case):
    layout, name = LAYOUT_CASES[case]
    names = instrument_folder(tmp_path, name)
    (tmp_path / "notes.txt").write_text("exported by hand")
    found = detect_layout([*names, "notes.txt"])
    assert found is not None and found[0].name == layout
    assert len(found[1]) == len(names) == 18
    plate = open_plate(tmp_path)
    assert plate.layout == layout
    assert plate.wells == list(WELLS)
    assert all(plate.sites_of(w) == list(SITES) for w in WELLS)
    assert len(plate.channels) == 3
    assert plate.metadata["ignored_files"] == 1 and "unmatched_images" not in plate.metadata
    # The three channel files of site 2 of C03 are what the plate reads there.
    expected = {names.index(name("C03", 2, c)) + 1 for c in (1, 2, 3)}
    read = {int(plate.read_plane("C03", 2, ch.key).max()) for ch in plate.channels}
    assert read == expected
    assert is_plate(tmp_path)


def test_layout_examples_are_recognised():
    from phenoadapt.plate.readers.layouts import LAYOUTS

    for layout in LAYOUTS:
        found = detect_layout([layout.example])
        assert found is not None and found[0] is layout, layout.name


def test_incell_wavelength_text_names_channels_and_roles(tmp_path):
    instrument_folder(tmp_path, incell)
    plate = open_plate(tmp_path)
    assert sorted(c.name for c in plate.channels) == sorted(INCELL_WAVES)
    roles = {c.name: c.role for c in plate.channels}
    assert roles["UV - DAPI"] == ChannelRole.DNA


def test_yokogawa_keys_and_planes(tmp_path):
    names = [yokogawa(w, s, c) for w in WELLS for s in SITES for c in (1, 2)]
    names += [n.replace("Z01", "Z02") for n in names]
    write_tiffs(tmp_path, names)
    plate = open_plate(tmp_path)
    assert [c.key for c in plate.channels] == ["C1", "C2"]
    assert plate.metadata["planes"] == [1, 2]
    assert "Yokogawa" in plate.metadata["instrument"]


# -- suggested patterns ----------------------------------------------------------
SUGGEST_CASES = {
    "stain words and a counter": [
        f"B7_{s:02d}_1_3_{c}_{i:03d}.tif"
        for i, (s, c) in enumerate((s, c) for s in range(1, 6) for c in ("DAPI", "GFP", "Cy5"))
    ],
    "wells of two widths": [
        f"{w}_{s:02d}_1_3_{c}_001.tif"
        for w in ("B7", "B10", "C3")
        for s in (1, 2)
        for c in ("DAPI", "GFP", "Cy5")
    ],
    "hinted numbers": [
        f"scan_{w}_pos{s}_c{c}.tif" for w in WELLS for s in SITES for c in (1, 2, 3)
    ],
    "glued well and stain": [
        f"WellB0{c}_Channel{ch}_Seq{i:04d}.tif"
        for i, (c, ch) in enumerate((c, ch) for c in (3, 4) for ch in ("Hoechst", "MitoTracker"))
    ],
    "row and column apart": [
        f"{w[0]} - {w[1:]}(fld {s} wv {ch}).tif"
        for w in WELLS
        for s in SITES
        for ch in ("UV - DAPI", "Green - dsRed", "Red - Cy5")
    ],
}


@pytest.mark.parametrize("case", sorted(SUGGEST_CASES))
def test_suggestion_matches_every_image_file(case):
    names = SUGGEST_CASES[case]
    pattern = suggest_pattern([*names, "notes.txt", "plate.csv"])
    assert pattern is not None
    records = match_files(user_layout(pattern), names)
    assert len(records) == len(names)
    keys = {(r.well, r.site, r.channel, r.plane, r.timepoint) for r in records}
    assert len(keys) == len(names)  # every file its own image: nothing collapses


def test_suggestion_for_the_issue_folder_opens_all_of_it(tmp_path):
    names = write_tiffs(tmp_path, SUGGEST_CASES["stain words and a counter"])
    (tmp_path / "readme.txt").write_text("15 files")
    with pytest.raises(NoLayoutError) as info:
        open_plate(tmp_path)
    suggestion = info.value.suggestion
    assert suggestion == (
        r"(?P<well>[A-Za-z]{1,2}\d{1,3})_(?P<site>\d+)_1_3_(?P<channel>[A-Za-z0-9]+)_\d+\.tif"
    )
    assert suggestion in str(info.value) and "For the 15 image files here" in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnmatchedImagesWarning)  # nothing left out
        plate = open_plate(tmp_path, pattern=suggestion)
    assert plate.wells == ["B07"] and plate.sites_of("B07") == [1, 2, 3, 4, 5]
    assert sorted(c.name for c in plate.channels) == ["Cy5", "DAPI", "GFP"]
    assert plate.channel("DAPI").role == ChannelRole.DNA
    assert plate.metadata["n_files"] == len(names)


def test_single_name_and_no_well():
    assert suggest_pattern("notes.txt") is None
    assert suggest_pattern(["image.png", "table.csv"]) is None
    assert suggest_pattern(["sample_one.tif", "sample_two.tif"]) is None


def test_pattern_that_leaves_images_out_warns_with_count_and_names(tmp_path):
    write_tiffs(tmp_path, SUGGEST_CASES["stain words and a counter"])
    narrow = r"(?P<well>[A-Z]\d+)_(?P<site>\d+)_1_3_DAPI_000\.tif"
    with pytest.warns(UnmatchedImagesWarning) as caught:
        plate = open_plate(tmp_path, pattern=narrow)
    message = str(caught[0].message)
    assert message.startswith("14 of 15 image files do not match the file-name pattern")
    assert "B7_01_1_3_GFP_001.tif" in message and ", ...)" in message
    suggested = re.search(r"--pattern '([^']+)'", message).group(1)
    assert len(match_files(user_layout(suggested), plate.metadata["unmatched_examples"])) == 5
    assert plate.metadata["unmatched_images"] == 14
    assert len(plate.metadata["unmatched_examples"]) == 5


def test_cli_info_says_what_a_pattern_left_out(tmp_path, capsys):
    write_tiffs(tmp_path, SUGGEST_CASES["stain words and a counter"])
    narrow = r"(?P<well>[A-Z]\d+)_(?P<site>\d+)_1_3_(?P<channel>DAPI|GFP)_\d+\.tif"
    assert main(["info", str(tmp_path), "--pattern", narrow]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"images not matched:\s+5", out)
    assert "B7_01_1_3_Cy5_002.tif" in out
    assert err.startswith("phenoadapt: warning: 5 of 15 image files")


def test_builtin_layout_records_other_images_without_warning(tmp_path):
    names = write_tiffs(tmp_path, [nikon(w, s, c) for w in WELLS for s in SITES for c in (1, 2)])
    write_tiffs(tmp_path, ["outlines/B03_nuclei.png", "B03_XY01_C1_thumb.tif"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnmatchedImagesWarning)
        plate = open_plate(tmp_path)
    assert plate.metadata["n_files"] == len(names)
    assert plate.metadata["unmatched_images"] == 1  # the png; thumbnails are not counted
    assert plate.metadata["unmatched_examples"] == ["outlines/B03_nuclei.png"]


# -- what the napari reader takes ------------------------------------------------
def test_is_plate_declines_unrelated_files_and_folders(tmp_path):
    lone = tmp_path / "lone"
    write_tiffs(lone, ["image.tif"])
    (lone / "notes.txt").write_text("not a plate")
    assert not is_plate(lone)
    assert not is_plate(lone / "image.tif")
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,2\n")
    assert not is_plate(png) and not is_plate(csv)
    assert not is_plate(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_plate(empty)


def test_is_plate_accepts_layouts_in_subfolders_and_ome_zarr(tmp_path):
    phenix = tmp_path / "Measurement 1"
    write_tiffs(phenix, [f"Images/{operetta_harmony('B03', s, c)}" for s in SITES for c in (1, 2)])
    assert is_plate(phenix)
    zarr_plate = write_ome_zarr(open_plate(phenix), tmp_path / "plate.zarr")
    assert is_plate(zarr_plate)
    assert not is_plate(zarr_plate / "B")  # a row group of the plate is not a plate


def test_peek_files_is_bounded(tmp_path):
    write_tiffs(tmp_path, [f"x{i:03d}.tif" for i in range(50)])
    deep = tmp_path / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    (deep / "B03_XY01_C1.tif").write_bytes(b"")
    assert len(peek_files(tmp_path, max_entries=10)) <= 10
    assert not any(p.endswith("B03_XY01_C1.tif") for p in peek_files(tmp_path, max_depth=3))
    assert len(peek_files(tmp_path)) == 50  # the file five levels down is not looked at


# -- the Plate dock fills in the suggestion ----------------------------------------
@pytest.mark.gui
def test_plate_dock_offers_the_suggested_pattern(make_napari_viewer, tmp_path, monkeypatch):
    import phenoadapt.gui.plate_dock as plate_dock

    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(plate_dock, "notify", lambda kind, text: shown.append((kind, text)))
    write_tiffs(tmp_path, SUGGEST_CASES["wells of two widths"])
    dock = plate_dock.PlateDock(make_napari_viewer())
    assert dock.open_folder(tmp_path) is None
    assert shown[-1][0] == "error" and "No plate layout recognised" in shown[-1][1]
    # The error stays in the dock with a button that applies the suggested pattern.
    assert dock.errors.shown and dock.errors.action.text() == "Use the suggested pattern and open"
    dock.errors.action.click()
    assert dock.pattern.text() == suggest_pattern(SUGGEST_CASES["wells of two widths"])
    assert not dock.errors.shown
    plate = dock.session.plates[next(iter(dock.session.plates))]
    assert plate.wells == ["B07", "B10", "C03"]
    assert len(plate.channels) == 3 and plate.n_fields == 6
