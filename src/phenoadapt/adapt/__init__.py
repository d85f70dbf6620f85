"""Plate-context adaptation: batch-norm statistics from a plate's own images.

- :mod:`.batchnorm`: exact batch-norm statistics of a context and a context
  manager that applies them and restores the model afterwards;
- :mod:`.methods`: ERM, AdaBN, ARM-BN, BEN and CS-ARM-BN contexts
  (:class:`ContextSpec`, the one fewest-controls rule :data:`MIN_CONTROLS`), the
  one loop over contexts (:func:`run_contexts`, on a :class:`Runtime`) and
  adapted per-cell / per-well predictions;
- :mod:`.embedding`: corrections of embeddings and profiles with each plate's
  controls (phenotype correction, TVN, sphering, z-scores).
"""

from .batchnorm import (
    Statistics,
    apply_statistics,
    batchnorm_layers,
    context_statistics,
    preserved_state,
    statistics_and_outputs,
    use_statistics,
)
from .embedding import (
    ControlSphering,
    TypicalVariationNormalizer,
    control_zscore,
    global_zscore,
    phenotype_correction,
    sphering,
    tvn,
)
from .methods import (
    CONTEXT_CHOICES,
    DEFAULT_CONTEXT,
    DEFAULT_CONTEXT_SIZE,
    DEFAULT_METHOD,
    METHODS,
    MIN_CONTROLS,
    TRAIN_METHODS,
    Context,
    ContextChoice,
    ContextOutput,
    ContextSpec,
    Method,
    PlatePredictions,
    Runtime,
    adapt_contexts,
    bad_images,
    check_images,
    context_from_cells,
    context_outputs,
    method_choices,
    normalized_entropy,
    parse_context,
    parse_method,
    plan_contexts,
    predict_contexts,
    predict_plate,
    run_contexts,
    summarize_wells,
)

__all__ = [
    "ControlSphering",
    "TypicalVariationNormalizer",
    "control_zscore",
    "global_zscore",
    "phenotype_correction",
    "sphering",
    "tvn",
    "CONTEXT_CHOICES",
    "DEFAULT_CONTEXT",
    "DEFAULT_CONTEXT_SIZE",
    "DEFAULT_METHOD",
    "METHODS",
    "MIN_CONTROLS",
    "TRAIN_METHODS",
    "Context",
    "ContextChoice",
    "ContextOutput",
    "ContextSpec",
    "Method",
    "PlatePredictions",
    "Runtime",
    "Statistics",
    "apply_statistics",
    "bad_images",
    "batchnorm_layers",
    "check_images",
    "context_from_cells",
    "context_outputs",
    "method_choices",
    "context_statistics",
    "parse_context",
    "normalized_entropy",
    "parse_method",
    "plan_contexts",
    "adapt_contexts",
    "predict_contexts",
    "predict_plate",
    "preserved_state",
    "run_contexts",
    "statistics_and_outputs",
    "summarize_wells",
    "use_statistics",
]
