"""The per-cell table: metadata of each cell's field and well, then its measurements.

Columns follow :mod:`phenoadapt.schema`: ``Metadata_Plate``, ``Metadata_Well``,
``Metadata_Site``, ``cell_id``, ``centroid_y``, ``centroid_x``,
``Metadata_Role``, ``Metadata_Treatment``, ``Metadata_MoA``,
``Metadata_Concentration`` (from the plate map when one is given, else
missing), then the measurement columns.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .. import schema

# Metadata taken from the plate map, in table order.
MAP_COLUMNS = (schema.ROLE, schema.TREATMENT, schema.MOA, schema.CONCENTRATION)
# Leading columns of every per-cell table.
LEAD_COLUMNS = (
    schema.PLATE,
    schema.WELL,
    schema.SITE,
    schema.CELL_ID,
    schema.CENTROID_Y,
    schema.CENTROID_X,
    *MAP_COLUMNS,
)


def well_metadata(platemap: Any | None, well: str) -> dict[str, Any]:
    """Role, treatment, MoA and concentration of ``well`` from a plate map.

    Parameters
    ----------
    platemap
        A :class:`phenoadapt.plate.platemap.PlateMap`, or None.
    well
        Canonical well name.

    Returns
    -------
    dict
        Schema column -> value; None for everything when there is no map or the
        well is not on it.
    """
    values: dict[str, Any] = dict.fromkeys(MAP_COLUMNS)
    if platemap is None or well not in platemap:
        return values
    record = platemap.record(well)
    for column in MAP_COLUMNS:
        value = record.get(column)
        values[column] = str(value) if column == schema.ROLE and value is not None else value
    return values


def cell_table(
    measurements: pd.DataFrame,
    plate_id: str,
    well: str,
    site: int,
    platemap: Any | None = None,
) -> pd.DataFrame:
    """Prefix one field's measurements with the metadata columns of the schema.

    Parameters
    ----------
    measurements
        Output of :func:`phenoadapt.cells.measure.measure_cells` (``cell_id``,
        centroids, measurements), or any table with ``cell_id`` and centroids.
    plate_id, well, site
        The field.
    platemap
        Plate map giving role, treatment, MoA and concentration; optional.

    Returns
    -------
    pandas.DataFrame
        Metadata columns in schema order, then the measurement columns.
    """
    n = len(measurements)
    lead = pd.DataFrame(
        {
            schema.PLATE: pd.Series([plate_id] * n, dtype="str"),
            schema.WELL: pd.Series([well] * n, dtype="str"),
            schema.SITE: pd.Series([int(site)] * n, dtype="int64"),
        }
    )
    for column in (schema.CELL_ID, schema.CENTROID_Y, schema.CENTROID_X):
        lead[column] = measurements[column].to_numpy()
    for column, value in well_metadata(platemap, well).items():
        lead[column] = pd.Series([value] * n, dtype="object")
    rest = measurements.drop(columns=[schema.CELL_ID, schema.CENTROID_Y, schema.CENTROID_X])
    return pd.concat([lead, rest.reset_index(drop=True)], axis=1)


def empty_cell_table() -> pd.DataFrame:
    """A per-cell table with the lead columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in LEAD_COLUMNS})
