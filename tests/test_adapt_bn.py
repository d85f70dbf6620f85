"""Plate-context batch-norm adaptation: exact statistics, contexts, predictions, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_fixtures import trained_like_resnet
from torch import nn

from phenoadapt import schema
from phenoadapt.adapt import (
    Method,
    batchnorm,
    batchnorm_layers,
    check_images,
    context_statistics,
    normalized_entropy,
    plan_contexts,
    predict_contexts,
    predict_plate,
    use_statistics,
)
from phenoadapt.adapt.batchnorm import (
    _batch_moments,
    _chunk_moments,
    _narrow,
    _pool_moments,
    statistics_and_outputs,
)
from phenoadapt.adapt.methods import METHOD_COLUMN, Context, ContextSpec, Runtime
from phenoadapt.errors import Cancelled, ContextError
from phenoadapt.nn import build_resnet
from phenoadapt.train.toy import make_toy_plates

CLASSES = ("moa_a", "moa_b", "moa_c")


# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def plates() -> tuple[np.ndarray, pd.DataFrame]:
    return make_toy_plates(["P1", "P2"], treated_per_class=30, n_controls=50, size=12, seed=3)


@pytest.fixture(scope="module")
def model(plates: tuple[np.ndarray, pd.DataFrame]) -> nn.Module:
    return trained_like_resnet(plates[0])


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- exact statistics


def test_first_bn_stats_equal_numpy_mean_var_of_first_conv(model: nn.Module, plates) -> None:
    images = torch.from_numpy(plates[0][:70])
    stats = context_statistics(model, images)
    with torch.no_grad():
        conv_out = model.backbone.stem[0](model.normalizer(images)).double().numpy()
    mean, var = stats["backbone.stem.1"]
    np.testing.assert_allclose(mean.numpy(), conv_out.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var.numpy(), conv_out.var(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    assert set(stats) == set(batchnorm_layers(model))


@pytest.mark.parametrize("chunk", [7, 33])
def test_chunked_statistics_equal_one_pass(model: nn.Module, plates, chunk: int) -> None:
    images = plates[0][:66]
    one = context_statistics(model, images)
    chunked = context_statistics(model, images, chunk_size=chunk)
    for name, (mean, var) in one.items():
        torch.testing.assert_close(chunked[name][0], mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(chunked[name][1], var, rtol=1e-5, atol=1e-5)


def test_eval_with_context_stats_equals_train_mode_on_the_context(model: nn.Module, plates) -> None:
    images = torch.from_numpy(plates[0][:40])
    before = _buffers(model)
    stats = context_statistics(model, images, chunk_size=9)
    with use_statistics(model, stats):
        assert not model.training
        adapted = model(images)
    net = build_resnet(model.config, seed=0)
    net.load_state_dict(before)
    net.train()
    with torch.no_grad():
        train_mode = net(images)  # batch norm normalizes with the batch = the context
    torch.testing.assert_close(adapted, train_mode, rtol=1e-4, atol=1e-4)


def _train_mode_reference(model: nn.Module, images: torch.Tensor):
    """Statistics and outputs of PyTorch's own train-mode batch norm (float64 sums on a CPU)."""
    net = build_resnet(model.config, seed=0)
    net.load_state_dict(_buffers(model))
    net.eval()
    counts: dict[str, int] = {}
    layers = batchnorm_layers(net)
    for name, layer in layers.items():
        layer.train()
        layer.momentum = 1.0
        layer.register_forward_pre_hook(
            lambda _m, args, name=name: counts.__setitem__(
                name, args[0].numel() // args[0].shape[1]
            )
        )
    with torch.no_grad():
        out = net(images)
    stats = {
        name: (layer.running_mean.clone(), layer.running_var * (counts[name] - 1) / counts[name])
        for name, layer in layers.items()
    }
    return stats, out


