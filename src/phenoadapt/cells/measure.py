"""Per-cell measurements with CellProfiler-style names.

For each compartment (Nuclei, Cells, Cytoplasm = cell minus nucleus) and each
measured channel:

- ``AreaShape``: area, perimeter, form factor, eccentricity, solidity, extent,
  axis lengths, orientation, Euler number, equivalent and maximum Feret
  diameters, convex area (scikit-image ``regionprops`` definitions, computed
  in one pass per object by :mod:`.shape`);
- ``Intensity``: integrated, mean, standard deviation, minimum, maximum, lower
  quartile, median, upper quartile and mass displacement (distance between the
  object's centre and its intensity-weighted centre);
- ``Texture``: Haralick features of the grey-level co-occurrence matrix
  (angular second moment, contrast, correlation, entropy, inverse difference
  moment, variance), averaged over four directions.

Every object is read once through its bounding box and all three families
reuse its mask and pixels; ``tests/test_cells_fast_features.py`` checks each
column against the reference computation (``regionprops_table``,
``np.quantile``, ``graycomatrix``) on real cells: identical, or equal to a
relative 1e-12 where only the order of a floating-point sum differs.

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
from skimage.measure import regionprops_table

from .. import schema
from ..plate.channels import CELL_PAINTING_ROLES, Channel, ChannelRole
from .params import MeasureParams
from .segment import Segmentation, find_channel
from .shape import SHAPE_PROPERTIES, object_shape

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
    intensity = np.asarray(image)[[i for i, _ in chans]].astype(np.float32)  # (channel, y, x)
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
        features = _compartment_features(labels_of[compartment], intensity, names, ids, params)
        blocks.append(features.add_prefix(f"{compartment}_"))
    return pd.concat(blocks, axis=1)


def _reindex(props: dict, key: str, ids: np.ndarray) -> np.ndarray:
    """Values of ``props[key]`` at labels ``ids`` (NaN for labels absent from ``props``)."""
    return pd.Series(props[key], index=props["label"]).reindex(ids).to_numpy(dtype=np.float64)


_INTENSITY = (
    "IntegratedIntensity",
    "MeanIntensity",
    "StdIntensity",
    "MinIntensity",
    "MaxIntensity",
    *_QUARTILES,
    "MassDisplacement",
)


def _compartment_features(
    labels: np.ndarray,
    intensity: np.ndarray,
    names: list[str],
    ids: np.ndarray,
    params: MeasureParams,
) -> pd.DataFrame:
    """Shape, intensity and texture of every object of one compartment, in one pass.

    Each object is read once through its bounding box and every feature family
    reuses its mask, pixel coordinates and pixels: one ``regionprops`` property
    at a time (a Python call chain per object and feature) cost most of the
    measurement time.  Columns lack the compartment prefix.
    """
    n, n_channels, levels = len(ids), len(names), params.texture_levels
    shape = np.full((len(SHAPE_PROPERTIES), n), np.nan)
    values = np.full((len(_INTENSITY), n_channels, n), np.nan)
    glcms = np.zeros((n, n_channels, len(_ANGLES), levels, levels), dtype=np.int64)
    for k, sl in enumerate(_find_objects(labels, ids)):
        if sl is None:  # a cell without cytoplasm
            continue
        mask = labels[sl] == ids[k]
        ys, xs = np.nonzero(mask)
        shape[:, k] = object_shape(mask, ys, xs)
        patch = intensity[:, sl[0], sl[1]]  # (channel, h, w)
        pixels = patch[:, ys, xs]  # (channel, n_pixels)
        values[:, :, k] = _object_intensity(pixels, ys + sl[0].start, xs + sl[1].start)
        if params.texture:
            quantized = np.zeros(patch.shape, dtype=np.uint8)
            quantized[:, ys, xs] = quantize(pixels, values[3, :, k], values[4, :, k], levels)
            glcms[k] = cooccurrence(quantized, levels, params.texture_distance)
    out = {f"AreaShape_{_SHAPE[p]}": shape[i] for i, p in enumerate(SHAPE_PROPERTIES)}
    with np.errstate(divide="ignore", invalid="ignore"):
        # 1 for a disc, smaller for elongated or ragged outlines (CellProfiler's FormFactor).
        perimeter = out["AreaShape_Perimeter"]
        out["AreaShape_FormFactor"] = 4 * np.pi * out["AreaShape_Area"] / perimeter**2
    # CellProfiler reports orientation in degrees.
    out["AreaShape_Orientation"] = np.degrees(out["AreaShape_Orientation"])
    for c, name in enumerate(names):
        for f, feature in enumerate(_INTENSITY):
            out[f"Intensity_{feature}_{name}"] = values[f, c]
    if params.texture:
        texture = haralick(glcms)  # (feature, object, channel)
        texture[:, np.isnan(shape[0])] = np.nan
        for c, name in enumerate(names):
            for f, feature in enumerate(_TEXTURE.values()):
                out[f"Texture_{feature}_{name}"] = texture[f, :, c]
    return pd.DataFrame(out)


def _object_intensity(pixels: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The :data:`_INTENSITY` statistics of one object, as an array (feature, channel).

    ``pixels`` is ``(channel, n_pixels)``: reductions run along contiguous rows.
    Mean and standard deviation are numpy's own formulas (sum / n, root of
    the mean squared deviation), written out to skip their per-call overhead.
    """
    ordered = np.sort(pixels, axis=1).astype(np.float64)
    pixels = pixels.astype(np.float64)
    n = pixels.shape[1]
    total = pixels.sum(axis=1)
    mean = total / n
    deviation = pixels - mean[:, None]
    std = np.sqrt((deviation * deviation).sum(axis=1) / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Distance between the object's centre and its intensity-weighted centre.
        wy = (pixels @ ys.astype(np.float64)) / total
        wx = (pixels @ xs.astype(np.float64)) / total
        displacement = np.hypot(wy - ys.mean(), wx - xs.mean())
    return np.vstack(
        [
            total,
            mean,
            std,
            ordered[:, 0],
            ordered[:, -1],
            _sorted_quantiles(ordered, tuple(_QUARTILES.values())),
            displacement,
        ]
    )


def _sorted_quantiles(ordered: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """``np.quantile(x, quantiles, axis=1)`` (linear method) of ``x`` sorted along axis 1.

    The same virtual index and interpolation as numpy, without its per-call
    overhead (which, once per object, was a tenth of the measurement time).
    """
    n = ordered.shape[1]
    q = np.asarray(quantiles, dtype=np.float64)
    virtual = n * q + (1 + q * (1 - 1 - 1)) - 1  # numpy's alpha = beta = 1
    below = np.floor(virtual)
    t = (virtual - below)[:, None]
    lo = ordered[:, np.clip(below.astype(np.intp), 0, n - 1)].T
    hi = ordered[:, np.clip(below.astype(np.intp) + 1, 0, n - 1)].T
    diff = hi - lo
    return np.where(t >= 0.5, hi - diff * (1 - t), lo + diff * t)


def _find_objects(labels: np.ndarray, ids: np.ndarray) -> list:
    from scipy import ndimage as ndi

    found = ndi.find_objects(labels, max_label=int(ids.max(initial=0)))
    return [found[i - 1] for i in ids]


def texture_offsets(distance: int) -> list[tuple[int, int]]:
    """(row, column) offsets of :data:`_ANGLES` at ``distance``, rounded as graycomatrix does."""
    return [(round(np.sin(a) * distance), round(np.cos(a) * distance)) for a in _ANGLES]


def quantize(pixels: np.ndarray, lo: np.ndarray, hi: np.ndarray, levels: int) -> np.ndarray:
    """Grey levels 1..levels of an object's pixels, between its own minimum and maximum.

    Parameters
    ----------
    pixels
        ``(channel, n_pixels)`` float32 intensities of the object.
    lo, hi
        Per channel, the object's minimum and maximum intensity.
    levels
        Number of grey levels.

    Returns
    -------
    numpy.ndarray
        uint8 levels of ``pixels``' shape; a channel constant over the object
        is all level 1.  Quantizing per object makes texture describe the
        pattern of the signal, not its brightness (which the Intensity features
        carry), and hence less sensitive to plate-to-plate intensity shifts.
    """
    lo = lo.astype(np.float32)[:, None]
    span = hi.astype(np.float32)[:, None] - lo
    flat = span == 0
    scaled = (pixels - lo) / np.where(flat, np.float32(1), span)
    scaled = np.where(flat, np.float32(0), scaled)
    return (1 + np.minimum((scaled * levels).astype(np.int64), levels - 1)).astype(np.uint8)


def cooccurrence(quantized: np.ndarray, levels: int, distance: int) -> np.ndarray:
    """Symmetric grey-level co-occurrence counts of one object, every channel and direction.

    What ``graycomatrix(..., symmetric=True)`` counts on each channel's
    quantized box, with the outside level 0 then dropped, for all channels at
    once: each pair of pixels becomes one histogram bin.

    Parameters
    ----------
    quantized
        ``(channel, h, w)`` levels 1..levels inside the object, 0 outside
        (:func:`quantize`).
    levels, distance
        Number of grey levels; pixel distance of the pairs.

    Returns
    -------
    numpy.ndarray
        ``(channel, direction, levels, levels)`` counts, directions in the
        order of :data:`_ANGLES`.
    """
    n_channels, h, w = quantized.shape
    side = levels + 1
    # Bin of a pair = (channel, first level, second level), flattened.
    dtype = np.uint16 if n_channels * side * side <= np.iinfo(np.uint16).max else np.uint32
    first = (quantized + (np.arange(n_channels, dtype=dtype) * side)[:, None, None]) * side
    counts = []
    for dr, dc in texture_offsets(distance):
        a = first[:, : h - dr, max(0, -dc) : w - max(0, dc)]
        b = quantized[:, dr:, max(0, dc) : w - max(0, -dc)]
        counts.append(np.bincount((a + b).ravel(), minlength=n_channels * side * side))
    glcm = np.stack(counts).reshape(len(counts), n_channels, side, side)[:, :, 1:, 1:]
    glcm = glcm + glcm.transpose(0, 1, 3, 2)  # symmetric
    return glcm.transpose(1, 0, 2, 3)


def haralick(glcms: np.ndarray) -> np.ndarray:
    """Texture features averaged over the directions in which an object has pixel pairs.

    Parameters
    ----------
    glcms
        ``(..., direction, levels, levels)`` counts (:func:`cooccurrence`).

    Returns
    -------
    numpy.ndarray
        ``(len(_TEXTURE), ...)``; NaN where no direction has a pair (an object
        thinner than the distance).
    """
    lead, (n_dir, levels, _) = glcms.shape[:-3], glcms.shape[-3:]
    flat = glcms.reshape(-1, levels, levels)
    props = glcm_properties(np.moveaxis(flat, 0, -1)).reshape(len(_TEXTURE), -1, n_dir)
    has_pairs = flat.reshape(-1, n_dir, levels * levels).sum(axis=-1) > 0
    n_pairs = has_pairs.sum(axis=-1)
    with np.errstate(invalid="ignore"):
        mean = np.where(has_pairs, props, 0.0).sum(axis=-1) / n_pairs
    return mean.reshape(len(_TEXTURE), *lead)


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
