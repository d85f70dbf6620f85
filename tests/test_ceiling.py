"""Ceiling of the synthetic task: trait oracle, accuracy by subgroup, per-well accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.evaluate.ceiling import accuracy_by, trait_oracle, well_accuracy


def _design(n_per: int, conc: float) -> pd.DataFrame:
    rows = []
    for w, (compound, moa) in enumerate(
        [("nocodazole", "tubulin_inhibitor"), ("FCCP", "mitochondrial_uncoupler"),
         ("vorinostat", "hdac_inhibitor")]
    ):  # fmt: skip
        rows += [{schema.TREATMENT: compound, schema.MOA: moa, schema.CONCENTRATION: conc,
                  schema.PLATE: "P1", schema.WELL: f"A{w + 1:02d}"}] * n_per  # fmt: skip
    return pd.DataFrame(rows)


def test_oracle_is_capped_by_non_responders_and_deterministic() -> None:
    design = _design(300, 10.0)
    full = trait_oracle(design, responder_fraction=1.0, seed=0)
    half = trait_oracle(design, responder_fraction=0.5, seed=0)
    # Strong phenotypes at a high dose: responders are easy, non-responders are guesses.
    assert full.accuracy > 0.95 and half.responder_accuracy > 0.95
    assert half.accuracy < 0.5 * half.responder_accuracy + 0.5 * 0.5 + 0.05
    assert half.accuracy < full.accuracy - 0.2
    assert full.well_accuracy == 1.0 and set(full.by_dose) == {10.0}
    again = trait_oracle(design, responder_fraction=0.5, seed=0)
    assert again.accuracy == half.accuracy


def test_low_dose_is_harder_for_the_oracle() -> None:
    design = pd.concat([_design(300, 0.01), _design(300, 10.0)], ignore_index=True)
    result = trait_oracle(design, responder_fraction=1.0, seed=1)
    assert result.by_dose[0.01] < result.by_dose[10.0] - 0.05


def test_accuracy_by_and_well_accuracy() -> None:
    table = pd.DataFrame({schema.PLATE: ["P"] * 4, schema.WELL: ["A", "A", "B", "B"],
                          "responder": [True, False, True, True]})  # fmt: skip
    correct = np.array([True, False, True, False])
    by = accuracy_by(table, correct, "responder")
    assert by[True] == pytest.approx(2 / 3) and by[False] == 0.0
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1])
    # Well A: mean (0.6, 0.4) -> class 0, right; well B: (0.4, 0.6) -> class 1, right.
    assert well_accuracy(table, probs, labels) == 1.0
    assert well_accuracy(table, probs, np.array([1, 1, 1, 1])) == 0.5
    with pytest.raises(ValueError, match="different labels"):
        well_accuracy(table, probs, np.array([0, 1, 1, 1]))
    with pytest.raises(ValueError, match="one row per cell"):
        well_accuracy(table, probs[:3], labels)
