"""Training: plate-episode samplers, ERM / ARM-BN / CS-ARM-BN trainers, checkpoints, torchrun.

- :mod:`.data`: crops + cell table + labels (:class:`CellData`), plate splits;
- :mod:`.augment`: random crop, flips, quarter turns;
- :mod:`.samplers`: plate episodes, ERM minibatches, label-shift contexts;
- :mod:`.abra`: the ABRA min-max game (adversarial feature statistics, alignment);
- :mod:`.trainers`: :func:`train_model`, validation with the method's test-time procedure;
- :mod:`.checkpoint`: safetensors + JSON checkpoints, channel and class checks;
- :mod:`.distributed`: multi-GPU / multi-node data parallelism under torchrun;
- :mod:`.predict`: adapted prediction from checkpoint files (ensembles);
- :mod:`.phenoprofiler`, :mod:`.phenoprofiler_data`: PhenoProfiler losses, targets and trainer;
- :mod:`.toy`: tiny synthetic crops with plate effects.
"""

from ..model_input import match_channels  # lives below train/ and pipeline/
from .abra import AbraConfig, AbraLosses, abra_loss, adversarial_offsets, alignment_loss
from .checkpoint import (
    Checkpoint,
    CheckpointMetadata,
    check_classes,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from .data import CellData, split_plates
from .distributed import DistributedInfo, init_distributed, is_main_process, shutdown_distributed
from .phenoprofiler import (
    EmbedderTrainConfig,
    EmbedderTrainResult,
    LossWeights,
    contrastive_loss,
    phenoprofiler_loss,
    train_phenoprofiler,
)
from .phenoprofiler_data import EmbedderData, ProfileTargets
from .predict import load_ensemble, predict_with_checkpoints
from .samplers import (
    Episode,
    LabelShiftContext,
    LabelShiftSampler,
    MixedBatchSampler,
    PlateEpisodeSampler,
)
from .toy import make_toy_plates
from .trainers import (
    Evaluation,
    TrainConfig,
    TrainResult,
    evaluate_contexts,
    evaluate_plates,
    train_model,
)

__all__ = [
    "AbraConfig",
    "AbraLosses",
    "CellData",
    "Checkpoint",
    "CheckpointMetadata",
    "DistributedInfo",
    "EmbedderData",
    "EmbedderTrainConfig",
    "EmbedderTrainResult",
    "Episode",
    "Evaluation",
    "LabelShiftContext",
    "LabelShiftSampler",
    "LossWeights",
    "MixedBatchSampler",
    "PlateEpisodeSampler",
    "ProfileTargets",
    "TrainConfig",
    "TrainResult",
    "abra_loss",
    "adversarial_offsets",
    "alignment_loss",
    "check_classes",
    "contrastive_loss",
    "evaluate_contexts",
    "evaluate_plates",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "load_ensemble",
    "make_toy_plates",
    "match_channels",
    "phenoprofiler_loss",
    "predict_with_checkpoints",
    "read_checkpoint_metadata",
    "save_checkpoint",
    "shutdown_distributed",
    "split_plates",
    "train_model",
    "train_phenoprofiler",
]
