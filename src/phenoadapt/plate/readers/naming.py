"""Names a reader gives a plate: channel names (and so roles), plate id and plate format."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ...errors import PlateLayoutError, PlateMapError
from ..channel_map import SavedChannel
from ..channels import (
    CHANNEL_MAP,
    FILE_NAME,
    KEY,
    METADATA,
    USER,
    Channel,
    ChannelRole,
    key_name,
    make_channels,
    parse_name_role,
    role_from_name,
)
from ..wells import PLATE_FORMATS, PlateFormat, guess_format, well_position

ChannelNames = Mapping[str | int, str] | Sequence[str]

# Channel keys that are an instrument's numbering (1, 05, w1, ch2, d0), not a stain name.
_NUMBERED_KEY = re.compile(r"^[A-Za-z]{0,2}\d+$")


def natural_key(key: str) -> tuple[str, int, str]:
    """Sort key putting ``w2`` before ``w10`` and ``2`` before ``10``."""
    match = re.match(r"^(\D*)(\d+)(.*)$", key)
    if match is None:
        return (key, -1, "")
    return (match.group(1), int(match.group(2)), match.group(3))


def parse_channel_names(text: str) -> list[str] | dict[str, str]:
    """Parse the ``--channels`` option: ``DNA,ER,RNA`` (in order) or ``1=DNA,2=ER`` (by key)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if items and all("=" in item for item in items):
        return {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in items)}
    if any("=" in item for item in items):
        raise PlateLayoutError(
            f"--channels {text!r} mixes 'key=name' and plain names: write either "
            "'DNA,ER,RNA,AGP,Mito' (in channel order) or '1=DNA,2=ER,...' (by channel key)."
        )
    return items


def _user_lookup(keys: Sequence[str], names: Mapping[str | int, str]) -> dict[str, str]:
    """Map user keys onto channel keys: exact key first, else the key's number (1 -> ``w1``)."""
    by_number: dict[str, list[str]] = {}
    for key in keys:
        digits = re.sub(r"\D", "", key)
        if digits:
            by_number.setdefault(str(int(digits)), []).append(key)
    lookup = {}
    for user_key, name in names.items():
        text = str(user_key).strip()
        if text in keys:
            lookup[text] = str(name)
        elif text.isdigit() and len(by_number.get(str(int(text)), [])) == 1:
            lookup[by_number[str(int(text))][0]] = str(name)
        else:
            raise PlateLayoutError(
                f"Channel {text!r} in the channel names is not a channel of this plate; its "
                f"channel keys are {', '.join(keys)}."
            )
    return lookup


def resolve_channels(
    keys: Sequence[str],
    user: ChannelNames | None = None,
    metadata: Mapping[str, str] | Sequence[str] | None = None,
    saved: Sequence[SavedChannel] | None = None,
) -> list[Channel]:
    """Channels for ``keys``, each named from the most trusted source that names it.

    In order: names the user gives; a channel map saved with the plate
    (:mod:`~phenoadapt.plate.channel_map`); the instrument's metadata; keys that
    are stain names themselves (a pattern capturing ``DAPI``).  When nothing names
    any channel, a five- or six-channel plate gets the usual order of a common
    setup as a labelled guess (:data:`~phenoadapt.plate.channels.GUESS`); any other
    channel keeps its key as its name (``"2"`` is ``"ch2"``, never renumbered).

    Parameters
    ----------
    keys
        Channel keys in display order.
    user
        Names given by the user: a list in key order, or a mapping key -> name
        (a number also finds the key holding it: ``1`` finds ``w1``).  A name may
        carry its role after a colon (``"Alexa 568:AGP"``).
    metadata
        Names the instrument wrote: a mapping key -> name, or a list in key order.
    saved
        The plate's channel map, when one was saved.
    """
    keys = [str(k) for k in keys]
    if user is not None and not isinstance(user, Mapping):
        names = [str(n) for n in user]
        if len(names) != len(keys):
            raise PlateLayoutError(
                f"{len(names)} channel names given ({', '.join(names)}) for {len(keys)} "
                f"channels (keys {', '.join(keys)}): give one name per channel, in this order, "
                "or map keys to names (e.g. 1=DNA,2=ER)."
            )
        return make_channels(keys, names, source=USER)
    if metadata is not None and not isinstance(metadata, Mapping):
        metadata = dict(zip(keys, metadata, strict=False))
    found: dict[str, Channel] = {}
    for key in keys:
        if not _NUMBERED_KEY.match(key):
            found[key] = Channel(key, key, role_from_name(key), FILE_NAME)
    for key, name in (metadata or {}).items():
        if str(key) in keys and str(name).strip():
            found[str(key)] = Channel(str(key), str(name), role_from_name(str(name)), METADATA)
    for row in saved or ():
        if row.key in keys:
            found[row.key] = Channel(row.key, row.name, row.role, CHANNEL_MAP)
    if user is not None:
        for key, text in _user_lookup(keys, user).items():
            name, role = parse_name_role(text)
            found[key] = Channel(key, name, role, USER)
    if not found:
        return make_channels(keys, None)
    return [found.get(k) or Channel(k, key_name(k), ChannelRole.OTHER, KEY) for k in keys]


# Folder names that say nothing about the plate: look one level up.
_GENERIC_FOLDERS = {"images", "image", "timepoint_1", "data", "raw", "tiffs", "tif", "tiff"}


def folder_plate_id(folder: Path) -> str:
    """A plate id from a folder name, skipping ``Images/`` and Harmony's ``__<date>`` suffix."""
    folder = folder.resolve()
    name = folder.name
    if name.lower() in _GENERIC_FOLDERS and folder.parent.name:
        name = folder.parent.name
    if name.lower().endswith(".zarr"):
        name = name[: -len(".zarr")]
    # Harmony names measurement folders BR00117035__2021-05-01T18_57_51-Measurement1.
    return name.split("__", 1)[0] or name


def resolve_format(
    wells: Iterable[str],
    given: int | str | PlateFormat | None = None,
    metadata: PlateFormat | None = None,
) -> PlateFormat:
    """The plate format: the user's, else the instrument's, else the smallest that holds the wells.

    Raises
    ------
    PlateLayoutError
        When the format is unknown or a well lies outside it.
    """
    wells = list(wells)
    if given is not None:
        if isinstance(given, PlateFormat):
            fmt = given
        else:
            try:
                fmt = PLATE_FORMATS[int(given)]
            except (KeyError, ValueError):
                raise PlateLayoutError(
                    f"Unknown plate format {given!r}: use 96, 384 or 1536 wells."
                ) from None
    elif metadata is not None and all(metadata.contains(w) for w in wells):
        fmt = metadata
    else:
        try:
            return guess_format(wells)
        except PlateMapError as exc:
            raise PlateLayoutError(str(exc)) from None
    outside = [w for w in wells if not fmt.contains(w)]
    if outside:
        raise PlateLayoutError(
            f"Well(s) {', '.join(outside[:5])} lie outside a {fmt} plate "
            f"({fmt.n_rows} rows x {fmt.n_columns} columns): give the right plate format, "
            "or leave it out to let phenoadapt guess it from the wells."
        )
    return fmt


def plate_order(wells: Iterable[str]) -> list[str]:
    """Wells in row-major plate order."""
    return sorted(wells, key=well_position)
