"""Feature tables: reading, cleaning, feature selection, aggregation, normalization, BBBC021.

A feature table is a pandas DataFrame with ``Metadata_*`` columns and numeric
feature columns (CellProfiler ``Cells_*``/``Cytoplasm_*``/``Nuclei_*`` or ``emb_*``).
"""

from .aggregate import COUNT, aggregate_profiles
from .bbbc021 import COMPOUND, load_bbbc021, treatment_name
from .cleaning import CleaningReport, check_features, clean_features, find_bad_features
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
    "COMPOUND",
    "COUNT",
    "FEATURE_PREFIXES",
    "METHODS",
    "CleaningReport",
    "aggregate_profiles",
    "check_features",
    "clean_features",
    "control_mask",
    "correlation_filter",
    "drop_position_features",
    "feature_columns",
    "feature_matrix",
    "find_bad_features",
    "load_bbbc021",
    "metadata_columns",
    "normalize_profiles",
    "read_table",
    "require_columns",
    "treatment_name",
]
