"""Samplers: plate episodes for training, ERM minibatches, label-shift contexts for evaluation.

An *episode* is what one forward pass sees.  For ARM-BN and CS-ARM-BN it is one
plate: L treated cells (64) and, for CS-ARM-BN, C control cells (128) of that
same plate, so the batch-norm statistics of the pass are that plate's.  For
ERM it is a minibatch of treated cells mixed across plates.  An optimizer
*step* accumulates gradients over P episodes (8), from distinct plates where
the plates allow.

Every epoch visits each treated cell once; its steps are a deterministic
function of ``(seed, epoch)``, so every process of a distributed job draws the
same steps and takes its share (see :mod:`.distributed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenoadapt.errors import OptionError

from .. import schema
from ..adapt.methods import (
    DEFAULT_CONTROLS_PER_CONTEXT,
    DEFAULT_TREATED_PER_CONTEXT,
    Context,
    context_from_cells,
)

_EMPTY = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class Episode:
    """Cells of one forward pass: treated (labelled) first, then controls (unlabelled).

    ``plate`` is None for ERM minibatches that mix plates.
    """

    plate: str | None
    treated: np.ndarray
    controls: np.ndarray

    @property
    def positions(self) -> np.ndarray:
        """Treated then control positions, the order of the forward pass."""
        return np.concatenate([self.treated, self.controls])


def _plate_groups(table: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Plate -> (treated positions, control positions), plates sorted."""
    roles = table[schema.ROLE].astype(str).str.lower().to_numpy()
    plates = table[schema.PLATE].astype(str).to_numpy()
    groups = {}
    for plate in sorted(set(plates)):
        on = plates == plate
        groups[plate] = (
            np.flatnonzero(on & (roles == schema.Role.TREATED.value)),
            np.flatnonzero(on & (roles == schema.Role.CONTROL.value)),
        )
    return groups


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch]))


