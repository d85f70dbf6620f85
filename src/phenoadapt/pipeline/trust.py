r"""Plate trust check: how far a new plate's negative controls are from the training plates'.

Every plate carries negative-control wells, whose cells look the same whatever the
plate *except* for the technical shift of the plate.  How far a new plate's
controls sit from the training plates' controls is therefore a label-free measure
of how far the plate is from the data the network learned from.

The signature of a plate is the mean, over its control cells, of the network's
pooled features computed with the **training** batch-norm statistics (eval mode,
no adaptation): a fixed feature map, so the same plate always gets the same
distance whatever test-time method predicts it.  With

- :math:`m_{pj}` the control mean of plate :math:`p` in feature :math:`j`,
- :math:`M_j` the mean of the training plates' control means,
- :math:`S_j` the pooled within-plate standard deviation of control cells,
- :math:`n_p` the plate's number of control cells,

the distance is the root-mean-square standardized shift of the control mean,
corrected for the sampling noise of a mean of :math:`n_p` cells (each
standardized mean has variance :math:`1/n_p` around its true value):

.. math:: d_p = \sqrt{\max\Big(0,\ \frac{1}{J}\sum_j \Big(\frac{m_{pj} - M_j}{S_j}\Big)^2
          - \frac{1}{n_p}\Big)}.

It reads in within-plate standard deviations of a control cell: 0.5 means the
plate's controls sit, on average over features, half a cell-to-cell spread away
from the training controls.  The reference range is the distance of each training
plate to the *other* training plates (leave one plate out, so a training plate
does not count towards its own centre), and of each validation plate to all
training plates.  A plate further than every reference plate is outside what the
network has seen.

Everything the check needs from training (:class:`TrustReference`) is a few lists
of plain numbers stored in the checkpoint metadata (``extra["plate_trust"]``),
never a pickle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..errors import ModelError, TableError
from .runner import unadapted_features

#: Key of the reference in a checkpoint's ``metadata.extra``.
METADATA_KEY = "plate_trust"
#: What the features of a reference are (checked when a plate is scored).
FEATURE = "pooled features, training statistics"
#: Significant digits kept in the checkpoint (the metadata stays a few tens of kB).
_DIGITS = 6
#: Smallest within-plate standard deviation used to standardize a feature: a
#: feature constant among the training controls (a dead ReLU) carries no shift.
_MIN_SCALE = 1e-6

#: Levels of :attr:`PlateTrust.level`, from closest to furthest.
LEVELS = ("typical", "within range", "beyond", "unknown")


def _round(values: np.ndarray) -> list[float]:
    return [float(f"{v:.{_DIGITS}g}") for v in np.asarray(values, dtype=np.float64)]


@dataclass(frozen=True)
class TrustReference:
    """The training side of the check: control centre and spread, and reference distances.

    Attributes
    ----------
    centre
        Mean of the training plates' control means, per feature.
    scale
        Pooled within-plate standard deviation of the training control cells, per feature.
    training
        Leave-one-plate-out distance of each training plate.
    validation
        Distance of each validation plate to the training plates.
    feature
        What the features are (:data:`FEATURE`).
    """

    centre: tuple[float, ...]
    scale: tuple[float, ...]
    training: dict[str, float] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    feature: str = FEATURE

    @property
    def reference(self) -> dict[str, float]:
        """Every reference plate's distance (training and validation)."""
        return {**self.training, **self.validation}

    @property
    def limit(self) -> float:
        """The largest reference distance (NaN without reference plates)."""
        values = [v for v in self.reference.values() if math.isfinite(v)]
        return max(values) if values else math.nan

    @property
    def typical(self) -> float:
        """The median reference distance (NaN without reference plates)."""
        values = [v for v in self.reference.values() if math.isfinite(v)]
        return float(np.median(values)) if values else math.nan

    def to_json(self) -> dict[str, Any]:
        """Plain JSON numbers and strings, for ``CheckpointMetadata.extra``."""
        return {
            "feature": self.feature,
            "centre": _round(np.asarray(self.centre)),
            "scale": _round(np.asarray(self.scale)),
            "training": {k: _round(np.array([v]))[0] for k, v in self.training.items()},
            "validation": {k: _round(np.array([v]))[0] for k, v in self.validation.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrustReference:
        """Rebuild from :meth:`to_json`; :class:`ModelError` when malformed."""
        try:
            centre = np.asarray(data["centre"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
            training = {str(k): float(v) for k, v in dict(data.get("training", {})).items()}
            validation = {str(k): float(v) for k, v in dict(data.get("validation", {})).items()}
            feature = str(data.get("feature", FEATURE))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"The checkpoint's plate-trust reference is malformed ({exc}); retrain the model "
                "or ignore the trust check."
            ) from exc
        if centre.ndim != 1 or centre.shape != scale.shape or not len(centre):
            raise ModelError(
                f"The checkpoint's plate-trust reference has {centre.size} centre and "
                f"{scale.size} scale values; they must be two lists of the same length."
            )
        if not (np.isfinite(centre).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ModelError(
                "The checkpoint's plate-trust reference holds non-finite or non-positive "
                "values; retrain the model or ignore the trust check."
            )
        return cls(tuple(centre), tuple(scale), training, validation, feature)


@dataclass(frozen=True)
class PlateTrust:
    """Distance of one plate's controls to the training plates', and its plain reading.

    Attributes
    ----------
    plate
        Plate id.
    distance
        :math:`d_p` of the module docstring (NaN without control cells).
    n_controls
        Control cells the plate's signature averages.
    limit, typical
        Largest and median distance of the reference plates.
    n_reference
        Number of reference plates.
    """

    plate: str
    distance: float
    n_controls: int
    limit: float
    typical: float
    n_reference: int

    @property
    def level(self) -> str:
        """``typical`` (at most the median reference plate), ``within range`` (at most the
        furthest), ``beyond`` (further than any reference plate) or ``unknown``."""
        if not math.isfinite(self.distance) or not math.isfinite(self.limit):
            return "unknown"
        if self.distance <= self.typical:
            return "typical"
        return "within range" if self.distance <= self.limit else "beyond"

    @property
    def ratio(self) -> float:
        """Distance over the furthest reference plate's (above 1: beyond)."""
        return self.distance / self.limit if self.limit > 0 else math.nan

    def reading(self) -> str:
        """One sentence for a person: how this plate compares with the training plates."""
        if not math.isfinite(self.distance):
            return "no control cells: the distance to the training data cannot be measured"
        span = f"distance {self.distance:.2f}"
        if not math.isfinite(self.limit):
            return f"{span}; the model has no reference plates to compare it with"
        ref = f"training plates up to {self.limit:.2f}"
        if self.level == "typical":
            return f"as close to the training data as a typical training plate ({span}; {ref})"
        if self.level == "within range":
            return f"within the range of the training plates ({span}; {ref})"
        return (
            f"this plate is further from the training data than any training plate ({span}, "
            f"{self.ratio:.1f}x the furthest; {ref}): check its predictions"
        )

    def as_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready row (for tables and run records)."""
        return {
            schema.PLATE: self.plate,
            "trust_distance": self.distance,
            "trust_limit": self.limit,
            "trust_level": self.level,
            "n_controls": self.n_controls,
        }


# --------------------------------------------------------------------------- numbers


def _control_means(
    features: np.ndarray, plates: np.ndarray, controls: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, int], dict[str, np.ndarray]]:
    """Per plate: control mean, number of control cells and sum of squared deviations."""
    means, counts, squares = {}, {}, {}
    for plate in sorted(set(plates[controls].tolist())):
        rows = features[controls & (plates == plate)]
        means[plate] = rows.mean(axis=0)
        counts[plate] = len(rows)
        squares[plate] = ((rows - means[plate]) ** 2).sum(axis=0)
    return means, counts, squares


def _distance(mean: np.ndarray, n: int, centre: np.ndarray, scale: np.ndarray) -> float:
    if n < 1:
        return math.nan
    z2 = float(np.mean(((mean - centre) / scale) ** 2))
    return math.sqrt(max(0.0, z2 - 1.0 / n))


def _inputs(
    features: np.ndarray, plates: Sequence[str], controls: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(features, dtype=np.float64)
    plates = np.asarray(plates).astype(str)
    controls = np.asarray(controls, dtype=bool)
    if X.ndim != 2 or len(X) != len(plates) or len(X) != len(controls):
        raise TableError(
            f"plate trust needs one feature row, plate and control flag per cell; got "
            f"{X.shape} features, {len(plates)} plates and {len(controls)} flags"
        )
    finite = np.isfinite(X).all(axis=1)
    return X[finite], plates[finite], controls[finite]


def fit_trust_reference(
    features: np.ndarray,
    plates: Sequence[str],
    controls: np.ndarray,
    validation: tuple[np.ndarray, Sequence[str], np.ndarray] | None = None,
) -> TrustReference:
    """The training side of the check, from the training plates' control features.

    Parameters
    ----------
    features
        ``(n, d)`` features of training cells (only control rows are used), e.g.
        from :func:`control_features`; rows with NaN are ignored.
    plates
        Plate of each row.
    controls
        True for negative-control rows.
    validation
        Optional ``(features, plates, controls)`` of validation plates: their
        distances to all training plates join the reference range.

    Returns
    -------
    TrustReference

    Raises
    ------
    phenoadapt.errors.TableError
        Without control cells, or with fewer than 2 control cells per plate.
    """
    X, plates, controls = _inputs(features, plates, controls)
    means, counts, squares = _control_means(X, plates, controls)
    if not means or sum(counts.values()) - len(means) < 1:
        raise TableError(
            "the plate trust reference needs training plates with at least 2 control cells; "
            "mark the negative-control wells in the plate maps"
        )
    # Pooled within-plate variance: the technical shift between plates stays out of it.
    pooled = sum(squares.values()) / (sum(counts.values()) - len(means))
    scale = np.maximum(np.sqrt(pooled), _MIN_SCALE)
    stacked = np.stack([means[p] for p in means])
    centre = stacked.mean(axis=0)
    training: dict[str, float] = {}
    if len(means) >= 2:
        for k, plate in enumerate(means):
            others = np.delete(stacked, k, axis=0).mean(axis=0)
            training[plate] = _distance(means[plate], counts[plate], others, scale)
    scored: dict[str, float] = {}
    if validation is not None:
        Xv, pv, cv = _inputs(*validation)
        v_means, v_counts, _ = _control_means(Xv, pv, cv)
        scored = {p: _distance(v_means[p], v_counts[p], centre, scale) for p in v_means}
    return TrustReference(tuple(centre), tuple(scale), training, scored)


def plate_trust(
    features: np.ndarray,
    plates: Sequence[str],
    controls: np.ndarray,
    reference: TrustReference,
) -> list[PlateTrust]:
    """Distance of every plate's controls to the training plates' controls.

    Parameters
    ----------
    features
        ``(n, d)`` features of the cells (training statistics, as the reference's);
        rows with NaN (cells not predicted) are ignored.
    plates, controls
        Plate of each row and True for negative-control rows.
    reference
        From :func:`fit_trust_reference` or :func:`reference_from_metadata`.

    Returns
    -------
    list of PlateTrust
        One per plate, in sorted plate order; plates without controls get NaN.
    """
    X, plates_arr, controls_arr = _inputs(features, plates, controls)
    centre, scale = np.asarray(reference.centre), np.asarray(reference.scale)
    if X.shape[1] != len(centre):
        raise ModelError(
            f"the features have {X.shape[1]} dimensions but the plate-trust reference "
            f"{len(centre)}: score plates with the network the reference was fitted with"
        )
    means, counts, _ = _control_means(X, plates_arr, controls_arr)
    out = []
    for plate in sorted(set(np.asarray(plates).astype(str).tolist())):
        n = counts.get(plate, 0)
        d = _distance(means[plate], n, centre, scale) if n else math.nan
        out.append(
            PlateTrust(plate, d, n, reference.limit, reference.typical, len(reference.reference))
        )
    return out


# --------------------------------------------------------------------------- networks


def control_features(
    model: Any,
    images: np.ndarray,
    *,
    input_size: int | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Pooled features of ``images`` with the network's training statistics (eval mode).

    Parameters
    ----------
    model
        A network with ``embed`` (ResNet, ABRA); left in eval mode.
    images
        ``(n, C, h, w)`` crops in the network's channel order.
    input_size
        Centre crop applied at test time (the checkpoint's ``input_size``).
    batch_size
        Crops per forward pass.

    Returns
    -------
    numpy.ndarray
        ``(n, d)`` float32 features.
    """
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper
    rows = np.arange(len(images))
    return unadapted_features(model, images, rows, input_size, batch_size, None, None)


def reference_for_model(
    model: Any,
    images: np.ndarray,
    table: pd.DataFrame,
    *,
    validation: tuple[np.ndarray, pd.DataFrame] | None = None,
    input_size: int | None = None,
    batch_size: int = 256,
) -> TrustReference:
    """:func:`fit_trust_reference` on a trained network's features of the training controls.

    Only the control rows of ``table`` (``Metadata_Role == control``) are forwarded.

    Parameters
    ----------
    model
        The trained network.
    images, table
        Training crops and their per-cell table (plate and role columns).
    validation
        Optional validation ``(images, table)``.
    input_size, batch_size
        As for :func:`control_features`.
    """

    def features(imgs: np.ndarray, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        controls = (rows[schema.ROLE].astype(str) == schema.Role.CONTROL.value).to_numpy()
        picked = np.flatnonzero(controls)
        X = control_features(model, imgs[picked], input_size=input_size, batch_size=batch_size)
        return X, rows[schema.PLATE].astype(str).to_numpy()[picked], np.ones(len(picked), bool)

    held = features(*validation) if validation is not None else None
    return fit_trust_reference(*features(images, table), validation=held)


def reference_from_metadata(extra: Mapping[str, Any]) -> TrustReference | None:
    """The reference stored in a checkpoint's ``metadata.extra`` (None for older checkpoints)."""
    data = extra.get(METADATA_KEY)
    return None if data is None else TrustReference.from_json(data)


def trust_of_run(
    cells: pd.DataFrame, unadapted: np.ndarray | None, extra: Mapping[str, Any]
) -> list[PlateTrust]:
    """Plate trust of a prediction run from its cell table and training-statistics features.

    Parameters
    ----------
    cells
        The run's per-cell table (plate and role columns).
    unadapted
        Its features under the training statistics (``RunResult.embeddings_unadapted``).
    extra
        The checkpoint's ``metadata.extra``.

    Returns
    -------
    list of PlateTrust
        Empty when the checkpoint has no reference or the features were not computed.
    """
    reference = reference_from_metadata(extra)
    if reference is None or unadapted is None or schema.ROLE not in cells.columns:
        return []
    controls = (cells[schema.ROLE].astype(str) == schema.Role.CONTROL.value).to_numpy()
    return plate_trust(unadapted, cells[schema.PLATE].astype(str).to_numpy(), controls, reference)


def checkpoint_reference(
    model: Any, train: Any, val: Any | None = None, input_size: int | None = None
) -> dict[str, Any]:
    """The JSON document a training run stores under ``metadata.extra["plate_trust"]``.

    Parameters
    ----------
    model
        The trained network.
    train, val
        :class:`phenoadapt.train.CellData` of the training and (optional) validation plates.
    input_size
        The checkpoint's test-time centre crop.
    """
    held = (val.images, val.table) if val is not None and len(val) else None
    reference = reference_for_model(
        model, train.images, train.table, validation=held, input_size=input_size
    )
    return reference.to_json()


def run_trust(result: Any) -> list[PlateTrust]:
    """Plate trust of a finished prediction run (``phenoadapt predict``, the GUI's Run).

    Reads the reference from the run's checkpoint (``result.record["models"]``) and
    scores each plate with the run's training-statistics features
    (``result.embeddings_unadapted``).

    Parameters
    ----------
    result
        A :class:`phenoadapt.pipeline.RunResult` with its ``record``.

    Returns
    -------
    list of PlateTrust
        Empty for an ensemble, a checkpoint without a reference (trained before the
        check existed), or a run without training-statistics features.  A malformed
        reference gives a warning and an empty list: the check informs, it never
        fails a finished run.
    """
    import warnings

    from ..train.checkpoint import read_checkpoint_metadata

    record = getattr(result, "record", None) or {}
    models = record.get("models") or []
    unadapted = getattr(result, "embeddings_unadapted", None)
    if len(models) != 1 or unadapted is None:
        return []
    try:
        extra = read_checkpoint_metadata(models[0]["file"]).extra
        return trust_of_run(result.cells, unadapted, extra)
    except (ModelError, TableError, OSError, KeyError) as exc:
        warnings.warn(f"plate trust check skipped: {exc}", stacklevel=2)
        return []


def trust_lines(trusts: Sequence[PlateTrust]) -> list[str]:
    """One summary line per plate, e.g. for the CLI: ``  P1: trust: <reading>``."""
    return [f"  {t.plate}: trust: {t.reading()}" for t in trusts]


def needs_unadapted(checkpoint: Any) -> bool:
    """Whether a run with ``checkpoint`` should compute training-statistics features
    for the trust check: a single checkpoint file whose metadata holds a reference."""
    from ..train.checkpoint import read_checkpoint_metadata

    if isinstance(checkpoint, list | tuple):
        if len(checkpoint) != 1:
            return False
        checkpoint = checkpoint[0]
    if checkpoint is None:
        return False
    try:
        return METADATA_KEY in read_checkpoint_metadata(checkpoint).extra
    except (ModelError, OSError):
        return False  # the run itself reports an unreadable checkpoint
