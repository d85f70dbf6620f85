"""Dock widget "Run": adapted predictions on the open plates, and a Train tab.

The Run tab gathers a :class:`phenoadapt.pipeline.RunConfig` (checkpoint,
adaptation method, device, batch size, plates) and runs
:func:`phenoadapt.pipeline.run_plates` in a napari ``thread_worker``.  The
worker is a generator of :class:`~phenoadapt.progress.Progress` events
(:func:`~phenoadapt.progress.iterate_progress`), so the progress bar shows the
stage and batch while napari stays responsive.  Cancel stops the job at its
next batch; the result goes to the shared :class:`~.session.PlateSession`,
where the results overlay, the plate dock and the UMAP dock pick it up.

The Train tab trains a model on the open plates and their plate maps with
:func:`phenoadapt.pipeline.train_plates`, with the same progress and cancel.

Both jobs go through the shared :class:`~.jobs.JobRunner`: one long job at a
time across every dock, a bar in napari's activity dock, and the error that
ended a job kept in the tab that started it until dismissed, with a button
where the command line has a flag (allow the fallback).  Layers and widgets
change only on the main thread, in the worker's signal handlers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..adapt.methods import METHODS, Method, method_choices
from ..cells import SegmentationParams
from ..errors import PhenoadaptError
from ..pipeline.run import RunConfig
from ..pipeline.training import TrainRunConfig
from . import common
from .common import Asker, notify, observe, scrolling_layout
from .forms import (
    RUN_FIELDS,
    TRAIN_ADVANCED_FIELDS,
    TRAIN_FIELDS,
    advanced_section,
    config_form,
    form_values,
)
from .jobs import Fix, JobControls, JobRunner, abandon_runners, warm_up_activity_dock
from .results import ResultsLegend, get_results_overlay
from .session import get_session
from .tab_groups import join_tab_group

if TYPE_CHECKING:
    import napari

#: (value passed to the pipeline, label in the combo, one-line explanation), in menu
#: order, from the one list of methods (:data:`phenoadapt.adapt.methods.METHODS`).
METHOD_CHOICES: tuple[tuple[str, str, str], ...] = tuple(
    (value, METHODS[Method(value)].label, METHODS[Method(value)].description)
    for value in method_choices()
)
#: Defaults of the two tabs: the API's own dataclasses (the CLI reads the same).
RUN_DEFAULTS = RunConfig()
TRAIN_DEFAULTS = TrainRunConfig()


def _checkpoint_row(placeholder: str, save: bool) -> tuple[QLineEdit, QWidget]:
    """A path field with a Browse button."""
    edit = QLineEdit()
    edit.setPlaceholderText(placeholder)
    browse = QPushButton("Browse...")
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit)
    layout.addWidget(browse)

    def choose() -> None:
        pattern = "Checkpoints (*.safetensors *.json)"
        if save:
            path, _ = QFileDialog.getSaveFileName(row, "Save model as", edit.text(), pattern)
        else:
            path, _ = QFileDialog.getOpenFileName(row, "Choose a model", edit.text(), pattern)
        if path:
            edit.setText(path)

    browse.clicked.connect(choose)
    return edit, row


def _diameter_box() -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(0, 500)
    box.setSpecialValueText("pipeline default")  # 0: let the pipeline choose
    box.setSuffix(" px")
    box.setValue(0)
    box.setToolTip(
        "Typical nucleus diameter in pixels for segmentation (about 40 at 20x); "
        "'pipeline default' uses the pipeline's settings."
    )
    return box


def _segmentation(box: QDoubleSpinBox) -> SegmentationParams | None:
    value = box.value()
    return SegmentationParams(nucleus_diameter=value) if value > 0 else None


def _form_tab(rows: list[tuple[str | None, QWidget]], controls: QWidget) -> QWidget:
    """A tab of labelled rows (a None label spans the row) above the job's buttons and bar."""
    tab = QWidget()
    form = QFormLayout()
    for label, widget in rows:
        if label is None:
            form.addRow(widget)
        else:
            form.addRow(label, widget)
    layout = QVBoxLayout(tab)
    layout.addLayout(form)
    layout.addWidget(controls)
    return tab


