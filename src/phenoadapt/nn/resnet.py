"""ResNets for any number of input channels, written from two block definitions.

The family follows He et al. (2016) as torchvision implements it (stride on the
3x3 convolution of the bottleneck, "ResNet v1.5"): a stem, four stages of
residual blocks whose widths double while the resolution halves, a global
average pool and a linear head.  Two knobs make it fit microscopy:

- ``in_channels``: Cell Painting has five fluorescent channels (six with
  brightfield), not three;
- ``width``: the number of channels of the first stage (64 in the paper's
  ResNet-50).  Narrow variants (``width=8`` or ``16``) train on a CPU in minutes.

Nothing assumes an input size: the global average pool accepts single-cell crops
(e.g. 64 x 64, use ``stem="small"`` below about 96 pixels so that small crops are
not downsampled to nothing) as well as whole field tiles (the paper's unit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from torch import nn

from .normalize import ChannelNormalizer, Normalization

FAMILY = "resnet"

_Net = TypeVar("_Net", bound=nn.Module)

# name -> (block type, blocks per stage); the allow-list of ResNet architectures.
ARCHITECTURES: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet10": ("basic", (1, 1, 1, 1)),
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}

# "imagenet": 7x7 stride-2 convolution + 3x3 stride-2 max pool (input / 4), for
# tiles and large crops.  "small": one 3x3 stride-1 convolution, for crops of a
# few dozen pixels, as in CIFAR ResNets.
STEMS = ("imagenet", "small")


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """Projection shortcut where the residual changes shape, else identity (None)."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(_conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-10/18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The batch norm closing the residual branch."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4, with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_planes, planes * self.expansion, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The batch norm closing the residual branch."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


def check_backbone_options(arch: str, stem: str) -> None:
    """Raise ValueError unless ``arch`` and ``stem`` name a known backbone and stem."""
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"Unknown ResNet architecture {arch!r}: use one of {sorted(ARCHITECTURES)}."
        )
    if stem not in STEMS:
        raise ValueError(f"Unknown stem {stem!r}: use one of {STEMS}.")


def check_normalization_channels(
    normalization: Normalization | None, in_channels: int, inputs: str
) -> None:
    """Raise ValueError when ``normalization`` was fitted on another number of channels.

    ``inputs`` names what the normalization should be fitted on (``"crops"``,
    ``"images"``) in the message.
    """
    if normalization is not None and normalization.n_channels != in_channels:
        raise ValueError(
            f"The normalization has {normalization.n_channels} channels but the network "
            f"{in_channels}: fit it on {inputs} with the model's channels."
        )


def init_conv_bn_(network: nn.Module) -> None:
    """He-initialize every convolution of ``network`` and reset its batch norms (in place).

    Fan-out Kaiming normal for convolutions as in the original ResNet paper (and
    torchvision); batch norms start as the identity (scale 1, shift 0).  Other
    layers keep PyTorch's defaults.
    """
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_seeded(factory: Callable[[], _Net], seed: int | None) -> _Net:
    """Call ``factory()``; with ``seed``, in a forked torch RNG seeded with it.

    Forking leaves the caller's global torch RNG untouched, so building a
    network with a seed does not change what later random draws give.
    """
    if seed is None:
        return factory()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


