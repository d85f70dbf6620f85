"""Channels of a Cell Painting plate: names, roles, display colours and default orders.

A Cell Painting assay stains five compartments, each imaged in its own channel:
DNA (Hoechst), ER (concanavalin A), RNA (SYTO 14, nucleoli), AGP (actin,
Golgi and plasma membrane: phalloidin and WGA) and Mito (MitoTracker); many
instruments add a brightfield channel.  Models speak of channel *roles*, files
of channel *keys* (``ch5``, ``w1``, ``d0``); :class:`Channel` ties the two.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from ..errors import OptionError


class ChannelRole(str, Enum):  # noqa: UP042 (str() spelling kept for saved files)
    """What a channel shows."""

    DNA = "DNA"
    ER = "ER"
    RNA = "RNA"
    AGP = "AGP"
    MITO = "Mito"
    BRIGHTFIELD = "brightfield"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


# The five fluorescent roles in the order used by models throughout phenoadapt.
CELL_PAINTING_ROLES: tuple[ChannelRole, ...] = (
    ChannelRole.DNA,
    ChannelRole.ER,
    ChannelRole.RNA,
    ChannelRole.AGP,
    ChannelRole.MITO,
)

# napari colormap names; additive blending of these gives the familiar composite.
ROLE_COLORMAPS: dict[ChannelRole, str] = {
    ChannelRole.DNA: "blue",
    ChannelRole.ER: "green",
    ChannelRole.RNA: "cyan",
    ChannelRole.AGP: "yellow",
    ChannelRole.MITO: "magenta",
    ChannelRole.BRIGHTFIELD: "gray",
    ChannelRole.OTHER: "gray",
}

# Stain and compartment names that reveal a channel's role (matched case-insensitively).
_ROLE_PATTERNS: tuple[tuple[ChannelRole, str], ...] = (
    (ChannelRole.BRIGHTFIELD, r"bright|^bf$|brightfield|phase|dpc"),
    (ChannelRole.DNA, r"dna|hoechst|dapi|nucle(us|i)$|draq"),
    (ChannelRole.ER, r"\ber\b|^er[_-]|endoplasm|conca|\bcona\b|alexa ?488"),
    (ChannelRole.RNA, r"rna|syto|nucleol"),
    (ChannelRole.AGP, r"agp|actin|phalloid|wga|golgi|membrane"),
    (ChannelRole.MITO, r"mito"),
)


#: Where a channel's name and role come from, most trusted first.
USER, CHANNEL_MAP, METADATA, FILE_NAME, GUESS, KEY = (
    "given by you",
    "channel map",
    "instrument metadata",
    "file names",
    "usual order (a guess: check it)",
    "channel key (unnamed)",
)
SOURCES: tuple[str, ...] = (USER, CHANNEL_MAP, METADATA, FILE_NAME, GUESS, KEY)


@dataclass(frozen=True)
class Channel:
    """One imaging channel of a plate.

    Parameters
    ----------
    key
        The instrument's channel identifier as it appears in file names or
        metadata (``"1"`` for Phenix ``ch1``, ``"w1"``, ``"d0"``, or a plane index).
    name
        Display name (``"DNA"``, ``"Hoechst 33342"``...).
    role
        Cell Painting role of the channel.
    source
        Where the name and role come from (:data:`SOURCES`): shown to the user so
        a guess is never mistaken for a fact.  Not part of equality.
    """

    key: str
    name: str
    role: ChannelRole = ChannelRole.OTHER
    source: str = field(default="key", compare=False)

    @property
    def is_guess(self) -> bool:
        """True when name and role are only the usual order of a common setup."""
        return self.source == GUESS

    @property
    def colormap(self) -> str:
        """napari colormap name for this channel's role."""
        return ROLE_COLORMAPS[self.role]


