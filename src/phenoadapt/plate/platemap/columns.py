"""Finding a plate map's columns by their many spellings, and reading well roles.

Plate maps come from plate-design software, LIMS exports, the JUMP consortium
and hand-made spreadsheets, each with its own header names.  Every field of a
plate map has a list of *aliases*; a file column matches an alias when both
are equal after lower-casing and dropping everything but letters and digits
(``Well Position`` matches ``well_position``).  The first alias in a list
that a file has wins, so names come before identifiers (``pert_iname`` before
``broad_sample``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from ... import schema
from ...errors import PlateMapError
from ...schema import Role

# Fields of a plate map.  ``control_type`` and ``pert_type`` are the two JUMP
# columns that together say a well's role; ``solvent`` names the vehicle of
# wells that hold no compound.
WELL = "well"
TREATMENT = "treatment"
MOA = "moa"
CONCENTRATION = "concentration"
ROLE = "role"
CONTROL_TYPE = "control_type"
PERT_TYPE = "pert_type"
SOLVENT = "solvent"
PLATE = "plate"

ALIASES: dict[str, tuple[str, ...]] = {
    WELL: (
        schema.WELL,
        "well",
        "well_position",
        "WellName",
        "well_name",
        "Image_Metadata_Well",
        "Metadata_well_position",
        "well_id",
        "WellID",
    ),
    TREATMENT: (
        schema.TREATMENT,
        "treatment",
        "pert_iname",
        "Metadata_pert_iname",
        "compound",
        "compound_name",
        "Metadata_Compound",
        "Image_Metadata_Compound",
        "drug",
        "perturbation",
        "broad_sample",
        "Metadata_broad_sample",
        "compound_id",
    ),
    MOA: (schema.MOA, "moa", "mechanism", "mechanism_of_action", "Metadata_mechanism"),
    CONCENTRATION: (
        schema.CONCENTRATION,
        "concentration",
        "conc",
        "dose",
        "mmoles_per_liter",
        "Metadata_mmoles_per_liter",
        "Image_Metadata_Concentration",
        "concentration_uM",
    ),
    ROLE: (schema.ROLE, "role", "well_role", "well_type", "Metadata_well_type"),
    CONTROL_TYPE: ("control_type", "Metadata_control_type"),
    PERT_TYPE: ("pert_type", "Metadata_pert_type"),
    SOLVENT: ("solvent", "Metadata_solvent", "vehicle"),
    PLATE: (schema.PLATE, "plate", "plate_id", "Image_Metadata_Plate", "barcode"),
}

# The schema column each field becomes.  Role-like fields all end in ROLE.
SCHEMA_COLUMN = {
    WELL: schema.WELL,
    TREATMENT: schema.TREATMENT,
    MOA: schema.MOA,
    CONCENTRATION: schema.CONCENTRATION,
    ROLE: schema.ROLE,
    PLATE: schema.PLATE,
}

# Words that mean each role, after normalisation by :func:`column_key`.
# Positive controls (``poscon``) are treated wells: they carry a phenotype and
# a label; only negative controls describe the plate's untreated state.
_ROLE_WORDS: dict[Role, tuple[str, ...]] = {
    Role.CONTROL: (
        "control",
        "controls",
        "negcon",
        "negative",
        "negativecontrol",
        "negctrl",
        "ctrlneg",
        "neg",
        "ctrl",
        "ctl",
        "nc",
        "vehicle",
    ),
    Role.TREATED: (
        "treated",
        "treatment",
        "trt",
        "sample",
        "compound",
        "test",
        "poscon",
        "positive",
        "positivecontrol",
        "posctrl",
        "ctrlpos",
        "pos",
    ),
    Role.EXCLUDED: (
        "excluded",
        "exclude",
        "empty",
        "blank",
        "skip",
        "ignore",
        "ignored",
        "failed",
        "unused",
    ),
}
_ROLE_LOOKUP = {word: role for role, words in _ROLE_WORDS.items() for word in words}

# Treatments that mean "nothing in this well" under the default role rule.
EMPTY_TREATMENTS = ("empty", "blank")


def column_key(name: str) -> str:
    """Comparison key of a column name: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def find_column(columns: Iterable[str], field: str) -> str | None:
    """The column of ``columns`` that holds ``field``, by alias; None when absent.

    Parameters
    ----------
    columns
        Column names of a table.
    field
        A field name (``"well"``, ``"treatment"``...), a key of :data:`ALIASES`.
    """
    by_key: dict[str, str] = {}
    for column in columns:
        by_key.setdefault(column_key(column), column)
    for alias in ALIASES[field]:
        if column_key(alias) in by_key:
            return by_key[column_key(alias)]
    return None


