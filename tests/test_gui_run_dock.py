"""The Run dock: a run to completion, Cancel, one job at a time, errors as notifications, Train.

Run under a display (``xvfb-run -a python -m pytest``).  With
``PHENOADAPT_SCREENSHOTS=1`` the first test also saves ``docs/images/gui_run_dock.png``
and ``docs/images/gui_results_overlay.png``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gui_run_helpers import (
    SEGMENTATION,
    checkpoint_text,
    model_path,
    notices,
    open_in_viewer,
    tiny_plate,
)

from phenoadapt import schema
from phenoadapt.gui.colours import session_class_palette
from phenoadapt.gui.results import LAYER_NAME
from phenoadapt.gui.run_dock import RunWidget
from phenoadapt.plate.platemap import read_platemap
from phenoadapt.schema import Role
from phenoadapt.train import load_checkpoint, save_checkpoint

__all__ = ["notices", "tiny_plate"]  # fixtures used by the tests below

DOCS = Path(__file__).parents[1] / "docs" / "images"


def _widget(viewer, plate_dir, **kwargs) -> RunWidget:
    open_in_viewer(viewer, plate_dir)
    widget = RunWidget(viewer, **kwargs)
    viewer.window.add_dock_widget(widget, name="Run")
    widget.checkpoint.setText(checkpoint_text())  # empty: the shipped demo model
    # Nucleus diameter left at "pipeline default": the model's recorded segmentation.
    return widget


def _spy_progress(widget: RunWidget, controls) -> list:
    """Record the Progress events the dock receives (wrapping its handler)."""
    seen: list = []
    show = controls.show_progress

    def spy(event):
        seen.append(event)
        show(event)

    controls.show_progress = spy
    return seen


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.runner is None, timeout=timeout)


def test_run_to_completion(make_napari_viewer, qtbot, notices, tiny_plate):
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_plate)
    assert widget.selected_plates() == ["TINY1"]
    assert widget.method.currentText() == "CS-ARM-BN" and "controls" in widget.method_help.text()
    seen = _spy_progress(widget, widget.run_controls)
    widget.run()
    session = widget.session
    assert session.job == "Run" and not widget.run_controls.start_button.isEnabled()
    _wait(qtbot, widget)
    assert notices["error"] == []
    assert session.job is None and widget.run_controls.start_button.isEnabled()
    result = session.result
    assert result is not None and len(result.cells) > 50
    assert set(result.methods.values()) == {"cs-arm-bn"}
    assert {"segment", "adapt"} <= {e.stage for e in seen}
    assert widget.run_controls.status.text().startswith(f"Done: {len(result.cells)} cells")
    # The overlay: cells of the field on screen, coloured and described by their prediction.
    qtbot.waitUntil(lambda: LAYER_NAME in viewer.layers, timeout=30_000)
    layer = viewer.layers[LAYER_NAME]
    rows = session.cells_of_field()
    features = layer.features
    assert len(features) == len(rows) > 0
    assert {"class", "confidence", "uncertainty", "treatment", "well"} <= set(features)
    cells = result.cells.iloc[rows]
    assert features["index"].tolist() == cells[schema.CELL_ID].tolist()
    palette = session_class_palette(widget.session)
    labels = [palette.label(c) for c in cells[schema.PREDICTION].astype(str)]
    assert features["class"].tolist() == labels
    assert set(layer.data[layer.data > 0].ravel()) <= set(features["index"])
    label, name = int(features["index"].iloc[0]), str(cells[schema.PREDICTION].iloc[0])
    shown = viewer.layers[LAYER_NAME].colormap.map(label)[:3]
    hex_colour = palette.colour(name).lstrip("#")
    wanted = [int(hex_colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    assert abs(shown - wanted).max() < 1e-6
    assert "Accuracy vs plate map" in widget.legend.accuracy.text()
    if os.environ.get("PHENOADAPT_SCREENSHOTS"):
        _screenshots(viewer, widget, qtbot)


def _screenshots(viewer, widget, qtbot) -> None:
    """The documentation's pictures: the whole window, and the Run dock alone."""
    from skimage.io import imsave

    DOCS.mkdir(parents=True, exist_ok=True)
    viewer.window.resize(1500, 950)
    qtbot.wait(300)
    # Select two cells so the picture shows their white outlines too.
    layer = viewer.layers[LAYER_NAME]
    rows = widget.session.cells_of_field()[:2]
    cells = widget.session.result.cells.iloc[rows]
    for i, (_, cell) in enumerate(cells.iterrows()):
        widget.overlay.select_at((cell[schema.CENTROID_Y], cell[schema.CENTROID_X]), add=i > 0)
    viewer.layers.selection.active = layer
    viewer.reset_view(margin=0.01)  # the field fills the canvas
    qtbot.wait(500)
    imsave(DOCS / "gui_results_overlay.png", viewer.screenshot(canvas_only=False, flash=False))
    widget.grab().save(str(DOCS / "gui_run_dock.png"))


