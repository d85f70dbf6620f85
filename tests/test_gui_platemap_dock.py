"""The Plate map and controls dock: mark controls, load and save maps without losing edits.

Run under a display (``xvfb-run -a python -m pytest``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from qtpy.QtCore import Qt
from test_gui_plate_dock import capture_notifications, click, errors, make_plates

from phenoadapt import schema
from phenoadapt.gui.plate_dock import PlateDock
from phenoadapt.gui.platemap_dock import PlateMapDock
from phenoadapt.gui.session import get_session
from phenoadapt.plate import read_platemap
from phenoadapt.schema import Role


@pytest.fixture
def notes(monkeypatch) -> list[tuple[str, str]]:
    """Notifications shown, as (kind, message)."""
    return capture_notifications(monkeypatch)


@pytest.fixture(scope="module")
def plates(tmp_path_factory) -> dict[str, Path]:
    return make_plates(tmp_path_factory.mktemp("plates"))


def make_dock(make_napari_viewer, plates, plate_id="train_plate"):
    viewer = make_napari_viewer()
    session = get_session(viewer)
    session.open_plate(plates[plate_id])
    dock = PlateMapDock(viewer)
    viewer.window.add_dock_widget(dock, name="Plate map and controls")
    dock.grid.resize(480, 330)  # a hidden window lays nothing out: give the grid its size
    return viewer, session, dock


def test_mark_controls_by_click_drag_headers_and_treatment(
    make_napari_viewer, qtbot, plates, notes
):
    viewer, session, dock = make_dock(make_napari_viewer, plates)
    platemap = session.platemaps["train_plate"]
    grid = dock.grid
    assert platemap.controls == ["A01", "C03"] and not platemap.modified
    assert dock.counts.text().startswith("2 control · 4 treated · 0 excluded")
    assert dock.warning.text() == ""
    assert dock.treatments.currentText() == "DMSO"
    # Select by click and Shift-click, then press Control.
    click(grid, grid.well_center("A02"))
    click(grid, grid.well_center("B02"), Qt.KeyboardModifier.ShiftModifier)
    assert "2 wells selected: A02, B02" in dock.selected.text()
    with qtbot.waitSignal(session.platemap_changed) as signal:
        qtbot.mouseClick(dock.role_buttons[Role.CONTROL], Qt.MouseButton.LeftButton)
    assert signal.args == ["train_plate"]
    assert platemap.controls == ["A01", "A02", "B02", "C03"] and platemap.modified
    assert grid.selection() == [] and "Unsaved changes" in dock.source.text()
    # Drag a rectangle over A01..B02, then Excluded.
    qtbot.mousePress(grid, Qt.MouseButton.LeftButton, pos=grid.well_center("A01"))
    qtbot.mouseRelease(grid, Qt.MouseButton.LeftButton, pos=grid.well_center("B02"))
    assert grid.selection() == ["A01", "A02", "B01", "B02"]
    dock.role_buttons[Role.EXCLUDED].click()
    assert platemap.excluded == ["A01", "A02", "B01", "B02"]
    # A brush marks at once: a click, then a whole row via its header.
    dock.brush.setCurrentText("mark control")
    click(grid, grid.well_center("B01"))
    assert platemap.role_of("B01") == Role.CONTROL and grid.selection() == []
    click(grid, grid.row_header_center("H"))
    assert platemap.role_of("H12") == Role.CONTROL
    # Wells the synthetic map does not list are added with the role (H01 was not imaged).
    assert platemap.role_of("H01") == Role.CONTROL
    dock.brush.setCurrentText("mark treated")
    click(grid, grid.column_header_center(3))
    assert platemap.role_of("C03") == Role.TREATED and platemap.role_of("A03") == Role.TREATED
    # No imaged control left but B01 and H12: make them treated and see the warning.
    dock.brush.setCurrentText("select wells")
    dock.set_role(Role.TREATED, ["B01", "H12"])
    assert "No imaged control wells" in dock.warning.text()
    # Every well of a treatment: DMSO wells (excluded A01 stays excluded, C03 is DMSO).
    dock.treatments.setCurrentText("DMSO")
    qtbot.mouseClick(dock.mark_button, Qt.MouseButton.LeftButton)
    assert "C03" in platemap.controls and platemap.role_of("A01") == Role.EXCLUDED
    assert dock.warning.text() == ""
    dock.only_these.setChecked(True)
    dock.mark_treatment_controls("DMSO")
    assert [w for w in platemap.controls if w in session.plates["train_plate"].sites] == ["C03"]
    assert errors(notes) == []
    # The Plate dock, coloured by role, follows the edits.
    plate_dock = PlateDock(viewer)
    before = plate_dock.grid.color_of("B02")
    dock.set_role(Role.CONTROL, ["B02"])
    assert plate_dock.grid.color_of("B02") != before
    assert plate_dock.grid.color_of("B02") == plate_dock.grid.color_of("C03")
    # Colouring by treatment keeps the roles readable as marks.
    dock.color_by.setCurrentText("Treatment")
    assert grid.is_control_marked("C03") and not grid.is_control_marked("A02")
    assert any(e[0].startswith("DMSO") for e in dock.legend.entries)


def test_save_and_load_ask_before_losing_anything(
    make_napari_viewer, qtbot, plates, notes, tmp_path
):
    viewer, session, dock = make_dock(make_napari_viewer, plates)
    questions: list[str] = []
    answer = {"value": False}

    def ask(title: str, text: str) -> bool:
        questions.append(text)
        return answer["value"]

    dock.ask = ask
    platemap = session.platemaps["train_plate"]
    platemap.set_role("B01", "control")
    session.platemap_changed.emit("train_plate")
    target = tmp_path / "edited.csv"
    dock.choose_save_file = lambda suggested: str(target)
    assert dock.suggested_path().endswith("platemap.csv")
    dock.save_dialog()
    assert questions == [] and not platemap.modified
    assert read_platemap(target).controls == ["A01", "B01", "C03"]
    assert dock.source.text() == f"Saved as {target}"
    # Saving over an existing file asks; No keeps the file as it was.
    platemap.set_role("B02", "control")
    before = target.read_text()
    assert not dock.save_map(target)
    assert "already exists" in questions[-1] and target.read_text() == before
    answer["value"] = True
    assert dock.save_map(target) and "B02" in read_platemap(target).controls
    # Loading another map over unsaved edits asks; No keeps the edits.
    other = tmp_path / "other.tsv"
    frame = pd.DataFrame(
        {
            "well": ["A01", "A02", "B01", "B02", "C03", "H12"],
            "compound": ["DMSO", "taxol", "DMSO", "taxol", "taxol", "DMSO"],
        }
    )
    frame.to_csv(other, sep="\t", index=False)
    platemap.set_role("A02", "excluded")
    answer["value"] = False
    dock.choose_open_file = lambda title: str(other)
    dock.load_dialog()
    assert "unsaved changes" in questions[-1]
    assert session.platemaps["train_plate"] is platemap
    answer["value"] = True
    dock.load_dialog()
    loaded = session.platemaps["train_plate"]
    assert loaded.controls == ["A01", "B01", "H12"] and not loaded.modified
    assert dock.treatments.currentText() == "DMSO"
    assert errors(notes) == []


def test_wrong_maps_are_notifications(make_napari_viewer, qtbot, plates, notes, tmp_path):
    viewer, session, dock = make_dock(make_napari_viewer, plates)
    before = session.platemaps["train_plate"]
    big = tmp_path / "plate384.csv"
    pd.DataFrame({"well": ["A01", "P24"], "treatment": ["DMSO", "taxol"]}).to_csv(big, index=False)
    assert not dock.load_map(big)
    assert "plate384.csv is a plate map for a 384-well plate" in errors(notes)[-1]
    assert "train_plate is a 96-well plate" in errors(notes)[-1]
    elsewhere = tmp_path / "elsewhere.csv"
    pd.DataFrame({"well": ["D05", "D06"], "treatment": ["DMSO", "taxol"]}).to_csv(
        elsewhere, index=False
    )
    assert not dock.load_map(elsewhere)
    assert "is it the map of another plate" in errors(notes)[-1]
    (tmp_path / "broken.csv").write_text("")
    assert not dock.load_map(tmp_path / "broken.csv")
    assert "empty" in errors(notes)[-1]
    assert session.platemaps["train_plate"] is before
    # A map covering only some imaged wells loads, with a warning that names the others.
    part = tmp_path / "part.csv"
    pd.DataFrame({"well": ["A01", "A02"], "treatment": ["DMSO", "taxol"]}).to_csv(part, index=False)
    assert dock.load_map(part)
    assert any(k == "warning" and "not on the map" in m for k, m in notes)
    # A JUMP map joined with its compound metadata.
    jump = tmp_path / "jump_platemap.tsv"
    meta = tmp_path / "jump_metadata.tsv"
    pd.DataFrame(
        {
            "well_position": list(session.plates["train_plate"].wells),
            "broad_sample": ["", "BRD-1", "", "BRD-2", "BRD-1", "BRD-2"],
        }
    ).to_csv(jump, sep="\t", index=False)
    pd.DataFrame(
        {
            "broad_sample": ["", "BRD-1", "BRD-2"],
            "pert_iname": ["DMSO", "taxol", "vorinostat"],
            "moa": ["", "tubulin_inhibitor", "HDAC_inhibitor"],
            "control_type": ["negcon", "", ""],
        }
    ).to_csv(meta, sep="\t", index=False)
    files = iter([str(jump), str(meta)])
    dock.choose_open_file = lambda title: next(files)
    dock.load_jump_dialog()
    loaded = session.platemaps["train_plate"]
    assert loaded.controls == ["A01", "B01"]
    assert loaded.record("B02")[schema.MOA] == "HDAC_inhibitor"
    assert dock.counts.text().startswith("2 control · 4 treated")


def _pixels_near(grid, well: str, colour: str, tolerance: int = 40) -> int:
    """Pixels of a well's cell in the painted grid close to ``colour``."""
    from qtpy.QtGui import QColor

    image = grid.grab().toImage()
    rect = grid.well_rect(well).toRect()
    target = QColor(colour)
    ratio = image.width() / max(grid.width(), 1)  # device pixels per widget pixel
    count = 0
    for x in range(rect.left(), rect.right()):
        for y in range(rect.top(), rect.bottom()):
            pixel = image.pixelColor(int(x * ratio), int(y * ratio))
            diff = abs(pixel.red() - target.red()) + abs(pixel.green() - target.green())
            count += diff + abs(pixel.blue() - target.blue()) < tolerance
    return count


