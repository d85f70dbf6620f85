"""Nucleus size estimated from the DNA channel itself, for fields of unknown magnification.

A scale-normalised Laplacian of Gaussian responds most strongly to a bright disk
of diameter ``2 * sqrt(2) * sigma``; the median scale of the strongest blobs of a
field is therefore a size estimate that touching nuclei do not inflate (each
keeps its own response peak), unlike the area of thresholded objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage import feature, transform

from ..errors import CellsError

#: Diameters (pixels) the search covers: from tiny nuclei of a 4x-binned field
#: to 60x nuclei.
DIAMETER_RANGE = (6.0, 160.0)
#: Fields are shrunk to about this many pixels on their longest side first:
#: the estimate needs shapes, not detail, and blob_log is cubic in the scales.
_WORKING_SIZE = 512
_SQRT2 = float(np.sqrt(2.0))
#: The LoG peak of a flat-topped nucleus with soft, blurred edges sits about 10%
#: below the ideal-disk scale; measured on synthetic disks (15-80 px) and the real
#: Phenix field of tests/data against CellProfiler's nuclei.
_DISK_CORRECTION = 1.1


def estimate_nucleus_diameter(
    dna: np.ndarray | Sequence[np.ndarray],
    diameter_range: tuple[float, float] = DIAMETER_RANGE,
    field_name: str = "the field",
) -> float:
    """Typical nucleus diameter, in pixels, of one or several DNA images.

    Parameters
    ----------
    dna
        A (y, x) DNA image, or several of them (sample fields of a plate).
    diameter_range
        Smallest and largest diameter (pixels) considered.
    field_name
        Name used in error messages.

    Returns
    -------
    float
        Median diameter of the detected nuclei, in pixels of the input.

    Raises
    ------
    CellsError
        When no nucleus-like blob stands out in any image (an empty field).
    """
    images = [np.asarray(dna)] if np.ndim(dna) == 2 else [np.asarray(d) for d in dna]
    diameters = np.concatenate([_blob_diameters(im, diameter_range) for im in images])
    if diameters.size < 3:
        raise CellsError(
            f"{field_name}: too few nuclei stand out in the DNA channel to estimate their size; "
            "give the nucleus diameter in pixels (--nucleus-diameter)."
        )
    return float(np.median(diameters)) * _DISK_CORRECTION


def _blob_diameters(image: np.ndarray, diameter_range: tuple[float, float]) -> np.ndarray:
    """Diameters (input pixels) of the blobs found in one image."""
    image = image.astype(np.float32)
    factor = max(1.0, max(image.shape) / _WORKING_SIZE)
    if factor > 1:
        image = transform.rescale(image, 1 / factor, anti_aliasing=True, preserve_range=True)
    lo, hi = np.percentile(image, [1, 99.9])
    if not hi > lo:
        return np.empty(0)
    image = np.clip((image - lo) / (hi - lo), 0, 1)
    min_sigma = max(diameter_range[0] / factor / (2 * _SQRT2), 1.0)
    max_sigma = max(diameter_range[1] / factor / (2 * _SQRT2), min_sigma * 2)
    max_sigma = min(max_sigma, min(image.shape) / 6)
    blobs = feature.blob_log(
        image,
        min_sigma=min_sigma,
        max_sigma=max_sigma,
        num_sigma=int(np.clip(np.log2(max_sigma / min_sigma) * 6, 8, 30)),
        log_scale=True,
        threshold=0.05,
        overlap=0.5,
        exclude_border=int(max_sigma),
    )
    if len(blobs) == 0:
        return np.empty(0)
    return blobs[:, 2] * 2 * _SQRT2 * factor
