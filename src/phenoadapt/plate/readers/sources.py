"""Pixel sources for TIFF layouts beyond one plane per file: z-projections and sample stacks."""

from __future__ import annotations

import threading

import numpy as np

from ...errors import PlateReadError
from ..channels import Channel
from ..model import ImageRef, TiffSource


class ProjectionSource(TiffSource):
    """Maximum-intensity projection over z-planes stored one file per plane.

    Parameters
    ----------
    files
        Mapping (well, site, channel key) -> the first plane's :class:`ImageRef`
        (used to describe the plane in messages).
    planes
        Mapping (well, site, channel key) -> the refs of every plane to project.
    """

    def __init__(
        self,
        files: dict[tuple[str, int, str], ImageRef],
        planes: dict[tuple[str, int, str], tuple[ImageRef, ...]],
    ) -> None:
        super().__init__(files)
        self.planes = planes

    def describe(self, well: str, site: int, channel: Channel) -> str:
        refs = self.planes.get((well, site, channel.key), ())
        return f"{super().describe(well, site, channel)} (max of {len(refs)} planes)"

    def read_plane(self, well: str, site: int, channel: Channel) -> np.ndarray:
        self.ref(well, site, channel)  # a clear error when the plane is missing
        projection: np.ndarray | None = None
        for ref in self.planes[(well, site, channel.key)]:
            plane = self.read_ref(ref)
            if projection is not None and plane.shape != projection.shape:
                raise PlateReadError(
                    f"{ref.path.name} is {plane.shape} but other planes of the same channel are "
                    f"{projection.shape}: all z-planes of a site must have the same size."
                )
            # Running maximum: one plane in memory besides the result.
            projection = plane if projection is None else np.maximum(projection, plane)
        assert projection is not None  # every entry holds at least one plane
        return projection


class SampleStackSource(TiffSource):
    """Per-site TIFFs whose channels are samples of one page (``tifffile.imwrite`` of (C, Y, X)).

    Decoding such a page yields every channel at once, so the last page read is
    kept: reading a field channel by channel decodes each file once.

    Parameters
    ----------
    files
        Mapping (well, site, channel key) -> :class:`ImageRef` of the page.
    samples
        Mapping channel key -> (sample index, sample axis of the decoded page).
    """

    def __init__(
        self,
        files: dict[tuple[str, int, str], ImageRef],
        samples: dict[str, tuple[int, int]],
    ) -> None:
        super().__init__(files)
        self.samples = samples
        self._lock = threading.Lock()
        self._last: tuple[ImageRef, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        # Locks cannot be pickled; a worker process gets its own lock and an empty cache.
        state = self.__dict__.copy()
        del state["_lock"]
        state["_last"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def describe(self, well: str, site: int, channel: Channel) -> str:
        return f"{self.ref(well, site, channel).path.name} (channel {self.samples[channel.key][0]})"

    def _page(self, ref: ImageRef) -> np.ndarray:
        with self._lock:
            last = self._last
        if last is not None and last[0] == ref:
            return last[1]
        page = self.read_ref(ref)
        with self._lock:
            self._last = (ref, page)
        return page

    def read_plane(self, well: str, site: int, channel: Channel) -> np.ndarray:
        ref = self.ref(well, site, channel)
        sample, axis = self.samples[channel.key]
        page = self._page(ref)
        if page.ndim != 3 or page.shape[axis] <= sample:
            raise PlateReadError(
                f"{ref.path} holds an image of shape {page.shape}, without channel {sample}: all "
                "site files of a plate must hold the same channels."
            )
        # A copy, so that callers may modify the plane without touching the kept page.
        return np.take(page, sample, axis=axis).copy()
