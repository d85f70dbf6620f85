"""The results overlay: cells of the field on screen coloured by predicted MoA.

When a run result arrives (``session.result_changed``) or another field is
shown (``session.current_changed``), :class:`ResultsOverlay` puts a Labels
layer named :data:`LAYER_NAME` over the field:

- label values are the ``cell_id`` of ``result.cells``: the field is segmented
  again with the run's :class:`~phenoadapt.cells.SegmentationParams`, which
  gives the same labels the pipeline cut its crops from (segmentation is
  deterministic), in a worker thread so the viewer stays responsive;
- each cell is outlined (napari ``contour``) in the colour of its predicted
  MoA, the session's colour of that class in every dock
  (:func:`~phenoadapt.gui.colours.session_class_palette`, shown in
  :class:`ResultsLegend`); a toggle adds a low fill (:data:`FILL_NAME`) under
  the outlines; both layers are read-only, so a brush click cannot paint;
- the layer's ``features`` hold class, confidence, uncertainty, treatment,
  well and known MoA, so hovering a cell shows them in the status bar (no
  row numbers of the result table).

A result of a model trained on whole fields (``result.unit == "site"``) has
no cells to outline: the overlay draws nothing, says so once in a notification,
and the legend shows the field's prediction.

Clicking a cell selects it (``session.select_cells``; Shift adds to the
selection); cells selected anywhere (the UMAP dock, a table) are outlined in
white in a second Labels layer, :data:`SELECTION_NAME`.

Adding a Labels layer to napari takes 0.15-0.3 s of the main thread (its vispy
visual, the polygon and brush overlays every Labels layer gets, its layer
controls), which froze the viewer when the first result arrived.  So the
outline layer is built ahead of time, empty and hidden, under
:data:`STANDBY_NAME`, as soon as a field is on screen (when the Run dock opens,
or when the first field is shown): the result only fills it, shows it and
renames it :data:`LAYER_NAME` (a few tens of milliseconds).  Without a result
the layer goes back to standby rather than being removed, so later runs reuse it.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QObject, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QCheckBox, QGridLayout, QLabel, QVBoxLayout, QWidget

from .. import schema
from ..cells import SegmentationParams, segment_field
from ..evaluate.accuracy import accuracy_table
from ..palette import ClassPalette
from .colours import session_class_palette
from .common import call_later, later_timer, observe
from .jobs import ErrorPanel, JobKind, JobRunner, JobStyle, error_text
from .layers import META_KEY
from .session import FieldKey, PlateSession, get_session

LAYER_NAME = "predicted MoA"
#: The outline layer while no result is shown: built ahead of time, empty and hidden.
STANDBY_NAME = "predicted MoA (after a run)"
SELECTION_NAME = "selected cells"
FILL_NAME = "predicted MoA (fill)"
#: Outline width of the cells, in screen pixels (napari Labels ``contour``).
CONTOUR = 2
#: Opacity of the optional fill under the outlines: low, so the stains stay readable.
FILL_OPACITY = 0.25


def per_field(result: Any) -> bool:
    """True for a result of a site-unit model: one prediction per field, no cell labels."""
    return getattr(result, "unit", "cell") == "site"


#: Fields whose labels are kept, so going back to a field is instant.
_CACHE_SIZE = 8


def field_features(
    result: Any, rows: np.ndarray, palette: ClassPalette | None = None
) -> pd.DataFrame:
    """The layer ``features`` of a field's cells (rows of ``result.cells``).

    These are what hovering a cell shows in napari's status bar: ``index``
    (the label value, the cell id; napari does not show it), ``class`` (the
    prediction, ``(control)`` after negative controls), ``confidence``,
    ``uncertainty``, ``treatment``, ``well`` and ``moa`` (known, from the plate
    map).  Row numbers of the result table are kept out: they mean nothing to
    the user (see :meth:`ResultsOverlay.cell_rows_at`).
    """
    cells = result.cells.iloc[rows]

    def column(name: str, default: Any = None) -> np.ndarray:
        if name in cells:
            return cells[name].to_numpy()
        return np.full(len(cells), default, dtype=object)

    classes = column(schema.PREDICTION).astype(str)
    if palette is not None:
        classes = np.asarray([palette.label(c) for c in classes], dtype=object)
    return pd.DataFrame(
        {
            "index": cells[schema.CELL_ID].to_numpy(dtype=np.int64),
            "class": classes,
            "confidence": np.round(column(schema.CONFIDENCE, np.nan).astype(float), 3),
            "uncertainty": np.round(column(schema.UNCERTAINTY, np.nan).astype(float), 3),
            "treatment": column(schema.TREATMENT, ""),
            "well": column(schema.WELL).astype(str),
            "moa": column(schema.MOA, ""),
        }
    )


def label_colormap(labels: np.ndarray, classes: np.ndarray, palette: ClassPalette) -> Any:
    """A ``DirectLabelColormap`` giving each cell label the colour of its predicted class."""
    from napari.utils.colormaps import DirectLabelColormap

    color_dict: dict[int | None, Any] = {None: "transparent", 0: "transparent"}
    for label, name in zip(labels, classes, strict=True):
        color_dict[int(label)] = palette.colour(name)
    return DirectLabelColormap(color_dict=color_dict)


def _empty_colormap() -> Any:
    """A label colormap that draws nothing (the standby layer's)."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent"})


def read_only(layer: Any) -> None:
    """Make a Labels layer read-only: no brush, fill or eraser, now or after napari resets it.

    napari sets ``editable`` back to True in some updates (new data, a change
    of dimensions); the event handler turns it off again each time.
    """
    layer.editable = False

    def keep_off(_event: Any = None) -> None:
        if layer.editable:
            layer.editable = False

    layer.events.editable.connect(keep_off)


def accuracy_summary(result: Any) -> pd.DataFrame:
    """Per plate accuracy against the plate map's MoA, as the pipeline scores it.

    Uses ``result.accuracy`` when the pipeline computed it; otherwise the same
    rule (:func:`phenoadapt.evaluate.accuracy_table`: treated cells whose MoA is
    a class; controls and excluded wells never) on ``result.cells``.  Columns:
    plate, n_cells, cell_accuracy, n_wells, well_accuracy.
    """
    table = getattr(result, "accuracy", None)
    if (table is None or not len(table)) and schema.PREDICTION in result.cells:
        table = accuracy_table(result.cells, getattr(result, "wells", None), result.classes)
    if table is None or not len(table):
        return pd.DataFrame(columns=[schema.PLATE, "n_cells", "cell_accuracy"])
    return table.reset_index(drop=schema.PLATE in table.columns)


def _segment(plate: Any, key: FieldKey, params: SegmentationParams) -> tuple[FieldKey, np.ndarray]:
    image = plate.read_field(key.well, key.site)
    name = f"plate {key.plate_id}, well {key.well}, site {key.site}"
    return key, segment_field(image, plate.channels, params, field_name=name).cells


def _warm_up_label_textures() -> None:
    """Compile napari's label-colour kernels (numba) ahead of the first result.

    (And the other first-use costs of the overlay's first layer, see below.)

    The first ``DirectLabelColormap`` drawn in a process compiles them, which
    took 3-4 s on the main thread when the first result arrived.  Compiling
    from a background thread while the dock opens removes that freeze.  It uses
    a private napari method, so any failure just leaves the compile for later.
    """
    from napari.utils.colormaps import DirectLabelColormap

    try:
        colormap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "red"})
        labels = np.arange(16, dtype=np.int32).reshape(4, 4)
        colormap._data_to_texture(labels)
        # The layer's thumbnail maps a strided view: numba compiles that array
        # layout apart, and did so on the main thread when the first overlay was
        # added (0.5-0.9 s, found by bench_gui_stall.py --trace-stalls).
        colormap.map(labels[::2, ::2])
        colormap.map(labels)
        # The standby layer (built hidden) maps its texture values, uint8, through a
        # colormap: another numba signature, 0.6 s of main-thread compile otherwise.
        colormap.map(labels.astype(np.uint8))
        # The first line visual of a process (the overlay's, here) computes vispy's
        # dash patterns (cached after): 0.1-0.2 s more of main-thread work.
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()
    except Exception:  # noqa: BLE001, S110 - an optimisation only
        pass


