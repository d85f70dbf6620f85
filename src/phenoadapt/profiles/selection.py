"""Feature selection that uses no labels: a blocklist and a correlation filter.

Both follow the conventions of image-based profiling (pycytominer): position
features say where a cell sat in the field, not what it looks like, and groups of
nearly collinear features (e.g. ``Area``, ``Perimeter``, ``MajorAxisLength``) count
one phenotype several times in a cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .table import feature_columns, feature_matrix

#: Substrings of feature names that measure position in the image, not morphology.
POSITION_MARKERS: tuple[str, ...] = ("_Location_", "_Center_", "AreaShape_Center")


def drop_position_features(features: Sequence[str]) -> list[str]:
    """``features`` without the position ones (``*_Location_*``, ``*_Center_*``)."""
    return [f for f in features if not any(m in f for m in POSITION_MARKERS)]


def correlation_filter(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    threshold: float = 0.9,
) -> list[str]:
    """Keep features whose pairwise absolute Pearson correlation is at most ``threshold``.

    Features are visited from the least to the most redundant (mean absolute
    correlation with all others); a feature is kept when it correlates at most
    ``threshold`` with every feature kept before it.  The result is deterministic
    and keeps the most distinctive member of each correlated group.

    Parameters
    ----------
    table
        Rows to compute correlations on (typically all wells, no labels used).
    features
        Candidate feature columns (default: all feature columns).
    threshold
        Largest absolute correlation allowed between two kept features; 0.9 is the
        pycytominer default.

    Returns
    -------
    list of str
        Kept feature names, in their original order.
    """
    features = list(features) if features is not None else feature_columns(table)
    values = feature_matrix(table, features)
    std = values.std(axis=0)
    varying = std > 0
    corr = np.zeros((len(features), len(features)))
    if varying.sum() > 1:
        sub = np.corrcoef(values[:, varying], rowvar=False)
        corr[np.ix_(varying, varying)] = np.abs(sub)
    np.fill_diagonal(corr, 0.0)
    redundancy = corr.mean(axis=0)
    kept: list[int] = []
    for index in np.argsort(redundancy, kind="stable"):
        if not varying[index]:
            continue
        if not kept or corr[index, kept].max() <= threshold:
            kept.append(int(index))
    return [features[i] for i in sorted(kept)]
