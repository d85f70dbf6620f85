"""Shared pytest configuration.

GUI tests (marked ``gui`` or using napari's ``make_napari_viewer`` fixture) need
a display: CI runs the suite under ``xvfb-run``.  Without a display they are
skipped with a message that says how to run them, rather than crashing Qt.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_display():
        return
    skip = pytest.mark.skip(
        reason="needs a display: run the suite under `xvfb-run -a python -m pytest`"
    )
    for item in items:
        if "gui" in item.keywords or "make_napari_viewer" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture
def data_dir() -> Path:
    """Folder of the test data shipped with the repository."""
    return DATA


@pytest.fixture(autouse=True, scope="session")
def _recovery_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Unsaved plate maps kept when test viewers close go to a temporary folder."""
    os.environ["PHENOADAPT_RECOVERY_DIR"] = str(tmp_path_factory.mktemp("recovery"))
    # Channel maps of read-only plates go to a temporary folder, not the user's.
    os.environ["PHENOADAPT_CHANNEL_MAP_DIR"] = str(tmp_path_factory.mktemp("channel-maps"))


@pytest.fixture(autouse=True)
def _finish_gui_workers(request: pytest.FixtureRequest):
    """Let background workers a GUI test started finish before its viewer closes.

    A worker still running when the viewer's widgets are deleted emits into deleted
    Qt objects and aborts the interpreter at exit; awaiting them here, before the
    napari fixture's own teardown (this fixture asks for it, so it closes first),
    keeps each test's threads inside the test.
    """
    if "make_napari_viewer" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("make_napari_viewer")
    yield
    from qtpy.QtWidgets import QApplication
    from superqt.utils._qthreading import WorkerBase

    # A finished worker's slots may start the next one (the overlay's pending field).
    for _ in range(20):
        QApplication.processEvents()
        if not WorkerBase._worker_set:
            break
        WorkerBase.await_workers(msecs=120_000)


@pytest.fixture(autouse=True)
def _umap_fits_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """GUI tests fit UMAPs in the worker thread unless marked ``child_process``.

    The dock's default is a child process (numba holds the GIL; see
    phenoadapt.offload); each new child pays numba's compilation again, which would
    add minutes to the suite.  Tests marked ``child_process`` exercise that path.
    """
    if "make_napari_viewer" in request.fixturenames and not request.node.get_closest_marker(
        "child_process"
    ):
        from phenoadapt.gui import umap_dock

        monkeypatch.setattr(umap_dock, "FIT_IN_CHILD_PROCESS", False)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module: tiny networks gain nothing from threads, and on a
    shared CPU they only contend (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
