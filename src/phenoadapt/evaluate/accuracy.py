"""Classification accuracy: which rows are scored, per plate, and mean +- std over plates.

:func:`scored_rows` is the one rule every caller uses (``phenoadapt predict``'s
``accuracy.csv``, the GUI's accuracy line, :func:`evaluate_table`): only treated
rows with a known MoA and a prediction are scored; controls and excluded wells never.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import schema
from ..errors import TableError
from ..profiles.table import require_columns


@dataclass(frozen=True)
class PlateAccuracy:
    """Accuracy of each held-out plate and their summary.

    Attributes
    ----------
    per_plate
        Accuracy of each plate, indexed by plate.
    n_per_plate
        Number of evaluated rows of each plate.
    """

    per_plate: pd.Series
    n_per_plate: pd.Series

    @property
    def mean(self) -> float:
        """Mean accuracy over plates (each plate counts once, whatever its size)."""
        return float(self.per_plate.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation over plates (ddof=1); 0.0 for a single plate."""
        return float(self.per_plate.std(ddof=1)) if len(self.per_plate) > 1 else 0.0

    def __str__(self) -> str:
        return f"{self.mean:.3f} +- {self.std:.3f} over {len(self.per_plate)} plate(s)"


def scored_rows(
    table: pd.DataFrame,
    classes: Sequence[str] | None = None,
    *,
    label_column: str = schema.MOA,
    prediction_column: str = schema.PREDICTION,
    role_column: str | None = schema.ROLE,
) -> np.ndarray:
    """Which rows accuracy scores: the one rule of phenoadapt, for every caller.

    A row (cell, field or well) is scored when it is **treated**, its **MoA is
    known** and it has a **prediction**.  Controls (they carry no MoA to
    predict) and excluded wells (nothing was meant to be measured there) are
    never scored, nor rows whose prediction failed.

    Parameters
    ----------
    table
        One row per predicted unit.
    classes
        The classes the model knows; an MoA outside them is not known to the
        model and is not scored.  None: any non-empty MoA is known.
    label_column, prediction_column
        Column names of the true MoA and the prediction.
    role_column
        Column of the well roles.  None, or a table without it, means the
        caller vouches that every row is treated (a table with no roles).

    Returns
    -------
    numpy.ndarray
        A boolean mask, one entry per row.
    """
    labels = table[label_column]
    known = labels.notna() & (labels.astype(str).str.strip() != "")
    if classes is not None:
        known &= labels.astype(str).isin([str(c) for c in classes])
    keep = known & table[prediction_column].notna()
    if role_column is not None and role_column in table.columns:
        roles = table[role_column].astype(str).str.strip().str.lower()
        keep &= roles == schema.Role.TREATED.value
    return keep.to_numpy(dtype=bool)


def _hits(table: pd.DataFrame, label_column: str, prediction_column: str) -> np.ndarray:
    return (table[label_column].astype(str) == table[prediction_column].astype(str)).to_numpy()


def accuracy_per_plate(
    table: pd.DataFrame,
    *,
    label_column: str = schema.MOA,
    prediction_column: str = schema.PREDICTION,
    plate_column: str = schema.PLATE,
    role_column: str | None = schema.ROLE,
    classes: Sequence[str] | None = None,
) -> PlateAccuracy:
    """Accuracy of predictions on each plate, scoring the rows :func:`scored_rows` keeps.

    Parameters
    ----------
    table
        One row per predicted unit (cell, site or well) with the true label, the
        prediction and the plate.
    label_column, prediction_column, plate_column
        Column names.
    role_column, classes
        As for :func:`scored_rows`: only treated rows with a known MoA count.

    Returns
    -------
    PlateAccuracy
        ``per_plate``, ``mean`` and ``std`` (over plates).

    Raises
    ------
    TableError
        For missing columns, or no row to score.
    """
    require_columns(table, [label_column, prediction_column, plate_column], "accuracy per plate")
    keep = scored_rows(
        table,
        classes,
        label_column=label_column,
        prediction_column=prediction_column,
        role_column=role_column,
    )
    table = table[keep]
    if table.empty:
        raise TableError(
            "accuracy per plate: no treated row with a known MoA and a prediction to score "
            f"(columns {role_column}, {label_column}, {prediction_column})."
        )
    correct = _hits(table, label_column, prediction_column)
    groups = pd.Series(correct, index=table.index).groupby(table[plate_column].to_numpy())
    return PlateAccuracy(per_plate=groups.mean().astype(float), n_per_plate=groups.size())


def accuracy_table(
    cells: pd.DataFrame, wells: pd.DataFrame | None, classes: Sequence[str]
) -> pd.DataFrame | None:
    """Cell (or field) and well accuracy per plate of a prediction run.

    The table ``phenoadapt predict`` writes as ``accuracy.csv`` and the GUI
    shows; rows are scored by :func:`scored_rows`.

    Parameters
    ----------
    cells, wells
        Per-unit and per-well predictions with ``Metadata_Plate``,
        ``Metadata_MoA``, ``Metadata_Role`` and ``predicted_moa``; ``wells`` may be None.
    classes
        The model's classes.

    Returns
    -------
    pandas.DataFrame or None
        ``Metadata_Plate``, ``adapt_method`` (when the cells have it), ``n_cells``,
        ``cell_accuracy``, ``n_wells``, ``well_accuracy`` (NaN without scored
        wells); None when no cell is scored (no plate map, no known MoA).
    """
    if schema.MOA not in cells.columns or schema.ROLE not in cells.columns:
        return None
    cell_rows = cells[scored_rows(cells, classes)]
    if cell_rows.empty:
        return None
    have_wells = wells is not None and {schema.MOA, schema.ROLE} <= set(wells.columns)
    well_rows = wells[scored_rows(wells, classes)] if have_wells else None
    rows = []
    for plate, group in cell_rows.groupby(schema.PLATE, sort=True):
        row: dict[str, object] = {schema.PLATE: plate}
        if "adapt_method" in group.columns:
            row["adapt_method"] = str(group["adapt_method"].iloc[0])
        on_plate = (
            well_rows[well_rows[schema.PLATE] == plate] if well_rows is not None else cells[:0]
        )
        row.update(
            n_cells=len(group),
            cell_accuracy=float(_hits(group, schema.MOA, schema.PREDICTION).mean()),
            n_wells=len(on_plate),
            well_accuracy=float(_hits(on_plate, schema.MOA, schema.PREDICTION).mean())
            if len(on_plate)
            else np.nan,
        )
        rows.append(row)
    return pd.DataFrame(rows)


def mean_std(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value) of fold results."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std