class PlateEpisodeSampler:
    """Episodes of one plate each, grouped into optimizer steps.

    Parameters
    ----------
    table
        Per-cell table (``Metadata_Plate``, ``Metadata_Role``) of the training plates.
    treated_per_episode
        L, treated cells per episode (64).  A plate's treated cells are split at
        random into near-equal episodes of at most L.
    controls_per_episode
        C, controls per episode (128; 0 for ARM-BN).  Drawn without replacement
        from the plate's controls (all of them when the plate has fewer).
    plates_per_step
        P, episodes per optimizer step (gradient accumulation, 8).  Every step has
        exactly P episodes: the last step of an epoch is topped up with extra
        episodes from random plates.
    seed
        Seed; episodes of an epoch depend only on ``(seed, epoch)``.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        treated_per_episode: int = DEFAULT_TREATED_PER_CONTEXT,
        controls_per_episode: int = DEFAULT_CONTROLS_PER_CONTEXT,
        plates_per_step: int = 8,
        seed: int = 0,
    ) -> None:
        if treated_per_episode < 1 or plates_per_step < 1 or controls_per_episode < 0:
            raise OptionError("Episode sizes must be positive (controls may be 0).")
        self.groups = {p: g for p, g in _plate_groups(table).items() if len(g[0])}
        if not self.groups:
            raise OptionError("No plate has treated cells to train on.")
        if controls_per_episode:
            lacking = [p for p, (_, c) in self.groups.items() if len(c) == 0]
            if lacking:
                raise OptionError(
                    f"Plates {lacking} have no control cells, but episodes take "
                    f"{controls_per_episode} controls each: mark their control wells, or "
                    "train ARM-BN (controls_per_episode=0)."
                )
        self.treated_per_episode = treated_per_episode
        self.controls_per_episode = controls_per_episode
        self.plates_per_step = plates_per_step
        self.seed = seed

    @property
    def plates(self) -> list[str]:
        """Plates with treated cells, sorted."""
        return list(self.groups)

    def _episode(self, plate: str, treated: np.ndarray, rng: np.random.Generator) -> Episode:
        controls = self.groups[plate][1]
        k = min(self.controls_per_episode, len(controls))
        chosen = np.sort(rng.choice(controls, size=k, replace=False)) if k else _EMPTY
        return Episode(plate, np.sort(treated), chosen)

    def steps(self, epoch: int) -> list[list[Episode]]:
        """The optimizer steps of an epoch, each a list of P episodes."""
        rng = _epoch_rng(self.seed, epoch)
        queues: dict[str, list[np.ndarray]] = {}
        for plate, (treated, _) in self.groups.items():
            k = math.ceil(len(treated) / self.treated_per_episode)
            queues[plate] = list(np.array_split(rng.permutation(treated), k))
        steps: list[list[Episode]] = []
        while any(queues.values()):
            step: list[Episode] = []
            while len(step) < self.plates_per_step and any(queues.values()):
                # Distinct plates within a pass, chosen in proportion to the
                # episodes they have left so that no plate piles up at the end.
                live = [p for p in queues if queues[p]]
                left = np.array([len(queues[p]) for p in live], dtype=float)
                take = min(self.plates_per_step - len(step), len(live))
                for plate in rng.choice(live, size=take, replace=False, p=left / left.sum()):
                    step.append(self._episode(str(plate), queues[plate].pop(), rng))
            while len(step) < self.plates_per_step:
                step.append(self._extra_episode(rng))
            steps.append(step)
        return steps

    def _extra_episode(self, rng: np.random.Generator) -> Episode:
        plate = str(rng.choice(self.plates))
        treated = self.groups[plate][0]
        size = min(self.treated_per_episode, len(treated))
        return self._episode(plate, rng.choice(treated, size=size, replace=False), rng)

    def steps_per_epoch(self) -> int:
        """Number of optimizer steps in an epoch (the same for every epoch)."""
        return len(self.steps(0))


class MixedBatchSampler:
    """ERM minibatches of treated cells mixed across plates, grouped into steps.

    Same step structure as :class:`PlateEpisodeSampler` (P minibatches of L cells
    per step), so ERM and ARM-BN see the same number of images per step.
    """

    def __init__(
        self, table: pd.DataFrame, batch_size: int = 64, batches_per_step: int = 8, seed: int = 0
    ) -> None:
        groups = _plate_groups(table)
        self.treated = np.sort(np.concatenate([g[0] for g in groups.values()]))
        if len(self.treated) == 0:
            raise OptionError("No treated cells to train on.")
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step
        self.seed = seed

    def steps(self, epoch: int) -> list[list[Episode]]:
        """The optimizer steps of an epoch, each a list of P minibatches."""
        rng = _epoch_rng(self.seed, epoch)
        k = math.ceil(len(self.treated) / self.batch_size)
        batches = [
            Episode(None, np.sort(b), _EMPTY)
            for b in np.array_split(rng.permutation(self.treated), k)
        ]
        while len(batches) % self.batches_per_step:
            size = min(self.batch_size, len(self.treated))
            batches.append(
                Episode(None, np.sort(rng.choice(self.treated, size, replace=False)), _EMPTY)
            )
        p = self.batches_per_step
        return [batches[i : i + p] for i in range(0, len(batches), p)]

    def steps_per_epoch(self) -> int:
        """Number of optimizer steps in an epoch."""
        return math.ceil(math.ceil(len(self.treated) / self.batch_size) / self.batches_per_step)


@dataclass(frozen=True)
class LabelShiftContext:
    """A context with its own class mix: which cells, and the proportions they were drawn with."""

    plate: str
    treated: np.ndarray
    controls: np.ndarray
    proportions: np.ndarray

    def context(self, method: str) -> Context:
        """The :class:`~phenoadapt.adapt.methods.Context` of ``method``; treated are predicted."""
        return context_from_cells(self.plate, method, self.treated, self.controls)


class LabelShiftSampler:
    """Evaluation contexts whose class proportions are drawn from a Dirichlet distribution.

    Label shift is what breaks ARM-BN: statistics of treated images depend on
    the class mix of the context.  Each context of a plate draws proportions
    ``p ~ Dirichlet(alpha * 1)`` over the plate's classes, then L treated cells
    by those proportions (multinomial counts; without replacement while a class
    has cells, with replacement beyond) and C controls.  Small ``alpha`` (0.01)
    gives contexts of nearly one class; large ``alpha`` (100) balanced ones.

    Parameters
    ----------
    table
        Per-cell table of the evaluation plates.
    labels
        Class index per cell (-1 for unlabelled), e.g. :attr:`CellData.labels`.
    alpha
        Dirichlet concentration.
    treated_per_context, controls_per_context
        L and C.
    contexts_per_plate
        Contexts drawn per plate.
    seed
        Seed.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        labels: np.ndarray,
        alpha: float = 1.0,
        treated_per_context: int = DEFAULT_TREATED_PER_CONTEXT,
        controls_per_context: int = DEFAULT_CONTROLS_PER_CONTEXT,
        contexts_per_plate: int = 10,
        seed: int = 0,
    ) -> None:
        if alpha <= 0:
            raise OptionError(f"The Dirichlet alpha must be positive, got {alpha}.")
        self.groups = _plate_groups(table)
        self.labels = np.asarray(labels)
        self.alpha = float(alpha)
        self.treated_per_context = treated_per_context
        self.controls_per_context = controls_per_context
        self.contexts_per_plate = contexts_per_plate
        self.seed = seed

    def contexts(self) -> list[LabelShiftContext]:
        """All contexts, plate by plate (deterministic given the seed)."""
        rng = np.random.default_rng(self.seed)
        out = []
        for plate, (treated, controls) in self.groups.items():
            if len(treated) == 0:
                continue
            by_class = {
                int(k): treated[self.labels[treated] == k] for k in np.unique(self.labels[treated])
            }
            classes = sorted(by_class)
            for _ in range(self.contexts_per_plate):
                p = rng.dirichlet(np.full(len(classes), self.alpha))
                counts = rng.multinomial(self.treated_per_context, p)
                chosen = [
                    self._draw(by_class[c], n, rng)
                    for c, n in zip(classes, counts, strict=True)
                    if n
                ]
                k = min(self.controls_per_context, len(controls))
                ctrl = np.sort(rng.choice(controls, size=k, replace=False)) if k else _EMPTY
                proportions = np.zeros(int(self.labels.max()) + 1)
                proportions[classes] = p
                out.append(LabelShiftContext(plate, np.concatenate(chosen), ctrl, proportions))
        return out

    @staticmethod
    def _draw(cells: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        if n <= len(cells):
            return rng.choice(cells, size=n, replace=False)
        return np.concatenate([rng.permutation(cells), rng.choice(cells, size=n - len(cells))])
