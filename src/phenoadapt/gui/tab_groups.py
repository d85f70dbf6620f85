"""Two tab groups for the phenoadapt docks, however they are opened.

napari stacks every dock opened from its Plugins menu in one column on the
right: with all six phenoadapt docks open on a 1366x768 laptop, each got about
100 px, two rows of its form.  Each dock therefore joins its tab group as soon as
napari has docked it: the set-up docks (Plate, Plate map, Segment) share one
group and the result docks (Run, UMAP, Export) the other, so the visible dock
of each group gets half of the column.  ``phenoadapt gui``
(:func:`phenoadapt.gui.app.add_docks`) lands in the same two groups.
"""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

#: Tab group of each dock, by its widget's class name (napari.yaml's python_name).
GROUPS: dict[str, str] = {
    "PlateDock": "plate",
    "PlateMapDock": "plate",
    "SegmentationWidget": "plate",
    "RunWidget": "results",
    "UmapWidget": "results",
    "ExportWidget": "results",
}


def group_of(widget: QWidget) -> str | None:
    """The tab group of a phenoadapt dock widget (None: not one of ours)."""
    return GROUPS.get(type(widget).__name__)


def join_tab_group(widget: QWidget) -> None:
    """Tab ``widget``'s dock with the docks of its group once napari has docked it.

    napari wraps the widget in a :class:`~qtpy.QtWidgets.QDockWidget` only after
    the widget's constructor returns, so the move waits for the next event-loop
    turn.  A widget that is never docked (tests, an embedded form) is left alone.
    """
    QTimer.singleShot(0, lambda: _join(widget))


def _frame_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def _inner(frame: QDockWidget) -> QWidget | None:
    """The phenoadapt widget inside a dock (napari may wrap it in a scroll area)."""
    for cls in GROUPS:
        found = [w for w in frame.findChildren(QWidget) if type(w).__name__ == cls]
        if found:
            return found[0]
    return None


def _join(widget: QWidget) -> None:
    try:
        frame = _frame_of(widget)
    except RuntimeError:  # the widget was deleted before the turn came
        return
    group = group_of(widget)
    if frame is None or group is None or frame.isFloating():
        return
    window = frame.parentWidget()
    if not isinstance(window, QMainWindow):
        return
    mates = [
        other
        for other in window.findChildren(QDockWidget)
        if other is not frame
        and not other.isFloating()
        and other.isVisible()
        and window.dockWidgetArea(other) == window.dockWidgetArea(frame)
        and (inner := _inner(other)) is not None
        and group_of(inner) == group
    ]
    if not mates or any(m in window.tabifiedDockWidgets(frame) for m in mates):
        return  # first of its group, or already in it (phenoadapt gui tabs them itself)
    window.tabifyDockWidget(mates[0], frame)
    frame.show()
    frame.raise_()  # the dock just asked for is the one in front
