r"""Correcting embeddings and profiles with the negative controls of each plate.

Every function takes a matrix ``X`` of shape ``(n_samples, n_features)`` (per-cell,
per-site or per-well embeddings or CellProfiler profiles), the plate (or batch) of
each row and a boolean mask of the negative-control rows (e.g. DMSO wells).  The
controls of a plate show what "no treatment" looks like in that very plate, so
their statistics describe the plate's technical shift.

Methods, all deterministic:

- :func:`phenotype_correction` (PhenoProfiler): per plate,
  :math:`x' = x - \alpha\,\bar c_p` with :math:`\bar c_p` the mean of the plate's
  controls and :math:`\alpha = 0.7` by default (:math:`\alpha = 1` centres every plate
  on its controls).
- :func:`control_zscore`: per plate, :math:`x' = (x - \bar c_p) / s_p` with
  :math:`s_p` the per-feature standard deviation of the plate's controls.
- :func:`global_zscore`: :math:`x' = (x - \bar x) / s` over all rows.
- :func:`sphering` / :class:`ControlSphering`: ZCA whitening fitted on the controls
  of all plates, so that control variation (technical noise) is spread evenly over
  all directions and treatment effects along rarely varying directions stand out.
- :func:`tvn` / :class:`TypicalVariationNormalizer`: typical variation
  normalization (Ando et al. 2017), i.e. control-based PCA whitening followed by a
  per-plate CORAL alignment of the control covariance; the maths are on the class.

A plate with no controls (or too few to estimate what a method needs) raises
:class:`phenoadapt.errors.ContextError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from ..errors import ContextError

Shrinkage = Literal["ledoit-wolf"] | float


def _as_inputs(
    X: np.ndarray, plates: np.ndarray | None, controls: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate shapes and return float64 ``X``, ``plates`` and boolean ``controls``."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X holds NaN or infinite values; clean the features first")
    if plates is not None:
        plates = np.asarray(plates)
        if plates.shape != (len(X),):
            raise ValueError(
                f"plates must have one entry per row of X ({len(X)}), got {plates.shape}"
            )
    if controls is not None:
        controls = np.asarray(controls, dtype=bool)
        if controls.shape != (len(X),):
            raise ValueError(
                f"controls must be a boolean mask with one entry per row of X ({len(X)}), "
                f"got shape {controls.shape}"
            )
    return X, plates, controls


def _require_controls(controls: np.ndarray, minimum: int, method: str) -> None:
    if controls.sum() < minimum:
        raise ContextError(
            f"{method} needs at least {minimum} negative-control rows, got {int(controls.sum())}; "
            "mark the DMSO (or other negative-control) wells with role 'control'"
        )


def _plates_with_controls(
    plates: np.ndarray, controls: np.ndarray, minimum: int, method: str
) -> Iterator[tuple[object, np.ndarray, np.ndarray]]:
    """Yield ``(plate, rows, control_rows)`` boolean masks, checking each plate's controls."""
    for plate in np.unique(plates):
        rows = plates == plate
        plate_controls = rows & controls
        n = int(plate_controls.sum())
        if n < minimum:
            raise ContextError(
                f"plate {plate} has {n} negative-control row(s) but {method} needs at least "
                f"{minimum} per plate; add control wells to the plate map, or drop the plate"
            )
        yield plate, rows, plate_controls


def _symmetric_power(matrix: np.ndarray, power: float) -> np.ndarray:
    """``matrix ** power`` for a symmetric positive (semi-)definite matrix."""
    values, vectors = np.linalg.eigh(matrix)
    # Round-off can make tiny eigenvalues negative; they are clipped, not inverted.
    values = np.clip(values, np.finfo(np.float64).tiny, None)
    return (vectors * values**power) @ vectors.T


def _safe_std(values: np.ndarray, ddof: int, fallback: np.ndarray | None = None) -> np.ndarray:
    """Per-column standard deviation with zeros replaced by ``fallback`` (or 1)."""
    std = values.std(axis=0, ddof=ddof) if len(values) > ddof else np.zeros(values.shape[1])
    zero = std <= 0
    if zero.any():
        replacement = fallback if fallback is not None else np.ones_like(std)
        std = np.where(zero, replacement, std)
        std = np.where(std <= 0, 1.0, std)
    return std


def phenotype_correction(
    X: np.ndarray, plates: np.ndarray, controls: np.ndarray, fraction: float = 0.7
) -> np.ndarray:
    r"""Subtract a fraction of each plate's control mean (PhenoProfiler's correction).

    :math:`x' = x - \alpha\,\bar c_p` for every row :math:`x` of plate :math:`p`, with
    :math:`\bar c_p` the mean of the plate's control rows.

    Parameters
    ----------
    X
        ``(n_samples, n_features)`` embeddings or profiles.
    plates
        Plate (or batch) label of each row.
    controls
        Boolean mask of the negative-control rows.
    fraction
        :math:`\alpha`; 0.7 in PhenoProfiler, which keeps part of the plate's
        baseline; 1.0 centres each plate on its controls.

    Returns
    -------
    numpy.ndarray
        Corrected copy of ``X``.

    Raises
    ------
    phenoadapt.errors.ContextError
        When a plate has no control row.
    """
    X, plates, controls = _as_inputs(X, plates, controls)
    out = X.copy()
    for _, rows, plate_controls in _plates_with_controls(
        plates, controls, 1, "phenotype correction"
    ):
        out[rows] -= fraction * X[plate_controls].mean(axis=0)
    return out


