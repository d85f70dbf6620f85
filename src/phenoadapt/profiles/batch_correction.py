"""The field's batch-correction baselines for profiles and embeddings: Harmony and ComBat.

These are the methods that the JUMP batch-correction benchmark (Arevalo et al.,
Nat Commun 2024) found strongest on Cell Painting profiles; phenoadapt offers them
beside its own control-based corrections (:func:`~.normalize.normalize_profiles`:
phenotype correction, control z-score, sphering on controls, TVN) so they can be
compared on the same tables.

- :func:`harmony`: Harmony (Korsunsky et al., Nat Methods 2019) on the principal
  components of the profiles, through ``harmonypy``: soft k-means clusters that
  must each hold every batch, and a per-cluster linear correction of the batch.
- :func:`combat`: ComBat (Johnson et al., Biostatistics 2007) through ``inmoose``
  (the maintained successor of ``pycombat``): per feature, a location and scale
  batch effect shrunk by empirical Bayes across features.

Neither uses the negative controls, and neither is given biological covariates
here: in BBBC021 every compound was imaged in a single week, so a covariate
would carry the MoA labels that the evaluation scores.

Both packages are optional (``pip install 'phenoadapt[batch]'``); without them the
functions raise :class:`MissingPackageError` saying what to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from .. import schema
from ..errors import PhenoadaptError, TableError
from .normalize import METHODS as CONTROL_METHODS
from .normalize import normalize_profiles
from .table import feature_columns, feature_matrix, metadata_columns, require_columns

#: Methods of :func:`correct_batches` beyond :data:`~.normalize.METHODS`.
BATCH_METHODS: tuple[str, ...] = ("harmony", "combat")
#: Principal components Harmony works on (at most; fewer with fewer rows or features).
HARMONY_COMPONENTS = 50


class MissingPackageError(PhenoadaptError, ImportError):
    """An optional package a method needs is not installed."""


def _require(module: str, package: str, method: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackageError(
            f"{method} needs the {package} package: pip install 'phenoadapt[batch]' "
            f"(or pip install {package})."
        ) from None


def _check(X: np.ndarray, batches: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    batches = np.asarray(batches).astype(str)
    if X.ndim != 2 or len(X) != len(batches):
        raise TableError(f"{method}: {X.shape} features for {len(batches)} batch labels")
    if not np.isfinite(X).all():
        raise TableError(f"{method}: the features hold NaN or infinite values; clean them first")
    names, counts = np.unique(batches, return_counts=True)
    if len(names) < 2:
        raise TableError(f"{method} needs at least 2 batches; got {len(names)}")
    if counts.min() < 2:
        raise TableError(
            f"{method} needs at least 2 rows per batch; batch {names[counts.argmin()]!r} has 1"
        )
    return X, batches


def harmony(
    X: np.ndarray,
    batches: np.ndarray,
    *,
    n_components: int | None = None,
    theta: float = 2.0,
    seed: int = 0,
) -> np.ndarray:
    """Harmony-corrected principal components of ``X``.

    Parameters
    ----------
    X
        ``(n, d)`` profiles; z-score them first so that no feature dominates the PCA.
    batches
        Batch of each row (plate, week, lab).
    n_components
        Principal components to correct (default: ``min(50, n - 1, d)``).
    theta
        Harmony's diversity penalty (its default, 2).
    seed
        Seed of Harmony's k-means.

    Returns
    -------
    numpy.ndarray
        ``(n, n_components)`` corrected components.
    """
    harmonypy = _require("harmonypy", "harmonypy", "Harmony")
    X, batches = _check(X, batches, "Harmony")
    k = n_components or min(HARMONY_COMPONENTS, len(X) - 1, X.shape[1])
    scores = PCA(k, random_state=seed).fit_transform(X)
    meta = pd.DataFrame({"batch": batches})
    result = harmonypy.run_harmony(
        scores, meta, "batch", theta=theta, random_state=seed, verbose=False
    )
    corrected = np.asarray(result.Z_corr, dtype=np.float64)
    # harmonypy < 2 returns components x rows.
    return corrected.T if corrected.shape != scores.shape else corrected


def combat(X: np.ndarray, batches: np.ndarray, *, mean_only: bool = False) -> np.ndarray:
    """ComBat-corrected features (parametric empirical Bayes, no covariates).

    Parameters
    ----------
    X
        ``(n, d)`` profiles.
    batches
        Batch of each row.
    mean_only
        Correct only the location of each batch, not its scale.

    Returns
    -------
    numpy.ndarray
        ``(n, d)`` corrected features.  A feature constant within a batch cannot
        be scaled by ComBat: drop such features first (:func:`~.cleaning.clean_features`).
    """
    module = _require("inmoose.pycombat", "inmoose", "ComBat")
    X, batches = _check(X, batches, "ComBat")
    for name in np.unique(batches):
        if (X[batches == name].std(axis=0) == 0).any():
            raise TableError(
                f"ComBat: some features are constant within batch {name!r}; drop them first"
            )
    corrected = module.pycombat_norm(X.T, list(batches), mean_only=mean_only)
    return np.asarray(corrected, dtype=np.float64).T


def correct_batches(
    table: pd.DataFrame,
    method: str,
    *,
    batch_column: str = schema.BATCH,
    features: Sequence[str] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Return ``table`` corrected by a batch baseline or one of phenoadapt's corrections.

    Parameters
    ----------
    table
        Feature table (metadata + features).
    method
        ``"harmony"``, ``"combat"`` or any method of :func:`~.normalize.normalize_profiles`
        (which get ``batch_column`` as their grouping).
    batch_column
        The batch to correct.
    features
        Feature columns (default: all).
    **options
        Passed to :func:`harmony`, :func:`combat` or :func:`~.normalize.normalize_profiles`.

    Returns
    -------
    pandas.DataFrame
        Metadata columns, then the corrected features (Harmony: ``emb_0``, ... the
        corrected principal components).
    """
    if method in CONTROL_METHODS:
        return normalize_profiles(
            table, method, features=features, plate_column=batch_column, **options
        )
    if method not in BATCH_METHODS:
        known = ", ".join(BATCH_METHODS + CONTROL_METHODS)
        raise PhenoadaptError(f"unknown batch correction {method!r}; choose one of {known}")
    require_columns(table, [batch_column], f"the {method} correction")
    features = list(features) if features is not None else feature_columns(table)
    X = feature_matrix(table, features)
    batches = table[batch_column].astype(str).to_numpy()
    meta = table[metadata_columns(table)].reset_index(drop=True)
    if method == "combat":
        values, names = combat(X, batches, **options), features
    else:
        values = harmony(X, batches, **options)
        names = schema.embedding_columns(values.shape[1])
    return pd.concat([meta, pd.DataFrame(values, columns=names)], axis=1)
