"""A :class:`~phenoadapt.plate.model.Plate` from a folder of TIFF files and their parsed names.

The file listing alone fixes wells, sites and channels; one file's header fixes
the plane shape and pixel type.  Problems visible in the listing (a channel file
missing for a site, two files for the same plane, several plates in one folder)
are reported here, at open time, naming the files concerned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...errors import PlateLayoutError, PlateReadError
from ..channel_map import read_channel_map
from ..model import ImageRef, PixelSource, Plate, TiffSource
from ..wells import PlateFormat, well_position
from .layouts import IMAGEXPRESS, PHENIX, FileLayout, FileRecord, expected_name
from .metadata import (
    HarmonyIndex,
    find_htd,
    find_index,
    read_harmony_index,
    read_htd_channel_names,
)
from .naming import ChannelNames, folder_plate_id, natural_key, resolve_channels, resolve_format
from .sources import ProjectionSource, SampleStackSource
from .tiff_header import TiffHeader, read_header

PlaneChoice = int | Literal["max"] | None

# How many problems an error message lists before summarising the rest.
_SHOWN = 5


@dataclass(frozen=True)
class OpenOptions:
    """The user's choices that shape a plate (see :func:`~phenoadapt.plate.readers.open_plate`)."""

    channel_names: ChannelNames | None = None
    plate_id: str | None = None
    plate_format: int | str | PlateFormat | None = None
    plane: PlaneChoice = None


def open_tiff_plate(
    folder: Path,
    layout: FileLayout,
    records: list[FileRecord],
    n_files: int,
    all_paths: Sequence[str],
    options: OpenOptions,
) -> Plate:
    """Build a lazy :class:`Plate` from the files of ``folder`` that ``layout`` matched.

    Parameters
    ----------
    folder
        The plate folder.
    layout
        The matched layout.
    records
        One record per matched file.
    n_files
        Number of files in the folder (to report how many were ignored).
    all_paths
        Every file of the folder, relative (to find a Harmony index).
    options
        Channel names, plate id, plate format and z-plane choice.
    """
    plate_name = _single_plate(folder, records)
    metadata: dict = {
        "instrument": layout.instrument,
        "ignored_files": n_files - len(records),
        "per_site_stacks": layout.per_site_stacks,
    }
    records, timepoints = _first_timepoint(records)
    metadata["n_files"] = len(records)
    if len(timepoints) > 1:
        metadata["timepoints"] = timepoints
        metadata["timepoint"] = timepoints[0]
    if layout.per_site_stacks:
        files, source, header, keys = _stack_files(folder, records)
        metadata_names: Sequence[str] | dict[str, str] | None = header.channel_names
    else:
        files, source, header, keys, planes = _plane_files(folder, records, options.plane)
        metadata_names = None
        if len(planes) > 1 or options.plane is not None:
            metadata["planes"] = planes
            metadata["plane"] = options.plane if options.plane is not None else planes[0]
    if header.pixel_size_um is not None:
        metadata["pixel_size_um"] = header.pixel_size_um
    harmony_format = None
    index = _harmony_index(folder, all_paths, keys) if layout is PHENIX else None
    if index is not None:
        metadata_names = index.channel_names or None
        plate_name = index.plate_id or plate_name
        metadata["index_file"] = str(index.path)
        if index.pixel_size_um is not None:
            metadata["pixel_size_um"] = index.pixel_size_um
        if index.n_rows and index.n_columns:
            harmony_format = PlateFormat(index.n_rows, index.n_columns)
    if layout is IMAGEXPRESS:
        htd = find_htd(folder, list(all_paths))
        if htd is not None:
            metadata_names = read_htd_channel_names(htd) or metadata_names
            metadata["index_file"] = str(htd)
    saved = read_channel_map(folder)
    if saved is not None:
        metadata["channel_map"] = str(saved[1])
    sites: dict[str, list[int]] = {}
    for well, site in {(w, s) for (w, s, _) in files}:
        sites.setdefault(well, []).append(site)
    return Plate(
        plate_id=options.plate_id or plate_name or folder_plate_id(folder),
        format=resolve_format(sites, options.plate_format, harmony_format),
        channels=resolve_channels(
            keys, options.channel_names, metadata_names, saved[0] if saved else None
        ),
        sites={w: sorted(s) for w, s in sites.items()},
        field_shape=header.shape,
        dtype=header.dtype,
        source=source,
        path=folder,
        layout=layout.name,
        metadata=metadata,
    )