def test_cpu_one_pass_matches_train_mode_batch_norm(model: nn.Module, plates) -> None:
    # The CPU pass takes float32 two-pass moments instead of PyTorch's float64 train-mode
    # kernel: the statistics and the context's own outputs must agree to float32 rounding.
    images = torch.from_numpy(plates[0][:90])
    expected_stats, expected_out = _train_mode_reference(model, images)
    stats, out = statistics_and_outputs(model, images)
    assert set(stats) == set(expected_stats)
    for name, (mean, var) in expected_stats.items():
        torch.testing.assert_close(stats[name][0], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stats[name][1], var, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "shape", [(40, 6, 9, 9), (40, 6, 9, 9, "channels_last"), (50, 7), (30, 4, 11), (6, 3, 4, 5, 5)]
)
def test_batch_moments_are_float64_exact_even_for_large_means(shape: tuple) -> None:
    # A mean 1e3 times the spread: a one-pass float32 sum of squares would lose the variance.
    dims = tuple(d for d in shape if isinstance(d, int))
    rng = np.random.default_rng(0)
    data = rng.normal(1000.0, 1.0, dims) * rng.uniform(
        0.5, 2.0, (1, dims[1], *[1] * (len(dims) - 2))
    )
    x = torch.from_numpy(data.astype(np.float32))
    if "channels_last" in shape:
        x = x.contiguous(memory_format=torch.channels_last)
    mean, var = _batch_moments(x)
    exact = x.double().numpy()
    axes = tuple(d for d in range(exact.ndim) if d != 1)
    np.testing.assert_allclose(mean.numpy(), exact.mean(axis=axes), rtol=1e-6)
    np.testing.assert_allclose(var.numpy(), exact.var(axis=axes), rtol=1e-4)


