"""Control-based corrections of embeddings: phenotype correction, z-scores, sphering, TVN."""

from __future__ import annotations

import numpy as np
import pytest

from phenoadapt.adapt import (
    ControlSphering,
    TypicalVariationNormalizer,
    control_zscore,
    global_zscore,
    phenotype_correction,
    sphering,
    tvn,
)
from phenoadapt.errors import ContextError


def shifted_plates(seed: int = 0, n_controls: int = 40, n_treated: int = 40, dim: int = 4):
    """Three plates: a shared control distribution, per-plate affine distortion.

    Treated rows = controls' distribution + a fixed treatment effect, then the same
    plate distortion, so a good correction recovers the same effect on every plate.
    """
    rng = np.random.default_rng(seed)
    effect = np.array([3.0, -2.0, 0.0, 1.0])[:dim]
    rows, plates, controls = [], [], []
    for plate in range(3):
        scale = rng.uniform(0.5, 2.0, dim)
        shift = rng.normal(0, 5, dim)
        base = rng.normal(size=(n_controls + n_treated, dim))
        base[n_controls:] += effect
        rows.append(base * scale + shift)
        plates += [plate] * (n_controls + n_treated)
        controls += [True] * n_controls + [False] * n_treated
    return np.vstack(rows), np.array(plates), np.array(controls), effect


def test_phenotype_correction_subtracts_fraction_of_plate_control_mean():
    X = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 10.0], [20.0, 0.0], [22.0, 2.0], [0.0, 0.0]])
    plates = np.array(["A", "A", "A", "B", "B", "B"])
    controls = np.array([True, True, False, True, True, False])
    out = phenotype_correction(X, plates, controls)
    control_mean_a, control_mean_b = np.array([2.0, 3.0]), np.array([21.0, 1.0])
    assert np.allclose(out[:3], X[:3] - 0.7 * control_mean_a)
    assert np.allclose(out[3:], X[3:] - 0.7 * control_mean_b)
    full = phenotype_correction(X, plates, controls, fraction=1.0)
    assert np.allclose(full[[0, 1]].mean(axis=0), 0) and np.allclose(full[[3, 4]].mean(axis=0), 0)
    assert np.array_equal(X[0], [1.0, 2.0])  # input untouched


def test_plate_without_controls_is_a_context_error():
    X = np.ones((4, 2)) + np.arange(8).reshape(4, 2)
    plates = np.array(["A", "A", "B", "B"])
    controls = np.array([True, False, False, False])
    with pytest.raises(ContextError, match="plate B has 0 negative-control"):
        phenotype_correction(X, plates, controls)
    with pytest.raises(ContextError, match="plate A has 1"):
        control_zscore(X, plates, np.array([True, False, True, True]))
    with pytest.raises(ContextError, match="at least 2"):
        sphering(X, controls)
    with pytest.raises(ContextError, match="TVN"):
        tvn(X, plates, np.array([True, True, True, False]), n_components=1)


def test_control_zscore_standardizes_each_plates_controls():
    X, plates, controls, _ = shifted_plates()
    out = control_zscore(X, plates, controls)
    for plate in range(3):
        reference = out[(plates == plate) & controls]
        assert np.allclose(reference.mean(axis=0), 0, atol=1e-12)
        assert np.allclose(reference.std(axis=0, ddof=1), 1)
    # The treatment effect is recovered on every plate, up to sampling noise.
    for plate in range(3):
        treated = out[(plates == plate) & ~controls].mean(axis=0)
        assert np.allclose(treated, [3, -2, 0, 1], atol=0.7)


def test_control_zscore_constant_feature_does_not_explode():
    X = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 9.0], [4.0, 6.0], [5.0, 8.0], [6.0, 7.0]])
    plates = np.array([0, 0, 0, 1, 1, 1])
    controls = np.array([True, True, False, True, True, False])
    out = control_zscore(X, plates, controls)
    assert np.isfinite(out).all()
    # Plate 0's controls are constant in feature 1: the pooled control std (ddof=0) is used.
    pooled = X[controls, 1].std()
    assert out[2, 1] == pytest.approx((9.0 - 5.0) / pooled)


