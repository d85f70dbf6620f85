"""napari contributions: the plate reader and the synthetic sample, in a real viewer."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from phenoadapt.gui.layers import META_KEY
from phenoadapt.gui.reader import get_plate_reader
from phenoadapt.gui.sample import make_sample_plate, sample_config
from phenoadapt.plate import open_plate

pytestmark = pytest.mark.gui


def test_plate_folder_opens_through_the_reader(make_napari_viewer, data_dir):
    viewer = make_napari_viewer()
    viewer.open(str(data_dir / "phenix_BR00143976"), plugin="phenoadapt")
    names = [layer.metadata[META_KEY]["channel"] for layer in viewer.layers]
    assert len(names) == 6
    roles = {layer.metadata[META_KEY]["role"]: layer for layer in viewer.layers}
    assert roles["DNA"].colormap.name == "blue"
    assert roles["brightfield"].visible is False
    assert all(layer.blending == "additive" for layer in viewer.layers)


def test_broken_plate_folder_gives_a_notification_not_a_crash(
    make_napari_viewer, tmp_path, data_dir
):
    # A recognised Phenix folder whose second site lacks channel 2: taken, then explained.
    source = data_dir / "phenix_BR00143976" / "r03c03f03p01-ch1sk1fk1fl1.tiff"
    for name in ("r01c01f01p01-ch1", "r01c01f01p01-ch2", "r01c01f02p01-ch1"):
        shutil.copy(source, tmp_path / f"{name}sk1fk1fl1.tiff")
    viewer = make_napari_viewer()
    reader = get_plate_reader(str(tmp_path))
    assert reader is not None
    from napari.utils.notifications import notification_manager

    seen = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    out = reader(str(tmp_path))
    assert out == [(None,)]
    assert any("could not open" in m and "channel 2" in m for m in seen), seen
    assert len(viewer.layers) == 0


def test_reader_declines_files_and_several_paths(tmp_path):
    f = tmp_path / "a.tif"
    f.write_bytes(b"")
    assert get_plate_reader(str(f)) is None
    assert get_plate_reader([str(tmp_path), str(tmp_path)]) is None


def test_reader_declines_folders_that_are_not_plates(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "photo.tif").write_bytes(b"")
    assert get_plate_reader(str(tmp_path)) is None
    assert get_plate_reader([str(tmp_path)]) is None
    assert get_plate_reader(str(tmp_path / "notes.txt")) is None


def test_napari_offers_phenoadapt_for_folders_only(tmp_path, data_dir):
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    image = tmp_path / "photo.png"
    image.write_bytes(b"")
    for path in (image, tmp_path / "table.csv"):
        assert "phenoadapt" not in {r.plugin_name for r in pm.iter_compatible_readers(str(path))}
    folder = str(data_dir / "phenix_BR00143976")
    assert "phenoadapt" in {r.plugin_name for r in pm.iter_compatible_readers(folder)}


def test_sample_data_loads_a_synthetic_plate(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("phenoadapt", "synthetic_plate")
    images = [layer for layer in viewer.layers if layer._type_string == "image"]
    labels = [layer for layer in viewer.layers if layer._type_string == "labels"]
    assert [layer.metadata[META_KEY]["channel"] for layer in images] == [
        "DNA",
        "ER",
        "RNA",
        "AGP",
        "Mito",
    ]
    assert len(labels) == 1
    truth = labels[0]
    assert {"Metadata_MoA", "Metadata_Treatment"} <= set(truth.features.columns)
    assert len(truth.features) == len(np.unique(truth.data)) - 1  # one row per cell, no background
    folder = Path(images[0].metadata[META_KEY]["plate_path"])
    plate = open_plate(folder)  # the layers point at a real plate folder
    assert plate.n_fields == len(sample_config().wells) * sample_config().sites
    shutil.rmtree(folder.parent, ignore_errors=True)


def test_sample_plate_is_deterministic(tmp_path):
    a = make_sample_plate(tmp_path / "a")
    b = make_sample_plate(tmp_path / "b")
    pa, pb = open_plate(a), open_plate(b)
    assert pa.wells == pb.wells
    well = pa.wells[3]
    np.testing.assert_array_equal(pa.read_field(well, 1), pb.read_field(well, 1))
