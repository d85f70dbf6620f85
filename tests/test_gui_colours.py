"""One class, one colour: the plate grid, the cell overlay, its legend and the UMAP agree."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from gui_run_helpers import SEGMENTATION, notices, open_in_viewer, tiny_plate, tiny_result
from test_gui_umap import WAIT_MS, fake_result

from phenoadapt import schema
from phenoadapt.gui.colours import session_class_palette, session_plate_palette
from phenoadapt.gui.plate_dock import PREDICTED, PlateDock
from phenoadapt.gui.results import LAYER_NAME, ResultsLegend, get_results_overlay
from phenoadapt.gui.session import get_session
from phenoadapt.gui.umap_dock import UmapWidget
from phenoadapt.palette import CONTROL_COLOUR, hex_to_rgba

__all__ = ["notices", "tiny_plate", "tiny_result"]  # fixtures used by the tests below

SCREENSHOT = bool(os.environ.get("PHENOADAPT_SCREENSHOTS"))
DOCS = Path(__file__).resolve().parents[1] / "docs" / "images"


def _rgb(colour: str) -> np.ndarray:
    return np.asarray(hex_to_rgba(colour)[:3])


def _point_colours(dock: UmapWidget, option: str) -> dict[str, set[tuple]]:
    """Colour option -> {category of the point: distinct RGB of its dots} in the after map."""
    dock.colour.setCurrentText(option)
    panel = dock.canvas.panels[-1]
    column = {"MoA": schema.MOA, "Prediction": schema.PREDICTION, "Plate": schema.PLATE}[option]
    names = dock.maps.points[column].astype(str).to_numpy()[panel.shown]
    faces = np.round(panel.scatter.get_facecolors()[:, :3], 4)
    found: dict[str, set[tuple]] = {}
    for name, face in zip(names, faces, strict=True):
        found.setdefault(name, set()).add(tuple(face))
    return found


def test_a_class_has_one_colour_in_grid_overlay_legend_and_umap(
    make_napari_viewer, qtbot, notices, tiny_plate, tiny_result
):
    viewer = make_napari_viewer()
    session = open_in_viewer(viewer, tiny_plate)
    plate_dock = PlateDock(viewer)
    umap = UmapWidget(viewer)
    viewer.window.add_dock_widget(umap, name="UMAP", area="right")
    overlay = get_results_overlay(viewer)
    overlay.segmentation = SEGMENTATION
    legend = ResultsLegend(session, overlay)
    session.set_result(tiny_result)
    qtbot.waitUntil(lambda: LAYER_NAME in viewer.layers, timeout=30_000)
    umap.compute_button.click()  # a hidden UMAP dock fits on demand
    qtbot.waitUntil(lambda: umap.worker is None and umap.maps is not None, timeout=WAIT_MS)
    palette = session_class_palette(session)

    # Plate grid, "Predicted MoA": each well in its class's colour.
    assert plate_dock.color_by.currentText() == PREDICTED
    wells = tiny_result.wells.set_index(schema.WELL)[schema.PREDICTION].astype(str)
    grid = {w: plate_dock.grid.color_of(w).name() for w in wells.index}
    assert grid == {w: palette.colour(c) for w, c in wells.items()}
    # Overlay: each cell outlined in its class's colour.
    layer = viewer.layers[LAYER_NAME]
    cells = tiny_result.cells.iloc[session.cells_of_field()]
    overlay_classes = set()
    for label, name in zip(
        layer.features["index"], cells[schema.PREDICTION].astype(str), strict=True
    ):
        assert np.allclose(layer.colormap.map(int(label))[:3], _rgb(palette.colour(name)))
        overlay_classes.add(name)
    # Run legend: the same swatches.
    swatches = [legend.swatches.itemAt(i).widget() for i in range(legend.swatches.count())]
    texts = [w.text() for w in swatches[1::2]]
    styles = [w.styleSheet() for w in swatches[0::2]]
    for text, style in zip(texts, styles, strict=True):
        name = text.rsplit(" (", 1)[0].removesuffix(" (control)")
        assert palette.colour(name) in style, text
    # UMAP: Prediction and MoA colour a class as the grid and the overlay do.
    predicted = _point_colours(umap, "Prediction")
    known = _point_colours(umap, "MoA")
    for name, faces in {**predicted, **known}.items():
        assert faces == {tuple(np.round(_rgb(palette.colour(name)), 4))}, name
    # At least one class is seen in all three views, so the comparison means something.
    common = set(wells) & overlay_classes & set(predicted)
    assert common, (set(wells), overlay_classes, set(predicted))
    for name in common:
        colours = {grid[w] for w, c in wells.items() if c == name}
        assert colours == {palette.colour(name)}
    # DMSO wells are grey and marked as controls.
    dmso = [w for w in session.platemaps["TINY1"].controls if w in wells.index]
    assert dmso and all(plate_dock.grid.is_control_marked(w) for w in dmso)
    if "DMSO" in known:
        assert known["DMSO"] == {tuple(np.round(_rgb(CONTROL_COLOUR), 4))}
    assert notices["error"] == []


def test_plates_keep_their_colours_between_cell_and_well_maps(make_napari_viewer, qtbot):
    # P2 has more cells than P1 but as many wells: colours by frequency used to swap
    # between the cell map and the well map.
    full = fake_result(cells_per_well=8, plates=("P2", "P1"))
    keep = ~((full.cells[schema.PLATE] == "P1") & (full.cells[schema.CELL_ID] > 5)).to_numpy()
    result = dataclasses.replace(
        full,
        cells=full.cells[keep].reset_index(drop=True),
        embeddings=full.embeddings[keep],
        embeddings_unadapted=full.embeddings_unadapted[keep],
    )
    viewer = make_napari_viewer()
    session = get_session(viewer)
    dock = UmapWidget(viewer)
    viewer.window.add_dock_widget(dock, name="UMAP", area="right")
    session.set_result(result)
    dock.compute_button.click()  # a hidden UMAP dock fits on demand
    qtbot.waitUntil(lambda: dock.worker is None and dock.maps is not None, timeout=WAIT_MS)
    plates = session_plate_palette(session)
    cells = _point_colours(dock, "Plate")
    dock.level.setCurrentText("Wells (mean of cells)")
    qtbot.waitUntil(lambda: dock.worker is None and dock.maps.level == "well", timeout=WAIT_MS)
    wells = _point_colours(dock, "Plate")
    assert cells == wells
    assert cells == {p: {tuple(np.round(_rgb(plates[p]), 4))} for p in ("P1", "P2")}


@pytest.mark.skipif(not SCREENSHOT, reason="set PHENOADAPT_SCREENSHOTS=1 to run")
def test_screenshot_outlines_and_plate_grid(
    make_napari_viewer, qtbot, notices, tiny_plate, tiny_result
):
    """The user guide's picture at 1366x768: outlines, plate grid with controls, one palette."""
    from skimage.io import imsave

    viewer = make_napari_viewer(show=True)
    session = open_in_viewer(viewer, tiny_plate)
    plate_dock = PlateDock(viewer)
    viewer.window.add_dock_widget(plate_dock, name="Plate", area="right")
    overlay = get_results_overlay(viewer)
    overlay.segmentation = SEGMENTATION
    legend = ResultsLegend(session, overlay)
    viewer.window.add_dock_widget(legend, name="Predicted MoA", area="right")
    # An excluded imaged well, to show its hatching.
    session.platemaps["TINY1"].set_role(["A08"], "excluded")
    session.set_result(tiny_result)
    qtbot.waitUntil(lambda: LAYER_NAME in viewer.layers, timeout=30_000)
    viewer.window._qt_window.resize(1366, 768)
    viewer.reset_view(margin=0.02)
    qtbot.wait(800)
    DOCS.mkdir(parents=True, exist_ok=True)
    image = viewer.screenshot(canvas_only=False, flash=False)
    assert image.shape[1] <= 1366 and image.shape[0] <= 768
    imsave(DOCS / "gui_colours_outlines.png", image)


