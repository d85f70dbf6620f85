"""The plate map of a plate: one policy for the GUI, the CLI and the Python API.

Precedence, highest first:

1. **a map given explicitly** (a file, or a :class:`PlateMap`): it must fit the
   plate, else a :class:`~phenoadapt.errors.PlateMapError` says why;
2. **a map shipped with the plate**: a file named as in :data:`SHIPPED_NAMES` in
   the plate folder, else in the folder holding it (synthetic plates and demo
   plates ship ``platemap.csv``).  One that does not fit is not used, and a note
   says why;
3. **none**: the plate runs without a map (methods that need controls say so).

Fitting a map to a plate: a map of several plates gives this plate's rows; a
map naming one other plate is refused; a map of a smaller plate format (a
96-well map of a 384-well plate's corner) is read in the plate's format, a
larger one is refused; a map none of whose wells were imaged is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import PhenoadaptWarning, PlateMapError
from .io import read_platemap
from .model import PlateMap

if TYPE_CHECKING:
    from ..model import Plate

#: File names of a plate map shipped with a plate, looked for in this order.
SHIPPED_NAMES: tuple[str, ...] = ("platemap.csv", "platemap.tsv", "plate_map.csv", "layout.csv")


def shipped_platemap(plate: Plate) -> Path | None:
    """The plate-map file shipped with a plate: in its folder, else in the folder above.

    Returns None for a plate without a folder or without such a file.
    """
    if plate.path is None:
        return None
    folder = Path(plate.path)
    for base in (folder, folder.parent):
        for name in SHIPPED_NAMES:
            candidate = base / name
            if candidate.is_file():
                return candidate
    return None


def read_map_for_plate(
    path: str | Path, plate: Plate, compound_metadata: str | Path | None = None
) -> PlateMap:
    """Read a plate-map file and fit it to a plate (see the module's rules).

    Parameters
    ----------
    path
        The map (CSV/TSV; a JUMP map with ``compound_metadata``).
    plate
        The plate it is for: its id picks rows, its format the map's format.
    compound_metadata
        A per-compound table to join (the JUMP ``compound_metadata`` file).

    Raises
    ------
    PlateMapError
        For an unreadable map, a map of another plate id, of a larger plate
        format, or one none of whose wells were imaged.
    """
    path = Path(path)
    platemap = read_platemap(path, compound_metadata=compound_metadata, plate_id=plate.plate_id)
    if platemap.format.n_wells > plate.format.n_wells:
        last = platemap.wells[-1]
        hint = (
            " If the plate really is a "
            f"{platemap.format} plate of which only part was imaged, open it with plate format "
            f"{platemap.format} (CLI --format, GUI Plate dock)."
            if all(platemap.format.contains(w) for w in plate.wells)
            else ""
        )
        raise PlateMapError(
            f"{path.name} is a plate map for a {platemap.format} plate (its wells reach {last}), "
            f"but plate {plate.plate_id} is a {plate.format} plate: load the map of this plate."
            + hint
        )
    if platemap.format != plate.format:
        platemap = read_platemap(
            path,
            compound_metadata=compound_metadata,
            plate_format=plate.format,
            plate_id=plate.plate_id,
        )
    platemap.check_against(plate)  # raises when no imaged well is on the map
    return platemap


def _fit_given_map(platemap: PlateMap, plate: Plate) -> PlateMap:
    """Check a map object given for a plate: same plate id (when it has one) and format."""
    if platemap.plate_id is not None and platemap.plate_id != plate.plate_id:
        raise PlateMapError(
            f"The plate map is for plate {platemap.plate_id!r}, not {plate.plate_id!r}: give "
            "the map of this plate."
        )
    if platemap.format != plate.format:
        raise PlateMapError(
            f"The plate map is for a {platemap.format} plate but plate {plate.plate_id} is a "
            f"{plate.format} plate: give the map of this plate."
        )
    platemap.check_against(plate)
    return platemap


def platemap_for_plate(
    plate: Plate,
    platemap: PlateMap | str | Path | None = None,
    *,
    compound_metadata: str | Path | None = None,
) -> tuple[PlateMap | None, list[str]]:
    """The plate map to use for a plate: the one given, else the one shipped with it, else none.

    Parameters
    ----------
    plate
        The plate.
    platemap
        A map given explicitly (file or :class:`PlateMap`); it wins over a
        shipped one.
    compound_metadata
        A per-compound table for a JUMP map given as a file.

    Returns
    -------
    (platemap, notes)
        The map (None when none is given or shipped, or the shipped one does not
        fit) and lines for the user: why a shipped map was not used, or which
        imaged wells the map does not describe, and what the reader warned of
        (a plate map read as Windows-1252, formula-like names...).  ``platemap.source`` says where
        the map came from.

    Raises
    ------
    PlateMapError
        When a map given explicitly does not fit the plate.
    """
    # The reader's warnings (encoding guessed...) become notes, so the GUI shows them
    # as notifications and the CLI prints them with the plate's name.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PhenoadaptWarning)
        chosen, notes = _platemap_for_plate(plate, platemap, compound_metadata)
    said = [str(w.message) for w in caught if issubclass(w.category, PhenoadaptWarning)]
    for other in caught:
        if not issubclass(other.category, PhenoadaptWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return chosen, [*dict.fromkeys(said), *notes]


def _platemap_for_plate(
    plate: Plate,
    platemap: PlateMap | str | Path | None = None,
    compound_metadata: str | Path | None = None,
) -> tuple[PlateMap | None, list[str]]:
    """See :func:`platemap_for_plate`."""
    if isinstance(platemap, PlateMap):
        chosen = _fit_given_map(platemap, plate)
    elif platemap is not None:
        chosen = read_map_for_plate(platemap, plate, compound_metadata)
    else:
        found = shipped_platemap(plate)
        if found is None:
            return None, []
        try:
            chosen = read_map_for_plate(found, plate)
        except PlateMapError as exc:
            return None, [f"The plate map {found} shipped with the plate was not used: {exc}"]
    check = chosen.check_against(plate)
    return chosen, [] if check.ok else [check.summary()]