def _field_of(name: str) -> str:
    """Field named by a key of a ``columns=`` mapping (``"treatment"``, ``"Metadata_MoA"``)."""
    for field, column in SCHEMA_COLUMN.items():
        if column_key(name) in (column_key(field), column_key(column)):
            return field
    if column_key(name) in map(column_key, ALIASES):
        return next(f for f in ALIASES if column_key(f) == column_key(name))
    raise PlateMapError(
        f"Unknown plate-map field {name!r} in the column mapping: use one of "
        f"{', '.join(ALIASES)} (or the schema names {', '.join(SCHEMA_COLUMN.values())})."
    )


def resolve_columns(
    columns: Sequence[str],
    explicit: Mapping[str, str | None] | None = None,
    *,
    source: str = "the plate map",
) -> dict[str, str | None]:
    """Decide which column of a table holds each plate-map field.

    Parameters
    ----------
    columns
        The table's column names.
    explicit
        Field -> column name, overriding the aliases (``{"treatment": "Drug"}``);
        a value of None ignores that field even when an alias matches.
    source
        Name of the table for error messages.

    Returns
    -------
    dict
        Field -> column name, or None for fields the table does not have.

    Raises
    ------
    PlateMapError
        When an explicitly named column is missing or no well column is found.
    """
    resolved = {field: find_column(columns, field) for field in ALIASES}
    for name, column in (explicit or {}).items():
        field = _field_of(name)
        if column is not None and column not in columns:
            raise PlateMapError(
                f"Column {column!r} (given for {field}) is not in {source}; "
                f"its columns are: {', '.join(map(str, columns))}."
            )
        resolved[field] = column
        if field == ROLE:
            # An explicit role column replaces the JUMP pair, and None means "no roles".
            resolved[CONTROL_TYPE] = resolved[PERT_TYPE] = None
    if resolved[WELL] is None:
        raise PlateMapError(
            f"{source} has no well column. "
            f"Columns found: {', '.join(map(str, columns)) or 'none'}. "
            f"Accepted names for the well column: {', '.join(ALIASES[WELL])}; "
            "or name it explicitly (columns={'well': 'MyColumn'}, or rename the header)."
        )
    return resolved


def parse_role(value: object, *, where: str = "") -> Role | None:
    """Read a role from a plate-map cell; None for an empty cell.

    Accepts :class:`~phenoadapt.schema.Role` values and common spellings:
    ``control``/``negcon``/``negative control`` (negative controls),
    ``treated``/``trt``/``poscon`` (treated wells, positive controls included),
    ``excluded``/``empty``/``blank`` (wells to ignore).

    Raises
    ------
    PlateMapError
        For any other word, naming ``where`` it was found.
    """
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, Role):
        return value
    text = str(value).strip()
    if not text:
        return None
    role = _ROLE_LOOKUP.get(column_key(text))
    if role is None:
        raise PlateMapError(
            f"Unknown role {text!r}{' at ' + where if where else ''}: write 'control' for negative "
            "controls (e.g. DMSO), 'treated' for treated wells or 'excluded' for wells to ignore "
            f"(also accepted: {', '.join(sorted(_ROLE_LOOKUP))})."
        )
    return role


def jump_role(control_type: object, pert_type: object, *, where: str = "") -> Role | None:
    """Role of a well from the JUMP ``control_type`` and ``pert_type`` columns.

    ``control_type`` is the more precise (``negcon`` / ``poscon``) and wins
    when present; otherwise ``pert_type`` (``trt`` / ``control``) decides.
    """
    role = parse_role(control_type, where=where)
    return role if role is not None else parse_role(pert_type, where=where)
