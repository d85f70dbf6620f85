r"""Morphology profiles from per-cell measurements: a first result without a model.

A plate whose stains no checkpoint fits still has its cells' measurements
(:func:`phenoadapt.cells.measure_cells`).  This module turns a per-cell table of
one or more plates into per-well profiles the way pycytominer does:

1. **aggregate**: the median of each feature over a well's cells
   (:func:`phenoadapt.cells.aggregate_profiles`), annotated from the plate maps;
   wells a map marks ``excluded`` are left out;
2. **normalize**, each plate on its own negative controls:

   - ``"robust-zscore"`` (pycytominer's ``mad_robustize`` on controls):
     :math:`x' = (x - \tilde c_p) / (1.4826\,\mathrm{MAD}_p)`, with
     :math:`\tilde c_p` and :math:`\mathrm{MAD}_p` the median and median absolute
     deviation of the plate's control wells.  A feature whose MAD is zero on a
     plate (one control well, or a feature constant among them) is divided by
     its MAD over the controls of all plates instead (each centred on its own
     plate), and only centred when that is zero too, so it never explodes;
   - ``"sphering"``: the robust z-score, then ZCA whitening ("ZCA-cor") fitted on
     the control wells of all plates, with ``epsilon`` added to the eigenvalues of
     their correlation matrix (:class:`phenoadapt.adapt.embedding.ControlSphering`);
   - ``"none"``: the raw medians;
3. **select features** (pycytominer's ``feature_select``), on the normalized wells:
   position features (blocklist), features missing in more than 5% of wells,
   near-constant features (``variance_threshold``: the second most common value is
   rarer than 5% of the most common one), then (with 10 wells or more) one feature of every pair
   correlated above 0.9 (:func:`phenoadapt.profiles.correlation_filter`,
   deterministic).  Sphering comes after the selection, as in the JUMP recipe.

After normalization a value still missing (a feature not measurable in a few
wells) is set to 0, the plate's control median, so that distances and mAP can be
computed; with ``"none"`` it stays missing.

The result is a pycytominer-style table: ``Metadata_*`` columns first
(``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Role``, ``Metadata_Treatment``,
``Metadata_MoA``, ``Metadata_Concentration``, ``Metadata_Cell_Count``), then the
CellProfiler-like feature columns (``Nuclei_AreaShape_Area``...), which
pycytominer and copairs read unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..errors import OptionError, TableError
from .selection import POSITION_MARKERS, correlation_filter

#: Normalizations offered by :func:`measurement_profiles` (and ``segment --normalize``).
NORMALIZATIONS: tuple[str, ...] = ("robust-zscore", "sphering", "none")
#: MAD -> standard deviation for normal data (pycytominer's ``mad_robustize`` uses it too).
MAD_SCALE = 1.4826
#: Ridge on the eigenvalues of the controls' correlation matrix when sphering.  pycytominer
#: uses 1e-6, which assumes many more control wells than features; one plate has a few
#: dozen at most, and directions the controls do not span would be blown up 1,000-fold.
SPHERING_EPSILON = 0.1
#: Below this many wells, the correlation filter is skipped: with 6 wells, 1.5% of unrelated
#: feature pairs pass |r| > 0.9 by chance (hundreds of pairs among ~170 features); with 10, 0.04%.
MIN_WELLS_FOR_CORRELATION = 10
#: Cell-table feature prefixes (CellProfiler compartments).
FEATURE_PREFIXES = ("Nuclei_", "Cells_", "Cytoplasm_")
#: Metadata columns in the order the profiles table puts first.
LEAD_METADATA = (
    schema.PLATE,
    schema.WELL,
    schema.ROLE,
    schema.TREATMENT,
    schema.MOA,
    schema.CONCENTRATION,
)


@dataclass
class FeatureSelection:
    """Which features were kept, and why each other one was dropped.

    Attributes
    ----------
    kept
        Kept feature names, in table order.
    dropped
        Feature -> reason (``"position"``, ``"missing in 12% of wells"``,
        ``"near-constant"``, ``"correlated with <feature>"``).
    """

    kept: list[str]
    dropped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: how many features were kept, and counts of each reason."""
        reasons: dict[str, int] = {}
        for reason in self.dropped.values():
            key = reason.split(" with ")[0].split(" in ")[0]
            reasons[key] = reasons.get(key, 0) + 1
        total = len(self.kept) + len(self.dropped)
        text = f"kept {len(self.kept)} of {total} features"
        if reasons:
            text += " (dropped: " + ", ".join(f"{n} {r}" for r, n in reasons.items()) + ")"
        return text


