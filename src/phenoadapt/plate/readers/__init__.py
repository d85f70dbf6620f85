r"""Opening plates: one entry point, :func:`open_plate`, for every supported layout.

``open_plate(folder)`` looks at the file names of a folder (recursively, so an
Opera Phenix export's ``Images/`` subfolder or ImageXpress ``TimePoint_1/`` is
found) and recognises the layout below that matches most files.  Files that
match no layout (thumbnails, ``Index.xml``, notes) are ignored.

Layouts
-------
``phenix`` — PerkinElmer/Revvity Opera Phenix, Operetta (Harmony export), one plane per file::

    r03c03f03p01-ch5sk1fk1fl1.tiff     row 3, column 3 (C03), field 3, plane 1, channel 5

  Channel keys are the channel numbers (``"5"``).  Channel names and the plate
  barcode come from the Harmony index (``Index.xml`` / ``Index.idx.xml``) when the
  folder has one.  With several z-planes the lowest plane is read by default;
  ``plane=2`` reads plane 2 and ``plane="max"`` a maximum-intensity projection.
  With several time points (``sk``) the first is read.

``imagexpress`` — Molecular Devices ImageXpress (MetaXpress)::

    PLATE1_A01_s1_w1A8E3B2C4-0D36-4B60-8E63-8A0F8E3D1E1F.tif   well A01, site 1, channel w1
    PLATE1_B02_w2.tif                                          single-site plates omit _s1
    TimePoint_1/PLATE1_A01_s2_w3.tif                           files may sit in TimePoint_N/

  The hexadecimal id after the channel is optional; thumbnails are ignored.

``cellomics`` — Thermo Fisher Cellomics / CellInsight::

    PLATE1_D03f00d0.tif                well D03, field 0, channel d0 (both numbered from 0)

``yokogawa`` — Yokogawa CellVoyager CV7000 / CV8000::

    AssayPlate_Greiner_#781091_B03_T0001F001L01A01Z01C01.tif
                                    well B03, time 1, field 1, plane 1, channel C1

``incell`` — Cytiva (GE) IN Cell Analyzer; the channel key is the wavelength text::

    B - 03(fld 1 wv UV - DAPI).tif       B - 03(fld 2 wv Blue - FITC z 3).tif

``columbus`` — PerkinElmer Operetta / Opera images exported from Columbus::

    001001-1-001001001.tif             row 1, column 1 (A01), field 1, channel 1 (last 3 digits)

``nikon`` — Nikon NIS-Elements TIFF export with the well in the name::

    B03_XY01_C1.tif    Plate1_WellB03_T001_XY02_Z1_C2.tif

``stack`` — one multi-channel TIFF per site, holding a (C, Y, X) stack::

    PLATE1_A01_s1.tif    A01_f1.tiff    A01_s2.ome.tif

  Channel keys are plane indices (``"0"``, ``"1"``...); channel names come from
  the OME-XML of an OME-TIFF when present.

``ome-zarr`` — an OME-Zarr HCS plate (NGFF 0.4 or 0.5, as written by
ome-zarr-py or ``phenoadapt convert``)::

    plate.zarr/A/1/0/...               well A01, field 0, multiscale image of (c, y, x)

  Channel names come from ``omero.channels[].label``; level 0 is read plane by plane.
  :func:`write_ome_zarr` writes one (``phenoadapt convert PLATE OUT.zarr``).

``pattern`` — any other naming, described by a regular expression with named groups,
matched against each file's path relative to the folder (or just its name)::

    open_plate(folder, pattern=r"(?P<well>[A-P]\d{2})_s(?P<site>\d+)_w(?P<channel>\d)\.tif")
    phenoadapt info DIR --pattern '(?P<row>\d+)-(?P<column>\d+)-(?P<channel>\w+)\.tif'

  Groups: ``well`` (``A01``, ``a1``, ``r03c03``), or ``row`` and ``column`` (letters
  or numbers); ``site`` (default 1); ``channel`` (leave it out when each file is a
  per-site stack); optionally ``plate``, ``plane``, ``timepoint``.  A channel
  captured as a stain name (``DAPI``) becomes the channel's name.
  :func:`suggest_pattern` writes one from all image names of a folder; the error
  for a folder no layout knows carries it (``NoLayoutError.suggestion``).

Image files (TIFF, PNG, vendor formats) that the layout or pattern leaves out
are counted in ``plate.metadata["unmatched_images"]`` (a few names in
``"unmatched_examples"``); when a pattern left them out, opening also warns
(:class:`UnmatchedImagesWarning`), as a pattern that misses names is how a plate
silently loses wells or channels.  Thumbnails are never counted.

Channel names and roles
-----------------------
Names given by the user (``channel_names=["DNA", "ER", ...]``, or a mapping
``{"1": "DNA"}`` where a number also finds ``w1``/``d1``; ``--channels`` on the
command line) win; else the instrument's metadata; else the defaults: five
channels are DNA, ER, RNA, AGP, Mito and six the Opera Phenix order
brightfield, ER, AGP, Mito, DNA, RNA.  Roles follow from names
(:func:`~phenoadapt.plate.channels.role_from_name`: ``Hoechst 33342`` is DNA).

Plate id and format
-------------------
The plate id is ``plate_id`` when given, else the instrument's (Harmony
``PlateID``, the NGFF plate name), else the plate name in file names, else the
folder name (``Images/`` and Harmony's ``__<date>`` suffix skipped).  The format
(96, 384, 1536 wells) is ``plate_format`` when given, else the instrument's, else
the smallest that holds the imaged wells.

Laziness
--------
Opening lists file names and reads the header of one file for the plane shape
and pixel type; no pixel is read until a field is asked for.  Problems visible
from names (a missing channel file, duplicates, several plates in one folder)
are errors at open time; a corrupt file or a site of another size is an error
when it is read, or at once with :func:`verify_plate` (``phenoadapt info --check``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ...errors import PlateLayoutError
from ..model import Plate
from ..wells import PlateFormat
from .layouts import (
    LAYOUT_NAMES,
    FileLayout,
    detect_layout,
    layout_by_name,
    match_files,
    user_layout,
)
from .naming import ChannelNames, parse_channel_names
from .ome_zarr import ZarrSource, is_zarr_plate, is_zarr_store, open_ome_zarr, write_ome_zarr
from .scan import check_folder, list_files, peek_files
from .suggest import (
    NoLayoutError,
    no_layout_error,
    suggest_pattern,
    unmatched_images,
    unmatched_message,
)
from .tiff_plate import OpenOptions, PlaneChoice, open_tiff_plate
from .verify import verify_plate

__all__ = [
    "LAYOUTS",
    "NoLayoutError",
    "UnmatchedImagesWarning",
    "ZarrSource",
    "is_plate",
    "open_plate",
    "parse_channel_names",
    "suggest_pattern",
    "verify_plate",
    "write_ome_zarr",
]

# Every layout name open_plate accepts.
LAYOUTS: tuple[str, ...] = (*LAYOUT_NAMES, "ome-zarr", "pattern")


def open_plate(
    path: str | Path,
    *,
    layout: str | None = None,
    pattern: str | None = None,
    channel_names: ChannelNames | None = None,
    plate_id: str | None = None,
    plate_format: int | str | PlateFormat | None = None,
    plane: PlaneChoice | str = None,
) -> Plate:
    """Open a plate folder or OME-Zarr plate lazily (no pixels are read).

    Parameters
    ----------
    path
        The plate folder (images anywhere below it) or an OME-Zarr plate.
    layout
        Force a layout (``"phenix"``, ``"imagexpress"``, ``"cellomics"``,
        ``"yokogawa"``, ``"incell"``, ``"columbus"``, ``"nikon"``, ``"stack"``,
        ``"ome-zarr"``); recognised from the file names when None.
    pattern
        A regular expression with named groups describing the file names
        (see the module documentation); overrides layout detection.
    channel_names
        Channel names in channel order, or a mapping channel key -> name.
    plate_id
        The plate's id; read from metadata, file names or the folder otherwise.
    plate_format
        96, 384 or 1536 (or a :class:`~phenoadapt.plate.wells.PlateFormat`);
        guessed from the wells otherwise.
    plane
        Z-plane to read when files hold several (1-based, default: the lowest),
        or ``"max"`` for a maximum-intensity projection.

    Returns
    -------
    Plate
        Wells, sites, channels, field shape and pixel type, with a pixel source
        that reads one plane on demand.

    Raises
    ------
    PlateReadError
        When the path does not exist, or the file whose header is read is not
        a readable TIFF.
    PlateLayoutError
        When the path is not a folder, is empty, matches no layout, or the file
        listing is inconsistent (a missing channel file, duplicates...).

    Examples
    --------
    >>> plate = open_plate("BR00143976/Images")                  # doctest: +SKIP
    >>> plate.read_field("C03", 3).shape                          # doctest: +SKIP
    (6, 1080, 1080)
    """
    folder = check_folder(path)
    options = OpenOptions(
        channel_names=channel_names,
        plate_id=plate_id,
        plate_format=plate_format,
        plane=_plane(plane),
    )
    if layout is not None and pattern is not None and layout != "pattern":
        raise PlateLayoutError(
            f"Give either a layout ({layout!r}) or a pattern, not both: a pattern describes "
            "the file names itself."
        )
    if layout == "pattern" and pattern is None:
        raise PlateLayoutError("The 'pattern' layout needs a pattern (--pattern RE).")
    if layout == "ome-zarr" or (layout is None and pattern is None and is_zarr_store(folder)):
        return open_ome_zarr(folder, options)
    paths = list_files(folder)
    if not paths:
        raise PlateLayoutError(
            f"{folder} holds no files: point to the folder with the plate's images (for an "
            "Opera Phenix export, the measurement folder or its Images/ subfolder)."
        )
    if pattern is not None:
        file_layout = user_layout(pattern)
        records = match_files(file_layout, paths)
        if not records:
            shown = "\n  ".join(paths[:5])
            example = suggest_pattern(paths)
            hint = f" For the image files here try:\n  --pattern '{example}'" if example else ""
            raise PlateLayoutError(
                f"The pattern {pattern!r} matches none of the {len(paths)} files in {folder}, "
                f"e.g.:\n  {shown}\nThe pattern must match a whole file name, or a whole path "
                f"relative to the folder.{hint}"
            )
    elif layout is not None and layout != "pattern":
        file_layout = layout_by_name(layout)
        records = match_files(file_layout, paths)
        if not records:
            raise PlateLayoutError(
                f"No file in {folder} follows the {layout} layout (e.g. "
                f"{file_layout.example}); leave the layout out to detect it, or give --pattern."
            )
    else:
        found = detect_layout(paths)
        if found is None:
            raise no_layout_error(folder, paths)
        file_layout, records = found
    plate = open_tiff_plate(folder, file_layout, records, len(paths), paths, options)
    _report_unmatched(plate, file_layout, paths, [r.path for r in records])
    return plate


class UnmatchedImagesWarning(UserWarning):
    """Image files of a plate folder that the layout or pattern did not match (not opened)."""


# How many unmatched image names a warning shows.
_SHOWN_UNMATCHED = 5


def _report_unmatched(
    plate: Plate, layout: FileLayout, paths: list[str], matched: list[str]
) -> None:
    """Record image files the layout left out, and warn when a pattern left them out.

    A pattern (the user's or a suggested one) that leaves images out is the way
    plates silently lose wells or channels, so it warns; a built-in layout leaves
    out what its instrument writes beside the images (thumbnails, which are not
    even recorded, and other tools' outputs), recorded but not warned about.
    """
    left = unmatched_images(paths, matched)
    if layout.name != "pattern":
        left = [p for p in left if "_thumb" not in p.lower()]
    if not left:
        return
    n_images = len(matched) + len(left)
    examples = left[:_SHOWN_UNMATCHED]
    plate.metadata["unmatched_images"] = len(left)
    plate.metadata["unmatched_examples"] = examples
    suggestion = None
    if layout.name == "pattern":
        better = suggest_pattern(paths)
        if better is not None and better != layout.regex.pattern:
            suggestion = better if len(match_files(user_layout(better), left)) else None
    what = "pattern" if layout.name == "pattern" else f"layout ({layout.name})"
    message = unmatched_message(len(left), examples, n_images, what, suggestion)
    plate.metadata["unmatched_message"] = message
    if layout.name == "pattern":
        warnings.warn(message, UnmatchedImagesWarning, stacklevel=3)


def is_plate(path: str | Path) -> bool:
    """Whether ``path`` looks like a plate phenoadapt opens, decided from a bounded look.

    True for an OME-Zarr HCS plate (its group metadata names a plate) and for a
    folder where a built-in layout recognises some of the first files listed
    (:func:`~phenoadapt.plate.readers.scan.peek_files`: at most a few thousand
    entries, a few levels deep); False for a file, a missing path, or any other
    folder.  Used by the napari reader, which must decline quickly what it cannot
    open; :func:`open_plate` itself also takes folders described by a pattern.
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    if is_zarr_store(folder):
        return is_zarr_plate(folder)
    return detect_layout(peek_files(folder)) is not None


def _plane(plane: PlaneChoice | str) -> PlaneChoice:
    """Check the plane option: None, a 1-based number (also as text) or ``"max"``."""
    if plane is None or plane == "max":
        return plane
    if isinstance(plane, str) and plane.strip().isdigit():
        plane = int(plane)
    if isinstance(plane, int) and not isinstance(plane, bool) and plane >= 1:
        return plane
    raise PlateLayoutError(
        f"Plane {plane!r} is not valid: give a plane number from 1, or 'max' for a "
        "maximum-intensity projection over z."
    )
