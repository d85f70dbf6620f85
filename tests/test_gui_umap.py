"""The UMAP dock: maps of a run result, colours, mixing scores, selection both ways.

Run under a display (``xvfb-run -a python -m pytest``).  The run result is a
small stand-in with the attributes of ``phenoadapt.pipeline.RunResult``: two
plates whose unadapted features carry a plate offset that the adapted ones
lack.  With ``PHENOADAPT_SCREENSHOTS=1`` the first test also saves the
screenshot used in ``docs/user-guide-umap.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.gui.scatter import stratified_subsample
from phenoadapt.gui.session import get_session
from phenoadapt.gui.umap_dock import COLOUR_BY, UmapWidget

DOCS_IMAGE = Path(__file__).parents[1] / "docs" / "images" / "gui_umap_dock.png"
# The first UMAP fit compiles numba code: generous on a busy machine.
WAIT_MS = 300_000
TREATMENTS = {
    "DMSO": "control",
    "taxol": "tubulin",
    "nocodazole": "tubulin",
    "AZ138": "Eg5 inhibitor",
    "MG-132": "proteasome",
}


@dataclass
class FakeResult:
    """The attributes of a pipeline RunResult that the UMAP dock reads."""

    cells: pd.DataFrame
    wells: pd.DataFrame
    embeddings: np.ndarray | None
    embeddings_unadapted: np.ndarray | None
    classes: tuple[str, ...] = ()
    methods: dict[str, str] = field(default_factory=dict)


def fake_result(cells_per_well: int = 12, plates=("P1", "P2"), seed: int = 0) -> FakeResult:
    """Two wells per treatment per plate; a plate offset only in the unadapted features."""
    rng = np.random.default_rng(seed)
    rows, before, after = [], [], []
    centres = {t: rng.normal(scale=4, size=16) for t in TREATMENTS}
    for plate in plates:
        offset = rng.normal(scale=6, size=16)
        for t, (treatment, moa) in enumerate(TREATMENTS.items()):
            for w in range(2):
                well = f"{'ABCDEFGH'[t]}{w + 1:02d}"
                role = "control" if treatment == "DMSO" else "treated"
                for c in range(cells_per_well):
                    rows.append(
                        {
                            schema.PLATE: plate,
                            schema.WELL: well,
                            schema.SITE: 1,
                            schema.ROLE: role,
                            schema.TREATMENT: treatment,
                            schema.MOA: moa,
                            schema.CELL_ID: c + 1,
                            schema.CENTROID_Y: 10.0 + c,
                            schema.CENTROID_X: 20.0 + c,
                            schema.PREDICTION: moa if c % 4 else "proteasome",
                        }
                    )
                    signal = centres[treatment] + rng.normal(size=16)
                    after.append(signal)
                    before.append(signal + offset)
    cells = pd.DataFrame(rows)
    wells = cells.groupby([schema.PLATE, schema.WELL], sort=False).first().reset_index()
    wells[schema.PREDICTION] = wells[schema.MOA]
    return FakeResult(
        cells,
        wells,
        np.asarray(after),
        np.asarray(before),
        methods={p: "cs-arm-bn" for p in plates},
    )


@pytest.fixture
def errors(monkeypatch):
    import napari.utils.notifications as notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda message: shown.append(str(message)))
    return shown


def _dock(make_napari_viewer, qtbot, result, max_points=20_000):
    viewer = make_napari_viewer()
    session = get_session(viewer)
    dock = UmapWidget(viewer, max_points=max_points)
    viewer.window.add_dock_widget(dock, name="UMAP", area="right")
    session.set_result(result)
    assert dock.worker is None and dock.maps is None  # hidden: nothing fitted yet
    dock.compute_button.click()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    return viewer, session, dock


def test_maps_are_fitted_only_when_the_dock_is_shown(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer(show=True)
    session = get_session(viewer)
    dock = UmapWidget(viewer)
    widget = viewer.window.add_dock_widget(dock, name="UMAP", area="right")
    widget.hide()
    session.set_result(fake_result(cells_per_well=4))
    assert (
        dock.worker is None
        and dock.maps is None
        and "when this dock is shown" in (dock.status.text())
    )
    widget.show()  # the user opens the tab: the fit starts
    qtbot.waitUntil(lambda: dock.maps is not None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    # On screen, a new result is fitted at once.
    session.set_result(fake_result(cells_per_well=5))
    assert dock.worker is not None or dock.maps is not None
    qtbot.waitUntil(lambda: dock.worker is None and dock.maps is not None, timeout=WAIT_MS)
    assert errors == []


def _labels(dock, panel=0):
    """Distinct colours of the dots drawn in a panel."""
    colours = dock.canvas.panels[panel].scatter.get_facecolors()
    return {tuple(np.round(c, 3)) for c in colours}


SCREENSHOT = bool(os.environ.get("PHENOADAPT_SCREENSHOTS"))


def test_result_gives_two_maps_coloured_by_each_option(make_napari_viewer, qtbot, errors):
    result = fake_result(cells_per_well=60 if SCREENSHOT else 12)
    viewer, session, dock = _dock(make_napari_viewer, qtbot, result)
    assert errors == []
    maps = dock.maps
    assert maps is not None and set(maps.coordinates) == {"before", "after"}
    assert maps.coordinates["after"].shape == (len(result.cells), 2)
    # The session keeps each cell's coordinates for the Export dock.
    np.testing.assert_allclose(
        session.umap_cells[["umap_after_1", "umap_after_2"]].to_numpy(),
        maps.coordinates["after"][maps.point_of_cell],
    )
    assert session.umap_settings["level"] == "cell"
    assert len(dock.canvas.panels) == 2
    assert "Before adaptation" in dock.canvas.panels[0].ax.get_title()
    assert "cs-arm-bn" in dock.canvas.panels[1].ax.get_title()
    expected = {"Plate": 2, "Treatment": 5, "MoA": 4, "Role": 2, "Prediction": 4}
    for option in COLOUR_BY:
        dock.colour.setCurrentText(option)
        assert len(_labels(dock)) == expected[option], option
        legend = dock.canvas.figure.legends[0]
        assert legend.get_title().get_text() == option
        assert len(legend.get_texts()) == expected[option]
    # Only one map when asked.
    dock.show_spaces.setCurrentText("After adaptation")
    assert len(dock.canvas.panels) == 1
    dock.show_spaces.setCurrentText("Before and after")
    dock.colour.setCurrentText("Plate")

    # Mixing by plate: the plate offset is readable before adaptation, not after.
    before, after = maps.mixing["before"], maps.mixing["after"]
    assert before.n_samples == int((result.cells[schema.ROLE] == "treated").sum())
    assert before.knn_accuracy > 0.95 and after.knn_accuracy < 0.8
    assert after.lisi > before.lisi
    assert "kNN plate acc." in dock.canvas.panels[0].ax.get_title()
    assert f"{after.lisi:.2f}" in dock.mixing.text()
    assert "controls left out" in dock.mixing.text()
    assert dock.note.text() == ""  # every point drawn

    if SCREENSHOT:
        dock.colour.setCurrentText("MoA")
        rows = np.flatnonzero((result.cells[schema.TREATMENT] == "taxol").to_numpy())
        session.select_cells(rows)
        viewer.window._qt_window.resize(1500, 950)
        qtbot.wait(300)
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        dock.grab().save(str(DOCS_IMAGE))


def test_lasso_and_rectangle_select_cells(make_napari_viewer, qtbot, errors):
    result = fake_result()
    _viewer, session, dock = _dock(make_napari_viewer, qtbot, result)
    xy = dock.maps.coordinates["after"]
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    xm = (x0 + x1) / 2
    # A rectangle over the left half of the "after" map.
    picked = dock.canvas.select_rectangle(1, (x0 - 1, y0 - 1), (xm, y1 + 1))
    expected = np.flatnonzero(xy[:, 0] <= xm)
    np.testing.assert_array_equal(picked, expected)
    np.testing.assert_array_equal(session.selected_rows, expected)
    assert dock.selection.text() == f"{len(expected):,} cells selected."
    # A lasso (triangle) on the "before" map selects by that map's coordinates.
    before = dock.maps.coordinates["before"]
    bx0, by0 = before.min(axis=0) - 1
    bx1, by1 = before.max(axis=0) + 1
    triangle = [(bx0, by0), (bx1, by0), (bx0, by1)]
    dock.canvas.panels[0].lasso.onselect(triangle)
    inside = (before[:, 0] - bx0) / (bx1 - bx0) + (before[:, 1] - by0) / (by1 - by0) < 1
    np.testing.assert_array_equal(session.selected_rows, np.flatnonzero(inside))
    # The selected points are outlined on both maps.
    for panel in dock.canvas.panels:
        assert len(panel.highlight.get_offsets()) == inside.sum()
    dock.clear_button.click()
    assert len(session.selected_rows) == 0
    assert len(dock.canvas.panels[0].highlight.get_offsets()) == 0


def test_cells_selected_elsewhere_are_outlined_and_go_to_cell(
    make_napari_viewer, qtbot, errors, monkeypatch
):
    result = fake_result()
    viewer, session, dock = _dock(make_napari_viewer, qtbot, result)
    rows = np.array([5, 40, 41])
    session.select_cells(rows)  # e.g. a click on a cell of the Labels layer
    offsets = dock.canvas.panels[1].highlight.get_offsets()
    np.testing.assert_allclose(offsets, dock.maps.coordinates["after"][rows])
    # Go to cell: the field of the first selected cell, centred on it.
    shown = []
    monkeypatch.setattr(session, "show_field", lambda *key: shown.append(key))
    dock.go_to_cell()
    cell = result.cells.iloc[5]
    assert shown == [(cell[schema.PLATE], cell[schema.WELL], 1)]
    np.testing.assert_allclose(
        viewer.scene.camera.center[-2:], (cell[schema.CENTROID_Y], cell[schema.CENTROID_X])
    )
    # Without that plate open, the session's error is a notification.
    monkeypatch.undo()
    import napari.utils.notifications as notifications

    monkeypatch.setattr(notifications, "show_error", lambda message: errors.append(str(message)))
    dock.go_to_cell()
    assert errors and "No plate is open" in errors[-1]


def test_wells_level_and_too_few_points(make_napari_viewer, qtbot, errors):
    result = fake_result(cells_per_well=3, plates=("P1", "P2", "P3"))
    _viewer, session, dock = _dock(make_napari_viewer, qtbot, result)
    assert errors == []
    # 30 wells: one point per well; a well selected selects its cells.
    dock.level.setCurrentText("Wells (mean of cells)")
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    assert dock.maps.level == "well" and len(dock.maps.points) == 30
    # Per-cell coordinates at the well level: every cell of a well gets its well's point.
    per_cell = session.umap_cells["umap_after_1"].to_numpy()
    np.testing.assert_array_equal(per_cell[:3], [dock.maps.coordinates["after"][0, 0]] * 3)
    prediction = dock.maps.points[schema.PREDICTION].to_numpy()
    np.testing.assert_array_equal(prediction, dock.maps.points[schema.MOA].to_numpy())
    xy = dock.maps.coordinates["after"]
    dock.canvas.select_rectangle(1, tuple(xy[0] - 1e-6), tuple(xy[0] + 1e-6))
    np.testing.assert_array_equal(session.selected_rows, [0, 1, 2])
    assert dock.selection.text() == "3 cells selected in 1 wells."
    # Fewer wells than UMAP neighbours: the message of phenoadapt.evaluate.
    dock.neighbours.setValue(40)
    dock.compute_button.click()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    assert errors and "UMAP uses 40 neighbours but there are only 30 samples" in errors[-1]
    assert "set n_neighbors to at most 29" in dock.status.text()


def test_many_points_are_subsampled_with_a_note(make_napari_viewer, qtbot, errors):
    result = fake_result()
    n = len(result.cells)
    _viewer, session, dock = _dock(make_napari_viewer, qtbot, result, max_points=100)
    assert len(dock.canvas.panels[0].scatter.get_offsets()) == 100
    assert dock.note.text().startswith(f"Showing 100 of {n:,} cells")
    assert dock.canvas.panels[0].ax.collections[0].get_array().sum() == n  # hexbin of all
    # A selection still takes every point inside the outline, drawn or not.
    xy = dock.maps.coordinates["after"]
    lo, hi = xy.min(axis=0) - 1, xy.max(axis=0) + 1
    dock.canvas.select_rectangle(1, tuple(lo), tuple(hi))
    assert len(session.selected_rows) == n
    # A cap on the mapped cells: a sample stratified by well, the rest unreachable.
    dock.max_cells.setValue(120)
    dock.compute_button.click()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    assert len(dock.maps.points) == 120
    assert dock.maps.points.groupby([schema.PLATE, schema.WELL]).size().between(5, 7).all()
    assert f"{n - 120:,} more cells are not mapped" in dock.note.text()
    dock.canvas.select_rectangle(1, (-1e9, -1e9), (1e9, 1e9))
    assert len(session.selected_rows) == 120


def test_stratified_subsample_keeps_rare_categories():
    codes = np.r_[np.zeros(990, dtype=int), np.ones(10, dtype=int), [2]]
    kept = stratified_subsample(codes, 100, seed=1)
    assert len(kept) == 100 and np.all(np.diff(kept) > 0)
    assert set(np.unique(codes[kept])) == {0, 1, 2}
    np.testing.assert_array_equal(kept, stratified_subsample(codes, 100, seed=1))
    np.testing.assert_array_equal(stratified_subsample(codes[:50], 100), np.arange(50))


def test_result_without_embeddings_is_a_notification(make_napari_viewer, qtbot, errors):
    result = fake_result()
    result.embeddings = None
    _viewer, _session, dock = _dock(make_napari_viewer, qtbot, result)
    assert dock.maps is None
    assert errors and "holds no cell embeddings" in errors[-1]
    # Adapted features only: one map and a note saying why.
    result = fake_result()
    result.embeddings_unadapted = None
    _session.set_result(result)
    dock.compute_button.click()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    assert set(dock.maps.coordinates) == {"after"} and len(dock.canvas.panels) == 1
    assert "No 'before' map" in dock.note.text()


def test_cells_without_features_are_left_off(make_napari_viewer, qtbot, errors):
    result = fake_result()
    result.embeddings[:5] = np.nan  # cells the pipeline could not predict
    _viewer, session, dock = _dock(make_napari_viewer, qtbot, result)
    assert errors == []
    n = len(result.cells)
    assert len(dock.maps.points) == n - 5
    assert "5 cells without features" in dock.note.text()
    xy = dock.maps.coordinates["after"]
    dock.canvas.select_rectangle(1, tuple(xy.min(axis=0) - 1), tuple(xy.max(axis=0) + 1))
    np.testing.assert_array_equal(session.selected_rows, np.arange(5, n))
    session.select_cells([0, 10])
    np.testing.assert_allclose(dock.canvas.panels[1].highlight.get_offsets(), xy[[10 - 5]])


@pytest.mark.skipif(not SCREENSHOT, reason="set PHENOADAPT_SCREENSHOTS=1 to run")
def test_screenshot_of_a_real_run(make_napari_viewer, qtbot, tmp_path, errors):
    """Two tiny synthetic plates through the real pipeline, the dock beside the field."""
    from gui_run_helpers import make_tiny_plate

    from phenoadapt.pipeline import RunConfig, run_plates

    viewer = make_napari_viewer()
    session = get_session(viewer)
    plates = [
        session.open_plate(make_tiny_plate(tmp_path / f"p{i}", f"TINY{i}", seed=i)) for i in (1, 2)
    ]
    result = run_plates(plates, [session.platemap(p.plate_id) for p in plates], RunConfig())
    dock = UmapWidget(viewer)
    viewer.window.add_dock_widget(dock, name="UMAP", area="right")
    dock.colour.setCurrentText("Plate")
    session.set_result(result)
    dock.compute_button.click()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    assert errors == [] and dock.maps is not None
    mixing = dock.maps.mixing
    assert mixing["after"].knn_accuracy < mixing["before"].knn_accuracy
    # Select the cells of one treated well and go to the first one.
    cells = result.cells
    well = cells[cells[schema.ROLE] == "treated"][schema.WELL].iloc[0]
    session.select_cells(np.flatnonzero((cells[schema.WELL] == well).to_numpy()))
    dock.go_to_cell()
    viewer.window._qt_window.resize(1600, 1000)
    qtbot.wait(500)
    viewer.window._qt_window.grab().save(str(DOCS_IMAGE.with_name("gui_umap_viewer.png")))


@pytest.mark.child_process
def test_cancel_ends_the_fit_at_once(make_napari_viewer, qtbot, errors):
    import time

    viewer = make_napari_viewer()
    session = get_session(viewer)
    dock = UmapWidget(viewer)
    viewer.window.add_dock_widget(dock, name="UMAP", area="right")
    session.set_result(fake_result(cells_per_well=40))
    dock.compute_button.click()
    qtbot.wait(300)  # the fit is under way in the child process
    started = time.perf_counter()
    dock.cancel_button.click()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    assert time.perf_counter() - started < 5  # not "after the current fit"
    assert dock.maps is None and errors == [] and not dock._child.alive
    # The next fit starts a fresh child and completes, with the maps of an in-thread fit.
    dock.compute_button.click()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    assert dock.maps is not None and errors == [] and dock._child.alive
    child_xy = dock.maps.coordinates["after"]
    dock._child = None  # the same job in the worker thread
    dock.compute_button.click()
    qtbot.waitUntil(lambda: dock.worker is None, timeout=WAIT_MS)
    np.testing.assert_allclose(dock.maps.coordinates["after"], child_xy, atol=1e-4)


def test_points_shuffled_theme_followed_and_selection_stepped(make_napari_viewer, qtbot, errors):
    from matplotlib.colors import to_hex

    result = fake_result(cells_per_well=6)
    viewer, session, dock = _dock(make_napari_viewer, qtbot, result)
    panel = dock.canvas.panels[0]
    # Drawn in a seeded random order, not plate after plate.
    assert not np.array_equal(panel.shown, np.sort(panel.shown))
    np.testing.assert_array_equal(np.sort(panel.shown), np.arange(len(dock.maps.points)))
    np.testing.assert_allclose(panel.scatter.get_offsets(), panel.coordinates[panel.shown])
    # The figure follows napari's theme: dark by default, light when the viewer is.
    dark = to_hex(dock.canvas.figure.get_facecolor())
    assert dark == "#23242b" and to_hex(panel.ax.title.get_color()) == "#f0f1f2"
    viewer.theme = "light"
    assert to_hex(dock.canvas.figure.get_facecolor()) != dark
    # Step through the selected cells, wrapping around.
    shown: list[str] = []
    session.show_field = lambda plate, well, site: shown.append(well)  # no plate is open
    rows = np.array([0, 7, 20])
    session.select_cells(rows)
    for _ in range(4):
        dock.next_button.click()
    wells = result.cells[schema.WELL].iloc[rows].tolist()
    assert shown == [wells[1], wells[2], wells[0], wells[1]]
    assert "Cell 2 of 3 selected" in dock.selection.text()
    dock.prev_button.click()
    assert shown[-1] == wells[0]
    assert errors == []
