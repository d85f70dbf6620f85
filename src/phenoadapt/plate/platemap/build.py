"""Building plate maps in code: from a well -> treatment mapping.

The synthetic-plate generator and scripts describe plates as assignments
(``{"A01": "taxol", ...}``) and save them with
:func:`~phenoadapt.plate.platemap.write_platemap`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ... import schema
from ..wells import PlateFormat, normalize_well
from .canonical import DEFAULT_CONTROLS, Origin, as_format
from .columns import SCHEMA_COLUMN, TREATMENT
from .model import PlateMap


def make_platemap(
    plate_format: PlateFormat | int,
    assignments: Mapping[str, str | Mapping[str, Any] | None],
    *,
    fill: str | None = None,
    moas: Mapping[str, str] | None = None,
    plate_id: str | None = None,
    controls: str | Sequence[str] = DEFAULT_CONTROLS,
) -> PlateMap:
    """Build a plate map from a well -> treatment (or well -> fields) mapping.

    Parameters
    ----------
    plate_format
        Plate format or number of wells.
    assignments
        Well -> treatment name, or well -> mapping of fields (``treatment``,
        ``moa``, ``concentration``, ``role``; schema names work too); None
        leaves a well untreated (excluded).
    fill
        Treatment of every other well of the plate (e.g. ``"DMSO"``); when
        None, wells not in ``assignments`` are left off the map.
    moas
        Treatment -> MoA, for wells whose assignment gives no MoA.
    plate_id
        The plate's barcode or name.
    controls
        Treatments that are negative controls where no role is given.

    Returns
    -------
    PlateMap
        An unmodified map.

    Examples
    --------
    >>> pm = make_platemap(96, {"A01": "taxol", "A02": {"treatment": "DMSO"}}, fill="DMSO",
    ...                    moas={"taxol": "tubulin stabilizer"})
    >>> len(pm.controls), pm.role_of("A01").value
    (95, 'treated')
    """
    fmt = as_format(plate_format)
    records = []
    for well, value in assignments.items():
        fields = value if isinstance(value, Mapping) else {TREATMENT: value}
        record = {schema.WELL: well}
        for key, item in fields.items():
            record[SCHEMA_COLUMN.get(str(key).lower(), str(key))] = item
        records.append(record)
    if fill is not None:
        assigned = {normalize_well(w) for w in assignments}
        records += [
            {schema.WELL: w, schema.TREATMENT: fill} for w in fmt.wells() if w not in assigned
        ]
    frame = pd.DataFrame.from_records(records, columns=None)
    if schema.TREATMENT not in frame.columns:
        frame[schema.TREATMENT] = None
    if moas:
        given = (
            frame[schema.MOA] if schema.MOA in frame.columns else pd.Series(None, index=frame.index)
        )
        frame[schema.MOA] = given.where(given.notna(), frame[schema.TREATMENT].map(moas))
    return PlateMap(frame, fmt, plate_id, controls=controls, origin=Origin("the assignments"))
