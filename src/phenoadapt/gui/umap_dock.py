"""Dock widget: UMAP of cell (or well) embeddings before and after adaptation.

The dock reads the run result of the viewer's :class:`~.session.PlateSession`
and shows two UMAP maps side by side, fitted with the same settings and seed:
the features of the unadapted (ERM) network and the adapted ones.  Under each
map, batch-mixing scores by plate (kNN plate accuracy and LISI, treated cells
only) say how much of the plate can still be read from the features; they come
from :mod:`phenoadapt.evaluate`, like the UMAP itself.

The source can also be "Profiles: measurements" (:mod:`.profile_maps`): the
cells segmented in the viewer, as per-well profiles before and after
normalization to each plate's controls, for plates no model fits.

Points can be coloured by plate, treatment, MoA, role or prediction.  A lasso
or rectangle selects the cells inside it (all of them, even when only a
subsample is drawn) through :meth:`PlateSession.select_cells`, so the viewer
highlights them; cells selected elsewhere are outlined on the maps.  "Go to
cell" shows the field of the first selected cell.

The fit is one of the session's long jobs (:class:`~.jobs.JobRunner`): it
waits while another dock's job runs, shows a bar in napari's activity dock,
and stops on Cancel (its child process is ended mid-fit).  Errors (too few
cells for the neighbourhood, a result without embeddings) stay in the dock
until dismissed.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from .. import schema
from ..errors import PhenoadaptError
from ..evaluate import BatchMixing, umap_coordinates
from ..offload import ChildProcess
from ..progress import Progress
from .colours import column_palette
from .common import notify, observe, scrolling_layout
from .jobs import JobControls, JobRunner, JobStyle, abandon_runners, warm_up_activity_dock
from .profile_maps import PROFILES_SOURCE, profile_umap_events, segmented_cells, session_platemaps
from .scatter import (
    DEFAULT_MAX_POINTS,
    SELECTION_MODES,
    ScatterCanvas,
    encode_categories,
    stratified_subsample,
)
from .session import get_session
from .tab_groups import join_tab_group
from .umap_maps import UmapMaps, map_events, plate_mixing

if TYPE_CHECKING:
    import napari

#: Feature sources: the run result's embeddings, or the measurement profiles of segmented cells.
SOURCES = ("Model embeddings", PROFILES_SOURCE)
#: Points shown: one per cell, or one per well (mean of its cells' embeddings).
LEVELS = {"Cells": "cell", "Wells (mean of cells)": "well"}
#: Colour options and the column of the point table each one reads.
COLOUR_BY = {
    "Plate": schema.PLATE,
    "Treatment": schema.TREATMENT,
    "MoA": schema.MOA,
    "Role": schema.ROLE,
    "Prediction": schema.PREDICTION,
}
#: The two feature spaces, in panel order: attribute of the run result and title.
SPACES = {
    "before": ("embeddings_unadapted", "Before adaptation (ERM)"),
    "after": ("embeddings", "After adaptation"),
}
SHOW = {
    "Before and after": ("before", "after"),
    "After adaptation": ("after",),
    "Before adaptation": ("before",),
}
#: Default cap on the cells of a cell map: a 384-well plate's ~100,000 cells are mapped
#: whole (about 15 s per map on 2 cores, docs/umap-speed.md; the dock fits two maps,
#: before and after); a larger run is mapped through a sample stratified by well
#: unless the user raises the cap.
MAX_CELLS = 100_000


def embedding_spaces(result: Any) -> dict[str, np.ndarray]:
    """The result's feature spaces that are present (``"before"`` needs the ERM features).

    Raises
    ------
    PhenoadaptError
        When the result has no embeddings or their rows do not match its cells.
    """
    n_cells = len(result.cells)
    spaces = {}
    for key, (attribute, _title) in SPACES.items():
        values = getattr(result, attribute, None)
        if values is None:
            continue
        values = np.asarray(values)
        if values.ndim != 2 or len(values) != n_cells:
            raise PhenoadaptError(
                f"The run result's {attribute} have shape {values.shape} but there are "
                f"{n_cells} cells: the result is inconsistent; run the plates again."
            )
        spaces[key] = values
    if "after" not in spaces:
        raise PhenoadaptError(
            "The run result holds no cell embeddings, so there is nothing to map: run the "
            "plates again with a model that produces features."
        )
    return spaces


def point_table(
    result: Any, level: str, max_cells: int | None = None, seed: int = 0
) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    """Points to map: their metadata, the point of each cell and their features per space.

    Parameters
    ----------
    result
        A run result (``cells``, ``wells``, ``embeddings``, ``embeddings_unadapted``).
    level
        ``"cell"`` (one point per cell) or ``"well"`` (mean of each well's cells,
        through :func:`phenoadapt.embed.aggregate_embeddings`).
    max_cells
        With cell points, map at most this many cells: a seeded sample stratified
        by plate and well (UMAP time grows faster than the number of cells).
    seed
        Seed of that sample.
    """
    spaces = embedding_spaces(result)
    # Cells the pipeline could not predict have NaN features: they get no point.
    mapped = np.logical_and.reduce([np.isfinite(v).all(axis=1) for v in spaces.values()])
    if not mapped.any():
        raise PhenoadaptError(
            f"None of the {len(mapped):,} cells of the run result has features (all are NaN): "
            "check the run's failures and run the plates again."
        )
    cells = result.cells.reset_index(drop=True)
    if level == "cell" and max_cells is not None and mapped.sum() > max_cells:
        rows = np.flatnonzero(mapped)
        wells = cells.loc[rows, schema.PLATE].astype(str) + "/" + cells.loc[rows, schema.WELL]
        keep = rows[stratified_subsample(encode_categories(wells.to_numpy())[1], max_cells, seed)]
        mapped = np.zeros_like(mapped)
        mapped[keep] = True
    cells = cells[mapped].reset_index(drop=True)
    spaces = {key: values[mapped] for key, values in spaces.items()}
    point_of_cell = np.full(len(mapped), -1, dtype=np.int64)
    if level == "cell":
        point_of_cell[mapped] = np.arange(len(cells))
        return cells, point_of_cell, spaces
    from ..embed import aggregate_embeddings, cell_embedding_table

    keys = [schema.PLATE, schema.WELL]
    # First-appearance order, as aggregate_embeddings groups the wells.
    point_of_cell[mapped] = cells.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    features, points = {}, None
    for key, values in spaces.items():
        wells = aggregate_embeddings(cell_embedding_table(cells, values), "well", "mean")
        columns = [c for c in wells.columns if c.startswith(schema.EMBEDDING_PREFIX)]
        features[key] = wells[columns].to_numpy(dtype=np.float64)
        points = wells.drop(columns=columns)
    points = _with_well_predictions(points, result)
    return points, point_of_cell, features


def _with_well_predictions(points: pd.DataFrame, result: Any) -> pd.DataFrame:
    """Add the per-well prediction of the run (the cells' own predictions are per cell)."""
    wells = getattr(result, "wells", None)
    if wells is None or schema.PREDICTION not in getattr(wells, "columns", ()):
        return points
    keys = [schema.PLATE, schema.WELL]
    table = wells[keys + [schema.PREDICTION]].astype({k: str for k in keys})
    merged = points.astype({k: str for k in keys}).merge(table, on=keys, how="left")
    return merged.set_axis(points.index)


def umap_job(
    result: Any,
    level: str,
    n_neighbors: int = 15,
    seed: int = 0,
    max_cells: int | None = None,
    fit: Callable[..., np.ndarray] = umap_coordinates,
) -> Generator[tuple[str, Any], None, UmapMaps]:
    """Fit a UMAP per feature space and score its mixing, yielding progress.

    Yields ``("progress", (message, done, total))``; returns :class:`UmapMaps`.
    ``fit(values, n_neighbors=, seed=)`` makes the 2-D coordinates
    (:func:`umap_coordinates`, here or in a child process).

    Raises
    ------
    PhenoadaptError
        When the result has no embeddings, or (from :func:`umap_coordinates`)
        when there are not more points than UMAP neighbours.
    """
    yield "progress", ("Preparing points...", 0, 0)
    points, point_of_cell, features = point_table(result, level, max_cells, seed)
    noun = "cells" if level == "cell" else "wells"
    coordinates: dict[str, np.ndarray] = {}
    mixing: dict[str, BatchMixing | str] = {}
    total = 2 * len(features)
    for step, (key, values) in enumerate(features.items()):
        title = SPACES[key][1].split(" (")[0].lower()  # "before adaptation"
        yield "progress", (f"UMAP of {len(values):,} {noun} {title}...", 2 * step, total)
        coordinates[key] = fit(values, n_neighbors=n_neighbors, seed=seed)
        yield "progress", (f"Batch mixing, {title}...", 2 * step + 1, total)
        mixing[key] = plate_mixing(points, values, seed)
    yield "progress", ("Done.", total, total)
    has_features = np.logical_and.reduce(
        [np.isfinite(v).all(axis=1) for v in embedding_spaces(result).values()]
    )
    return UmapMaps(
        level,
        points,
        point_of_cell,
        coordinates,
        mixing,
        n_neighbors,
        seed,
        n_no_features=int(np.count_nonzero(~has_features)),
    )


def umap_events(
    result: Any,
    level: str,
    n_neighbors: int = 15,
    seed: int = 0,
    max_cells: int | None = None,
    fit: Callable[..., np.ndarray] = umap_coordinates,
) -> Generator[tuple[str, Any], None, UmapMaps | None]:
    """:func:`umap_job` for a worker: errors become ``("error", message)`` events."""
    return (
        yield from map_events(umap_job(result, level, n_neighbors, seed, max_cells, fit), "UMAP")
    )


#: Fit UMAPs in a child process (True) or in the worker thread (False).
FIT_IN_CHILD_PROCESS = True


def _terminate_later(child: ChildProcess) -> Callable[..., None]:
    # A plain function holding the child, not the widget: Qt calls it after the
    # widget is gone.
    def terminate(*_args: Any) -> None:
        child.terminate()

    return terminate


def mixing_summary(mixing: BatchMixing | str) -> str:
    """One line for a panel title: kNN plate accuracy (with chance) and LISI."""
    if isinstance(mixing, str):
        return f"mixing: {mixing}"
    return (
        f"kNN plate acc. {mixing.knn_accuracy:.2f} (chance {mixing.chance:.2f}) · "
        f"LISI {mixing.lisi:.2f} of {mixing.n_batches}"
    )


class UmapWidget(QWidget):
    """UMAP maps of the run result, before and after adaptation, with selection.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when the dock opens).
    max_points
        Points drawn as dots per map; above it, a density plus a stratified subsample.
    """

    def __init__(self, napari_viewer: napari.Viewer, max_points: int = DEFAULT_MAX_POINTS) -> None:
        super().__init__()
        join_tab_group(self)  # with the other docks of its group once napari docks it
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        warm_up_activity_dock(napari_viewer)  # the first job's bar relays the window out
        self.runner: JobRunner | None = None
        self._runners: list[JobRunner] = []
        self.maps: UmapMaps | None = None
        self.errors: list[str] = []
        self.shown_points = 0
        self._restart = False
        # A result whose maps were not fitted yet because nobody was looking.
        self._stale = False
        # UMAP fits run in a child process: numba's loops hold the GIL, which would
        # freeze napari's main thread; Cancel ends the child mid-fit.
        self._child = ChildProcess() if FIT_IN_CHILD_PROCESS else None
        self._cancelled = threading.Event()
        if self._child is not None:
            self.destroyed.connect(_terminate_later(self._child))
        self._build(max_points)
        observe(self, self.session.result_changed, self._on_result)
        observe(self, self.session.cells_selected, self._on_cells_selected)
        observe(self, self.session.job_changed, self._on_job_changed)
        runners = self._runners
        self.destroyed.connect(lambda *_: abandon_runners(runners))
        self._follow_theme()
        theme_event = getattr(getattr(napari_viewer, "events", None), "theme", None)
        if theme_event is not None:
            theme_event.connect(lambda _event: self._follow_theme())
        if self.session.result is not None:
            self._request()

    def _follow_theme(self) -> None:
        """Draw the maps in the viewer's theme colours (dark by default), not white."""
        from napari.utils.theme import get_theme

        try:
            theme = get_theme(self.viewer.theme)
        except (KeyError, ValueError, AttributeError):  # a theme napari does not know
            return
        self.canvas.set_theme(theme.background.as_hex(), theme.text.as_hex())

    def _request(self) -> None:
        """Fit now if the dock is on screen; otherwise when it is shown (or Compute)."""
        if self.isVisible():
            self.compute()
            return
        self._stale = True
        self.status.setText("A new result: its maps are fitted when this dock is shown.")

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        """Fit the maps of a result that arrived while the dock was hidden."""
        super().showEvent(event)
        if self._stale and self.session.result is not None and self.worker is None:
            self.compute()

    # -- layout ---------------------------------------------------------------
    def _build(self, max_points: int) -> None:
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.source.setToolTip(
            "The model's cell embeddings (Run dock), or the measurements of the cells "
            "segmented in the Segment dock as per-well profiles (no model needed)."
        )
        self.source.currentTextChanged.connect(self._on_source)
        self.level = QComboBox()
        self.level.addItems(LEVELS)
        self.level.setToolTip("One point per cell, or per well (mean of its cells' features).")
        self.level.currentTextChanged.connect(lambda _text: self.compute())
        self.colour = QComboBox()
        self.colour.addItems(COLOUR_BY)
        self.colour.currentTextChanged.connect(lambda _text: self.redraw())
        self.show_spaces = QComboBox()
        self.show_spaces.addItems(SHOW)
        self.show_spaces.setToolTip("Both maps side by side, or one of them.")
        self.show_spaces.currentTextChanged.connect(lambda _text: self.redraw())
        self.neighbours = QSpinBox()
        self.neighbours.setRange(2, 200)
        self.neighbours.setValue(15)
        self.neighbours.setToolTip("UMAP neighbourhood: larger values favour the global layout.")
        self.seed = QSpinBox()
        self.seed.setRange(0, 999_999)
        self.seed.setValue(0)  # sets the text too: a fresh QSpinBox shows nothing for 0
        self.seed.setToolTip("The same seed gives the same maps.")
        self.max_cells = QSpinBox()
        self.max_cells.setRange(100, 10_000_000)
        self.max_cells.setSingleStep(10_000)
        self.max_cells.setGroupSeparatorShown(True)
        self.max_cells.setValue(MAX_CELLS)
        self.max_cells.setToolTip(
            "Cell maps use at most this many cells (a sample stratified by well): on two "
            "cores a UMAP of 10,000 cells takes about 2 s per map, 100,000 cells about 15 s."
        )
        # Buttons, bar, status and error panel of the shared job runner (see jobs.py).
        self.controls = JobControls("Compute UMAP")
        self.compute_button = self.controls.start_button
        self.cancel_button = self.controls.cancel_button
        self.progress = self.controls.progress
        self.status = self.controls.status
        self.compute_button.clicked.connect(self.compute)
        self.cancel_button.clicked.connect(self.cancel)
        self.status.setText("No result yet: run the plates in the Run dock.")

        self.canvas = ScatterCanvas(self._on_select, max_points=max_points)
        self.canvas.setMinimumHeight(220)
        from matplotlib.backends.backend_qtagg import NavigationToolbar2QT

        self.toolbar = NavigationToolbar2QT(self.canvas, self)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.mixing = QLabel("")
        self.mixing.setWordWrap(True)

        self.mode = QComboBox()
        self.mode.addItems(SELECTION_MODES)
        self.mode.setToolTip("Drag on a map to select the cells inside the outline.")
        self.mode.currentTextChanged.connect(self.canvas.set_mode)
        self.goto_button = QPushButton("Go to cell")
        self.goto_button.setToolTip("Show the field of the first selected cell.")
        self.goto_button.clicked.connect(lambda: self.go_to_cell(0))
        self.prev_button = QPushButton("<")
        self.prev_button.setToolTip("Previous selected cell")
        self.prev_button.clicked.connect(lambda: self.step_cell(-1))
        self.next_button = QPushButton(">")
        self.next_button.setToolTip("Next selected cell")
        self.next_button.clicked.connect(lambda: self.step_cell(1))
        for button in (self.prev_button, self.next_button):
            button.setMaximumWidth(32)
        self._cell_index = 0  # which selected cell Go to / < / > show
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(lambda: self.session.select_cells([]))
        self.selection = QLabel("No cells selected.")

        form = QFormLayout()
        form.addRow("Source", self.source)
        form.addRow("Points", self.level)
        form.addRow("Colour by", self.colour)
        form.addRow("Show", self.show_spaces)
        settings = QHBoxLayout()
        settings.addWidget(QLabel("Neighbours"))
        settings.addWidget(self.neighbours)
        settings.addWidget(QLabel("Seed"))
        settings.addWidget(self.seed)
        form.addRow(settings)
        form.addRow("Map at most (cells)", self.max_cells)
        select = QHBoxLayout()
        select.addWidget(QLabel("Select with"))
        select.addWidget(self.mode)
        select.addWidget(self.prev_button)
        select.addWidget(self.goto_button)
        select.addWidget(self.next_button)
        select.addWidget(self.clear_button)
        layout = scrolling_layout(self)
        layout.addLayout(form)
        layout.addWidget(self.controls)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.canvas, stretch=1)
        layout.addWidget(self.note)
        layout.addWidget(self.mixing)
        layout.addLayout(select)
        layout.addWidget(self.selection)

    # -- computing ------------------------------------------------------------
    def _on_source(self, source: str) -> None:
        """Profiles are always one point per well: the cell options do not apply."""
        cells = source != PROFILES_SOURCE
        self.level.setEnabled(cells)
        self.max_cells.setEnabled(cells)
        self.compute()

    @property
    def worker(self) -> Any:
        """The napari worker of the fit in progress (None when idle)."""
        return self.runner.worker if self.runner is not None else None

    def compute(self) -> None:
        """Fit the UMAP maps of the session's result in a worker thread.

        The fit is one of the session's long jobs: while another dock's job
        runs, the dock waits and fits once the job slot is free.
        """
        if self.runner is not None:  # settings changed mid-way: start again once it stops
            self._restart = True
            self._cancelled.set()
            self.runner.cancel()
            return
        busy = self.session.job
        if busy is not None:
            self._stale = True
            self.status.setText(f"Waiting for '{busy}' to finish: the maps are fitted next.")
            return
        try:
            events, args = self._fit_job()
        except PhenoadaptError as exc:
            self.status.setText(str(exc))
            return
        self._stale = False
        self.errors = []
        self.runner = JobRunner(
            self.session,
            "UMAP",
            events,
            args,
            style=JobStyle.EVENTS,
            on_event=self._on_event,
            on_result=self._on_returned,
            on_end=self._on_end,
            progress_of=_umap_progress,
        )
        try:
            self.runner.start()
        except PhenoadaptError as exc:
            self.runner = None
            self.controls.refused(exc)
            return
        self._runners.append(self.runner)
        self.controls.busy("Computing UMAP...")  # busy: a fit reports nothing until it ends

    def _fit_job(self) -> tuple[Callable[..., Any], tuple]:
        """The event generator of the chosen source and its arguments.

        Raises
        ------
        PhenoadaptError
            Nothing to map (no result; no segmented cells for profiles).
        """
        result = self.session.result
        profiles = self.source.currentText() == PROFILES_SOURCE
        if profiles:
            cells = segmented_cells(self.viewer)  # the layers are read here, in the GUI thread
        elif result is None:
            raise PhenoadaptError("No result yet: run the plates in the Run dock.")
        self._cancelled = threading.Event()
        fit = umap_coordinates
        if self._child is not None:
            fit = functools.partial(
                self._child.call, umap_coordinates, cancel=self._cancelled.is_set
            )
        if profiles:
            args = (cells, session_platemaps(self.session), self.neighbours.value(),
                    self.seed.value(), fit)  # fmt: skip
            return profile_umap_events, args
        args = (result, LEVELS[self.level.currentText()], self.neighbours.value(),
                self.seed.value(), self.max_cells.value(), fit)  # fmt: skip
        return umap_events, args

    def cancel(self) -> None:
        """Stop the UMAP fit in progress (its child process is ended at once)."""
        if self.runner is not None:
            self._restart = False
            self._cancelled.set()
            self.runner.cancel()
            self.status.setText("Cancelled." if self._child else "Cancelling after this fit...")

    def _on_job_changed(self, running: bool) -> None:
        """The job slot was freed: fit a result that waited for it (when on screen)."""
        if not running and self._stale and self.runner is None and self.isVisible():
            self.compute()

    def _on_event(self, event: tuple[str, Any]) -> None:
        kind, value = event
        if kind == "progress":
            message, done, total = value
            self.status.setText(message)
            if total and done >= total:
                self.progress.setRange(0, total)
                self.progress.setValue(done)
        elif kind == "error":
            self.errors.append(value)
            self.status.setText(value)
            notify("error", value)

    def _on_returned(self, maps: UmapMaps | None) -> None:
        if maps is None:
            return
        self.maps = maps
        self.session.set_umap(maps.cell_coordinates(), level=maps.level,
                              n_neighbors=maps.n_neighbors, seed=maps.seed)  # fmt: skip
        self.redraw()
        self._on_cells_selected(self.session.selected_rows)
        self.status.setText(
            f"UMAP of {len(maps.points):,} {maps.noun} ({maps.n_neighbors} neighbours, "
            f"seed {maps.seed})."
        )

    def _on_end(self, outcome: str) -> None:
        runner, self.runner = self.runner, None
        status = self.status.text()
        if outcome == "cancelled" and self._child is not None:
            status = "Cancelled."
        self.controls.idle(status)
        self.progress.setValue(1 if self.maps is not None else 0)
        if runner is not None and outcome == "failed":
            self.controls.ended(runner, "UMAP failed:")
        elif self.errors:  # kept in the dock: the notification fades
            self.controls.show_error(self.errors[-1])
        if self._restart:
            self._restart = False
            self.compute()

    def _on_result(self) -> None:
        self.maps = None
        self.canvas.figure.clear()
        self.canvas.draw_idle()
        self.note.setText("")
        self.mixing.setText("")
        self.selection.setText("No cells selected.")  # set_result clears the selection
        # Fitting costs seconds of CPU: only for a dock someone is looking at (issue 12.5).
        self._request()

    # -- drawing --------------------------------------------------------------
    def spaces(self) -> tuple[str, ...]:
        """Feature spaces to draw, of those the maps have."""
        if self.maps is None:
            return ()
        wanted = SHOW[self.show_spaces.currentText()]
        present = tuple(k for k in wanted if k in self.maps.coordinates)
        return present or tuple(self.maps.coordinates)

    def redraw(self) -> None:
        """Draw the maps with the chosen colouring (no UMAP is fitted here)."""
        maps = self.maps
        if maps is None:
            return
        colour = self.colour.currentText()
        column = COLOUR_BY[colour]
        if column in maps.points.columns:
            labels = maps.points[column].fillna("unknown").astype(str).to_numpy()
        else:
            labels = np.full(len(maps.points), f"no {colour.lower()} in result", dtype=object)
        categories, codes = encode_categories(labels)
        # The session's colours: the class, plate or role has them in every dock.
        palette = column_palette(self.session, column)
        spaces = self.spaces()
        titles = [f"{self._title(key)}\n{mixing_summary(maps.mixing[key])}" for key in spaces]
        self.shown_points = self.canvas.plot(
            [maps.coordinates[key] for key in spaces],
            titles,
            codes,
            [palette.label(c) for c in categories],
            seed=maps.seed,
            legend_title=colour,
            palette=np.asarray(palette.rgba(categories)).reshape(-1, 4),
        )
        self.note.setText(self._note(maps, colour))
        self.mixing.setText(self._mixing_text(maps))

    def _title(self, key: str) -> str:
        if self.maps is not None and key in self.maps.titles:
            return self.maps.titles[key]
        title = SPACES[key][1]
        methods = getattr(self.session.result, "methods", None) or {}
        if key == "after" and methods:
            title += f" ({', '.join(sorted(set(map(str, methods.values()))))})"
        return title

    def _note(self, maps: UmapMaps, colour: str) -> str:
        n = len(maps.points)
        note = ""
        if self.shown_points < n:
            note = (
                f"Showing {self.shown_points:,} of {n:,} {maps.noun} (sampled within each "
                f"{colour if colour == 'MoA' else colour.lower()}); the grey density shows "
                f"all of them, and a selection takes every {maps.noun[:-1]} inside the outline."
            )
        if maps.n_no_features:
            note += (
                f" {maps.n_no_features:,} cells without features (not predicted) are "
                "left off the maps."
            )
        sampled_out = maps.n_unmapped - maps.n_no_features
        if sampled_out:
            note += (
                f" {sampled_out:,} more cells are not mapped ('Map at most' is "
                f"{len(maps.points):,}); a selection cannot reach them."
            )
        if maps.source_note:
            note += " " + maps.source_note
        elif "before" not in maps.coordinates:
            note += (
                " No 'before' map: the run kept no unadapted features "
                "(run with 'compare unadapted')."
            )
        return note.strip()

    def _mixing_text(self, maps: UmapMaps) -> str:
        parts = []
        for key in maps.coordinates:
            mixing = maps.mixing[key]
            title = maps.titles.get(key, SPACES[key][1])
            parts.append(f"{title}: {mixing_summary(mixing)}")
        sample = next((m for m in maps.mixing.values() if isinstance(m, BatchMixing)), None)
        head = "Batch mixing by plate"
        if sample is not None:
            head += f" ({sample.n_samples:,} treated {maps.noun}, controls left out)"
        return (
            f"{head}. " + "; ".join(parts) + ". Well mixed: kNN accuracy near chance, "
            "LISI near the number of plates."
        )

    # -- selection ------------------------------------------------------------
    def _on_select(self, _panel: int, points: np.ndarray) -> None:
        if self.maps is not None and len(self.maps.point_of_cell):  # profile wells hold no cell
            self.session.select_cells(self.maps.cells_of(points))

    def _on_cells_selected(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self._cell_index = 0
        if self.maps is None:
            self.selection.setText(f"{len(rows):,} cells selected.")
            return
        points = self.maps.points_of(rows)
        self.canvas.highlight(points)
        text = f"{len(rows):,} cells selected"
        if self.maps.level == "well":
            text += f" in {len(points):,} wells"
        self.selection.setText(text + "." if len(rows) else "No cells selected.")

    def step_cell(self, step: int) -> None:
        """Go to the next (``step=1``) or previous (``-1``) selected cell, wrapping around."""
        n = len(self.session.selected_rows)
        if n:
            self.go_to_cell((self._cell_index + step) % n)
        else:
            self.go_to_cell(0)  # says what to do

    def go_to_cell(self, index: int = 0) -> None:
        """Show the field of a selected cell (the first by default) and centre the view on it."""
        rows = self.session.selected_rows
        result = self.session.result
        if result is None or len(rows) == 0:
            notify("error", "Select cells on a map first (lasso or rectangle), then go to one.")
            return
        self._cell_index = int(index) % len(rows)
        cell = result.cells.iloc[int(rows[self._cell_index])]
        self.selection.setText(
            f"Cell {self._cell_index + 1:,} of {len(rows):,} selected: {cell[schema.PLATE]} "
            f"{cell[schema.WELL]} site {cell[schema.SITE]}."
        )
        try:
            self.session.show_field(
                str(cell[schema.PLATE]), str(cell[schema.WELL]), int(cell[schema.SITE])
            )
        except PhenoadaptError as exc:
            notify("error", str(exc))
            return
        if schema.CENTROID_Y in cell.index and schema.CENTROID_X in cell.index:
            # napari >= 0.9 keeps the camera on the scene; older versions on the viewer.
            camera = getattr(self.viewer, "scene", self.viewer).camera
            camera.center = (float(cell[schema.CENTROID_Y]), float(cell[schema.CENTROID_X]))


def _umap_progress(event: tuple[str, Any]) -> Progress | None:
    """The napari progress of a UMAP event (``("progress", (message, done, total))``)."""
    kind, value = event
    if kind != "progress":
        return None
    message, done, total = value
    return Progress(str(message), int(done), int(total or 0))
