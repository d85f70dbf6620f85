"""The plate model: wells, sites and channels with pixels read on demand.

A :class:`Plate` is a description of what was imaged plus a :class:`PixelSource`
that reads one 2-D plane when asked.  Opening a plate reads no pixels; a field
is read when it is shown, segmented or classified, so memory stays flat however
large the plate.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import dask.array as da
import numpy as np
import tifffile

from ..errors import NotOnPlateError, PlateReadError
from .channels import Channel, ChannelRole
from .wells import PlateFormat, well_position


class PixelSource(Protocol):
    """Anything that reads one plane of a plate on demand."""

    def read_plane(self, well: str, site: int, channel: Channel) -> np.ndarray:
        """Return the 2-D plane of ``channel`` at (well, site)."""
        ...

    def describe(self, well: str, site: int, channel: Channel) -> str:
        """Where that plane lives (a file name), for error messages."""
        ...


@dataclass(frozen=True)
class ImageRef:
    """A plane stored in a TIFF file: the file and, for stacks, the page index."""

    path: Path
    page: int | None = None


class TiffSource:
    """Reads planes from TIFF files, one file per plane or one stack per site.

    Parameters
    ----------
    files
        Mapping (well, site, channel key) -> :class:`ImageRef`.
    """

    def __init__(self, files: dict[tuple[str, int, str], ImageRef]) -> None:
        self.files = files
        # (height, width) every page must have; set by the Plate so that a page of
        # another size (a 40,000 x 40,000 image) is refused from its header, unread.
        self.expected_shape: tuple[int, int] | None = None

    def ref(self, well: str, site: int, channel: Channel) -> ImageRef:
        """The :class:`ImageRef` of a plane; a clear error when it is missing."""
        try:
            return self.files[(well, site, channel.key)]
        except KeyError:
            raise PlateReadError(
                f"No image for well {well}, site {site}, channel {channel.name} "
                f"(key {channel.key!r}): the file is missing from the plate folder."
            ) from None

    def describe(self, well: str, site: int, channel: Channel) -> str:
        ref = self.ref(well, site, channel)
        return ref.path.name if ref.page is None else f"{ref.path.name} (page {ref.page})"

    def read_plane(self, well: str, site: int, channel: Channel) -> np.ndarray:
        return self.read_ref(self.ref(well, site, channel))

    def read_ref(self, ref: ImageRef) -> np.ndarray:
        """Read the page an :class:`ImageRef` points to; a clear error for a bad file."""
        try:
            with quiet_tifffile(), tifffile.TiffFile(ref.path) as tiff:
                page = tiff.pages[ref.page if ref.page is not None else 0]
                self._check_page_size(ref, page)
                check_complete(ref.path, [page])
                data = page.asarray()
        except PlateReadError:
            raise
        except Exception as exc:  # tifffile raises many types for bad files
            raise PlateReadError(
                f"Cannot read {ref.path}: {exc}. The file may be corrupt or truncated; "
                "copy it again from the instrument or remove it from the folder."
            ) from exc
        data = np.asarray(data)
        if data.ndim < 2 or data.size == 0:
            # tifffile returns an empty array (with a logged warning) when the image
            # directory lies past the end of a truncated file.
            raise PlateReadError(
                f"Cannot read {ref.path}: it holds no image data. The file is probably "
                "truncated; copy it again from the instrument or remove it from the folder."
            )
        return data

    def _check_page_size(self, ref: ImageRef, page) -> None:
        """Refuse, before decoding, a page whose (y, x) size is not the plate's."""
        if self.expected_shape is None or not hasattr(page, "axes"):
            return
        axes, shape = page.axes, page.shape
        if "Y" not in axes or "X" not in axes:
            return
        yx = (int(shape[axes.index("Y")]), int(shape[axes.index("X")]))
        if yx != tuple(self.expected_shape):
            h, w = self.expected_shape
            raise PlateReadError(
                f"{ref.path} is {yx[0]}x{yx[1]} pixels but the plate's fields are {h}x{w}: it "
                "was not read. All sites of a plate must have the same size; move that file "
                "out of the plate folder."
            )