def test_controls_marked_excluded_hatched_and_compound_controls_warned(
    make_napari_viewer, qtbot, plates, notes
):
    from phenoadapt.gui.plate_grid import EXCLUDED

    _viewer, session, dock = make_dock(make_napari_viewer, plates)
    platemap = session.platemaps["train_plate"]
    grid = dock.grid
    assert platemap.controls == ["A01", "C03"]
    for mode in ("Role", "Treatment", "MoA"):
        dock.color_by.setCurrentText(mode)
        assert grid.is_control_marked("A01") and grid.is_control_marked("C03"), mode
        assert not grid.is_control_marked("A02"), mode
    # An excluded imaged well: hatched in a light colour, visible on the dark theme.
    dock.color_by.setCurrentText("Role")
    dock.set_role(Role.EXCLUDED, ["B01"])
    assert grid.is_excluded_marked("B01") and not grid.is_excluded_marked("A02")
    assert _pixels_near(grid, "B01", EXCLUDED.name()) > 10
    assert _pixels_near(grid, "A02", EXCLUDED.name()) == 0
    assert [kind for kind, _m in notes if kind == "warning"] == []
    # A compound's well marked as a negative control: a warning naming it.
    dock.set_role(Role.CONTROL, ["A02"])
    warnings = [m for kind, m in notes if kind == "warning"]
    assert len(warnings) == 1 and "A02" in warnings[0] and "negative control" in warnings[0]
    treatment = platemap.record("A02")[schema.TREATMENT]
    assert treatment in warnings[0] and "press Treated to undo" in warnings[0]
    assert platemap.role_of("A02") == Role.CONTROL  # the user decides; the warning informs
    # DMSO wells are controls by name: no warning, neither by well nor by treatment.
    dock.set_role(Role.TREATED, ["C03"])
    dock.set_role(Role.CONTROL, ["C03"])
    dock.mark_treatment_controls("DMSO")
    assert len([m for kind, m in notes if kind == "warning"]) == 1
    # Every well of a compound through "Controls by treatment": warned too.
    other = platemap.record("B02")[schema.TREATMENT]
    dock.mark_treatment_controls(other)
    warnings = [m for kind, m in notes if kind == "warning"]
    assert len(warnings) == 2 and other in warnings[1]
    assert errors(notes) == []