@dataclass(frozen=True)
class ResNetConfig:
    """Everything needed to rebuild a :class:`ResNetClassifier` (stored in checkpoints).

    Parameters
    ----------
    arch
        One of :data:`ARCHITECTURES` (``resnet10``, ``resnet18``, ``resnet34``, ``resnet50``).
    in_channels
        Number of image channels.
    num_classes
        Number of output classes of the linear head.
    width
        Channels of the first stage (64 = the standard ResNet); stages use
        ``width``, ``2 width``, ``4 width``, ``8 width``.
    stem
        ``"imagenet"`` or ``"small"`` (see :data:`STEMS`).
    zero_init_residual
        Start every residual branch at zero (its last BN scale = 0), as in
        Goyal et al. 2017; helps very deep nets train from scratch.
    normalization
        Input normalization; None means identity (inputs already standardized).
    """

    arch: str = "resnet50"
    in_channels: int = 5
    num_classes: int = 8
    width: int = 64
    stem: str = "imagenet"
    zero_init_residual: bool = False
    normalization: Normalization | None = None

    def __post_init__(self) -> None:
        check_backbone_options(self.arch, self.stem)
        for name in ("in_channels", "num_classes", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ResNetConfig.{name} must be >= 1, got {getattr(self, name)}.")
        check_normalization_channels(self.normalization, self.in_channels, "crops")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation, tagged with the network family."""
        return {
            "family": FAMILY,
            "arch": self.arch,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "width": self.width,
            "stem": self.stem,
            "zero_init_residual": self.zero_init_residual,
            "normalization": None if self.normalization is None else self.normalization.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a foreign file)."""
        known = {"family", "arch", "in_channels", "num_classes", "width", "stem",
                 "zero_init_residual", "normalization"}  # fmt: skip
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown ResNet configuration keys {unknown}.")
        if data.get("family", FAMILY) != FAMILY:
            raise ValueError(f"Not a ResNet configuration (family {data.get('family')!r}).")
        norm = data.get("normalization")
        return cls(
            arch=str(data["arch"]),
            in_channels=int(data["in_channels"]),
            num_classes=int(data["num_classes"]),
            width=int(data.get("width", 64)),
            stem=str(data.get("stem", "imagenet")),
            zero_init_residual=bool(data.get("zero_init_residual", False)),
            normalization=None if norm is None else Normalization.from_dict(norm),
        )


class ResNetBackbone(nn.Module):
    """Stem + four residual stages + global average pool: images -> ``(n, feature_dim)``."""

    def __init__(
        self, arch: str, in_channels: int, width: int = 64, stem: str = "imagenet"
    ) -> None:
        super().__init__()
        block_name, depths = ARCHITECTURES[arch]
        block = BLOCKS[block_name]
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                _conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
        stages = []
        in_planes = width
        for i, depth in enumerate(depths):
            planes = width * 2**i
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_planes, planes, stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_planes

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map ``(n, feature_dim, h, w)``, before pooling."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.feature_maps(x)), 1)


class ResNetClassifier(nn.Module):
    """Input normalization, ResNet backbone and linear head.

    ``forward(x)`` returns logits ``(n, num_classes)``; ``embed(x)`` the pooled
    features ``(n, feature_dim)``; ``classify(features)`` applies the head.
    """

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        norm = config.normalization or Normalization.identity(config.in_channels)
        self.normalizer = ChannelNormalizer(norm)
        self.backbone = ResNetBackbone(config.arch, config.in_channels, config.width, config.stem)
        self.head = nn.Linear(self.backbone.feature_dim, config.num_classes)
        self._config = config
        self._init_weights(config.zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        init_conv_bn_(self)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock | Bottleneck):
                    nn.init.zeros_(module.last_bn.weight)

    @property
    def config(self) -> ResNetConfig:
        """The configuration, with the normalization currently held in the buffers."""
        return replace(self._config, normalization=self.normalizer.normalization())

    @property
    def feature_dim(self) -> int:
        """Length of the vectors returned by :meth:`embed`."""
        return self.backbone.feature_dim

    @property
    def num_classes(self) -> int:
        """Number of classes of the head."""
        return self.head.out_features

    def spec(self) -> dict[str, Any]:
        """JSON-ready description from which :func:`phenoadapt.nn.build_network` rebuilds it."""
        return self.config.to_dict()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of raw-intensity images ``(n, C, h, w)`` -> ``(n, feature_dim)``."""
        return self.backbone(self.normalizer(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


def build_resnet(config: ResNetConfig, seed: int | None = None) -> ResNetClassifier:
    """Build a :class:`ResNetClassifier`; with ``seed``, the initial weights are reproducible.

    The seed is applied in a forked RNG state, so the caller's global torch RNG
    is left untouched.
    """
    return build_seeded(lambda: ResNetClassifier(config), seed)


def _named(arch: str):
    def make(
        in_channels: int = 5,
        num_classes: int = 8,
        *,
        width: int = 64,
        stem: str = "imagenet",
        normalization: Normalization | None = None,
        seed: int | None = None,
    ) -> ResNetClassifier:
        config = ResNetConfig(arch, in_channels, num_classes, width, stem, False, normalization)
        return build_resnet(config, seed=seed)

    make.__name__ = arch
    make.__doc__ = (
        f"Build a {arch.replace('resnet', 'ResNet-')} classifier "
        "(arguments as in :class:`ResNetConfig`; ``seed`` makes the initial weights reproducible)."
    )
    return make


resnet10 = _named("resnet10")
resnet18 = _named("resnet18")
resnet34 = _named("resnet34")
resnet50 = _named("resnet50")