class ResultsOverlay(QObject):
    """Keeps the predicted-MoA Labels layer in step with the session (one per viewer).

    Parameters
    ----------
    viewer
        The napari viewer.
    session
        Its :class:`~.session.PlateSession`.

    Attributes
    ----------
    segmentation
        Parameters used to segment a field again (the run dock sets those of its run).
    fill
        Whether a low fill goes under the outlines (see :meth:`set_fill`).
    """

    #: The outlines of a field could not be made (the message, worded for the docks).
    failed = Signal(str)
    #: Emitted by the warm-up thread when napari's label kernels are compiled.
    _warmed = Signal()

    def __init__(self, viewer: Any, session: PlateSession) -> None:
        super().__init__()
        self._viewer = weakref.ref(viewer)
        self.session = session
        self.segmentation = SegmentationParams()
        self._labels: OrderedDict[tuple[FieldKey, SegmentationParams], np.ndarray] = OrderedDict()
        self._pending: FieldKey | None = None
        self._rows = pd.Series(dtype=np.int64)
        self.fill = False
        self.runner: JobRunner | None = None
        self.last_error = ""  # why the last field could not be outlined
        self._warm = False  # napari's label kernels compiled (see _warm_up_label_textures)
        self._filled = 0  # counts fills of the outline layer: a later one cancels a pending show
        self.controls_warmed = False  # the standby layer's controls were shown once
        observe(self, session.result_changed, self._on_result_changed)
        observe(self, session.current_changed, self.refresh)
        observe(self, session.cells_selected, self._show_selection)
        # The standby layer is built once the kernels are compiled: building it before
        # would compile them on the main thread (seconds).  The signal crosses threads.
        self._warmed.connect(self._on_warmed)
        threading.Thread(target=self._warm_up, daemon=True).start()

    def _warm_up(self) -> None:
        _warm_up_label_textures()
        try:
            self._warmed.emit()
        except RuntimeError:  # the overlay (a Qt object) was deleted meanwhile
            pass

    def _on_warmed(self) -> None:
        self._warm = True
        self._stand_by()  # a no-op when a result is already shown

    # -- layers -----------------------------------------------------------------
    @property
    def viewer(self) -> Any:
        return self._viewer()

    def layer(self, name: str = LAYER_NAME) -> Any | None:
        """The overlay layer (or the selection layer) when it is in the viewer."""
        viewer = self.viewer
        if viewer is None or name not in viewer.layers:
            return None
        return viewer.layers[name]

    def _remove_layers(self) -> None:
        """Nothing to show: fill and selection go, the outline layer goes back to standby."""
        viewer = self.viewer
        for name in (FILL_NAME, SELECTION_NAME):
            if viewer is not None and name in viewer.layers:
                viewer.layers.remove(name)
        self._filled += 1  # a standby layer filled but not shown yet stays hidden
        for layer in (self.layer(), self.layer(STANDBY_NAME)):
            if layer is not None and (layer.visible or layer.data.any()):
                layer.visible = False
                layer.data = np.zeros_like(layer.data)
                layer.colormap = _empty_colormap()
                layer.features = pd.DataFrame()
                layer.metadata = {}
                layer.name = STANDBY_NAME
        self._rows = pd.Series(dtype=np.int64)
        if self._warm:
            # A later turn: the field on screen is drawn first (opening a field costs).
            call_later(self._stand_by)

    def _field_shape(self) -> tuple[int, ...] | None:
        key = self.session.current
        plate = self.session.plates.get(key.plate_id) if key is not None else None
        return None if plate is None else tuple(int(n) for n in plate.field_shape)

    def _stand_by(self) -> None:
        """Build the empty, hidden outline layer for the field on screen, if it is missing.

        Done while nothing is shown, so that the first result does not pay for
        napari's layer construction (see the module docstring).  The layer
        selection is kept: building it does not change the layer the user works on.
        """
        viewer = self.viewer
        shape = self._field_shape()
        if viewer is None or shape is None or self.layer() is not None:
            return
        standby = self.layer(STANDBY_NAME)
        if standby is not None and standby.data.shape == shape:
            return
        selection = viewer.layers.selection
        active, selected = selection.active, set(selection)
        if standby is not None:
            viewer.layers.remove(standby)
        layer = viewer.add_labels(
            np.zeros(shape, dtype=np.int32), name=STANDBY_NAME, opacity=1.0,
            colormap=_empty_colormap(), visible=False,
        )  # fmt: skip
        self._make_outline(layer)
        if active is not None or selected:
            selection.active = active
            selection.update(selected)
        # Its layer controls are first shown when a result makes it active: do that
        # once now, in later turns, while nothing depends on it.
        call_later(lambda: self._warm_controls(layer))

    def _warm_controls(self, layer: Any) -> None:
        """Make the standby layer active for one event-loop turn, then give the selection back.

        napari shows a layer's controls (a stack of Qt widgets: polished, laid
        out and painted the first time) when the layer becomes active; for the
        outline layer that happened with the first result, 25-30 ms of the
        50-65 ms of main-thread CPU of that step (docs/gui-responsiveness.md).
        The user's selection comes back in the next turn, unless they picked a
        layer meanwhile or a result made the layer active for good.
        """
        viewer = self.viewer
        if viewer is None or layer not in viewer.layers or layer.name != STANDBY_NAME:
            return
        selection = viewer.layers.selection
        active, selected = selection.active, set(selection)
        selection.active = layer
        self.controls_warmed = True

        def give_back() -> None:
            if viewer.layers.selection.active is not layer or layer.name != STANDBY_NAME:
                return
            kept = {other for other in selected if other in viewer.layers}
            if active in viewer.layers:
                selection.active = active
            else:
                selection.clear()
            selection.update(kept)

        call_later(give_back)

    def _make_outline(self, layer: Any) -> None:
        """The outline layer's settings: contour, read-only, clicks select cells."""
        layer.contour = CONTOUR
        read_only(layer)
        layer.mouse_drag_callbacks.append(self._on_click)

    def _fill_standby(
        self, labels: np.ndarray, colormap: Any, features: pd.DataFrame, meta: dict
    ) -> bool:
        """Fill the hidden standby layer with a field's cells; shown in a later turn.

        Filling a hidden layer redraws nothing; showing it (renamed
        :data:`LAYER_NAME`, made active) slices and draws it.  Each is about half of
        the work, so the viewer gets an event-loop turn between the two.  False when
        there is no usable standby layer.
        """
        layer = self.layer(STANDBY_NAME)
        if layer is None or layer.data.shape != labels.shape:
            return False
        layer.colormap = colormap
        layer.data = labels
        layer.features = features
        layer.metadata = meta
        self._filled += 1
        token = self._filled
        call_later(lambda: self._show_standby(layer, token, labels))
        return True

    def _show_standby(self, layer: Any, token: int, labels: np.ndarray) -> None:
        """Second step of :meth:`_fill_standby`, unless a newer field or no result came since.

        Renamed and made visible here (napari slices and draws it); made active, with
        its fill and the selection, in the next turn (:meth:`_activate_shown`): the
        two halves cost 40-50 ms of main-thread CPU each, with the repaint of the
        window that follows each (docs/gui-responsiveness.md), so the viewer gets a
        turn between them.
        """
        viewer = self.viewer
        if token != self._filled or viewer is None or layer not in viewer.layers:
            return
        layer.name = LAYER_NAME
        layer.visible = True
        call_later(lambda: self._activate_shown(layer, token, labels))

    def _activate_shown(self, layer: Any, token: int, labels: np.ndarray) -> None:
        """Last step of :meth:`_fill_standby`: the shown layer active, its fill and selection.

        Made active as a new layer would be, so that clicks on cells reach it.
        When a newer field was put in the layer meanwhile (:meth:`_put_outlines`,
        which adds fill and selection itself), only the activation is left to do;
        when the result went away, nothing.
        """
        viewer = self.viewer
        if viewer is None or layer not in viewer.layers or layer is not self.layer():
            return
        viewer.layers.selection.active = layer
        if token != self._filled:
            return
        self._put_fill(labels, layer.colormap, layer.features, layer.metadata)
        self._show_selection()

    def _on_result_changed(self) -> None:
        self._labels.clear()  # a new run may have used other segmentation settings
        if per_field(self.session.result):
            from napari.utils import notifications

            notifications.show_info(
                "This model predicts whole fields (unit 'site'), not cells: there are no cell "
                "labels to colour. The plate dock colours each well; the legend gives the "
                "prediction of the field on screen."
            )
        self.refresh()

    def refresh(self) -> None:
        """Show the cells of the field on screen (segmenting it in a worker when needed)."""
        session = self.session
        key = session.current
        rows = session.cells_of_field()
        if session.result is None or key is None or not len(rows) or per_field(session.result):
            self._remove_layers()
            return
        cached = self._labels.get((key, self.segmentation))
        if cached is not None:
            self._apply(key, cached)
            return
        self._pending = key
        if self.worker is None:
            self._start_segmentation(key)

    @property
    def worker(self) -> Any:
        """The napari worker outlining a field (None when idle)."""
        return self.runner.worker if self.runner is not None else None

    def _start_segmentation(self, key: FieldKey) -> None:
        plate = self.session.plates.get(key.plate_id)
        if plate is None:
            return
        params = self.segmentation
        # A background job: it never takes the one-job slot (a Run may be going on) and
        # is never refused; one at a time, and a newer field supersedes the queued one.
        self.runner = JobRunner(
            self.session,
            f"Outline cells of {key.well} site {key.site}",
            _segment,
            (plate, key, params),
            kind=JobKind.BACKGROUND,
            style=JobStyle.FUNCTION,
            on_result=lambda out: self._on_segmented(out, params),
            on_end=lambda outcome: self._on_segment_end(key, params, outcome),
        ).start()

    def _on_segmented(self, out: tuple[FieldKey, np.ndarray], params: SegmentationParams) -> None:
        key, labels = out
        self._labels[(key, params)] = labels
        while len(self._labels) > _CACHE_SIZE:
            self._labels.popitem(last=False)
        if key == self.session.current and params == self.segmentation:
            self._apply(key, labels)

    def _on_segment_end(self, done: FieldKey, params: SegmentationParams, outcome: str) -> None:
        runner, self.runner = self.runner, None
        if outcome == "failed" and runner is not None and runner.error is not None:
            # Kept in the Run dock's legend until dismissed (the notification fades).
            self.last_error = f"Could not outline the cells: {error_text(runner.error)}"
            self.failed.emit(self.last_error)
        # The user moved on while this field was segmented: do the field now on screen.
        # A field that was just tried with these settings (and failed, or was stopped)
        # is not retried, or a failing field would be segmented again and again.
        pending, self._pending = self._pending, None
        if pending is None or pending != self.session.current:
            return
        if (pending, params) == (done, self.segmentation):
            return
        if (pending, self.segmentation) not in self._labels:
            self._pending = pending
            self._start_segmentation(pending)

    def _apply(self, key: FieldKey, labels: np.ndarray) -> None:
        """Put the labels of a field in the overlay layers (main thread only)."""
        viewer = self.viewer
        result = self.session.result
        if viewer is None or result is None:
            return
        rows = self.session.cells_of_field(key)
        palette = session_class_palette(self.session)
        features = field_features(result, rows, palette)
        ids = features["index"].to_numpy()
        # Result rows of the cells on screen, by label: for clicks and the selection.
        self._rows = pd.Series(np.asarray(rows, dtype=np.int64), index=ids)
        # Cells the run dropped (e.g. too close to the edge for a crop) stay uncoloured.
        labels = np.where(np.isin(labels, ids), labels, 0)
        predicted = result.cells.iloc[rows][schema.PREDICTION].astype(str).to_numpy()
        colormap = label_colormap(ids, predicted, palette)
        meta = {META_KEY: {"plate_id": key.plate_id, "well": key.well, "site": key.site,
                           "kind": "predictions"}}  # fmt: skip
        if self.layer() is None and self._fill_standby(labels, colormap, features, meta):
            return  # shown in the next turn, with its fill and selection
        self._put_outlines(labels, colormap, features, meta)
        self._put_fill(labels, colormap, features, meta)  # after: it goes under the outlines
        self._show_selection()

    def _put_outlines(
        self, labels: np.ndarray, colormap: Any, features: pd.DataFrame, meta: dict
    ) -> None:
        """The outline layer with a field's cells: updated, or added."""
        viewer = self.viewer
        layer = self.layer()
        self._filled += 1  # a standby layer being shown is stale now
        if layer is not None and layer.data.shape == labels.shape:
            # The colormap first: the new labels are drawn once, in their colours.
            layer.colormap = colormap
            layer.data = labels
            layer.features = features
            layer.metadata = meta
            return
        if layer is not None:
            viewer.layers.remove(layer)
        # The colormap goes in the constructor: a layer made with napari's default
        # (cyclic) colours first draws with a numba kernel that compiles on the
        # main thread (a 0.3-0.9 s freeze when the first result arrived).
        layer = viewer.add_labels(
            labels, name=LAYER_NAME, opacity=1.0, features=features, metadata=meta,
            colormap=colormap,
        )  # fmt: skip
        self._make_outline(layer)

    def _put_fill(
        self, labels: np.ndarray, colormap: Any, features: pd.DataFrame, meta: dict
    ) -> None:
        """The low-opacity fill under the outlines, when :attr:`fill` is on."""
        viewer = self.viewer
        fill = self.layer(FILL_NAME)
        if not self.fill:
            if fill is not None:
                viewer.layers.remove(fill)
            return
        if fill is not None and fill.data.shape == labels.shape:
            fill.data = labels
            fill.features = features
            fill.colormap = colormap
            return
        if fill is not None:
            viewer.layers.remove(fill)
        fill = viewer.add_labels(
            labels, name=FILL_NAME, opacity=FILL_OPACITY, features=features, metadata=meta,
            colormap=colormap,
        )  # fmt: skip
        read_only(fill)
        outline = self.layer()
        if outline is not None:  # the fill goes under the outlines, which take the clicks
            layers = viewer.layers
            layers.move(layers.index(fill), layers.index(outline))
            layers.selection.active = outline

    def set_fill(self, on: bool) -> None:
        """Outlines only (False, the default) or outlines over a low fill (True)."""
        self.fill = bool(on)
        outline = self.layer()
        if outline is None:
            return
        self._put_fill(outline.data, outline.colormap, outline.features, outline.metadata)

    # -- selection --------------------------------------------------------------
    def cell_rows_at(self, position: Any) -> np.ndarray:
        """Row of ``result.cells`` under a world position (empty when none)."""
        layer = self.layer()
        if layer is None:
            return np.zeros(0, dtype=np.int64)
        value = layer.get_value(position, world=True)
        if value is None or int(value) == 0 or int(value) not in self._rows.index:
            return np.zeros(0, dtype=np.int64)
        return np.asarray([self._rows[int(value)]], dtype=np.int64)

    def select_at(self, position: Any, add: bool = False) -> None:
        """Select the cell under ``position`` (add it to the selection with ``add``)."""
        rows = self.cell_rows_at(position)
        if add:
            rows = np.concatenate([self.session.selected_rows, rows])
        self.session.select_cells(rows)

    def _on_click(self, layer: Any, event: Any) -> Any:
        if layer.mode != "pan_zoom":
            return
        start = np.asarray(event.position)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = moved or np.linalg.norm(np.asarray(event.position) - start) > 2
            yield
        if not moved:  # a click, not a pan
            self.select_at(event.position, add="Shift" in event.modifiers)

    def _show_selection(self, *_: Any) -> None:
        viewer = self.viewer
        layer = self.layer()
        if viewer is None:
            return
        selected = self.session.selected_rows
        if layer is None or not len(selected):
            if SELECTION_NAME in viewer.layers:
                viewer.layers.remove(SELECTION_NAME)
            return
        here = self._rows.index[self._rows.isin(selected)].to_numpy()
        if not len(here):  # the selected cells lie in other fields
            if SELECTION_NAME in viewer.layers:
                viewer.layers.remove(SELECTION_NAME)
            return
        outlines = np.where(np.isin(layer.data, here), layer.data, 0)
        from napari.utils.colormaps import DirectLabelColormap

        white = DirectLabelColormap(color_dict={None: "white", 0: "transparent"})
        if SELECTION_NAME in viewer.layers:
            sel = viewer.layers[SELECTION_NAME]
            sel.data = outlines
        else:
            sel = viewer.add_labels(outlines, name=SELECTION_NAME, opacity=1.0, colormap=white)
            sel.contour = CONTOUR + 1  # wider than the class outlines it covers
            viewer.layers.selection.active = layer  # clicks keep going to the overlay


