"""The official CS-ARM-BN label-shift protocol: one Dirichlet draw per test plate.

The CS-ARM-BN paper's evaluation under label shift (``LabelShiftGroupBatchSampler``
of the official code, ml-jku/cs-arm-bn, re-implemented here from its
description) differs from :class:`phenoadapt.train.LabelShiftSampler`:

- **one** class mix per test plate: ``p ~ Dirichlet(alpha)`` over every class,
  then ``n = Multinomial(L, p)`` treated cells per class;
- the plate gets as many contexts as there are classes; after each context
  the counts are **rotated** by one class (``n_k -> n_{k+1}``), so over the
  plate's contexts every class receives every count once: the class that
  dominates the first context dominates no other, and each class dominates
  exactly one context;
- a class's count is **capped** at the cells of that class the plate holds
  (no resampling), so when the draw asks for more of a class than the plate
  has, the context is smaller and mostly controls;
- each context has ``C`` controls of the plate, drawn with replacement (as the
  official code's ``np.random.choice`` does; ``controls_replace=False`` draws
  them without).

Cells within a context are distinct; a cell may appear in several contexts of
its plate (each context permutes the class's cells afresh).  Unlike the
official code, every draw comes from one generator seeded by ``seed``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import schema
from ..adapt.methods import DEFAULT_CONTROLS_PER_CONTEXT, DEFAULT_TREATED_PER_CONTEXT
from ..errors import OptionError
from ..train.samplers import LabelShiftContext

_EMPTY = np.empty(0, dtype=np.int64)


def _plate_cells(
    table: pd.DataFrame, labels: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per plate (in order of appearance): positions of labelled treated cells and of controls."""
    plates = table[schema.PLATE].astype(str).to_numpy()
    roles = table[schema.ROLE].astype(str).str.lower().to_numpy()
    out = {}
    for plate in dict.fromkeys(plates):
        mine = plates == plate
        treated = np.flatnonzero(mine & (labels >= 0))
        controls = np.flatnonzero(mine & (roles == schema.Role.CONTROL.value))
        out[str(plate)] = (treated, controls)
    return out


class PlateLabelShiftSampler:
    """Label-shift contexts as in the official CS-ARM-BN evaluation (see module doc).

    Parameters
    ----------
    table
        Per-cell table of the test plates (``Metadata_Plate``, ``Metadata_Role``).
    labels
        Class index per cell, -1 for controls and unlabelled cells.
    alpha
        Dirichlet concentration (0.01: nearly one class per plate draw).
    treated_per_context
        L, the multinomial total of each plate's draw (the official ``total_size``).
    controls_per_context
        C controls per context.
    n_classes
        Number of classes (default: ``labels.max() + 1``); also the number of
        contexts per plate.
    controls_replace
        Draw controls with replacement (the official code) or without.
    seed
        Seed of every draw.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        labels: np.ndarray,
        alpha: float,
        treated_per_context: int = DEFAULT_TREATED_PER_CONTEXT,
        controls_per_context: int = DEFAULT_CONTROLS_PER_CONTEXT,
        *,
        n_classes: int | None = None,
        controls_replace: bool = True,
        seed: int = 0,
    ) -> None:
        if alpha <= 0:
            raise OptionError(f"The Dirichlet alpha must be positive, got {alpha}.")
        if treated_per_context < 1 or controls_per_context < 0:
            raise OptionError(
                f"Need at least one treated cell per context and no negative control count, "
                f"got L = {treated_per_context}, C = {controls_per_context}."
            )
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n_classes = int(n_classes if n_classes is not None else self.labels.max() + 1)
        if self.n_classes < 1:
            raise OptionError("No labelled cells: label shift needs treated cells with a class.")
        self.groups = _plate_cells(table, self.labels)
        self.alpha = float(alpha)
        self.treated_per_context = int(treated_per_context)
        self.controls_per_context = int(controls_per_context)
        self.controls_replace = controls_replace
        self.seed = seed

    def plate_counts(self, rng: np.random.Generator) -> np.ndarray:
        """One plate's draw: requested treated cells per class (sums to L)."""
        p = rng.dirichlet(np.full(self.n_classes, self.alpha))
        return rng.multinomial(self.treated_per_context, p)

    def contexts(self) -> list[LabelShiftContext]:
        """Every plate's contexts, plate by plate (deterministic given the seed).

        ``proportions`` of a context are the requested counts of that context
        divided by L (before the caps), so rotation is visible in them.
        """
        rng = np.random.default_rng(self.seed)
        out: list[LabelShiftContext] = []
        for plate, (treated, controls) in self.groups.items():
            if len(treated) == 0:
                continue
            by_class = [treated[self.labels[treated] == k] for k in range(self.n_classes)]
            counts = self.plate_counts(rng)
            for _ in range(self.n_classes):
                chosen = [
                    rng.permutation(cells)[: min(int(n), len(cells))]
                    for cells, n in zip(by_class, counts, strict=True)
                ]
                picked = np.concatenate(chosen) if chosen else _EMPTY
                out.append(
                    LabelShiftContext(
                        plate,
                        picked.astype(np.int64),
                        self._controls(controls, rng),
                        counts / self.treated_per_context,
                    )
                )
                counts = np.roll(counts, 1)  # class k's count goes to class k + 1
        return [c for c in out if len(c.treated)]

    def _controls(self, controls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if len(controls) == 0 or self.controls_per_context == 0:
            return _EMPTY
        if self.controls_replace:
            return np.sort(rng.choice(controls, size=self.controls_per_context, replace=True))
        k = min(self.controls_per_context, len(controls))
        return np.sort(rng.choice(controls, size=k, replace=False))
