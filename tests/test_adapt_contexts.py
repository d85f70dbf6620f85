"""Context statistics computed once and installed for eval-mode prediction; context choices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_fixtures import trained_like_resnet
from torch import nn

from phenoadapt import schema
from phenoadapt.adapt import (
    ContextChoice,
    context_statistics,
    parse_context,
    plan_contexts,
    predict_contexts,
    predict_plate,
    statistics_and_outputs,
    use_statistics,
)
from phenoadapt.adapt.methods import ContextSpec, Runtime
from phenoadapt.errors import OptionError
from phenoadapt.pipeline import RunConfig
from phenoadapt.train.toy import make_toy_plates

CLASSES = ("moa_a", "moa_b", "moa_c")
PCOLS = [f"prob_{c}" for c in CLASSES]


# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def plates() -> tuple[np.ndarray, pd.DataFrame]:
    # 90 treated + 50 controls per plate.
    return make_toy_plates(["P1", "P2"], treated_per_class=30, n_controls=50, size=12, seed=3)


@pytest.fixture(scope="module")
def model(plates: tuple[np.ndarray, pd.DataFrame]) -> nn.Module:
    return trained_like_resnet(plates[0])


def _reference(model: nn.Module, images: np.ndarray, contexts) -> np.ndarray:
    """Today's two-pass procedure: statistics of each context, then its cells in eval mode."""
    probs = np.full((len(images), len(CLASSES)), np.nan)
    for ctx in contexts:
        stats = context_statistics(model, images[ctx.statistics]) if len(ctx.statistics) else {}
        with use_statistics(model, stats), torch.no_grad():
            logits = model(torch.from_numpy(images[ctx.predict]))
        probs[ctx.predict] = torch.softmax(logits, dim=1).numpy()
    return probs


# --------------------------------------------------------------------------- equivalence


