"""What the phenoadapt docks of one napari viewer share: open plates, plate maps, results.

Docks never talk to each other directly. They read and change a
:class:`PlateSession` (one per viewer, from :func:`get_session`) and listen to
its Qt signals, so the plate dock can show per-well results the run dock
produced, and the UMAP dock can highlight cells another dock selected.

The session also holds the "one GPU job at a time" lock: a dock that starts a
long job calls :meth:`PlateSession.begin_job` and :meth:`PlateSession.end_job`.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QEvent, QObject, Signal

from .. import schema
from ..errors import PhenoadaptError
from ..plate import Channel, Plate, open_plate
from ..plate.platemap import PlateMap, platemap_for_plate, write_platemap
from ..plate.readers import UnmatchedImagesWarning
from .common import notify
from .layers import META_KEY, field_layer_data


def recovery_dir() -> Path:
    """Where unsaved plate-map edits are kept when napari closes.

    ``$PHENOADAPT_RECOVERY_DIR`` when set, else ``~/.phenoadapt/recovery``.
    """
    return Path(
        os.environ.get("PHENOADAPT_RECOVERY_DIR") or Path.home() / ".phenoadapt" / "recovery"
    )


class JobRunningError(PhenoadaptError):
    """A second long job was started while one is running."""


@dataclass(frozen=True)
class FieldKey:
    """A field on screen: plate id, well and site."""

    plate_id: str
    well: str
    site: int


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


class PlateSession(QObject):
    """Shared state of the phenoadapt docks of one viewer.

    Signals
    -------
    plates_changed()
        A plate was opened or closed.
    current_changed()
        The field on screen changed (plate, well or site).
    platemap_changed(str)
        The plate map of this plate id was replaced or edited.
    result_changed()
        A new run result (or None).
    cells_selected(object)
        Positional rows of ``result.cells`` picked in a dock or in the viewer.
    job_changed(bool)
        A long job started (True) or ended (False).
    """

    plates_changed = Signal()
    current_changed = Signal()
    platemap_changed = Signal(str)
    result_changed = Signal()
    cells_selected = Signal(object)
    job_changed = Signal(bool)
    channels_changed = Signal(str)

    def __init__(self, viewer: Any) -> None:
        super().__init__()
        self._viewer = weakref.ref(viewer)
        self.plates: dict[str, Plate] = {}
        self.platemaps: dict[str, PlateMap] = {}
        self.current: FieldKey | None = None
        self.result: Any | None = None  # phenoadapt.pipeline.RunResult
        self.selected_rows: np.ndarray = np.zeros(0, dtype=np.int64)
        # Per-cell UMAP coordinates of the result, once the UMAP dock computed them,
        # and the settings that made them (for the export's run.json).
        self.umap_cells: pd.DataFrame | None = None
        self.umap_settings: dict[str, Any] = {}
        self._job: str | None = None

    # ------------------------------------------------------------------ plates
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

    def add_plate(self, plate: Plate, platemap: PlateMap | None = None) -> None:
        """Add an opened plate; a blank plate map (every well excluded) when none is given."""
        self.plates[plate.plate_id] = plate
        self.platemaps[plate.plate_id] = platemap or PlateMap.blank(plate.format, plate.plate_id)
        self.plates_changed.emit()
        self.platemap_changed.emit(plate.plate_id)

    def set_channels(self, plate_id: str, channels: Sequence[Channel]) -> Plate:
        """Rename and re-role a plate's channels (same keys, in the same order).

        What Segment, Run and Train use from then on; the field on screen is shown
        again with the new names and Cell Painting colours.

        Raises
        ------
        PhenoadaptError
            When the channels are not the plate's (other keys).
        """
        plate = self.plate(plate_id)
        channels = list(channels)
        if [c.key for c in channels] != [c.key for c in plate.channels]:
            raise PhenoadaptError(
                f"Channels {[c.key for c in channels]} are not those of plate {plate_id} "
                f"({[c.key for c in plate.channels]})."
            )
        updated = dataclasses.replace(plate, channels=channels)
        self.plates[plate_id] = updated
        if self.current is not None and self.current.plate_id == plate_id:
            self.show_field(plate_id, self.current.well, self.current.site)
        self.channels_changed.emit(plate_id)  # after the layers show the new names
        return updated

    def close_plate(self, plate_id: str) -> None:
        """Forget a plate (its layers stay in the viewer)."""
        self.plates.pop(plate_id, None)
        self.platemaps.pop(plate_id, None)
        if self.current is not None and self.current.plate_id == plate_id:
            self.current = None
            self.current_changed.emit()
        self.plates_changed.emit()

    def plate(self, plate_id: str | None = None) -> Plate:
        """A plate by id (the one on screen by default)."""
        plate_id = plate_id or (self.current.plate_id if self.current else None)
        if plate_id is None or plate_id not in self.plates:
            raise PhenoadaptError("No plate is open: open a plate folder in the Plate dock first.")
        return self.plates[plate_id]

    # ------------------------------------------------------------- plate maps
    def platemap(self, plate_id: str) -> PlateMap:
        """The plate map of an open plate."""
        return self.platemaps[plate_id]

    def set_platemap(self, plate_id: str, platemap: PlateMap) -> None:
        """Replace the plate map of an open plate."""
        self.platemaps[plate_id] = platemap
        self.platemap_changed.emit(plate_id)

    def unsaved_platemaps(self) -> list[str]:
        """Plate ids whose plate map has changes not written to a file."""
        return [pid for pid, pm in self.platemaps.items() if pm.modified]

    def keep_unsaved_platemaps(self, folder: str | Path | None = None) -> list[Path]:
        """Write every plate map with unsaved edits to a recovery folder.

        Called when napari closes, so that marking controls is never lost, even
        when the window is closed without saving. Files are named
        ``<plate>-unsaved-<time>.csv`` and never overwrite anything.

        Returns
        -------
        list of Path
            The files written.
        """
        pending = self.unsaved_platemaps()
        if not pending:
            return []
        target = Path(folder) if folder is not None else recovery_dir()
        target.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        written = []
        for plate_id in pending:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in plate_id)
            path = target / f"{safe}-unsaved-{stamp}.csv"
            n = 1
            while path.exists():
                n += 1
                path = target / f"{safe}-unsaved-{stamp}-{n}.csv"
            written.append(write_platemap(self.platemaps[plate_id], path))
        return written

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
        self.current = FieldKey(plate_id, well, site)
        self.current_changed.emit()
        return self.current

    # ---------------------------------------------------------------- results
    def set_result(self, result: Any | None) -> None:
        """Store a run result (``phenoadapt.pipeline.RunResult``) and tell the docks."""
        self.result = result
        self.selected_rows = np.zeros(0, dtype=np.int64)
        self.umap_cells = None
        self.umap_settings = {}
        self.result_changed.emit()

    def set_umap(self, cells: pd.DataFrame, **settings: Any) -> None:
        """Store the UMAP coordinates of the result's cells (rows of ``result.cells``)."""
        if self.result is None or len(cells) != len(self.result.cells):
            return  # a map of an earlier result: nothing to attach it to
        self.umap_cells = cells
        self.umap_settings = dict(settings)

    def select_cells(self, rows: Any) -> None:
        """Select cells by positional row of ``result.cells`` and tell the docks."""
        self.selected_rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.cells_selected.emit(self.selected_rows)

    def cells_of_field(self, key: FieldKey | None = None) -> np.ndarray:
        """Positional rows of ``result.cells`` that lie in a field (the current one by default)."""
        key = key or self.current
        if self.result is None or key is None:
            return np.zeros(0, dtype=np.int64)
        cells = self.result.cells
        mask = (
            (cells[schema.PLATE].astype(str) == key.plate_id)
            & (cells[schema.WELL].astype(str) == key.well)
            & (cells[schema.SITE].astype(int) == key.site)
        )
        return np.flatnonzero(mask.to_numpy())

    # ------------------------------------------------------------------- jobs
    @property
    def job(self) -> str | None:
        """Name of the running long job, or None."""
        return self._job

    def begin_job(self, name: str) -> None:
        """Claim the single job slot (one GPU job at a time).

        Raises
        ------
        JobRunningError
            Another job is running; the message names it.
        """
        if self._job is not None:
            raise JobRunningError(
                f"'{self._job}' is still running: wait for it to finish or cancel it first."
            )
        self._job = name
        self.job_changed.emit(True)

    def end_job(self) -> None:
        """Release the job slot."""
        self._job = None
        self.job_changed.emit(False)


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
