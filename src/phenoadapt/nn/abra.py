"""ABRA network parts: feature-statistics perturbations and an angular-margin head.

ABRA (Tong, Yao et al. 2026, "Adversarial Batch Representation Augmentation")
treats the channel-wise mean and standard deviation of intermediate feature maps
as the place where batch effects live, and trains against worst-case changes
of those statistics.  This module holds the network side; the min-max game is in
:mod:`phenoadapt.train.abra`.

- :class:`FeatureStatPerturbation`: re-styles a feature map ``x`` (n, C, h, w) as
  ``(sigma + d_sigma * s_sigma) * (x - mu) / sigma + (mu + d_mu * s_mu)``, where
  ``mu``/``sigma`` are each image's per-channel spatial mean/std and ``s_mu``/``s_sigma``
  the spread of those statistics across the batch (DSU, Li et al. 2022).  The
  offsets ``d_mu``, ``d_sigma`` (n, C) are set by the trainer's adversary; the
  module is the identity in eval mode, when disabled or when no offsets are set.
- :class:`AngularHead`: cosine classifier.  ``forward`` gives ``scale * cos``
  (what every test-time method uses); :meth:`AngularHead.margin_logits` subtracts
  the margin from the true class in training (CosFace, or ArcFace's angular
  margin).
- :class:`AbraClassifier`: a :class:`~phenoadapt.nn.resnet.ResNetClassifier` with
  perturbation points after some stages and an angular head; checkpoints name
  it as family ``"abra"`` (registered in :mod:`phenoadapt.nn.registry`).

Perturbations carry no weights, so an ABRA checkpoint holds exactly the tensors
of a ResNet with a weight-only head, and at test time the network is an
ordinary batch-norm classifier: ERM, AdaBN, ARM-BN, BEN and CS-ARM-BN apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_family
from .resnet import ResNetClassifier, ResNetConfig

FAMILY = "abra"
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
MARGINS = ("cosface", "arcface")
# Floor of the variance terms: feature maps of ReLU networks have dead channels
# whose spatial std is 0; the floor keeps (x - mu) / sigma finite there.
_EPS = 1e-6


class FeatureStatPerturbation(nn.Module):
    """Shift each image's per-channel feature mean and std by adversarial offsets.

    The offsets are in units of the batch's spread of the statistic (as in DSU),
    so one bound ``epsilon`` means the same thing at every stage and for every
    channel: ``epsilon = 1`` moves a statistic by one standard deviation of its
    variation across the cells of the batch.  Offsets are per image and channel:
    a shift shared by the whole batch would be removed again by the train-mode
    batch norm that follows the next convolution, leaving the adversary nothing
    to attack during training.

    Attributes
    ----------
    enabled
        Master switch (the trainer turns it on only while it perturbs).
    delta_mu, delta_sigma
        Offsets ``(n, C)`` set by the adversary (None = no perturbation).
    """

    def __init__(self) -> None:
        super().__init__()
        self.enabled = False
        self.delta_mu: torch.Tensor | None = None
        self.delta_sigma: torch.Tensor | None = None

    def active(self) -> bool:
        """Whether the next forward pass perturbs (training mode, enabled, offsets set)."""
        return self.training and self.enabled and self.delta_mu is not None

    def set_offsets(self, delta_mu: torch.Tensor | None, delta_sigma: torch.Tensor | None) -> None:
        """Offsets for the next passes (None, None switches the perturbation off)."""
        self.delta_mu, self.delta_sigma = delta_mu, delta_sigma
        self.enabled = delta_mu is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active():
            return x
        if self.delta_mu.shape != x.shape[:2] or self.delta_sigma.shape != x.shape[:2]:
            raise ValueError(
                f"Perturbation offsets of shape {tuple(self.delta_mu.shape)} do not match the "
                f"feature map {tuple(x.shape)}: offsets are (images, channels) of this batch."
            )
        # Statistics in float32 even under autocast: variances of bf16 maps are coarse.
        xf = x.float()
        mu = xf.mean(dim=(2, 3), keepdim=True)
        sigma = (xf.var(dim=(2, 3), keepdim=True, unbiased=False) + _EPS).sqrt()
        # Spread of the statistics across the batch: how far batches plausibly move
        # them.  Detached: it sets the scale of the attack, it is not trained.
        n = x.shape[0]
        if n > 1:
            s_mu = mu.detach().std(dim=0, keepdim=True)
            s_sigma = sigma.detach().std(dim=0, keepdim=True)
        else:  # one image has no spread; fall back to its own statistics
            s_mu, s_sigma = mu.detach().abs(), sigma.detach()
        new_mu = mu + self.delta_mu[:, :, None, None].float() * s_mu
        # A std cannot go negative (that would flip the feature map): floor at 0.
        new_sigma = torch.clamp(sigma + self.delta_sigma[:, :, None, None].float() * s_sigma, min=0)
        return ((xf - mu) / sigma * new_sigma + new_mu).to(x.dtype)


class AngularHead(nn.Module):
    """Cosine classifier with an additive (CosFace) or angular (ArcFace) margin.

    ``forward(features)`` returns ``scale * cos(theta)``: the margin is a training
    device only, so test-time logits (and probabilities) need no label.

    Parameters
    ----------
    in_features, num_classes
        Feature length and number of classes.
    scale
        ``s``, the inverse temperature of the softmax over cosines.
    margin
        ``m``: CosFace logit ``s (cos theta - m)``, ArcFace ``s cos(theta + m)`` for
        the true class.
    kind
        ``"cosface"`` or ``"arcface"``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float = 16.0,
        margin: float = 0.2,
        kind: str = "cosface",
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)
        self.scale, self.margin, self.kind = float(scale), float(margin), kind
        self.in_features, self.out_features = in_features, num_classes

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """``cos(theta)`` between each feature vector and each class weight, in [-1, 1]."""
        cos = F.linear(
            F.normalize(features.float(), dim=1), F.normalize(self.weight.float(), dim=1)
        )
        return cos.clamp(-1.0, 1.0)

    def margin_logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training logits: the true class's cosine is penalized by the margin, then scaled.

        Rows with ``labels < 0`` (unlabelled) get no margin.
        """
        cos = self.cosine(features)
        labelled = labels >= 0
        onehot = F.one_hot(labels.clamp(min=0), cos.shape[1]).bool() & labelled[:, None]
        if self.kind == "cosface":
            target = cos - self.margin
        else:
            theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
            # cos(theta + m) is not monotonic beyond theta = pi - m; there use the
            # CosFace-like linear continuation so the penalty keeps growing with theta.
            target = torch.where(
                theta + self.margin < math.pi,
                torch.cos(theta + self.margin),
                cos - self.margin * math.sin(self.margin),
            )
        return self.scale * torch.where(onehot, target, cos)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(features)


@dataclass(frozen=True)
class AbraNetConfig:
    """Everything needed to rebuild an :class:`AbraClassifier` (stored in checkpoints).

    Parameters
    ----------
    resnet
        The backbone and input normalization (its ``num_classes`` sizes the head).
    stages
        Stages after which feature statistics are perturbed (of :data:`STAGES`).
        Default: after layer1-3, where feature maps still carry image "style"
        (intensity, texture) more than class evidence, as in DSU and MixStyle.
    scale, margin, margin_type
        Angular head settings (see :class:`AngularHead`).
    """

    resnet: ResNetConfig = field(default_factory=ResNetConfig)
    stages: tuple[str, ...] = ("layer1", "layer2", "layer3")
    scale: float = 16.0
    margin: float = 0.2
    margin_type: str = "cosface"

    def __post_init__(self) -> None:
        stages = tuple(str(s) for s in self.stages)
        unknown = [s for s in stages if s not in STAGES]
        if unknown or len(set(stages)) != len(stages):
            raise ValueError(f"ABRA stages must be distinct names among {STAGES}, got {stages}.")
        object.__setattr__(self, "stages", tuple(s for s in STAGES if s in stages))
        if self.margin_type not in MARGINS:
            raise ValueError(f"Unknown margin type {self.margin_type!r}: use one of {MARGINS}.")
        if not self.scale > 0 or not 0 <= self.margin < 1:
            raise ValueError(
                f"Need scale > 0 and 0 <= margin < 1, got scale={self.scale}, margin={self.margin}."
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation, tagged with the network family."""
        return {
            "family": FAMILY,
            "resnet": self.resnet.to_dict(),
            "stages": list(self.stages),
            "scale": self.scale,
            "margin": self.margin,
            "margin_type": self.margin_type,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AbraNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a foreign file)."""
        unknown = sorted(set(data) - {"family", "resnet", "stages", "scale", "margin",
                                      "margin_type"})  # fmt: skip
        if unknown:
            raise ValueError(f"Unknown ABRA configuration keys {unknown}.")
        if data.get("family", FAMILY) != FAMILY:
            raise ValueError(f"Not an ABRA configuration (family {data.get('family')!r}).")
        return cls(
            resnet=ResNetConfig.from_dict(data["resnet"]),
            stages=tuple(data.get("stages", ("layer1", "layer2", "layer3"))),
            scale=float(data.get("scale", 16.0)),
            margin=float(data.get("margin", 0.2)),
            margin_type=str(data.get("margin_type", "cosface")),
        )


class AbraClassifier(ResNetClassifier):
    """ResNet with feature-statistics perturbation points and an angular-margin head.

    Same interface as :class:`ResNetClassifier` (``forward``, ``embed``,
    ``classify``, ``spec``), plus :attr:`perturbations` (stage -> module) and
    :meth:`margin_logits` for training.
    """

    def __init__(self, config: AbraNetConfig) -> None:
        super().__init__(config.resnet)
        self.head = AngularHead(
            self.backbone.feature_dim, config.resnet.num_classes,
            config.scale, config.margin, config.margin_type,
        )  # fmt: skip
        self.perturbations = nn.ModuleDict({s: FeatureStatPerturbation() for s in config.stages})
        self._abra = config

    @property
    def abra_config(self) -> AbraNetConfig:
        """The configuration, with the normalization currently held in the buffers."""
        return replace(self._abra, resnet=self.config)

    def spec(self) -> dict[str, Any]:
        """JSON-ready description from which :func:`phenoadapt.nn.build_network` rebuilds it."""
        return self.abra_config.to_dict()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(n, feature_dim)``, perturbed where the perturbations are active."""
        x = self.normalizer(x)
        for name in STAGES:
            x = getattr(self.backbone, name)(x)
            if name in self.perturbations:
                x = self.perturbations[name](x)
        return torch.flatten(self.backbone.pool(x), 1)

    def margin_logits(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training logits with the margin on the true class (see :class:`AngularHead`)."""
        return self.head.margin_logits(features, labels)

    def clear_perturbations(self) -> None:
        """Switch every perturbation point off."""
        for module in self.perturbations.values():
            module.set_offsets(None, None)


def build_abra(config: AbraNetConfig, seed: int | None = None) -> AbraClassifier:
    """Build an :class:`AbraClassifier`; with ``seed``, the initial weights are reproducible.

    The seed is applied in a forked RNG state, leaving the caller's global torch RNG alone.
    """
    if seed is None:
        return AbraClassifier(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AbraClassifier(config)


def build_abra_spec(spec: dict[str, Any]) -> nn.Module:
    """Registry builder: an :class:`AbraClassifier` from its JSON spec."""
    return build_abra(AbraNetConfig.from_dict(spec))


register_family(FAMILY, build_abra_spec)
