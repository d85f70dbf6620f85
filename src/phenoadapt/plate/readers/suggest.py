"""Help for folders whose file names match no known layout: a ``--pattern`` written for them."""

from __future__ import annotations

import re
from pathlib import Path

from .layouts import LAYOUTS

# An upper-case well token (A01, P24, B3) standing alone between separators.
_WELL_TOKEN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,2}\d{1,2}(?![0-9])")
# Site and channel tokens after a separator: _s2, -f03, _site1, _pos2 / _w1, _ch2, -c3, _d0.
_SITE_TOKEN = re.compile(r"(?<=[_\-. ])(?:s|f|site|field|fld|pos)?(\d+)(?![0-9])", re.IGNORECASE)
_CHANNEL_TOKEN = re.compile(r"(?<=[_\-. ])(?:w|ch|c|d|channel)(\d+)(?![0-9])", re.IGNORECASE)

GENERIC_EXAMPLE = (r"(?P<well>[A-P]\d{2})_s(?P<site>\d+)_w(?P<channel>\d)\.tif", "A01_s1_w1.tif")


def _escape(text: str) -> str:
    """Escape only the characters that mean something in a regex, so examples stay readable."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text)


def suggest_pattern(name: str) -> str | None:
    r"""A ``--pattern`` that reads well, site and channel out of the file name ``name``.

    Returns None when no upper-case well token (``B03``) can be found in it.

    Examples
    --------
    >>> print(suggest_pattern("scan_B03_pos2_c1.tif"))
    scan_(?P<well>[A-Z]{1,2}\d{1,2})_pos(?P<site>\d+)_c(?P<channel>\d+)\.tif
    """
    well = _WELL_TOKEN.search(name)
    if well is None:
        return None
    pieces: list[tuple[int, int, str]] = [
        (well.start(), well.end(), r"(?P<well>[A-Z]{1,2}\d{1,2})")
    ]
    tail = well.end()
    site = _SITE_TOKEN.search(name, tail)
    if site is not None:
        pieces.append((site.start(1), site.end(1), r"(?P<site>\d+)"))
        tail = site.end()
    channel = _CHANNEL_TOKEN.search(name, tail)
    if channel is not None:
        pieces.append((channel.start(1), channel.end(1), r"(?P<channel>\d+)"))
    out, pos = [], 0
    for start, end, group in pieces:
        out.append(_escape(name[pos:start]))
        out.append(group)
        pos = end
    out.append(_escape(name[pos:]))
    return "".join(out)


def no_layout_message(folder: Path, paths: list[str]) -> str:
    """The error text for a folder whose files match no layout: names, layouts, a pattern."""
    shown = paths[:5]
    more = f"\n  ... and {len(paths) - len(shown)} more" if len(paths) > len(shown) else ""
    known = "; ".join(f"{layout.name} ({layout.example})" for layout in LAYOUTS)
    example = None
    for path in shown:
        name = path.rsplit("/", 1)[-1]
        pattern = suggest_pattern(name)
        if pattern is not None:
            example = (pattern, name)
            break
    pattern, for_name = example or GENERIC_EXAMPLE
    lines = "\n  ".join(shown)
    return (
        f"No plate layout recognised in {folder} ({len(paths)} files), e.g.:\n  {lines}{more}\n"
        f"Known layouts: {known}; and OME-Zarr HCS plates.\n"
        "Describe your file names with a regular expression with named groups well (or row "
        "and column), site and channel (leave channel out when each file holds all channels "
        f"of a site). For a file named {for_name!r}:\n"
        f"  phenoadapt info {folder} --pattern '{pattern}'\n"
        f"  (Python: open_plate(path, pattern=r'{pattern}'))"
    )
