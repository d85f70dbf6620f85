"""The state shared by the docks of one viewer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from phenoadapt.errors import PhenoadaptError
from phenoadapt.gui.layers import META_KEY
from phenoadapt.gui.sample import make_sample_plate
from phenoadapt.gui.session import JobRunningError, get_session

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def sample_plate(tmp_path_factory):
    return make_sample_plate(tmp_path_factory.mktemp("sample"))


def test_one_session_per_viewer(make_napari_viewer):
    a, b = make_napari_viewer(), make_napari_viewer()
    assert get_session(a) is get_session(a)
    assert get_session(a) is not get_session(b)


def test_open_plate_reads_its_platemap_and_shows_fields(make_napari_viewer, qtbot, sample_plate):
    viewer = make_napari_viewer()
    session = get_session(viewer)
    with qtbot.waitSignal(session.plates_changed):
        plate = session.open_plate(sample_plate)
    pm = session.platemap(plate.plate_id)
    assert len(pm.controls) >= 1 and not pm.modified
    with qtbot.waitSignal(session.current_changed):
        session.show_field(plate.plate_id, plate.wells[0])
    first = list(viewer.layers)
    assert len(first) == 5
    contrast = first[0].contrast_limits = (10, 500)
    session.show_field(plate.plate_id, plate.wells[1], 2)
    assert list(viewer.layers) == first  # same layers, new data: user choices survive
    assert tuple(first[0].contrast_limits) == contrast
    assert first[0].metadata[META_KEY]["well"] == plate.wells[1]
    assert session.current.site == 2


def test_no_plate_is_a_clear_error(make_napari_viewer):
    session = get_session(make_napari_viewer())
    with pytest.raises(PhenoadaptError, match="open a plate folder"):
        session.plate()


def test_one_job_at_a_time(make_napari_viewer):
    session = get_session(make_napari_viewer())
    session.begin_job("Run")
    with pytest.raises(JobRunningError, match="'Run' is still running"):
        session.begin_job("Train")
    session.end_job()
    session.begin_job("Train")
    assert session.job == "Train"


def test_result_and_selection(make_napari_viewer, qtbot):
    session = get_session(make_napari_viewer())
    cells = pd.DataFrame(
        {
            "Metadata_Plate": ["p", "p", "p", "q"],
            "Metadata_Well": ["A01", "A01", "B02", "A01"],
            "Metadata_Site": [1, 2, 1, 1],
        }
    )
    with qtbot.waitSignal(session.result_changed):
        session.set_result(SimpleNamespace(cells=cells))
    from phenoadapt.gui.session import FieldKey

    np.testing.assert_array_equal(session.cells_of_field(FieldKey("p", "A01", 1)), [0])
    with qtbot.waitSignal(session.cells_selected) as blocker:
        session.select_cells([3, 1, 1])
    np.testing.assert_array_equal(blocker.args[0], [1, 3])


def test_closing_napari_keeps_unsaved_platemap_edits(
    make_napari_viewer, sample_plate, tmp_path, monkeypatch
):
    monkeypatch.setenv("PHENOADAPT_RECOVERY_DIR", str(tmp_path / "kept"))
    viewer = make_napari_viewer()
    session = get_session(viewer)
    plate = session.open_plate(sample_plate)
    pm = session.platemap(plate.plate_id)
    well = pm.treated[0]
    pm.set_role(well, "control")
    viewer.window._qt_window.close()
    kept = list((tmp_path / "kept").glob("*.csv"))
    assert len(kept) == 1 and kept[0].name.startswith(plate.plate_id)
    from phenoadapt.plate.platemap import read_platemap

    assert well in read_platemap(kept[0]).controls


def test_saved_maps_leave_nothing_behind(make_napari_viewer, sample_plate, tmp_path):
    session = get_session(make_napari_viewer())
    session.open_plate(sample_plate)
    assert session.keep_unsaved_platemaps(tmp_path) == []