def test_cancel_second_run_and_job_slot(make_napari_viewer, qtbot, notices, tiny_plate):
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_plate)
    session = widget.session
    stopped: list[float] = []
    show = widget.run_controls.show_progress

    def cancel_on_first_progress(event):
        show(event)
        if not stopped and event.stage == "segment":  # mid-run: fields are being segmented
            widget.cancel()
            stopped.append(time.monotonic())

    widget.run_controls.show_progress = cancel_on_first_progress
    widget.run()
    widget.run()  # a second run while one is going
    assert len(notices["error"]) == 1 and "'Run' is still running" in notices["error"][0]
    _wait(qtbot, widget, timeout=60_000)
    assert stopped, "no progress event arrived"
    assert time.monotonic() - stopped[0] < 2.0
    assert session.result is None and session.job is None
    assert widget.run_controls.status.text() == "Cancelled."
    assert widget.run_controls.start_button.isEnabled()
    assert len(notices["error"]) == 1  # a cancel is not an error
    # The slot is free again: another dock may claim it, and then Run is refused.
    session.begin_job("Segmentation")
    widget.run()
    assert "'Segmentation' is still running" in notices["error"][-1]
    assert widget.runner is None
    session.end_job()


def test_user_errors_are_notifications(make_napari_viewer, qtbot, notices, tiny_plate, tmp_path):
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_plate)
    session = widget.session
    # No controls marked in the plate map.
    platemap = read_platemap(tiny_plate / "platemap.csv")
    platemap.set_role(platemap.controls, Role.EXCLUDED)
    session.set_platemap("TINY1", platemap)
    widget.run()
    _wait(qtbot, widget)
    assert "marks no imaged well as a negative control" in notices["error"][-1]
    assert session.result is None and session.job is None
    assert widget.run_controls.status.text().startswith("Failed")
    # The error stays in the dock, worded for it, with the button the CLI has a flag for.
    controls = widget.run_controls
    assert controls.error_box.isVisibleTo(widget)
    text = controls.error_text.text()
    assert "negative control" in text and "--allow-fallback" not in text
    assert "RunConfig" not in text and controls.error_action.isVisibleTo(widget)
    controls.error_action.click()  # allow the fallback and run again
    assert widget.allow_fallback.isChecked() and not controls.error_box.isVisibleTo(widget)
    _wait(qtbot, widget)
    assert session.result is not None and set(session.result.methods.values()) == {"arm-bn"}
    assert not controls.error_box.isVisibleTo(widget)
    widget.allow_fallback.setChecked(False)
    session.set_platemap("TINY1", read_platemap(tiny_plate / "platemap.csv"))
    # A model made for other channels.
    ckpt = load_checkpoint(model_path())
    meta = ckpt.metadata
    # model_input None: the contract is read again from the changed channel names.
    renamed = {"channel_names": ("DNA", "ER", "RNA", "AGP", "pHH3"), "model_input": None}
    other = type(meta)(**{**meta.__dict__, **renamed})
    wrong = save_checkpoint(tmp_path / "other_channels.safetensors", ckpt.model, other)
    widget.checkpoint.setText(str(wrong))
    widget.run()
    _wait(qtbot, widget)
    assert "pHH3" in notices["error"][-1]
    # A model file that does not exist; no plate ticked.
    widget.checkpoint.setText(str(tmp_path / "missing.safetensors"))
    widget.run()
    assert "does not exist" in notices["error"][-1] and widget.runner is None
    widget.checkpoint.setText("")
    widget.plates.item(0).setCheckState(widget.plates.item(0).checkState().Unchecked)
    widget.run()
    assert "No plate to run" in notices["error"][-1]
    assert session.job is None


