"""The state the phenoadapt docks share, as a Qt-free evented model.

:class:`SessionState` holds the open plates, their plate maps, the field on
screen, the run result, the selected cells, the UMAP coordinates and the
one-job slot.  Docks read it through read-only properties and change it only
through its methods; every method that changes something emits a
:mod:`psygnal` signal, which the docks connect to (``state.result_changed.
connect(...)``).  Nothing here imports Qt, so the model can be driven and
tested from plain Python (a script or a notebook), and no dock can change the
state without the others hearing of it.

psygnal (a napari dependency) calls the connected callbacks synchronously, in
the thread that calls the method; the docks call the model from the main
thread only (workers hand their results to main-thread handlers first).

Signals
-------
plates_changed()
    A plate was opened or closed.
current_changed()
    The field on screen changed (plate, well or site).
platemap_changed(str)
    The plate map of this plate id was replaced or edited.
channels_changed(str)
    The channels of this plate id were renamed or re-roled.
result_changed()
    A new run result (or None).
cells_selected(object)
    Positional rows of ``result.cells`` picked in a dock or in the viewer.
umap_changed()
    UMAP coordinates of the result's cells were stored.
job_changed(bool)
    A long job started (True) or ended (False).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from psygnal import Signal

from .. import schema
from ..errors import PhenoadaptError
from ..plate import Channel, Plate
from ..plate.platemap import PlateMap, write_platemap


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


class SessionState:
    """The evented model of one viewer's phenoadapt session (no Qt; see the module notes)."""

    plates_changed = Signal()
    current_changed = Signal()
    platemap_changed = Signal(str)
    channels_changed = Signal(str)
    result_changed = Signal()
    cells_selected = Signal(object)
    umap_changed = Signal()
    job_changed = Signal(bool)

    def __init__(self) -> None:
        self._plates: dict[str, Plate] = {}
        self._platemaps: dict[str, PlateMap] = {}
        self._current: FieldKey | None = None
        self._result: Any | None = None  # phenoadapt.pipeline.RunResult
        self._selected_rows: np.ndarray = np.zeros(0, dtype=np.int64)
        self._umap_cells: pd.DataFrame | None = None
        self._umap_settings: dict[str, Any] = {}
        self._job: str | None = None

    # -------------------------------------------------------- read-only state
    @property
    def plates(self) -> Mapping[str, Plate]:
        """Open plates by id (read-only: :meth:`add_plate`, :meth:`close_plate`)."""
        return MappingProxyType(self._plates)

    @property
    def platemaps(self) -> Mapping[str, PlateMap]:
        """Plate maps by plate id (read-only: :meth:`set_platemap`, :meth:`edit_platemap`)."""
        return MappingProxyType(self._platemaps)

    @property
    def current(self) -> FieldKey | None:
        """The field on screen (:meth:`set_current`)."""
        return self._current

    @property
    def result(self) -> Any | None:
        """The run result (:meth:`set_result`)."""
        return self._result

    @property
    def selected_rows(self) -> np.ndarray:
        """Positional rows of ``result.cells`` selected (:meth:`select_cells`); a copy."""
        return self._selected_rows.copy()

    @property
    def umap_cells(self) -> pd.DataFrame | None:
        """Per-cell UMAP coordinates of the result, once computed (:meth:`set_umap`)."""
        return self._umap_cells

    @property
    def umap_settings(self) -> dict[str, Any]:
        """The settings that made :attr:`umap_cells` (for the export's run.json); a copy."""
        return dict(self._umap_settings)

    @property
    def job(self) -> str | None:
        """Name of the running long job, or None."""
        return self._job

    # ------------------------------------------------------------------ plates
    def add_plate(self, plate: Plate, platemap: PlateMap | None = None) -> None:
        """Add an opened plate; a blank plate map (every well excluded) when none is given."""
        self._plates[plate.plate_id] = plate
        self._platemaps[plate.plate_id] = platemap or PlateMap.blank(plate.format, plate.plate_id)
        self.plates_changed.emit()
        self.platemap_changed.emit(plate.plate_id)

    def close_plate(self, plate_id: str) -> None:
        """Forget a plate (its layers stay in the viewer)."""
        self._plates.pop(plate_id, None)
        self._platemaps.pop(plate_id, None)
        if self._current is not None and self._current.plate_id == plate_id:
            self._current = None
            self.current_changed.emit()
        self.plates_changed.emit()

    def plate(self, plate_id: str | None = None) -> Plate:
        """A plate by id (the one on screen by default).

        Raises
        ------
        PhenoadaptError
            No such plate is open.
        """
        plate_id = plate_id or (self._current.plate_id if self._current else None)
        if plate_id is None or plate_id not in self._plates:
            raise PhenoadaptError("No plate is open: open a plate folder in the Plate dock first.")
        return self._plates[plate_id]

    def replace_channels(self, plate_id: str, channels: Sequence[Channel]) -> Plate:
        """Rename and re-role a plate's channels (same keys, in the same order).

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
        self._plates[plate_id] = updated
        return updated

    def set_channels(self, plate_id: str, channels: Sequence[Channel]) -> Plate:
        """:meth:`replace_channels`, then tell the docks (``channels_changed``)."""
        updated = self.replace_channels(plate_id, channels)
        self.channels_changed.emit(plate_id)
        return updated

    # ------------------------------------------------------------- plate maps
    def platemap(self, plate_id: str) -> PlateMap:
        """The plate map of an open plate."""
        return self._platemaps[plate_id]

    def set_platemap(self, plate_id: str, platemap: PlateMap) -> None:
        """Replace the plate map of an open plate."""
        self._platemaps[plate_id] = platemap
        self.platemap_changed.emit(plate_id)

    @contextmanager
    def edit_platemap(self, plate_id: str) -> Iterator[PlateMap]:
        """Edit a plate map in place; the docks hear of it when the block ends.

        Examples
        --------
        >>> with state.edit_platemap("P1") as platemap:   # doctest: +SKIP
        ...     platemap.set_role(["A01"], "control")
        """
        try:
            yield self._platemaps[plate_id]
        finally:  # an edit that failed half-way may still have changed wells
            self.platemap_changed.emit(plate_id)

    def unsaved_platemaps(self) -> list[str]:
        """Plate ids whose plate map has changes not written to a file."""
        return [pid for pid, pm in self._platemaps.items() if pm.modified]

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
            written.append(write_platemap(self._platemaps[plate_id], path))
        return written

    # ----------------------------------------------------------------- fields
    def set_current(self, key: FieldKey | None) -> None:
        """Record the field on screen (the viewer's layers are the caller's business)."""
        if key is not None and key.plate_id not in self._plates:
            raise PhenoadaptError(f"Plate {key.plate_id} is not open.")
        self._current = key
        self.current_changed.emit()

    def cells_of_field(self, key: FieldKey | None = None) -> np.ndarray:
        """Positional rows of ``result.cells`` that lie in a field (the current one by default)."""
        key = key or self._current
        if self._result is None or key is None:
            return np.zeros(0, dtype=np.int64)
        cells = self._result.cells
        mask = (
            (cells[schema.PLATE].astype(str) == key.plate_id)
            & (cells[schema.WELL].astype(str) == key.well)
            & (cells[schema.SITE].astype(int) == key.site)
        )
        return np.flatnonzero(mask.to_numpy())

    # ---------------------------------------------------------------- results
    def set_result(self, result: Any | None) -> None:
        """Store a run result (``phenoadapt.pipeline.RunResult``) and tell the docks.

        The selection and the UMAP coordinates belong to the previous result and
        are cleared.
        """
        self._result = result
        self._selected_rows = np.zeros(0, dtype=np.int64)
        self._umap_cells = None
        self._umap_settings = {}
        self.result_changed.emit()

    def set_umap(self, cells: pd.DataFrame, **settings: Any) -> bool:
        """Store the UMAP coordinates of the result's cells (rows of ``result.cells``).

        Returns
        -------
        bool
            False (nothing stored) when the map is of an earlier result.
        """
        if self._result is None or len(cells) != len(self._result.cells):
            return False
        self._umap_cells = cells
        self._umap_settings = dict(settings)
        self.umap_changed.emit()
        return True

    def select_cells(self, rows: Any) -> None:
        """Select cells by positional row of ``result.cells`` and tell the docks."""
        self._selected_rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.cells_selected.emit(self.selected_rows)

    # ------------------------------------------------------------------- jobs
    def begin_job(self, name: str) -> None:
        """Claim the single job slot (one long job at a time, across docks).

        Raises
        ------
        JobRunningError
            Another job is running; the message names it.
        """
        self.check_job_slot()
        self._job = name
        self.job_changed.emit(True)

    def check_job_slot(self) -> None:
        """Raise :class:`JobRunningError` when a long job runs (a dock asks before preparing one).

        Raises
        ------
        JobRunningError
            Another job is running; the message names it.
        """
        if self._job is not None:
            raise JobRunningError(
                f"'{self._job}' is still running: wait for it to finish or cancel it first."
            )

    def end_job(self) -> None:
        """Release the job slot."""
        self._job = None
        self.job_changed.emit(False)