def test_pooled_chunk_moments_equal_float64_moments_of_the_whole() -> None:
    # Layer-by-layer statistics pool per-chunk moments; a mean 1e3 times the spread must
    # not cost precision (pooling sums of squares in float32 would).
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(1000.0, 1.0, (70, 5, 6, 6)).astype(np.float32))
    mean, var = _pool_moments([_chunk_moments(x[i : i + 16]) for i in range(0, 70, 16)])
    exact = x.double().numpy()
    np.testing.assert_allclose(mean.numpy(), exact.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(var.numpy(), exact.var(axis=(0, 2, 3)), rtol=1e-4)


def test_layer_by_layer_matches_train_mode_batch_norm(model: nn.Module, plates) -> None:
    images = torch.from_numpy(plates[0][:90])
    expected, _ = _train_mode_reference(model, images)
    chunked = context_statistics(model, images, chunk_size=25)
    for name, (mean, var) in expected.items():
        torch.testing.assert_close(chunked[name][0], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(chunked[name][1], var, rtol=1e-5, atol=1e-7)


def test_model_is_restored_after_adaptation(model: nn.Module, plates) -> None:
    before = _buffers(model)
    model.train()
    model.backbone.layer1.eval()  # a mixed state must come back as it was
    stats = context_statistics(model, plates[0][:30], chunk_size=8)
    with use_statistics(model, stats):
        assert not torch.equal(
            model.backbone.stem[1].running_mean, before["backbone.stem.1.running_mean"]
        )
    with pytest.raises(RuntimeError, match="boom"), use_statistics(model, stats):
        raise RuntimeError("boom")
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert model.training and not model.backbone.layer1.training
    model.eval()


def test_context_statistics_cancel(model: nn.Module, plates) -> None:
    with pytest.raises(Cancelled):
        context_statistics(model, plates[0][:30], chunk_size=8, cancel=lambda: True)


# --------------------------------------------------------------------------- contexts per method


def _roles(table: pd.DataFrame, idx: np.ndarray) -> set[str]:
    return set(table[schema.ROLE].iloc[idx])


def test_each_method_uses_the_right_context(plates) -> None:
    _, table = plates
    n_treated, n_controls = 90, 50
    # CS-ARM-BN chunks: 64 treated + 128 controls -> 2 contexts of 45 treated + all 50 controls.
    cs = plan_contexts(table, "cs-arm-bn", context="chunks")
    assert len(cs) == 4 and all(_roles(table, c.statistics) == {"control", "treated"} for c in cs)
    assert [len(c.statistics) for c in cs] == [45 + 50] * 4
    cs_small = plan_contexts(table, "cs-arm-bn", treated_per_context=20, controls_per_context=10)
    assert {len(c.statistics) for c in cs_small} == {18 + 10}  # 90 treated -> 5 contexts of 18
    arm = plan_contexts(table, "arm-bn", treated_per_context=30)
    assert all(_roles(table, c.statistics) == {"treated"} and len(c.statistics) == 30 for c in arm)
    ben = plan_contexts(table, "ben")
    assert len(ben) == 2 and all(_roles(table, c.statistics) == {"control"} for c in ben)
    assert all(len(c.statistics) == n_controls for c in ben)
    adabn = plan_contexts(table, "adabn")
    assert [len(c.statistics) for c in adabn] == [n_treated + n_controls] * 2
    erm = plan_contexts(table, "erm")
    assert all(len(c.statistics) == 0 for c in erm)
    for contexts in (cs, cs_small, arm, ben, adabn, erm):
        # One plate per context, and every cell predicted exactly once.
        assert all(len(set(table[schema.PLATE].iloc[c.statistics])) <= 1 for c in contexts)
        predicted = np.concatenate([c.predict for c in contexts])
        assert sorted(predicted) == list(range(len(table)))
        for c in contexts:
            assert set(table[schema.PLATE].iloc[c.predict]) == {c.plate}


def test_context_plan_is_deterministic_given_seed(plates) -> None:
    _, table = plates
    a = plan_contexts(table, "cs-arm-bn", treated_per_context=20, controls_per_context=10, seed=1)
    b = plan_contexts(table, "cs-arm-bn", treated_per_context=20, controls_per_context=10, seed=1)
    c = plan_contexts(table, "cs-arm-bn", treated_per_context=20, controls_per_context=10, seed=2)
    assert all(np.array_equal(x.statistics, y.statistics) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.statistics, y.statistics) for x, y in zip(a, c, strict=True))


def test_ben_predictions_use_controls_only_statistics(model: nn.Module, plates) -> None:
    images, table = plates
    result = predict_plate(model, images, table, CLASSES, "ben", runtime=Runtime(device="cpu"))
    on_p1 = (table[schema.PLATE] == "P1").to_numpy()
    controls = np.flatnonzero(on_p1 & (table[schema.ROLE] == "control").to_numpy())
    stats = context_statistics(model, images[controls])
    with use_statistics(model, stats), torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(images[on_p1])), dim=1).numpy()
    got = result.cells.loc[on_p1, [f"prob_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert result.methods == {"P1": Method.BEN, "P2": Method.BEN}


def test_erm_uses_training_statistics(model: nn.Module, plates) -> None:
    images, table = plates
    result = predict_plate(model, images, table, CLASSES, "erm", runtime=Runtime(device="cpu"))
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(images)), dim=1).numpy()
    np.testing.assert_allclose(result.cells[[f"prob_{c}" for c in CLASSES]], expected, atol=1e-5)


# --------------------------------------------------------------------------- outputs


def test_predict_plate_tables(model: nn.Module, plates) -> None:
    images, table = plates
    table = table.copy()
    table.loc[5, schema.ROLE] = schema.Role.EXCLUDED.value
    result = predict_plate(
        model,
        images,
        table,
        CLASSES,
        contexts=ContextSpec(treated_per_context=30),
        runtime=Runtime(device="cpu"),
    )
    cells, wells = result.cells, result.wells
    pcols = [f"prob_{c}" for c in CLASSES]
    assert cells.index.equals(table.index)
    assert cells.loc[5, pcols].isna().all() and pd.isna(cells.loc[5, schema.PREDICTION])
    done = cells.drop(index=5)
    np.testing.assert_allclose(done[pcols].sum(axis=1), 1.0, atol=1e-5)
    assert (done[schema.CONFIDENCE] == done[pcols].max(axis=1)).all()
    assert done[schema.UNCERTAINTY].between(0, 1).all()
    assert set(done[METHOD_COLUMN]) == {"cs-arm-bn"}
    # A well's prediction is its cells' mean probability.
    well = wells.iloc[7]
    members = done[
        (done[schema.PLATE] == well[schema.PLATE]) & (done[schema.WELL] == well[schema.WELL])
    ]
    np.testing.assert_allclose(
        well[pcols].to_numpy(float), members[pcols].mean().to_numpy(), atol=1e-9
    )
    assert well["n_cells"] == len(members)
    assert well[schema.PREDICTION] == CLASSES[int(np.argmax(well[pcols].to_numpy(float)))]
    assert len(wells) == table.groupby([schema.PLATE, schema.WELL]).ngroups


