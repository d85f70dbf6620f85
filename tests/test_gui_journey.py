"""The bench scientist's whole journey in one viewer, through the docks `phenoadapt gui` opens.

Each dock has its own tests; this one checks that they work together: a plate opened in the
Plate dock is what the Plate-map dock edits and the Run dock runs, the result reaches the
plate grid, the overlay, the UMAP and the Export dock.
"""

from __future__ import annotations

import pandas as pd
import pytest
from gui_run_helpers import checkpoint_text, tiny_plate  # noqa: F401 (fixture)

from phenoadapt import schema
from phenoadapt.gui.app import add_docks

pytestmark = pytest.mark.gui


def test_open_mark_run_map_and_export(make_napari_viewer, qtbot, tiny_plate, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    docks = add_docks(viewer)
    plate_dock, map_dock = docks["Plate"], docks["Plate map and controls"]
    run_dock, umap_dock, export_dock = docks["Run"], docks["UMAP"], docks["Export"]

    plate = plate_dock.open_folder(tiny_plate)
    assert plate is not None and len(viewer.layers) == 5
    session = plate_dock.session
    assert session is map_dock.session is run_dock.session is umap_dock.session

    # Mark one more control well by hand (the map from the folder already marks A01 and A07).
    platemap = session.platemap(plate.plate_id)
    before = set(platemap.controls)
    map_dock.set_role("control", ["A08"])
    assert set(session.platemap(plate.plate_id).controls) == before | {"A08"}

    run_dock.checkpoint.setText(checkpoint_text())  # empty: the shipped demo model
    run_dock.refresh_plates()
    assert run_dock.selected_plates() == [plate.plate_id]
    run_dock.run()
    qtbot.waitUntil(lambda: run_dock.runner is None, timeout=180_000)
    result = session.result
    assert result is not None and len(result.cells) > 50
    roles = result.cells.loc[result.cells[schema.WELL] == "A08", schema.ROLE]
    assert (roles == "control").all()  # the hand-marked control reached the run

    umap_dock.compute()
    qtbot.waitUntil(lambda: umap_dock.maps is not None, timeout=240_000)
    rows = [0, 1, 2]
    session.select_cells(rows)
    assert list(session.selected_rows) == rows

    export_dock.folder.setText(str(tmp_path / "out"))
    written = export_dock.export()
    assert "cells" in written, written
    cells = pd.read_csv(written["cells"])
    assert len(cells) == len(result.cells)
    assert {schema.PLATE, schema.WELL, schema.PREDICTION} <= set(cells.columns)
