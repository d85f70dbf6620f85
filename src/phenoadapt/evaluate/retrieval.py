"""Retrieval metrics: mean average precision (copairs) and folds of enrichment.

mAP (Kalinin et al. 2025, the JUMP consortium's ``copairs``) ranks, for each query
profile, all its comparison profiles by cosine similarity and asks how early the
positives come.  Two standard questions:

- **phenotypic activity**: can a treatment's replicates be told from the negative
  controls?  Positives are the other replicates of the same treatment, negatives
  the control rows (optionally of the same plate only).
- **phenotypic consistency**: do treatments of the same MoA resemble each other?
  Positives are treated profiles of the same MoA (but, e.g., another compound),
  negatives the treated profiles of other MoAs.

Each mAP comes with a permutation p-value and a Benjamini-Hochberg corrected one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from copairs import map as copairs_map
from copairs.matching import UnpairedException
from scipy.stats import fisher_exact

from .. import schema
from ..errors import TableError
from ..profiles.table import control_mask, require_columns
from ._validation import (
    as_matrix,
    check_labels,
    check_metadata,
    cosine_similarity_matrix,
    table_matrix,
)

_REFERENCE = "Metadata__copairs_reference"


@dataclass(frozen=True)
class MapResult:
    """mAP of each group (treatment or MoA) and its significance.

    Attributes
    ----------
    per_group
        One row per group: ``mean_average_precision``, ``p_value``,
        ``corrected_p_value``, ``below_corrected_p`` and the group column.
    threshold
        Significance level applied to the corrected p-values.
    """

    per_group: pd.DataFrame
    threshold: float

    @property
    def mean_map(self) -> float:
        """Average of the groups' mAP."""
        return float(self.per_group["mean_average_precision"].mean())

    @property
    def fraction_significant(self) -> float:
        """Fraction of groups whose corrected p-value is below the threshold ("retrieved")."""
        return float(self.per_group["below_corrected_p"].mean())


def _map(
    meta: pd.DataFrame,
    X: np.ndarray,
    pairs: dict[str, list[str]],
    sameby: list[str],
    null_size: int,
    threshold: float,
    seed: int,
    purpose: str,
) -> MapResult:
    try:
        ap = copairs_map.average_precision(meta, X, distance="cosine", progress_bar=False, **pairs)
    except UnpairedException as exc:
        raise TableError(
            f"{purpose}: {exc} Each group needs at least two rows, and there must be rows "
            "to compare against (see the docstring for the pairing rules)."
        ) from exc
    ap = ap.dropna(subset=["average_precision"])
    ap = ap[ap["n_pos_pairs"] > 0]
    if ap.empty:
        raise TableError(f"{purpose}: no profile has both a positive and a negative pair")
    per_group = copairs_map.mean_average_precision(
        ap,
        sameby=sameby,
        null_size=null_size,
        threshold=threshold,
        seed=seed,
        progress_bar=False,
        max_workers=1,
    )
    return MapResult(
        per_group=per_group.drop(columns=["indices"], errors="ignore"), threshold=threshold
    )


def map_activity(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    *,
    treatment_column: str = schema.TREATMENT,
    role_column: str = schema.ROLE,
    same_plate_column: str | None = None,
    null_size: int = 10_000,
    threshold: float = 0.05,
    seed: int = 0,
) -> MapResult:
    """mAP of phenotypic activity: treatment replicates against negative controls.

    Parameters
    ----------
    table
        Replicate-level profiles (wells or sites) with treated and control rows.
    features
        Feature columns (default: all).
    treatment_column
        Identifies replicates of one treatment.
    role_column
        ``control`` marks the negative controls (the only negatives).
    same_plate_column
        When given (e.g. ``Metadata_Plate``), a replicate is only compared with the
        controls of its own plate, the JUMP convention that factors out plate effects.
    null_size, threshold, seed
        Size of the permutation null, significance level (after BH correction) and
        its random seed.

    Returns
    -------
    MapResult
        One row per treatment with at least two replicates.
    """
    require_columns(table, [treatment_column, role_column], "mAP of phenotypic activity")
    controls = control_mask(table, role_column)
    if not controls.any():
        raise TableError(
            f"mAP of phenotypic activity needs negative-control rows ({role_column} == 'control')"
        )
    columns = [treatment_column] + ([same_plate_column] if same_plate_column else [])
    require_columns(table, columns, "mAP of phenotypic activity")
    check_metadata(table, [role_column, *columns], "mAP of phenotypic activity")
    meta = table[columns].reset_index(drop=True).astype(str)
    # Every control gets its own reference index so that controls never pair with
    # each other; treated rows share -1, so treated-vs-treated pairs are neither
    # positive (different treatments) nor negative (same reference index).
    meta[_REFERENCE] = np.where(controls, np.arange(len(meta)), -1)
    pairs = {
        "pos_sameby": [treatment_column, _REFERENCE],
        "pos_diffby": [],
        "neg_sameby": [same_plate_column] if same_plate_column else [],
        "neg_diffby": [treatment_column, _REFERENCE],
    }
    X = table_matrix(table, features, "mAP of phenotypic activity")
    result = _map(
        meta, X, pairs, [treatment_column], null_size, threshold, seed, "mAP of phenotypic activity"
    )
    return result