@contextlib.contextmanager
def quiet_tifffile() -> Iterator[None]:
    """Silence tifffile's logger: a corrupt header is reported in phenoadapt's own words."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_complete(path: Path, pages: Sequence) -> None:
    """Refuse a file whose pixel data would run past its end (a truncated copy).

    The header of a truncated file often survives; its strips do not, and
    tifffile then fills the missing pixels with zeros, silently.  Comparing the
    strips' offsets and byte counts with the file size finds it from the header.
    """
    size = path.stat().st_size
    for page in pages:
        offsets, counts = getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ())
        end = max((int(o) + int(c) for o, c in zip(offsets, counts, strict=False)), default=0)
        if end > size:
            raise PlateReadError(
                f"{path} is truncated: its pixel data needs {end:,} bytes but the file holds "
                f"{size:,}. Copy it again from the instrument, or remove it from the plate folder."
            )


@dataclass
class Plate:
    """A multi-well plate of multi-channel fields, with pixels read lazily.

    Parameters
    ----------
    plate_id
        The plate's barcode or name.
    format
        96-, 384- or 1536-well :class:`PlateFormat`.
    channels
        Channels in display order.
    sites
        Mapping well -> sorted list of site (field) numbers imaged in it.
    field_shape
        (height, width) of every plane.
    dtype
        Pixel type of the stored planes.
    source
        The :class:`PixelSource` that reads planes.
    path
        Folder or store the plate was opened from.
    layout
        Name of the file layout (``"phenix"``, ``"imagexpress"``, ``"ome-zarr"``...).
    metadata
        Anything else the instrument said (pixel size, objective...).
    """

    plate_id: str
    format: PlateFormat
    channels: list[Channel]
    sites: dict[str, list[int]]
    field_shape: tuple[int, int]
    dtype: np.dtype
    source: PixelSource
    path: Path | None = None
    layout: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.source, TiffSource) and self.source.expected_shape is None:
            self.source.expected_shape = (int(self.field_shape[0]), int(self.field_shape[1]))

    def __repr__(self) -> str:
        return (
            f"Plate({self.plate_id!r}, {self.format}, {len(self.wells)} wells, "
            f"{self.n_fields} fields, channels={[c.name for c in self.channels]}, "
            f"field_shape={self.field_shape}, layout={self.layout!r})"
        )

    # -- description ---------------------------------------------------------
    @property
    def wells(self) -> list[str]:
        """Imaged wells in row-major plate order."""
        return sorted(self.sites, key=well_position)

    @property
    def n_fields(self) -> int:
        """Total number of (well, site) fields."""
        return sum(len(s) for s in self.sites.values())

    @property
    def channel_names(self) -> list[str]:
        """Channel names in display order."""
        return [c.name for c in self.channels]

    def fields(self, wells: Sequence[str] | None = None) -> Iterator[tuple[str, int]]:
        """Iterate over (well, site) pairs, in plate order.

        Parameters
        ----------
        wells
            Restrict to these wells; all imaged wells when None.
        """
        for well in self.wells if wells is None else wells:
            for site in self.sites_of(well):
                yield well, site

    def sites_of(self, well: str) -> list[int]:
        """Site numbers imaged in ``well``; a clear error for an unknown well."""
        try:
            return self.sites[well]
        except KeyError:
            raise NotOnPlateError(
                f"Well {well!r} was not imaged on plate {self.plate_id!r}; "
                f"imaged wells run {self.wells[0]}..{self.wells[-1]}."
            ) from None

    def channel(self, which: str | ChannelRole | int) -> Channel:
        """Find a channel by name, role, key or position."""
        if isinstance(which, int):
            return self.channels[which]
        for ch in self.channels:
            if which in (ch.name, ch.role, ch.key) or str(which).lower() == ch.name.lower():
                return ch
        raise NotOnPlateError(
            f"Plate {self.plate_id!r} has no channel {str(which)!r}; "
            f"its channels are {', '.join(self.channel_names)}."
        )

    def channel_index(self, roles: Sequence[str | ChannelRole]) -> list[int]:
        """Positions of the channels with the given names or roles, in that order."""
        return [self.channels.index(self.channel(r)) for r in roles]

    # -- pixels --------------------------------------------------------------
    def read_plane(self, well: str, site: int, channel: Channel | str | int) -> np.ndarray:
        """Read one plane and check its shape against the plate's field shape."""
        ch = channel if isinstance(channel, Channel) else self.channel(channel)
        plane = self.source.read_plane(well, site, ch)
        if plane.ndim != 2:
            plane = np.squeeze(plane)
        if plane.shape != tuple(self.field_shape):
            raise PlateReadError(
                f"{self.source.describe(well, site, ch)} is {'x'.join(map(str, plane.shape))} "
                f"pixels but the plate's fields are {self.field_shape[0]}x{self.field_shape[1]}: "
                "all sites of a plate must have the same size "
                "(was it acquired with other settings?)."
            )
        check_plane(plane, self.dtype, self.plane_name(well, site, ch))
        return plane

    def plane_name(self, well: str, site: int, channel: Channel) -> str:
        """``well A01, site 1, channel DNA (file.tif)``: where a plane comes from, for messages."""
        try:
            where = self.source.describe(well, site, channel)
        except Exception:  # describing must never hide the real problem
            where = "unknown file"
        return f"well {well}, site {site}, channel {channel.name} ({where})"

    def read_field(
        self,
        well: str,
        site: int,
        channels: Sequence[Channel | str | int] | None = None,
    ) -> np.ndarray:
        """Read a whole field as a (channel, y, x) array.

        Parameters
        ----------
        well, site
            The field.
        channels
            Channels to read, in this order; all channels when None.
        """
        chans = self.channels if channels is None else channels
        return np.stack([self.read_plane(well, site, c) for c in chans])

    def lazy_field(self, well: str, site: int) -> da.Array:
        """A (channel, y, x) dask array of one field; nothing is read until computed."""
        planes = [
            da.from_delayed(
                _delayed_plane(self, well, site, ch), shape=self.field_shape, dtype=self.dtype
            )
            for ch in self.channels
        ]
        return da.stack(planes)

    def to_dask(self, wells: Sequence[str] | None = None) -> da.Array:
        """All fields as one lazy (field, channel, y, x) array, in :meth:`fields` order."""
        return da.stack([self.lazy_field(w, s) for w, s in self.fields(wells)])


