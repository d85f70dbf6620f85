"""Trainers for ERM, ARM-BN and CS-ARM-BN, with validation on held-out plates.

=========== ==================================================================
method      one forward pass (episode)
=========== ==================================================================
erm         L treated cells mixed across plates; BN running statistics are
            updated and used at test time
arm-bn      L treated cells of one plate, train-mode BN: the network learns to
            classify after normalizing with one plate's statistics
cs-arm-bn   L treated + C controls of one plate in one pass: BN statistics pool
            both; controls are then dropped from the logits and the loss
=========== ==================================================================

Gradients are accumulated over P episodes per Adam step (defaults from the
paper: L = 64, C = 128, P = 8, lr 1e-3, no schedule, up to 200 epochs, early
stopping on the validation loss with patience 20).  Validation runs the
method's own test-time procedure (:mod:`phenoadapt.adapt.methods`) on held-out
plates, so early stopping selects what will actually be used.

On CUDA the forward runs under bfloat16 autocast with channels-last tensors; on
CPU in float32.  Training is deterministic given the seed and the model's
initial weights.  In a torchrun job (see :mod:`.distributed`) the same code runs
data-parallel and gives the single-process result up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from phenoadapt.errors import OptionError

from ..adapt.methods import (
    DEFAULT_CONTEXT_SIZE,
    DEFAULT_CONTROLS_PER_CONTEXT,
    DEFAULT_TREATED_PER_CONTEXT,
    TRAIN_METHODS,
    Context,
    Method,
    parse_method,
    plan_contexts,
    predict_contexts,
)
from ..nn.runtime import autocast, select_device, to_device, use_amp, use_channels_last
from ..progress import CancelFn, ProgressFn
from . import distributed as dist_utils
from ._loop import (
    Step,
    Tally,
    data_parallel,
    place_for_training,
    restore_after_training,
    run_epochs,
    step_generator,
)
from .abra import AbraConfig, abra_loss
from .augment import augment
from .checkpoint import CheckpointMetadata, save_checkpoint
from .data import CellData
from .samplers import Episode, MixedBatchSampler, PlateEpisodeSampler


@dataclass
class TrainConfig:
    """Settings of a training run (stored in the checkpoint).

    Attributes
    ----------
    method
        ``"erm"``, ``"arm-bn"`` or ``"cs-arm-bn"``.
    max_epochs, patience
        Epoch limit and early-stopping patience (epochs without a better
        validation loss).  Without validation data all epochs run.
    lr, weight_decay
        Adam settings.
    treated_per_episode, controls_per_episode, plates_per_step
        L, C and P (see :mod:`.samplers`); C is ignored except for CS-ARM-BN.
    input_size
        Random crop size in training (centre crop at validation and test);
        None uses crops whole.
    flip, rot90
        Random flips and quarter turns.
    seed
        Seed of the episode sampler and the augmentation.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``... (a torchrun job uses its rank's device).
    amp, channels_last
        None: on for CUDA, off for CPU.
    val_method
        Test-time method used for validation; None = the training method's own.
    val_treated_per_context, val_controls_per_context, val_seed
        Validation contexts (None = the method's default size).
    eval_batch_size
        Batch size of validation prediction.
    max_steps_per_epoch
        Cap on steps per epoch (quick runs); None = a full pass over treated cells.
    abra
        ABRA settings (:class:`~.abra.AbraConfig`): adversarial feature-statistics
        perturbations and an angular margin on top of ``method``'s episodes; needs
        an :class:`~phenoadapt.nn.abra.AbraClassifier`.  None = plain cross-entropy.
    """

    method: str = "cs-arm-bn"
    max_epochs: int = 200
    patience: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    treated_per_episode: int = DEFAULT_TREATED_PER_CONTEXT
    controls_per_episode: int = DEFAULT_CONTROLS_PER_CONTEXT
    plates_per_step: int = 8
    input_size: int | None = None
    flip: bool = True
    rot90: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    val_method: str | None = None
    val_treated_per_context: int | None = None
    val_controls_per_context: int = DEFAULT_CONTROLS_PER_CONTEXT
    val_seed: int = 0
    eval_batch_size: int = 256
    max_steps_per_epoch: int | None = None
    abra: AbraConfig | None = None

    def __post_init__(self) -> None:
        method = parse_method(self.method)
        if method not in TRAIN_METHODS:
            raise OptionError(
                f"Cannot train with {method.value!r}: train 'erm' (then adapt with 'adabn' or "
                "'ben' at test time), 'arm-bn' or 'cs-arm-bn'."
            )
        self.method = method.value
        if self.val_method is not None:
            self.val_method = parse_method(self.val_method).value
        self.abra = AbraConfig.from_value(self.abra)
        if self.max_epochs < 1 or self.patience < 1 or self.lr <= 0:
            raise OptionError("max_epochs and patience must be >= 1 and lr > 0.")

    @property
    def test_method(self) -> Method:
        """Test-time method used for validation."""
        return parse_method(self.val_method or self.method)


@dataclass
class Evaluation:
    """Loss and accuracy of adapted predictions on labelled cells."""

    loss: float
    accuracy: float
    n_cells: int
    per_plate: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    """Outcome of :func:`train_model`; ``model`` holds the best weights."""

    model: nn.Module
    config: TrainConfig
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float | None
    stopped_early: bool
    training_plates: list[str]
    validation_plates: list[str]
    classes: tuple[str, ...]
    channel_names: tuple[str, ...]

    def metrics(self) -> dict[str, Any]:
        """Summary metrics for the checkpoint."""
        last = self.history[self.best_epoch - 1] if self.history else {}
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "stopped_early": self.stopped_early,
            **{k: v for k, v in last.items() if k != "epoch"},
        }

    def checkpoint_metadata(self, crop_size: int | None = None) -> CheckpointMetadata:
        """Metadata describing this run, for :func:`~.checkpoint.save_checkpoint`."""
        model = getattr(self.model, "module", self.model)
        return CheckpointMetadata(
            network=model.spec() if hasattr(model, "spec") else {},
            classes=self.classes,
            channel_names=self.channel_names,
            method=self.config.method,
            crop_size=crop_size,
            input_size=self.config.input_size,
            training_plates=tuple(self.training_plates),
            validation_plates=tuple(self.validation_plates),
            metrics=self.metrics(),
            training=asdict(self.config),
        )


# --------------------------------------------------------------------------- evaluation


def evaluate_contexts(
    model: nn.Module,
    data: CellData,
    contexts: list[Context],
    *,
    input_size: int | None = None,
    batch_size: int = 256,
    amp: bool | None = None,
    cancel: CancelFn | None = None,
) -> Evaluation:
    """Cross-entropy and accuracy of the labelled cells predicted in ``contexts``.

    Each context is adapted separately; a cell predicted in several contexts
    (label-shift sampling) counts once per context.  In a distributed job the
    numbers are summed over ranks (each rank passes its own contexts).
    """
    outputs = predict_contexts(
        model, data.images, contexts, batch_size=batch_size, input_size=input_size,
        amp=amp, cancel=cancel,
    )  # fmt: skip
    loss_sum, correct, count = 0.0, 0, 0
    plate_counts: dict[str, list[int]] = {}
    for out in outputs:
        labels = data.labels[out.context.predict]
        keep = labels >= 0
        if not keep.any():
            continue
        probs = np.clip(out.probabilities[keep], 1e-12, 1.0)
        labels = labels[keep]
        loss_sum += float(-np.log(probs[np.arange(len(labels)), labels]).sum())
        hits = int((probs.argmax(axis=1) == labels).sum())
        correct += hits
        count += len(labels)
        tally = plate_counts.setdefault(out.context.plate, [0, 0])
        tally[0] += hits
        tally[1] += len(labels)
    totals = dist_utils.all_reduce_sum(
        torch.tensor([loss_sum, correct, count], dtype=torch.float64)
    )
    merged: dict[str, list[int]] = {}
    for part in dist_utils.all_gather_objects(plate_counts):
        for plate, (hits, n) in part.items():
            merged.setdefault(plate, [0, 0])
            merged[plate][0] += hits
            merged[plate][1] += n
    n_total = int(totals[2])
    return Evaluation(
        loss=float(totals[0] / n_total) if n_total else math.nan,
        accuracy=float(totals[1] / n_total) if n_total else math.nan,
        n_cells=n_total,
        per_plate={p: h / n for p, (h, n) in sorted(merged.items()) if n},
    )


def evaluate_plates(
    model: nn.Module,
    data: CellData,
    method: str | Method = "cs-arm-bn",
    *,
    treated_per_context: int | str | None = None,
    controls_per_context: int = DEFAULT_CONTROLS_PER_CONTEXT,
    min_controls: int = 1,
    seed: int = 0,
    input_size: int | None = None,
    batch_size: int = 256,
    amp: bool | None = None,
    cancel: CancelFn | None = None,
    context: str | None = None,
    context_size: int = DEFAULT_CONTEXT_SIZE,
) -> Evaluation:
    """Accuracy and loss of a test-time method on the treated cells of some plates.

    In a distributed job the plates are split across ranks and the metrics
    combined, so every rank gets the same numbers.  ``treated_per_context``,
    ``controls_per_context``, ``min_controls``, ``seed``, ``context`` and
    ``context_size`` choose the contexts (see :func:`phenoadapt.adapt.plan_contexts`).
    """
    plates = data.plates[dist_utils.rank() :: dist_utils.world_size()]
    local = data.subset(plates) if plates else None
    contexts = (
        plan_contexts(
            local.table,
            method,
            treated_per_context=treated_per_context,
            controls_per_context=controls_per_context,
            min_controls=min_controls,
            predict_controls=False,
            seed=seed,
            context=context,
            context_size=context_size,
        )  # fmt: skip
        if local is not None
        else []
    )
    return evaluate_contexts(
        model, local if local is not None else data, contexts, input_size=input_size,
        batch_size=batch_size, amp=amp, cancel=cancel,
    )  # fmt: skip


# --------------------------------------------------------------------------- training


def _sampler(data: CellData, config: TrainConfig) -> PlateEpisodeSampler | MixedBatchSampler:
    method = parse_method(config.method)
    if method is Method.ERM:
        return MixedBatchSampler(
            data.table, config.treated_per_episode, config.plates_per_step, config.seed
        )
    controls = config.controls_per_episode if method is Method.CS_ARM_BN else 0
    return PlateEpisodeSampler(
        data.table, config.treated_per_episode, controls, config.plates_per_step, config.seed
    )


def _episode_loss(
    model: nn.Module,
    data: CellData,
    episode: Episode,
    generator: torch.Generator,
    config: TrainConfig,
    device: torch.device,
    amp: bool,
    channels_last: bool,
) -> torch.Tensor:
    """Cross-entropy of the treated cells of one episode (controls only shape the BN statistics)."""
    # Augment on the training device (random numbers come from the CPU generator).
    x = augment(
        data.batch(episode.positions).to(device), generator, crop_size=config.input_size,
        flip=config.flip, rot90=config.rot90,
    )  # fmt: skip
    y = torch.as_tensor(data.labels[episode.treated], device=device)
    if config.abra is not None:  # min-max over feature statistics (see .abra)
        return abra_loss(model, to_device(x, device, channels_last), y, config.abra,
                         device=device, amp=amp).total  # fmt: skip
    with autocast(device, amp):
        logits = model(to_device(x, device, channels_last))
    # Controls are forwarded with the treated cells (pooled BN statistics) but
    # carry no label: mask them out of the logits before the loss.
    return F.cross_entropy(logits[: len(episode.treated)].float(), y)


def _check_data(data: CellData, what: str) -> None:
    if not (data.labels >= 0).any():
        raise OptionError(f"The {what} data have no labelled (treated) cells.")


def _check_inputs(train: CellData, val: CellData | None, config: TrainConfig) -> None:
    _check_data(train, "training")
    if val is not None:
        _check_data(val, "validation")
        if val.classes != train.classes:
            raise OptionError(
                f"Validation classes {val.classes} differ from training {train.classes}."
            )
    world = dist_utils.world_size()
    if config.plates_per_step % world:
        raise OptionError(
            f"plates_per_step ({config.plates_per_step}) must be a multiple of the number of "
            f"processes ({world}) so that every rank gets the same number of episodes per step."
        )
    if config.abra is not None and dist_utils.is_distributed():
        raise OptionError(
            "ABRA training runs in a single process: its adversary needs several forward "
            "passes per backward, which DistributedDataParallel does not allow. Run it "
            "without torchrun."
        )


def _training_device(config: TrainConfig) -> torch.device:
    device = select_device(config.device)
    if dist_utils.is_distributed() and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _classifier_step(
    model: nn.Module, train: CellData, val: CellData | None, config: TrainConfig,
    device: torch.device, cancel: CancelFn | None,
) -> tuple[Step, int]:  # fmt: skip
    """The classifier's part of the shared loop, and the number of steps per epoch."""
    amp = use_amp(device, config.amp)
    channels_last = use_channels_last(device, config.channels_last)
    sampler = _sampler(train, config)
    steps_per_epoch = sampler.steps_per_epoch()
    if config.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)

    def loss(net: nn.Module, episode: Episode, keys: tuple[int, int, int]):
        value = _episode_loss(
            net, train, episode, step_generator(config.seed, *keys), config, device, amp,
            channels_last,
        )  # fmt: skip
        return value, np.array([float(value.detach())])

    def validate(_epoch: int) -> tuple[float, dict[str, float]]:
        result = evaluate_plates(
            model, val, config.test_method, treated_per_context=config.val_treated_per_context,
            controls_per_context=config.val_controls_per_context, seed=config.val_seed,
            input_size=config.input_size, batch_size=config.eval_batch_size, amp=amp,
            cancel=cancel,
        )  # fmt: skip
        return result.loss, {"val_loss": result.loss, "val_accuracy": result.accuracy}

    step = Step(
        optimizer=torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        ),
        batches=lambda epoch: sampler.steps(epoch)[:steps_per_epoch],
        loss=loss,
        summarize=lambda epoch, means: {"epoch": epoch + 1, "train_loss": float(means[0])},
        validate=validate if val is not None else None,
    )
    return step, steps_per_epoch


