"""Per-cell measurements with CellProfiler-style names.

For each compartment (Nuclei, Cells, Cytoplasm = cell minus nucleus) and each
measured channel:

- ``AreaShape``: area, perimeter, form factor, eccentricity, solidity, extent,
  axis lengths, orientation, Euler number, equivalent and maximum Feret
  diameters, convex area (scikit-image ``regionprops_table``);
- ``Intensity``: integrated, mean, standard deviation, minimum, maximum, lower
  quartile, median, upper quartile and mass displacement (distance between the
  object's centre and its intensity-weighted centre);
- ``Texture``: Haralick features of the grey-level co-occurrence matrix
  (angular second moment, contrast, correlation, entropy, inverse difference
  moment, variance), averaged over four directions.

Columns are named ``<Compartment>_<Category>_<Feature>[_<Channel>]``, e.g.
``Nuclei_AreaShape_Area``, ``Cells_Intensity_MeanIntensity_DNA``,
``Cytoplasm_Texture_Contrast_ER``.  Channels are named by their Cell Painting
role (DNA, ER, RNA, AGP, Mito) so that plates with different stain names give
the same columns.  Intensities are in the image's own units (not rescaled to
0..1 as CellProfiler does).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from skimage.feature import graycomatrix
from skimage.measure import regionprops_table

from .. import schema
from ..plate.channels import CELL_PAINTING_ROLES, Channel, ChannelRole
from .params import MeasureParams
from .segment import Segmentation, find_channel

# regionprops property -> CellProfiler feature name.
_SHAPE = {
    "area": "Area",
    "perimeter": "Perimeter",
    "eccentricity": "Eccentricity",
    "solidity": "Solidity",
    "extent": "Extent",
    "axis_major_length": "MajorAxisLength",
    "axis_minor_length": "MinorAxisLength",
    "orientation": "Orientation",
    "euler_number": "EulerNumber",
    "equivalent_diameter_area": "EquivalentDiameter",
    "feret_diameter_max": "MaxFeretDiameter",
    "area_convex": "ConvexArea",
}
# graycoprops property -> CellProfiler feature name.
_TEXTURE = {
    "ASM": "AngularSecondMoment",
    "contrast": "Contrast",
    "correlation": "Correlation",
    "entropy": "Entropy",
    "homogeneity": "InverseDifferenceMoment",
    "variance": "Variance",
}
_QUARTILES = {
    "LowerQuartileIntensity": 0.25,
    "MedianIntensity": 0.5,
    "UpperQuartileIntensity": 0.75,
}
_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def measured_channels(
    channels: Sequence[Channel], params: MeasureParams, field_name: str = "the field"
) -> list[tuple[int, str]]:
    """(position, column name) of each channel to measure.

    Column names are the Cell Painting role when the channel has one, else the
    channel name reduced to letters, digits and underscores.
    """
    if params.channels is None:
        positions = [i for i, c in enumerate(channels) if c.role is not ChannelRole.BRIGHTFIELD]
    else:
        positions = [find_channel(channels, name, field_name) for name in params.channels]
    return [(i, channel_label(channels[i])) for i in positions]


def channel_label(channel: Channel) -> str:
    """Name of a channel in measurement columns: its role, or its sanitized name."""
    if channel.role in CELL_PAINTING_ROLES:
        return channel.role.value
    return re.sub(r"\W+", "_", channel.name).strip("_") or f"ch{channel.key}"


def measure_cells(
    image: np.ndarray,
    channels: Sequence[Channel],
    seg: Segmentation,
    params: MeasureParams | None = None,
    field_name: str = "the field",
) -> pd.DataFrame:
    """Measure every segmented cell of a field.

    Parameters
    ----------
    image
        (channel, y, x) field.
    channels
        Channels of ``image`` in order.
    seg
        Nucleus and cell labels (cell ``i`` contains nucleus ``i``).
    params
        What to measure.
    field_name
        Name of the field in error messages.

    Returns
    -------
    pandas.DataFrame
        One row per cell, ordered by label: ``cell_id``, ``centroid_y``,
        ``centroid_x`` (the nucleus centre, always inside the cell), then the
        measurement columns.  A cell without cytoplasm has NaN Cytoplasm values.
    """
    params = params or MeasureParams()
    chans = measured_channels(channels, params, field_name)
    intensity = np.moveaxis(np.asarray(image)[[i for i, _ in chans]], 0, -1).astype(np.float32)
    names = [name for _, name in chans]
    ids = np.arange(1, seg.n_cells + 1)
    centres = regionprops_table(seg.nuclei, properties=("label", "centroid"))
    table = pd.DataFrame(
        {
            schema.CELL_ID: ids,
            schema.CENTROID_Y: _reindex(centres, "centroid-0", ids),
            schema.CENTROID_X: _reindex(centres, "centroid-1", ids),
        }
    )
    labels_of = {"Nuclei": seg.nuclei, "Cells": seg.cells, "Cytoplasm": seg.cytoplasm}
    blocks = [table]
    for compartment in params.compartments:
        labels = labels_of[compartment]
        blocks.append(_shape_features(labels, ids, compartment))
        blocks.append(_intensity_features(labels, intensity, names, ids, compartment))
        if params.texture:
            blocks.append(_texture_features(labels, intensity, names, ids, compartment, params))
    return pd.concat(blocks, axis=1)


def _reindex(props: dict, key: str, ids: np.ndarray) -> np.ndarray:
    """Values of ``props[key]`` at labels ``ids`` (NaN for labels absent from ``props``)."""
    return pd.Series(props[key], index=props["label"]).reindex(ids).to_numpy(dtype=np.float64)


def _shape_features(labels: np.ndarray, ids: np.ndarray, compartment: str) -> pd.DataFrame:
    props = regionprops_table(labels, properties=("label", *_SHAPE))
    out = {f"{compartment}_AreaShape_{cp}": _reindex(props, sk, ids) for sk, cp in _SHAPE.items()}
    area = out[f"{compartment}_AreaShape_Area"]
    perimeter = out[f"{compartment}_AreaShape_Perimeter"]
    with np.errstate(divide="ignore", invalid="ignore"):
        # 1 for a disc, smaller for elongated or ragged outlines (CellProfiler's FormFactor).
        out[f"{compartment}_AreaShape_FormFactor"] = 4 * np.pi * area / perimeter**2
    # CellProfiler reports orientation in degrees.
    out[f"{compartment}_AreaShape_Orientation"] = np.degrees(
        out[f"{compartment}_AreaShape_Orientation"]
    )
    return pd.DataFrame(out)


_INTENSITY = (
    "IntegratedIntensity",
    "MeanIntensity",
    "StdIntensity",
    "MinIntensity",
    "MaxIntensity",
    *_QUARTILES,
    "MassDisplacement",
)


def _intensity_features(
    labels: np.ndarray,
    intensity: np.ndarray,
    names: list[str],
    ids: np.ndarray,
    compartment: str,
) -> pd.DataFrame:
    """Intensity statistics of every object, read through its bounding box.

    One pass over the objects with numpy on each object's pixels is much faster
    than one ``regionprops`` property at a time (each a Python call per object
    and channel), and the cost grows with the objects' area, not the field's.
    """
    values = np.full((len(_INTENSITY), len(names), len(ids)), np.nan)
    for k, sl in enumerate(_find_objects(labels, ids)):
        if sl is not None:
            values[:, :, k] = _object_intensity(labels[sl] == ids[k], intensity[sl], sl)
    return pd.DataFrame(
        {
            f"{compartment}_Intensity_{feature}_{name}": values[f, c]
            for c, name in enumerate(names)
            for f, feature in enumerate(_INTENSITY)
        }
    )


def _object_intensity(mask: np.ndarray, patch: np.ndarray, sl: tuple) -> np.ndarray:
    """The :data:`_INTENSITY` statistics of one object, as an array (feature, channel)."""
    pixels = patch[mask].astype(np.float64)  # (n_pixels, channel)
    ys, xs = np.nonzero(mask)
    ys, xs = ys + sl[0].start, xs + sl[1].start
    total = pixels.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Distance between the object's centre and its intensity-weighted centre.
        wy, wx = (ys @ pixels) / total, (xs @ pixels) / total
        displacement = np.hypot(wy - ys.mean(), wx - xs.mean())
    return np.vstack(
        [
            total,
            pixels.mean(axis=0),
            pixels.std(axis=0),
            pixels.min(axis=0),
            pixels.max(axis=0),
            np.quantile(pixels, tuple(_QUARTILES.values()), axis=0),
            displacement,
        ]
    )


def _texture_features(
    labels: np.ndarray,
    intensity: np.ndarray,
    names: list[str],
    ids: np.ndarray,
    compartment: str,
    params: MeasureParams,
) -> pd.DataFrame:
    """Haralick features of each object, on its own intensities quantized to a few levels.

    Each object is quantized between its own minimum and maximum: texture then
    describes the pattern of the signal, independent of its brightness (which the
    Intensity features measure) and hence less sensitive to plate-to-plate
    intensity shifts.
    """
    levels = params.texture_levels
    values = np.full((len(names), len(_TEXTURE), len(ids)), np.nan)
    slices = _find_objects(labels, ids)
    for k, sl in enumerate(slices):
        if sl is None:
            continue
        mask = labels[sl] == ids[k]
        for c in range(len(names)):
            quantized = _quantize(intensity[sl][..., c], mask, levels)
            values[c, :, k] = _haralick(quantized, levels, params.texture_distance)
    out = {
        f"{compartment}_Texture_{feature}_{name}": values[c, f]
        for c, name in enumerate(names)
        for f, feature in enumerate(_TEXTURE.values())
    }
    return pd.DataFrame(out)


def _find_objects(labels: np.ndarray, ids: np.ndarray) -> list:
    from scipy import ndimage as ndi

    found = ndi.find_objects(labels, max_label=int(ids.max(initial=0)))
    return [found[i - 1] for i in ids]


def _quantize(patch: np.ndarray, mask: np.ndarray, levels: int) -> np.ndarray:
    """Grey levels 1..levels inside ``mask``, 0 outside (0 is dropped from the matrix)."""
    inside = patch[mask]
    lo, hi = float(inside.min()), float(inside.max())
    scaled = (patch - lo) / (hi - lo) if hi > lo else np.zeros_like(patch)
    q = 1 + np.minimum((scaled * levels).astype(np.int64), levels - 1)
    return np.where(mask, q, 0).astype(np.uint8)


def _haralick(quantized: np.ndarray, levels: int, distance: int) -> np.ndarray:
    """Texture features averaged over the directions in which the object has pixel pairs."""
    glcm = graycomatrix(
        quantized, distances=[distance], angles=_ANGLES, levels=levels + 1, symmetric=True
    )[1:, 1:]  # drop pairs that involve the outside (level 0)
    has_pairs = glcm.sum(axis=(0, 1))[0] > 0
    if not has_pairs.any():  # an object thinner than the distance
        return np.full(len(_TEXTURE), np.nan)
    return glcm_properties(glcm[:, :, 0, has_pairs]).mean(axis=1)


def glcm_properties(glcm: np.ndarray) -> np.ndarray:
    """The :data:`_TEXTURE` properties of co-occurrence matrices, all in one pass.

    The same formulas as :func:`skimage.feature.graycoprops` (normalisation,
    the correlation of a constant matrix is 1), computed once for every
    property: calling ``graycoprops`` once per property normalised the matrix
    six times and cost most of the texture time for the small matrices of a cell.

    Parameters
    ----------
    glcm
        ``(levels, levels, n)`` counts, one matrix per direction.

    Returns
    -------
    numpy.ndarray
        ``(len(_TEXTURE), n)``: ASM, contrast, correlation, entropy, homogeneity,
        variance (the order of :data:`_TEXTURE`).
    """
    P = glcm.astype(np.float64)
    sums = P.sum(axis=(0, 1), keepdims=True)
    sums[sums == 0] = 1
    P /= sums
    levels = P.shape[0]
    i = np.arange(levels, dtype=np.float64).reshape(levels, 1, 1)
    j = i.reshape(1, levels, 1)
    mean_i = (i * P).sum(axis=(0, 1))
    mean_j = (j * P).sum(axis=(0, 1))
    diff_i, diff_j = i - mean_i, j - mean_j
    var_i = (P * diff_i**2).sum(axis=(0, 1))
    std_i, std_j = np.sqrt(var_i), np.sqrt((P * diff_j**2).sum(axis=(0, 1)))
    cov = (P * diff_i * diff_j).sum(axis=(0, 1))
    flat = (std_i < 1e-15) | (std_j < 1e-15)
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = np.where(flat, 1.0, cov / np.where(flat, 1.0, std_i * std_j))
        log = -np.log(P, where=P != 0, out=np.zeros_like(P))
    square = (i - j) ** 2
    return np.stack(
        [
            (P**2).sum(axis=(0, 1)),  # ASM
            (P * square).sum(axis=(0, 1)),  # contrast
            correlation,
            (P * log).sum(axis=(0, 1)),  # entropy
            (P / (1.0 + square)).sum(axis=(0, 1)),  # homogeneity
            var_i,  # variance (skimage: around the row mean)
        ]
    )


def feature_columns(table: pd.DataFrame) -> list[str]:
    """Measurement columns of a per-cell table (compartment-prefixed, not metadata)."""
    prefixes = ("Nuclei_", "Cells_", "Cytoplasm_")
    return [c for c in table.columns if c.startswith(prefixes)]