def test_ensemble_averages_probabilities(model: nn.Module, plates) -> None:
    images, table = plates
    other = build_resnet(model.config, seed=5).eval()
    kw = dict(
        contexts=ContextSpec(treated_per_context=30, controls_per_context=20, seed=4),
        runtime=Runtime(device="cpu"),
    )
    a = predict_plate(model, images, table, CLASSES, **kw).cells
    b = predict_plate(other, images, table, CLASSES, **kw).cells
    both = predict_plate([model, other], images, table, CLASSES, **kw).cells
    pcols = [f"prob_{c}" for c in CLASSES]
    np.testing.assert_allclose(both[pcols], (a[pcols] + b[pcols]) / 2, atol=1e-6)


def test_embeddings_under_context_statistics(model: nn.Module, plates) -> None:
    images, table = plates
    contexts = plan_contexts(table, "cs-arm-bn", treated_per_context=30)
    outputs = predict_contexts(model, images, contexts, return_embeddings=True)
    assert outputs[0].embeddings.shape == (len(contexts[0].predict), model.feature_dim)
    with pytest.raises(ValueError, match="single model"):
        predict_contexts([model, model], images, contexts, return_embeddings=True)


def test_normalized_entropy() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(normalized_entropy(probs), [0.0, 1.0], atol=1e-9)


# --------------------------------------------------------------------------- context errors


def _without_controls(table: pd.DataFrame, plate: str, keep: int) -> pd.DataFrame:
    table = table.copy()
    controls = np.flatnonzero((table[schema.PLATE] == plate) & (table[schema.ROLE] == "control"))
    table.loc[table.index[controls[keep:]], schema.ROLE] = "excluded"
    return table


def test_no_controls_is_a_context_error(plates) -> None:
    table = _without_controls(plates[1], "P2", 0)
    with pytest.raises(
        ContextError, match="Plate P2 has no control cells.*CS-ARM-BN needs at least 32"
    ):
        plan_contexts(table, "cs-arm-bn")
    with pytest.raises(ContextError, match="BEN"):
        plan_contexts(table, "ben")
    assert len(plan_contexts(table, "arm-bn")) > 0  # needs no controls


def test_too_few_controls_says_how_many_and_falls_back_only_if_allowed(plates) -> None:
    table = _without_controls(plates[1], "P1", 10)
    with pytest.raises(
        ContextError, match="only 10 control cells.*at least 32.*fallback to ARM-BN"
    ):
        plan_contexts(table, "cs-arm-bn")
    assert plan_contexts(table, "cs-arm-bn", min_controls=8)[0].method is Method.CS_ARM_BN
    with pytest.warns(UserWarning, match="Falling back to ARM-BN"):
        contexts = plan_contexts(table, "cs-arm-bn", allow_fallback=True)
    methods = {c.plate: c.method for c in contexts}
    assert methods == {"P1": Method.ARM_BN, "P2": Method.CS_ARM_BN}
    with pytest.warns(UserWarning, match="Falling back to AdaBN"):
        contexts = plan_contexts(table, "ben", allow_fallback=True)
    assert {c.plate: c.method for c in contexts}["P1"] is Method.ADABN


