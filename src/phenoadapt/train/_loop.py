"""The one training loop, shared by the classifier (ERM, ARM-BN, CS-ARM-BN, ABRA) and PhenoProfiler.

:func:`run_epochs` owns everything a trainer repeats: epochs of optimizer steps,
gradient accumulation (one step may sum several episodes), data parallelism
under torchrun (each rank its share of a step's episodes, DDP's ``no_sync``
until the last), the cancel check before each step, progress, the history,
the best state on the validation loss, early stopping and putting the best
weights back.  A trainer only says, in a :class:`Step`, how to get an epoch's
batches, the loss of one of them and the validation loss.

Helpers:

- :func:`step_generator`: the augmentation randomness of one step, derived from
  the run's seed and the step's coordinates (so any process of a job, and any
  re-run, draws the same numbers);
- :func:`place_for_training` / :func:`restore_after_training`: move the model
  to the training device and memory layout, and back to the layout a
  checkpoint and inference expect;
- :func:`data_parallel`: the DDP wrapper when the process is one rank of a job.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import Cancelled
from ..progress import CancelFn, ProgressFn
from . import distributed as dist_utils

#: ``loss(net, item, (epoch, step, index))`` -> the tensor to backpropagate and
#: the numbers to record for it (summed over the epoch, then averaged).
LossFn = Callable[[nn.Module, Any, tuple[int, int, int]], tuple[torch.Tensor, np.ndarray]]


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU torch generator seeded from ``seed`` and the step's ``keys``.

    Parameters
    ----------
    seed
        The run's seed.
    *keys
        Coordinates of the step (e.g. epoch, step, episode); different keys give
        independent streams.

    Returns
    -------
    torch.Generator
        Seeded with 64 bits drawn by a :class:`numpy.random.SeedSequence`.
    """
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def place_for_training(model: nn.Module, device: torch.device, channels_last: bool) -> None:
    """Move ``model`` to ``device`` (in place), in channels-last layout when asked."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)


def restore_after_training(model: nn.Module, channels_last: bool) -> None:
    """Give ``model`` back its contiguous layout (if it was channels-last) and eval mode."""
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.eval()


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DDP inside a torchrun job, else ``model`` itself.

    Buffers (batch-norm running statistics) follow rank 0; parameters start
    equal because every rank builds the model from the same seed.
    """
    if not dist_utils.is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


@dataclass
class Step:
    """The per-model part of a training run: the only thing trainers write themselves.

    Attributes
    ----------
    optimizer
        Stepped once per step of :attr:`batches`.
    batches
        ``batches(epoch)``: the epoch's steps, each a sequence of items (episodes,
        batches) whose gradients are summed into one update.
    loss
        ``loss(net, item, (epoch, step, index))``: see :data:`LossFn`.
    summarize
        ``summarize(epoch, means)``: the history row from the epoch's mean numbers.
    validate
        ``validate(epoch)`` -> (loss that selects the best epoch, entries for the
        history row); None: no validation, the last epoch is kept.
    before_epoch
        Called at the start of each epoch (e.g. to set the learning rate).
    """

    optimizer: torch.optim.Optimizer
    batches: Callable[[int], Sequence[Sequence[Any]]]
    loss: LossFn
    summarize: Callable[[int, np.ndarray], dict[str, Any]]
    validate: Callable[[int], tuple[float, dict[str, Any]]] | None = None
    before_epoch: Callable[[int], None] | None = None


@dataclass
class Tally:
    """Progress over a whole run (several calls of :func:`run_epochs` for stages).

    ``progress("train", steps, total_steps)`` follows each optimizer step and
    ``progress("epoch", epochs, total_epochs)`` each epoch; ``cancel`` is polled
    before each step and raises :class:`~phenoadapt.errors.Cancelled` with
    ``cancelled_message``.
    """

    total_steps: int
    total_epochs: int
    progress: ProgressFn | None = None
    cancel: CancelFn | None = None
    cancelled_message: str = "Training was cancelled."
    steps: int = 0
    epochs: int = 0

    def check_cancel(self) -> None:
        """Raise :class:`~phenoadapt.errors.Cancelled` when the caller asked to stop."""
        if self.cancel is not None and self.cancel():
            raise Cancelled(self.cancelled_message)

    def step_done(self) -> None:
        """Count an optimizer step and report it."""
        self.steps += 1
        if self.progress is not None:
            self.progress("train", self.steps, self.total_steps)

    def epoch_done(self) -> None:
        """Count an epoch and report it."""
        self.epochs += 1
        if self.progress is not None:
            self.progress("epoch", self.epochs, self.total_epochs)