def test_global_zscore():
    X = np.array([[1.0, 3.0], [3.0, 3.0], [5.0, 3.0]])
    out = global_zscore(X)
    assert np.allclose(out[:, 0], [-1.2247449, 0, 1.2247449])
    assert np.allclose(out[:, 1], 0)  # constant feature: centred, not divided by zero
    fitted = global_zscore(X, fit=np.array([True, True, False]))
    assert np.allclose(fitted[:, 0], [-1, 1, 3])


def test_sphering_whitens_controls():
    rng = np.random.default_rng(2)
    mixing = np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]])
    X = rng.normal(size=(2000, 3)) @ mixing + 7.0
    controls = np.zeros(len(X), bool)
    controls[:1500] = True
    out = sphering(X, controls, shrinkage=0.0)
    assert np.allclose(out[controls].mean(axis=0), 0, atol=1e-10)
    assert np.allclose(np.cov(out[controls], rowvar=False), np.eye(3), atol=1e-8)
    # ZCA: the whitening matrix is symmetric, so features keep their identity.
    model = ControlSphering(shrinkage=0.0).fit(X[controls])
    assert np.allclose(model.whitening_, model.whitening_.T)
    # Ledoit-Wolf needs no tuning and stays finite with fewer controls than features.
    few = rng.normal(size=(5, 20))
    assert np.isfinite(ControlSphering().fit(few).transform(few)).all()
    with pytest.raises(ValueError, match="ledoit-wolf"):
        sphering(X, controls, shrinkage="oas")


def test_tvn_recolours_every_plate_to_the_pooled_control_covariance():
    X, plates, controls, _ = shifted_plates(dim=4)
    # Without regularization, whiten-then-recolour maps each plate's control covariance
    # exactly onto the pooled one, which is the identity after the control PCA whitening.
    exact = tvn(X, plates, controls, n_components=4, regularization=0.0)
    for plate in range(3):
        reference = exact[(plates == plate) & controls]
        assert np.allclose(reference.mean(axis=0), 0, atol=1e-10)
        assert np.allclose(np.cov(reference, rowvar=False), np.eye(4), atol=1e-8)
    # With the default +0.5 I the controls are still centred and the treatment effect
    # points the same way on every plate.
    out = tvn(X, plates, controls, n_components=4)
    effects = []
    for plate in range(3):
        assert np.allclose(out[(plates == plate) & controls].mean(axis=0), 0, atol=1e-10)
        effects.append(out[(plates == plate) & ~controls].mean(axis=0))
    unit = np.array(effects) / np.linalg.norm(effects, axis=1, keepdims=True)
    assert (unit @ unit.T).min() > 0.9


def test_tvn_exact_maths_on_one_plate():
    # With one plate the per-plate and pooled control covariances coincide, so
    # Sigma^{1/2} Sigma_p^{-1/2} = I and TVN reduces to control PCA whitening.
    X, plates, controls, _ = shifted_plates(dim=3)
    one = plates == 0
    model = TypicalVariationNormalizer(n_components=3, regularization=0.5)
    out = model.fit(X[one], controls[one]).transform(X[one], plates[one], controls[one])
    assert np.allclose(out, model._project(X[one]) - model._project(X[one][controls[one]]).mean(0))
    assert np.allclose(np.cov(out[controls[one]], rowvar=False), np.eye(3), atol=1e-8)


def test_tvn_transforms_new_plates_with_their_own_controls():
    X, plates, controls, _ = shifted_plates(dim=3)
    train = plates < 2
    model = TypicalVariationNormalizer(n_components=3).fit(X[train], controls[train])
    new = model.transform(X[~train], plates[~train], controls[~train])
    assert np.allclose(new[controls[~train]].mean(axis=0), 0, atol=1e-10)
    fraction = TypicalVariationNormalizer(n_components=0.9).fit(X, controls)
    assert 1 <= fraction.pca_.n_components_ <= 3


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="NaN"):
        global_zscore(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="one entry per row"):
        phenotype_correction(np.ones((3, 2)), np.array([0, 0]), np.array([True, False, True]))
