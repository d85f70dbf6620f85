"""Comparing a plate map with the wells that were imaged.

Imaging rarely covers a map exactly: a well can fail, an edge row can be
skipped, a map can describe a plate that was only partly imaged.  Those are
reported, not raised; only a map that cannot be the map of these images (no
imaged well on it, imaged wells off its plate format) is an error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ...errors import PlateMapError
from ...schema import Role
from ..wells import PlateFormat, normalize_well, well_position
from .canonical import describe_format, listing


@dataclass(frozen=True)
class WellCheck:
    """How a plate map's wells compare with the imaged wells.

    Attributes
    ----------
    plate_format
        Format of the plate map.
    matched
        Imaged wells that the map describes.
    not_in_map
        Imaged wells the map does not describe (no treatment or role known).
    not_imaged
        Wells the map uses (control or treated) that were not imaged.
    imaged_controls
        Control wells that were imaged: the ones an adaptation can use.
    """

    plate_format: PlateFormat
    matched: tuple[str, ...]
    not_in_map: tuple[str, ...]
    not_imaged: tuple[str, ...]
    imaged_controls: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every imaged well is on the map and every used well was imaged."""
        return not self.not_in_map and not self.not_imaged

    def summary(self) -> str:
        """A few lines for a log or a status bar."""
        lines = [
            f"{len(self.matched)} imaged wells are on the plate map, "
            f"{len(self.imaged_controls)} of them controls."
        ]
        if self.not_in_map:
            lines.append(
                f"{len(self.not_in_map)} imaged wells are not on the map and will be ignored: "
                f"{listing(self.not_in_map)}."
            )
        if self.not_imaged:
            lines.append(
                f"{len(self.not_imaged)} wells of the map were not imaged: "
                f"{listing(self.not_imaged)}."
            )
        return "\n".join(lines)


def _imaged_wells(plate_wells: Iterable[str] | object) -> list[str]:
    """Canonical imaged wells from a list of names or anything with a ``wells`` attribute."""
    names = getattr(plate_wells, "wells", plate_wells)
    wells = []
    for name in names:
        try:
            wells.append(normalize_well(name))
        except PlateMapError:
            raise PlateMapError(
                f"Imaged well {name!r} is not a well name (expected e.g. A01 or P24)."
            ) from None
    return sorted(set(wells), key=well_position)


def compare_wells(
    map_wells: dict[str, str],
    plate_format: PlateFormat,
    plate_wells: Iterable[str] | object,
) -> WellCheck:
    """Compare a map's wells (well -> role value) with imaged wells.

    Parameters
    ----------
    map_wells
        Every well of the map with its role value (``"control"``...).
    plate_format
        The map's plate format.
    plate_wells
        Imaged well names, or a :class:`~phenoadapt.plate.Plate` (its ``wells``).

    Raises
    ------
    PlateMapError
        When no wells were imaged, imaged wells lie outside the map's format,
        or no imaged well is on the map.
    """
    imaged = _imaged_wells(plate_wells)
    if not imaged:
        raise PlateMapError("No imaged wells to compare with the plate map: the plate is empty.")
    outside = [w for w in imaged if not plate_format.contains(w)]
    if outside:
        raise PlateMapError(
            f"Imaged wells {listing(outside)} lie outside {describe_format(plate_format)} of the "
            "plate map: the map was made for a smaller plate; use the map of this plate."
        )
    matched = [w for w in imaged if w in map_wells]
    if not matched:
        raise PlateMapError(
            f"None of the {len(imaged)} imaged wells ({listing(imaged)}) is on the plate map: "
            "is it the map of another plate?"
        )
    imaged_set = set(imaged)
    return WellCheck(
        plate_format=plate_format,
        matched=tuple(matched),
        not_in_map=tuple(w for w in imaged if w not in map_wells),
        not_imaged=tuple(
            w
            for w, role in map_wells.items()
            if role != Role.EXCLUDED.value and w not in imaged_set
        ),
        imaged_controls=tuple(w for w in matched if map_wells[w] == Role.CONTROL.value),
    )
