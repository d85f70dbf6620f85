r"""PhenoProfiler's three objectives and its trainer (stepwise or joint).

Losses, for a batch of embeddings :math:`E` (``n x d``), profile targets
:math:`P` (``n x d``) and treatment logits:

- **MSE**: :math:`\lVert E - P \rVert^2` averaged over entries - the embedding
  regresses onto the morphology profile of its image's site;
- **contrastive** (CLIP-style, soft targets): logits :math:`E P^\top / \tau`,
  soft targets :math:`\mathrm{softmax}\big((E E^\top + P P^\top) / (2\tau)\big)`
  row by row, cross-entropy of each image's row against its targets.  Images
  whose profiles (or embeddings) are alike share probability mass instead of
  being forced apart as they would be with one-hot targets - which matters here,
  where every cell of a site has the same profile and replicate wells are
  near-identical.  As in the published code the loss runs from images to
  profiles (``symmetric=True`` adds the profile-to-image direction) and
  :math:`\tau = 1`.  The targets are treated as fixed soft labels (no gradient
  flows through them): with gradients, the model could lower the loss by
  sharpening or flattening the targets rather than by matching them;
- **cross-entropy** over treatment classes (compound at dose).

Total: ``1 x contrastive + 100 x MSE + 0.1 x cross-entropy`` (the paper's
weights; :class:`LossWeights`).

Training (:func:`train_phenoprofiler`): ``schedule="stepwise"`` (published)
trains the MSE term alone for ``mse_epochs``, then all three terms from the
best stage-1 weights for ``epochs`` with a fresh optimizer and learning-rate
schedule; ``schedule="joint"`` trains all three from the start (the paper's open
question).  AdamW (lr 1e-3, weight decay 1e-3) with the published step
schedule: x0.5 at epoch 20, x0.1 at 50, x0.05 at 100.

Batches are either random images mixed across plates (``plate_context=False``,
as published) or *plate episodes* (``plate_context=True``): the treated and
control images of one plate forwarded together in train-mode batch norm, so
the network learns to embed after normalizing with one plate's statistics -
the ARM-BN / CS-ARM-BN training that makes plate-context statistics
(:mod:`phenoadapt.adapt.batchnorm`) the right thing to use at embedding time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from phenoadapt.errors import OptionError

from ..adapt.batchnorm import batchnorm_layers, preserved_state
from ..cells.params import SegmentationParams
from ..nn.runtime import autocast, select_device, to_device, use_amp, use_channels_last
from ..progress import CancelFn, ProgressFn
from ._loop import (
    Step,
    Tally,
    place_for_training,
    restore_after_training,
    run_epochs,
    step_generator,
)
from .augment import augment, center_crop
from .checkpoint import CheckpointMetadata, save_checkpoint
from .phenoprofiler_data import EmbedderData, ProfileTargets
from .samplers import PlateEpisodeSampler

SCHEDULES = ("stepwise", "joint")
STAGE_MSE = "mse"
STAGE_ALL = "all"
KIND = "embedder"


# --------------------------------------------------------------------------- losses


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three objectives (defaults: the paper's 1, 100, 0.1)."""

    contrastive: float = 1.0
    mse: float = 100.0
    classification: float = 0.1