def test_fully_excluded_plate_is_skipped(plates) -> None:
    table = plates[1].copy()
    table.loc[table[schema.PLATE] == "P2", schema.ROLE] = "excluded"
    assert {c.plate for c in plan_contexts(table, "cs-arm-bn")} == {"P1"}


def test_missing_role_column_and_unknown_method(plates) -> None:
    with pytest.raises(ContextError, match="Metadata_Role"):
        plan_contexts(plates[1].drop(columns=[schema.ROLE]))
    with pytest.raises(ValueError, match="Unknown adaptation method"):
        plan_contexts(plates[1], "tent")


def test_nan_and_constant_crops_are_reported_with_count_and_place(model: nn.Module, plates) -> None:
    images, table = plates
    bad = images.copy()
    bad[3, 1, 2, 2] = np.nan
    bad[4, 0, 0, 0] = np.inf
    with pytest.raises(
        ContextError, match=r"2 of 280 crops contain NaN.*plate P1 well A01 \(2 cells\)"
    ):
        check_images(bad, table)
    flat = images.copy()
    flat[200] = 7.0  # a cell of plate P2
    with pytest.raises(ContextError, match=r"1 of 280 crops are constant.*plate P2"):
        predict_plate(model, flat, table, CLASSES, runtime=Runtime(device="cpu"))
    with pytest.raises(ContextError, match="279 images were given for 280 table rows"):
        check_images(images[:-1], table)


def test_predict_contexts_progress_and_cancel(model: nn.Module, plates) -> None:
    images, table = plates
    contexts = plan_contexts(table, "cs-arm-bn", treated_per_context=45)
    seen = []
    predict_contexts(model, images, contexts, progress=lambda *a: seen.append(a))
    assert seen == [("adapt", i + 1, len(contexts)) for i in range(len(contexts))]
    with pytest.raises(Cancelled):
        predict_contexts(model, images, contexts, cancel=lambda: True)


def test_input_size_centre_crops(model: nn.Module, plates) -> None:
    images, table = plates
    ctx = [Context("P1", Method.ERM, np.empty(0, dtype=np.int64), np.arange(5))]
    cropped = predict_contexts(model, images, ctx, input_size=8)[0].probabilities
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(images[:5, :, 2:10, 2:10])), dim=1)
    np.testing.assert_allclose(cropped, expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="smaller than the model's input size"):
        predict_contexts(model, images, ctx, input_size=20)


def test_only_narrow_networks_go_channels_last_on_a_cpu() -> None:
    narrow = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    wide = nn.Sequential(nn.Conv2d(3, 512, 1), nn.BatchNorm2d(512))
    assert _narrow(batchnorm_layers(narrow)) and not _narrow(batchnorm_layers(wide))
    images = torch.randn(20, 3, 6, 6)
    for net in (narrow, wide):  # either layout: the statistics of the first layer's input
        stats, _ = statistics_and_outputs(net, images)
        conv_out = net[0](images).detach().double()
        name = next(iter(stats))
        torch.testing.assert_close(stats[name][1].double(), conv_out.var((0, 2, 3), False))


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "rows"])
def test_blocked_cpu_moments_match_float64_when_the_first_block_is_off_centre(layout: str) -> None:
    # Large activations are reduced block by block about the first block's mean; here the
    # first images sit 3 spreads above the rest and the mean is 1e3 times the spread.
    rng = np.random.default_rng(2)
    shape = (96, 8, 40, 40) if layout != "rows" else (400_000, 8)
    data = rng.normal(1000.0, 1.0, shape).astype(np.float32)
    data[:8] += 3.0
    x = torch.from_numpy(data)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    assert x.numel() * 4 > 2 * batchnorm.MOMENT_BLOCK_BYTES  # the blocked route
    mean, var = _batch_moments(x)
    axes = tuple(d for d in range(data.ndim) if d != 1)
    exact = data.astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), exact.mean(axis=axes), rtol=1e-6)
    np.testing.assert_allclose(var.numpy(), exact.var(axis=axes), rtol=1e-4)
