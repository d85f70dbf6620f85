"""File-name layouts: how instruments (or users) spell well, site and channel in file names.

A :class:`FileLayout` is a regular expression with named groups, matched
against each file's path relative to the plate folder.  The groups it may use:

``well``            a well name (``A01``, ``a1``, ``r03c03``), or instead
``row``, ``column`` a row and a column, each as letters (``C``) or a number (``3``)
``site``            the field / site number (default 1 when absent)
``channel``         the channel; without it every file is a per-site stack of channels
``plane``           the z-plane (default 1)
``timepoint``       the time point (default 1; the first one is read)
``plate``           the plate name, when file names carry it
``uuid``            an instrument-generated suffix ignored for matching
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ...errors import PlateLayoutError, PlateMapError
from ..wells import normalize_well, row_index, well_name

GROUPS = ("well", "row", "column", "site", "channel", "plane", "timepoint", "plate", "uuid")

# A leading folder part: files may sit under Images/, TimePoint_1/ and so on.
_DIRS = r"(?:.*/)?"
_TIFF = r"\.tiff?"
# ImageXpress appends a GUID to the channel; any other hex id must start with a letter so
# that it cannot be mistaken for more channel digits (w1 + 0A1B... is not w10 + A1B...).
_IXM_ID = r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|[A-Fa-f][0-9A-Fa-f-]*"


@dataclass(frozen=True)
class FileLayout:
    """A file-name convention.

    Parameters
    ----------
    name
        Short name (``"phenix"``), shown as ``Plate.layout``.
    regex
        Compiled pattern, matched with ``fullmatch`` against relative paths.
    example
        An example file name, for documentation and error messages.
    channel_prefix
        Text put before the channel number to form the channel key (``"w"`` makes
        ImageXpress ``w1``); None keeps the captured text as the key (user patterns).
    instrument
        Instrument or software that writes this layout.
    """

    name: str
    regex: re.Pattern[str]
    example: str
    channel_prefix: str | None = ""
    instrument: str = ""

    @property
    def per_site_stacks(self) -> bool:
        """True when each file holds all channels of one site."""
        return "channel" not in self.regex.groupindex


@dataclass(slots=True)
class FileRecord:
    """What a file name says: one plane (or, for stacks, one site) of the plate."""

    path: str  # relative to the plate folder, with "/" separators
    well: str
    site: int
    channel: str | None  # channel key; None for per-site stacks
    plane: int
    timepoint: int
    plate: str | None
    channel_text: str | None  # the channel as spelled in the name (``05``)
    channel_span: tuple[int, int] | None  # where it is in ``path``
    uuid_span: tuple[int, int] | None


PHENIX = FileLayout(
    name="phenix",
    regex=re.compile(
        _DIRS + r"r(?P<row>\d{1,3})c(?P<column>\d{1,3})f(?P<site>\d{1,4})p(?P<plane>\d{1,4})"
        r"-ch(?P<channel>\d{1,2})sk(?P<timepoint>\d+)fk\d+fl\d+" + _TIFF,
        re.IGNORECASE,
    ),
    example="r03c03f03p01-ch5sk1fk1fl1.tiff",
    instrument="PerkinElmer/Revvity Opera Phenix or Operetta (Harmony export)",
)

IMAGEXPRESS = FileLayout(
    name="imagexpress",
    regex=re.compile(
        _DIRS + r"(?:TimePoint_(?P<timepoint>\d+)/)?(?:ZStep_(?P<plane>\d+)/)?"
        r"(?P<plate>[^/]+?)_(?P<well>[A-Za-z]{1,2}\d{2})(?:_s(?P<site>\d+))?"
        r"_w(?P<channel>\d{1,2}?)(?P<uuid>" + _IXM_ID + ")?" + _TIFF,
        re.IGNORECASE,
    ),
    example="PLATE1_A01_s1_w1A8E3B2C4-0D36-4B60-8E63-8A0F8E3D1E1F.tif",
    channel_prefix="w",
    instrument="Molecular Devices ImageXpress (MetaXpress)",
)

CELLOMICS = FileLayout(
    name="cellomics",
    regex=re.compile(
        _DIRS
        + r"(?P<plate>[^/]+)_(?P<well>[A-Za-z]{1,2}\d{2})f(?P<site>\d{2,})d(?P<channel>\d)"
        + _TIFF,
        re.IGNORECASE,
    ),
    example="PLATE1_D03f00d0.tif",
    channel_prefix="d",
    instrument="Thermo Fisher Cellomics / CellInsight",
)

STACKS = FileLayout(
    name="stack",
    regex=re.compile(
        _DIRS + r"(?:(?P<plate>[^/]+?)_)?(?P<well>[A-Za-z]{1,2}\d{1,2})[_-](?:s|f|site|field)"
        r"(?P<site>\d+)(?:\.ome)?" + _TIFF,
        re.IGNORECASE,
    ),
    example="PLATE1_A01_s1.tif",
    instrument="one multi-channel TIFF (C, Y, X) per site",
)

# Yokogawa CellVoyager CV7000/CV8000: <plate>_<well>_T<time>F<field>L<line>A<action>Z<plane>C<ch>.
# The convention is the one Bio-Formats' CellVoyagerReader reads and public CV7000 parsers
# glob for ("*_???_T????F???L??A??Z??C??.tif"); L (timeline) and A (action) are matched,
# not captured: a channel number is unique across a measurement's actions.
YOKOGAWA = FileLayout(
    name="yokogawa",
    regex=re.compile(
        _DIRS + r"(?P<plate>[^/]+?)_(?P<well>[A-Za-z]{1,2}\d{2})_T(?P<timepoint>\d+)"
        r"F(?P<site>\d+)L\d+A\d+Z(?P<plane>\d+)C(?P<channel>\d+)" + _TIFF,
        re.IGNORECASE,
    ),
    example="AssayPlate_Greiner_#781091_B03_T0001F001L01A01Z01C01.tif",
    channel_prefix="C",
    instrument="Yokogawa CellVoyager CV7000 / CV8000",
)

# Cytiva (GE) IN Cell Analyzer: "B - 03(fld 1 wv UV - DAPI).tif", with " z 1" for z-stacks
# and " time 1 - 0 ms" for time series (Bio-Formats InCellReader; the IN Cell Developer
# Toolbox export names, e.g. "A - 01(fld 1 wv 390 - Blue).tif").  The channel key is the
# wavelength text, so a stain named there (DAPI) names the channel and its role.
INCELL = FileLayout(
    name="incell",
    regex=re.compile(
        _DIRS + r"(?P<row>[A-Za-z]{1,2}) - (?P<column>\d{1,2})\(fld (?P<site>\d+) "
        r"wv (?P<channel>[^()/]+?)(?: z (?P<plane>\d+))?(?: time (?P<timepoint>\d+)[^()/]*)?"
        r"\)" + _TIFF,
        re.IGNORECASE,
    ),
    example="B - 03(fld 1 wv UV - DAPI).tif",
    channel_prefix=None,
    instrument="Cytiva IN Cell Analyzer",
)

# PerkinElmer Columbus image export (Operetta, Opera): RRRCCC-F-TTTZZZCCC.tif, e.g.
# "001001-1-001001001.tif" = row 1, column 1 (A01), field 1, then three 3-digit numbers
# of which the last is the channel (the Columbus 2.4 export naming, as read by public
# Columbus-export parsers).  Harmony exports of the Operetta use the Phenix scheme above.
COLUMBUS = FileLayout(
    name="columbus",
    regex=re.compile(
        _DIRS + r"(?P<row>\d{3})(?P<column>\d{3})-(?P<site>\d+)-(?P<timepoint>\d{3})"
        r"(?P<plane>\d{3})(?P<channel>\d{3})" + _TIFF,
        re.IGNORECASE,
    ),
    example="001001-1-001001001.tif",
    instrument="PerkinElmer Operetta / Opera (Columbus export)",
)

# Nikon NIS-Elements (JOBS / ND acquisition) TIFF export: the well, then the ND indices
# NIS writes as suffixes: XY (point), optional T (time) and Z, and C (channel), e.g.
# "B03_XY01_C1.tif" or "Plate1_WellB03_T001_XY02_Z1_C2.tif".  ND2 files themselves need
# the nd2 reader, which phenoadapt does not ship: export TIFFs from NIS-Elements.  An
# export without a well in its names (xy001c1.tif) is read with --pattern.
NIKON = FileLayout(
    name="nikon",
    regex=re.compile(
        _DIRS + r"(?:(?P<plate>[^/]+?)_)?(?:Well)?(?P<well>[A-Za-z]{1,2}\d{1,2})_?"
        r"(?:T(?P<timepoint>\d+)_?)?XY(?P<site>\d+)_?(?:Z(?P<plane>\d+)_?)?C(?P<channel>\d+)"
        + _TIFF,
        re.IGNORECASE,
    ),
    example="B03_XY01_C1.tif",
    channel_prefix="c",
    instrument="Nikon NIS-Elements (TIFF export)",
)

# Tried in this order; the layout matching most files wins (ties: the first).
LAYOUTS: tuple[FileLayout, ...] = (
    PHENIX,
    IMAGEXPRESS,
    CELLOMICS,
    YOKOGAWA,
    INCELL,
    COLUMBUS,
    NIKON,
    STACKS,
)
LAYOUT_NAMES: tuple[str, ...] = tuple(layout.name for layout in LAYOUTS)


def layout_by_name(name: str) -> FileLayout:
    """The built-in layout called ``name``; a clear error listing them otherwise."""
    for layout in LAYOUTS:
        if layout.name == name.lower():
            return layout
    raise PlateLayoutError(
        f"Unknown layout {name!r}: use one of {', '.join(LAYOUT_NAMES)}, 'ome-zarr', "
        "or describe your file names with a pattern (--pattern)."
    )


def user_layout(pattern: str) -> FileLayout:
    """A layout from a user's regular expression with named groups.

    Raises
    ------
    PlateLayoutError
        When the expression does not compile, names no well (``well``, or ``row``
        and ``column``), or uses a group name phenoadapt does not know.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise PlateLayoutError(
            f"The pattern {pattern!r} is not a valid regular expression ({exc}). "
            r"Example: '(?P<well>[A-P]\d{2})_s(?P<site>\d+)_w(?P<channel>\d)\.tif'."
        ) from None
    groups = set(regex.groupindex)
    unknown = sorted(groups - set(GROUPS))
    if unknown:
        raise PlateLayoutError(
            f"The pattern {pattern!r} has group(s) {', '.join(unknown)} that phenoadapt does not "
            f"know; name groups {', '.join(GROUPS)} (e.g. (?P<site>\\d+))."
        )
    if "well" not in groups and not {"row", "column"} <= groups:
        raise PlateLayoutError(
            f"The pattern {pattern!r} does not say where the well is: add a group (?P<well>...) "
            "or both (?P<row>...) and (?P<column>...), e.g. (?P<well>[A-P]\\d{2})."
        )
    return FileLayout(
        name="pattern",
        regex=regex,
        example=pattern,
        channel_prefix=None,
        instrument="user pattern",
    )