class LossTerms(NamedTuple):
    """The weighted total and the three unweighted terms of one batch."""

    total: torch.Tensor
    contrastive: torch.Tensor
    mse: torch.Tensor
    classification: torch.Tensor


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j targets_ij log softmax(logits)_ij``."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def contrastive_targets(
    embeddings: torch.Tensor, profiles: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Soft targets ``softmax((E E^T + P P^T) / (2 tau))`` row by row, without gradient."""
    with torch.no_grad():
        similarity = (embeddings @ embeddings.T + profiles @ profiles.T) / (2.0 * temperature)
        return F.softmax(similarity, dim=1)


def contrastive_loss(
    embeddings: torch.Tensor,
    profiles: torch.Tensor,
    temperature: float = 1.0,
    symmetric: bool = False,
) -> torch.Tensor:
    """CLIP-style loss between embeddings and profiles with soft targets.

    Parameters
    ----------
    embeddings, profiles
        ``(n, d)`` tensors; row ``i`` of both belongs to image ``i``.
    temperature
        :math:`\\tau` (1 in the paper).
    symmetric
        Average the image-to-profile and profile-to-image directions (CLIP);
        False: image-to-profile only (the published code).
    """
    if temperature <= 0:
        raise OptionError(f"The temperature must be positive, got {temperature}.")
    logits = embeddings @ profiles.T / temperature
    targets = contrastive_targets(embeddings, profiles, temperature)
    loss = soft_cross_entropy(logits, targets)
    if symmetric:
        # The similarity behind the targets is symmetric, so the profile-to-image
        # rows get the same (row-normalized) targets.
        loss = (loss + soft_cross_entropy(logits.T, targets)) / 2
    return loss


def phenoprofiler_loss(
    embeddings: torch.Tensor,
    logits: torch.Tensor,
    profiles: torch.Tensor,
    labels: torch.Tensor,
    *,
    weights: LossWeights = LossWeights(),
    stage: str = STAGE_ALL,
    temperature: float = 1.0,
    symmetric: bool = False,
) -> LossTerms:
    """The weighted loss of one batch.

    ``stage="mse"`` makes the total the weighted MSE alone (stage 1 of stepwise
    training); the other terms are still returned, detached, for the record.
    """
    mse = F.mse_loss(embeddings, profiles)
    contrastive = contrastive_loss(embeddings, profiles, temperature, symmetric)
    classification = F.cross_entropy(logits, labels)
    if stage == STAGE_MSE:
        total = weights.mse * mse
        contrastive, classification = contrastive.detach(), classification.detach()
    elif stage == STAGE_ALL:
        total = (
            weights.contrastive * contrastive
            + weights.mse * mse
            + weights.classification * classification
        )
    else:
        raise OptionError(f"Unknown training stage {stage!r}: use {STAGE_MSE!r} or {STAGE_ALL!r}.")
    return LossTerms(total, contrastive, mse, classification)


# --------------------------------------------------------------------------- configuration


@dataclass
class EmbedderTrainConfig:
    """Settings of a PhenoProfiler training run (stored in the checkpoint).

    Attributes
    ----------
    schedule
        ``"stepwise"`` (MSE alone, then all three) or ``"joint"``.
    mse_epochs
        Epochs of the MSE-only stage (stepwise only).
    epochs
        Epochs with all three losses.
    batch_size
        Images per batch (200 in the paper).  With ``plate_context`` a batch is
        ``batch_size - controls_per_batch`` treated and ``controls_per_batch``
        control images of one plate.
    lr, weight_decay
        AdamW settings.
    lr_steps
        ``(epoch, factor)`` pairs: from that epoch (0-based, counted within a
        stage) on, the learning rate is ``lr x factor``.
    weights, temperature, symmetric_contrastive
        Loss settings (see :func:`phenoprofiler_loss`).
    plate_context
        Plate episodes in train-mode batch norm instead of mixed batches.
    controls_per_batch
        Control images per plate episode.
    input_size, flip, rot90
        Augmentation: random crop (centre crop when embedding), flips, quarter turns.
    seed
        Seed of batches, augmentation, dropout.
    device, amp, channels_last
        Where and how to run (None: bfloat16 autocast and channels-last on CUDA only).
    max_steps_per_epoch
        Cap on batches per epoch (quick runs).
    """

    schedule: str = "stepwise"
    mse_epochs: int = 10
    epochs: int = 30
    batch_size: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-3
    lr_steps: tuple[tuple[int, float], ...] = ((20, 0.5), (50, 0.1), (100, 0.05))
    weights: LossWeights = field(default_factory=LossWeights)
    temperature: float = 1.0
    symmetric_contrastive: bool = False
    plate_context: bool = False
    controls_per_batch: int = 64
    input_size: int | None = None
    flip: bool = True
    rot90: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule {self.schedule!r}: use one of {SCHEDULES}.")
        if self.epochs < 1 or (self.schedule == "stepwise" and self.mse_epochs < 1):
            raise ValueError("epochs (and mse_epochs for stepwise training) must be >= 1.")
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 (a contrastive loss needs pairs), got {self.batch_size}."
            )
        if self.plate_context and not 0 <= self.controls_per_batch < self.batch_size:
            raise ValueError(
                f"controls_per_batch ({self.controls_per_batch}) must be in [0, batch_size "
                f"({self.batch_size})) so that plate episodes keep treated images."
            )
        if self.lr <= 0 or self.weight_decay < 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be > 0 and weight_decay >= 0.")
        self.lr_steps = tuple((int(e), float(f)) for e, f in self.lr_steps)
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)

    def stages(self) -> list[tuple[str, int]]:
        """``(stage, epochs)`` in training order."""
        if self.schedule == "stepwise":
            return [(STAGE_MSE, self.mse_epochs), (STAGE_ALL, self.epochs)]
        return [(STAGE_ALL, self.epochs)]

    def lr_at(self, epoch: int) -> float:
        """Learning rate of a stage's 0-based ``epoch``."""
        factor = 1.0
        for start, f in sorted(self.lr_steps):
            if epoch >= start:
                factor = f
        return self.lr * factor


