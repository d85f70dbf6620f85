"""A real plate phenoadapt has never seen, through the docks (under Xvfb).

The real Phenix field, copied as another instrument's three-stain plate with no
metadata (see tests/test_real_plate.py), is opened in the Plate dock, its
channels named in the channel table, segmented as a preview in the Segment
dock with an estimated nucleus size, marked in the Plate map dock and run in
the Run dock with a model trained on its three stains.  With
``PHENOADAPT_SCREENSHOTS=1`` the steps are saved for docs/own-plate.md at laptop
size (1366 x 768).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from qtpy.QtWidgets import QApplication
from test_real_plate import renamed_field, three_stain_plate

from phenoadapt.cli import main
from phenoadapt.gui.app import DOCKS, add_docks
from phenoadapt.plate import ChannelRole

pytestmark = pytest.mark.gui

DOCS = Path(__file__).parents[1] / "docs" / "images"
SHOTS = bool(os.environ.get("PHENOADAPT_SCREENSHOTS"))


def _shot(viewer, name: str) -> None:
    if SHOTS:
        for _ in range(5):
            QApplication.processEvents()
        viewer.screenshot(str(DOCS / name), canvas_only=False)


def _model(tmp_path: Path) -> Path:
    plate, platemap = three_stain_plate(tmp_path / "train")
    out = tmp_path / "model3.safetensors"
    assert main([
        "train", "--plate", str(plate), "--platemap", str(platemap), "--out", str(out),
        "--width", "4", "--crop-size", "24", "--crop-scale", "0.5", "--input-size", "20",
        "--epochs", "1", "--max-steps-per-epoch", "1", "--treated-per-episode", "16",
        "--controls-per-episode", "16", "--nucleus-diameter", "16", "--method", "erm",
        "--device", "cpu",
    ]) == 0  # fmt: skip
    return out


def test_real_plate_from_drop_to_prediction(make_napari_viewer, qtbot, tmp_path):
    field = renamed_field(tmp_path / "LAB7")
    model = _model(tmp_path)
    viewer = make_napari_viewer(show=SHOTS)
    if SHOTS:
        viewer.window._qt_window.resize(1366, 740)
    docks = add_docks(viewer, (*DOCKS, ("Segment cells", True)))
    plate_dock, segment = docks["Plate"], docks["Segment cells"]
    map_dock, run_dock = docks["Plate map and controls"], docks["Run"]

    plate = plate_dock.open_folder(field)
    assert plate is not None and plate.channel_names == ["w1", "w2", "w3"]
    table = plate_dock.channel_table
    assert plate_dock.channels_box.isExpanded()
    _shot(viewer, "own_plate_1_unknown_channels.png")

    for row, name in enumerate(("Hoechst 33342", "SYTO 14", "Phalloidin/WGA")):
        table.set_channel(row, name=name)
    named = plate_dock.session.plate(plate.plate_id).channels
    assert [c.role for c in named] == [ChannelRole.DNA, ChannelRole.RNA, ChannelRole.AGP]
    assert sorted(layer.colormap.name for layer in viewer.layers) == ["blue", "cyan", "yellow"]
    _shot(viewer, "own_plate_2_named_channels.png")

    segment.refresh_channels()
    assert segment.nucleus.currentText() == "Hoechst 33342"
    assert segment.cytoplasm.currentText() == "Phalloidin/WGA"
    diameter = segment.estimate_diameter()
    assert diameter is not None and 30 <= diameter <= 50  # CellProfiler: about 43 px
    assert "Estimated nucleus diameter" in segment.status.text()
    segment.texture.setChecked(False)
    segment.run()
    qtbot.waitUntil(lambda: segment.worker is None, timeout=120_000)
    assert segment.results and 20 <= len(segment.results[0].table) <= 70
    viewer.window.activate() if SHOTS else None
    _shot(viewer, "own_plate_3_segment_preview.png")

    map_dock.set_role("treated", ["C03"])
    run_dock.checkpoint.setText(str(model))
    run_dock.method.setCurrentIndex(run_dock.method.findData("erm"))
    run_dock.diameter.setValue(round(diameter, 1))
    run_dock.refresh_plates()
    run_dock.run()
    qtbot.waitUntil(lambda: run_dock.runner is None, timeout=180_000)
    result = plate_dock.session.result
    assert result is not None and len(result.cells) > 10
    _shot(viewer, "own_plate_4_prediction.png")
