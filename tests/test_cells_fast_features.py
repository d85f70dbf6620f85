"""The one-pass measurements agree with the scikit-image / numpy reference definitions.

``measure_cells`` computes shape, intensity and texture per object in a few
array operations (issue 14.3).  These tests recompute every column the way it
was first computed — ``regionprops_table`` for AreaShape, ``np.quantile`` and
friends for Intensity, ``graycomatrix`` + ``graycoprops``-style formulas for
Texture — on a real crop of the Phenix field and on odd synthetic shapes, and
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
from skimage.feature import graycomatrix
from skimage.measure import regionprops_table

from phenoadapt.cells import SegmentationParams, measure_cells, segment_field
from phenoadapt.cells.measure import _ANGLES, _QUARTILES, _SHAPE, _TEXTURE, glcm_properties
from phenoadapt.cells.params import MeasureParams
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


def reference_table(image, channels, seg, params: MeasureParams) -> pd.DataFrame:
    """The measurement columns computed the reference way (regionprops, numpy, skimage)."""
    names = ["DNA", "ER", "RNA", "AGP", "Mito"]
    positions = [next(i for i, c in enumerate(channels) if c.role.value == n) for n in names]
    intensity = image[positions].astype(np.float32)
    ids = np.arange(1, seg.n_cells + 1)
    out = {}
    for compartment, labels in (
        ("Nuclei", seg.nuclei),
        ("Cells", seg.cells),
        ("Cytoplasm", seg.cytoplasm),
    ):
        props = regionprops_table(labels, properties=("label", *_SHAPE))
        index = pd.Index(props["label"])
        for sk, cp in _SHAPE.items():
            values = pd.Series(props[sk], index=index).reindex(ids).to_numpy(float)
            out[f"{compartment}_AreaShape_{cp}"] = values
        area = out[f"{compartment}_AreaShape_Area"]
        perimeter = out[f"{compartment}_AreaShape_Perimeter"]
        out[f"{compartment}_AreaShape_FormFactor"] = 4 * np.pi * area / perimeter**2
        out[f"{compartment}_AreaShape_Orientation"] = np.degrees(
            out[f"{compartment}_AreaShape_Orientation"]
        )
        slices = ndi.find_objects(labels, max_label=len(ids))
        for c, name in enumerate(names):
            stats = {k: np.full(len(ids), np.nan) for k in ("sum", "mean", "std", "min", "max")}
            quart = np.full((3, len(ids)), np.nan)
            texture = np.full((len(_TEXTURE), len(ids)), np.nan)
            for k, sl in enumerate(slices):
                if sl is None:
                    continue
                mask = labels[sl] == ids[k]
                px = intensity[c][sl][mask].astype(np.float64)
                stats["sum"][k], stats["mean"][k], stats["std"][k] = px.sum(), px.mean(), px.std()
                stats["min"][k], stats["max"][k] = px.min(), px.max()
                quart[:, k] = np.quantile(px, tuple(_QUARTILES.values()))
                texture[:, k] = reference_haralick(intensity[c][sl], mask, params)
            prefix = f"{compartment}_Intensity_"
            out[f"{prefix}IntegratedIntensity_{name}"] = stats["sum"]
            out[f"{prefix}MeanIntensity_{name}"] = stats["mean"]
            out[f"{prefix}StdIntensity_{name}"] = stats["std"]
            out[f"{prefix}MinIntensity_{name}"] = stats["min"]
            out[f"{prefix}MaxIntensity_{name}"] = stats["max"]
            for q, feature in enumerate(_QUARTILES):
                out[f"{prefix}{feature}_{name}"] = quart[q]
            for f, feature in enumerate(_TEXTURE.values()):
                out[f"{compartment}_Texture_{feature}_{name}"] = texture[f]
    return pd.DataFrame(out)


def reference_haralick(patch: np.ndarray, mask: np.ndarray, params: MeasureParams) -> np.ndarray:
    """Haralick features of one object and channel through skimage's graycomatrix."""
    levels = params.texture_levels
    inside = patch[mask]
    lo, hi = float(inside.min()), float(inside.max())
    scaled = (patch - lo) / (hi - lo) if hi > lo else np.zeros_like(patch)
    q = 1 + np.minimum((scaled * levels).astype(np.int64), levels - 1)
    q = np.where(mask, q, 0).astype(np.uint8)
    glcm = graycomatrix(q, [params.texture_distance], _ANGLES, levels=levels + 1, symmetric=True)[
        1:, 1:, 0
    ]
    has_pairs = glcm.sum(axis=(0, 1)) > 0
    if not has_pairs.any():
        return np.full(len(_TEXTURE), np.nan)
    return glcm_properties(glcm[:, :, has_pairs]).mean(axis=1)


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
    ref = reference_table(image, channels, seg, params)
    missing = set(ref.columns) - set(new.columns)
    assert not missing
    assert_matches(new, ref)


def test_texture_options_match_reference(real_crop):
    """Another level count and distance; and texture=False drops exactly the texture columns."""
    image, channels, seg = real_crop
    params = MeasureParams(texture_levels=5, texture_distance=1)
    new = measure_cells(image, channels, seg, params)
    ref = reference_table(image, channels, seg, params)
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