@dataclass
class MeasurementProfiles:
    """Per-well profiles before and after normalization.

    Attributes
    ----------
    raw
        Per-well medians with their metadata (all features).
    table
        The normalized (and selected) profiles: what :func:`measurement_profiles` returns.
    normalize
        The normalization applied.
    selection
        The feature selection, or None when it was off.
    scale_fallbacks
        (plate, feature) pairs whose control MAD was zero (see the module docstring).
    """

    raw: pd.DataFrame
    table: pd.DataFrame
    normalize: str
    selection: FeatureSelection | None = None
    scale_fallbacks: int = 0

    def summary(self) -> str:
        """One line for the CLI and the GUI."""
        plates = self.table[schema.PLATE].nunique() if len(self.table) else 0
        text = f"{len(self.table)} wells of {plates} plate(s), normalization {self.normalize}"
        if self.selection is not None:
            text += "; " + self.selection.summary()
        return text


def profile_features(table: pd.DataFrame) -> list[str]:
    """Numeric measurement columns (``Nuclei_``/``Cells_``/``Cytoplasm_``) of a table."""
    return [
        c
        for c in table.columns
        if str(c).startswith(FEATURE_PREFIXES) and pd.api.types.is_numeric_dtype(table[c])
    ]


def well_profiles(
    cells: pd.DataFrame,
    platemaps: Mapping[str, Any] | Any | None = None,
    statistic: str = "median",
) -> pd.DataFrame:
    """Per-well medians of a per-cell table, annotated from the plate maps.

    Parameters
    ----------
    cells
        Per-cell table of one or more plates (``phenoadapt segment --out``, or
        :attr:`phenoadapt.cells.PlateCells.cells`).
    platemaps
        Plate id -> :class:`~phenoadapt.plate.platemap.PlateMap`, or one map for
        every plate; it replaces the table's role, treatment, MoA and
        concentration (of the plates it names).  None keeps the table's own.
    statistic
        ``"median"`` (default) or ``"mean"``.

    Returns
    -------
    pandas.DataFrame
        One row per (plate, well): metadata first, then the features.  Wells
        marked ``excluded`` are left out.
    """
    from ..cells.profiles import aggregate_profiles

    if not len(cells):
        raise TableError("The cell table holds no cells: segment a plate first.")
    wells = aggregate_profiles(cells, "well", statistic)
    wells[schema.PLATE] = wells[schema.PLATE].astype(str)
    if platemaps is not None:
        wells = _annotate(wells, platemaps)
    for column in LEAD_METADATA:
        if column not in wells.columns:
            wells[column] = None
    if schema.ROLE in wells.columns:
        roles = wells[schema.ROLE].astype(str)
        wells = wells[roles != schema.Role.EXCLUDED.value].reset_index(drop=True)
    return _metadata_first(wells)


def _annotate(wells: pd.DataFrame, platemaps: Mapping[str, Any] | Any) -> pd.DataFrame:
    """Role, treatment, MoA and concentration of every well from its plate's map.

    Plates a mapping does not name keep the table's own values.
    """
    from ..cells.table import MAP_COLUMNS, well_metadata

    wells = wells.copy()
    for column in MAP_COLUMNS:
        values = wells[column] if column in wells.columns else None
        wells[column] = pd.Series(values, index=wells.index, dtype="object")
    pairs = zip(wells[schema.PLATE], wells[schema.WELL], strict=True)
    for index, (plate, well) in enumerate(pairs):
        if isinstance(platemaps, Mapping) and plate not in platemaps:
            continue
        platemap = platemaps[plate] if isinstance(platemaps, Mapping) else platemaps
        for column, value in well_metadata(platemap, str(well)).items():
            wells.at[index, column] = value
    return wells


def _metadata_first(table: pd.DataFrame) -> pd.DataFrame:
    meta = [c for c in LEAD_METADATA if c in table.columns]
    meta += [c for c in table.columns if schema.is_metadata(str(c)) and c not in meta]
    features = profile_features(table)
    return table[meta + features].reset_index(drop=True)