def global_zscore(X: np.ndarray, fit: np.ndarray | None = None) -> np.ndarray:
    """Standardize every feature with the mean and standard deviation of all rows.

    Parameters
    ----------
    X
        ``(n_samples, n_features)`` matrix.
    fit
        Optional boolean mask of the rows that define mean and deviation (default: all).

    Returns
    -------
    numpy.ndarray
        Standardized copy; a constant feature is centred and left unscaled.
    """
    X, _, fit_rows = _as_inputs(X, None, fit)
    reference = X if fit_rows is None else X[fit_rows]
    if len(reference) == 0:
        raise ValueError("global_zscore: the fit mask selects no rows")
    return (X - reference.mean(axis=0)) / _safe_std(reference, ddof=0)


def control_zscore(
    X: np.ndarray, plates: np.ndarray, controls: np.ndarray, ddof: int = 1
) -> np.ndarray:
    r"""Per plate, standardize with the mean and standard deviation of the plate's controls.

    :math:`x' = (x - \bar c_p) / s_p`.  A feature that is constant among a plate's
    controls is divided by its standard deviation over the controls of all plates
    instead (or left unscaled when that is zero too), so it does not explode.

    Raises
    ------
    phenoadapt.errors.ContextError
        When a plate has fewer than ``ddof + 1`` control rows.
    """
    X, plates, controls = _as_inputs(X, plates, controls)
    pooled = _safe_std(X[controls], ddof=0) if controls.any() else None
    out = np.empty_like(X)
    for _, rows, plate_controls in _plates_with_controls(
        plates, controls, ddof + 1, "per-plate control z-scoring"
    ):
        reference = X[plate_controls]
        out[rows] = (X[rows] - reference.mean(axis=0)) / _safe_std(reference, ddof, pooled)
    return out


def _covariance(values: np.ndarray, shrinkage: Shrinkage) -> np.ndarray:
    """Covariance of centred ``values``: Ledoit-Wolf shrunk or sample + ``shrinkage`` * I."""
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit-wolf":
            raise ValueError(f"shrinkage must be 'ledoit-wolf' or a number, not {shrinkage!r}")
        return LedoitWolf(assume_centered=True).fit(values).covariance_
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
    sample = values.T @ values / max(len(values) - 1, 1)
    return sample + float(shrinkage) * np.eye(values.shape[1])


