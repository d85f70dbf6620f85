"""The segmentation dock: Labels layers with per-cell features, notifications, wells, Cancel.

Run under a display (``xvfb-run -a python -m pytest``).  With
``PHENOADAPT_SCREENSHOTS=1`` the first test also saves the screenshot used in
``docs/segmentation.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_cells_plate import write_plate

from phenoadapt import schema
from phenoadapt.gui.segmentation import META_KEY, SegmentationWidget

REAL = Path(__file__).parent / "data" / "phenix_BR00143976"
PHENIX_CHANNELS = ("brightfield", "ER", "AGP", "Mito", "DNA", "RNA")
COLOURS = {
    "brightfield": "gray",
    "ER": "green",
    "AGP": "yellow",
    "Mito": "magenta",
    "DNA": "blue",
    "RNA": "cyan",
}
DOCS_IMAGE = Path(__file__).parents[1] / "docs" / "images" / "segmentation_napari.png"


def _add_field(viewer, planes, names, plate_path, plate_id, well, site):
    """Channel layers as phenoadapt's plate reader adds them."""
    for plane, name in zip(planes, names, strict=True):
        lo, hi = np.percentile(plane, [0.5, 99.8])
        hi = max(hi, lo + 1)  # a blank plane still needs a contrast range
        viewer.add_image(
            plane,
            name=f"{name} [{plate_id} {well} s{site}]",
            colormap=COLOURS.get(name, "gray"),
            blending="additive",
            contrast_limits=(float(lo), float(hi)),
            visible=name != "brightfield",
            metadata={
                META_KEY: {
                    "plate_path": str(plate_path),
                    "plate_id": plate_id,
                    "well": well,
                    "site": site,
                    "channel": name,
                    "role": name,
                }
            },
        )


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)


@pytest.fixture
def errors(monkeypatch):
    import napari.utils.notifications as notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda message: shown.append(str(message)))
    return shown


def test_segments_the_real_field_on_screen(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    planes = [tifffile.imread(REAL / f"r03c03f03p01-ch{i}sk1fk1fl1.tiff") for i in range(1, 7)]
    _add_field(viewer, planes, PHENIX_CHANNELS, REAL, "BR00143976", "C03", 3)
    widget = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment cells")
    widget.run()
    assert widget.worker is not None and not widget.run_button.isEnabled()
    _wait(qtbot, widget)
    assert errors == []
    cells = viewer.layers["cells [BR00143976 C03 s3]"]
    assert cells.metadata[META_KEY] == {
        "plate_path": str(REAL),
        "plate_id": "BR00143976",
        "well": "C03",
        "site": 3,
        "kind": "cells",
    }
    features = cells.features
    assert 30 <= len(features) <= 45 and features["index"].tolist() == list(
        range(1, len(features) + 1)
    )
    assert {schema.WELL, "Cells_AreaShape_Area", "Cytoplasm_Texture_Contrast_ER"} <= set(features)
    assert int(cells.data.max()) == len(features)
    # Hovering a cell shows its values.
    cy, cx = features.loc[0, [schema.CENTROID_Y, schema.CENTROID_X]]
    status = cells.get_status((cy, cx), world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    assert "Cells_AreaShape_Area" in text
    assert viewer.layers["nuclei [BR00143976 C03 s3]"].metadata[META_KEY]["kind"] == "nuclei"
    assert widget.status.text().startswith("Done: 1 field(s)")
    if os.environ.get("PHENOADAPT_SCREENSHOTS"):
        from skimage.io import imsave

        viewer.layers.selection.active = cells
        viewer.window.resize(1500, 1000)
        qtbot.wait(500)
        viewer.camera.center = (540, 540)
        viewer.camera.zoom = 0.78  # the 1080-pixel field fills the canvas height
        qtbot.wait(500)
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        imsave(DOCS_IMAGE, viewer.screenshot(canvas_only=False, flash=False))


def test_errors_are_notifications(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    widget = SegmentationWidget(viewer)
    widget.run()  # nothing on screen
    assert widget.worker is None
    assert "No plate field on screen" in errors[-1]
    planes = [np.zeros((128, 128), np.uint16)] + [
        np.full((128, 128), 100, np.uint16) + i for i in range(4)
    ]
    planes[1][::2] += 7  # not constant
    planes[2][::3] += 5
    planes[3][::2] += 9
    planes[4][::5] += 3
    _add_field(viewer, planes, ("DNA", "ER", "RNA", "AGP", "Mito"), "", "P9", "A01", 1)
    widget.run()
    _wait(qtbot, widget)
    assert "plate P9, well A01, site 1: channel DNA is all zero" in errors[-1]
    assert not [lay for lay in viewer.layers if lay.metadata.get(META_KEY, {}).get("kind")]
    widget.diameter.setValue(500)  # a field smaller than two nuclei
    planes[0] = planes[1].copy()
    viewer.layers[0].data = planes[0]
    widget.run()
    _wait(qtbot, widget)
    assert "too small for nuclei" in errors[-1]


def test_wells_mode_and_cancel(make_napari_viewer, qtbot, errors, tmp_path):
    plate_dir = write_plate(tmp_path / "SYN003", broken=("B03", 1))
    viewer = make_napari_viewer()
    planes = [tifffile.imread(p) for p in sorted(plate_dir.glob("r02c02f01*"))]
    _add_field(viewer, planes, ("DNA", "ER", "RNA", "AGP", "Mito"), plate_dir, "SYN003", "B02", 1)
    widget = SegmentationWidget(viewer)
    widget.diameter.setValue(16)
    widget.texture.setChecked(False)
    widget.scope.setCurrentText("Wells")
    widget.wells.setText("B02, B03")
    widget.run()
    _wait(qtbot, widget)
    names = {
        lay.name for lay in viewer.layers if lay.metadata.get(META_KEY, {}).get("kind") == "cells"
    }
    # Only the field on screen shows its masks: other sites' would pile up over it.
    assert names == {"cells [SYN003 B02 s1]"}
    assert {(r.well, r.site) for r in widget.results} == {("B02", 1), ("B02", 2)}
    assert len(errors) == 1 and "well B03, site 1" in errors[0]  # the plate run went on
    assert widget.progress.value() == widget.progress.maximum() == 3
    # Site 2 on screen (as the Plate dock shows it): its masks replace site 1's.
    for layer in [lay for lay in viewer.layers if "channel" in lay.metadata.get(META_KEY, {})]:
        layer.metadata = {META_KEY: {**layer.metadata[META_KEY], "site": 2}}
    widget._on_field_changed()
    kinds = sorted(
        (lay.metadata[META_KEY]["kind"], lay.metadata[META_KEY]["site"])
        for lay in viewer.layers
        if lay.metadata.get(META_KEY, {}).get("kind") in ("cells", "nuclei")
    )
    assert kinds == [("cells", 2), ("nuclei", 2)]
    widget.wells.setText("")  # every well
    widget.run()
    widget.cancel()
    _wait(qtbot, widget)
    assert widget.status.text() == "Cancelled."
    assert len(widget.results) < 4
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
