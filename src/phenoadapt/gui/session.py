"""What the phenoadapt docks of one napari viewer share: open plates, plate maps, results.

Docks never talk to each other directly. They read a :class:`PlateSession`
(one per viewer, from :func:`get_session`), change it only through its
methods and listen to its signals, so the plate dock can show per-well results
the run dock produced, and the UMAP dock can highlight cells another dock
selected.  The state and its signals are the Qt-free evented model
:class:`~.state.SessionState`; this module adds the viewer (layers of the
field on screen, notifications, keeping unsaved plate maps at close).

The session also holds the "one long job at a time" lock, which every dock's
:class:`~.jobs.JobRunner` claims (:meth:`~.state.SessionState.begin_job`).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QObject

from ..errors import PhenoadaptError
from ..plate import Channel, Plate, open_plate
from ..plate.platemap import PlateMap, platemap_for_plate
from ..plate.readers import UnmatchedImagesWarning
from .common import notify
from .layers import META_KEY, field_layer_data
from .state import FieldKey, JobRunningError, SessionState, recovery_dir

__all__ = [
    "FieldKey",
    "JobRunningError",
    "PlateSession",
    "SessionState",
    "get_session",
    "load_plate",
    "recovery_dir",
]


def load_plate(
    path: str | Path,
    pattern: str | None = None,
    plate_format: int | None = None,
    **open_options: Any,
) -> tuple[Plate, PlateMap | None, list[str]]:
    """Open a plate folder and the plate map shipped with it, if any.

    The map is found by :func:`phenoadapt.plate.platemap.platemap_for_plate`,
    as the CLI finds it.

    Parameters
    ----------
    path
        The plate folder or OME-Zarr plate.
    pattern
        A regular expression describing the file names (None: detect the layout).
    plate_format
        96, 384 or 1536; None guesses the smallest format holding the imaged wells.
    **open_options
        Further options of :func:`phenoadapt.plate.open_plate` (``layout``,
        ``channel_names``, ``plane``).

    Returns
    -------
    (plate, platemap, warnings)
        The map is None when none ships with the plate or it does not fit;
        ``warnings`` say why, or which imaged wells the map does not describe.

    Raises
    ------
    PhenoadaptError
        When the folder is not a plate.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnmatchedImagesWarning)
        plate = open_plate(path, pattern=pattern or None, plate_format=plate_format, **open_options)
    # Image files the pattern left out are said, not dropped silently.
    said = [str(w.message) for w in caught if issubclass(w.category, UnmatchedImagesWarning)]
    platemap, notes = platemap_for_plate(plate)  # the map shipped with the plate, if any
    return plate, platemap, [*said, *notes]