def role_from_name(name: str) -> ChannelRole:
    """Guess a channel's role from its name or stain (``"Hoechst 33342"`` -> DNA).

    Returns :attr:`ChannelRole.OTHER` when nothing matches.
    """
    text = name.strip().lower()
    for role in ChannelRole:
        if text == role.value.lower():
            return role
    for role, pattern in _ROLE_PATTERNS:
        if re.search(pattern, text):
            return role
    return ChannelRole.OTHER


# Common channel orders, keyed by the number of channels a layout provides.
# ``phenix6`` is the order of the JUMP/pediatric-atlas Opera Phenix plates
# (the real field in tests/data); ``cellpainting5`` is phenoadapt's own order
# (synthetic plates, models).
DEFAULT_ORDERS: dict[str, tuple[str, ...]] = {
    "cellpainting5": ("DNA", "ER", "RNA", "AGP", "Mito"),
    "phenix6": ("brightfield", "ER", "AGP", "Mito", "DNA", "RNA"),
    "jump5": ("DNA", "ER", "RNA", "AGP", "Mito"),
}


def default_names(n_channels: int) -> tuple[str, ...] | None:
    """The usual channel names of a common setup with ``n_channels`` channels, or None.

    Five channels follow the Cell Painting order (DNA, ER, RNA, AGP, Mito), six
    the Opera Phenix order with brightfield first.  These are guesses: a plate
    whose channels are named nowhere gets them labelled as such
    (:data:`GUESS`), for the user to confirm or correct.
    """
    if n_channels == 5:
        return DEFAULT_ORDERS["cellpainting5"]
    if n_channels == 6:
        return DEFAULT_ORDERS["phenix6"]
    return None


def key_name(key: str) -> str:
    """The name of a channel nothing names: its instrument key (``"2"`` -> ``"ch2"``, ``"w1"``)."""
    return f"ch{key}" if key.isdigit() else key


def parse_name_role(text: str) -> tuple[str, ChannelRole]:
    """A user's channel name, optionally with its role after a colon (``"Alexa 568:AGP"``).

    Without a role, the role is guessed from the name (:func:`role_from_name`).
    """
    name, sep, role_text = text.rpartition(":")
    if sep:
        for role in ChannelRole:
            if role_text.strip().lower() == role.value.lower():
                return name.strip(), role
    return text.strip(), role_from_name(text)


def make_channels(
    keys: Sequence[str],
    names: Mapping[str, str] | Sequence[str] | None = None,
    *,
    source: str = USER,
) -> list[Channel]:
    """Build :class:`Channel` objects from channel keys and an optional name mapping.

    Parameters
    ----------
    keys
        Channel keys in display order, as found in file names or metadata.
    names
        Either a mapping key -> name (e.g. ``{"1": "DNA"}``; keys may also be
        given as ints), or a sequence of names in the order of ``keys``.  A name
        may carry its role after a colon (``"Alexa 568:AGP"``).  When None, the
        usual order of :func:`default_names` is used as a labelled guess, or the
        keys themselves.
    source
        Where the names come from (one of :data:`SOURCES`).

    Returns
    -------
    list of Channel
        Roles are guessed from the names with :func:`role_from_name`.
    """
    keys = [str(k) for k in keys]
    if names is None:
        guess = default_names(len(keys))
        if guess is None:
            return [Channel(k, key_name(k), ChannelRole.OTHER, KEY) for k in keys]
        resolved, source = list(guess), GUESS
    elif isinstance(names, Mapping):
        lookup = {str(k): str(v) for k, v in names.items()}
        resolved = [lookup.get(k, key_name(k)) for k in keys]
    else:
        if len(names) != len(keys):
            raise OptionError(
                f"{len(names)} channel names given for {len(keys)} channels ({', '.join(keys)}): "
                "give one name per channel, in the order of the channel numbers."
            )
        resolved = [str(n) for n in names]
    channels = []
    for key, text in zip(keys, resolved, strict=True):
        name, role = parse_name_role(text)
        channels.append(Channel(key=key, name=name, role=role, source=source))
    return channels
