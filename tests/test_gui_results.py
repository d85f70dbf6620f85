"""The results overlay: predicted-MoA labels of the field on screen, hover, selection, legend."""

from __future__ import annotations

import numpy as np
import pandas as pd
from gui_run_helpers import SEGMENTATION, notices, open_in_viewer, tiny_plate, tiny_result
from qtpy.QtCore import QTimer

from phenoadapt import schema
from phenoadapt.gui.colours import session_class_palette
from phenoadapt.gui.results import (
    CONTOUR,
    FILL_NAME,
    FILL_OPACITY,
    LAYER_NAME,
    SELECTION_NAME,
    STANDBY_NAME,
    ResultsLegend,
    accuracy_summary,
    get_results_overlay,
)
from phenoadapt.palette import CONTROL_COLOUR, class_colours, hex_to_rgba

__all__ = ["notices", "tiny_plate", "tiny_result"]  # fixtures used by the tests below


def test_class_colours_and_accuracy_from_cells():
    colours = class_colours(("actin", "DMSO", "tubulin"))
    assert colours["DMSO"] == CONTROL_COLOUR and len(set(colours.values())) == 3

    class Result:
        classes = ("a", "b")
        accuracy = None
        cells = pd.DataFrame(
            {
                schema.PLATE: ["P1"] * 4 + ["P2"] * 2,
                schema.MOA: ["a", "b", "b", "DMSO", "a", "x"],
                schema.ROLE: ["treated"] * 3 + ["control", "treated", "treated"],
                schema.PREDICTION: ["a", "a", "b", "a", "b", "a"],
            }
        )

    table = accuracy_summary(Result())
    assert table[schema.PLATE].tolist() == ["P1", "P2"]
    assert table["n_cells"].tolist() == [3, 1]  # controls and unknown MoAs are not scored
    assert np.allclose(table["cell_accuracy"], [2 / 3, 0.0])