class RunWidget(QWidget):
    """Run adapted predictions on the open plates (tab "Run") or train a model (tab "Train").

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when the dock opens).
    confirm
        ``confirm(title, text) -> bool`` asked before replacing a checkpoint
        file; a Yes/No message box by default (tests pass their own).
    """

    def __init__(self, napari_viewer: napari.Viewer, confirm: Asker | None = None) -> None:
        super().__init__()
        join_tab_group(self)  # with the other docks of its group once napari docks it
        # Load torch now, while the dock opens: imported from the worker when Run is
        # pressed, loading its libraries would hold the GIL and freeze napari for
        # seconds in the middle of the run (see docs/gui-responsiveness.md).
        from .. import pipeline  # noqa: F401

        warm_up_torch()
        # The window's first napari progress bar relays it out: not when Run is pressed.
        warm_up_activity_dock(napari_viewer)

        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.confirm: Asker = confirm or (lambda title, text: common.confirm(self, title, text))
        self.runner: JobRunner | None = None
        self.train_runner: JobRunner | None = None
        self.overlay = get_results_overlay(napari_viewer)
        self._runners: list[JobRunner] = []
        self._job_plates: dict[int, list[str]] = {}  # plates of each job, by id(runner)
        self._build()
        observe(self, self.session.plates_changed, self.refresh_plates)
        self.refresh_plates()
        # Closing the dock (or napari) during a job cancels it rather than leaving a
        # worker that calls back into deleted widgets.
        runners = self._runners
        self.destroyed.connect(lambda *_: abandon_runners(runners))

    # -- layout --------------------------------------------------------------
    def _build(self) -> None:
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_run_tab(), "Run")
        self.tabs.addTab(self._build_train_tab(), "Train")
        self.legend = ResultsLegend(self.session, self.overlay)
        layout = scrolling_layout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.legend)
        layout.addStretch()

    def _build_run_tab(self) -> QWidget:
        self.checkpoint, checkpoint_row = _checkpoint_row("Shipped demo model", save=False)
        self.checkpoint.setToolTip(
            "Model checkpoint (.safetensors with its .json); empty: the demo model shipped "
            "with phenoadapt."
        )
        self.method = QComboBox()
        for value, label, _ in METHOD_CHOICES:
            self.method.addItem(label, value)
        self.method_help = QLabel()
        self.method_help.setWordWrap(True)
        self.method.currentIndexChanged.connect(self._explain_method)
        self._explain_method()
        # Generated from RunConfig: the widgets start at the API's (and CLI's) defaults.
        self.run_form = config_form(RunConfig, RUN_FIELDS)
        self.device = self.run_form.device.native
        self.batch_size = self.run_form.batch_size.native
        self.diameter = _diameter_box()
        self.allow_fallback = QCheckBox("Fall back when a plate lacks controls")
        self.allow_fallback.setChecked(RUN_DEFAULTS.allow_fallback)
        self.allow_fallback.setToolTip(
            "A plate without (enough) negative controls is run with the method's fallback "
            "(CS-ARM-BN -> ARM-BN, BEN -> AdaBN) instead of stopping the run."
        )
        self.scheduler = QLineEdit()
        self.scheduler.setPlaceholderText("This computer")
        self.scheduler.setToolTip(
            "Optional dask scheduler whose workers segment the fields and adapt and predict "
            "each plate's contexts (on their GPUs when started with --resources GPU=1): "
            "'local' (worker processes on this computer) or an address such as "
            "tcp://host:8786 (see docs/scale-out.md). "
            "Empty: this computer, as usual."
        )
        self.plates = QListWidget()
        self.plates.setMaximumHeight(72)
        self.plates.setToolTip("Plates to run (open them in the Plate dock).")
        self.run_controls = JobControls("Run")
        self.run_controls.start_button.clicked.connect(self.run)
        self.run_controls.cancel_button.clicked.connect(self.cancel)

        rows = [
            ("Model", checkpoint_row),
            ("Method", self.method),
            (None, self.method_help),
            ("Nucleus diameter", self.diameter),
            (None, self.allow_fallback),
            ("Plates", self.plates),
            (None, advanced_section(self.run_form)),
            ("Scheduler", self.scheduler),
        ]
        return _form_tab(rows, self.run_controls)

    def _build_train_tab(self) -> QWidget:
        self.train_out, out_row = _checkpoint_row("model.safetensors", save=True)
        self.train_out.setToolTip("Where the trained model is saved (.safetensors + .json).")
        self.train_method = QComboBox()
        for value in method_choices(trainable=True):
            self.train_method.addItem(METHODS[Method(value)].label, value)
        # Generated from TrainRunConfig: the widgets start at the API's (and CLI's) defaults.
        self.train_form = config_form(TrainRunConfig, TRAIN_FIELDS)
        self.train_advanced = config_form(TrainRunConfig, TRAIN_ADVANCED_FIELDS)
        self.train_epochs = self.train_form.max_epochs.native
        self.train_device = self.train_advanced.device.native
        self.train_seed = self.train_advanced.seed.native
        self.train_diameter = _diameter_box()
        self.train_controls = JobControls("Train")
        self.train_controls.start_button.clicked.connect(self.train)
        self.train_controls.cancel_button.clicked.connect(self.cancel_training)
        help_text = QLabel(
            "Trains on the plates ticked in the Run tab, with the MoA and roles of their "
            "plate maps (treated wells with a known MoA are the training labels)."
        )
        help_text.setWordWrap(True)

        rows = [
            (None, help_text),
            ("Save as", out_row),
            ("Method", self.train_method),
            (None, self.train_form.native),
            ("Nucleus diameter", self.train_diameter),
            (None, advanced_section(self.train_advanced)),
        ]
        return _form_tab(rows, self.train_controls)

    def _explain_method(self) -> None:
        self.method_help.setText(METHOD_CHOICES[max(self.method.currentIndex(), 0)][2])

    # -- plates ---------------------------------------------------------------
    def refresh_plates(self) -> None:
        """List the session's open plates; new ones are ticked, others keep their state."""
        self._cancel_jobs_of_closed_plates()
        ticked = {
            self.plates.item(i).data(Qt.ItemDataRole.UserRole): self.plates.item(i).checkState()
            for i in range(self.plates.count())
        }
        self.plates.clear()
        for plate_id, plate in self.session.plates.items():
            item = QListWidgetItem(f"{plate_id} ({len(plate.wells)} wells)")
            item.setData(Qt.ItemDataRole.UserRole, plate_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(ticked.get(plate_id, Qt.CheckState.Checked))
            self.plates.addItem(item)

    def _cancel_jobs_of_closed_plates(self) -> None:
        """Cancel a run or training whose plate was closed (its result must not be kept)."""
        for runner, what, cancel in (
            (self.runner, "run", self.cancel),
            (self.train_runner, "training", self.cancel_training),
        ):
            if runner is None or not runner.running or runner.outcome == "cancelled":
                continue
            closed = [
                p for p in self._job_plates.get(id(runner), ()) if p not in self.session.plates
            ]
            if closed:
                cancel()
                notify(
                    "warning",
                    f"Plate {', '.join(closed)} was closed while the {what} used it: the {what} "
                    "was cancelled. Open the plate again and start it anew.",
                )

    def selected_plates(self) -> list[str]:
        """Ids of the ticked plates."""
        return [
            self.plates.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.plates.count())
            if self.plates.item(i).checkState() == Qt.CheckState.Checked
        ]

    def _plates_and_maps(self) -> tuple[list[Any], list[Any]]:
        ids = self.selected_plates()
        if not ids:
            raise PhenoadaptError(
                "No plate to run: open a plate folder in the Plate dock and tick it in the "
                "Run dock's plate list."
            )
        return (
            [self.session.plates[i] for i in ids],
            [self.session.platemaps.get(i) for i in ids],
        )

    # -- run ------------------------------------------------------------------
    def run_settings(self) -> dict[str, Any]:
        """The :class:`phenoadapt.pipeline.RunConfig` fields the controls describe.

        Raises
        ------
        PhenoadaptError
            When the chosen checkpoint file does not exist.
        """
        text = self.checkpoint.text().strip()
        if text and not Path(text).expanduser().exists():
            raise PhenoadaptError(
                f"The model file {text} does not exist: choose a checkpoint (.safetensors) or "
                "clear the field to use the shipped demo model."
            )
        return {
            **form_values(self.run_form),
            "checkpoint": str(Path(text).expanduser()) if text else None,
            "method": self.method.currentData(),
            "segmentation": _segmentation(self.diameter),
            "allow_fallback": self.allow_fallback.isChecked(),
        }

    def run(self) -> None:
        """Start a run of the ticked plates (a notification when that is not possible)."""
        try:
            plates, platemaps = self._plates_and_maps()
            settings = self.run_settings()
            scheduler = self.scheduler.text().strip()
            runner = JobRunner(
                self.session,
                "Run",
                run_job,
                (plates, platemaps, settings),
                {"scheduler": scheduler} if scheduler else None,
                on_event=self.run_controls.show_progress,
                on_result=lambda result: self._on_run_result(result, settings),
                on_end=self._on_run_end,
            ).start()
        except PhenoadaptError as exc:
            notify("error", str(exc))
            self.run_controls.refused(exc)
            return
        self.runner = runner
        self._runners.append(runner)
        self._job_plates[id(runner)] = [p.plate_id for p in plates]
        label = self.method.currentText()
        self.run_controls.busy(f"Running {label} on {len(plates)} plate(s)...")

    def cancel(self) -> None:
        """Cancel the run (it stops at the next batch)."""
        if self.runner is not None:
            self.run_controls.status.setText("Cancelling...")
            self.runner.cancel()

    def _on_run_result(self, result: Any, settings: dict[str, Any]) -> None:
        # Outline cells with the parameters the run segmented with (same cell ids).
        self.overlay.segmentation = (
            getattr(result, "segmentation", None)
            or settings["segmentation"]
            or SegmentationParams()
        )
        self.session.set_result(result)
        self._show_field_of(result)

    def _show_field_of(self, result: Any) -> None:
        """Show a field with cells when the field on screen has none (or none is shown)."""
        if len(self.session.cells_of_field()) or not len(result.cells):
            return
        from .. import schema

        first = result.cells.iloc[0]
        plate_id = str(first[schema.PLATE])
        if plate_id in self.session.plates:
            try:
                self.session.show_field(plate_id, str(first[schema.WELL]), int(first[schema.SITE]))
            except PhenoadaptError as exc:
                notify("error", str(exc))

    def _on_run_end(self, outcome: str) -> None:
        runner, self.runner = self.runner, None
        result = self.session.result
        if outcome == "done" and result is not None:
            text = f"Done: {len(result.cells)} cells in {len(result.wells)} wells."
            if getattr(result, "failures", None):
                text += f" {len(result.failures)} field(s) failed (see the notifications)."
                for failure in result.failures[:5]:
                    notify("error", str(getattr(failure, "message", failure)))
        else:
            text = {"cancelled": "Cancelled.", "failed": "Failed:"}.get(outcome, "")
        if runner is not None:
            self.run_controls.ended(runner, text, self._fix_for(runner.error))

    def _fix_for(self, error: BaseException | None) -> Fix | None:
        """A button that does what the message's command-line flag would do."""
        if error is None:
            return None
        if "--allow-fallback" in str(error) and not self.allow_fallback.isChecked():

            def run_with_fallback() -> None:
                self.allow_fallback.setChecked(True)
                self.run()

            return "Allow the fallback and run again", run_with_fallback
        return None

    # -- train ----------------------------------------------------------------
    def train(self) -> None:
        """Train a model on the ticked plates into the chosen checkpoint path."""
        try:
            plates, platemaps = self._plates_and_maps()
            out = self._train_path()
            if out is None:
                return
            settings = {
                **form_values(self.train_form),
                **form_values(self.train_advanced),
                "method": self.train_method.currentData(),
                "segmentation": _segmentation(self.train_diameter),
                # The user agreed to replace an existing file in _train_path.
                "overwrite": out.exists() or _sidecar(out).exists(),
            }
            runner = JobRunner(
                self.session,
                "Training",
                train_job,
                (plates, platemaps, settings, out),
                on_event=self.train_controls.show_progress,
                on_result=lambda result: self._on_trained(result, out),
                on_end=self._on_train_end,
            ).start()
        except PhenoadaptError as exc:
            notify("error", str(exc))
            self.train_controls.refused(exc)
            return
        self.train_runner = runner
        self._runners.append(runner)
        self._job_plates[id(runner)] = [p.plate_id for p in plates]
        self.train_controls.busy(f"Training on {len(plates)} plate(s)...")

    def _train_path(self) -> Path | None:
        text = self.train_out.text().strip()
        if not text:
            raise PhenoadaptError(
                "Choose where to save the trained model (Save as...) before training."
            )
        out = Path(text).expanduser()
        if out.suffix not in (".safetensors", ".json"):
            out = out.with_suffix(".safetensors")
        if (out.exists() or _sidecar(out).exists()) and not self.confirm(
            "Replace model?", f"{out} already exists. Replace it with the model being trained?"
        ):
            self.train_controls.status.setText("Not trained: the existing model was kept.")
            return None
        return out

    def cancel_training(self) -> None:
        """Cancel training (nothing is written)."""
        if self.train_runner is not None:
            self.train_controls.status.setText("Cancelling...")
            self.train_runner.cancel()

    def _on_trained(self, result: Any, out: Path) -> None:
        path = Path(getattr(result, "path", None) or out)
        self.checkpoint.setText(str(path))  # the next run uses the new model
        notify("info", f"Model saved to {path}; the Run tab now uses it.")

    def _on_train_end(self, outcome: str) -> None:
        runner, self.train_runner = self.train_runner, None
        text = {
            "done": f"Saved {self.checkpoint.text()}.",
            "cancelled": "Cancelled: no model was written.",
            "failed": "Failed:",
        }[outcome]
        if runner is not None:
            self.train_controls.ended(runner, text)


