"""Channel maps: which channel of a plate is which stain, saved next to the plate.

A channel map is a small CSV file, ``phenoadapt-channels.csv``, with one row per
channel::

    key,name,role
    2,Concanavalin A,ER
    4,Phalloidin/WGA,AGP
    5,Hoechst 33342,DNA

``key`` is the instrument's channel key (``2`` for Phenix ``-ch2``, ``w1`` for
ImageXpress, a plane index for stacks), ``name`` what the user calls the channel
and ``role`` its Cell Painting role (DNA, ER, RNA, AGP, Mito, brightfield, other).
It is written by the Plate dock's channel table or ``phenoadapt info
--save-channels``, and read back by every reader, so a plate is named once and
every command (segment, train, predict, embed, gui) sees the same channels.
Images are never touched.  Where the plate folder is read-only (a shared
instrument export), the map goes to a per-user folder, keyed by the plate's path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ..errors import PlateLayoutError
from ..export import neutralise_cell, restore_cell, write_text
from .channels import Channel, ChannelRole

#: File name of a channel map in a plate folder.
CHANNEL_MAP_FILE = "phenoadapt-channels.csv"
_COLUMNS = ("key", "name", "role")


@dataclass(frozen=True)
class SavedChannel:
    """One row of a channel map."""

    key: str
    name: str
    role: ChannelRole


def user_channel_map_dir() -> Path:
    """Per-user folder for channel maps of read-only plates.

    ``$PHENOADAPT_CHANNEL_MAP_DIR`` when set, else the platform's user data folder
    (``~/.local/share/phenoadapt/channel-maps`` on Linux).
    """
    configured = os.environ.get("PHENOADAPT_CHANNEL_MAP_DIR")
    if configured:
        return Path(configured)
    return Path(platformdirs.user_data_dir("phenoadapt", appauthor=False)) / "channel-maps"


def _plate_root(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def user_channel_map_path(plate_path: str | Path) -> Path:
    """Where the channel map of a read-only plate lives: keyed by the plate's full path."""
    root = _plate_root(plate_path)
    digest = hashlib.sha1(str(root).encode("utf-8")).hexdigest()[:12]
    # The folder name keeps the file findable by eye; the digest keeps two plates apart.
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name)[:60] or "plate"
    return user_channel_map_dir() / f"{readable}-{digest}.csv"


def find_channel_map(plate_path: str | Path) -> Path | None:
    """The channel map saved for a plate: next to it, else in the per-user folder; or None."""
    root = _plate_root(plate_path)
    for candidate in (root / CHANNEL_MAP_FILE, user_channel_map_path(root)):
        if candidate.is_file():
            return candidate
    return None


def parse_channel_map(text: str, source: str = "channel map") -> list[SavedChannel]:
    """Parse the text of a channel map (CSV with columns key, name, role).

    Raises
    ------
    PlateLayoutError
        When a column is missing, a key repeats or a role is unknown.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [c.strip().lower() for c in reader.fieldnames or []]
    if not {"key", "name"} <= set(header):
        raise PlateLayoutError(
            f"The channel map {source} needs the columns key, name, role (it has "
            f"{', '.join(header) or 'none'}): save it again from the Plate dock or with "
            "phenoadapt info PLATE --channels ... --save-channels."
        )
    rows, seen = [], set()
    for line, raw in enumerate(reader, start=2):
        row = {str(k).strip().lower(): restore_cell((v or "").strip()) for k, v in raw.items() if k}
        key, name = row.get("key", ""), row.get("name", "")
        if not key:
            continue
        if key in seen:
            raise PlateLayoutError(f"Channel {key!r} appears twice in the channel map {source}.")
        seen.add(key)
        rows.append(SavedChannel(key, name or key, _role(row.get("role", ""), name, source, line)))
    return rows


def _role(text: str, name: str, source: str, line: int) -> ChannelRole:
    from .channels import role_from_name

    if not text:
        return role_from_name(name)
    for role in ChannelRole:
        if text.lower() == role.value.lower():
            return role
    roles = ", ".join(r.value for r in ChannelRole)
    raise PlateLayoutError(
        f"Line {line} of the channel map {source}: role {text!r} is not one of {roles}."
    )


def read_channel_map(plate_path: str | Path) -> tuple[list[SavedChannel], Path] | None:
    """The saved channel map of a plate and where it was found, or None when there is none."""
    path = find_channel_map(plate_path)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlateLayoutError(
            f"The channel map {path} cannot be read ({exc}): delete it and name the channels again."
        ) from exc
    return parse_channel_map(text, str(path)), path


def format_channel_map(channels: Sequence[Channel]) -> str:
    """The CSV text of a channel map for ``channels``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for channel in channels:
        # Like every CSV phenoadapt writes: a name such as "=A1" cannot run in a spreadsheet.
        writer.writerow((neutralise_cell(channel.key), neutralise_cell(channel.name),
                         channel.role.value))  # fmt: skip
    return out.getvalue()


def save_channel_map(plate_path: str | Path, channels: Sequence[Channel]) -> Path:
    """Save a plate's channel map next to it, or in the per-user folder when it is read-only.

    The file is replaced atomically; a map already in the per-user folder for a
    plate whose folder has become writable stays where it is found first (next
    to the plate) from then on.

    Returns
    -------
    Path
        The file written: tell the user where it is.
    """
    root = _plate_root(plate_path)
    text = format_channel_map(channels)
    if root.is_dir() and os.access(root, os.W_OK):
        try:
            return write_text(text, root / CHANNEL_MAP_FILE, overwrite=True)
        except OSError:
            pass  # e.g. a read-only mount that access() reports writable: fall back
    target = user_channel_map_path(root)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return write_text(text, target, overwrite=True)
    except OSError as exc:
        raise PlateLayoutError(
            f"The channel map cannot be saved next to the plate ({root} is read-only) nor in "
            f"{target.parent} ({exc}): set PHENOADAPT_CHANNEL_MAP_DIR to a writable folder."
        ) from exc
