"""Plate trust check: distances of a plate's controls to the training plates' controls."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.errors import ModelError, TableError
from phenoadapt.pipeline.trust import (
    METADATA_KEY,
    TrustReference,
    fit_trust_reference,
    plate_trust,
    reference_for_model,
    reference_from_metadata,
    trust_of_run,
)


def _plates(shifts: dict[str, float], n: int = 400, d: int = 8, seed: int = 0):
    """Control cells of each plate: unit-variance noise around a shift of every feature."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(s, 1.0, (n, d)) for s in shifts.values()])
    plates = np.repeat(list(shifts), n)
    return X, plates, np.ones(len(X), bool)


def test_hand_case_distance_is_the_standardized_shift() -> None:
    # Two training plates, 2 cells each in 1 feature: means 0 and 2, within-plate sd 1.
    X = np.array([[-1.0], [1.0], [1.0], [3.0]])
    plates = np.array(["a", "a", "b", "b"])
    ref = fit_trust_reference(X, plates, np.ones(4, bool))
    assert ref.centre == (1.0,)
    # Pooled variance: (1 + 1 + 1 + 1) / (4 - 2) = 2.
    assert ref.scale[0] == pytest.approx(math.sqrt(2.0))
    # Leave one out: plate a against b's mean 2: z = -2 / sqrt(2), z^2 = 2, minus 1/n = 0.5.
    assert ref.training["a"] == pytest.approx(math.sqrt(1.5))
    # A new plate of 4 controls at mean 1 + 3 sqrt(2): z^2 = 9, minus 1/4.
    new = 1.0 + 3.0 * math.sqrt(2.0) + np.array([[-1.0], [1.0], [-1.0], [1.0]])
    (trust,) = plate_trust(new, ["new"] * 4, np.ones(4, bool), ref)
    assert trust.distance == pytest.approx(math.sqrt(9.0 - 0.25))
    assert trust.level == "beyond"
    assert "further from the training data than any training plate" in trust.reading()


def test_shifted_plate_is_beyond_and_a_like_plate_is_not() -> None:
    X, plates, controls = _plates({"t1": 0.0, "t2": 0.1, "t3": -0.1, "t4": 0.05})
    ref = fit_trust_reference(X, plates, controls)
    assert ref.limit < 0.2
    Xn, pn, cn = _plates({"close": 0.02, "far": 1.0}, seed=1)
    trusts = {t.plate: t for t in plate_trust(Xn, pn, cn, ref)}
    assert trusts["far"].distance == pytest.approx(1.0, abs=0.1)
    assert trusts["far"].level == "beyond"
    assert trusts["close"].level in ("typical", "within range")
    assert "check its predictions" in trusts["far"].reading()
    assert "further" not in trusts["close"].reading()


def test_noise_correction_makes_control_counts_comparable() -> None:
    # Same true shift (none), few or many controls: the distance stays near 0 for both.
    X, plates, controls = _plates({"t1": 0.0, "t2": 0.0, "t3": 0.0}, n=2000)
    ref = fit_trust_reference(X, plates, controls)
    for n in (20, 2000):
        Xn, pn, cn = _plates({"new": 0.0}, n=n, seed=n)
        (trust,) = plate_trust(Xn, pn, cn, ref)
        assert trust.distance < 0.15


def test_reference_round_trips_through_plain_json() -> None:
    X, plates, controls = _plates({"t1": 0.0, "t2": 0.3})
    Xv, pv, cv = _plates({"v": 0.6}, seed=2)
    ref = fit_trust_reference(X, plates, controls, validation=(Xv, pv, cv))
    assert set(ref.validation) == {"v"}
    text = json.dumps({METADATA_KEY: ref.to_json()})  # plain JSON: no custom types
    back = reference_from_metadata(json.loads(text))
    assert back is not None
    assert back.limit == pytest.approx(ref.limit, rel=1e-5)
    np.testing.assert_allclose(back.centre, ref.centre, rtol=1e-5)
    assert reference_from_metadata({}) is None


@pytest.mark.parametrize(
    "data",
    [
        {"centre": [0.0, 1.0], "scale": [1.0]},
        {"centre": [0.0], "scale": [0.0]},
        {"centre": "x", "scale": [1.0]},
        {"scale": [1.0]},
    ],
)
def test_malformed_reference_is_a_model_error(data: dict) -> None:
    with pytest.raises(ModelError):
        TrustReference.from_json(data)


def test_plate_without_controls_is_unknown_and_dimension_mismatch_raises() -> None:
    X, plates, controls = _plates({"t1": 0.0, "t2": 0.0})
    ref = fit_trust_reference(X, plates, controls)
    (trust,) = plate_trust(X[:5], ["p"] * 5, np.zeros(5, bool), ref)
    assert trust.level == "unknown" and "no control cells" in trust.reading()
    with pytest.raises(ModelError, match="dimensions"):
        plate_trust(X[:, :3], plates, controls, ref)
    with pytest.raises(TableError):
        fit_trust_reference(X[:1], plates[:1], controls[:1])


def test_single_training_plate_has_no_range() -> None:
    X, plates, controls = _plates({"only": 0.0})
    ref = fit_trust_reference(X, plates, controls)
    (trust,) = plate_trust(X, plates, controls, ref)
    assert trust.level == "unknown"
    assert "no reference plates" in trust.reading()


def test_reference_for_model_and_trust_of_run() -> None:
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = Tiny()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(80, 4, 6, 6)).astype(np.float32)
    images[60:] += 2.0  # plate "c" is shifted
    table = pd.DataFrame({
        schema.PLATE: ["a"] * 20 + ["b"] * 20 + ["b2"] * 20 + ["c"] * 20,
        schema.ROLE: (["control"] * 10 + ["treated"] * 10) * 4,
    })  # fmt: skip
    ref = reference_for_model(model, images[:60], table.iloc[:60])
    assert set(ref.training) == {"a", "b", "b2"}
    with torch.no_grad():
        feats = model.embed(torch.from_numpy(images)).numpy()
    trusts = {t.plate: t for t in trust_of_run(table, feats, {METADATA_KEY: ref.to_json()})}
    assert trusts["c"].level == "beyond"
    assert trusts["c"].n_controls == 10
    assert trust_of_run(table, None, {METADATA_KEY: ref.to_json()}) == []
    assert trust_of_run(table, feats, {}) == []