def _sidecar(path: Path) -> Path:
    """The JSON half of a safetensors checkpoint."""
    return path.with_suffix(".json")


def warm_up_torch() -> None:
    """Load what torch imports lazily on a run's first model, here on the main thread.

    Loading a checkpoint first builds its network on torch's "meta" device (a size
    check, no memory); initialising weights there imports ``torch._dynamo`` and with
    it sympy, inductor and onnx: about 1 s of imports that, in the run's worker,
    held the GIL and froze napari for 350 ms at the start of the first run (found
    by ``benchmarks/bench_gui_stall.py --trace-stalls``).  Done while the dock opens
    (which already loads torch), the first run starts without a stall.
    """
    import torch

    with torch.device("meta"):
        torch.nn.init.kaiming_normal_(torch.empty(2, 2))


def run_job(plates: list[Any], platemaps: list[Any], settings: dict[str, Any], **hooks: Any) -> Any:
    """``run_plates`` with a ``RunConfig`` built from ``settings``, in the worker thread.

    ``hooks`` are ``progress``, ``cancel`` and, when the dock names one, ``scheduler``.

    The dock has imported the pipeline already (see :class:`RunWidget`), so
    this import is only a lookup.
    """
    from ..pipeline import RunConfig, run_plates

    return run_plates(plates, platemaps, RunConfig(**settings), **hooks)


def train_job(
    plates: list[Any], platemaps: list[Any], settings: dict[str, Any], out: Path, **hooks: Any
) -> Any:
    """``train_plates`` with a ``TrainRunConfig`` built from ``settings``, in the worker thread."""
    from ..pipeline import TrainRunConfig, train_plates

    return train_plates(plates, platemaps, TrainRunConfig(**settings), out, **hooks)
