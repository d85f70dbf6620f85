"""From a plate-map table with any header spelling to a table in phenoadapt's schema.

Two steps, both on plain DataFrames: :func:`join_compound_metadata` adds the
columns of a per-compound table (the JUMP ``compound_metadata`` file: name,
MoA, control type) to a per-well table; :func:`to_schema_table` picks each
field's column by alias and renames it to its ``Metadata_*`` name.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ... import schema
from ...errors import PlateMapError
from .canonical import COMPOUND_TABLE, MAP_TABLE, Origin, as_text, listing
from .columns import (
    ALIASES,
    CONCENTRATION,
    CONTROL_TYPE,
    MOA,
    PERT_TYPE,
    PLATE,
    ROLE,
    SCHEMA_COLUMN,
    SOLVENT,
    TREATMENT,
    WELL,
    column_key,
    find_column,
    jump_role,
    resolve_columns,
)

# Fields a compound table may contribute to a plate map.
_COMPOUND_FIELDS = (TREATMENT, MOA, CONCENTRATION, ROLE, CONTROL_TYPE, PERT_TYPE)


def _join_key(
    table: pd.DataFrame, metadata: pd.DataFrame, origin: Origin, meta_origin: Origin
) -> tuple[str, str]:
    """The compound column of the plate map and its namesake in the compound table."""
    map_key = find_column(table.columns, TREATMENT)
    if map_key is None:
        raise PlateMapError(
            f"Cannot join {meta_origin.name} to {origin.name}: the plate map has no compound "
            f"column (accepted names: {', '.join(ALIASES[TREATMENT])}); its columns are "
            f"{', '.join(map(str, table.columns))}."
        )
    meta_key = next((c for c in metadata.columns if column_key(c) == column_key(map_key)), None)
    if meta_key is None:
        raise PlateMapError(
            f"Cannot join {meta_origin.name} to {origin.name}: the plate map names compounds in "
            f"its {map_key!r} column, which {meta_origin.name} lacks (its columns are "
            f"{', '.join(map(str, metadata.columns))}). Give both files a column of that name."
        )
    return map_key, meta_key


def join_compound_metadata(
    table: pd.DataFrame,
    metadata: pd.DataFrame,
    *,
    origin: Origin = MAP_TABLE,
    meta_origin: Origin = COMPOUND_TABLE,
) -> pd.DataFrame:
    """Add name, MoA and role columns of a per-compound table to a per-well table.

    The join key is the plate map's compound column (``broad_sample`` in JUMP
    maps), which the compound table must have too.  Wells with an empty key
    match the compound-table row with an empty key: JUMP writes DMSO wells
    with no ``broad_sample`` and lists DMSO under ``broad_sample`` ``NA``.

    Parameters
    ----------
    table
        One row per well.
    metadata
        One row per compound.
    origin, meta_origin
        Where the two tables came from, for error messages.

    Returns
    -------
    DataFrame
        ``table`` with the compound table's treatment, MoA, concentration and
        role columns added (those the plate map does not have already).

    Raises
    ------
    PlateMapError
        When no join key exists, a compound appears twice in the compound
        table, or a compound of the plate map is missing from it.
    """
    map_key, meta_key = _join_key(table, metadata, origin, meta_origin)
    meta_keys = as_text(metadata[meta_key]).fillna("")
    repeated = sorted(set(meta_keys[meta_keys.duplicated()]))
    if repeated:
        raise PlateMapError(
            f"{len(repeated)} compound(s) appear more than once in the {meta_key!r} column of "
            f"{meta_origin.name}: {listing([k or '(empty)' for k in repeated])}. "
            "Keep one row per compound."
        )
    keys = as_text(table[map_key]).fillna("")
    unknown = sorted(set(keys) - set(meta_keys) - {""})
    if unknown:
        raise PlateMapError(
            f"{len(unknown)} compound(s) of {origin.name} are missing from {meta_origin.name}: "
            f"{listing(unknown)}. Add them to the compound table or correct the plate map."
        )
    lookup = metadata.set_index(meta_keys.to_numpy())
    joined = table.copy()
    for field in _COMPOUND_FIELDS:
        column = find_column(metadata.columns, field)
        if column is None or column == meta_key or column in joined.columns:
            continue
        # Empty keys with no empty-key row in the compound table stay empty.
        joined[column] = keys.map(lookup[column]).to_numpy()
    return joined


def to_schema_table(
    table: pd.DataFrame,
    *,
    columns: Mapping[str, str | None] | None = None,
    origin: Origin = MAP_TABLE,
) -> pd.DataFrame:
    """Rename a plate-map table's columns to the schema, found by alias.

    Wells with no treatment but a solvent (JUMP writes DMSO wells as an empty
    compound in DMSO) get the solvent as their treatment.  JUMP's
    ``control_type``/``pert_type`` become ``Metadata_Role``.  Columns that hold
    no field are kept under their own names.

    Parameters
    ----------
    table
        A plate-map table as read.
    columns
        Field -> column name overriding the aliases (see
        :func:`~phenoadapt.plate.platemap.columns.resolve_columns`).
    origin
        Where the table came from, for error messages.

    Returns
    -------
    DataFrame
        The schema-named table, with the same index.

    Raises
    ------
    PlateMapError
        When the table has no well column, or neither a treatment nor a role column.
    """
    found = resolve_columns(list(table.columns), columns, source=origin.name)
    role_columns = [found[f] for f in (ROLE, CONTROL_TYPE, PERT_TYPE) if found[f] is not None]
    if found[TREATMENT] is None and not role_columns:
        raise PlateMapError(
            f"{origin.name} has neither a treatment nor a role column. Columns found: "
            f"{', '.join(map(str, table.columns))}. Accepted names for the treatment column: "
            f"{', '.join(ALIASES[TREATMENT])}; for the role column: "
            f"{', '.join(ALIASES[ROLE] + ALIASES[CONTROL_TYPE] + ALIASES[PERT_TYPE])}."
        )
    out = pd.DataFrame(index=table.index)
    for field in (PLATE, WELL, TREATMENT, MOA, CONCENTRATION, ROLE):
        if found[field] is not None:
            out[SCHEMA_COLUMN[field]] = table[found[field]]
    if found[TREATMENT] is not None and found[SOLVENT] is not None:
        treatment = as_text(out[schema.TREATMENT])
        out[schema.TREATMENT] = treatment.fillna(as_text(table[found[SOLVENT]]))
    if found[ROLE] is None and role_columns:
        out[schema.ROLE] = _jump_roles(table, found, out, origin)
    used = {c for c in found.values() if c is not None} - {found[SOLVENT]}
    reserved = set(SCHEMA_COLUMN.values())
    for column in table.columns:
        if column not in used and column not in reserved:
            out[column] = table[column]
    return out


def _jump_roles(
    table: pd.DataFrame, found: dict[str, str | None], out: pd.DataFrame, origin: Origin
) -> list[object]:
    control_type = table[found[CONTROL_TYPE]] if found[CONTROL_TYPE] else None
    pert_type = table[found[PERT_TYPE]] if found[PERT_TYPE] else None
    roles: list[object] = []
    for label in table.index:
        well = out[schema.WELL][label]
        role = jump_role(
            None if control_type is None else control_type[label],
            None if pert_type is None else pert_type[label],
            where=f"well {well} ({origin.at(label)})",
        )
        roles.append(None if role is None else role.value)
    return roles
