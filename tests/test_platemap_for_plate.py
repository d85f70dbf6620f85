"""One plate-map policy for GUI, CLI and API: given map > map shipped with the plate > none."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pipeline_fixtures import make_plate

from phenoadapt import schema
from phenoadapt.cli import main
from phenoadapt.errors import PhenoadaptError, PlateMapError
from phenoadapt.plate import open_plate
from phenoadapt.plate.platemap import platemap_for_plate, read_platemap, shipped_platemap


class Captured(PhenoadaptError):
    """Raised by the stand-in jobs once they have seen the plate map a command chose."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny synthetic plate whose folder ships platemap.csv (plate id 'tiny1')."""
    plate, _, folder = make_plate(tmp_path_factory.mktemp("shipped") / "tiny1")
    return plate, folder


@pytest.fixture
def other_map(tmp_path) -> Path:
    """A map of the same wells with other treatments, given explicitly."""
    path = tmp_path / "other.csv"
    wells = [f"A{c:02d}" for c in range(1, 9)]
    pd.DataFrame(
        {"well": wells, "treatment": ["DMSO"] + ["drug"] * 7, "moa": [None] + ["x"] * 7}
    ).to_csv(path, index=False)
    return path


def test_api_finds_the_shipped_map_and_an_explicit_one_wins(tiny, other_map) -> None:
    plate, folder = tiny
    assert shipped_platemap(plate) == folder / "platemap.csv"
    shipped, notes = platemap_for_plate(plate)
    assert shipped.source == folder / "platemap.csv" and notes == []
    assert shipped.plate_id == "tiny1" and len(shipped.controls) == 2
    given, _ = platemap_for_plate(plate, other_map)
    assert given.source == other_map and given.controls == ["A01"]
    # A PlateMap object given explicitly wins too.
    assert platemap_for_plate(plate, given)[0] is given


def test_gui_load_plate_uses_the_same_policy(tiny) -> None:
    pytest.importorskip("qtpy")
    from phenoadapt.gui.session import load_plate

    plate, folder = tiny
    _, gui_map, warnings = load_plate(folder)
    api_map, _ = platemap_for_plate(plate)
    assert gui_map == api_map and gui_map.source == api_map.source and warnings == []


def test_a_map_of_another_plate_is_refused_clearly(tiny, tmp_path) -> None:
    plate, _ = tiny
    path = tmp_path / "map.csv"
    frame = read_platemap(plate.path / "platemap.csv").to_frame()
    frame[schema.PLATE] = "other_plate"
    frame.to_csv(path, index=False)
    with pytest.raises(
        PlateMapError, match="no rows for plate 'tiny1'.*map of plate 'other_plate'"
    ):
        platemap_for_plate(plate, path)


def test_a_shipped_map_of_another_plate_is_not_used_and_said(tiny, tmp_path) -> None:
    _, folder = tiny
    copy = tmp_path / "renamed"
    copy.mkdir()
    for item in folder.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    plate = open_plate(copy, plate_id="renamed")  # the shipped map still says tiny1
    platemap, notes = platemap_for_plate(plate)
    assert platemap is None
    assert len(notes) == 1 and "was not used" in notes[0] and "'tiny1'" in notes[0]


def _capture(monkeypatch, module: str, name: str, argument: int | str) -> list:
    """Replace a command's job by one that records the plate map(s) it was given."""
    seen: list = []

    def job(*args, **kwargs):
        seen.append(kwargs[argument] if isinstance(argument, str) else args[argument])
        raise Captured("captured")

    monkeypatch.setattr(f"{module}.{name}", job)
    return seen


@pytest.mark.parametrize("command", ["predict", "segment", "embed"])
def test_cli_commands_find_the_shipped_map_and_prefer_an_explicit_one(
    command, tiny, other_map, tmp_path, monkeypatch, capsys
) -> None:
    plate, folder = tiny
    if command == "predict":
        seen = _capture(monkeypatch, "phenoadapt.pipeline", "run_plates", 1)
        argv = ["predict", "--plate", str(folder), "--checkpoint", "x.safetensors"]
        argv += ["--out", str(tmp_path / "out")]
        pick = lambda maps: maps[0]  # noqa: E731  (one map per plate)
    elif command == "segment":
        seen = _capture(monkeypatch, "phenoadapt.cli.cells", "segment_plate", "platemap")
        argv = ["segment", str(folder), "--nucleus-diameter", "16", "--out"]
        argv += [str(tmp_path / "cells.csv")]
        pick = lambda m: m  # noqa: E731
    else:
        monkeypatch.setattr("phenoadapt.cli.embed.load_embedder", lambda *a, **k: None)
        seen = _capture(monkeypatch, "phenoadapt.cli.embed", "embed_plate", 2)
        argv = ["embed", str(folder), "--checkpoint", "x.safetensors", "--out"]
        argv += [str(tmp_path / "e.csv")]
        pick = lambda m: m  # noqa: E731
    assert main(argv) == 2 and "captured" in capsys.readouterr().err
    assert pick(seen[-1]).source == folder / "platemap.csv"  # found as the GUI finds it
    assert main([*argv, "--platemap", str(other_map)]) == 2
    assert pick(seen[-1]).source == other_map  # an explicit map wins


def test_cli_says_a_map_of_another_plate_is_wrong(tiny, tmp_path, capsys) -> None:
    _, folder = tiny
    path = tmp_path / "map.csv"
    pd.DataFrame({schema.PLATE: ["P9"], "well": ["A01"], "treatment": ["DMSO"]}).to_csv(
        path, index=False
    )
    argv = ["segment", str(folder), "--platemap", str(path), "--out", str(tmp_path / "c.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no rows for plate 'tiny1'" in err and "'P9'" in err and "Traceback" not in err


def test_reader_warnings_become_notes_for_gui_and_cli(tiny, tmp_path, recwarn) -> None:
    # A map saved by a spreadsheet as Windows-1252: read, and said once, as a note.
    plate, folder = tiny
    text = (folder / "platemap.csv").read_text(encoding="utf-8").replace("DMSO", "DMSÖ")
    path = tmp_path / "legacy.csv"
    path.write_bytes(text.encode("cp1252"))
    platemap, notes = platemap_for_plate(open_plate(folder), path)
    assert platemap is not None
    assert any("Windows-1252" in note for note in notes)
    assert not [w for w in recwarn if "Windows-1252" in str(w.message)]  # not said twice
