"""Networks in plain torch: ResNets for any channel count, input normalization, runtime helpers.

- :mod:`.normalize`: per-channel clip / log / standardize module fitted on training crops;
- :mod:`.resnet`: ResNet-10/18/34/50 with any channel count and base width;
- :mod:`.cdc`, :mod:`.phenoprofiler`: central-difference convolutions and the PhenoProfiler
  embedder;
- :mod:`.registry`: the allow-list of architectures a checkpoint may name;
- :mod:`.abra`: feature-statistics perturbations and angular-margin head (ABRA);
- :mod:`.runtime`: device choice, mixed precision, batched inference with OOM retry.
"""

from .abra import (
    AbraClassifier,
    AbraNetConfig,
    AngularHead,
    FeatureStatPerturbation,
    build_abra,
)
from .normalize import (
    INPUT_SCALINGS,
    ChannelNormalizer,
    Normalization,
    fit_input_scaling,
    fit_normalization,
    scale_per_image,
)
from .phenoprofiler import (
    PhenoProfiler,
    PhenoProfilerConfig,
    build_phenoprofiler,
    phenoprofiler,
)
from .registry import build_network, known_families, register_family
from .resnet import (
    ARCHITECTURES,
    ResNetBackbone,
    ResNetClassifier,
    ResNetConfig,
    build_resnet,
    resnet10,
    resnet18,
    resnet34,
    resnet50,
)
from .runtime import forward_in_batches, retry_on_oom, select_device

__all__ = [
    "ARCHITECTURES",
    "INPUT_SCALINGS",
    "AbraClassifier",
    "AbraNetConfig",
    "AngularHead",
    "ChannelNormalizer",
    "FeatureStatPerturbation",
    "Normalization",
    "PhenoProfiler",
    "PhenoProfilerConfig",
    "ResNetBackbone",
    "ResNetClassifier",
    "ResNetConfig",
    "build_abra",
    "build_network",
    "build_phenoprofiler",
    "build_resnet",
    "fit_input_scaling",
    "fit_normalization",
    "forward_in_batches",
    "known_families",
    "phenoprofiler",
    "register_family",
    "resnet10",
    "resnet18",
    "resnet34",
    "resnet50",
    "retry_on_oom",
    "scale_per_image",
    "select_device",
]
