"""The window fits a laptop screen (1366x768) with every phenoadapt dock open.

napari stacks docks in columns; a dock whose content cannot shrink makes the
window taller than the screen, which hides buttons and notifications.  Every dock
scrolls instead, so the window's minimum height stays under the screen's usable
height (768 px less a task bar).
"""

from __future__ import annotations

import pytest
from gui_run_helpers import open_in_viewer, tiny_plate  # noqa: F401 (fixture)
from qtpy.QtWidgets import QApplication, QScrollArea

from phenoadapt.gui.app import DOCKS, add_docks

pytestmark = pytest.mark.gui

LAPTOP_USABLE_HEIGHT = 740


def test_window_with_every_dock_fits_a_laptop_screen(
    make_napari_viewer,
    tiny_plate,  # noqa: F811
    tmp_path,
):
    from gui_run_helpers import make_tiny_plate

    viewer = make_napari_viewer(show=True)
    docks = add_docks(viewer, (*DOCKS, ("Segment cells", True)))
    assert len(docks) == 6
    # Two plates loaded, as the issue measured: plate lists and combos grow with them.
    open_in_viewer(viewer, make_tiny_plate(tmp_path / "second", "TINY2", seed=2))
    open_in_viewer(viewer, tiny_plate)
    QApplication.processEvents()
    from phenoadapt.gui.session import get_session

    assert len(get_session(viewer).plates) == 2
    window = viewer.window._qt_window
    assert window.minimumSizeHint().height() <= LAPTOP_USABLE_HEIGHT
    window.resize(1366, LAPTOP_USABLE_HEIGHT)
    QApplication.processEvents()
    assert window.height() <= LAPTOP_USABLE_HEIGHT
    for name, dock in docks.items():
        # Each dock's content lives in a scroll area: it scrolls rather than grows the window.
        assert dock.findChild(QScrollArea) is not None, name
