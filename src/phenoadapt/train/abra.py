"""ABRA training: a min-max game over feature statistics, with an angular margin and alignment.

One ABRA episode (the same ERM minibatch or plate episode the other methods use):

1. **Inner max (the adversary).**  Starting from zero, per-image, per-channel
   offsets of the feature mean and std at the perturbation points of an
   :class:`~phenoadapt.nn.abra.AbraClassifier` take ``steps`` signed-gradient
   ascent steps of size ``step_size`` on the margin cross-entropy of the
   labelled cells, each step projected back into the L-infinity ball of radius
   ``epsilon`` (projected gradient ascent, Madry et al. 2018).  Offsets are in
   units of the batch's spread of each statistic (see
   :class:`~phenoadapt.nn.abra.FeatureStatPerturbation`).
2. **Outer min.**  The network is trained on
   ``(1 - adv_weight) * CE_m(clean) + adv_weight * CE_m(perturbed)
   + align_weight * alignment(clean, perturbed)``, where ``CE_m`` is the
   cross-entropy of the angular-margin logits.

Choices (the paper publishes none; see ``docs/abra.md`` for the reasoning):

- Batch-norm running statistics are updated by the clean pass only: the
  adversary's passes run with ``track_running_stats`` off (batch statistics,
  no update), so a model trained with ABRA keeps clean training statistics for
  test-time ERM.
- The alignment is computed on L2-normalized pooled features (the geometry the
  angular head sees), with the clean features as a fixed target (stop-gradient):
  a per-cell cosine consistency term plus a moment-matching term on the batch
  mean and per-dimension std.  The std term is what prevents collapse: the
  cheapest way for a network to ignore perturbed statistics is to squash its
  features, and matching the clean spread forbids that.  Controls in a
  CS-ARM-BN episode have no label but do enter the alignment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from phenoadapt.errors import OptionError

from ..adapt.batchnorm import preserved_state
from ..nn.runtime import autocast

ALIGNMENTS = ("cosine", "moments", "cosine+moments", "none")


@dataclass
class AbraConfig:
    """Settings of the ABRA min-max game (stored with the training settings).

    Attributes
    ----------
    epsilon
        L-infinity bound on the offsets, in batch standard deviations of each
        statistic (0 turns the adversary off: margin training only).
    steps
        K, gradient-ascent steps of the adversary per episode (0 = no adversary).
    step_size
        Ascent step; None = ``2.5 * epsilon / steps`` capped at ``epsilon``
        (one step is then FGSM; several reach the boundary and can move along it).
    adv_weight
        Weight of the perturbed cross-entropy; the clean one gets ``1 - adv_weight``.
    align_weight
        Weight of the alignment loss.
    alignment
        ``"cosine+moments"`` (default), ``"cosine"``, ``"moments"`` or ``"none"``.
    """

    epsilon: float = 1.0
    steps: int = 1
    step_size: float | None = None
    adv_weight: float = 0.5
    align_weight: float = 1.0
    alignment: str = "cosine+moments"

    def __post_init__(self) -> None:
        if self.epsilon < 0 or self.steps < 0:
            raise OptionError(
                f"ABRA epsilon and steps must be >= 0, got {self.epsilon} and {self.steps}."
            )
        if self.step_size is not None and self.step_size <= 0:
            raise OptionError(f"ABRA step_size must be > 0, got {self.step_size}.")
        if not 0 <= self.adv_weight <= 1 or self.align_weight < 0:
            raise OptionError("ABRA adv_weight must lie in [0, 1] and align_weight be >= 0.")
        if self.alignment not in ALIGNMENTS:
            raise OptionError(
                f"Unknown ABRA alignment {self.alignment!r}: use one of {ALIGNMENTS}."
            )

    @property
    def attacks(self) -> bool:
        """Whether the adversary runs at all."""
        return self.epsilon > 0 and self.steps > 0

    @property
    def ascent_step(self) -> float:
        """The step size actually used."""
        if self.step_size is not None:
            return float(self.step_size)
        return min(self.epsilon, 2.5 * self.epsilon / max(self.steps, 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return asdict(self)

    @classmethod
    def from_value(cls, value: AbraConfig | dict[str, Any] | None) -> AbraConfig | None:
        """An :class:`AbraConfig` from itself, its dict (a checkpoint's settings) or None."""
        if value is None or isinstance(value, AbraConfig):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"ABRA settings must be an AbraConfig or a dict, got {type(value)}.")


# --------------------------------------------------------------------------- losses


def alignment_loss(
    clean: torch.Tensor, perturbed: torch.Tensor, kind: str = "cosine+moments"
) -> torch.Tensor:
    """Distance between clean and perturbed pooled features (clean is the fixed target).

    Parameters
    ----------
    clean, perturbed
        ``(n, d)`` pooled features of the same cells; ``clean`` is detached here.
    kind
        ``"cosine"``: mean of ``1 - cos(clean_i, perturbed_i)``;
        ``"moments"``: squared distance of the batch mean and per-dimension std of
        the L2-normalized features (summed over dimensions);
        ``"cosine+moments"``: their sum; ``"none"``: zero.

    Returns
    -------
    torch.Tensor
        A scalar, 0 when the two are identical.
    """
    if kind not in ALIGNMENTS:
        raise OptionError(f"Unknown alignment {kind!r}: use one of {ALIGNMENTS}.")
    target = F.normalize(clean.detach().float(), dim=1)
    moved = F.normalize(perturbed.float(), dim=1)
    loss = moved.new_zeros(())
    if kind in ("cosine", "cosine+moments"):
        loss = loss + (1.0 - (target * moved).sum(dim=1)).mean()
    if kind in ("moments", "cosine+moments"):
        loss = loss + (moved.mean(0) - target.mean(0)).pow(2).sum()
        if len(moved) > 1:
            loss = loss + (moved.std(0) - target.std(0)).pow(2).sum()
    return loss


