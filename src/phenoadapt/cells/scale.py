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
#: Nucleus diameters (micrometres) of the cell lines imaged in Cell Painting, with
#: margins: small lymphocyte-like nuclei to large, flat U2OS/A549 ones.  Used to
#: narrow the search when the plate's metadata gives the pixel size.
NUCLEUS_RANGE_UM = (4.0, 40.0)


def search_range(pixel_size_um: float | None) -> tuple[float, float]:
    """Diameters (pixels) searched: :data:`DIAMETER_RANGE`, narrowed by a known pixel size.

    Parameters
    ----------
    pixel_size_um
        Micrometres per pixel from the plate's metadata, or None when unknown.
    """
    if not pixel_size_um or not np.isfinite(pixel_size_um) or pixel_size_um <= 0:
        return DIAMETER_RANGE
    lo = max(DIAMETER_RANGE[0], NUCLEUS_RANGE_UM[0] / pixel_size_um)
    hi = min(DIAMETER_RANGE[1], NUCLEUS_RANGE_UM[1] / pixel_size_um)
    return (lo, hi) if lo < hi else DIAMETER_RANGE


def estimate_nucleus_diameter(
    dna: np.ndarray | Sequence[np.ndarray],
    diameter_range: tuple[float, float] | None = None,
    field_name: str = "the field",
    pixel_size_um: float | None = None,
) -> float:
    """Typical nucleus diameter, in pixels, of one or several DNA images.

    Parameters
    ----------
    dna
        A (y, x) DNA image, or several of them (sample fields of a plate).
    diameter_range
        Smallest and largest diameter (pixels) considered; by default
        :func:`search_range` of ``pixel_size_um``.
    field_name
        Name used in error messages.
    pixel_size_um
        Micrometres per pixel, when the plate's metadata gives it: blobs far
        smaller or larger than a nucleus (:data:`NUCLEUS_RANGE_UM`) are not
        taken for nuclei.

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
    search = diameter_range or search_range(pixel_size_um)
    diameters = np.concatenate([_blob_diameters(im, search) for im in images])
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
    # A blob at the smallest scale searched is something at most that small (debris,
    # noise): its true scale lies outside the range, so it says nothing about nuclei.
    blobs = blobs[blobs[:, 2] > min_sigma * 1.001] if len(blobs) else blobs
    if len(blobs) == 0:
        return np.empty(0)
    return blobs[:, 2] * 2 * _SQRT2 * factor
