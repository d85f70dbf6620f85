"""The Plate dock and the plate grid: open plates, browse fields, colour wells by results.

Run under a display (``xvfb-run -a python -m pytest``).  With
``PHENOADAPT_SCREENSHOTS=1`` the last test also writes ``docs/images/gui_plate_dock.png``
and ``docs/images/gui_platemap_dock.png`` from a full synthetic 96-well plate.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tifffile
from qtpy.QtCore import QPoint, Qt

from phenoadapt import schema
from phenoadapt.gui.colours import session_class_palette
from phenoadapt.gui.layers import META_KEY
from phenoadapt.gui.plate_dock import CONFIDENCE, PREDICTED, ROLE, PlateDock
from phenoadapt.gui.plate_grid import PlateGrid
from phenoadapt.gui.session import get_session
from phenoadapt.palette import CONTROL_COLOUR
from phenoadapt.plate import PLATE_384, PLATE_1536
from phenoadapt.plate.synthetic import SyntheticPlateConfig, generate_plate

#: Imaged wells of the small test plates: controls A01 and C03 (the synthetic control lattice).
WELLS = ("A01", "A02", "B01", "B02", "C03", "H12")
CHANNEL_COLOURS = {"DNA": "blue", "ER": "green", "RNA": "cyan", "AGP": "yellow", "Mito": "magenta"}
DOCS = Path(__file__).parents[1] / "docs" / "images"


def make_plates(root: Path) -> dict[str, Path]:
    """Two small synthetic plates (6 wells, 2 sites of 64 x 64 pixels) with plate maps."""
    config = SyntheticPlateConfig(n_wells=96, sites=2, field_shape=(64, 64), wells=WELLS)
    paths = {}
    for seed, plate_id in enumerate(("train_plate", "new_plate")):
        plate = generate_plate(root, config, seed=seed, plate_id=plate_id, workers=1)
        paths[plate_id] = plate.path
    return paths


@pytest.fixture(scope="module")
def plates(tmp_path_factory) -> dict[str, Path]:
    return make_plates(tmp_path_factory.mktemp("plates"))


@pytest.fixture
def notes(monkeypatch) -> list[tuple[str, str]]:
    """Notifications shown, as (kind, message)."""
    return capture_notifications(monkeypatch)


def capture_notifications(monkeypatch) -> list[tuple[str, str]]:
    """Record napari notifications as (kind, message) instead of showing them."""
    import napari.utils.notifications as notifications

    shown: list[tuple[str, str]] = []
    for kind in ("error", "warning", "info"):
        monkeypatch.setattr(
            notifications, f"show_{kind}", lambda message, k=kind: shown.append((k, str(message)))
        )
    return shown


def errors(notes: list[tuple[str, str]]) -> list[str]:
    return [m for k, m in notes if k == "error"]


def make_dock(make_napari_viewer) -> tuple[object, PlateDock]:
    viewer = make_napari_viewer()
    dock = PlateDock(viewer)
    viewer.window.add_dock_widget(dock, name="Plate")
    dock.grid.resize(480, 330)  # a hidden window lays nothing out: give the grid its size
    return viewer, dock


def click(grid: PlateGrid, pos: QPoint, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    from pytestqt.qtbot import QtBot

    QtBot.mouseClick(grid, Qt.MouseButton.LeftButton, modifier, pos)


def field_layers(viewer) -> list:
    return [lay for lay in viewer.layers if "channel" in lay.metadata.get(META_KEY, {})]


# --------------------------------------------------------------------- grid
@pytest.mark.gui
@pytest.mark.parametrize("fmt", [PLATE_384, PLATE_1536])
def test_grid_hit_testing_and_selection(qtbot, fmt):
    grid = PlateGrid(fmt)
    qtbot.addWidget(grid)
    grid.resize(700, 480)
    last = fmt.wells()[-1]
    for well in ("A01", "B07", last):
        assert grid.well_at(grid.well_center(well)) == well
    changes = []
    grid.selection_changed.connect(changes.append)
    clicked = []
    grid.well_clicked.connect(clicked.append)
    click(grid, grid.well_center("B07"))
    assert grid.selection() == ["B07"] and clicked == ["B07"]
    click(grid, grid.well_center("C03"), Qt.KeyboardModifier.ShiftModifier)
    assert grid.selection() == ["B07", "C03"] and clicked == ["B07"]
    click(grid, grid.well_center("C03"), Qt.KeyboardModifier.ControlModifier)  # toggles off
    assert grid.selection() == ["B07"]
    click(grid, grid.row_header_center("C"))
    assert grid.selection() == [w for w in fmt.wells() if w[0] == "C" and len(w) == 3]
    click(grid, grid.column_header_center(fmt.n_columns))
    assert len(grid.selection()) == fmt.n_rows and grid.selection()[-1] == last
    click(grid, QPoint(2, 2))  # the corner
    assert len(grid.selection()) == fmt.n_wells
    # Drag a rectangle from B02 to D04: 3 x 3 wells.
    qtbot.mousePress(grid, Qt.MouseButton.LeftButton, pos=grid.well_center("B02"))
    qtbot.mouseRelease(grid, Qt.MouseButton.LeftButton, pos=grid.well_center("D04"))
    assert grid.selection() == ["B02", "B03", "B04", "C02", "C03", "C04", "D02", "D03", "D04"]
    assert changes[-1] == grid.selection()
    grid.set_colors({"A01": "#ff0000"})
    assert grid.color_of("A01").name() == "#ff0000"
    grid.grab()  # paints every well without error


# --------------------------------------------------------------------- dock
def test_open_plate_click_wells_and_step(make_napari_viewer, qtbot, plates, notes):
    viewer, dock = make_dock(make_napari_viewer)
    session = get_session(viewer)
    dock.choose_folder = lambda: str(plates["train_plate"])
    qtbot.mouseClick(dock.open_button, Qt.MouseButton.LeftButton)
    assert errors(notes) == []
    assert list(session.plates) == ["train_plate"] and dock.plate_id == "train_plate"
    # The shipped plate map was loaded: roles colour the grid, controls first in the legend.
    assert session.platemaps["train_plate"].controls == ["A01", "C03"]
    assert dock.color_by.currentText() == ROLE
    assert dock.legend.entries[0][0] == "control (2)"
    assert dock.grid.color_of("A01") != dock.grid.color_of("A02")
    assert not dock.grid.is_imaged("D05") and dock.grid.is_imaged("H12")
    assert "Treatment: DMSO" in dock.grid.tooltip_of("A01")
    # The first field is on screen in Cell Painting colours.
    layers = field_layers(viewer)
    assert {lay.metadata[META_KEY]["channel"]: lay.colormap.name for lay in layers} == (
        CHANNEL_COLOURS
    )
    assert (session.current.plate_id, session.current.well, session.current.site) == (
        "train_plate",
        "A01",
        1,
    )
    # Clicking a well shows its first site; the layers are reused, not stacked.
    click(dock.grid, dock.grid.well_center("B02"))
    assert (session.current.well, session.current.site) == ("B02", 1)
    assert len(field_layers(viewer)) == 5
    assert all(lay.metadata[META_KEY]["well"] == "B02" for lay in field_layers(viewer))
    assert dock.grid.current == "B02"
    dock.next_site.click()
    assert session.current.site == 2 and not dock.next_site.isEnabled()
    dock.prev_site.click()
    assert session.current.site == 1
    dock.next_well.click()
    assert session.current.well == "C03"
    dock.prev_well.click()
    dock.prev_well.click()
    assert session.current.well == "B01"
    assert "well B01 (3 of 6)" in dock.where.text()
    # A well that was not imaged says so and keeps the field on screen.
    click(dock.grid, dock.grid.well_center("E05"))
    assert session.current.well == "B01" and "E05 was not imaged" in dock.where.text()
    dock.step_well(10)  # past the end: stays on the last imaged well
    assert session.current.well == "H12" and not dock.next_well.isEnabled()


def test_keyboard_shortcuts(make_napari_viewer, qtbot, plates, notes):
    viewer = make_napari_viewer(show=True)  # shortcuts need a shown, active window
    dock = PlateDock(viewer)
    viewer.window.add_dock_widget(dock, name="Plate")
    dock.open_folder(plates["train_plate"])
    viewer.window._qt_window.activateWindow()
    dock.grid.setFocus()
    qtbot.waitUntil(dock.grid.hasFocus)
    session = get_session(viewer)
    for key, where in (
        (Qt.Key.Key_N, ("A02", 1)),
        (Qt.Key.Key_S, ("A02", 2)),
        (Qt.Key.Key_P, ("A01", 1)),
    ):
        qtbot.keyClick(dock.grid, key)
        assert (session.current.well, session.current.site) == where
    qtbot.keyClick(dock.grid, Qt.Key.Key_S)
    qtbot.keyClick(dock.grid, Qt.Key.Key_S, Qt.KeyboardModifier.ShiftModifier)
    assert session.current.site == 1


def test_several_plates_close_and_dropped_layers(make_napari_viewer, qtbot, plates, notes):
    viewer, dock = make_dock(make_napari_viewer)
    session = get_session(viewer)
    dock.open_folder(plates["train_plate"])
    dock.open_folder(plates["new_plate"])
    assert [dock.plates.itemText(i) for i in range(dock.plates.count())] == [
        "train_plate",
        "new_plate",
    ]
    assert dock.plate_id == "new_plate" and session.current.plate_id == "new_plate"
    dock.select_plate("train_plate")
    assert dock.grid.current is None  # the field on screen is from the other plate
    session.show_field("train_plate", "C03", 2)  # another dock shows a field
    assert dock.plate_id == "train_plate" and dock.grid.current == "C03"
    # Closing a plate whose map has unsaved edits asks first.
    session.platemaps["train_plate"].set_role("A02", "control")
    questions = []
    dock.ask = lambda title, text: questions.append(text) or False
    assert not dock.close_plate("train_plate") and "train_plate" in session.plates
    assert "unsaved changes" in questions[0]
    edited = session.platemaps["train_plate"]
    assert dock.open_folder(plates["train_plate"]) is None  # opening it again asks too
    assert session.platemaps["train_plate"] is edited and len(questions) == 2
    dock.ask = lambda title, text: True
    assert dock.close_plate("train_plate")
    assert list(session.plates) == ["new_plate"] and dock.plate_id == "new_plate"
    dock.close_plate()
    assert dock.plate_id is None and not dock.next_well.isEnabled()
    # A plate dropped onto napari (the reader) joins the list with its field as current.
    viewer.open(str(plates["train_plate"]), plugin="phenoadapt")
    assert "train_plate" in session.plates and dock.plate_id == "train_plate"
    assert session.current.well == "A01"
    assert errors(notes) == []


def test_open_errors_and_file_pattern(make_napari_viewer, qtbot, tmp_path, notes):
    viewer, dock = make_dock(make_napari_viewer)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not images")
    dock.choose_folder = lambda: str(tmp_path / "notes")
    dock.open_dialog()
    assert "could not open" in errors(notes)[-1] and get_session(viewer).plates == {}
    # File names no layout knows: the pattern field describes them.
    folder = tmp_path / "custom"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for well in ("B03", "B04"):
        for channel in range(1, 6):
            plane = rng.integers(100, 4000, (48, 48), dtype=np.uint16)
            tifffile.imwrite(folder / f"exp7_{well}_field1_c{channel}.tif", plane)
    dock.open_folder(folder)
    assert len(errors(notes)) == 2  # the folder is not a known layout
    # The error stays in the dock, with the suggested pattern as a button (--pattern).
    assert dock.errors.shown and dock.errors.action.isVisibleTo(dock.errors)
    assert dock.errors.action.text() == "Use the suggested pattern and open"
    dock.errors.action.click()
    assert "well" in dock.pattern.text() and get_session(viewer).plates["custom"].wells == [
        "B03",
        "B04",
    ]
    assert not dock.errors.shown
    get_session(viewer).close_plate("custom")
    dock.pattern.setText(r"exp7_(?P<bad>")
    dock.open_folder(folder)
    assert "not a valid regular expression" in errors(notes)[-1]
    dock.pattern.setText(r"exp7_(?P<well>[A-H]\d\d)_field(?P<site>\d)_c(?P<channel>\d)\.tif")
    plate = dock.open_folder(folder)
    assert plate is not None and plate.wells == ["B03", "B04"] and len(errors(notes)) == 3
    assert get_session(viewer).current.well == "B03"
    dock.plate_format.setCurrentText("384-well")
    assert dock.open_folder(folder).format == PLATE_384


def test_result_colours_wells(make_napari_viewer, qtbot, plates, notes):
    viewer, dock = make_dock(make_napari_viewer)
    session = get_session(viewer)
    dock.open_folder(plates["train_plate"])
    assert not dock.color_by.model().item(3).isEnabled()  # no result yet
    predicted = ["DMSO", "tubulin_inhibitor", "DMSO", "tubulin_inhibitor", "DMSO", "HDAC_inhibitor"]
    wells = pd.DataFrame(
        {
            schema.PLATE: "train_plate",
            schema.WELL: list(WELLS),
            schema.PREDICTION: predicted,
            schema.CONFIDENCE: [0.9, 0.8, 0.7, 0.6, 0.5, 0.2],
            "n_cells": [12, 10, 9, 8, 7, 3],
        }
    )
    other = wells.assign(**{schema.PLATE: "another_plate"})
    result = SimpleNamespace(
        wells=pd.concat([wells, other], ignore_index=True),
        cells=pd.DataFrame(),
        classes=("DMSO", "HDAC_inhibitor", "tubulin_inhibitor"),
    )
    # A new result is drawn in a later event-loop turn (apart from the run's end),
    # and once, not once more for the switch to "Predicted MoA".
    redraws = []
    refresh = dock.refresh
    dock.refresh = lambda: (redraws.append(1), refresh())[1]
    session.set_result(result)
    assert dock.refresh_pending and redraws == []
    qtbot.waitUntil(lambda: not dock.refresh_pending, timeout=5_000)
    assert redraws == [1]
    dock.refresh = refresh
    assert dock.color_by.currentText() == PREDICTED
    grid = dock.grid
    assert grid.color_of("A01") == grid.color_of("B01") == grid.color_of("C03")
    assert grid.color_of("A01") != grid.color_of("A02") != grid.color_of("H12")
    # Sorted classes in the session's colours, the control last, grey and flagged.
    assert [label for label, _c in dock.legend.entries] == [
        "HDAC_inhibitor (1)",
        "tubulin_inhibitor (2)",
        "DMSO (3, control)",
    ]
    assert grid.color_of("A01").name() == CONTROL_COLOUR
    palette = session_class_palette(session)
    assert grid.color_of("H12").name() == palette["HDAC_inhibitor"]
    # Control wells of the map keep their mark in the Predicted MoA view.
    assert grid.is_control_marked("A01") and grid.is_control_marked("C03")
    assert not grid.is_control_marked("A02")
    assert "Predicted: HDAC_inhibitor (confidence 0.20, 3 cells)" in grid.tooltip_of("H12")
    # MoA (from the plate map) and predicted MoA share colours per MoA.
    predicted_dmso = grid.color_of("A01")
    dock.color_by.setCurrentText("MoA")
    assert grid.color_of("A01") == predicted_dmso
    dock.color_by.setCurrentText(CONFIDENCE)
    assert dock.legend.colorbar is not None and dock.legend.entries == []
    assert grid.color_of("A01") != grid.color_of("H12")
    assert grid.color_of("D05") is None  # not imaged, no value
    # A result without this plate leaves the plate in plate-map colours.
    session.set_result(SimpleNamespace(wells=other, cells=pd.DataFrame(), classes=()))
    qtbot.waitUntil(lambda: not dock.refresh_pending, timeout=5_000)
    assert dock.color_by.currentText() == ROLE
    session.set_result(None)
    assert dock.color_by.currentText() == ROLE and not dock.color_by.model().item(4).isEnabled()
    assert errors(notes) == []


@pytest.mark.skipif(not os.environ.get("PHENOADAPT_SCREENSHOTS"), reason="docs screenshots only")
def test_screenshots(make_napari_viewer, qtbot, tmp_path, notes):
    """The documentation screenshots: a full 96-well plate, after a (fake) run."""
    from qtpy.QtWidgets import QApplication

    from phenoadapt.gui.platemap_dock import PlateMapDock

    config = SyntheticPlateConfig(n_wells=96, sites=2, field_shape=(256, 256))
    path = generate_plate(tmp_path, config, seed=3, plate_id="lab2_batch1_plate1").path
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1500, 1000)
    dock = PlateDock(viewer)
    viewer.window.add_dock_widget(dock, name="Plate", area="right")
    dock.open_folder(path)
    dock.show_well("lab2_batch1_plate1", "B04")
    qtbot.wait(300)
    viewer.reset_view()  # once the docks took their room
    qtbot.wait(300)
    DOCS.mkdir(parents=True, exist_ok=True)
    save_screenshot(viewer, DOCS / "gui_plate_dock.png")
    viewer.window.remove_dock_widget(dock)
    editor = PlateMapDock(viewer)
    viewer.window.add_dock_widget(editor, name="Plate map and controls", area="right")
    editor.color_by.setCurrentText("Treatment")
    editor.set_role("excluded", ["H12"])  # an edit not saved yet
    editor.grid.set_selection(["H01", "H02", "H03", "H04"])
    QApplication.processEvents()
    qtbot.wait(300)
    viewer.reset_view()
    qtbot.wait(300)
    save_screenshot(viewer, DOCS / "gui_platemap_dock.png")


def save_screenshot(viewer, path: Path) -> None:
    from skimage.io import imsave

    imsave(path, viewer.screenshot(canvas_only=False, flash=False))