def _harmony_index(folder: Path, all_paths: Sequence[str], keys: list[str]) -> HarmonyIndex | None:
    """The Harmony index of a Phenix folder, read, or None when the folder has none."""
    path = find_index(folder, list(all_paths))
    return None if path is None else read_harmony_index(path, keys)


# -- checks on the listing -------------------------------------------------------
def _single_plate(folder: Path, records: list[FileRecord]) -> str | None:
    names = sorted({r.plate for r in records if r.plate})
    if len(names) > 1:
        counts = {n: sum(r.plate == n for r in records) for n in names}
        listed = ", ".join(f"{n} ({counts[n]} files)" for n in names[:_SHOWN])
        raise PlateLayoutError(
            f"{folder} holds files of {len(names)} plates: {listed}. Open one plate at a time: "
            "move each plate's files into its own folder, or pick one plate with --pattern "
            "(e.g. put its name literally before the well group)."
        )
    return names[0] if names else None


def _first_timepoint(records: list[FileRecord]) -> tuple[list[FileRecord], list[int]]:
    """Keep the first time point (live imaging is not a Cell Painting use)."""
    timepoints = sorted({r.timepoint for r in records})
    if len(timepoints) == 1:
        return records, timepoints
    return [r for r in records if r.timepoint == timepoints[0]], timepoints


def _duplicate(first: FileRecord, second: FileRecord) -> PlateLayoutError:
    what = f"well {first.well}, site {first.site}"
    if first.channel is not None:
        what += f", channel {first.channel}, plane {first.plane}"
    return PlateLayoutError(
        f"Two files hold the same image ({what}): {first.path} and {second.path}. Remove the "
        "copy, or open the folders separately, or write a --pattern that tells them apart."
    )


# -- one plane per file ------------------------------------------------------------
def _plane_files(
    folder: Path, records: list[FileRecord], plane: PlaneChoice
) -> tuple[dict, PixelSource, TiffHeader, list[str], list[int]]:
    slots: dict[tuple[str, int], dict[str, dict[int, FileRecord]]] = {}
    spelled: dict[str, str] = {}
    for record in records:
        assert record.channel is not None
        by_plane = slots.setdefault((record.well, record.site), {}).setdefault(record.channel, {})
        if record.plane in by_plane:
            raise _duplicate(by_plane[record.plane], record)
        by_plane[record.plane] = record
        spelled.setdefault(record.channel, record.channel_text or record.channel)
    keys = sorted(spelled, key=natural_key)
    planes = sorted({r.plane for r in records})
    _check_channels(folder, slots, keys, spelled)
    chosen = _chosen_planes(folder, slots, planes, plane)

    files: dict[tuple[str, int, str], ImageRef] = {}
    stacks: dict[tuple[str, int, str], tuple[ImageRef, ...]] = {}
    for (well, site), channels in slots.items():
        for key, by_plane in channels.items():
            refs = tuple(ImageRef(folder / by_plane[p].path) for p in chosen)
            files[(well, site, key)] = refs[0]
            if len(refs) > 1:
                stacks[(well, site, key)] = refs
    header = _reference_header(files, keys)
    source: PixelSource = ProjectionSource(files, stacks) if stacks else TiffSource(files)
    return files, source, header, keys, planes


def _check_channels(
    folder: Path,
    slots: dict[tuple[str, int], dict[str, dict[int, FileRecord]]],
    keys: list[str],
    spelled: dict[str, str],
) -> None:
    """Every site that has some channel files must have all of them."""
    problems = []
    for (well, site), channels in sorted(
        slots.items(), key=lambda i: (well_position(i[0][0]), i[0][1])
    ):
        missing = [k for k in keys if k not in channels]
        if missing:
            sibling = next(iter(next(iter(channels.values())).values()))
            for key in missing:
                problems.append(
                    f"well {well} site {site}: no file for channel {key} "
                    f"(expected {expected_name(sibling, spelled[key])}, next to {sibling.path})"
                )
    if problems:
        shown = "\n  ".join(problems[:_SHOWN])
        more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise PlateLayoutError(
            f"Missing channel files in {folder}:\n  {shown}{more}\n"
            "Copy the missing files from the instrument, or remove the other channel files of "
            "those sites to leave the sites out."
        )


