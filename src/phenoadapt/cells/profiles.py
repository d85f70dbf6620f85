"""Morphology profiles: per-cell measurements aggregated per site or per well.

The median over cells is robust to the few mis-segmented cells of a field;
it is the usual aggregation of Cell Painting profiles (pycytominer's default).
"""

from __future__ import annotations

import pandas as pd

from .. import schema
from ..errors import CellsError
from .measure import feature_columns

CELL_COUNT = "Metadata_Cell_Count"
_LEVELS = {
    "site": (schema.PLATE, schema.WELL, schema.SITE),
    "well": (schema.PLATE, schema.WELL),
}


def aggregate_profiles(
    cells: pd.DataFrame, level: str = "well", statistic: str = "median"
) -> pd.DataFrame:
    """Aggregate a per-cell table into one profile per site or per well.

    Parameters
    ----------
    cells
        Per-cell table (:func:`phenoadapt.cells.table.cell_table` rows).
    level
        ``"site"`` or ``"well"``.
    statistic
        ``"median"`` (default) or ``"mean"``.

    Returns
    -------
    pandas.DataFrame
        One row per site or well, in plate order of the input: the grouping
        columns, the well's plate-map metadata (role, treatment, MoA,
        concentration), ``Metadata_Cell_Count``, then the aggregated features.
    """
    if level not in _LEVELS:
        raise CellsError(f"Unknown aggregation level {level!r}: use 'site' or 'well'.")
    if statistic not in ("median", "mean"):
        raise CellsError(f"Unknown statistic {statistic!r}: use 'median' or 'mean'.")
    keys = list(_LEVELS[level])
    missing = [k for k in keys if k not in cells.columns]
    if missing:
        raise CellsError(
            f"The cell table lacks {', '.join(missing)}: aggregate a table made by "
            "phenoadapt segment (or phenoadapt.cells.segment_plate)."
        )
    features = feature_columns(cells)
    # Well-level metadata (role, treatment...) is constant within a group; the site is not.
    skip = {*keys, schema.SITE, CELL_COUNT}
    extra_meta = [c for c in cells.columns if schema.is_metadata(c) and c not in skip]
    groups = cells.groupby(keys, sort=False, dropna=False)
    meta = groups[extra_meta].first() if extra_meta else None
    count = groups.size().rename(CELL_COUNT)
    values = getattr(groups[features], statistic)() if features else None
    parts = [p for p in (meta, count, values) if p is not None]
    return pd.concat(parts, axis=1).reset_index()
