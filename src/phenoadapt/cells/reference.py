"""The measurements computed the reference way, one scikit-image / numpy call at a time.

:func:`phenoadapt.cells.measure_cells` computes every feature in one pass per
object; this module computes the same columns the way they were first
computed and defined — ``regionprops_table`` for AreaShape, ``np.quantile``
and friends for Intensity, ``graycomatrix`` for Texture — about four times
slower.  It exists so that tests can check the fast path against it and
``benchmarks/bench_segmentation.py`` can time both; it is not used by the
pipeline.  (MassDisplacement has no scikit-image definition and is left out.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.feature import graycomatrix
from skimage.measure import regionprops_table

from ..plate.channels import Channel
from .measure import _ANGLES, _QUARTILES, _SHAPE, _TEXTURE, glcm_properties, measured_channels
from .params import MeasureParams
from .segment import Segmentation


def reference_measurements(
    image: np.ndarray,
    channels: Sequence[Channel],
    seg: Segmentation,
    params: MeasureParams | None = None,
) -> pd.DataFrame:
    """The measurement columns of :func:`~phenoadapt.cells.measure_cells`, the slow way.

    Parameters
    ----------
    image, channels, seg, params
        As for :func:`~phenoadapt.cells.measure_cells`.

    Returns
    -------
    pandas.DataFrame
        One row per cell (label order); every AreaShape, Intensity (but
        MassDisplacement) and, with ``params.texture``, Texture column.
    """
    params = params or MeasureParams()
    chans = measured_channels(channels, params)
    intensity = np.asarray(image)[[i for i, _ in chans]].astype(np.float32)
    ids = np.arange(1, seg.n_cells + 1)
    labels_of = {"Nuclei": seg.nuclei, "Cells": seg.cells, "Cytoplasm": seg.cytoplasm}
    out: dict[str, np.ndarray] = {}
    for compartment in params.compartments:
        labels = labels_of[compartment]
        out.update(_reference_shape(labels, ids, compartment))
        slices = ndi.find_objects(labels, max_label=len(ids))
        for c, (_, name) in enumerate(chans):
            out.update(
                _reference_channel(labels, intensity[c], slices, ids, params, compartment, name)
            )
    return pd.DataFrame(out)


def _reference_shape(labels: np.ndarray, ids: np.ndarray, compartment: str) -> dict:
    props = regionprops_table(labels, properties=("label", *_SHAPE))
    index = pd.Index(props["label"])
    out = {
        f"{compartment}_AreaShape_{cp}": pd.Series(props[sk], index=index)
        .reindex(ids)
        .to_numpy(float)
        for sk, cp in _SHAPE.items()
    }
    area, perimeter = (
        out[f"{compartment}_AreaShape_Area"],
        out[f"{compartment}_AreaShape_Perimeter"],
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        out[f"{compartment}_AreaShape_FormFactor"] = 4 * np.pi * area / perimeter**2
    orientation = f"{compartment}_AreaShape_Orientation"
    out[orientation] = np.degrees(out[orientation])
    return out


def _reference_channel(
    labels: np.ndarray,
    plane: np.ndarray,
    slices: list,
    ids: np.ndarray,
    params: MeasureParams,
    compartment: str,
    name: str,
) -> dict:
    """Intensity and texture columns of one channel, object by object."""
    stats = np.full((5 + len(_QUARTILES), len(ids)), np.nan)
    texture = np.full((len(_TEXTURE), len(ids)), np.nan)
    for k, sl in enumerate(slices):
        if sl is None:
            continue
        mask = labels[sl] == ids[k]
        px = plane[sl][mask].astype(np.float64)
        stats[:5, k] = px.sum(), px.mean(), px.std(), px.min(), px.max()
        stats[5:, k] = np.quantile(px, tuple(_QUARTILES.values()))
        if params.texture:
            texture[:, k] = reference_haralick(plane[sl], mask, params)
    prefix = f"{compartment}_Intensity_"
    features = ("IntegratedIntensity", "MeanIntensity", "StdIntensity", "MinIntensity")
    features += ("MaxIntensity", *_QUARTILES)
    out = {f"{prefix}{feature}_{name}": stats[f] for f, feature in enumerate(features)}
    if params.texture:
        for f, feature in enumerate(_TEXTURE.values()):
            out[f"{compartment}_Texture_{feature}_{name}"] = texture[f]
    return out


def reference_haralick(patch: np.ndarray, mask: np.ndarray, params: MeasureParams) -> np.ndarray:
    """Haralick features of one object and channel through ``skimage.feature.graycomatrix``.

    The object's intensities are quantized to levels 1..L between its own
    minimum and maximum, the outside is level 0, and pairs with the outside
    are dropped; the features are averaged over the directions with pairs.
    """
    levels = params.texture_levels
    inside = patch[mask]
    lo, hi = float(inside.min()), float(inside.max())
    scaled = (patch - lo) / (hi - lo) if hi > lo else np.zeros_like(patch)
    q = 1 + np.minimum((scaled * levels).astype(np.int64), levels - 1)
    q = np.where(mask, q, 0).astype(np.uint8)
    glcm = graycomatrix(q, [params.texture_distance], _ANGLES, levels=levels + 1, symmetric=True)
    glcm = glcm[1:, 1:, 0]
    has_pairs = glcm.sum(axis=(0, 1)) > 0
    if not has_pairs.any():
        return np.full(len(_TEXTURE), np.nan)
    return glcm_properties(glcm[:, :, has_pairs]).mean(axis=1)
