"""A multilayer perceptron with batch norm for feature vectors (CellProfiler profiles).

The image networks of :mod:`.resnet` adapt to a plate through their batch-norm
layers; this network does the same for a *feature table*: one row per well or
cell, ``F`` numeric features.  Its layers are

``standardize -> [Linear -> BatchNorm1d -> ReLU -> Dropout] x (k - 1) -> Linear -> BatchNorm1d``
(the embedding) ``-> ReLU -> Linear`` (the head).

- The input standardization (per-feature mean and standard deviation of the
  training rows) is kept as buffers inside the model, so a checkpoint reads raw
  feature values: no scaler can be forgotten or mismatched.
- Every hidden layer ends in a ``BatchNorm1d``: those are the layers whose
  statistics plate-context adaptation (AdaBN, ARM-BN, BEN, CS-ARM-BN) replaces
  with the statistics of one plate, exactly as for images.
- :meth:`MLPClassifier.embed` returns the last batch-norm output *before* its
  ReLU: a signed, plate-normalized representation, better suited to cosine
  similarity than non-negative ReLU outputs.

The JSON spec (family ``"mlp"``) holds the layer sizes only; the standardization
travels with the weights in the safetensors file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

FAMILY = "mlp"

# A feature that is (nearly) constant in the training rows has no scale; dividing by
# a tiny standard deviation would turn rounding noise into large inputs.
_MIN_STD = 1e-8


@dataclass(frozen=True)
class MLPConfig:
    """Everything needed to rebuild an :class:`MLPClassifier` (stored in checkpoints).

    Parameters
    ----------
    in_features
        Number of input features ``F``.
    num_classes
        Number of output classes.
    hidden
        Widths of the hidden layers; the last one is the embedding dimension.
    dropout
        Dropout after each hidden ReLU except the embedding's (0 = none).
    """

    in_features: int
    num_classes: int
    hidden: tuple[int, ...] = (512, 128)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if int(self.in_features) < 1 or int(self.num_classes) < 1:
            raise ValueError(
                f"MLPConfig needs in_features >= 1 and num_classes >= 1, got "
                f"{self.in_features} and {self.num_classes}."
            )
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"MLPConfig.hidden must list positive widths, got {self.hidden}.")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"MLPConfig.dropout must be in [0, 1), got {self.dropout}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation, tagged with the network family."""
        return {
            "family": FAMILY,
            "in_features": int(self.in_features),
            "num_classes": int(self.num_classes),
            "hidden": list(self.hidden),
            "dropout": float(self.dropout),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MLPConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a foreign file)."""
        known = {"family", "in_features", "num_classes", "hidden", "dropout"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown MLP configuration keys {unknown}.")
        if data.get("family", FAMILY) != FAMILY:
            raise ValueError(f"Not an MLP configuration (family {data.get('family')!r}).")
        return cls(
            in_features=int(data["in_features"]),
            num_classes=int(data["num_classes"]),
            hidden=tuple(int(h) for h in data.get("hidden", (512, 128))),
            dropout=float(data.get("dropout", 0.0)),
        )


class FeatureStandardizer(nn.Module):
    """``(x - mean) / std`` per feature, with the numbers held as buffers."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))

    def fit(self, features: np.ndarray | torch.Tensor) -> None:
        """Set mean and standard deviation from training rows ``(n, F)``.

        Raises
        ------
        ValueError
            When the rows are not ``(n, F)`` with this ``F``, or hold NaN/inf.
        """
        x = torch.as_tensor(np.asarray(features, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] != self.mean.numel():
            raise ValueError(
                f"Expected training rows of shape (n, {self.mean.numel()}), got {tuple(x.shape)}."
            )
        if not torch.isfinite(x).all():
            raise ValueError("Training rows hold NaN or infinite values: clean the table first.")
        std = x.std(dim=0, unbiased=False)
        with torch.no_grad():
            self.mean.copy_(x.mean(dim=0).float())
            self.std.copy_(torch.where(std > _MIN_STD, std, torch.ones_like(std)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MLPClassifier(nn.Module):
    """Feature standardization, batch-norm MLP and linear head.

    ``forward(x)`` returns logits ``(n, num_classes)`` of raw feature rows
    ``(n, F)``; ``embed(x)`` the embedding ``(n, hidden[-1])``; ``classify``
    applies ReLU and the head to an embedding.
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self._config = config
        self.standardize = FeatureStandardizer(config.in_features)
        layers: list[nn.Module] = []
        width = config.in_features
        for i, out in enumerate(config.hidden):
            layers += [nn.Linear(width, out, bias=False), nn.BatchNorm1d(out)]
            if i < len(config.hidden) - 1:
                layers.append(nn.ReLU())
                if config.dropout:
                    layers.append(nn.Dropout(config.dropout))
            width = out
        # Linear layers feed batch norm, which has its own shift: no bias needed.
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(width, config.num_classes))

    @property
    def config(self) -> MLPConfig:
        """The configuration the network was built from."""
        return self._config

    @property
    def in_features(self) -> int:
        """Number of input features."""
        return self._config.in_features

    @property
    def feature_dim(self) -> int:
        """Length of the vectors returned by :meth:`embed`."""
        return self._config.hidden[-1]

    @property
    def num_classes(self) -> int:
        """Number of classes of the head."""
        return self._config.num_classes

    def spec(self) -> dict[str, Any]:
        """JSON-ready description from which :func:`phenoadapt.nn.build_network` rebuilds it."""
        return self._config.to_dict()

    def fit_standardization(self, features: np.ndarray | torch.Tensor) -> MLPClassifier:
        """Fit the input standardization on training rows ``(n, F)``; returns ``self``."""
        self.standardize.fit(features)
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding of raw feature rows ``(n, F)`` -> ``(n, feature_dim)``."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"The MLP takes feature rows of shape (n, {self.in_features}), got "
                f"{tuple(x.shape)}."
            )
        return self.body(self.standardize(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from embeddings."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


def build_mlp(config: MLPConfig, seed: int | None = None) -> MLPClassifier:
    """Build an :class:`MLPClassifier`; with ``seed``, the initial weights are reproducible.

    The seed is applied in a forked RNG state, so the caller's global torch RNG is
    left untouched.
    """
    if seed is None:
        return MLPClassifier(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLPClassifier(config)


def build_mlp_spec(spec: dict[str, Any]) -> MLPClassifier:
    """Registry builder: an MLP from its JSON spec (weights are loaded afterwards)."""
    return build_mlp(MLPConfig.from_dict(spec))
