"""The Run dock's Scheduler field: a run on a dask cluster gives the run of this computer.

Run under a display (``xvfb-run -a python -m pytest``).
"""

from __future__ import annotations

import logging

import pytest
from gui_run_helpers import checkpoint_text, notices, open_in_viewer, tiny_plate

from phenoadapt.gui.run_dock import RunWidget, run_job

__all__ = ["notices", "tiny_plate"]  # fixtures used by the tests below


@pytest.fixture(scope="module")
def scheduler_address():
    """A one-worker cluster in this process (threads): quick to start, enough for the dock."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster:  # fmt: skip
        yield cluster.scheduler_address


def _widget(viewer, plate_dir) -> RunWidget:
    open_in_viewer(viewer, plate_dir)
    widget = RunWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Run")
    widget.checkpoint.setText(checkpoint_text())
    widget.method.setCurrentIndex(widget.method.findData("erm"))  # the quickest method
    return widget


@pytest.mark.slow
def test_run_on_a_scheduler(make_napari_viewer, qtbot, notices, tiny_plate, scheduler_address):
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_plate)
    assert widget.scheduler.text() == "" and "tcp://" in widget.scheduler.toolTip()
    widget.scheduler.setText(scheduler_address)
    widget.run()
    qtbot.waitUntil(lambda: widget.runner is None, timeout=180_000)
    assert notices["error"] == []
    plates, platemaps = widget._plates_and_maps()
    here = run_job(plates, platemaps, widget.run_settings())
    assert widget.session.result.cells.to_csv() == here.cells.to_csv()


def test_a_bad_scheduler_is_a_notification(make_napari_viewer, qtbot, notices, tiny_plate):
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_plate)
    widget.scheduler.setText("no scheduler here")
    widget.run()
    qtbot.waitUntil(lambda: widget.runner is None, timeout=60_000)
    assert any("is not one" in m for m in notices["error"]), notices
    assert widget.session.job is None