class PlateSession(SessionState):
    """Shared state of the phenoadapt docks of one viewer: the model plus the viewer.

    The state, its methods and signals are those of the Qt-free
    :class:`~.state.SessionState`; this class adds what needs the viewer:
    opening a plate with notifications, and showing a field as layers.
    """

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self._viewer = weakref.ref(viewer)

    @property
    def viewer(self) -> Any:
        """The napari viewer (None once it was closed)."""
        return self._viewer()

    def open_plate(
        self, path: str | Path, pattern: str | None = None, plate_format: int | None = None
    ) -> Plate:
        """Open a plate folder and add it (with its plate map when one ships with it).

        A shipped map that does not fit the plate is shown as a warning (see
        :func:`load_plate`).

        Raises
        ------
        PhenoadaptError
            The folder is not a plate; the message says how to describe it.
        """
        plate, platemap, warnings = load_plate(path, pattern, plate_format)
        self.add_plate(plate, platemap)
        for warning in warnings:
            notify("warning", warning)
        return plate

    def set_channels(self, plate_id: str, channels: Sequence[Channel]) -> Plate:
        """Rename and re-role a plate's channels (same keys, in the same order).

        What Segment, Run and Train use from then on; the field on screen is shown
        again with the new names and Cell Painting colours.

        Raises
        ------
        PhenoadaptError
            When the channels are not the plate's (other keys).
        """
        updated = self.replace_channels(plate_id, channels)
        current = self.current
        if current is not None and current.plate_id == plate_id:
            self.show_field(plate_id, current.well, current.site)
        self.channels_changed.emit(plate_id)  # after the layers show the new names
        return updated

    # ----------------------------------------------------------------- fields
    def show_field(self, plate_id: str, well: str, site: int | None = None) -> FieldKey:
        """Show a field as one image layer per channel, replacing the last field's layers.

        Layers whose name matches a channel keep the user's contrast and visibility
        choices: their data is swapped rather than the layer recreated.
        """
        plate = self.plate(plate_id)
        site = plate.sites_of(well)[0] if site is None else int(site)
        viewer = self.viewer
        if viewer is None:
            raise PhenoadaptError("The napari viewer was closed.")
        old = [
            layer
            for layer in list(viewer.layers)
            if isinstance(layer.metadata.get(META_KEY), dict)
            and "channel" in layer.metadata[META_KEY]
        ]
        for data, kwargs, _kind in field_layer_data(plate, well, site):
            info = kwargs["metadata"][META_KEY]
            layer = _matching_layer(old, info)
            if layer is not None:
                old.remove(layer)
            if layer is not None and layer.data.shape == data.shape:
                layer.data = data
                if layer.metadata.get(META_KEY, {}).get("role") != info["role"]:
                    layer.colormap = kwargs["colormap"]  # a new role: its Cell Painting colour
                layer.metadata = kwargs["metadata"]
                layer.name = kwargs["name"]
            else:
                if layer is not None:
                    viewer.layers.remove(layer)
                viewer.add_image(data, **kwargs)
        for layer in old:  # channels of another plate that this one lacks
            viewer.layers.remove(layer)
        key = FieldKey(plate_id, well, site)
        self.set_current(key)
        return key


def _matching_layer(layers: list[Any], info: dict[str, Any]) -> Any | None:
    """The layer showing the same channel of the same plate (even renamed), else one of its name.

    Reusing a layer keeps the user's contrast and visibility choices.
    """
    for same in (
        lambda m: (
            m.get("plate_id") == info["plate_id"] and m.get("channel_key") == info["channel_key"]
        ),
        lambda m: m.get("channel") == info["channel"],
    ):
        for layer in layers:
            if same(layer.metadata[META_KEY]):
                return layer
    return None


class _CloseGuard(QObject):
    """Keeps unsaved plate maps when the napari window closes (see keep_unsaved_platemaps)."""

    def __init__(self, session: PlateSession, window: QObject) -> None:
        super().__init__(window)
        self._session = weakref.ref(session)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.Close:
            session = self._session()
            if session is not None:
                try:
                    kept = session.keep_unsaved_platemaps()
                except (OSError, PhenoadaptError) as exc:
                    print(f"phenoadapt: could not keep unsaved plate maps: {exc}")
                else:
                    for path in kept:
                        # napari's notifications die with the window: say it on the terminal.
                        print(f"phenoadapt: unsaved plate-map edits kept in {path}")
        return False


_SESSIONS: weakref.WeakKeyDictionary[Any, PlateSession] = weakref.WeakKeyDictionary()


def get_session(viewer: Any) -> PlateSession:
    """The session of a viewer, created on first use.

    Dock widgets receive napari's public-only proxy of the viewer; the session is
    keyed by (and holds a weak reference to) the viewer itself, so every dock of a
    window shares one session however it got the viewer.
    """
    viewer = getattr(viewer, "__wrapped__", viewer)
    session = _SESSIONS.get(viewer)
    if session is None:
        session = PlateSession(viewer)
        _SESSIONS[viewer] = session
        window = getattr(getattr(viewer, "window", None), "_qt_window", None)
        if window is not None:
            session._close_guard = _CloseGuard(session, window)
            window.installEventFilter(session._close_guard)
    return session
