"""What one TIFF file's header says: plane shape, pixel type and, for stacks, where each channel is.

Only the header (IFDs, OME-XML) is read, never pixel data, so opening a plate
costs the same whatever the image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ...errors import PlateReadError
from ..model import check_complete, quiet_tifffile
from .metadata import ome_channel_names, ome_pixel_size_um


@dataclass(frozen=True)
class ChannelPlace:
    """Where one channel lives in a stack file: a page, and a sample of it if pages hold several."""

    page: int
    sample: int | None = None
    sample_axis: int | None = None


@dataclass(frozen=True)
class TiffHeader:
    """Plane shape and pixel type of a TIFF; for stacks, the place of each channel."""

    path: Path
    shape: tuple[int, int]
    dtype: np.dtype
    channels: tuple[ChannelPlace, ...]
    channel_names: tuple[str, ...] | None = None
    pixel_size_um: float | None = None


def _bad_file(path: Path, exc: Exception) -> PlateReadError:
    return PlateReadError(
        f"Cannot read the TIFF header of {path}: {exc}. The file may be corrupt, truncated or "
        "not a TIFF; copy it again from the instrument or remove it from the plate folder."
    )


def read_header(path: Path, *, stack: bool) -> TiffHeader:
    """Read shape, dtype and channel places from the header of ``path``.

    Parameters
    ----------
    path
        A TIFF file.
    stack
        True when the file holds all channels of a site (C, Y, X); False when
        it holds one plane (its first page is read).

    Raises
    ------
    PlateReadError
        When the file is not a readable TIFF, or its pages do not hold grey planes.
    """
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            page = series.keyframe
            names = ome_channel_names(tiff) if stack else None
            pixel_size = ome_pixel_size_um(tiff)
            if stack:
                places, shape = _stack_places(path, series, page)
            else:
                places, shape = (ChannelPlace(page=0),), _plane_shape(path, page)
            dtype = np.dtype(page.dtype)
            check_complete(path, [tiff.pages[i] for i in sorted({c.page for c in places})])
    except PlateReadError:
        raise
    except Exception as exc:  # tifffile raises many types for bad files
        raise _bad_file(path, exc) from exc
    if names is not None and len(names) != len(places):
        names = None  # OME-XML describing another arrangement: do not trust it
    return TiffHeader(
        path=path,
        shape=shape,
        dtype=dtype,
        channels=places,
        channel_names=tuple(names) if names else None,
        pixel_size_um=pixel_size,
    )


def _plane_shape(path: Path, page) -> tuple[int, int]:
    if "S" in page.axes and page.shape[page.axes.index("S")] > 1:
        n = page.shape[page.axes.index("S")]
        what = (
            "an RGB colour image"
            if getattr(page, "photometric", None) == tifffile.PHOTOMETRIC.RGB
            else "an image with several samples per pixel"
        )
        raise PlateReadError(
            f"{path.name} is {what} ({n} values per pixel, shape {page.shape}), not one grey "
            "plane as the other files of this layout hold. If it holds the channels of a "
            "site, use a per-site stack layout, or --pattern without a channel group; if it "
            "was saved as colour by mistake, export it again as greyscale."
        )
    return _yx(page)


def _yx(page) -> tuple[int, int]:
    axes, shape = page.axes, page.shape
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


def _stack_places(path: Path, series, page) -> tuple[tuple[ChannelPlace, ...], tuple[int, int]]:
    """Channel places of a stack: pages along the channel axis, or samples of one page."""
    page_axes = page.axes
    n_outer = len(series.shape) - len(page.shape)
    outer_axes, outer_shape = series.axes[:n_outer], tuple(series.shape[:n_outer])
    has_samples = "S" in page_axes and page.shape[page_axes.index("S")] > 1
    if has_samples and n_outer == 0:
        axis = page_axes.index("S")
        first = _page_index(series, 0)
        places = tuple(
            ChannelPlace(page=first, sample=i, sample_axis=axis) for i in range(page.shape[axis])
        )
        return places, _yx(page)
    if has_samples:
        raise PlateReadError(
            f"{path.name} holds multi-sample (RGB) pages in a stack of shape {series.shape} "
            f"({series.axes}); save each site as one grey page per channel."
        )
    if n_outer == 0:
        return (ChannelPlace(page=_page_index(series, 0)),), _yx(page)
    # Channels along 'C' when the file says so, else along the first non-spatial axis;
    # other axes (z, time) are read at their first index.
    channel_axis = outer_axes.index("C") if "C" in outer_axes else 0
    places = []
    for c in range(outer_shape[channel_axis]):
        index = [0] * n_outer
        index[channel_axis] = c
        places.append(
            ChannelPlace(page=_page_index(series, int(np.ravel_multi_index(index, outer_shape))))
        )
    return tuple(places), _yx(page)


def _page_index(series, k: int) -> int:
    """Index in the file of the k-th page of a series (what ``tifffile.imread(key=)`` takes)."""
    try:
        page = series.pages[k]
        if page is not None:
            return int(page.index)
    except (IndexError, TypeError, AttributeError):
        pass
    return k