def _chosen_planes(
    folder: Path,
    slots: dict[tuple[str, int], dict[str, dict[int, FileRecord]]],
    planes: list[int],
    plane: PlaneChoice,
) -> list[int]:
    """The z-planes to read: the lowest (default), one given, or all (``"max"``)."""
    if plane == "max":
        chosen = planes
    elif plane is None:
        chosen = planes[:1]
    elif isinstance(plane, int) and plane in planes:
        chosen = [plane]
    else:
        raise PlateLayoutError(
            f"Plane {plane!r} is not in {folder}: its files hold planes "
            f"{', '.join(map(str, planes))}; choose one of them, or 'max' for a projection."
        )
    for (well, site), channels in slots.items():
        for key, by_plane in channels.items():
            absent = [p for p in chosen if p not in by_plane]
            if absent:
                sibling = next(iter(by_plane.values()))
                raise PlateLayoutError(
                    f"Well {well} site {site} channel {key} has no file for plane {absent[0]} "
                    f"(it has planes {', '.join(map(str, sorted(by_plane)))}, e.g. "
                    f"{sibling.path}). Copy the missing plane or choose another plane."
                )
    return chosen


_SAMPLED_SITES = 4  # sites besides the first whose first channel votes on the plate's pixels


def _reference_header(files: dict[tuple[str, int, str], ImageRef], keys: list[str]) -> TiffHeader:
    """The header most sampled files agree on: it sets the plate's field size and pixel type.

    Every channel of the first site and the first channel of a few sites spread
    over the plate are read (headers only).  Taking the first file alone would make
    one odd file (a uint8 channel exported with other settings) the plate's
    reference, and every good site would then be skipped as the odd one.
    """
    sites = sorted({(w, s) for (w, s, _) in files}, key=lambda ws: (well_position(ws[0]), ws[1]))
    step = max(1, len(sites) // _SAMPLED_SITES)
    sample = [files[(*sites[0], key)].path for key in keys]
    sample += [files[(*site, keys[0])].path for site in sites[step::step][:_SAMPLED_SITES]]
    headers, first_error = [], None
    for path in sample:
        try:
            headers.append(read_header(path, stack=False))
        except PlateReadError as exc:  # a bad file is reported when its site is read
            first_error = first_error or exc
    if not headers:
        assert first_error is not None
        raise first_error
    votes = Counter((h.dtype, h.shape) for h in headers)
    best = max(votes.values())
    return next(h for h in headers if votes[(h.dtype, h.shape)] == best)  # ties: the first


# -- one stack per site ------------------------------------------------------------
def _stack_files(
    folder: Path, records: list[FileRecord]
) -> tuple[dict, PixelSource, TiffHeader, list[str]]:
    by_site: dict[tuple[str, int], FileRecord] = {}
    for record in records:
        key = (record.well, record.site)
        if key in by_site:
            raise _duplicate(by_site[key], record)
        by_site[key] = record
    first = min(by_site, key=lambda ws: (well_position(ws[0]), ws[1]))
    header = read_header(folder / by_site[first].path, stack=True)
    # Channel keys of a stack are its plane indices: "0", "1", ...
    keys = [str(i) for i in range(len(header.channels))]
    files: dict[tuple[str, int, str], ImageRef] = {}
    for (well, site), record in by_site.items():
        path = folder / record.path
        for key, place in zip(keys, header.channels, strict=True):
            files[(well, site, key)] = ImageRef(path, place.page)
    source: PixelSource
    if header.channels[0].sample is not None:
        samples = {k: (p.sample, p.sample_axis) for k, p in zip(keys, header.channels, strict=True)}
        source = SampleStackSource(files, samples)  # type: ignore[arg-type]
    else:
        source = TiffSource(files)
    return files, source, header, keys