def _require_abra_model(model: nn.Module) -> None:
    if not (hasattr(model, "perturbations") and hasattr(model, "margin_logits")):
        raise OptionError(
            f"ABRA training needs a network with feature-statistics perturbation points and an "
            f"angular head, got {type(model).__name__}: build it with "
            "phenoadapt.nn.build_abra(AbraNetConfig(resnet=...))."
        )


def _features_and_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, amp: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of all cells and the margin cross-entropy of the first ``len(y)``."""
    with autocast(device, amp):
        features = model.embed(x)
    logits = model.margin_logits(features[: len(y)].float(), y)
    return features, F.cross_entropy(logits, y)


@contextlib.contextmanager
def untracked_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Train-mode batch norm that normalizes with batch statistics but updates no running ones.

    The adversary's passes must not move the running statistics (test-time ERM
    uses them), and must not modify them in place either: the clean pass of the
    same episode saved them for its backward.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    tracked = [m.track_running_stats for m in layers]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield model
    finally:
        for layer, flag in zip(layers, tracked, strict=True):
            layer.track_running_stats = flag


def _set_offsets(model: nn.Module, offsets: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    for name, module in model.perturbations.items():
        module.set_offsets(*offsets[name])


def _stage_channels(model: nn.Module, x: torch.Tensor, device: torch.device, amp: bool) -> dict:
    """Channels of the feature map at each perturbation point (from a pass of one image)."""
    shapes: dict[str, int] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, args, _out, name=name: shapes.__setitem__(name, args[0].shape[1])
        )
        for name, module in model.perturbations.items()
    ]
    try:
        with preserved_state(model), torch.no_grad(), autocast(device, amp):
            model.eval()
            model.embed(x[:2])
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def adversarial_offsets(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: AbraConfig,
    *,
    device: torch.device | None = None,
    amp: bool = False,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The adversary: offsets that (locally) maximize the margin cross-entropy.

    Parameters
    ----------
    model
        An :class:`~phenoadapt.nn.abra.AbraClassifier` in training mode.
    x
        One pass of images ``(n, C, h, w)``: labelled cells first.
    y
        Labels of the first ``len(y)`` images.
    config
        Bound, steps and step size.
    device, amp
        Device (default: the images') and bfloat16 autocast.

    Returns
    -------
    dict
        Stage -> (``delta_mu``, ``delta_sigma``), each ``(n, channels)``, detached,
        with every entry in ``[-epsilon, epsilon]``.  The model's batch-norm
        running statistics and perturbation switches are left as they were
        (off).
    """
    _require_abra_model(model)
    device = device or x.device
    channels = _stage_channels(model, x, device, amp)
    n = x.shape[0]
    offsets = {
        name: (x.new_zeros(n, c, dtype=torch.float32), x.new_zeros(n, c, dtype=torch.float32))
        for name, c in channels.items()
    }
    if not config.attacks:
        return offsets
    step, eps = config.ascent_step, config.epsilon
    try:
        with untracked_statistics(model):
            for _ in range(config.steps):
                leaves = [t.requires_grad_(True) for pair in offsets.values() for t in pair]
                _set_offsets(model, offsets)
                _, loss = _features_and_loss(model, x, y, device, amp)
                grads = torch.autograd.grad(loss, leaves)
                with torch.no_grad():
                    moved = [
                        (t + step * g.sign()).clamp(-eps, eps)
                        for t, g in zip(leaves, grads, strict=True)
                    ]
                offsets = {name: (moved[2 * i], moved[2 * i + 1]) for i, name in enumerate(offsets)}
    finally:
        model.clear_perturbations()
    return offsets


@dataclass
class AbraLosses:
    """The parts of one ABRA episode's loss (``total`` is what is minimized)."""

    total: torch.Tensor
    clean: torch.Tensor
    perturbed: torch.Tensor
    alignment: torch.Tensor


def abra_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: AbraConfig,
    *,
    device: torch.device | None = None,
    amp: bool = False,
) -> AbraLosses:
    """Loss of one ABRA episode: inner max, then clean + perturbed margin CE and alignment.

    ``x`` holds the labelled cells first (``len(y)`` of them), then any
    unlabelled cells of the pass (controls of a CS-ARM-BN episode).  The clean
    pass updates the batch-norm running statistics; the adversarial passes do not.
    """
    _require_abra_model(model)
    device = device or x.device
    offsets = adversarial_offsets(model, x, y, config, device=device, amp=amp)
    clean_features, clean = _features_and_loss(model, x, y, device, amp)
    if not config.attacks:
        return AbraLosses(clean, clean, clean.detach(), clean.new_zeros(()))
    try:
        with untracked_statistics(model):
            _set_offsets(model, offsets)
            moved_features, perturbed = _features_and_loss(model, x, y, device, amp)
    finally:
        model.clear_perturbations()
    align = alignment_loss(clean_features, moved_features, config.alignment)
    total = (1 - config.adv_weight) * clean + config.adv_weight * perturbed
    total = total + config.align_weight * align
    return AbraLosses(total, clean.detach(), perturbed.detach(), align.detach())
