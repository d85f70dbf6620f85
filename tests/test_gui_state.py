"""The session state as a Qt-free evented model (no display needed)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from phenoadapt.errors import PhenoadaptError
from phenoadapt.gui.state import FieldKey, JobRunningError, SessionState
from phenoadapt.plate.platemap import PlateMap


def test_the_model_imports_no_qt() -> None:
    code = (
        "import sys; import phenoadapt.gui.state; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def recorder(state: SessionState) -> list[tuple]:
    """Every event the model emits, in order, as (signal name, *args)."""
    events: list[tuple] = []
    for name in ("plates_changed", "current_changed", "platemap_changed", "channels_changed",
                 "result_changed", "cells_selected", "umap_changed", "job_changed"):  # fmt: skip
        getattr(state, name).connect(lambda *args, n=name: events.append((n, *args)))
    return events


def fake_plate(plate_id: str = "P1") -> SimpleNamespace:
    return SimpleNamespace(plate_id=plate_id, format=96, channels=[], wells=["A01"])


def test_every_change_goes_through_a_method_that_emits() -> None:
    state = SessionState()
    events = recorder(state)
    state.add_plate(fake_plate())
    assert events == [("plates_changed",), ("platemap_changed", "P1")]
    state.set_current(FieldKey("P1", "A01", 1))
    assert events[-1] == ("current_changed",) and state.current.well == "A01"
    with pytest.raises(PhenoadaptError, match="not open"):
        state.set_current(FieldKey("P9", "A01", 1))
    with state.edit_platemap("P1") as platemap:
        assert isinstance(platemap, PlateMap)
    assert events[-1] == ("platemap_changed", "P1")
    cells = pd.DataFrame(
        {
            "Metadata_Plate": ["P1"] * 3,
            "Metadata_Well": ["A01", "A01", "B02"],
            "Metadata_Site": [1, 2, 1],
        }  # fmt: skip
    )
    state.set_result(SimpleNamespace(cells=cells))
    assert events[-1] == ("result_changed",)
    np.testing.assert_array_equal(state.cells_of_field(), [0])
    state.select_cells([2, 0, 0])
    assert events[-1][0] == "cells_selected"
    np.testing.assert_array_equal(events[-1][1], [0, 2])
    assert state.set_umap(pd.DataFrame({"x": [0.0] * 3}), seed=1)
    assert events[-1] == ("umap_changed",) and state.umap_settings == {"seed": 1}
    assert not state.set_umap(pd.DataFrame({"x": [0.0]}))  # another result's map: ignored
    state.begin_job("Run")
    with pytest.raises(JobRunningError, match="'Run' is still running"):
        state.begin_job("Segment")
    state.end_job()
    assert events[-2:] == [("job_changed", True), ("job_changed", False)]
    state.close_plate("P1")
    assert state.current is None and events[-1] == ("plates_changed",)


def test_docks_cannot_write_behind_its_back() -> None:
    state = SessionState()
    state.add_plate(fake_plate())
    for name in ("plates", "platemaps", "current", "result", "selected_rows", "job"):
        with pytest.raises(AttributeError):
            setattr(state, name, None)
    with pytest.raises(TypeError):
        state.plates["P2"] = fake_plate("P2")  # a read-only view
    state.select_cells([1])
    state.selected_rows[0] = 5  # a copy: the model's selection is unchanged
    np.testing.assert_array_equal(state.selected_rows, [1])
