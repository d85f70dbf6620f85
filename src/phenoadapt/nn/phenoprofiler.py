"""PhenoProfiler: images -> compact phenotypic embeddings (Li et al., Nat. Commun. 2025).

The network, in the order a batch flows through it:

1. :class:`~phenoadapt.nn.normalize.ChannelNormalizer` - raw intensities to
   standardized values (clip, ``log1p``, mean/std of the training pixels);
2. :class:`~phenoadapt.nn.cdc.GradientEncoder` - two central-difference
   convolution branches (theta 0.7 and 0.3, 3 x 3, stride 2), fused to 3 channels;
3. :class:`~phenoadapt.nn.resnet.ResNetBackbone` - any depth and width from
   :data:`~phenoadapt.nn.resnet.ARCHITECTURES` (ResNet-50, width 64 in the paper);
4. one transformer block (post-norm self-attention + feed-forward, as in the
   paper) over *tokens* of the last feature map, then the mean over tokens;
5. :class:`ProjectionHead` - Linear -> GELU -> Linear -> dropout, residual,
   LayerNorm - to the embedding dimension (672 in the paper);
6. a linear classifier over treatments on the embedding (the training head of
   the cross-entropy loss; embeddings are what the model is for).

Tokens.  The published code feeds the transformer the *pooled* 2048-d vector as
a sequence of length one.  Softmax attention over a single key gives it weight 1,
so the attention sub-layer then reduces to a fixed linear map (value then output
projection): the block is a residual MLP.  ``tokens="spatial"`` (the default
here) instead makes one token per position of the last feature map (``h x w``
tokens of ``feature_dim`` values: 4-64 for crops of 32-128 pixels), lets
attention weigh them (nucleus against cytoplasm, one cell against its
neighbours in a tile) and pools the tokens afterwards.  No positional encoding
is added: the block then treats the positions as a set, so the pooled output
stays invariant to moving content around - the right symmetry for cells, which
have no preferred position or orientation - and any input size works.
``tokens="pooled"`` reproduces the published single-token block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .cdc import GradientEncoder
from .normalize import ChannelNormalizer, Normalization
from .resnet import (
    ARCHITECTURES,
    BLOCKS,
    ResNetBackbone,
    build_seeded,
    check_backbone_options,
    check_normalization_channels,
    init_conv_bn_,
)

FAMILY = "phenoprofiler"
TOKEN_MODES = ("spatial", "pooled")


def backbone_feature_dim(arch: str, width: int) -> int:
    """Length of the pooled feature of a ResNet backbone (``8 width`` or ``32 width``)."""
    block_name, _ = ARCHITECTURES[arch]
    return width * 8 * BLOCKS[block_name].expansion


@dataclass(frozen=True)
class PhenoProfilerConfig:
    """Everything needed to rebuild a :class:`PhenoProfiler` (stored in checkpoints).

    Parameters
    ----------
    in_channels
        Image channels.
    num_classes
        Treatments of the classification head.
    embedding_dim
        Length of the embedding (the dimension of the regression target).
    arch, width, stem
        ResNet backbone (see :class:`~phenoadapt.nn.resnet.ResNetConfig`); the
        backbone's input is the gradient encoder's output.
    encoder_channels
        Output channels of the gradient encoder (3 in the paper).
    thetas
        Theta of each central-difference branch.
    tokens
        ``"spatial"`` (one token per feature-map position) or ``"pooled"`` (the
        pooled vector as a single token, as published); see the module docstring.
    heads
        Attention heads; must divide the backbone's feature dimension.
    ffn_dim
        Hidden size of the feed-forward sub-layer; None = twice the feature
        dimension (4096 for ResNet-50's 2048, as published).
    dropout
        Dropout of the transformer block.
    projection_dropout
        Dropout of the projection head.
    normalization
        Input normalization; None = identity.
    """

    in_channels: int = 5
    num_classes: int = 8
    embedding_dim: int = 672
    arch: str = "resnet50"
    width: int = 64
    stem: str = "imagenet"
    encoder_channels: int = 3
    thetas: tuple[float, ...] = (0.7, 0.3)
    tokens: str = "spatial"
    heads: int = 4
    ffn_dim: int | None = None
    dropout: float = 0.1
    projection_dropout: float = 0.1
    normalization: Normalization | None = None

    def __post_init__(self) -> None:
        check_backbone_options(self.arch, self.stem)
        if self.tokens not in TOKEN_MODES:
            raise ValueError(f"Unknown token mode {self.tokens!r}: use one of {TOKEN_MODES}.")
        for name in ("in_channels", "num_classes", "embedding_dim", "width", "encoder_channels",
                     "heads"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"PhenoProfilerConfig.{name} must be >= 1, got {getattr(self, name)}."
                )
        object.__setattr__(self, "thetas", tuple(float(t) for t in self.thetas))
        if not self.thetas:
            raise ValueError("PhenoProfilerConfig.thetas needs at least one value.")
        if self.feature_dim % self.heads:
            raise ValueError(
                f"{self.heads} attention heads do not divide the {self.arch} feature dimension "
                f"{self.feature_dim} (width {self.width}): choose heads among the divisors."
            )
        if self.ffn_dim is not None and self.ffn_dim < 1:
            raise ValueError(f"ffn_dim must be >= 1 or None, got {self.ffn_dim}.")
        for name in ("dropout", "projection_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}.")
        check_normalization_channels(self.normalization, self.in_channels, "images")

    @property
    def feature_dim(self) -> int:
        """Length of the backbone's pooled feature (the transformer's width)."""
        return backbone_feature_dim(self.arch, self.width)

    @property
    def hidden_dim(self) -> int:
        """Hidden size of the transformer's feed-forward sub-layer."""
        return self.ffn_dim if self.ffn_dim is not None else 2 * self.feature_dim

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation, tagged with the network family."""
        return {
            "family": FAMILY,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "arch": self.arch,
            "width": self.width,
            "stem": self.stem,
            "encoder_channels": self.encoder_channels,
            "thetas": list(self.thetas),
            "tokens": self.tokens,
            "heads": self.heads,
            "ffn_dim": self.ffn_dim,
            "dropout": self.dropout,
            "projection_dropout": self.projection_dropout,
            "normalization": None if self.normalization is None else self.normalization.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhenoProfilerConfig:
        """Inverse of :meth:`to_dict`; unknown keys or another family are an error."""
        known = {"family", *cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown PhenoProfiler configuration keys {unknown}.")
        if data.get("family", FAMILY) != FAMILY:
            raise ValueError(f"Not a PhenoProfiler configuration (family {data.get('family')!r}).")
        norm = data.get("normalization")
        ffn = data.get("ffn_dim")
        return cls(
            in_channels=int(data["in_channels"]),
            num_classes=int(data["num_classes"]),
            embedding_dim=int(data["embedding_dim"]),
            arch=str(data.get("arch", "resnet50")),
            width=int(data.get("width", 64)),
            stem=str(data.get("stem", "imagenet")),
            encoder_channels=int(data.get("encoder_channels", 3)),
            thetas=tuple(float(t) for t in data.get("thetas", (0.7, 0.3))),
            tokens=str(data.get("tokens", "spatial")),
            heads=int(data.get("heads", 4)),
            ffn_dim=None if ffn is None else int(ffn),
            dropout=float(data.get("dropout", 0.1)),
            projection_dropout=float(data.get("projection_dropout", 0.1)),
            normalization=None if norm is None else Normalization.from_dict(norm),
        )


class ProjectionHead(nn.Module):
    """Linear -> GELU -> Linear -> dropout, plus the first Linear's output, then LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, out_dim)
        self.activation = nn.GELU()
        self.fc = nn.Linear(out_dim, out_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.projection(x)
        x = self.dropout(self.fc(self.activation(projected)))
        return self.norm(x + projected)


class PhenoProfiler(nn.Module):
    """Normalizer, gradient encoder, ResNet, transformer block, projection and classifier.

    ``embed(x)`` returns embeddings ``(n, embedding_dim)`` of raw-intensity images
    ``(n, C, h, w)``; ``classify(embeddings)`` the treatment logits;
    ``forward(x)`` the logits (so the network can stand where a classifier is
    expected) and ``outputs(x)`` both in one pass (training).
    """

    def __init__(self, config: PhenoProfilerConfig) -> None:
        super().__init__()
        norm = config.normalization or Normalization.identity(config.in_channels)
        self.normalizer = ChannelNormalizer(norm)
        self.encoder = GradientEncoder(config.in_channels, config.encoder_channels, config.thetas)
        self.backbone = ResNetBackbone(
            config.arch, config.encoder_channels, config.width, config.stem
        )
        self.transformer = nn.TransformerEncoderLayer(
            d_model=config.feature_dim, nhead=config.heads, dim_feedforward=config.hidden_dim,
            dropout=config.dropout, activation="relu", batch_first=True, norm_first=False,
        )  # fmt: skip
        self.projection = ProjectionHead(
            config.feature_dim, config.embedding_dim, config.projection_dropout
        )
        self.head = nn.Linear(config.embedding_dim, config.num_classes)
        self._config = config
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialization for convolutions (as the ResNet classifier); the
        # transformer and linear layers keep PyTorch's defaults.
        init_conv_bn_(self)

    @property
    def config(self) -> PhenoProfilerConfig:
        """The configuration, with the normalization currently held in the buffers."""
        return replace(self._config, normalization=self.normalizer.normalization())

    @property
    def in_channels(self) -> int:
        """Image channels the network takes."""
        return self._config.in_channels

    @property
    def num_classes(self) -> int:
        """Treatments of the classification head."""
        return self.head.out_features

    @property
    def embedding_dim(self) -> int:
        """Length of the embeddings."""
        return self._config.embedding_dim

    @property
    def feature_dim(self) -> int:
        """Length of the backbone feature fed to the transformer."""
        return self._config.feature_dim

    def spec(self) -> dict[str, Any]:
        """JSON-ready description from which :func:`phenoadapt.nn.build_network` rebuilds it."""
        return self.config.to_dict()

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Transformer input ``(n, tokens, feature_dim)`` of raw-intensity images."""
        maps = self.backbone.feature_maps(self.encoder(self.normalizer(x)))
        if self._config.tokens == "pooled":
            return maps.mean(dim=(2, 3)).unsqueeze(1)
        return maps.flatten(2).transpose(1, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone + transformer features ``(n, feature_dim)``, pooled over tokens."""
        return self.transformer(self.tokens(x)).mean(dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(n, embedding_dim)`` of raw-intensity images ``(n, C, h, w)``."""
        return self.projection(self.features(x))

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Treatment logits from embeddings."""
        return self.head(embeddings)

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and logits in one pass."""
        embeddings = self.embed(x)
        return embeddings, self.classify(embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


def build_phenoprofiler(config: PhenoProfilerConfig, seed: int | None = None) -> PhenoProfiler:
    """Build a :class:`PhenoProfiler`; with ``seed`` the initial weights are reproducible.

    The seed is applied in a forked RNG state, so the caller's global torch RNG
    is left untouched.
    """
    return build_seeded(lambda: PhenoProfiler(config), seed)


def build_phenoprofiler_spec(spec: dict[str, Any]) -> PhenoProfiler:
    """Registry builder: a :class:`PhenoProfiler` from its JSON spec."""
    return build_phenoprofiler(PhenoProfilerConfig.from_dict(spec))


def phenoprofiler(
    in_channels: int = 5,
    num_classes: int = 8,
    embedding_dim: int = 672,
    *,
    arch: str = "resnet50",
    width: int = 64,
    stem: str = "imagenet",
    tokens: str = "spatial",
    heads: int = 4,
    normalization: Normalization | None = None,
    seed: int | None = None,
    **options: Any,
) -> PhenoProfiler:
    """Build a PhenoProfiler (arguments as in :class:`PhenoProfilerConfig`).

    The defaults are the paper's network (ResNet-50 at width 64, 672-d
    embeddings); for CPU training use e.g. ``arch="resnet10", width=8,
    stem="small"`` on 32-64 pixel crops.
    """
    config = PhenoProfilerConfig(
        in_channels=in_channels, num_classes=num_classes, embedding_dim=embedding_dim,
        arch=arch, width=width, stem=stem, tokens=tokens, heads=heads,
        normalization=normalization, **options,
    )  # fmt: skip
    return build_phenoprofiler(config, seed=seed)