def map_consistency(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    *,
    moa_column: str = schema.MOA,
    different: Sequence[str] = (schema.TREATMENT,),
    role_column: str | None = schema.ROLE,
    null_size: int = 10_000,
    threshold: float = 0.05,
    seed: int = 0,
) -> MapResult:
    """mAP of phenotypic consistency: treated profiles of the same MoA retrieve each other.

    Parameters
    ----------
    table
        Treated profiles, typically one per treatment; control rows (role
        ``control``) and rows without MoA are ignored.
    moa_column
        The annotation that defines positives.
    different
        Columns in which a positive pair must differ (e.g. the compound, so that two
        doses of one compound do not count as agreeing MoAs).
    role_column
        Column marking controls, ignored when absent from ``table``.

    Returns
    -------
    MapResult
        One row per MoA.
    """
    different = list(different)
    require_columns(table, [moa_column, *different], "mAP of phenotypic consistency")
    keep = table[moa_column].notna().to_numpy()
    if role_column is not None and role_column in table.columns:
        keep = keep & ~control_mask(table, role_column)
    table = table[keep]
    check_metadata(table, different, "mAP of phenotypic consistency")
    X = table_matrix(table, features, "mAP of phenotypic consistency (on the treated rows)")
    meta = table[[moa_column, *different]].reset_index(drop=True).astype(str)
    pairs = {
        "pos_sameby": [moa_column],
        "pos_diffby": different,
        "neg_sameby": [],
        "neg_diffby": [moa_column],
    }
    return _map(
        meta,
        X,
        pairs,
        [moa_column],
        null_size,
        threshold,
        seed,
        "mAP of phenotypic consistency",
    )


@dataclass(frozen=True)
class EnrichmentResult:
    """Folds of enrichment of same-MoA pairs among the most similar pairs.

    Attributes
    ----------
    mean_odds_ratio
        Odds ratio averaged over the queries that have pairs above the threshold.
    pooled_odds_ratio
        Odds ratio of one 2x2 table over all pairs (each unordered pair once).
    threshold
        Similarity at the requested percentile of all pairs.
    per_query
        ``n_same_above``, ``n_other_above``, ``n_same_below``, ``n_other_below``,
        ``odds_ratio`` and one-sided ``p_value`` of each query (NaN when undefined).
    """

    mean_odds_ratio: float
    pooled_odds_ratio: float
    threshold: float
    per_query: pd.DataFrame


def _odds_ratio(table: np.ndarray) -> float:
    """Sample odds ratio ad/bc, with the Haldane-Anscombe +0.5 when a cell is zero."""
    if (table == 0).any():
        table = table + 0.5
    (a, b), (c, d) = table
    return float(a * d / (b * c))


def folds_of_enrichment(
    X: np.ndarray,
    moa: np.ndarray,
    percentile: float = 99.0,
    ignore_same: np.ndarray | None = None,
) -> EnrichmentResult:
    """Folds of enrichment (FoE) of same-MoA pairs above a similarity percentile.

    All pairwise cosine similarities are computed; the threshold is their
    ``percentile`` (over all distinct pairs, as in DeepProfiler's enrichment
    analysis).  For each query, a 2x2 table counts its partners by (same MoA or not)
    x (above the threshold or not); its odds ratio measures how much the top
    similarities are enriched in same-MoA partners and a one-sided Fisher exact test
    gives a p-value.  FoE is the odds ratio averaged over queries.

    Odds ratios are undefined for queries with no partner above the threshold or no
    same-MoA partner; those queries are left out of the mean.  A zero cell gets the
    Haldane-Anscombe correction (+0.5 in every cell) so that one perfect query does
    not make the mean infinite.

    Parameters
    ----------
    X
        ``(n, d)`` profiles, typically one per treatment.
    moa
        MoA of each row.
    percentile
        Percentile of all pair similarities used as threshold (99 by convention).
    ignore_same
        Optional labels (e.g. compound): pairs sharing a label are not counted, so two
        doses of one compound do not inflate the enrichment.

    Returns
    -------
    EnrichmentResult
    """
    X = as_matrix(X)
    moa = check_labels(moa, len(X), "moa")
    similarity = cosine_similarity_matrix(X)
    valid = ~np.eye(len(X), dtype=bool)
    if ignore_same is not None:
        ignore_same = check_labels(ignore_same, len(X), "ignore_same", minimum_groups=1)
        valid &= ignore_same[:, None] != ignore_same[None, :]
    same = moa[:, None] == moa[None, :]
    upper = np.triu(valid, k=1)
    if not upper.any():
        raise TableError("folds of enrichment: there are no pairs of profiles to compare")
    threshold = float(np.percentile(similarity[upper], percentile))
    above = similarity > threshold

    rows = []
    for q in range(len(X)):
        v = valid[q]
        counts = np.array(
            [
                [np.sum(v & same[q] & above[q]), np.sum(v & ~same[q] & above[q])],
                [np.sum(v & same[q] & ~above[q]), np.sum(v & ~same[q] & ~above[q])],
            ]
        )
        defined = counts[0].sum() > 0 and counts[:, 0].sum() > 0 and counts[:, 1].sum() > 0
        odds = _odds_ratio(counts) if defined else np.nan
        p_value = float(fisher_exact(counts, alternative="greater").pvalue) if defined else np.nan
        rows.append((*counts.ravel(), odds, p_value))
    per_query = pd.DataFrame(
        rows,
        columns=[
            "n_same_above",
            "n_other_above",
            "n_same_below",
            "n_other_below",
            "odds_ratio",
            "p_value",
        ],
    )
    pooled = np.array(
        [
            [np.sum(upper & same & above), np.sum(upper & ~same & above)],
            [np.sum(upper & same & ~above), np.sum(upper & ~same & ~above)],
        ]
    )
    return EnrichmentResult(
        mean_odds_ratio=float(per_query["odds_ratio"].mean())
        if per_query["odds_ratio"].notna().any()
        else float("nan"),
        pooled_odds_ratio=_odds_ratio(pooled),
        threshold=threshold,
        per_query=per_query,
    )