def train_model(
    model: nn.Module,
    train: CellData,
    val: CellData | None = None,
    config: TrainConfig | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    crop_size: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> TrainResult:
    """Train a classifier with ERM, ARM-BN or CS-ARM-BN (optionally ABRA).

    The epochs, early stopping, best state, progress, cancel and data
    parallelism are the shared loop's (:func:`._loop.run_epochs`); this
    function gives it the episodes, their loss and the validation.

    Parameters
    ----------
    model
        A classifier built with :mod:`phenoadapt.nn` (input normalization fitted
        on training crops); trained in place and returned in the result with the
        weights of the best validation epoch.
    train, val
        Training and held-out validation plates.
    config
        :class:`TrainConfig` (defaults: CS-ARM-BN with the paper's settings).
    checkpoint_path
        Where to write the best model at the end (rank 0 only in a torchrun job).
    crop_size
        Size of the training crops, recorded in the checkpoint.
    progress
        ``progress("train", step, total_steps)`` after each optimizer step and
        ``progress("epoch", epoch, max_epochs)`` after each epoch.
    cancel
        Polled before each step; raises :class:`~phenoadapt.errors.Cancelled`.
        (In a torchrun job every rank must see the same answer.)

    Returns
    -------
    TrainResult
    """
    config = config or TrainConfig()
    _check_inputs(train, val, config)
    device = _training_device(config)
    channels_last = use_channels_last(device, config.channels_last)
    place_for_training(model, device, channels_last)
    step, steps_per_epoch = _classifier_step(model, train, val, config, device, cancel)
    tally = Tally(steps_per_epoch * config.max_epochs, config.max_epochs, progress, cancel)
    outcome = run_epochs(
        model, step, config.max_epochs, tally, patience=config.patience,
        net=data_parallel(model, device),
    )  # fmt: skip
    restore_after_training(model, channels_last)
    result = TrainResult(
        model=model,
        config=config,
        history=outcome.history,
        best_epoch=outcome.best_epoch,
        best_val_loss=outcome.best_loss,
        stopped_early=outcome.stopped_early,
        training_plates=train.plates,
        validation_plates=[] if val is None else val.plates,
        classes=train.classes,
        channel_names=train.channel_names,
    )
    if checkpoint_path is not None and dist_utils.is_main_process():
        save_checkpoint(checkpoint_path, model, result.checkpoint_metadata(crop_size))
    dist_utils.barrier()
    return result
