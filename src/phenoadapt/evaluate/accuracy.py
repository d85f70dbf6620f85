"""Classification accuracy on held-out plates, summarized as mean +- std over plates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import schema
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


def accuracy_per_plate(
    table: pd.DataFrame,
    *,
    label_column: str = schema.MOA,
    prediction_column: str = schema.PREDICTION,
    plate_column: str = schema.PLATE,
    role_column: str | None = schema.ROLE,
) -> PlateAccuracy:
    """Accuracy of predictions on each plate; controls are left out when roles are known.

    Parameters
    ----------
    table
        One row per predicted unit (cell, site or well) with the true label, the
        prediction and the plate.
    label_column, prediction_column, plate_column
        Column names.
    role_column
        When present in ``table``, rows whose role is not ``treated`` (controls carry
        no label; excluded wells none at all) are ignored.

    Returns
    -------
    PlateAccuracy
        ``per_plate``, ``mean`` and ``std`` (over plates).
    """
    require_columns(table, [label_column, prediction_column, plate_column], "accuracy per plate")
    if role_column is not None and role_column in table.columns:
        table = table[table[role_column].astype(str) == schema.Role.TREATED.value]
    if table.empty:
        raise ValueError("accuracy per plate: no treated rows to evaluate")
    correct = (table[label_column].astype(str) == table[prediction_column].astype(str)).to_numpy()
    groups = pd.Series(correct, index=table.index).groupby(table[plate_column].to_numpy())
    return PlateAccuracy(per_plate=groups.mean().astype(float), n_per_plate=groups.size())


def mean_std(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value) of fold results."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std