def check_plane(plane: np.ndarray, dtype: np.dtype, where: str) -> None:
    """The per-plane checks of ``info --check``, applied whenever pixels are read.

    Raises
    ------
    PlateReadError
        A plane of another pixel type than the plate's (a uint8 channel in a uint16
        plate would be scaled wrongly without a word) or holding NaN or infinite
        values; the caller skips that site with the message, or stops when no site
        is left.
    """
    expected = np.dtype(dtype)
    if plane.dtype.newbyteorder("=") != expected.newbyteorder("="):
        raise PlateReadError(
            f"{where} holds {plane.dtype} pixels but the plate's are {expected}: all files of a "
            "plate must have the same pixel type (was this channel exported with other "
            "settings?). The site was skipped; re-export the file or move it out of the folder."
        )
    if plane.dtype.kind in "fc" and not np.isfinite(plane).all():
        bad = "infinite" if np.isinf(plane).any() else "NaN"
        raise PlateReadError(
            f"{where} holds {bad} pixel values, which no intensity can be computed from. The "
            "site was skipped; re-export the file (or replace the NaN/infinite pixels) to use it."
        )


def _delayed_plane(plate: Plate, well: str, site: int, channel: Channel):
    import dask

    return dask.delayed(plate.read_plane, pure=True)(well, site, channel)
