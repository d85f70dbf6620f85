"""Feature tables: reading, cleaning, selection, aggregation, normalization, BBBC021.

:mod:`.measurements` turns per-cell measurements into normalized per-well profiles.

A feature table is a pandas DataFrame with ``Metadata_*`` columns and numeric
feature columns (CellProfiler ``Cells_*``/``Cytoplasm_*``/``Nuclei_*`` or ``emb_*``).
"""

from .aggregate import COUNT, aggregate_profiles
from .batch_correction import BATCH_METHODS, MissingPackageError, correct_batches
from .bbbc021 import COMPOUND, load_bbbc021, treatment_name
from .cleaning import CleaningReport, check_features, clean_features, find_bad_features
from .measurements import (
    NORMALIZATIONS,
    FeatureSelection,
    MeasurementProfiles,
    build_profiles,
    measurement_profiles,
    profile_activity,
    robust_zscore,
    select_features,
    sphere_controls,
    well_profiles,
)
from .normalize import METHODS, normalize_profiles
from .selection import correlation_filter, drop_position_features
from .table import (
    FEATURE_PREFIXES,
    control_mask,
    feature_columns,
    feature_matrix,
    metadata_columns,
    read_table,
    require_columns,
)

__all__ = [
    "BATCH_METHODS",
    "MissingPackageError",
    "correct_batches",
    "COMPOUND",
    "COUNT",
    "FEATURE_PREFIXES",
    "METHODS",
    "NORMALIZATIONS",
    "CleaningReport",
    "FeatureSelection",
    "MeasurementProfiles",
    "aggregate_profiles",
    "build_profiles",
    "check_features",
    "clean_features",
    "control_mask",
    "correlation_filter",
    "drop_position_features",
    "feature_columns",
    "feature_matrix",
    "find_bad_features",
    "load_bbbc021",
    "measurement_profiles",
    "metadata_columns",
    "normalize_profiles",
    "profile_activity",
    "read_table",
    "require_columns",
    "robust_zscore",
    "select_features",
    "sphere_controls",
    "treatment_name",
    "well_profiles",
]