def parse_path(layout: FileLayout, path: str) -> FileRecord | None:
    """What ``path`` (relative, ``/``-separated) says under ``layout``; None if it does not match.

    User patterns may describe the whole relative path or just the file name.
    """
    match = layout.regex.fullmatch(path)
    offset = 0
    if match is None and layout.channel_prefix is None and "/" in path:
        name = path.rsplit("/", 1)[1]
        match = layout.regex.fullmatch(name)
        offset = len(path) - len(name)
    if match is None:
        return None
    groups = match.groupdict()
    channel_text = groups.get("channel")
    return FileRecord(
        path=path,
        well=_well(groups, path),
        site=_int(groups.get("site"), 1, "site", path),
        channel=None if channel_text is None else _channel_key(layout, channel_text),
        plane=_int(groups.get("plane"), 1, "plane", path),
        timepoint=_int(groups.get("timepoint"), 1, "timepoint", path),
        plate=groups.get("plate") or None,
        channel_text=channel_text,
        channel_span=_span(match, "channel", offset),
        uuid_span=_span(match, "uuid", offset),
    )


def match_files(layout: FileLayout, paths: Iterable[str]) -> list[FileRecord]:
    """Records of the files in ``paths`` that ``layout`` matches."""
    records = []
    for path in paths:
        record = parse_path(layout, path)
        if record is not None:
            records.append(record)
    return records