_OVERLAYS: weakref.WeakKeyDictionary[Any, ResultsOverlay] = weakref.WeakKeyDictionary()


def get_results_overlay(viewer: Any) -> ResultsOverlay:
    """The results overlay of a viewer, created (and connected to its session) on first use."""
    overlay = _OVERLAYS.get(viewer)
    if overlay is None:
        overlay = ResultsOverlay(viewer, get_session(viewer))
        _OVERLAYS[viewer] = overlay
    return overlay


class ResultsLegend(QWidget):
    """Colour of each predicted class, cells in the field, and accuracy per plate.

    Parameters
    ----------
    session
        The viewer's session.
    overlay
        The overlay whose "Fill cells" toggle the legend shows (none without it).
    """

    def __init__(self, session: PlateSession, overlay: ResultsOverlay | None = None) -> None:
        super().__init__()
        self.session = session
        self.overlay = overlay
        self.title = QLabel("")
        self.swatches = QGridLayout()
        self.fill = QCheckBox("Fill cells (outlines over a low fill)")
        self.fill.setToolTip(
            "Cells are outlined in the colour of their predicted MoA; tick to add a faint fill "
            "of the same colour. The overlay is read-only: clicks select cells, never paint."
        )
        self.fill.setVisible(overlay is not None)
        if overlay is not None:
            self.fill.setChecked(overlay.fill)
            self.fill.toggled.connect(overlay.set_fill)
        self.accuracy = QLabel("")
        self.accuracy.setWordWrap(True)
        self.errors = ErrorPanel()  # the overlay's last error, until dismissed
        if overlay is not None:
            overlay.failed.connect(self.errors.show_error)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(self.title)
        layout.addLayout(self.swatches)
        layout.addWidget(self.fill)
        layout.addWidget(self.accuracy)
        layout.addWidget(self.errors)
        # A new result (or field) is drawn in a later turn, once for both signals:
        # building the swatches lays the dock out (30-60 ms of main-thread CPU the
        # first time), which added to the run's own end in one freeze.
        self._refresh_timer = later_timer(self, lambda: self.refresh())
        observe(self, session.result_changed, self.schedule_refresh)
        observe(self, session.current_changed, self.schedule_refresh)
        self.refresh()

    def schedule_refresh(self) -> None:
        """Redraw in a later event-loop turn; at once when there is no result (it hides)."""
        if self.session.result is None:
            self._refresh_timer.stop()
            self.refresh()
            return
        self._refresh_timer.start()

    @property
    def refresh_pending(self) -> bool:
        """Whether a redraw is scheduled (:meth:`schedule_refresh`) and not done yet."""
        return self._refresh_timer.isActive()

    def refresh(self) -> None:
        """Redraw from the session's result."""
        self._refresh_timer.stop()  # a scheduled redraw would only repeat this one
        while self.swatches.count():
            item = self.swatches.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        result = self.session.result
        if result is None:
            self.title.setText("")
            self.accuracy.setText("")
            self.setVisible(False)
            return
        self.setVisible(True)
        rows = self.session.cells_of_field()
        counts = (
            result.cells.iloc[rows][schema.PREDICTION].astype(str).value_counts()
            if len(rows)
            else pd.Series(dtype=int)
        )
        where = self.session.current
        if per_field(result):
            field = ", ".join(result.cells.iloc[rows][schema.PREDICTION].astype(str))
            self.title.setText(
                "<b>Predicted MoA</b> — per field (site model), no cell labels"
                + (f"<br>well {where.well}, site {where.site}: {field}" if len(rows) else "")
            )
        else:
            self.title.setText(
                f"<b>Predicted MoA</b> — {len(rows)} cells in well {where.well}, site {where.site}"
                if where is not None and len(rows)
                else "<b>Predicted MoA</b>"
            )
        palette = session_class_palette(self.session)
        # The model's classes in the palette's order (sorted, controls last).
        classes = {str(c) for c in result.classes}
        names = [n for n in palette if n in classes] + sorted(classes - set(palette))
        for i, name in enumerate(names):
            swatch = QLabel()
            swatch.setFixedSize(14, 14)
            swatch.setStyleSheet(
                f"background-color: {QColor(palette.colour(name)).name()}; border: 1px solid #222;"
            )
            text = QLabel(f"{palette.label(name)} ({int(counts.get(name, 0))})")
            self.swatches.addWidget(swatch, i // 2, 2 * (i % 2))
            self.swatches.addWidget(text, i // 2, 2 * (i % 2) + 1)
        unit = "field" if per_field(result) else "cell"
        self.accuracy.setText(_accuracy_text(accuracy_summary(result), unit))


def _accuracy_text(table: pd.DataFrame, unit: str = "cell") -> str:
    """One line per plate: cell or field (and well) accuracy against the plate map's MoA."""
    if not len(table):
        return f"Accuracy: no treated {unit} has a known MoA among the model's classes."
    lines = []
    for _, row in table.iterrows():
        if pd.isna(row["cell_accuracy"]):
            continue
        text = (
            f"{row.get(schema.PLATE, 'plate')}: {unit} accuracy {row['cell_accuracy']:.0%} "
            f"(n={int(row['n_cells'])})"
        )
        if "well_accuracy" in row and pd.notna(row["well_accuracy"]):
            text += f", well accuracy {row['well_accuracy']:.0%} (n={int(row['n_wells'])})"
        lines.append(text)
    if not lines:
        return f"Accuracy: no treated {unit} has a known MoA among the model's classes."
    return "Accuracy vs plate map:<br>" + "<br>".join(lines)