@dataclass
class EmbedderTrainResult:
    """Outcome of :func:`train_phenoprofiler`; ``model`` holds the final weights."""

    model: nn.Module
    config: EmbedderTrainConfig
    history: list[dict[str, Any]]
    best_epochs: dict[str, int]
    classes: tuple[str, ...]
    channel_names: tuple[str, ...]
    training_plates: list[str]
    validation_plates: list[str]
    targets: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """Summary of the last stage's selected epoch."""
        last_stage = self.config.stages()[-1][0]
        best = self.best_epochs.get(last_stage, 0)
        rows = [r for r in self.history if r["stage"] == last_stage and r["epoch"] == best]
        record = rows[0] if rows else {}
        return {
            "best_epochs": dict(self.best_epochs),
            "epochs_run": len(self.history),
            **{k: v for k, v in record.items() if k not in ("epoch", "stage")},
        }

    def checkpoint_metadata(
        self,
        crop_size: int | None = None,
        unit: str = "cell",
        crop_scale: float = 1.0,
        segmentation: SegmentationParams | None = None,
        **extra: Any,
    ) -> CheckpointMetadata:
        """Metadata for :func:`~.checkpoint.save_checkpoint`.

        ``unit`` says what one image is (``"cell"`` crops or ``"site"`` tiles,
        ``crop_size`` their side); ``crop_scale`` and ``segmentation`` how the
        crops were cut: they make the model-input contract
        (:class:`~phenoadapt.model_input.ModelInput`).  ``extra`` is stored as
        free-form notes.  The method is the batch-norm procedure to use when
        embedding: ``cs-arm-bn`` after plate-context training, ``erm`` (running
        statistics) otherwise.
        """
        model = getattr(self.model, "module", self.model)
        meta = CheckpointMetadata(
            network=model.spec() if hasattr(model, "spec") else {},
            classes=self.classes,
            channel_names=self.channel_names,
            method="cs-arm-bn" if self.config.plate_context else "erm",
            crop_size=crop_size,
            input_size=self.config.input_size,
            training_plates=tuple(self.training_plates),
            validation_plates=tuple(self.validation_plates),
            metrics=self.metrics(),
            training=asdict(self.config),
            extra={"kind": KIND, "targets": self.targets, **extra},
        )
        cells = unit == "cell"
        meta.model_input = replace(
            meta.model_input, unit=unit, crop_scale=float(crop_scale) if cells else 1.0,
            segmentation=segmentation if cells else None,
        )  # fmt: skip
        return meta


# --------------------------------------------------------------------------- batches


