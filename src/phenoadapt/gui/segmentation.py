"""Dock widget: segment the field on screen (or chosen wells) and show cells as Labels.

The widget finds the field from the channel image layers the plate reader
adds (``layer.metadata["phenoadapt"]`` with ``plate_path``, ``well``, ``site``,
``channel``, ``role``).  Segmentation and measurement run in a napari
``thread_worker`` that yields progress, so napari stays responsive and Cancel
stops at the next field.  Each segmented field becomes a ``Labels`` layer whose
``features`` hold the per-cell table (hovering a cell shows its values) and
whose metadata carry the same keys plus ``"kind": "cells"``.  Errors are napari
notifications, never tracebacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from .. import schema
from ..cells import MeasureParams, SegmentationParams, measure_cells, segment_field
from ..cells.params import THRESHOLD_METHODS
from ..cells.process import field_name, process_field
from ..cells.scale import estimate_nucleus_diameter
from ..cells.segment import find_cell_channel, find_channel
from ..cells.table import cell_table
from ..errors import CellsError, PhenoadaptError
from ..plate import Plate
from ..plate.channels import Channel, ChannelRole, role_from_name
from ..plate.wells import normalize_well
from ..progress import Progress
from .common import notify, observe, scrolling_layout
from .jobs import JobControls, JobRunner, JobStyle, abandon_runners, warm_up_activity_dock
from .session import get_session
from .tab_groups import join_tab_group

if TYPE_CHECKING:
    import napari

META_KEY = "phenoadapt"
SCOPES = ("Field on screen (preview)", "Wells")
#: Offered before a plate is on screen; then the plate's own channels are.
CYTOPLASM_CHOICES = ("AGP", "RNA", "ER", "Mito")


@dataclass
class ScreenField:
    """A field assembled from the channel image layers on screen."""

    plate_path: str
    plate_id: str
    well: str
    site: int
    image: np.ndarray  # (channel, y, x)
    channels: list[Channel]
    scale: tuple[float, ...]
    translate: tuple[float, ...]

    @property
    def name(self) -> str:
        return f"plate {self.plate_id}, well {self.well}, site {self.site}"


@dataclass
class FieldDone:
    """A segmented field, ready to become layers."""

    plate_path: str
    plate_id: str
    well: str
    site: int
    nuclei: np.ndarray
    cells: np.ndarray
    table: pd.DataFrame
    scale: tuple[float, ...] = (1.0, 1.0)
    translate: tuple[float, ...] = (0.0, 0.0)


def field_layers(viewer: napari.Viewer) -> dict[tuple[str, str, int], list[Any]]:
    """Channel image layers on screen grouped by (plate path, well, site)."""
    from napari.layers import Image

    groups: dict[tuple[str, str, int], list[Any]] = {}
    for layer in viewer.layers:
        info = layer.metadata.get(META_KEY)
        if not isinstance(layer, Image) or not info or "channel" not in info:
            continue
        key = (str(info.get("plate_path", "")), str(info["well"]), int(info["site"]))
        groups.setdefault(key, []).append(layer)
    return groups


def screen_field(viewer: napari.Viewer) -> ScreenField:
    """The field to segment: that of the selected layer, else of the top visible one.

    Raises
    ------
    PhenoadaptError
        When no layer on screen comes from a plate.
    """
    groups = field_layers(viewer)
    if not groups:
        raise PhenoadaptError(
            "No plate field on screen: open a plate folder (File > Open Folder) so that its "
            "channels appear as layers, then segment."
        )
    layers = groups[_chosen_field(viewer, groups)]
    info0 = layers[0].metadata[META_KEY]
    channels = [
        Channel(
            key=str(i),
            name=str(lay.metadata[META_KEY]["channel"]),
            role=_role(lay.metadata[META_KEY]),
        )
        for i, lay in enumerate(layers)
    ]
    image = np.stack([np.asarray(lay.data) for lay in layers])
    return ScreenField(
        plate_path=str(info0.get("plate_path", "")),
        plate_id=str(info0.get("plate_id", "") or _plate_id(info0)),
        well=str(info0["well"]),
        site=int(info0["site"]),
        image=image,
        channels=channels,
        scale=tuple(layers[0].scale),
        translate=tuple(layers[0].translate),
    )


def _chosen_field(
    viewer: napari.Viewer, groups: dict[tuple[str, str, int], list[Any]]
) -> tuple[str, str, int]:
    """Key of the field on screen: that of the selected layer, else of the top visible one."""
    for layer in [
        *viewer.layers.selection,
        *reversed([lay for lay in viewer.layers if lay.visible]),
    ]:
        info = layer.metadata.get(META_KEY) or {}
        key = (str(info.get("plate_path", "")), str(info.get("well")), int(info.get("site", -1)))
        if key in groups:
            return key
    return next(iter(groups))


def screen_key(viewer: napari.Viewer) -> tuple[str, str, int] | None:
    """(plate path, well, site) of the field on screen, without reading its pixels."""
    groups = field_layers(viewer)
    return _chosen_field(viewer, groups) if groups else None


def show_segmented_field(viewer: napari.Viewer, results: list[FieldDone]) -> Any | None:
    """Show the cells and nuclei of the field on screen only, if it is among ``results``.

    Segmenting whole wells gives masks of many fields; drawn together they pile
    up over the one field whose images are on screen.  Masks of other fields
    (of this run or an earlier one) leave the viewer; a field's masks come
    back when its images are shown again.

    Returns
    -------
    The cells layer of the field on screen, or None.
    """
    key = screen_key(viewer)
    key = None if key is None else (_same_path(key[0]), key[1], int(key[2]))
    for layer in list(viewer.layers):
        info = layer.metadata.get(META_KEY) or {}
        if info.get("kind") not in ("cells", "nuclei"):
            continue
        path, well, site = info.get("plate_path", ""), str(info.get("well")), info.get("site", -1)
        if (_same_path(path), well, int(site)) != key:
            viewer.layers.remove(layer)
    done = next(
        (r for r in reversed(results) if (_same_path(r.plate_path), r.well, r.site) == key), None
    )
    if done is None:
        return None
    tag = f"cells [{done.plate_id} {done.well} s{done.site}]"
    shown = viewer.layers[tag] if tag in viewer.layers else None
    if shown is not None and shown.data is done.cells:
        return shown
    return add_field_layers(viewer, done)


def _same_path(path: object) -> str:
    """A plate path in one spelling (reader layers and opened plates may differ)."""
    from pathlib import Path

    return str(Path(str(path)).resolve()) if path else ""


def _default_channels(channels: list[Channel]) -> tuple[str, str]:
    """Names of the channels to segment nuclei and cells with, by role."""
    try:
        nucleus = find_channel(channels, ChannelRole.DNA.value)
    except CellsError:
        nucleus = 0
    try:
        cell = find_cell_channel(channels, ChannelRole.AGP.value, nucleus)
    except CellsError:
        cell = nucleus
    return channels[nucleus].name, channels[cell].name


def _role(info: dict) -> ChannelRole:
    try:
        return ChannelRole(info.get("role"))
    except ValueError:
        return role_from_name(str(info.get("channel", "")))


def _plate_id(info: dict) -> str:
    from pathlib import Path

    return Path(str(info.get("plate_path", "plate"))).name


def segment_jobs(
    target: ScreenField | tuple[Plate, list[str]],
    params: SegmentationParams,
    measure: MeasureParams,
) -> Iterator[tuple[str, Any]]:
    """The work of one click, as a generator of events for the GUI thread.

    Yields ``("progress", (done, total))``, ``("field", FieldDone)`` and
    ``("error", message)``; a failing field is reported and the next one
    processed.  Nothing is raised: every error becomes a message.
    """
    try:
        if isinstance(target, ScreenField):
            yield "progress", (0, 1)
            yield _segment_screen_field(target, params, measure)
            yield "progress", (1, 1)
            return
        plate, wells = target
        plate_path = str(plate.path or "")
        fields = list(plate.fields(wells or None))
        yield "progress", (0, len(fields))
        for done, (well, site) in enumerate(fields, start=1):
            try:
                seg, table = process_field(plate, well, site, params, measure)
                yield (
                    "field",
                    FieldDone(plate_path, plate.plate_id, well, site, seg.nuclei, seg.cells, table),
                )
            except PhenoadaptError as exc:
                yield "error", str(exc)
            except Exception as exc:  # odd pixels must not stop the other wells
                yield "error", f"{field_name(plate, well, site)} failed: {exc}"
            yield "progress", (done, len(fields))
    except PhenoadaptError as exc:
        yield "error", str(exc)
    except Exception as exc:
        yield "error", f"Segmentation failed: {type(exc).__name__}: {exc}"


def _segment_screen_field(
    target: ScreenField, params: SegmentationParams, measure: MeasureParams
) -> tuple[str, Any]:
    try:
        seg = segment_field(target.image, target.channels, params, field_name=target.name)
        values = measure_cells(target.image, target.channels, seg, measure, target.name)
    except PhenoadaptError as exc:
        return "error", str(exc)
    table = cell_table(values, target.plate_id, target.well, target.site)
    return "field", FieldDone(
        target.plate_path,
        target.plate_id,
        target.well,
        target.site,
        seg.nuclei,
        seg.cells,
        table,
        target.scale,
        target.translate,
    )


def add_field_layers(viewer: napari.Viewer, done: FieldDone) -> Any:
    """Add (or replace) the cells and nuclei Labels layers of a segmented field."""
    base = {
        "plate_path": done.plate_path,
        "plate_id": done.plate_id,
        "well": done.well,
        "site": done.site,
    }
    tag = f"[{done.plate_id} {done.well} s{done.site}]"
    features = done.table.copy()
    # napari maps label values to feature rows through an 'index' column.
    features.insert(0, "index", features[schema.CELL_ID].to_numpy())
    for name in (f"nuclei {tag}", f"cells {tag}"):
        if name in viewer.layers:
            viewer.layers.remove(name)
    # Outlines, not filled regions: the stains under each cell stay visible.
    nuclei = viewer.add_labels(
        done.nuclei,
        name=f"nuclei {tag}",
        scale=done.scale,
        translate=done.translate,
        opacity=0.8,
        metadata={META_KEY: {**base, "kind": "nuclei"}},
    )
    nuclei.contour = 1
    cells = viewer.add_labels(
        done.cells,
        name=f"cells {tag}",
        features=features,
        scale=done.scale,
        translate=done.translate,
        opacity=1.0,
        metadata={META_KEY: {**base, "kind": "cells"}},
    )
    cells.contour = 2
    return cells


class SegmentationWidget(QWidget):
    """Segment nuclei and cells of the field on screen or of chosen wells.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when the dock opens).
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        join_tab_group(self)  # with the other docks of its group once napari docks it
        self.viewer = napari_viewer
        warm_up_activity_dock(napari_viewer)  # the first job's bar relays the window out
        self.runner: JobRunner | None = None
        self._runners: list[JobRunner] = []
        self.results: list[FieldDone] = []
        self.errors: list[str] = []
        self._build()
        # The channel choices follow the plate on screen and the Plate dock's channel table.
        self.viewer.layers.events.inserted.connect(lambda _e: self.refresh_channels())
        session = get_session(self.viewer)
        observe(self, session.channels_changed, lambda _p: self.refresh_channels())
        # Another field on screen: its masks (when segmented), no other field's.
        observe(self, session.current_changed, self._on_field_changed)
        self.refresh_channels()
        # Closing the dock during a job cancels it (no callbacks into deleted widgets).
        runners = self._runners
        self.destroyed.connect(lambda *_: abandon_runners(runners))

    # -- layout ---------------------------------------------------------------
    def _build(self) -> None:
        defaults = SegmentationParams()
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(4, 500)
        self.diameter.setValue(defaults.nucleus_diameter)
        self.diameter.setSuffix(" px")
        self.diameter.setToolTip("Typical nucleus diameter in pixels (about 40 at 20x).")
        self.estimate_button = QPushButton("Estimate")
        self.estimate_button.setToolTip(
            "Measure the typical nucleus size in the nucleus channel of the field on screen"
        )
        self.estimate_button.clicked.connect(self.estimate_diameter)
        self.auto_diameter = QCheckBox("Estimate before segmenting")
        self.auto_diameter.setChecked(True)
        self.auto_diameter.setToolTip(
            "Measure the nucleus size of the field on screen before each segmentation "
            "(untick to use the diameter typed above)"
        )
        self.nucleus = QComboBox()
        self.nucleus.addItems(["DNA"])
        self.nucleus.setToolTip("Channel that shows the nuclei (DNA: Hoechst, DAPI, DRAQ5).")
        self.cytoplasm = QComboBox()
        self.cytoplasm.addItems(CYTOPLASM_CHOICES)
        self.cytoplasm.setToolTip("Channel whose signal outlines whole cells.")
        for combo in (self.nucleus, self.cytoplasm):
            # activated: the user's own choice (not one made by refresh_channels).
            combo.activated.connect(lambda _i, c=combo: c.setProperty("picked", c.currentText()))
        self.threshold = QComboBox()
        self.threshold.addItems(THRESHOLD_METHODS)
        self.threshold.setCurrentText(defaults.threshold_method)
        self.correction = QDoubleSpinBox()
        self.correction.setRange(0.1, 10)
        self.correction.setSingleStep(0.05)
        self.correction.setValue(defaults.threshold_correction)
        self.correction.setToolTip("Factor on the nucleus threshold: >1 stricter, <1 more lenient.")
        self.exclude_border = QCheckBox("Drop cells touching the edge")
        self.exclude_border.setChecked(defaults.exclude_border)
        self.texture = QCheckBox("Texture features")
        self.texture.setChecked(MeasureParams().texture)
        self.scope = QComboBox()
        self.scope.addItems(SCOPES)
        self.wells = QLineEdit()
        self.wells.setPlaceholderText("A01, B02 (empty: all wells)")
        self.wells.setEnabled(False)
        self.scope.currentTextChanged.connect(lambda s: self.wells.setEnabled(s == "Wells"))
        # Buttons, bar, status and error panel of the shared job runner (see jobs.py).
        self.controls = JobControls("Segment")
        self.run_button = self.controls.start_button
        self.cancel_button = self.controls.cancel_button
        self.progress = self.controls.progress
        self.status = self.controls.status
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

        form = QFormLayout()
        diameter_row = QHBoxLayout()
        diameter_row.addWidget(self.diameter, 1)
        diameter_row.addWidget(self.estimate_button)
        form.addRow("Nucleus channel", self.nucleus)
        form.addRow("Cell channel", self.cytoplasm)
        form.addRow("Nucleus diameter", diameter_row)
        form.addRow(self.auto_diameter)
        form.addRow("Threshold", self.threshold)
        form.addRow("Threshold correction", self.correction)
        form.addRow(self.exclude_border)
        form.addRow(self.texture)
        form.addRow("Segment", self.scope)
        form.addRow("Wells", self.wells)
        layout = scrolling_layout(self)
        layout.addLayout(form)
        layout.addWidget(self.controls)
        layout.addStretch()

    # -- actions --------------------------------------------------------------
    def params(self) -> SegmentationParams:
        """Segmentation parameters from the controls."""
        return SegmentationParams(
            nucleus_diameter=self.diameter.value(),
            nucleus_channel=self.nucleus.currentText(),
            cytoplasm_channel=self.cytoplasm.currentText(),
            threshold_method=self.threshold.currentText(),
            threshold_correction=self.correction.value(),
            exclude_border=self.exclude_border.isChecked(),
        )

    def target(self) -> ScreenField | tuple[Plate, list[str]]:
        """What to segment: the field on screen, or (plate, wells)."""
        field = screen_field(self.viewer)
        if self.scope.currentText() != "Wells":
            return field
        plate = self._session_plate(field)
        if plate is None and field.plate_path:
            from ..plate import open_plate

            # Layers a script or the reader added: the plate folder they name, as it opens.
            plate = open_plate(field.plate_path)
        if plate is None:
            raise PhenoadaptError(
                "The field on screen does not come from a plate open in the Plate dock; "
                "open the plate there (or with File > Open Folder) to segment whole wells."
            )
        text = self.wells.text().replace(";", ",").replace(" ", ",")
        return plate, [normalize_well(w) for w in text.split(",") if w.strip()]

    def _session_plate(self, field: ScreenField) -> Plate | None:
        """The open plate (as named in the Plate dock's channel table) a field comes from."""
        session = get_session(self.viewer)
        plate = session.plates.get(field.plate_id)
        if plate is not None:
            return plate
        by_path = [p for p in session.plates.values() if str(p.path) == field.plate_path]
        return by_path[0] if by_path else None

    # -- channels and scale ------------------------------------------------------
    def refresh_channels(self) -> None:
        """Offer the channels of the field on screen, preselecting nucleus and cell stains."""
        try:
            channels = screen_field(self.viewer).channels
        except PhenoadaptError:
            return
        names = [c.name for c in channels]
        if names == [self.nucleus.itemText(i) for i in range(self.nucleus.count())]:
            return
        nucleus, cell = _default_channels(channels)
        for combo, default in ((self.nucleus, nucleus), (self.cytoplasm, cell)):
            # What the user picked stays picked; a default follows the plate's channels.
            picked = combo.property("picked")
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentText(picked if picked in names else default)
            combo.blockSignals(False)

    def estimate_diameter(self) -> float | None:
        """Estimate the nucleus diameter from the field on screen and show it; None on failure."""
        try:
            field = screen_field(self.viewer)
            index = find_channel(field.channels, self.nucleus.currentText(), field.name)
            pixel = self._pixel_size(field)
            diameter = estimate_nucleus_diameter(
                field.image[index], field_name=field.name, pixel_size_um=pixel
            )
        except PhenoadaptError as exc:
            notify("warning", f"{exc} The diameter typed in stays.")
            return None
        diameter = float(np.clip(diameter, self.diameter.minimum(), self.diameter.maximum()))
        self.diameter.setValue(round(diameter, 1))
        microns = f" ({diameter * pixel:.1f} um)" if pixel else ""
        self.status.setText(
            f"Estimated nucleus diameter: {diameter:.1f} px{microns}, from the "
            f"{field.channels[index].name} channel of {field.name}."
        )
        return diameter

    def _pixel_size(self, field: ScreenField) -> float | None:
        plate = self._session_plate(field)
        value = plate.metadata.get("pixel_size_um") if plate is not None else None
        return float(value) if value else None

    @property
    def worker(self) -> Any:
        """The napari worker of the running segmentation (None when idle)."""
        runner = self.runner
        return runner.worker if runner is not None else None

    def run(self) -> None:
        """Start segmenting in a worker thread (one long job at a time, across docks)."""
        if self.worker is not None:
            return
        session = get_session(self.viewer)
        try:
            session.check_job_slot()  # before estimating or reading a field: say it at once
        except PhenoadaptError as exc:
            notify("error", str(exc))
            self.controls.refused(exc)
            return
        self.refresh_channels()
        if self.auto_diameter.isChecked():
            self.estimate_diameter()
        try:
            params = self.params()
            target = self.target()
            measure = MeasureParams(texture=self.texture.isChecked())
            runner = JobRunner(
                session,
                "Segment",
                segment_jobs,
                (target, params, measure),
                style=JobStyle.EVENTS,
                on_event=self._on_event,
                on_end=self._on_end,
                progress_of=_segment_progress,
            )
            self.results, self.errors = [], []
            runner.start()
        except PhenoadaptError as exc:
            notify("error", str(exc))
            self.controls.idle(str(exc))
            self.controls.refused(exc)
            return
        self.runner = runner
        self._runners.append(runner)
        self.controls.busy("Segmenting...")

    def cancel(self) -> None:
        """Ask the worker to stop after the field in progress."""
        if self.runner is not None:
            self.status.setText("Cancelling after the current field...")
            self.runner.cancel()

    def _on_event(self, event: tuple[str, Any]) -> None:
        kind, value = event
        if kind == "progress":
            done, total = value
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(done)
        elif kind == "field":
            self.results.append(value)
            show_segmented_field(self.viewer, self.results)
            self.status.setText(
                f"{len(value.table)} cells in well {value.well}, site {value.site}."
            )
        elif kind == "error":
            self.errors.append(value)
            notify("error", value)

    def _on_field_changed(self) -> None:
        if self.results:
            show_segmented_field(self.viewer, self.results)

    def _on_end(self, outcome: str) -> None:
        runner, self.runner = self.runner, None
        cells = sum(len(r.table) for r in self.results)
        if outcome == "cancelled":
            summary = "Cancelled."
        else:
            summary = f"Done: {len(self.results)} field(s), {cells} cells"
            if self.errors:
                summary += f"; {len(self.errors)} field(s) failed"
            summary += "."
        self.progress.setFormat("%p%")
        self.controls.idle(summary)
        if runner is not None and runner.outcome == "failed":
            self.controls.ended(runner, summary)
        elif self.errors:  # kept in the dock: the notifications fade
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            self.controls.show_error(self.errors[0] + more)


def _segment_progress(event: tuple[str, Any]) -> Progress | None:
    """The napari progress of a segmentation event (fields done of fields to do)."""
    kind, value = event
    return Progress("segment", *value) if kind == "progress" else None
