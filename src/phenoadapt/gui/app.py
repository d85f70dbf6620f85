"""Open napari with the phenoadapt docks (``phenoadapt gui``), optionally on demo plates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..plate import Plate
    from ..plate.platemap import PlateMap

#: What :func:`~phenoadapt.gui.session.load_plate` returns: plate, its map, warnings.
LoadedPlate = tuple["Plate", "PlateMap | None", list[str]]

#: Docks opened by ``phenoadapt gui``, by their display names in napari.yaml, in order,
#: and whether each joins the previous one as a tab (two tab groups keep the window
#: a usual screen's height: browsing and marking plates; running and looking at results).
DOCKS: tuple[tuple[str, bool], ...] = (
    ("Plate", False),
    ("Plate map and controls", True),
    ("Run", False),
    ("UMAP", True),
    ("Export", True),
)
#: Docks brought to the front of their tab group.
FRONT: tuple[str, ...] = ("Plate", "Run")


def add_docks(viewer: Any, docks: Sequence[tuple[str, bool]] = DOCKS) -> dict[str, Any]:
    """Add phenoadapt dock widgets to a viewer; returns {display name: widget}.

    Docks that this installation does not provide are skipped (napari.yaml is
    the list of what exists).
    """
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest("phenoadapt")
    available = {w.display_name for w in manifest.contributions.widgets or []}
    widgets, frames = {}, {}
    for name, tabify in docks:
        if name not in available:
            continue
        frame, widget = viewer.window.add_plugin_dock_widget("phenoadapt", name, tabify=tabify)
        widgets[name], frames[name] = widget, frame
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # tabs exist only once Qt has handled the additions
    for name in FRONT:
        if name in frames:
            frames[name].raise_()
    return widgets


def open_plates(viewer: Any, loaded: Sequence[LoadedPlate]) -> list[str]:
    """Add plates (from :func:`~phenoadapt.gui.session.load_plate`) to the viewer's session.

    Warnings about their plate maps become notifications; the first field of the
    last plate is shown. Returns the plate ids.
    """
    from .common import notify
    from .session import get_session

    session = get_session(viewer)
    for plate, platemap, warnings in loaded:
        session.add_plate(plate, platemap)
        for warning in warnings:
            notify("warning", warning)
    ids = [plate.plate_id for plate, _, _ in loaded]
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
    open_options: Mapping[str, Any] | None = None,
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
    open_options
        Further keyword arguments of :func:`phenoadapt.plate.open_plate` for the
        plates (``layout``, ``channel_names``, ``plane``...), as ``phenoadapt gui``
        passes them from its command line.
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

        made = make_demo_plates(demo_dir)  # reuses plates already there
        paths = [*made.plates, *paths]
    from .session import load_plate

    # Opened before the window, so a folder that is not a plate fails with the reader's message.
    options = {k: v for k, v in (open_options or {}).items() if v is not None}
    if pattern:
        options["pattern"] = pattern
    loaded = [load_plate(path, **options) for path in paths]
    viewer = napari.Viewer(title="phenoadapt", show=show)
    add_docks(viewer)
    open_plates(viewer, loaded)
    if screenshot is not None:
        from qtpy.QtWidgets import QApplication

        viewer.window._qt_window.resize(1600, 1000)
        for _ in range(5):  # let Qt lay out the docks before the picture is taken
            QApplication.processEvents()
        viewer.screenshot(str(screenshot), canvas_only=False)
        viewer.close()
        return viewer
    napari.run()
    return viewer
