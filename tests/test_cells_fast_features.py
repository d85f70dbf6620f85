"""The one-pass measurements agree with the scikit-image / numpy reference definitions.

``measure_cells`` computes shape, intensity and texture per object in a few
array operations (issue 14.3).  These tests recompute every column the way it
was first computed (:mod:`phenoadapt.cells.reference`: ``regionprops_table``
for AreaShape, ``np.quantile`` and friends for Intensity, ``graycomatrix`` for
Texture) on a real crop of the Phenix field and on odd synthetic shapes, and
require the same values: exactly for areas, perimeters, convex areas, Feret
diameters, Euler numbers, minima, maxima and integrated intensities; to a
relative 1e-12 (float rounding of another summation order) for moments,
means, deviations, quantiles and texture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage.measure import regionprops_table
from skimage.segmentation import expand_labels

from phenoadapt.cells import SegmentationParams, measure_cells, segment_field
from phenoadapt.cells.classical import fill_holes
from phenoadapt.cells.params import MeasureParams
from phenoadapt.cells.reference import reference_measurements
from phenoadapt.cells.shape import SHAPE_PROPERTIES, object_shape
from phenoadapt.plate import open_plate

# Features from second moments: a different summation order than regionprops'.
ROUNDING = ("Eccentricity", "MajorAxisLength", "MinorAxisLength", "Orientation")


@pytest.fixture(scope="module")
def real_crop():
    """A 500 x 500 crop of the real field (about ten cells), segmented."""
    plate = open_plate(Path(__file__).parent / "data" / "phenix_BR00143976")
    image = plate.read_field(*next(plate.fields()))[:, 200:700, 200:700]
    seg = segment_field(image, plate.channels, SegmentationParams(exclude_border=False))
    assert seg.n_cells >= 5
    return image, plate.channels, seg


def assert_matches(new: pd.DataFrame, ref: pd.DataFrame) -> None:
    """Counts, pixel-grid geometry and order statistics exact; sums to float rounding."""
    for column in ref.columns:
        category, feature = column.split("_")[1:3]
        exact = category == "AreaShape" and feature not in ROUNDING
        exact |= feature in ("MinIntensity", "MaxIntensity", "IntegratedIntensity")
        rtol = 0 if exact else 1e-12
        atol = 1e-9 if column.split("_")[2] == "Orientation" else 0  # degrees near 0
        np.testing.assert_allclose(
            new[column].to_numpy(float),
            ref[column].to_numpy(float),
            rtol=rtol,
            atol=atol,
            err_msg=column,
        )


def test_real_crop_matches_reference(real_crop):
    image, channels, seg = real_crop
    params = MeasureParams()
    new = measure_cells(image, channels, seg, params)
    ref = reference_measurements(image, channels, seg, params)
    missing = set(ref.columns) - set(new.columns)
    assert not missing
    assert_matches(new, ref)


def test_texture_options_match_reference(real_crop):
    """Another level count and distance; and texture=False drops exactly the texture columns."""
    image, channels, seg = real_crop
    params = MeasureParams(texture_levels=5, texture_distance=1)
    new = measure_cells(image, channels, seg, params)
    ref = reference_measurements(image, channels, seg, params)
    texture = [c for c in ref.columns if "_Texture_" in c]
    assert_matches(new[texture], ref[texture])
    plain = measure_cells(image, channels, seg, MeasureParams(texture=False))
    assert set(new.columns) - set(plain.columns) == set(texture)
    pd.testing.assert_frame_equal(plain, new[plain.columns])


def test_odd_shapes_match_regionprops():
    """Ragged, holed, split and one-pixel objects: every shape property as regionprops."""
    rng = np.random.default_rng(0)
    blocks = np.repeat(np.repeat(np.arange(1, 145).reshape(12, 12), 12, 0), 12, 1)
    labels = np.where(rng.random(blocks.shape) > 0.55, blocks, 0).astype(np.int32)
    labels = np.pad(labels, ((0, 70), (0, 0)))
    labels[0, 0] = 999  # one pixel
    labels[150:160, 20:21] = 998  # one column
    labels[150, 40:60] = 997  # one row
    ring = np.zeros((30, 30), bool)
    yy, xx = np.ogrid[:30, :30]
    ring[(yy - 15) ** 2 + (xx - 15) ** 2 < 140] = True
    ring[(yy - 15) ** 2 + (xx - 15) ** 2 < 40] = False
    ring[5:25, 14:16] = False  # two halves of a ring: one object in two parts
    labels[175:205, 60:90][ring] = 996
    props = regionprops_table(labels, properties=("label", *SHAPE_PROPERTIES))
    slices = ndi.find_objects(labels)
    for row, label in enumerate(props["label"]):
        mask = labels[slices[label - 1]] == label
        values = object_shape(mask, *np.nonzero(mask))
        for j, name in enumerate(SHAPE_PROPERTIES):
            np.testing.assert_allclose(
                values[j], props[name][row], rtol=1e-12, atol=1e-12, err_msg=f"{name} {label}"
            )


def test_fill_holes_is_binary_fill_holes():
    rng = np.random.default_rng(1)
    for density in (0.2, 0.5, 0.8):
        mask = rng.random((90, 70)) < density
        np.testing.assert_array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
    assert fill_holes(np.ones((5, 5), bool)).all()
    assert not fill_holes(np.zeros((5, 5), bool)).any()


def test_segmentation_steps_match_their_reference(real_crop):
    """The cell reach is expand_labels' and no cell keeps a hole."""
    image, channels, seg = real_crop
    radius = SegmentationParams().cell_radius
    reach = ndi.distance_transform_edt(seg.nuclei == 0) <= radius
    np.testing.assert_array_equal(reach, expand_labels(seg.nuclei, radius) > 0)
    for i, sl in enumerate(ndi.find_objects(seg.cells), start=1):
        own = seg.cells[sl] == i
        assert not (ndi.binary_fill_holes(own) & (seg.cells[sl] == 0)).any()