class ControlSphering:
    r"""ZCA whitening (sphering) fitted on negative controls.

    Fit: with :math:`\mu, s` the per-feature mean and standard deviation of the
    controls and :math:`z = (x - \mu)/s`, estimate the control covariance
    :math:`\Sigma` of :math:`z` and keep :math:`W = \Sigma^{-1/2}` (symmetric, so
    the result stays aligned with the original features: "ZCA-cor").
    Transform: :math:`x' = W (x - \mu)/s`.

    With fewer controls than features the sample covariance is singular, so it is
    regularized: ``shrinkage="ledoit-wolf"`` (default) shrinks it towards a scaled
    identity by the amount that minimizes the expected estimation error (Ledoit &
    Wolf 2004), which needs no tuning; a number :math:`\lambda` adds
    :math:`\lambda I` to the sample covariance instead.

    Parameters
    ----------
    shrinkage
        ``"ledoit-wolf"`` or a non-negative ridge :math:`\lambda` (in units of the
        standardized features).
    """

    def __init__(self, shrinkage: Shrinkage = "ledoit-wolf") -> None:
        self.shrinkage = shrinkage

    def fit(self, X_controls: np.ndarray) -> ControlSphering:
        """Estimate mean, scale and whitening matrix from control rows."""
        X_controls, _, _ = _as_inputs(X_controls, None, None)
        _require_controls(np.ones(len(X_controls), bool), 2, "sphering")
        self.mean_ = X_controls.mean(axis=0)
        self.scale_ = _safe_std(X_controls, ddof=1)
        centred = (X_controls - self.mean_) / self.scale_
        self.whitening_ = _symmetric_power(_covariance(centred, self.shrinkage), -0.5)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Whiten ``X`` with the fitted control statistics."""
        X, _, _ = _as_inputs(X, None, None)
        return ((X - self.mean_) / self.scale_) @ self.whitening_


def sphering(
    X: np.ndarray, controls: np.ndarray, shrinkage: Shrinkage = "ledoit-wolf"
) -> np.ndarray:
    """Fit :class:`ControlSphering` on the control rows of ``X`` and transform all rows."""
    X, _, controls = _as_inputs(X, None, controls)
    _require_controls(controls, 2, "sphering")
    return ControlSphering(shrinkage).fit(X[controls]).transform(X)


class TypicalVariationNormalizer:
    r"""Typical variation normalization (TVN) with per-plate CORAL alignment.

    Fit, on the control rows :math:`c` of all plates (the "typical variation"):

    1. scale: :math:`z = (x - \mu)/s`, per-feature mean and standard deviation of
       the controls;
    2. PCA-whiten: :math:`u = \Lambda^{-1/2} P^\top z`, with :math:`P, \Lambda` the
       leading principal axes and variances of the controls' :math:`z`; the controls'
       :math:`u` then have mean 0 and identity covariance;
    3. pooled target: :math:`\Sigma = \mathrm{cov}(u_c) + \lambda I` (:math:`\lambda`
       = ``regularization``, 0.5 by default).

    Transform, plate by plate, using that plate's own control rows:

    4. :math:`\mu_p, \Sigma_p = \mathrm{cov}(u_{c,p}) + \lambda I`, the mean and
       regularized covariance of the plate's controls;
    5. :math:`u' = \Sigma^{1/2}\,\Sigma_p^{-1/2}\,(u - \mu_p)`: whiten with the
       plate's control covariance, re-colour to the pooled one.  The plate's controls
       then have mean 0 (the pooled control mean) and, up to the regularization, the
       pooled covariance, so plates are aligned on what their controls share.

    Square roots are symmetric (eigendecomposition).  The regularization keeps
    :math:`\Sigma_p^{-1/2}` finite when a plate has fewer controls than dimensions.

    Whitening gives every kept principal axis unit variance, including axes that
    only hold noise; ``n_components`` therefore keeps the axes that explain a given
    fraction of the control variance (0.99 by default) or a fixed number of axes.

    Parameters
    ----------
    n_components
        Fraction of control variance in (0, 1) or number of PCA axes to keep.
    regularization
        :math:`\lambda` added to both covariances.
    """

    def __init__(self, n_components: float | int = 0.99, regularization: float = 0.5) -> None:
        self.n_components = n_components
        self.regularization = regularization

    def fit(self, X: np.ndarray, controls: np.ndarray) -> TypicalVariationNormalizer:
        """Fit the scaler, the PCA and the pooled control covariance on ``X[controls]``."""
        X, _, controls = _as_inputs(X, None, controls)
        _require_controls(controls, 2, "TVN")
        reference = X[controls]
        self.mean_ = reference.mean(axis=0)
        self.scale_ = _safe_std(reference, ddof=1)
        z = (reference - self.mean_) / self.scale_
        n_components = self.n_components
        if isinstance(n_components, int):
            n_components = min(n_components, len(z) - 1, z.shape[1])
        self.pca_ = PCA(n_components=n_components, whiten=True, svd_solver="full").fit(z)
        u = self.pca_.transform(z)
        eye = np.eye(u.shape[1])
        self.target_root_ = _symmetric_power(
            np.cov(u, rowvar=False) + self.regularization * eye, 0.5
        )
        return self

    def _project(self, X: np.ndarray) -> np.ndarray:
        return self.pca_.transform((X - self.mean_) / self.scale_)

    def transform(self, X: np.ndarray, plates: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """Align every plate of ``X`` using its own control rows (steps 4-5).

        Raises
        ------
        phenoadapt.errors.ContextError
            When a plate has fewer than 2 control rows (a covariance needs two).
        """
        X, plates, controls = _as_inputs(X, plates, controls)
        u = self._project(X)
        eye = np.eye(u.shape[1])
        out = np.empty_like(u)
        for _, rows, plate_controls in _plates_with_controls(plates, controls, 2, "TVN"):
            reference = u[plate_controls]
            plate_cov = np.cov(reference, rowvar=False) + self.regularization * eye
            # Row vectors: u'^T = (u - mu_p)^T Sigma_p^{-1/2} Sigma^{1/2}.
            out[rows] = (
                (u[rows] - reference.mean(axis=0))
                @ _symmetric_power(plate_cov, -0.5)
                @ self.target_root_
            )
        return out


def tvn(
    X: np.ndarray,
    plates: np.ndarray,
    controls: np.ndarray,
    n_components: float | int = 0.99,
    regularization: float = 0.5,
) -> np.ndarray:
    """Fit :class:`TypicalVariationNormalizer` on the controls of ``X`` and align every plate.

    Returns
    -------
    numpy.ndarray
        ``(n_samples, n_kept_components)`` aligned embeddings.
    """
    normalizer = TypicalVariationNormalizer(n_components, regularization)
    return normalizer.fit(X, controls).transform(X, plates, controls)
