"""Open napari with the phenoadapt docks (``phenoadapt gui``), optionally on demo plates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Docks opened by ``phenoadapt gui``, by their display names in napari.yaml, in order.
DOCKS: tuple[str, ...] = ("Plate", "Plate map and controls", "Run", "UMAP", "Export")


def add_docks(viewer: Any, names: Sequence[str] = DOCKS) -> dict[str, Any]:
    """Add phenoadapt dock widgets to a viewer; returns {display name: widget}.

    Docks that this installation does not provide are skipped (napari.yaml is
    the list of what exists).
    """
    from npe2 import PluginManager

    available = {
        w.display_name
        for w in PluginManager.instance().get_manifest("phenoadapt").contributions.widgets or []
    }
    widgets = {}
    for name in names:
        if name not in available:
            continue
        _dock, widget = viewer.window.add_plugin_dock_widget("phenoadapt", name, tabify=False)
        widgets[name] = widget
    return widgets


def open_plates(viewer: Any, paths: Sequence[str | Path], pattern: str | None = None) -> list[str]:
    """Open plate folders in the viewer's session and show the first field of the last one.

    Returns the plate ids.
    """
    from .session import get_session

    session = get_session(viewer)
    ids = []
    for path in paths:
        plate = session.open_plate(path, **({"pattern": pattern} if pattern else {}))
        ids.append(plate.plate_id)
    if ids:
        last = session.plates[ids[-1]]
        session.show_field(last.plate_id, last.wells[0])
    return ids


def launch(
    plates: Sequence[str | Path] = (),
    *,
    demo: bool = False,
    demo_dir: str | Path = "phenoadapt-demo",
    pattern: str | None = None,
    screenshot: str | Path | None = None,
    show: bool = True,
) -> Any:
    """Start napari with the phenoadapt docks.

    Parameters
    ----------
    plates
        Plate folders to open.
    demo
        Also open the demo plates (a training-lab and a new-lab plate with their
        plate maps, controls marked), made in ``demo_dir`` if not already there.
    demo_dir
        Folder of the demo plates.
    pattern
        Regular expression for plate folders no known layout describes.
    screenshot
        Save a screenshot of the whole window there and close napari instead of
        entering the event loop (for documentation and tests).
    show
        Show the window (False for tests).

    Returns
    -------
    napari.Viewer
        The viewer (already closed when ``screenshot`` is given).
    """
    import napari

    paths = [Path(p) for p in plates]
    if demo:
        from ..demo import make_demo_plates

        made = make_demo_plates(demo_dir, reuse=True)
        paths = [*made.plates, *paths]
    from ..plate import open_plate

    for path in paths:  # fail with the reader's message before a window opens
        open_plate(path, **({"pattern": pattern} if pattern else {}))
    viewer = napari.Viewer(title="phenoadapt", show=show)
    add_docks(viewer)
    open_plates(viewer, paths, pattern)
    if screenshot is not None:
        viewer.window._qt_window.resize(1600, 1000)
        viewer.screenshot(str(screenshot), canvas_only=False)
        viewer.close()
        return viewer
    napari.run()
    return viewer
