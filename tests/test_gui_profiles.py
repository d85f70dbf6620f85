"""The UMAP dock's "Profiles: measurements" source and the Export dock's profiles.csv.

Run under a display (``xvfb-run -a python -m pytest``).  The cells are what the
Segment dock leaves in the viewer (one ``cells`` Labels layer per field, added by
:func:`phenoadapt.gui.segmentation.add_field_layers`), for two plates whose
measurements differ by a plate-wide scale and offset that normalization to each
plate's controls removes.  With ``PHENOADAPT_SCREENSHOTS=1`` the first test also
saves the screenshot used in ``docs/own-plate.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.gui.export_dock import ExportWidget
from phenoadapt.gui.profile_maps import PROFILES_SOURCE
from phenoadapt.gui.segmentation import FieldDone, add_field_layers
from phenoadapt.gui.session import get_session
from phenoadapt.gui.umap_dock import UmapWidget
from phenoadapt.plate.platemap import PlateMap

DOCS_IMAGE = Path(__file__).parents[1] / "docs" / "images" / "own_plate_5_profiles.png"
SCREENSHOT = bool(os.environ.get("PHENOADAPT_SCREENSHOTS"))
WAIT_MS = 300_000  # the first UMAP fit compiles numba code
TREATMENTS = {"A": ("DMSO", None), "B": ("taxol", "tubulin"), "C": ("MG-132", "proteasome")}
FEATURES = [f"Cells_Intensity_Feature{i}_DNA" for i in range(8)]


def add_segmented_fields(viewer, plates=("P1", "P2"), seed=0) -> None:
    """Four wells per treatment per plate, 10 cells each, as the Segment dock adds them."""
    rng = np.random.default_rng(seed)
    centres = {row: rng.normal(scale=3, size=len(FEATURES)) for row in TREATMENTS}
    centres["A"] = np.zeros(len(FEATURES))
    for p, plate in enumerate(plates):
        for row in TREATMENTS:
            for column in range(1, 5):
                values = centres[row] + rng.normal(size=(10, len(FEATURES)))
                values = (1 + p) * values + 8 * p  # the plate effect
                table = pd.DataFrame(values, columns=FEATURES)
                table.insert(0, schema.PLATE, plate)
                table.insert(1, schema.WELL, f"{row}{column:02d}")
                table.insert(2, schema.SITE, 1)
                table.insert(3, schema.CELL_ID, np.arange(1, 11))
                table.insert(4, schema.ROLE, None)
                labels = np.zeros((8, 8), dtype=np.int32)
                add_field_layers(
                    viewer,
                    FieldDone(f"/plates/{plate}", plate, f"{row}{column:02d}", 1, labels, labels,
                              table),
                )  # fmt: skip


def platemap() -> PlateMap:
    records = []
    for row, (treatment, moa) in TREATMENTS.items():
        for column in range(1, 5):
            records.append({"well": f"{row}{column:02d}", "treatment": treatment, "moa": moa})
    return PlateMap.from_records(records, plate_format=96)


@pytest.fixture
def errors(monkeypatch):
    import napari.utils.notifications as notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda message: shown.append(str(message)))
    return shown


def _profiles_dock(make_napari_viewer, qtbot, maps=True):
    viewer = make_napari_viewer()
    session = get_session(viewer)
    add_segmented_fields(viewer)
    if maps:
        for plate in ("P1", "P2"):
            session.set_platemap(plate, platemap())
    dock = UmapWidget(viewer)
    viewer.window.add_dock_widget(dock, name="UMAP", area="right")
    sources = [dock.source.itemText(i) for i in range(dock.source.count())]
    assert sources == ["Model embeddings", PROFILES_SOURCE]
    dock.source.setCurrentText(PROFILES_SOURCE)
    qtbot.waitUntil(lambda: dock.worker is None and dock.maps is not None, timeout=WAIT_MS)
    return viewer, session, dock


def test_dock_draws_profiles_before_and_after_normalization(make_napari_viewer, qtbot, errors):
    _viewer, session, dock = _profiles_dock(make_napari_viewer, qtbot)
    assert errors == []
    maps = dock.maps
    assert not dock.level.isEnabled() and not dock.max_cells.isEnabled()  # always wells
    assert set(maps.coordinates) == {"before", "after"}
    assert maps.coordinates["after"].shape == (24, 2)  # one point per well
    titles = [panel.ax.get_title() for panel in dock.canvas.panels]
    assert len(titles) == 2
    assert titles[0].startswith("Before normalization") and titles[1].startswith("After")
    for option, expected in (("Plate", 2), ("Treatment", 3), ("Role", 2)):
        dock.colour.setCurrentText(option)
        colours = dock.canvas.panels[0].scatter.get_facecolors()
        assert len({tuple(np.round(c, 3)) for c in colours}) == expected, option
    assert "normalization robust-zscore" in dock.note.text() and "kept" in dock.note.text()
    # The plate effect is what the raw wells show first, and what normalization removes.
    before, after = maps.mixing["before"], maps.mixing["after"]
    # (kNN stays high on 16 treated wells: each plate's MAD from 4 control wells is noisy.)
    assert before.knn_accuracy > 0.9 and before.silhouette > 0.5
    assert after.silhouette < before.silhouette - 0.1 and after.lisi > before.lisi
    # A selection on well profiles picks no cell (they belong to no run result).
    dock._on_select(0, np.arange(5))
    assert len(session.selected_rows) == 0
    if SCREENSHOT:
        dock.colour.setCurrentText("Plate")
        _viewer.window._qt_window.resize(1500, 950)
        qtbot.wait(300)
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        dock.grab().save(str(DOCS_IMAGE))


def test_without_control_wells_only_the_raw_map_and_the_reason(make_napari_viewer, qtbot, errors):
    _viewer, _session, dock = _profiles_dock(make_napari_viewer, qtbot, maps=False)
    assert set(dock.maps.coordinates) == {"before"}
    assert len(dock.canvas.panels) == 1
    note = dock.note.text()
    assert "No 'after' map" in note and "role 'control'" in note
    dock.colour.setCurrentText("Treatment")  # unknown treatments draw, they do not fail


def test_no_segmented_cells_says_where_to_get_them(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock = UmapWidget(viewer)
    dock.source.setCurrentText(PROFILES_SOURCE)
    assert dock.worker is None and dock.maps is None
    assert "Segment dock" in dock.status.text()


def test_export_dock_writes_profiles_csv(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    session = get_session(viewer)
    add_segmented_fields(viewer)
    dock = ExportWidget(viewer)
    dock.folder.setText(str(tmp_path))
    assert dock.export_profiles() is None  # no plate map: no controls to normalize to
    assert errors and "role 'control'" in errors[-1]
    for plate in ("P1", "P2"):
        session.set_platemap(plate, platemap())
    path = dock.export_profiles()
    assert path == tmp_path / "profiles.csv"
    table = pd.read_csv(path)
    meta = [c for c in table.columns if c.startswith("Metadata_")]
    assert list(table.columns[: len(meta)]) == meta and len(table) == 24
    controls = table[table[schema.ROLE] == "control"]
    for _plate, group in controls.groupby(schema.PLATE):
        features = [c for c in table.columns if c.startswith("Cells_")]
        np.testing.assert_allclose(group[features].median(), 0.0, atol=1e-9)
    assert dock.export_profiles() is None  # exists: kept, with an Overwrite button
    assert dock.errors.action.text() == "Overwrite"
    dock.errors.action.click()
    assert dock.written["profiles"] == path and not dock.errors.shown


def test_profile_activity_is_about_one_for_controls_and_large_for_phenotypes() -> None:
    from phenoadapt.profiles import profile_activity

    table = pd.DataFrame(
        {schema.PLATE: ["P"] * 3, schema.WELL: ["A01", "B01", "C01"],
         "Cells_A": [1.0, 4.0, np.nan], "Cells_B": [-1.0, 3.0, np.nan]}
    )  # fmt: skip
    activity = profile_activity(table)
    np.testing.assert_allclose(activity.iloc[:2], [1.0, np.sqrt(12.5)])
    assert np.isnan(activity.iloc[2])


def test_plate_grid_colours_wells_by_profile_distance(make_napari_viewer, qtbot, tmp_path, errors):
    from gui_run_helpers import make_tiny_plate

    from phenoadapt.gui.plate_dock import PROFILE, ROLE, PlateDock

    viewer = make_napari_viewer()
    session = get_session(viewer)
    plate = session.open_plate(make_tiny_plate(tmp_path / "tiny", "P1"))
    dock = PlateDock(viewer)
    viewer.window.add_dock_widget(dock, name="Plate")
    item = dock.color_by.model().item(dock.color_by.findText(PROFILE))
    assert not item.isEnabled()  # nothing segmented yet
    session.set_platemap("P1", platemap())
    add_segmented_fields(viewer, plates=("P1",))
    qtbot.waitUntil(item.isEnabled, timeout=5_000)
    dock.color_by.setCurrentText(PROFILE)
    assert dock.legend.colorbar is not None and "controls" in dock.legend.colorbar.title
    grid = dock.grid
    controls, treated = grid.color_of("A01"), grid.color_of("B01")
    assert controls is not None and treated is not None and controls != treated
    # Brighter (magma) = further from the controls: the treated wells stand out.
    assert treated.lightnessF() > controls.lightnessF()
    assert errors == [] and plate.plate_id == "P1"
    # The segmented fields removed: the mode goes back to Role.
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    qtbot.waitUntil(lambda: dock.color_by.currentText() == ROLE, timeout=5_000)
