"""The options every command that opens a plate shares: file pattern, layout, channels, plane.

One definition so that ``segment``, ``train``, ``predict``, ``embed``, ``gui``,
``info`` and ``convert`` read a plate the same way: a plate named once with
``--channels`` (or a saved channel map) is the same plate everywhere.  Its
plate map comes from :func:`open_platemap`: ``--platemap`` when given, else the
map shipped with the plate, as the GUI finds it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..plate import Plate
from ..plate.platemap import PlateMap, platemap_for_plate
from ..plate.readers import LAYOUTS, parse_channel_names

CHANNELS_HELP = (
    "channel names in channel order (DNA,ER,RNA,AGP,Mito) or by channel key "
    "(2=DNA,4=AGP,5=Mito); a name may carry its role after a colon (4=Alexa 568:AGP). "
    "Default: the plate's saved channel map, else its metadata"
)


def add_open_options(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    """Add ``--pattern``, ``--layout``, ``--channels`` and ``--plane`` to a command.

    Parameters
    ----------
    parser
        The command's parser.
    many
        The command opens several plates: the options apply to each of them.
    """
    each = " (for every plate)" if many else ""
    parser.add_argument(
        "--pattern",
        metavar="RE",
        help=(
            "regular expression with named groups well (or row and column), site, channel "
            r"describing the file names, e.g. "
            r"'(?P<well>[A-P]\d{2})_s(?P<site>\d+)_w(?P<channel>\d)\.tif'" + each
        ),
    )
    parser.add_argument(
        "--layout",
        choices=[name for name in LAYOUTS if name != "pattern"],
        help="force a layout instead of recognising it from the file names" + each,
    )
    parser.add_argument("--channels", metavar="NAMES", help=CHANNELS_HELP + each)
    parser.add_argument(
        "--plane",
        help="z-plane to read when files hold several (from 1; default the lowest) or 'max'",
    )


def open_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for :func:`phenoadapt.plate.open_plate` from the shared options."""
    channels = getattr(args, "channels", None)
    return {
        "layout": getattr(args, "layout", None),
        "pattern": getattr(args, "pattern", None) or None,
        "channel_names": parse_channel_names(channels) if channels else None,
        "plane": getattr(args, "plane", None),
    }


def warn_guessed_channels(plate: Plate) -> None:
    """Say on stderr when a plate's channel names are only the usual order of a common setup.

    A guess is used (most five-channel plates follow the Cell Painting order), but
    the user should know it is one and how to confirm it.
    """
    guessed = [c for c in plate.channels if c.is_guess]
    if not guessed:
        return
    names = ", ".join(f"{c.key}={c.name}" for c in plate.channels)
    print(
        f"phenoadapt: warning: plate {plate.plate_id}: nothing names its channels; using the "
        f"usual order of a {len(plate.channels)}-channel plate ({names}). If that is wrong, "
        "give --channels, or save the right names once: phenoadapt info PLATE "
        "--channels ... --save-channels.",
        file=sys.stderr,
    )


def open_platemap(plate: Plate, path: str | None) -> PlateMap | None:
    """The plate map of a plate for a command: ``--platemap``, else the one shipped with it.

    The policy is :func:`phenoadapt.plate.platemap.platemap_for_plate`'s; a
    shipped map that is used, or not used, is said on stderr.

    Raises
    ------
    PlateMapError
        When the map given with ``--platemap`` does not fit the plate.
    """
    platemap, notes = platemap_for_plate(plate, path)
    if path is None and platemap is not None:
        print(
            f"phenoadapt: plate {plate.plate_id}: using the plate map shipped with it, "
            f"{platemap.source} (give --platemap to use another).",
            file=sys.stderr,
        )
    for note in notes:
        print(f"phenoadapt: warning: plate {plate.plate_id}: {note}", file=sys.stderr)
    return platemap
