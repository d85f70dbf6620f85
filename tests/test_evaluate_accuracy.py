"""The one accuracy rule: only treated rows with a known MoA and a prediction are scored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.errors import TableError
from phenoadapt.evaluate import accuracy_per_plate, accuracy_table, scored_rows

CLASSES = ("a", "b")


def cells() -> pd.DataFrame:
    """Plate P1: 3 scored cells (2 right); an excluded, a control, an unknown-MoA and a
    failed cell, each predicted wrongly, which no rule may count."""
    return pd.DataFrame(
        {
            schema.PLATE: ["P1"] * 7,
            schema.WELL: ["A01", "A01", "A02", "A03", "A04", "A05", "A06"],
            schema.MOA: ["a", "a", "b", "a", "DMSO", "zzz", "b"],
            schema.ROLE: [
                "treated",
                "treated",
                "Treated",
                "excluded",
                "control",
                "treated",
                "treated",
            ],  # fmt: skip
            schema.PREDICTION: ["a", "a", "a", "b", "a", "a", None],
            "adapt_method": ["cs-arm-bn"] * 7,
        }
    )


def test_an_excluded_well_is_never_scored() -> None:
    table = cells()
    keep = scored_rows(table, CLASSES)
    assert keep.tolist() == [True, True, True, False, False, False, False]
    # Without the class list an MoA the model does not know still counts as known.
    assert scored_rows(table).tolist() == [True, True, True, False, False, True, False]


def test_every_caller_applies_the_rule() -> None:
    table = cells()
    run = accuracy_table(table, table, CLASSES)  # accuracy.csv of predict, the GUI line
    assert run["n_cells"].tolist() == [3] and run["cell_accuracy"].tolist() == [2 / 3]
    assert run["adapt_method"].tolist() == ["cs-arm-bn"]
    per_plate = accuracy_per_plate(table, classes=CLASSES)  # phenoadapt evaluate
    assert per_plate.per_plate.to_dict() == pytest.approx({"P1": 2 / 3})
    assert per_plate.n_per_plate.to_dict() == {"P1": 3}


def test_nothing_to_score() -> None:
    table = cells()
    table[schema.ROLE] = "excluded"
    assert accuracy_table(table, None, CLASSES) is None
    with pytest.raises(TableError, match="no treated row"):
        accuracy_per_plate(table)
    wells_free = accuracy_table(cells(), None, CLASSES)
    assert wells_free["n_wells"].tolist() == [0] and np.isnan(wells_free["well_accuracy"][0])
