"""What accuracy is possible on synthetic plates: a trait oracle and accuracy by subgroup.

A network's MoA accuracy on synthetic plates reads against the task's own
ceiling.  Two things cap it whatever the network:

- non-responders (``responder`` false, 15 % of treated cells by default) look
  exactly like DMSO cells, so they carry no class signal;
- responders vary from cell to cell (every trait has a cell-to-cell spread,
  and the response strength a log-normal factor), and at the lower dose some
  MoAs move their traits only a little.

:func:`trait_oracle` measures that cap directly: it draws the generator's
ground-truth traits (:func:`~phenoadapt.plate.synthetic.phenotypes.sample_traits`)
for cells with the same compounds and doses as a test set, trains a
gradient-boosted classifier on one draw and scores it on another.  It sees
every trait exactly, with no image, optics or batch effect in between: no
network reading pixels can do better on average.

:func:`accuracy_by` and :func:`well_accuracy` break a network's (or the
oracle's) predictions down by responder, dose and well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import schema
from ..plate.synthetic.phenotypes import (
    COMPOUNDS,
    PHENOTYPES,
    TRAITS,
    cell_responses,
    sample_traits,
)

RESPONDER = "responder"


@dataclass
class OracleResult:
    """Accuracy of the trait oracle on a fresh draw of the test set's cells.

    Attributes
    ----------
    accuracy
        All treated cells.
    responder_accuracy
        Responding cells only.
    well_accuracy
        Wells classified by their cells' mean class probabilities.
    by_dose
        Accuracy per concentration.
    cells
        The scored draw: one row per cell with the design columns,
        ``responder``, ``predicted`` and ``correct``.
    """

    accuracy: float
    responder_accuracy: float
    well_accuracy: float
    by_dose: dict[float, float] = field(default_factory=dict)
    cells: pd.DataFrame | None = None


def _draw_traits(
    design: pd.DataFrame, rng: np.random.Generator, responder_fraction: float, variation: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth trait matrix (log of multiplicative traits) and responder flags."""
    features = np.zeros((len(design), len(TRAITS)))
    responders = np.zeros(len(design), dtype=bool)
    keys = [schema.TREATMENT, schema.CONCENTRATION]
    for (compound, conc), rows in design.groupby(keys, sort=True).indices.items():
        drug = COMPOUNDS[str(compound)]
        responder, response = cell_responses(
            rng, len(rows), drug.response(float(conc)), responder_fraction
        )
        traits = sample_traits(rng, response, PHENOTYPES[drug.moa], variation)
        for j, trait in enumerate(TRAITS.values()):
            value = traits[trait.name]
            features[rows, j] = value if trait.additive else np.log(value)
        responders[rows] = responder
    return features, responders


def trait_oracle(
    design: pd.DataFrame,
    *,
    responder_fraction: float = 0.85,
    variation: float = 1.0,
    train_copies: int = 2,
    seed: int = 0,
) -> OracleResult:
    """MoA accuracy of a classifier that sees each cell's ground-truth traits.

    Parameters
    ----------
    design
        One row per treated cell of the test set: ``Metadata_Treatment``
        (compound), ``Metadata_Concentration`` (micromolar), ``Metadata_MoA``
        and, for per-well accuracy, ``Metadata_Plate`` and ``Metadata_Well``.
    responder_fraction, variation
        The generator's settings (``SyntheticPlateConfig.responder_fraction``
        and ``cell_variation``; defaults are the generator's).
    train_copies
        Training draws per test cell (more data brings the classifier closer
        to the Bayes rule).
    seed
        Seed of the trait draws and of the classifier.

    Returns
    -------
    OracleResult
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    design = design.reset_index(drop=True)
    missing = {schema.TREATMENT, schema.CONCENTRATION, schema.MOA} - set(design.columns)
    if missing:
        raise ValueError(f"The design lacks the columns {sorted(missing)}.")
    rng = np.random.default_rng(seed)
    train = pd.concat([design] * train_copies, ignore_index=True)
    x_train, _ = _draw_traits(train, rng, responder_fraction, variation)
    x_test, responders = _draw_traits(design, rng, responder_fraction, variation)
    classes = sorted(design[schema.MOA].astype(str).unique())
    y_train = pd.Categorical(train[schema.MOA].astype(str), categories=classes).codes
    y_test = pd.Categorical(design[schema.MOA].astype(str), categories=classes).codes
    model = HistGradientBoostingClassifier(max_iter=300, early_stopping=False, random_state=seed)
    model.fit(x_train, y_train)
    probs = model.predict_proba(x_test)
    predicted = probs.argmax(axis=1)
    cells = design.assign(
        **{RESPONDER: responders, "predicted": predicted, "correct": predicted == y_test}
    )
    by_dose = accuracy_by(cells, cells["correct"].to_numpy(), schema.CONCENTRATION)
    wells = (
        well_accuracy(cells, probs, y_test)
        if {schema.PLATE, schema.WELL} <= set(cells.columns)
        else float("nan")
    )
    return OracleResult(
        accuracy=float(cells["correct"].mean()),
        responder_accuracy=float(cells.loc[responders, "correct"].mean()),
        well_accuracy=wells,
        by_dose={float(k): float(v) for k, v in by_dose.items()},
        cells=cells,
    )


def accuracy_by(table: pd.DataFrame, correct: np.ndarray, by: str | list[str]) -> pd.Series:
    """Mean of ``correct`` per value of the column(s) ``by`` of ``table`` (row-aligned).

    Parameters
    ----------
    table
        One row per scored cell.
    correct
        Boolean per row: the prediction was right.
    by
        Column name(s) to group by (``"responder"``, ``"Metadata_Concentration"``...).

    Returns
    -------
    pandas.Series
        Accuracy per group, sorted by group.
    """
    correct = np.asarray(correct, dtype=float)
    if len(correct) != len(table):
        raise ValueError(f"{len(correct)} correctness flags for {len(table)} rows.")
    keys = [by] if isinstance(by, str) else list(by)
    frame = table[keys].reset_index(drop=True).assign(_correct=correct)
    return frame.groupby(keys, sort=True)["_correct"].mean()


def well_accuracy(table: pd.DataFrame, probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of wells classified by the mean class probabilities of their cells.

    Parameters
    ----------
    table
        One row per cell with ``Metadata_Plate`` and ``Metadata_Well``.
    probabilities
        ``(n_cells, n_classes)`` predicted probabilities, rows as ``table``.
    labels
        True class index per cell (a well's cells share one).

    Returns
    -------
    float
        Share of wells whose mean probability's argmax is the well's class.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    labels = np.asarray(labels)
    if len(probabilities) != len(table) or len(labels) != len(table):
        raise ValueError("probabilities, labels and table must have one row per cell.")
    keys = pd.MultiIndex.from_frame(table[[schema.PLATE, schema.WELL]].astype(str))
    codes, _ = pd.factorize(keys)
    n_wells = codes.max() + 1
    sums = np.zeros((n_wells, probabilities.shape[1]))
    np.add.at(sums, codes, probabilities)
    truth = np.full(n_wells, -1)
    truth[codes] = labels
    first = np.full(n_wells, -1)
    first[codes[::-1]] = labels[::-1]
    if np.any(truth != first):
        raise ValueError("Cells of one well have different labels: give each well one class.")
    return float(np.mean(sums.argmax(axis=1) == truth))