def test_session_palette_is_cached_until_the_result_or_a_map_changes():
    from types import SimpleNamespace

    import pandas as pd

    from phenoadapt.plate.platemap import PlateMap

    platemap = PlateMap.from_records(
        [
            {"well": "A01", "treatment": "DMSO"},
            {"well": "A02", "treatment": "PBS", "moa": "vehicle"},
            {"well": "A03", "treatment": "taxol", "moa": "tubulin"},
        ],
        plate_format=96,
    )
    platemap.set_role(["A02"], "control")
    cells = pd.DataFrame({schema.MOA: ["tubulin", "aurora"], schema.PREDICTION: ["zeta", "a"]})

    class Session:  # the attributes the palettes read (weakly referenced by the cache)
        result = SimpleNamespace(classes=("a", "tubulin"), cells=cells)
        platemaps = {"P": platemap}
        plates = {"P": None}

    session = Session()
    first = session_class_palette(session)
    assert session_class_palette(session) is first
    # Sorted over every name the session knows; the map's control-only MoA is grey.
    assert list(first) == ["a", "aurora", "tubulin", "zeta", "vehicle"]
    assert first["vehicle"] == CONTROL_COLOUR and first.is_control("vehicle")
    assert first.controls == {"vehicle"}  # empty MoAs are no name
    # An edit of a map recomputes: tubulin only in control wells, but a model class stays one.
    platemap.set_role(["A03"], "control")
    edited = session_class_palette(session)
    assert edited is not first and edited["tubulin"] != CONTROL_COLOUR
    session.result = SimpleNamespace(classes=(), cells=cells)
    assert session_class_palette(session)["tubulin"] == CONTROL_COLOUR
