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
from dataclasses import dataclass
from enum import Enum


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
    """

    key: str
    name: str
    role: ChannelRole = ChannelRole.OTHER

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


def default_names(n_channels: int) -> tuple[str, ...]:
    """Default channel names for a layout with ``n_channels`` channels.

    Five channels follow the Cell Painting order (DNA, ER, RNA, AGP, Mito), six
    the Opera Phenix order with brightfield first; other counts get ``ch1``...
    """
    if n_channels == 5:
        return DEFAULT_ORDERS["cellpainting5"]
    if n_channels == 6:
        return DEFAULT_ORDERS["phenix6"]
    return tuple(f"ch{i + 1}" for i in range(n_channels))


def make_channels(
    keys: Sequence[str],
    names: Mapping[str, str] | Sequence[str] | None = None,
) -> list[Channel]:
    """Build :class:`Channel` objects from channel keys and an optional name mapping.

    Parameters
    ----------
    keys
        Channel keys in display order, as found in file names or metadata.
    names
        Either a mapping key -> name (e.g. ``{"1": "DNA"}``; keys may also be
        given as ints), or a sequence of names in the order of ``keys``.  When
        None, :func:`default_names` is used.

    Returns
    -------
    list of Channel
        Roles are guessed from the names with :func:`role_from_name`.
    """
    keys = [str(k) for k in keys]
    if names is None:
        resolved = list(default_names(len(keys)))
    elif isinstance(names, Mapping):
        lookup = {str(k): str(v) for k, v in names.items()}
        resolved = [lookup.get(k, f"ch{k}" if k.isdigit() else k) for k in keys]
    else:
        if len(names) != len(keys):
            raise ValueError(
                f"{len(names)} channel names given for {len(keys)} channels ({', '.join(keys)}): "
                "give one name per channel, in the order of the channel numbers."
            )
        resolved = [str(n) for n in names]
    return [
        Channel(key=k, name=n, role=role_from_name(n)) for k, n in zip(keys, resolved, strict=True)
    ]