def _epoch_rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _mixed_batches(
    data: EmbedderData, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Usable images in random order, split into near-equal batches (none tiny)."""
    usable = data.usable
    k = max(1, math.ceil(len(usable) / batch_size))
    return [np.sort(b) for b in np.array_split(rng.permutation(usable), k)]


class _Batches:
    """The batches of every epoch: mixed across plates, or plate episodes."""

    def __init__(self, data: EmbedderData, config: EmbedderTrainConfig, seed: int) -> None:
        self.data = data
        self.config = config
        self.seed = seed
        self.sampler: PlateEpisodeSampler | None = None
        if config.plate_context:
            table = data.table.iloc[data.usable]
            self.positions = data.usable
            self.sampler = PlateEpisodeSampler(
                table.reset_index(drop=True), config.batch_size - config.controls_per_batch,
                config.controls_per_batch, plates_per_step=1, seed=seed,
            )  # fmt: skip

    def epoch(self, stage: int, epoch: int) -> list[np.ndarray]:
        if self.sampler is None:
            rng = _epoch_rng(self.seed, stage, epoch)
            return _mixed_batches(self.data, self.config.batch_size, rng)
        # The sampler numbers positions within the usable rows.
        steps = self.sampler.steps(epoch + 1000 * stage)
        return [self.positions[np.sort(step[0].positions)] for step in steps]


# --------------------------------------------------------------------------- training


@dataclass
class _Run:
    """What every step of a run needs."""

    model: nn.Module
    config: EmbedderTrainConfig
    device: torch.device
    amp: bool
    channels_last: bool


def _batch_terms(
    run: _Run, data: EmbedderData, positions: np.ndarray, stage: str,
    generator: torch.Generator | None,
) -> LossTerms:  # fmt: skip
    x, labels, targets = data.batch(positions)
    if generator is not None:
        cfg = run.config
        x = augment(x, generator, crop_size=cfg.input_size, flip=cfg.flip, rot90=cfg.rot90)
    elif run.config.input_size is not None:
        x = center_crop(x, run.config.input_size)
    with autocast(run.device, run.amp):
        embeddings, logits = run.model.outputs(to_device(x, run.device, run.channels_last))
    cfg = run.config
    return phenoprofiler_loss(
        embeddings.float(), logits.float(), targets.to(run.device), labels.to(run.device),
        weights=cfg.weights, stage=stage, temperature=cfg.temperature,
        symmetric=cfg.symmetric_contrastive,
    )  # fmt: skip


def _term_sums(terms: LossTerms) -> np.ndarray:
    return np.array([float(t.detach()) for t in terms])


def _validate(run: _Run, val: EmbedderData, batches: _Batches, stage: str) -> np.ndarray:
    """Mean loss terms on validation batches (deterministic, no gradient, model restored).

    Mixed batches run in eval mode with the running statistics; plate episodes
    in train-mode batch norm, i.e. with each episode's own statistics - the way
    the network will be used.
    """
    sums = np.zeros(4)
    steps = batches.epoch(0, 0)
    with preserved_state(run.model), torch.no_grad():
        run.model.eval()
        if run.config.plate_context:
            for layer in batchnorm_layers(run.model).values():
                layer.train()
        for positions in steps:
            sums += _term_sums(_batch_terms(run, val, positions, stage, None))
    return sums / max(len(steps), 1)


def _stage_step(
    run: _Run, train: EmbedderData, val: EmbedderData | None, batches: _Batches,
    val_batches: _Batches | None, s: int, stage: str, per_epoch: int,
) -> Step:  # fmt: skip
    """PhenoProfiler's part of the shared loop for stage number ``s``."""
    config = run.config
    optimizer = torch.optim.AdamW(
        run.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )

    def set_lr(epoch: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)

    def loss(_net: nn.Module, positions: np.ndarray, keys: tuple[int, int, int]):
        epoch, i, _ = keys
        terms = _batch_terms(run, train, positions, stage, step_generator(config.seed, s, epoch, i))
        return terms.total, _term_sums(terms)

    def validate(epoch: int) -> tuple[float, dict[str, Any]]:
        terms = _validate(run, val, val_batches, stage)
        return float(terms[0]), _record(stage, epoch, config.lr_at(epoch), "val", terms)

    return Step(
        optimizer=optimizer,
        # One batch per optimizer step.
        batches=lambda epoch: [[b] for b in batches.epoch(s, epoch)[:per_epoch]],
        loss=loss,
        summarize=lambda epoch, means: _record(stage, epoch, config.lr_at(epoch), "train", means),
        validate=validate if val is not None else None,
        before_epoch=set_lr,
    )


def _check(data: EmbedderData, model: nn.Module, what: str) -> None:
    if len(data.usable) < 2:
        raise ValueError(f"The {what} data have fewer than 2 usable images.")
    if not hasattr(model, "outputs"):
        raise TypeError("train_phenoprofiler needs a PhenoProfiler (a model with outputs()).")
    if int(data.images.shape[1]) != model.in_channels:
        raise ValueError(
            f"The {what} images have {int(data.images.shape[1])} channels but the model takes "
            f"{model.in_channels}."
        )
    if data.targets.shape[1] != model.embedding_dim:
        raise ValueError(
            f"The {what} targets have {data.targets.shape[1]} dimensions but the embedding "
            f"{model.embedding_dim}: fit ProfileTargets with dim={model.embedding_dim}."
        )
    if len(data.classes) != model.num_classes:
        raise ValueError(
            f"The {what} data have {len(data.classes)} classes but the model's head "
            f"{model.num_classes}."
        )


def train_phenoprofiler(
    model: nn.Module,
    train: EmbedderData,
    val: EmbedderData | None = None,
    config: EmbedderTrainConfig | None = None,
    *,
    targets: ProfileTargets | None = None,
    checkpoint_path: str | Path | None = None,
    crop_size: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> EmbedderTrainResult:
    """Train a :class:`~phenoadapt.nn.phenoprofiler.PhenoProfiler` in place.

    Parameters
    ----------
    model
        The network (input normalization fitted on training images).
    train, val
        Training data and optional held-out data; with ``val`` each stage keeps
        the weights of its epoch with the lowest validation loss (stage 2 starts
        from stage 1's best), without it the last epoch's.
    config
        :class:`EmbedderTrainConfig`.
    targets
        The fitted :class:`ProfileTargets` (only described in the checkpoint).
    checkpoint_path
        Where to write the final model (safetensors + JSON).
    crop_size
        Size of the training images, recorded in the checkpoint.
    progress
        ``progress("train", step, total_steps)`` after each batch and
        ``progress("epoch", epoch, total_epochs)`` after each epoch.
    cancel
        Polled before each batch; raises :class:`~phenoadapt.errors.Cancelled`.

    Returns
    -------
    EmbedderTrainResult
        History rows hold ``stage``, ``epoch``, ``lr``, the train (and val) loss
        and its three terms, and seconds.
    """
    config = config or EmbedderTrainConfig()
    _check(train, model, "training")
    if val is not None:
        _check(val, model, "validation")
        if val.classes != train.classes:
            raise ValueError("Validation and training data must use the same classes.")
    device = select_device(config.device)
    run = _Run(model, config, device, use_amp(device, config.amp),
               use_channels_last(device, config.channels_last))  # fmt: skip
    place_for_training(model, device, run.channels_last)
    batches = _Batches(train, config, config.seed)
    val_batches = _Batches(val, config, config.seed + 1) if val is not None else None
    stages = config.stages()
    per_epoch = len(batches.epoch(0, 0))
    if config.max_steps_per_epoch is not None:
        per_epoch = min(per_epoch, config.max_steps_per_epoch)
    total_epochs = sum(n for _, n in stages)
    tally = Tally(per_epoch * total_epochs, total_epochs, progress, cancel,
                  "PhenoProfiler training was cancelled.")  # fmt: skip
    history: list[dict[str, Any]] = []
    best_epochs: dict[str, int] = {}
    # Dropout draws from the global torch RNG: seed it, and give the caller's state back.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for s, (stage, n_epochs) in enumerate(stages):
            # Each stage starts from the previous one's best weights, with a fresh optimizer.
            step = _stage_step(run, train, val, batches, val_batches, s, stage, per_epoch)
            outcome = run_epochs(model, step, n_epochs, tally)
            history.extend(outcome.history)
            if outcome.best_epoch:
                best_epochs[stage] = outcome.best_epoch
    restore_after_training(model, run.channels_last)
    result = EmbedderTrainResult(
        model=model, config=config, history=history, best_epochs=best_epochs,
        classes=train.classes, channel_names=train.channel_names,
        training_plates=train.plates, validation_plates=[] if val is None else val.plates,
        targets={} if targets is None else targets.summary(),
    )  # fmt: skip
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, model, result.checkpoint_metadata(crop_size))
    return result


def _record(stage: str, epoch: int, lr: float, prefix: str, terms: np.ndarray) -> dict[str, Any]:
    names = ("loss", "contrastive", "mse", "classification")
    out: dict[str, Any] = {"stage": stage, "epoch": epoch + 1, "lr": lr}
    out.update({f"{prefix}_{n}": float(v) for n, v in zip(names, terms, strict=True)})
    return out