def _controls(table: pd.DataFrame) -> np.ndarray:
    return (table[schema.ROLE].astype(str) == schema.Role.CONTROL.value).to_numpy()


def require_controls(table: pd.DataFrame, method: str, minimum: int = 1) -> None:
    """Refuse a normalization on plates with fewer than ``minimum`` control wells.

    Raises
    ------
    phenoadapt.plate.platemap.model.NotEnoughControlsError
        Naming the plates and saying how to mark controls (a :class:`PhenoadaptError`).
    """
    from ..plate.platemap.model import NotEnoughControlsError

    controls = pd.Series(_controls(table), index=table.index)
    counts = controls.groupby(table[schema.PLATE].astype(str), sort=False).sum()
    short = [f"{plate} ({int(n)})" for plate, n in counts.items() if n < minimum]
    if short:
        need = "no control well" if minimum == 1 else f"fewer than {minimum} control wells"
        raise NotEnoughControlsError(
            f"Normalization {method!r} scales each plate to its own negative-control wells, "
            f"and {len(short)} plate(s) have {need} among the profiled wells: "
            f"{', '.join(short)}. Mark the DMSO (or other negative-control) wells with role "
            "'control' in the plate map (Plate map dock, or a 'role' column in --platemap), "
            "or use normalization 'none' (--normalize none) for raw per-well medians."
        )


def robust_zscore(
    table: pd.DataFrame, features: Sequence[str] | None = None
) -> tuple[pd.DataFrame, int]:
    """Per plate, subtract the controls' median and divide by 1.4826 x their MAD.

    Parameters
    ----------
    table
        Per-well profiles with ``Metadata_Plate`` and ``Metadata_Role``.
    features
        Feature columns (default: all measurement columns).

    Returns
    -------
    (pandas.DataFrame, int)
        The normalized copy of ``table`` and how many (plate, feature) scales fell
        back because the plate's control MAD was zero (see the module docstring).
        Missing values stay missing.
    """
    features = list(features) if features is not None else profile_features(table)
    require_controls(table, "robust-zscore")
    X = table[features].to_numpy(dtype=np.float64)
    plates = table[schema.PLATE].astype(str).to_numpy()
    controls = _controls(table)
    centres, mads, residuals = {}, {}, []
    with warnings.catch_warnings():  # all-NaN features of a plate are NaN, said by selection
        warnings.simplefilter("ignore", RuntimeWarning)
        for plate in pd.unique(plates):
            reference = X[(plates == plate) & controls]
            centres[plate] = np.nanmedian(reference, axis=0)
            deviation = np.abs(reference - centres[plate])
            mads[plate] = np.nanmedian(deviation, axis=0)
            residuals.append(deviation)
        pooled = np.nanmedian(np.vstack(residuals), axis=0)
    pooled = np.where(_positive(pooled, X), pooled, 1.0 / MAD_SCALE)
    out = np.empty_like(X)
    fallbacks = 0
    for plate, centre in centres.items():
        rows = plates == plate
        zero = ~_positive(mads[plate], X)
        fallbacks += int(np.count_nonzero(zero & np.isfinite(centre)))
        mad = np.where(zero, pooled, mads[plate])
        out[rows] = (X[rows] - centre) / (MAD_SCALE * mad)
    normalized = table.copy()
    normalized[features] = out
    return normalized, fallbacks


