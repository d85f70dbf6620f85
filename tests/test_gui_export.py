"""The Export dock: CSV files in the project's schema, asking before overwriting, bad folders."""

from __future__ import annotations

import pandas as pd
from gui_run_helpers import notices, tiny_plate, tiny_result

from phenoadapt import schema
from phenoadapt.gui.export_dock import ExportWidget
from phenoadapt.gui.session import get_session

__all__ = ["notices", "tiny_plate", "tiny_result"]  # fixtures used by the tests below


def test_export_writes_asks_and_reports(make_napari_viewer, notices, tiny_result, tmp_path):
    answers: list[bool] = []
    asked: list[str] = []

    def confirm(title: str, text: str) -> bool:
        asked.append(text)
        return answers.pop(0)

    viewer = make_napari_viewer()
    widget = ExportWidget(viewer, confirm=confirm)
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
    assert set(written) >= {"cells", "wells"} and asked == []
    cells = pd.read_csv(written["cells"])
    wells = pd.read_csv(written["wells"])
    assert len(cells) == len(tiny_result.cells) and len(wells) == len(tiny_result.wells)
    assert list(cells.columns[:3]) == [schema.PLATE, schema.WELL, schema.SITE]
    assert {schema.PREDICTION, schema.CONFIDENCE, schema.UNCERTAINTY, schema.CELL_ID} <= set(cells)
    assert (cells[schema.PREDICTION] == tiny_result.cells[schema.PREDICTION].to_numpy()).all()
    assert not list((tmp_path / "out").glob("*.tmp*"))  # atomic: no temporary file left
    # Existing files: asked first; "No" keeps them untouched, "Yes" replaces them.
    stamp = written["cells"].stat().st_mtime_ns
    answers.append(False)
    assert widget.export() == {}
    assert len(asked) == 1 and "cells.csv" in asked[0]
    assert written["cells"].stat().st_mtime_ns == stamp and "kept" in widget.status.text()
    answers.append(True)
    assert set(widget.export()) == set(written) and len(asked) == 2
    # A place that cannot be written: a notification, no traceback.
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    widget.folder.setText(str(blocker / "out"))
    assert widget.export() == {}
    assert "a_file" in notices["error"][-1]
    assert notices["info"] and "exported" in notices["info"][0]
