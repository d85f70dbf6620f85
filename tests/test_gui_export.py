"""The Export dock: CSV files in the project's schema, an Overwrite button, bad folders."""

from __future__ import annotations

import pandas as pd
from gui_run_helpers import notices, tiny_plate, tiny_result

from phenoadapt import schema
from phenoadapt.gui.export_dock import ExportWidget
from phenoadapt.gui.session import get_session

__all__ = ["notices", "tiny_plate", "tiny_result"]  # fixtures used by the tests below


def test_export_writes_offers_overwrite_and_reports(
    make_napari_viewer, notices, tiny_result, tmp_path
):
    viewer = make_napari_viewer()
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Export")
    # Nothing to export yet.
    assert not widget.export_button.isEnabled()
    widget.folder.setText(str(tmp_path / "out"))
    assert widget.export() == {}
    assert "run the plates" in notices["error"][-1]
    session = get_session(viewer)
    session.set_result(tiny_result)
    assert widget.export_button.isEnabled()
    written = widget.export()
    assert set(written) >= {"cells", "wells"} and not widget.errors.shown
    cells = pd.read_csv(written["cells"])
    wells = pd.read_csv(written["wells"])
    assert len(cells) == len(tiny_result.cells) and len(wells) == len(tiny_result.wells)
    assert list(cells.columns[:3]) == [schema.PLATE, schema.WELL, schema.SITE]
    assert {schema.PREDICTION, schema.CONFIDENCE, schema.UNCERTAINTY, schema.CELL_ID} <= set(cells)
    assert (cells[schema.PREDICTION] == tiny_result.cells[schema.PREDICTION].to_numpy()).all()
    assert not list((tmp_path / "out").glob("*.tmp*"))  # atomic: no temporary file left
    # Existing files: kept, and the dock offers the CLI's --overwrite as a button.
    stamp = written["cells"].stat().st_mtime_ns
    assert widget.export() == {}
    assert written["cells"].stat().st_mtime_ns == stamp and "kept" in widget.status.text()
    assert widget.errors.shown and widget.errors.action.text() == "Overwrite"
    assert "already exists" in widget.errors.text.text()
    assert "--overwrite" not in widget.errors.text.text()  # worded for the GUI
    widget.errors.action.click()
    assert not widget.errors.shown and set(widget.written) == set(written)
    assert written["cells"].stat().st_mtime_ns != stamp
    # A place that cannot be written: a notification, no traceback.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    widget.folder.setText(str(blocker / "out"))
    assert widget.export() == {}
    assert "a_file" in notices["error"][-1]
    assert widget.errors.shown and not widget.errors.action.isVisible()  # nothing to press
    assert notices["info"] and "exported" in notices["info"][0]


def test_export_marks_the_selection_records_the_run_and_writes_anndata(
    make_napari_viewer, notices, tiny_result, tmp_path
):
    import json

    import anndata
    import numpy as np

    viewer = make_napari_viewer()
    widget = ExportWidget(viewer)
    session = get_session(viewer)
    session.set_result(tiny_result)
    n = len(tiny_result.cells)
    assert not widget.selection_button.isEnabled()  # nothing selected yet
    session.select_cells([0, 2])
    assert widget.selection_button.isEnabled() and "2 selected" in widget.status.text()
    # UMAP coordinates as the UMAP dock hands them over (NaN: a cell without a point).
    coords = pd.DataFrame({"umap_after_1": np.arange(n, dtype=float), "umap_after_2": 1.0})
    coords.loc[1, ["umap_after_1", "umap_after_2"]] = np.nan
    session.set_umap(coords, level="cell", n_neighbors=15, seed=0)
    widget.folder.setText(str(tmp_path / "all"))
    widget.h5ad.setChecked(True)
    written = widget.export()
    assert set(written) >= {"cells", "wells", "run", "anndata"}
    cells = pd.read_csv(written["cells"])
    assert cells["selected"].tolist() == [i in (0, 2) for i in range(n)]
    assert cells["umap_after_1"].iloc[2] == 2.0 and np.isnan(cells["umap_after_1"].iloc[1])
    record = json.loads(written["run"].read_text())
    assert record["method"] == "erm" and record["umap"]["n_neighbors"] == 15
    assert record["models"][0]["sha256"] and record["segmentation"]["nucleus_diameter"]
    for name in ("cells", "wells"):
        assert (pd.read_csv(written[name])[schema.RUN_ID] == record["run_id"]).all()
    adata = anndata.read_h5ad(written["anndata"])
    features = np.isfinite(tiny_result.embeddings).all(axis=1)
    assert adata.n_obs == int(features.sum()) and adata.n_vars == tiny_result.embeddings.shape[1]
    assert schema.PREDICTION in adata.obs and "X_umap" in adata.obsm
    assert json.loads(adata.uns["phenoadapt_run"])["run_id"] == record["run_id"]
    # "Export selection": only the selected cells.
    widget.folder.setText(str(tmp_path / "picked"))
    picked = widget.export(only_selected=True)
    assert set(picked) == {"cells_selected", "run"}
    assert len(pd.read_csv(picked["cells_selected"])) == 2


def test_a_new_result_forgets_the_old_umap(make_napari_viewer, tiny_result) -> None:
    viewer = make_napari_viewer()
    session = get_session(viewer)
    session.set_result(tiny_result)
    session.set_umap(pd.DataFrame({"umap_after_1": [0.0] * len(tiny_result.cells)}), seed=0)
    assert session.umap_cells is not None
    session.set_umap(pd.DataFrame({"umap_after_1": [0.0]}), seed=0)  # another result's map
    assert len(session.umap_cells) == len(tiny_result.cells)
    session.set_result(tiny_result)
    assert session.umap_cells is None and session.umap_settings == {}