def test_overlay_follows_result_field_and_selection(
    make_napari_viewer, qtbot, notices, tiny_plate, tiny_result
):
    viewer = make_napari_viewer()
    session = open_in_viewer(viewer, tiny_plate)
    overlay = get_results_overlay(viewer)
    assert get_results_overlay(viewer) is overlay
    legend = ResultsLegend(session)
    overlay.segmentation = SEGMENTATION
    session.set_result(tiny_result)
    qtbot.waitUntil(lambda: LAYER_NAME in viewer.layers, timeout=30_000)
    layer = viewer.layers[LAYER_NAME]
    rows = session.cells_of_field()
    assert len(layer.features) == len(rows) > 0
    assert set(layer.features["well"]) == {session.current.well}
    assert legend.isVisibleTo(None) or legend.title.text().startswith("<b>Predicted MoA")
    assert f"{len(rows)} cells in well {session.current.well}" in legend.title.text()
    # Each cell's label sits at its centroid; hovering it shows its prediction.
    cells = tiny_result.cells.iloc[rows]
    inside = 0
    for (_, cell), label in zip(cells.iterrows(), layer.features["index"], strict=True):
        y, x = int(round(cell[schema.CENTROID_Y])), int(round(cell[schema.CENTROID_X]))
        inside += layer.data[y, x] == label
    assert inside >= 0.9 * len(cells)
    row = int(np.flatnonzero(
        [layer.data[int(round(c[schema.CENTROID_Y])), int(round(c[schema.CENTROID_X]))] > 0
         for _, c in cells.iterrows()]
    )[0])  # fmt: skip
    centre = (cells.iloc[row][schema.CENTROID_Y], cells.iloc[row][schema.CENTROID_X])
    status = layer.get_status(centre, world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    assert "class" in text and "confidence" in text
    assert "row" not in text  # positions in the result table mean nothing to the user
    # Outlines in the class colour, the session's colour of that class in every dock.
    assert layer.contour == CONTOUR and layer.opacity == 1.0
    palette = session_class_palette(session)
    label = int(layer.features["index"].iloc[0])
    predicted = str(cells.iloc[0][schema.PREDICTION])
    shown = layer.colormap.map(label)[:3]
    assert np.allclose(shown, hex_to_rgba(palette.colour(predicted))[:3])
    # Read-only: no painting mode can be chosen, even after napari resets it.
    assert not layer.editable
    layer.mode = "paint"
    assert layer.mode == "pan_zoom"
    before = layer.data.copy()
    layer.editable = True  # what napari does on some updates
    assert not layer.editable
    assert np.array_equal(layer.data, before)
    # A click selects the cell; Shift-click adds; the selection is outlined.
    overlay.select_at(centre)
    assert session.selected_rows.tolist() == [int(rows[row])]
    outline = viewer.layers[SELECTION_NAME]
    label = layer.data[int(round(centre[0])), int(round(centre[1]))]
    assert set(np.unique(outline.data)) == {0, label}
    other = (cells.iloc[row + 1][schema.CENTROID_Y], cells.iloc[row + 1][schema.CENTROID_X])
    overlay.select_at(other, add=True)
    assert len(session.selected_rows) == 2
    # Cells selected elsewhere (another field): no outline here.
    elsewhere = np.setdiff1d(np.arange(len(tiny_result.cells)), rows)[:3]
    session.select_cells(elsewhere)
    assert SELECTION_NAME not in viewer.layers
    # Another field: the overlay follows.
    well = next(w for w in tiny_result.cells[schema.WELL].unique() if w != session.current.well)
    session.show_field("TINY1", well)
    qtbot.waitUntil(
        lambda: set(viewer.layers[LAYER_NAME].features["well"]) == {well}, timeout=30_000
    )
    # The fill toggle: a low-opacity read-only fill under the outlines, and back.
    legend_with_toggle = ResultsLegend(session, overlay)
    legend_with_toggle.fill.setChecked(True)
    fill = viewer.layers[FILL_NAME]
    assert fill.opacity == FILL_OPACITY and fill.contour == 0 and not fill.editable
    assert viewer.layers.index(fill) < viewer.layers.index(viewer.layers[LAYER_NAME])
    assert np.array_equal(fill.data, viewer.layers[LAYER_NAME].data)
    legend_with_toggle.fill.setChecked(False)
    assert FILL_NAME not in viewer.layers
    # No result: no overlay.
    session.set_result(None)
    assert LAYER_NAME not in viewer.layers and not legend.isVisibleTo(legend.parentWidget())
    assert notices["error"] == []


def test_overlay_layer_is_built_ahead_and_reused(
    make_napari_viewer, qtbot, notices, tiny_plate, tiny_result
):
    """The outline layer exists (empty, hidden) before the first result, which only fills it.

    Adding a Labels layer froze the viewer 0.2-0.9 s when the first result arrived
    (docs/gui-responsiveness.md); a result must reuse the layer built ahead.
    """
    viewer = make_napari_viewer(show=True)  # shown: the canvas draws
    session = open_in_viewer(viewer, tiny_plate)
    channel = viewer.layers[0]
    viewer.layers.selection.active = channel
    actives: list[str] = []  # names of the active layers, in turn
    viewer.layers.selection.events.active.connect(
        lambda event: actives.append(getattr(event.value, "name", None))
    )
    overlay = get_results_overlay(viewer)
    overlay.segmentation = SEGMENTATION
    qtbot.waitUntil(lambda: STANDBY_NAME in viewer.layers, timeout=60_000)
    standby = viewer.layers[STANDBY_NAME]
    assert LAYER_NAME not in viewer.layers
    assert not standby.visible and not standby.data.any() and not standby.editable
    assert standby.data.shape == channel.data.shape
    assert viewer.layers.index(standby) == len(viewer.layers) - 1  # over the stains
    # Its layer controls were shown once (made active for a turn), then the user's
    # layer is active again.
    qtbot.waitUntil(lambda: overlay.controls_warmed, timeout=10_000)
    qtbot.waitUntil(lambda: viewer.layers.selection.active is channel, timeout=10_000)
    assert set(viewer.layers.selection) == {channel}
    # (napari emits each change twice, through None): built, warmed, given back.
    turns = [n for i, n in enumerate(actives) if n is not None and actives[i - 1] != n]
    assert turns == [STANDBY_NAME, channel.name] * 2, actives
    added = []
    viewer.layers.events.inserted.connect(lambda event: added.append(event.value.name))
    # The first result is shown in steps, the viewer free between them (a timer fires)
    # and repainting after the layer is shown: filled hidden, then shown, then made
    # active (each step cost 40-65 ms of main-thread CPU with the repaint after it).
    steps: list[str] = []
    standby.events.visible.connect(lambda event: steps.append("shown"))
    standby.events.data.connect(lambda event: steps.append("filled"))
    viewer.layers.selection.events.active.connect(lambda event: steps.append("active"))
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    canvas.events.draw.connect(lambda event: steps.append("draw"))
    ticks = QTimer()
    ticks.setInterval(1)
    ticks.timeout.connect(lambda: steps.append("tick"))
    ticks.start()
    session.set_result(tiny_result)
    qtbot.waitUntil(lambda: LAYER_NAME in viewer.layers, timeout=30_000)
    layer = viewer.layers[LAYER_NAME]
    assert layer is standby and added == [] and STANDBY_NAME not in viewer.layers
    qtbot.waitUntil(lambda: viewer.layers.selection.active is layer, timeout=10_000)
    ticks.stop()
    assert layer.visible and layer.data.any()
    filled, shown, active = (steps.index(step) for step in ("filled", "shown", "active"))
    assert filled < shown < active, steps
    assert "tick" in steps[filled:shown] and "tick" in steps[shown:active], steps
    assert "draw" in steps[shown:active], steps
    assert {"class", "confidence"} <= set(layer.features.columns)
    labels = layer.features["index"].to_numpy()
    assert set(np.unique(layer.data)) - {0} <= set(labels)
    # Hover still names the class and confidence of the cell under the cursor.
    y, x = np.argwhere(layer.data == labels[0])[0]
    status = layer.get_status((y, x), world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    assert "class" in text and "confidence" in text
    # No result: back to standby (same layer, hidden, empty), then reused again.
    session.set_result(None)
    assert LAYER_NAME not in viewer.layers and viewer.layers[STANDBY_NAME] is layer
    assert not layer.visible and not layer.data.any() and not len(layer.features)
    assert overlay.cell_rows_at((y, x)).size == 0
    session.set_result(tiny_result)
    qtbot.waitUntil(lambda: LAYER_NAME in viewer.layers, timeout=30_000)
    assert viewer.layers[LAYER_NAME] is layer and added == []
    assert notices["error"] == []


def test_legend_draws_a_new_result_in_a_later_turn(
    make_napari_viewer, qtbot, notices, tiny_plate, tiny_result
):
    """The legend's swatches are built after the result's own turn, once for result and field.

    Building them lays the dock out; in the result's turn that added to the run's end
    in one freeze (docs/gui-responsiveness.md).  No result hides it at once.
    """
    viewer = make_napari_viewer()
    session = open_in_viewer(viewer, tiny_plate)
    legend = ResultsLegend(session)
    refreshes = []
    legend.refresh = lambda real=legend.refresh: (refreshes.append(1), real())[1]
    session.set_result(tiny_result)
    assert legend.refresh_pending and refreshes == [] and legend.title.text() == ""
    well = next(w for w in tiny_result.cells[schema.WELL].unique() if w != session.current.well)
    session.show_field("TINY1", well)  # a second change in the same turn: one redraw
    qtbot.waitUntil(lambda: not legend.refresh_pending, timeout=5_000)
    assert refreshes == [1]
    assert f"cells in well {well}" in legend.title.text() and legend.swatches.count() > 0
    session.set_result(None)
    assert not legend.isVisibleTo(legend.parentWidget()) and not legend.refresh_pending
    assert notices["error"] == []


def test_accuracy_summary_never_scores_an_excluded_well():
    """The GUI used to drop only controls: an excluded well lowered its accuracy."""
    from phenoadapt.evaluate import accuracy_table

    class Result:
        classes = ("a", "b")
        accuracy = None
        cells = pd.DataFrame(
            {
                schema.PLATE: ["P1"] * 3,
                schema.MOA: ["a", "b", "a"],
                schema.ROLE: ["treated", "treated", "excluded"],
                schema.PREDICTION: ["a", "b", "b"],
            }
        )

    table = accuracy_summary(Result())
    assert table["n_cells"].tolist() == [2] and table["cell_accuracy"].tolist() == [1.0]
    same = accuracy_table(Result.cells, None, Result.classes)
    assert table["cell_accuracy"].tolist() == same["cell_accuracy"].tolist()


def test_overlay_tries_a_failing_field_once(
    make_napari_viewer, qtbot, notices, tiny_plate, tiny_result, monkeypatch
):
    """A field whose outlines cannot be computed is reported once, not retried forever."""
    import phenoadapt.gui.results as results

    calls = []

    def failing(plate, key, params):
        calls.append(key)
        raise RuntimeError("unreadable field")

    monkeypatch.setattr(results, "_segment", failing)
    viewer = make_napari_viewer()
    session = open_in_viewer(viewer, tiny_plate)
    overlay = get_results_overlay(viewer)
    overlay.segmentation = SEGMENTATION
    session.set_result(tiny_result)
    qtbot.waitUntil(lambda: overlay.worker is None and bool(calls), timeout=30_000)
    qtbot.wait(300)  # a retry would start from the finished signal
    assert len(calls) == 1 and overlay.worker is None
    assert any("unreadable field" in message for message in notices["error"])
    assert LAYER_NAME not in viewer.layers
