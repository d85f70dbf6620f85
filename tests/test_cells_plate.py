"""Plate-wide processing, crops and the crop stream / torch dataset over a plate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenoadapt import schema
from phenoadapt.cells import (
    CropParams,
    CropStream,
    MeasureParams,
    SegmentationParams,
    extract_crops,
    segment_plate,
)
from phenoadapt.errors import Cancelled, CellsError
from phenoadapt.plate import open_plate
from phenoadapt.plate.synthetic import render_field
from phenoadapt.plate.wells import well_position

SYNTH = SegmentationParams(nucleus_diameter=16)
FAST = MeasureParams(texture=False)
FIELDS = {("B02", 1): 11, ("B02", 2): 12, ("B03", 1): 13, ("C05", 1): 14}


def write_plate(folder: Path, broken: tuple[str, int] | None = None) -> Path:
    """A small 5-channel Opera Phenix plate of synthetic fields; ``broken`` has no DNA signal."""
    folder.mkdir(parents=True, exist_ok=True)
    for (well, site), seed in FIELDS.items():
        image = render_field(seed=seed, well=well, site=site).image
        if (well, site) == broken:
            image[0] = 0
        row, col = well_position(well)
        for c, plane in enumerate(image, start=1):
            name = f"r{row:02d}c{col:02d}f{site:02d}p01-ch{c}sk1fk1fl1.tiff"
            tifffile.imwrite(folder / name, plane)
    return folder


@pytest.fixture(scope="module")
def plate_dir(tmp_path_factory) -> Path:
    return write_plate(tmp_path_factory.mktemp("plate") / "SYN001", broken=("B03", 1))


@pytest.fixture(scope="module")
def plate(plate_dir):
    return open_plate(plate_dir)


@pytest.fixture(scope="module")
def serial(plate):
    return segment_plate(plate, segmentation=SYNTH, measure=FAST, workers=1)


# -- plate processing -----------------------------------------------------------
def test_plate_run_records_failed_field_and_goes_on(serial, plate):
    assert plate.channel_names == ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert serial.n_fields == 4
    assert [(f.well, f.site) for f in serial.failures] == [("B03", 1)]
    message = serial.failures[0].message
    assert "well B03, site 1" in message and "DNA is all zero" in message
    done = serial.cells.groupby([schema.WELL, schema.SITE]).size()
    assert set(done.index) == {("B02", 1), ("B02", 2), ("C05", 1)}
    assert (done > 20).all()
    assert list(serial.cells.columns[:4]) == [
        schema.PLATE,
        schema.WELL,
        schema.SITE,
        schema.CELL_ID,
    ]
    # Plate order, and cell ids restart at 1 in every field.
    assert serial.cells[schema.WELL].tolist() == sorted(serial.cells[schema.WELL])
    assert (serial.cells.groupby([schema.WELL, schema.SITE])[schema.CELL_ID].min() == 1).all()


def test_pool_gives_the_same_table_and_reports_progress(plate, serial):
    calls = []
    pooled = segment_plate(
        plate,
        segmentation=SYNTH,
        measure=FAST,
        workers=2,
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    pd.testing.assert_frame_equal(pooled.cells, serial.cells)
    assert pooled.failures == serial.failures
    assert calls[0] == ("segment", 0, 4) and calls[-1] == ("segment", 4, 4)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_stops_the_run(plate, workers):
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 1

    with pytest.raises(Cancelled, match="cancelled after"):
        segment_plate(plate, segmentation=SYNTH, measure=FAST, workers=workers, cancel=cancel)


def test_wells_subset_and_unknown_well(plate):
    result = segment_plate(plate, wells=["C05"], segmentation=SYNTH, measure=FAST, workers=1)
    assert set(result.cells[schema.WELL]) == {"C05"} and result.n_fields == 1
    with pytest.raises(CellsError, match="H12"):
        segment_plate(plate, wells=["H12"], segmentation=SYNTH, workers=1)


def test_profiles_from_a_plate_run(serial):
    wells = serial.per_well()
    assert wells[schema.WELL].tolist() == ["B02", "C05"]
    assert len(serial.per_site()) == 3


# -- crops ----------------------------------------------------------------------
def _ramp_field() -> np.ndarray:
    """Two channels whose pixel values encode their own position."""
    yy, xx = np.mgrid[:100, :120].astype(np.float32)
    return np.stack([yy * 1000 + xx, -(yy * 1000 + xx)])


def test_crops_are_centred_and_padded_at_the_edge():
    image = _ramp_field()
    crops, kept = extract_crops(image, [[50, 60], [2, 3]], CropParams(size=16))
    assert crops.shape == (2, 2, 16, 16) and crops.dtype == np.float32 and kept.all()
    assert crops[0, 0, 8, 8] == 50 * 1000 + 60  # centre pixel
    assert crops[0, 0, 0, 0] == 42 * 1000 + 52
    assert np.array_equal(crops[0, 1], -crops[0, 0])
    assert (crops[1, :, :6, :] == 0).all()  # above the field: zero padding
    assert crops[1, 0, 8, 8] == 2 * 1000 + 3


def test_crops_skip_edge_cells_and_rescale():
    image = _ramp_field()
    crops, kept = extract_crops(image, [[50, 60], [2, 3]], CropParams(size=16, border="skip"))
    assert kept.tolist() == [True, False] and len(crops) == 1
    half, _ = extract_crops(image, [[50, 60]], CropParams(size=16, scale=0.5))
    assert half.shape == (1, 2, 16, 16)
    # A 32-pixel window shrunk to 16 pixels: its corners span 31 field rows.
    assert half[0, 0, -1, 0] - half[0, 0, 0, 0] == pytest.approx(30 * 1000, rel=0.1)


def test_crops_mask_neighbours():
    image = np.ones((1, 40, 40), np.float32)
    labels = np.zeros((40, 40), np.int32)
    labels[10:20, 10:20] = 1
    labels[10:20, 20:30] = 2
    crops, _ = extract_crops(
        image, [[15, 15]], CropParams(size=20, mask_neighbours=True), labels, [1]
    )
    window = labels[5:25, 5:25]
    assert (crops[0, 0][window == 2] == 0).all()
    assert (crops[0, 0][window != 2] == 1).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"size": 2}, "Crop size"),
        ({"size": 10.5}, "Crop size"),
        ({"scale": -1}, "scale"),
        ({"border": "wrap"}, "border mode"),
    ],
)
def test_bad_crop_parameters(params, message):
    with pytest.raises(CellsError, match=message):
        CropParams(**params)


def test_crop_larger_than_field_names_the_field():
    with pytest.raises(CellsError, match="well A01.*larger than the 100x120 field"):
        extract_crops(_ramp_field(), [[50, 60]], CropParams(size=128), field_name="well A01")


# -- crop stream and dataset ------------------------------------------------------
def test_stream_yields_fixed_batches_and_skips_failed_fields(plate, serial):
    stream = CropStream(plate, batch_size=32, crop=CropParams(size=24), segmentation=SYNTH)
    batches = list(stream)
    sizes = [len(b) for b in batches]
    assert all(s == 32 for s in sizes[:-1]) and 0 < sizes[-1] <= 32
    assert sum(sizes) == len(serial.cells)
    assert all(b.crops.shape[1:] == (5, 24, 24) and b.crops.dtype == np.float32 for b in batches)
    rows = pd.concat([b.cells for b in batches], ignore_index=True)
    np.testing.assert_allclose(rows[schema.CENTROID_X], serial.cells[schema.CENTROID_X])
    assert [(f.well, f.site) for f in stream.failures] == [("B03", 1)]


def test_stream_from_a_saved_table_and_cancel(plate, serial):
    stream = CropStream(
        plate, wells=["C05"], batch_size=1000, crop=CropParams(size=16), cells=serial.cells
    )
    (batch,) = list(stream)
    assert len(batch) == (serial.cells[schema.WELL] == "C05").sum()
    with pytest.raises(CellsError, match="mask_neighbours needs cell labels"):
        CropStream(plate, cells=serial.cells, crop=CropParams(mask_neighbours=True))
    with pytest.raises(Cancelled):
        list(CropStream(plate, segmentation=SYNTH, cancel=lambda: True))


def test_torch_dataset_feeds_a_dataloader(plate, serial):
    import torch
    from torch.utils.data import DataLoader

    from phenoadapt.cells import CellCropDataset

    dataset = CellCropDataset(
        plate, wells=["B02"], batch_size=50, crop=CropParams(size=16), segmentation=SYNTH
    )
    batches = list(DataLoader(dataset, batch_size=None))
    assert all(isinstance(b["crops"], torch.Tensor) for b in batches)
    assert batches[0]["crops"].shape[1:] == (5, 16, 16)
    assert sum(len(b["cells"]) for b in batches) == (serial.cells[schema.WELL] == "B02").sum()


def test_centroids_outside_the_field_are_a_clear_error():
    import numpy as np
    import pytest

    from phenoadapt.cells import CropParams, extract_crops
    from phenoadapt.errors import CellsError

    image = np.ones((2, 64, 64), dtype=np.uint16)
    with pytest.raises(CellsError, match="outside the 64x64 field"):
        extract_crops(image, np.array([[10.0, 10.0], [200.0, 5.0]]), CropParams(size=16),
                      field_name="A01 site 1")  # fmt: skip
