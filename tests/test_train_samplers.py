"""Samplers: plate episodes, ERM minibatches, label-shift contexts; and augmentation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from phenoadapt import schema
from phenoadapt.adapt import Method
from phenoadapt.errors import PlateMapError
from phenoadapt.train import (
    CellData,
    LabelShiftSampler,
    MixedBatchSampler,
    PlateEpisodeSampler,
    make_toy_plates,
    split_plates,
)
from phenoadapt.train.augment import augment, center_crop, random_crop, random_flip_rotate


@pytest.fixture(scope="module")
def data() -> CellData:
    # Plates of different sizes: 3 classes x (20, 30, 40, 12) treated, 40 controls each.
    parts = [
        make_toy_plates([name], treated_per_class=n, n_controls=40, size=8, seed=i)
        for i, (name, n) in enumerate([("P1", 20), ("P2", 30), ("P3", 40), ("P4", 12)])
    ]
    images = np.concatenate([p[0] for p in parts])
    table = pd.concat([p[1] for p in parts], ignore_index=True)
    return CellData.from_table(images, table)


def _plate_of(data: CellData, idx: np.ndarray) -> set[str]:
    return set(data.table[schema.PLATE].iloc[idx])


def test_plate_episodes(data: CellData) -> None:
    sampler = PlateEpisodeSampler(data.table, 16, 24, plates_per_step=3, seed=0)
    steps = sampler.steps(0)
    episodes = [e for step in steps for e in step]
    roles = data.roles
    for e in episodes:
        # One plate per episode: its treated and its controls.
        assert _plate_of(data, e.positions) == {e.plate}
        assert (roles[e.treated] == "treated").all() and (roles[e.controls] == "control").all()
        assert 1 <= len(e.treated) <= 16 and len(e.controls) == 24
        assert len(set(e.controls.tolist())) == 24  # without replacement
        assert np.array_equal(e.positions, np.concatenate([e.treated, e.controls]))
    assert all(len(step) == 3 for step in steps)
    # Every treated cell is seen once per epoch (plus the padding of the last step).
    seen = Counter(np.concatenate([e.treated for e in episodes]).tolist())
    treated = np.flatnonzero(roles == "treated")
    assert set(seen) == set(treated.tolist())
    n_episodes = sum(-(-n * 3 // 16) for n in (20, 30, 40, 12))  # ceil per plate
    assert len(episodes) == 3 * -(-n_episodes // 3)
    # Distinct plates within a step while enough plates have episodes left.
    assert len({e.plate for e in steps[0]}) == 3
    assert sampler.steps_per_epoch() == len(steps)


def test_episode_sampler_is_deterministic(data: CellData) -> None:
    a = PlateEpisodeSampler(data.table, 16, 8, 2, seed=5)
    b = PlateEpisodeSampler(data.table, 16, 8, 2, seed=5)

    def flat(steps):
        return [(e.plate, e.treated.tolist(), e.controls.tolist()) for s in steps for e in s]

    assert flat(a.steps(3)) == flat(b.steps(3))
    assert flat(a.steps(3)) != flat(a.steps(4))  # epochs differ
    assert flat(a.steps(3)) != flat(PlateEpisodeSampler(data.table, 16, 8, 2, seed=6).steps(3))


def test_arm_bn_episodes_have_no_controls_and_missing_controls_error(data: CellData) -> None:
    arm = PlateEpisodeSampler(data.table, 32, 0, 2)
    assert all(len(e.controls) == 0 for s in arm.steps(0) for e in s)
    table = data.table.copy()
    table.loc[(table[schema.PLATE] == "P3") & (table[schema.ROLE] == "control"), schema.ROLE] = (
        "excluded"
    )
    with pytest.raises(ValueError, match=r"\['P3'\] have no control cells"):
        PlateEpisodeSampler(table, 16, 8, 2)


def test_mixed_batches_for_erm(data: CellData) -> None:
    sampler = MixedBatchSampler(data.table, batch_size=32, batches_per_step=4, seed=1)
    steps = sampler.steps(0)
    batches = [b for s in steps for b in s]
    assert all(len(s) == 4 for s in steps) and len(steps) == sampler.steps_per_epoch()
    assert all(b.plate is None and len(b.controls) == 0 and len(b.treated) <= 32 for b in batches)
    assert len(_plate_of(data, batches[0].treated)) > 1  # plates are mixed
    seen = np.concatenate([b.treated for b in batches])
    assert set(seen.tolist()) == set(np.flatnonzero(data.labels >= 0).tolist())


@pytest.mark.parametrize("alpha", [0.01, 1.0, 1000.0])
def test_label_shift_contexts_follow_dirichlet(data: CellData, alpha: float) -> None:
    sampler = LabelShiftSampler(
        data.table, data.labels, alpha, 30, 20, contexts_per_plate=40, seed=0
    )
    contexts = sampler.contexts()
    assert len(contexts) == 4 * 40
    dominant = []
    for ctx in contexts:
        assert len(ctx.treated) == 30 and len(ctx.controls) == 20
        assert _plate_of(data, np.concatenate([ctx.treated, ctx.controls])) == {ctx.plate}
        assert ctx.proportions.sum() == pytest.approx(1.0)
        counts = np.bincount(data.labels[ctx.treated], minlength=3)
        dominant.append(counts.max() / 30)
    mean_dominant = float(np.mean(dominant))
    if alpha == 0.01:
        assert mean_dominant > 0.95  # nearly one class per context
    elif alpha == 1000.0:
        assert mean_dominant < 0.55  # balanced: about 1/3 each
    else:
        assert 0.45 < mean_dominant < 0.85


def test_label_shift_is_deterministic_and_gives_method_contexts(data: CellData) -> None:
    a = LabelShiftSampler(data.table, data.labels, 0.1, 16, 8, 3, seed=2).contexts()
    b = LabelShiftSampler(data.table, data.labels, 0.1, 16, 8, 3, seed=2).contexts()
    assert all(np.array_equal(x.treated, y.treated) for x, y in zip(a, b, strict=True))
    ctx = a[0]
    cs = ctx.context("cs-arm-bn")
    assert cs.method is Method.CS_ARM_BN and len(cs.statistics) == 24
    assert np.array_equal(cs.predict, ctx.treated)
    assert len(ctx.context("arm-bn").statistics) == 16
    assert len(ctx.context("ben").statistics) == 8
    assert len(ctx.context("erm").statistics) == 0


def test_cell_data_labels_and_errors(data: CellData) -> None:
    assert data.classes == ("moa_a", "moa_b", "moa_c")
    assert (data.labels[data.roles == "control"] == -1).all()
    assert set(data.labels[data.roles == "treated"]) == {0, 1, 2}
    sub = data.subset(["P2"])
    assert sub.plates == ["P2"] and len(sub) == 130 and sub.classes == data.classes
    table = data.table.copy()
    table.loc[np.flatnonzero(data.roles == "treated")[0], schema.MOA] = np.nan
    with pytest.raises(PlateMapError, match="1 treated cells have no Metadata_MoA"):
        CellData.from_table(data.images, table)
    with pytest.raises(PlateMapError, match="not among the classes"):
        CellData.from_table(data.images, data.table, classes=["moa_a", "moa_b"])
    with pytest.raises(PlateMapError, match="lacks column"):
        CellData.from_table(data.images, data.table.drop(columns=[schema.MOA]))


def test_split_plates() -> None:
    train, val = split_plates(["P3", "P1", "P2", "P4"], n_validation=1, seed=0)
    assert len(val) == 1 and sorted(train + val) == ["P1", "P2", "P3", "P4"]
    assert split_plates(["P3", "P1", "P2", "P4"], 1, seed=0) == (train, val)
    with pytest.raises(ValueError, match="keep at least one"):
        split_plates(["P1"], 1)


# --------------------------------------------------------------------------- augmentation


def test_random_crop_windows_and_determinism() -> None:
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10)
    out = random_crop(x, 6, torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 6, 6)
    for i in range(2):
        # Each output is a contiguous window of its own image, same window in every channel.
        top = int((out[i, 0, 0, 0] - x[i, 0, 0, 0]) // 10)
        left = int((out[i, 0, 0, 0] - x[i, 0, 0, 0]) % 10)
        assert torch.equal(out[i], x[i, :, top : top + 6, left : left + 6])
    again = random_crop(x, 6, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(center_crop(x, 4), x[..., 3:7, 3:7])
    with pytest.raises(ValueError, match="Cannot crop"):
        random_crop(x, 12, torch.Generator())


def test_flips_and_rotations_preserve_pixels() -> None:
    x = torch.rand(16, 2, 5, 5)
    out = random_flip_rotate(x, torch.Generator().manual_seed(1))
    for a, b in zip(x, out, strict=True):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
        options = [torch.rot90(f, k, dims=(-2, -1)) for f in (a, a.flip(-1)) for k in range(4)]
        assert any(torch.equal(b, o) for o in options)
    assert not torch.equal(out, x)
    rect = torch.rand(4, 1, 4, 6)
    assert random_flip_rotate(rect, torch.Generator()).shape == rect.shape  # no turn for non-square
    aug = augment(x, torch.Generator().manual_seed(2), crop_size=3)
    assert aug.shape == (16, 2, 3, 3)