def _positive(scale: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Scales that are not zero up to round-off relative to the feature's magnitude."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        magnitude = np.nanmax(np.abs(X), axis=0) if len(X) else np.zeros(X.shape[1])
    magnitude = np.nan_to_num(magnitude, nan=0.0)
    return np.nan_to_num(scale, nan=0.0) > 1e-12 * np.maximum(magnitude, 1.0)


def sphere_controls(
    table: pd.DataFrame, features: Sequence[str] | None = None, epsilon: float = SPHERING_EPSILON
) -> pd.DataFrame:
    """ZCA-whiten the features with the statistics of the control wells of all plates.

    Parameters
    ----------
    table
        Profiles (usually robust z-scored already) with ``Metadata_Role``; no NaN.
    features
        Feature columns (default: all measurement columns).
    epsilon
        Ridge added to the eigenvalues of the controls' correlation matrix.

    Returns
    -------
    pandas.DataFrame
        A copy with whitened features: the controls have mean 0 and, up to
        ``epsilon``, identity covariance.
    """
    from ..adapt.embedding import ControlSphering

    if not epsilon >= 0:
        raise OptionError(f"The sphering epsilon must be 0 or more, not {epsilon}.")
    features = list(features) if features is not None else profile_features(table)
    require_controls(table, "sphering")
    controls = _controls(table)
    X = table[features].to_numpy(dtype=np.float64)
    if int(controls.sum()) < 2:
        from ..plate.platemap.model import NotEnoughControlsError

        raise NotEnoughControlsError(
            "Sphering estimates the controls' covariance and needs at least 2 control wells "
            f"in all, got {int(controls.sum())}: mark more negative-control wells, or use "
            "--normalize robust-zscore."
        )
    whitened = ControlSphering(shrinkage=float(epsilon)).fit(X[controls]).transform(X)
    out = table.copy()
    out[features] = whitened
    return out


def select_features(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    *,
    nan_cutoff: float = 0.05,
    freq_cut: float = 0.05,
    unique_cut: float = 0.01,
    corr_threshold: float = 0.9,
    blocklist: bool = True,
) -> FeatureSelection:
    """Features to keep, with pycytominer's ``feature_select`` rules (see the module).

    Parameters
    ----------
    table
        Profiles to select on (all rows are used; no label is).
    features
        Candidate feature columns (default: all measurement columns).
    nan_cutoff
        Largest fraction of wells a feature may be missing in.
    freq_cut, unique_cut
        pycytominer's ``variance_threshold``: drop a feature whose second most
        common value is rarer than ``freq_cut`` x the most common, or whose number
        of distinct values is below ``unique_cut`` x the number of wells.
    corr_threshold
        Largest absolute Pearson correlation between two kept features.
    blocklist
        Drop position features (``*_Location_*``, ``*_Center_*``).

    Returns
    -------
    FeatureSelection
    """
    features = list(features) if features is not None else profile_features(table)
    dropped: dict[str, str] = {}
    if blocklist:
        for name in features:
            if any(marker in name for marker in POSITION_MARKERS):
                dropped[name] = "position"
    n = len(table)
    for name in features:
        if name in dropped:
            continue
        values = table[name]
        missing = float(values.isna().mean()) if n else 1.0
        if missing > nan_cutoff:
            dropped[name] = f"missing in {missing:.0%} of wells"
        elif _near_constant(values.dropna().to_numpy(dtype=np.float64), n, freq_cut, unique_cut):
            dropped[name] = "near-constant"
    candidates = [f for f in features if f not in dropped]
    if len(candidates) > 1 and n >= MIN_WELLS_FOR_CORRELATION:
        # The correlation filter needs complete columns: a few missing values (at most
        # nan_cutoff) are filled with the feature's median for computing correlations only.
        filled = table[candidates].fillna(table[candidates].median())
        # Sorted names: a tie (e.g. two copies of a feature) goes to the same one whatever
        # the column order of the table.
        kept = set(correlation_filter(filled, sorted(candidates), threshold=corr_threshold))
        values = filled.to_numpy(dtype=np.float64)
        for index, name in enumerate(candidates):
            if name not in kept:
                dropped[name] = f"correlated with {_partner(values, index, candidates, kept)}"
    return FeatureSelection([f for f in features if f not in dropped], dropped)


def _near_constant(values: np.ndarray, n: int, freq_cut: float, unique_cut: float) -> bool:
    """pycytominer's variance rules, plus "constant up to round-off"."""
    if len(values) < 2:
        return True
    if np.ptp(values) <= 1e-12 * max(1.0, float(np.max(np.abs(values)))):
        return True
    counts = pd.Series(values).value_counts()
    if len(counts) < 2 or counts.iloc[1] / counts.iloc[0] < freq_cut:
        return True
    return len(counts) / max(n, 1) < unique_cut


def _partner(values: np.ndarray, index: int, names: list[str], kept: set[str]) -> str:
    """The kept feature that a dropped one correlates with most (for the report)."""
    keep = [i for i, name in enumerate(names) if name in kept]
    if not keep:
        return "another feature"
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = [abs(np.corrcoef(values[:, index], values[:, i])[0, 1]) for i in keep]
    best = int(np.nanargmax(corr)) if np.isfinite(corr).any() else 0
    return names[keep[best]]


def build_profiles(
    cells: pd.DataFrame,
    platemaps: Mapping[str, Any] | Any | None = None,
    normalize: str = "robust-zscore",
    feature_select: bool = True,
    *,
    epsilon: float = SPHERING_EPSILON,
    statistic: str = "median",
) -> MeasurementProfiles:
    """Per-well profiles before and after normalization (see :func:`measurement_profiles`).

    Returns
    -------
    MeasurementProfiles
        ``raw`` (per-well medians), ``table`` (normalized, selected), the selection
        and the number of MAD fallbacks.
    """
    if normalize not in NORMALIZATIONS:
        raise OptionError(
            f"Unknown normalization {normalize!r}: choose one of {', '.join(NORMALIZATIONS)}."
        )
    raw = well_profiles(cells, platemaps, statistic)
    features = profile_features(raw)
    if not features:
        raise TableError(
            "The cell table has no measurement columns (Nuclei_*, Cells_*, Cytoplasm_*): "
            "profile a table written by phenoadapt segment."
        )
    table, fallbacks = raw, 0
    if normalize != "none":
        require_controls(raw, normalize)  # named after the method the user chose
        table, fallbacks = robust_zscore(raw, features)
    selection = None
    if feature_select:
        selection = select_features(table, features)
        features = selection.kept
        if not features:
            raise TableError(
                f"Feature selection dropped every feature of the {len(raw)} wells "
                f"({selection.summary()}): profile more wells, or turn feature selection off."
            )
        meta = [c for c in table.columns if schema.is_metadata(str(c))]
        table = table[meta + features]
    if normalize != "none":
        # 0 is the plate's control median: a value still missing does not move the well.
        table = table.copy()
        table[features] = table[features].fillna(0.0)
    if normalize == "sphering":
        table = sphere_controls(table, features, epsilon)
    return MeasurementProfiles(raw, table.reset_index(drop=True), normalize, selection, fallbacks)


def profile_activity(table: pd.DataFrame) -> pd.Series:
    """How far each well's normalized profile lies from its plate's controls.

    The root mean square of a well's feature values in a table normalized to
    the controls (robust z-score or sphering): about 1 for a well that looks
    like the controls (their features have median 0 and unit spread), larger
    for a well whose cells changed.  One number per well, for the plate grid.

    Parameters
    ----------
    table
        Normalized profiles (:func:`measurement_profiles`): metadata and features.

    Returns
    -------
    pandas.Series
        One value per row of ``table`` (same index), NaN for a row without features.
    """
    features = profile_features(table)
    values = table[features].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        rms = np.sqrt(np.nanmean(values**2, axis=1)) if features else np.full(len(table), np.nan)
    return pd.Series(rms, index=table.index, name="profile_activity")


def measurement_profiles(
    cells: pd.DataFrame,
    platemaps: Mapping[str, Any] | Any | None = None,
    normalize: str = "robust-zscore",
    feature_select: bool = True,
    *,
    epsilon: float = SPHERING_EPSILON,
    statistic: str = "median",
) -> pd.DataFrame:
    """Per-well morphology profiles of one or more plates, normalized to each plate's controls.

    Parameters
    ----------
    cells
        Per-cell table (``phenoadapt segment --out``; several plates concatenated).
    platemaps
        Plate id -> plate map, or one map for all plates (None: the table's own
        role, treatment and MoA columns).  Wells marked ``excluded`` are left out.
    normalize
        ``"robust-zscore"`` (default), ``"sphering"`` or ``"none"``.
    feature_select
        Drop position, NaN-heavy, near-constant and highly correlated features.
    epsilon
        Sphering ridge (see :data:`SPHERING_EPSILON`).
    statistic
        Aggregation over a well's cells: ``"median"`` (default) or ``"mean"``.

    Returns
    -------
    pandas.DataFrame
        One row per (plate, well): ``Metadata_*`` columns first, then features.

    Raises
    ------
    phenoadapt.errors.PhenoadaptError
        An unknown normalization (OptionError), a plate without control wells
        (NotEnoughControlsError), a table without measurements (TableError).
    """
    return build_profiles(
        cells, platemaps, normalize, feature_select, epsilon=epsilon, statistic=statistic
    ).table