def detect_layout(paths: list[str]) -> tuple[FileLayout, list[FileRecord]] | None:
    """The built-in layout that matches most of ``paths``, with its records; None if none."""
    best: tuple[FileLayout, list[FileRecord]] | None = None
    for layout in LAYOUTS:
        records = match_files(layout, paths)
        if records and (best is None or len(records) > len(best[1])):
            best = (layout, records)
    return best


def expected_name(record: FileRecord, channel_text: str) -> str:
    """The file name ``record`` would have for another channel (``*`` for instrument ids)."""
    spans = [(record.channel_span, channel_text)]
    if record.uuid_span is not None and record.uuid_span[0] != record.uuid_span[1]:
        spans.append((record.uuid_span, "*"))
    name = record.path
    # Replace from the end so earlier spans keep their offsets.
    for (start, end), text in sorted(spans, key=lambda s: s[0][0], reverse=True):
        name = name[:start] + text + name[end:]
    return name


# -- helpers -------------------------------------------------------------------
def _span(match: re.Match[str], group: str, offset: int) -> tuple[int, int] | None:
    if group not in match.re.groupindex or match.group(group) is None:
        return None
    start, end = match.span(group)
    return start + offset, end + offset


def _int(text: str | None, default: int, what: str, path: str) -> int:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise PlateLayoutError(
            f"{path}: the {what} was captured as {text!r}, which is not a number; "
            f"make the (?P<{what}>...) group match digits only, e.g. (?P<{what}>\\d+)."
        ) from None