def test_train_mode_pass_equals_eval_with_installed_statistics(model: nn.Module, plates) -> None:
    images = torch.from_numpy(plates[0][:75])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats, (logits,) = statistics_and_outputs(model, images, lambda m, x: (m(x),))
    with use_statistics(model, stats), torch.no_grad():
        installed = model(images)
    torch.testing.assert_close(logits, installed, rtol=1e-5, atol=1e-5)
    # The one-pass statistics (BN's own buffers) equal the layer-by-layer float64 ones.
    chunked = context_statistics(model, images, chunk_size=20)
    for name, (mean, var) in stats.items():
        torch.testing.assert_close(mean, chunked[name][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(var, chunked[name][1], rtol=1e-5, atol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not model.training


def test_chunked_predictions_equal_the_two_pass_procedure(model: nn.Module, plates) -> None:
    images, table = plates
    kw = dict(treated_per_context=64, controls_per_context=128, seed=2)
    contexts = plan_contexts(table, "cs-arm-bn", **kw)
    spec = ContextSpec(**kw)
    got = predict_plate(
        model, images, table, CLASSES, "cs-arm-bn", contexts=spec, runtime=Runtime(device="cpu")
    )
    np.testing.assert_allclose(got.cells[PCOLS], _reference(model, images, contexts), atol=1e-5)
    # A chunk size alone still asks for the paper's chunks.
    sized = predict_plate(
        model, images, table, CLASSES, contexts=spec, runtime=Runtime(device="cpu")
    )
    np.testing.assert_allclose(sized.cells[PCOLS], got.cells[PCOLS], atol=1e-6)
    # The default is one sampled context per plate of CS-ARM-BN (and ARM-BN).
    default = plan_contexts(table, "cs-arm-bn", seed=2)
    sampled = plan_contexts(table, "cs-arm-bn", context="sample", seed=2)
    assert len(default) == 2
    pairs = zip(default, sampled, strict=True)
    assert all(np.array_equal(a.statistics, b.statistics) for a, b in pairs)


@pytest.mark.parametrize("context", ["plate", "sample"])
def test_other_contexts_equal_the_two_pass_procedure(model: nn.Module, plates, context) -> None:
    images, table = plates
    contexts = plan_contexts(table, "cs-arm-bn", context=context, context_size=60)
    spec = ContextSpec(context=context, context_size=60)
    got = predict_plate(model, images, table, CLASSES, contexts=spec, runtime=Runtime(device="cpu"))
    np.testing.assert_allclose(got.cells[PCOLS], _reference(model, images, contexts), atol=1e-5)


def test_context_larger_than_one_pass_goes_layer_by_layer(model: nn.Module, plates) -> None:
    images, table = plates
    contexts = plan_contexts(table, "cs-arm-bn", context="plate")
    out = predict_contexts(model, images, contexts, max_pass_size=32, return_embeddings=True)
    expected = _reference(model, images, contexts)
    for o in out:
        np.testing.assert_allclose(o.probabilities, expected[o.context.predict], atol=1e-5)
        assert o.embeddings.shape == (len(o.context.predict), model.feature_dim)


def test_embeddings_come_from_the_same_statistics(model: nn.Module, plates) -> None:
    images, table = plates
    contexts = plan_contexts(table, "cs-arm-bn", context="sample", context_size=40)
    (out,) = predict_contexts(model, images, contexts[:1], return_embeddings=True)
    ctx = contexts[0]
    stats = context_statistics(model, images[ctx.statistics])
    with use_statistics(model, stats), torch.no_grad():
        feats = model.embed(torch.from_numpy(images[ctx.predict]))
    np.testing.assert_allclose(out.embeddings, feats.numpy(), atol=1e-5)


# --------------------------------------------------------------------------- context choices


def _roles(table: pd.DataFrame, idx: np.ndarray) -> pd.Series:
    return table[schema.ROLE].iloc[idx].value_counts()


def test_sample_keeps_the_chunks_share_of_treated(plates) -> None:
    _, table = plates
    contexts = plan_contexts(table, "cs-arm-bn", context="sample", context_size=60)
    assert len(contexts) == 2  # one per plate
    # The plate's chunks: 90 treated -> 2 chunks of 45, each with all 50 controls.
    for ctx in contexts:
        counts = _roles(table, ctx.statistics)
        assert counts["control"] == round(60 * 50 / 95)  # 32
        assert counts["treated"] == 60 - 32  # 29 would match 45:50; the size caps it
        assert len(ctx.predict) == 140  # every cell of the plate, controls included
        assert set(table[schema.PLATE].iloc[ctx.predict]) == {ctx.plate}
    # Short of controls: every control, and the treated of one chunk's share.
    big = plan_contexts(table, "cs-arm-bn", context="sample", context_size=300)
    counts = _roles(table, big[0].statistics)
    assert counts["control"] == 50 and counts["treated"] == 45
    # A plate with few treated (label shift): chunks of 20 with 50 controls -> the same share.
    few = table[(table[schema.ROLE] == "control") | (table.index % 9 == 0)]
    few = few[few[schema.PLATE] == "P1"].reset_index(drop=True)
    n_treated = int((few[schema.ROLE] == "treated").sum())
    (ctx,) = plan_contexts(few, "cs-arm-bn", context="sample", context_size=512)
    counts = _roles(few, ctx.statistics)
    assert counts["control"] == 50 and counts["treated"] == n_treated  # one chunk = the plate


def test_sample_of_other_methods_and_plate_context(plates) -> None:
    _, table = plates
    arm = plan_contexts(table, "arm-bn", context="sample", context_size=30)
    assert all(set(_roles(table, c.statistics).index) == {"treated"} for c in arm)
    assert all(len(c.statistics) == 30 for c in arm)
    ben = plan_contexts(table, "ben", context="sample", context_size=30)
    assert all(set(_roles(table, c.statistics).index) == {"control"} for c in ben)
    adabn = plan_contexts(table, "adabn", context="sample", context_size=1000)
    assert all(len(c.statistics) == 140 for c in adabn)  # capped at the plate
    plate = plan_contexts(table, "cs-arm-bn", context="plate")
    assert [len(c.statistics) for c in plate] == [140, 140]
    assert [len(c.predict) for c in plate] == [140, 140]
    legacy = plan_contexts(table, "cs-arm-bn", treated_per_context="plate")
    pairs = zip(plate, legacy, strict=True)
    assert all(np.array_equal(a.statistics, b.statistics) for a, b in pairs)
    erm = plan_contexts(table, "erm", context="sample")
    assert all(len(c.statistics) == 0 and len(c.predict) == 140 for c in erm)


def test_sample_is_deterministic_given_seed(plates) -> None:
    _, table = plates
    a = plan_contexts(table, "cs-arm-bn", context="sample", context_size=30, seed=1)
    b = plan_contexts(table, "cs-arm-bn", context="sample", context_size=30, seed=1)
    c = plan_contexts(table, "cs-arm-bn", context="sample", context_size=30, seed=2)
    assert all(np.array_equal(x.statistics, y.statistics) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.statistics, y.statistics) for x, y in zip(a, c, strict=True))


def test_context_option_errors(plates) -> None:
    _, table = plates
    assert parse_context("Sample") is ContextChoice.SAMPLE
    with pytest.raises(ValueError, match="Unknown plate context 'wells'.*chunks, plate, sample"):
        plan_contexts(table, context="wells")
    with pytest.raises(ValueError, match="contradicts context='sample'"):
        plan_contexts(table, treated_per_context="plate", context="sample")
    with pytest.raises(ValueError, match="context_size must be at least 1"):
        plan_contexts(table, context="sample", context_size=0)
    with pytest.raises(OptionError, match="Unknown plate context"):
        RunConfig(context="wells")
    with pytest.raises(OptionError, match="context_size"):
        RunConfig(context_size=0)
    assert RunConfig(context="PLATE").context == "plate"
