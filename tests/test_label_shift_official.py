"""The official CS-ARM-BN label-shift sampler: one draw per plate, rotation, caps, seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.errors import OptionError
from phenoadapt.evaluate.label_shift import PlateLabelShiftSampler
from phenoadapt.train import CellData, make_toy_plates


@pytest.fixture(scope="module")
def data() -> CellData:
    # 3 classes; plate P1 holds 20 cells per class, P2 only 5 (caps bind), 40 controls each.
    parts = [
        make_toy_plates([name], treated_per_class=n, n_controls=40, size=4, seed=i)
        for i, (name, n) in enumerate([("P1", 20), ("P2", 5)])
    ]
    images = np.concatenate([p[0] for p in parts])
    table = pd.concat([p[1] for p in parts], ignore_index=True)
    return CellData.from_table(images, table)


def _counts(data: CellData, treated: np.ndarray) -> np.ndarray:
    return np.bincount(data.labels[treated], minlength=len(data.classes))


def test_one_draw_per_plate_rotated_so_each_class_dominates_once(data: CellData) -> None:
    sampler = PlateLabelShiftSampler(data.table, data.labels, 1.0, 12, 8, seed=3)
    contexts = [c for c in sampler.contexts() if c.plate == "P1"]
    assert len(contexts) == len(data.classes)  # one context per class
    requested = np.array([np.rint(c.proportions * 12).astype(int) for c in contexts])
    assert (requested.sum(axis=1) == 12).all()
    for i in range(1, len(contexts)):  # the counts move one class along each context
        assert np.array_equal(requested[i], np.roll(requested[0], i))
    # Every class receives every count once: the dominant class differs per context.
    assert sorted(requested.argmax(axis=1).tolist()) == list(range(len(data.classes)))
    for c, want in zip(contexts, requested, strict=True):
        assert np.array_equal(_counts(data, c.treated), want)  # P1 has enough of each class


def test_counts_are_capped_at_the_plate_without_resampling(data: CellData) -> None:
    sampler = PlateLabelShiftSampler(data.table, data.labels, 0.01, 12, 8, seed=0)
    plates = data.table[schema.PLATE].to_numpy()
    for c in sampler.contexts():
        assert len(np.unique(c.treated)) == len(c.treated)  # no cell twice in a context
        assert set(plates[c.treated]) == {c.plate} and set(plates[c.controls]) == {c.plate}
        want = np.rint(c.proportions * 12).astype(int)
        held = 20 if c.plate == "P1" else 5
        assert np.array_equal(_counts(data, c.treated), np.minimum(want, held))
        assert (data.labels[c.controls] < 0).all() and len(c.controls) == 8
    small = [c for c in sampler.contexts() if c.plate == "P2"]
    assert all(len(c.treated) <= 5 for c in small)  # alpha 0.01: one class, capped at 5


def test_deterministic_by_seed_and_controls_without_replacement(data: CellData) -> None:
    def draw(seed: int, replace: bool = True):
        return PlateLabelShiftSampler(data.table, data.labels, 0.1, 12, 30, seed=seed,
                                      controls_replace=replace).contexts()  # fmt: skip

    a, b, c = draw(5), draw(5), draw(6)
    assert all(np.array_equal(x.treated, y.treated) for x, y in zip(a, b, strict=True))
    assert all(np.array_equal(x.controls, y.controls) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x.treated, y.treated) for x, y in zip(a, c, strict=False))
    assert all(len(set(x.controls.tolist())) == 30 for x in draw(5, replace=False))
    with pytest.raises(OptionError, match="alpha"):
        PlateLabelShiftSampler(data.table, data.labels, 0.0)
