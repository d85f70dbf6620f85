"""Checking a plate-map table and turning it into the canonical per-well frame.

The canonical frame is indexed by canonical well name (``A01``) in row-major
plate order and holds ``Metadata_Treatment`` and ``Metadata_MoA`` (text, NA when
empty), ``Metadata_Concentration`` (float, NaN when empty), ``Metadata_Role``
(the plain value of a :class:`~phenoadapt.schema.Role`) and any extra columns
as text.  Every problem found on the way is a :class:`PlateMapError` that names
the well and the line it came from.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ... import schema
from ...errors import PlateMapError
from ...schema import Role
from ..wells import (
    PLATE_1536,
    PLATE_FORMATS,
    PlateFormat,
    guess_format,
    normalize_well,
    plate_format,
    row_name,
    well_name,
    well_position,
)
from .columns import EMPTY_TREATMENTS, parse_role

# Treatments that are negative controls when a map does not say which wells are.
DEFAULT_CONTROLS: tuple[str, ...] = ("DMSO",)

TEXT_COLUMNS = (schema.TREATMENT, schema.MOA)
CORE_COLUMNS = (schema.TREATMENT, schema.MOA, schema.CONCENTRATION, schema.ROLE)

# How many offending wells an error message lists before "and N more".
_SHOWN = 6


@dataclass(frozen=True)
class Origin:
    """Where a table came from, so that errors can point at a row.

    Parameters
    ----------
    name
        File name or a description (``"the plate map table"``).
    row_word
        ``"line"`` when the table's index holds file line numbers, else ``"row"``.
    """

    name: str = "the plate map"
    row_word: str = "row"

    def at(self, label: Hashable) -> str:
        """Location of one row: ``"line 7 of map.csv"``."""
        return f"{self.row_word} {label} of {self.name}"


# Defaults for tables that do not come from a file.
MAP_TABLE = Origin("the plate map")
COMPOUND_TABLE = Origin("the compound metadata")


def listing(items: Sequence[str], shown: int = _SHOWN) -> str:
    """``"A, B, C and 4 more"``: a short list for error messages."""
    items = list(items)
    head = ", ".join(items[:shown])
    return head if len(items) <= shown else f"{head} and {len(items) - shown} more"


def as_format(fmt: PlateFormat | int | str | None) -> PlateFormat | None:
    """A :class:`PlateFormat` from a format, a number of wells (96, ``"384"``) or None."""
    if fmt is None or isinstance(fmt, PlateFormat):
        return fmt
    try:
        return plate_format(int(fmt))
    except ValueError:
        raise PlateMapError(
            f"Unknown plate format {fmt!r}: use one of {', '.join(map(str, PLATE_FORMATS))} wells."
        ) from None


def describe_format(fmt: PlateFormat) -> str:
    """``"a 96-well plate (rows A-H, columns 1-12)"``."""
    return f"a {fmt} plate (rows A-{row_name(fmt.n_rows)}, columns 1-{fmt.n_columns})"


try:
    _TEXT: object = pd.StringDtype(na_value=np.nan)
except TypeError:  # pandas < 2.3: object columns of str and NaN behave the same here
    _TEXT = object


def as_text(values: pd.Series) -> pd.Series:
    """Text column: strings stripped of spaces, empty cells NA, pandas string dtype."""

    def clean(value: object) -> object:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return np.nan
        text = str(value).strip()
        return text if text else np.nan

    # pandas 3's "str" dtype (missing = NaN).  ``astype("str")`` under pandas 2 turns
    # NaN into the text "nan", so the dtype is spelled out for both.
    return values.map(clean).astype(_TEXT)


def default_role(treatment: object, controls: Sequence[str] = DEFAULT_CONTROLS) -> Role:
    """Role of a well whose map does not say: by its treatment.

    No treatment (or ``empty``/``blank``) -> excluded; a treatment named in
    ``controls`` (case-insensitive) -> control; anything else -> treated.
    """
    if treatment is None or (not isinstance(treatment, str) and pd.isna(treatment)):
        return Role.EXCLUDED
    name = str(treatment).strip().casefold()
    if not name or name in EMPTY_TREATMENTS:
        return Role.EXCLUDED
    if name in {c.casefold() for c in controls}:
        return Role.CONTROL
    return Role.TREATED


def split_plate(
    frame: pd.DataFrame, plate_id: str | None, origin: Origin
) -> tuple[pd.DataFrame, str | None]:
    """Take the plate id out of a ``Metadata_Plate`` column, keeping one plate's rows.

    A table with one plate gives its id; a table with several needs ``plate_id``
    to pick one.  Without a plate column, ``plate_id`` is returned unchanged.
    """
    if schema.PLATE not in frame.columns:
        return frame, plate_id
    plates = as_text(frame[schema.PLATE])
    names = list(dict.fromkeys(plates.dropna()))
    frame = frame.drop(columns=schema.PLATE)
    if plate_id is not None:
        keep = plates == str(plate_id)
        if not keep.any():
            other = (
                f"it is the map of plate {names[0]!r}"
                if len(names) == 1
                else f"its plates are {listing(names)}"
            )
            raise PlateMapError(
                f"{origin.name} has no rows for plate {plate_id!r}: {other}. Give the map of "
                f"plate {plate_id!r}, or, if this is its map, correct the map's {schema.PLATE} "
                "column (or open the plate under the map's id: CLI --plate-id)."
            )
        return frame[keep.to_numpy()], str(plate_id)
    if len(names) > 1:
        raise PlateMapError(
            f"{origin.name} describes {len(names)} plates ({listing(names)}): choose one with "
            "plate_id= (CLI: --plate), or split the file into one map per plate."
        )
    return frame, (names[0] if names else None)


def _canonical_wells(wells: pd.Series, origin: Origin, fmt: PlateFormat | None = None) -> pd.Series:
    """Canonical well names; one error listing every cell that is not a well."""
    names, bad = [], []
    for label, value in wells.items():
        text = (
            "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
        )
        try:
            names.append(normalize_well(text))
        except PlateMapError:
            names.append(None)
            bad.append(
                f"{text.strip()!r} ({origin.at(label)})"
                if text.strip()
                else f"an empty well name ({origin.at(label)})"
            )
    if bad:
        valid = (
            f": the wells of {describe_format(fmt)} run from A01 to "
            f"{well_name(fmt.n_rows, fmt.n_columns)}"
            if fmt is not None
            else ", e.g. A01 or P24"
        )
        raise PlateMapError(
            f"{len(bad)} well name(s) in {origin.name} are not wells: {listing(bad)}. "
            f"Write a row letter and a column number from 1{valid}."
        )
    return pd.Series(names, index=wells.index, dtype="str")


def _check_duplicates(wells: pd.Series, origin: Origin) -> None:
    repeated = wells[wells.duplicated(keep=False)]
    if repeated.empty:
        return
    where = [
        f"{well} ({origin.row_word}s {', '.join(str(label) for label in labels)})"
        for well, labels in repeated.groupby(repeated, sort=False).groups.items()
    ]
    raise PlateMapError(
        f"{len(where)} well(s) appear more than once in {origin.name}: {listing(where)}. "
        "A plate map has one row per well: remove or merge the repeated rows."
    )


def _guessed_format(wells: pd.Series, origin: Origin) -> PlateFormat:
    """The smallest plate holding the wells; wells beyond any plate named with their lines."""
    try:
        return guess_format(list(wells))
    except PlateMapError:
        _check_on_plate(wells, PLATE_1536, origin, given=False)
        raise


def _check_on_plate(wells: pd.Series, fmt: PlateFormat, origin: Origin, given: bool) -> None:
    outside = [f"{w} ({origin.at(label)})" for label, w in wells.items() if not fmt.contains(w)]
    if outside:
        hint = (
            "Pass the right format (plate_format=384, CLI --format 384) or fix the well names."
            if given
            else "Fix the well names."
        )
        raise PlateMapError(
            f"{len(outside)} well(s) of {origin.name} lie outside {describe_format(fmt)}: "
            f"{listing(outside)}. {hint}"
        )


def _concentrations(values: pd.Series, wells: pd.Series, origin: Origin) -> pd.Series:
    text = as_text(values)
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = text.notna() & numbers.isna()
    if bad.any():
        where = [f"{text[i]!r} for {wells[i]} ({origin.at(i)})" for i in text.index[bad]]
        raise PlateMapError(
            f"Concentrations in {origin.name} must be numbers: {listing(where)}. "
            "Write plain numbers in one unit (e.g. 0.3 for 0.3 µM) and give the unit in the "
            "column name."
        )
    return numbers


def _roles(
    frame: pd.DataFrame, wells: pd.Series, origin: Origin, controls: Sequence[str]
) -> pd.Series:
    given = (
        frame[schema.ROLE]
        if schema.ROLE in frame.columns
        else pd.Series(None, index=frame.index, dtype=object)
    )
    roles = []
    for label in frame.index:
        role = parse_role(given[label], where=f"well {wells[label]} ({origin.at(label)})")
        if role is None:
            role = default_role(frame[schema.TREATMENT][label], controls)
        roles.append(role.value)
    return pd.Series(roles, index=frame.index, dtype="str")


def canonical_frame(
    frame: pd.DataFrame,
    plate_format: PlateFormat | int | None = None,
    *,
    origin: Origin = MAP_TABLE,
    controls: Sequence[str] = DEFAULT_CONTROLS,
) -> tuple[pd.DataFrame, PlateFormat]:
    """Check a schema-named table and return the canonical frame and plate format.

    Parameters
    ----------
    frame
        One row per well with a ``Metadata_Well`` column and any of
        ``Metadata_Treatment``, ``Metadata_MoA``, ``Metadata_Concentration``,
        ``Metadata_Role``; other columns are kept as text.
    plate_format
        The plate format; guessed from the wells (smallest that holds them) when None.
    origin
        Where the table came from, for error messages.
    controls
        Treatments that are negative controls for wells with no role given.

    Returns
    -------
    (DataFrame, PlateFormat)
        The frame indexed by canonical well in plate order, and the format.

    Raises
    ------
    PlateMapError
        For a missing well column, names that are not wells, repeated wells,
        wells outside the plate, non-numeric concentrations or unknown roles.
    """
    if schema.WELL not in frame.columns:
        raise PlateMapError(
            f"{origin.name} has no {schema.WELL} column; its columns are "
            f"{', '.join(map(str, frame.columns)) or 'none'}."
        )
    if frame.empty:
        raise PlateMapError(f"{origin.name} lists no wells: add one row per well.")
    frame = frame.copy()
    fmt = as_format(plate_format)
    wells = _canonical_wells(frame[schema.WELL], origin, fmt)
    _check_duplicates(wells, origin)
    given = fmt is not None
    fmt = fmt or _guessed_format(wells, origin)
    _check_on_plate(wells, fmt, origin, given=given)

    for column in TEXT_COLUMNS:
        frame[column] = (
            as_text(frame[column])
            if column in frame.columns
            else pd.Series(np.nan, index=frame.index, dtype="str")
        )
    frame[schema.CONCENTRATION] = (
        _concentrations(frame[schema.CONCENTRATION], wells, origin)
        if schema.CONCENTRATION in frame.columns
        else pd.Series(np.nan, index=frame.index, dtype="float64")
    )
    frame[schema.ROLE] = _roles(frame, wells, origin, controls)
    extras = [c for c in frame.columns if c not in CORE_COLUMNS and c != schema.WELL]
    for column in extras:
        frame[column] = as_text(frame[column])

    frame.index = pd.Index(wells.to_numpy(), name=schema.WELL, dtype="str")
    frame = frame[list(CORE_COLUMNS) + [str(c) for c in extras]]
    order = sorted(range(len(frame)), key=lambda i: well_position(frame.index[i]))
    return frame.iloc[order], fmt