def test_train_panel(make_napari_viewer, qtbot, notices, tiny_plate, tmp_path):
    asked: list[str] = []
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_plate, confirm=lambda title, text: asked.append(text) or False)
    out = tmp_path / "mine.safetensors"
    widget.train_out.setText(str(out))
    widget.train_method.setCurrentText("ERM")
    widget.train_epochs.setValue(1)
    widget.train_diameter.setValue(SEGMENTATION.nucleus_diameter)
    widget.train_advanced.input_scaling.value = "image"  # generated from TrainRunConfig
    seen = _spy_progress(widget, widget.train_controls)
    widget.train()
    assert widget.session.job == "Training"
    qtbot.waitUntil(lambda: widget.train_runner is None, timeout=120_000)
    assert notices["error"] == [], notices
    assert out.is_file() and widget.checkpoint.text() == str(out)
    stages = {e.stage for e in seen}  # quick reports may be merged into the latest one
    assert "segment" in stages and stages & {"train", "epoch"}
    meta = load_checkpoint(out).metadata
    assert meta.method == "erm" and meta.model_input.normalization["image_percentile"] == 99.99
    # An existing file is replaced only when the user says so.
    before = out.stat().st_mtime_ns
    widget.train()
    assert len(asked) == 1 and str(out) in asked[0]
    assert widget.train_runner is None and out.stat().st_mtime_ns == before
    assert "kept" in widget.train_controls.status.text()
    # Cancel stops training and writes nothing.
    other = tmp_path / "cancelled.safetensors"
    widget.train_out.setText(str(other))
    widget.train()
    widget.cancel_training()
    qtbot.waitUntil(lambda: widget.train_runner is None, timeout=10_000)
    assert not other.exists() and widget.session.job is None
    assert widget.train_controls.status.text().startswith("Cancelled")


def test_closing_napari_during_a_run(make_napari_viewer, qtbot, notices, tiny_plate):
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_plate)
    session = widget.session
    seen = _spy_progress(widget, widget.run_controls)
    widget.run()
    runner = widget.runner
    qtbot.waitUntil(lambda: bool(seen), timeout=60_000)
    viewer.close()  # the dock is destroyed with the window: the job is cancelled
    qtbot.waitUntil(lambda: not runner.running, timeout=10_000)
    assert runner.outcome == "cancelled"
    assert session.job is None and session.result is None
    assert notices["error"] == []


def test_closing_a_plate_mid_run_cancels_the_run(
    make_napari_viewer, qtbot, notices, tiny_plate, monkeypatch
):
    """A plate closed during its run: the run stops and its result never becomes the session's."""
    import napari.utils.notifications as notifications

    warnings: list[str] = []
    monkeypatch.setattr(notifications, "show_warning", lambda m: warnings.append(str(m)))
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_plate)
    session = widget.session
    closed: list[float] = []
    show = widget.run_controls.show_progress

    def close_on_first_segment(event):
        show(event)
        if not closed and event.stage == "segment":
            session.close_plate("TINY1")
            closed.append(time.monotonic())

    widget.run_controls.show_progress = close_on_first_segment
    widget.run()
    _wait(qtbot, widget, timeout=60_000)
    assert closed, "no progress event arrived"
    assert session.result is None and session.job is None
    assert widget.run_controls.status.text() == "Cancelled."
    assert len(warnings) == 1 and "Plate TINY1 was closed while the run used it" in warnings[0]
    assert notices["error"] == []
    # Closing another plate later cancels nothing and says nothing.
    session.close_plate("TINY1")
    assert len(warnings) == 1