def position(text: str, what: str, path: str) -> int:
    """A 1-based row or column index given as a number (``3``) or letters (``C``)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text.isalpha() and len(text) <= 2:
        return row_index(text)
    raise PlateLayoutError(
        f"{path}: the {what} was captured as {text!r}; a {what} must be a number (3) "
        "or letters (C)."
    )


_RC_WELL = re.compile(r"^[Rr](\d{1,3})[Cc](\d{1,3})$")


def _well(groups: dict[str, str | None], path: str) -> str:
    text = groups.get("well")
    try:
        if text is not None:
            rc = _RC_WELL.match(text.strip())
            if rc:
                return well_name(int(rc.group(1)), int(rc.group(2)))
            return normalize_well(text)
        row, column = groups.get("row"), groups.get("column")
        if row is None or column is None:
            raise PlateLayoutError(f"{path}: the pattern captured no well (row or column missing).")
        return well_name(position(row, "row", path), position(column, "column", path))
    except (PlateMapError, ValueError) as exc:
        if isinstance(exc, PlateLayoutError):
            raise
        raise PlateLayoutError(
            f"{path}: {text or (groups.get('row'), groups.get('column'))!r} is not a well "
            "(a row letter and a column number such as A01, or row/column numbers)."
        ) from None


def _channel_key(layout: FileLayout, text: str) -> str:
    if layout.channel_prefix is None:
        return text
    return f"{layout.channel_prefix}{int(text)}"