@dataclass
class Outcome:
    """What :func:`run_epochs` did; the model then holds the best (or last) weights."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0  # 1-based; 0 when no validation loss ever improved
    best_loss: float | None = None  # None without validation
    stopped_early: bool = False


def _accumulate(net: nn.Module, model: nn.Module, step: Step, items: Sequence[Any],
                keys: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """Forward and backward this rank's share of one step's items; the summed numbers."""
    parallel = net is not model
    world, rank = (dist_utils.world_size(), dist_utils.rank()) if parallel else (1, 0)
    mine = list(enumerate(items))[rank::world]
    sums: np.ndarray | float = 0.0
    for j, (index, item) in enumerate(mine):
        # DDP all-reduces gradients on every backward unless told not to: only the last.
        last = j == len(mine) - 1
        with contextlib.nullcontext() if last or not parallel else net.no_sync():
            loss, numbers = step.loss(net, item, (*keys, index))
            # DDP averages gradients over ranks; scaling by world / n makes the
            # update the mean over all n items of the step, as in one process.
            (loss * (world / len(items))).backward()
        sums = sums + numbers
    return np.asarray(sums, dtype=np.float64)


def _train_epoch(
    net: nn.Module, model: nn.Module, step: Step, epoch: int, tally: Tally
) -> np.ndarray:
    """One epoch of optimizer steps; the mean recorded numbers over all items (all ranks)."""
    net.train()
    sums: np.ndarray | float = 0.0
    n_items = 0
    for s, items in enumerate(step.batches(epoch)):
        tally.check_cancel()
        step.optimizer.zero_grad(set_to_none=True)
        sums = sums + _accumulate(net, model, step, items, (epoch, s))
        n_items += len(items)
        step.optimizer.step()
        tally.step_done()
    total = np.atleast_1d(np.asarray(sums, dtype=np.float64))
    if net is not model:
        total = dist_utils.all_reduce_sum(torch.as_tensor(total)).numpy()
    return total / max(n_items, 1)


def run_epochs(
    model: nn.Module,
    step: Step,
    epochs: int,
    tally: Tally,
    *,
    patience: int | None = None,
    net: nn.Module | None = None,
) -> Outcome:
    """Train ``model`` for up to ``epochs`` epochs, keeping the best validation state.

    Parameters
    ----------
    model
        The network, trained in place.  At the end it holds the weights of the
        epoch with the lowest validation loss (the last epoch's without
        validation); in a torchrun job rank 0's weights are given to every rank.
    step
        The per-model part (:class:`Step`).
    epochs
        Epoch limit.
    tally
        Progress and cancel hooks, counted over the whole run.
    patience
        Stop after this many epochs without a better validation loss; None: run
        every epoch.
    net
        ``model`` wrapped by :func:`data_parallel` in a torchrun job: each rank
        then takes its share of every step's items.

    Returns
    -------
    Outcome
    """
    net = model if net is None else net
    outcome = Outcome(best_loss=None if step.validate is None else math.inf)
    best_state, waited = None, 0
    for epoch in range(epochs):
        started = time.perf_counter()
        if step.before_epoch is not None:
            step.before_epoch(epoch)
        record = step.summarize(epoch, _train_epoch(net, model, step, epoch, tally))
        if step.validate is not None:
            loss, entries = step.validate(epoch)
            record.update(entries)
            if loss < outcome.best_loss:
                outcome.best_loss, outcome.best_epoch, waited = loss, epoch + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
        else:
            outcome.best_epoch = epoch + 1
        record["seconds"] = time.perf_counter() - started
        outcome.history.append(record)
        tally.epoch_done()
        if step.validate is not None and patience is not None and waited >= patience:
            outcome.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    # Running statistics may differ between ranks (each normalized its own
    # episodes); rank 0's are the ones written, so give them to everyone.
    dist_utils.broadcast_state(model)
    return outcome
