"""Plate-context batch norm on feature tables: the MLP, training, adapted embeddings, errors.

Runs on the real BBBC021 per-well profiles of tests/data/bbbc021 (632 wells, 516
features, 55 plates), with a small network trained for a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from phenoadapt import schema
from phenoadapt.adapt import context_statistics, use_statistics
from phenoadapt.adapt.methods import bad_images
from phenoadapt.errors import ContextError, ModelError, PlateMapError, TableError
from phenoadapt.nn import build_network
from phenoadapt.nn.mlp import MLPClassifier, MLPConfig, build_mlp
from phenoadapt.pipeline.tables import (
    check_table,
    embedding_table,
    load_table_model,
    predict_table,
    table_config,
    train_table_model,
)
from phenoadapt.profiles import feature_columns, load_bbbc021
from phenoadapt.train.augment import augment


@pytest.fixture(scope="module")
def wells(request) -> pd.DataFrame:
    """BBBC021 wells: metadata and 516 CellProfiler features."""
    return load_bbbc021(request.config.rootpath / "tests" / "data" / "bbbc021")


@pytest.fixture(scope="module")
def features(wells) -> list[str]:
    return feature_columns(wells)


@pytest.fixture(scope="module")
def held_out_plates(wells) -> list[str]:
    """The last plate of each week: its compounds are on the week's other plates too."""
    return sorted(wells.groupby(schema.BATCH)[schema.PLATE].max())


@pytest.fixture(scope="module")
def cs_model(wells, held_out_plates):
    torch.set_num_threads(1)
    train = wells[~wells[schema.PLATE].isin(held_out_plates)]
    return train_table_model(
        train, "cs-arm-bn", hidden=(64, 32), config=table_config("cs-arm-bn", max_epochs=12)
    )


def _plate_rows(table: pd.DataFrame, plate: str, role: str | None = None) -> np.ndarray:
    mask = table[schema.PLATE] == plate
    if role is not None:
        mask &= table[schema.ROLE] == role
    return np.flatnonzero(mask.to_numpy())


# --------------------------------------------------------------------------- the network


def test_mlp_spec_round_trip_and_standardization():
    model = build_mlp(MLPConfig(7, 3, (16, 8), 0.1), seed=0)
    rebuilt = build_network(model.spec())
    assert isinstance(rebuilt, MLPClassifier) and rebuilt.spec() == model.spec()
    x = np.random.default_rng(0).normal(5.0, 3.0, size=(50, 7))
    x[:, 2] = 1.0  # constant: only centred
    model.fit_standardization(x)
    z = model.standardize(torch.as_tensor(x, dtype=torch.float32))
    assert torch.allclose(z.mean(0), torch.zeros(7), atol=1e-5)
    assert torch.allclose(z[:, [0, 1, 3]].std(0, unbiased=False), torch.ones(3), atol=1e-4)
    assert torch.all(z[:, 2] == 0)
    with pytest.raises(ValueError, match=r"\(n, 7\)"):
        model.embed(torch.zeros(4, 6))


def test_mlp_context_statistics_are_exact():
    torch.manual_seed(0)
    model = build_mlp(MLPConfig(12, 4, (10, 6)), seed=1).eval()
    x = torch.randn(40, 12) * 2 + 1
    one_pass = context_statistics(model, x)
    chunked = context_statistics(model, x, chunk_size=7)
    # By hand: first BN input = Linear(standardized x); second = Linear(ReLU(BN1 output)).
    h1 = model.body[0](model.standardize(x)).double()
    mean1, var1 = h1.mean(0), h1.var(0, unbiased=False)
    bn1 = model.body[1]
    a1 = torch.relu(((h1 - mean1) / torch.sqrt(var1 + bn1.eps)) * bn1.weight + bn1.bias)
    h2 = model.body[3](a1.float()).double()
    expected = {"body.1": (mean1, var1), "body.4": (h2.mean(0), h2.var(0, unbiased=False))}
    for stats in (one_pass, chunked):
        assert set(stats) == set(expected)
        for name, (mean, var) in expected.items():
            assert torch.allclose(stats[name][0].double(), mean, atol=1e-5)
            assert torch.allclose(stats[name][1].double(), var, atol=1e-4)
    # Eval mode under the context statistics = train-mode batch norm on the context.
    with use_statistics(model, one_pass):
        adapted = model.embed(x)
    model.train()
    with torch.no_grad():
        reference = model.embed(x)
    model.eval()
    assert torch.allclose(adapted, reference, atol=1e-4)
    # A context of a single row: zero variance, no error from train-mode BatchNorm1d.
    single = context_statistics(model, x[:1])
    assert torch.all(single["body.1"][1] == 0)


def test_feature_rows_pass_augmentation_and_image_checks_unchanged():
    x = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), flip=True, rot90=True), x)
    rows = np.random.default_rng(0).normal(size=(4, 5))
    rows[1] = 3.0
    rows[2, 4] = np.nan
    nonfinite, constant = bad_images(rows)
    assert nonfinite.tolist() == [False, False, True, False]
    assert constant.tolist() == [False, True, False, False]


# --------------------------------------------------------------------------- training


def test_cs_arm_bn_mlp_beats_chance_on_held_out_plates(wells, cs_model, held_out_plates):
    test = wells[wells[schema.PLATE].isin(held_out_plates)]
    predictions = predict_table(cs_model, test)
    treated = predictions.cells[predictions.cells[schema.ROLE] == "treated"]
    accuracy = (treated[schema.PREDICTION] == treated[schema.MOA]).mean()
    majority = treated[schema.MOA].value_counts(normalize=True).iloc[0]
    assert accuracy > max(majority, 1 / 12) + 0.2, accuracy
    assert set(predictions.methods.values()) == {"cs-arm-bn"}
    embedded = embedding_table(predictions)
    assert len(embedded) == len(test)
    assert embedded.filter(like="emb_").shape[1] == 32


def test_arm_bn_and_cs_arm_bn_statistics_differ_by_the_controls(wells, cs_model):
    plate = "Week1_22123"
    table = wells[wells[schema.PLATE] == plate].reset_index(drop=True)
    treated = _plate_rows(table, plate, "treated")
    everything = _plate_rows(table, plate)
    assert 1 < len(treated) < len(everything)
    x = torch.as_tensor(table[list(cs_model.features)].to_numpy(np.float32))
    model = cs_model.model

    def train_mode_embedding(rows: np.ndarray) -> np.ndarray:
        # Train-mode BN on exactly these rows = normalizing with their statistics.
        model.train()
        with torch.no_grad():
            out = model.embed(x[rows]).numpy()
        model.eval()
        return out

    arm = predict_table(cs_model, table, "arm-bn").embeddings
    cs = predict_table(cs_model, table, "cs-arm-bn").embeddings
    ben = predict_table(cs_model, table, "ben").embeddings
    # ARM-BN: treated rows only; CS-ARM-BN: treated and DMSO rows pooled; BEN: DMSO only.
    np.testing.assert_allclose(arm[treated], train_mode_embedding(treated), atol=1e-4)
    np.testing.assert_allclose(cs[everything], train_mode_embedding(everything), atol=1e-4)
    controls = _plate_rows(table, plate, "control")
    np.testing.assert_allclose(ben[controls], train_mode_embedding(controls), atol=1e-4)
    assert np.abs(arm[treated] - cs[treated]).max() > 1e-2
    assert model.training is False


def test_checkpoint_round_trip(wells, cs_model, tmp_path: Path):
    path = cs_model.save(tmp_path / "mlp.safetensors")
    loaded = load_table_model(path)
    assert loaded.features == cs_model.features and loaded.classes == cs_model.classes
    plate = wells[wells[schema.PLATE] == "Week2_24121"]
    np.testing.assert_allclose(
        predict_table(loaded, plate).embeddings, predict_table(cs_model, plate).embeddings,
        atol=1e-6,
    )  # fmt: skip


def test_loading_an_image_network_as_a_table_model_fails(tmp_path: Path):
    from phenoadapt.nn import resnet10
    from phenoadapt.train import CheckpointMetadata, save_checkpoint

    model = resnet10(in_channels=2, num_classes=2, width=4, stem="small")
    meta = CheckpointMetadata(network=model.spec(), classes=("a", "b"), channel_names=("x", "y"))
    path = save_checkpoint(tmp_path / "resnet.safetensors", model, meta)
    with pytest.raises(ModelError, match="image network"):
        load_table_model(path)


# --------------------------------------------------------------------------- bad input


def test_nan_and_constant_columns_are_named(wells, features, cs_model):
    bad = wells.copy()
    bad.loc[3, features[0]] = np.nan
    with pytest.raises(TableError, match=features[0]):
        train_table_model(bad, "erm", config=table_config("erm", max_epochs=1))
    with pytest.raises(TableError, match=features[0]):
        predict_table(cs_model, bad)
    flat = wells.copy()
    flat[features[1]] = 0.5
    with pytest.raises(TableError, match=rf"constant.*{features[1]}"):
        check_table(flat, purpose="test")


def test_missing_columns(wells, features, cs_model):
    with pytest.raises(TableError, match=schema.PLATE):
        predict_table(cs_model, wells.drop(columns=[schema.PLATE]))
    with pytest.raises(TableError, match=schema.MOA):
        train_table_model(wells.drop(columns=[schema.MOA]), "erm")
    with pytest.raises(TableError, match=rf"lacks 1 feature column.*{features[5]}"):
        predict_table(cs_model, wells.drop(columns=[features[5]]))
    unlabelled = wells.copy()
    unlabelled.loc[unlabelled[schema.ROLE] == "treated", schema.MOA] = None
    with pytest.raises(PlateMapError, match="no Metadata_MoA"):
        train_table_model(unlabelled, "erm")


def test_plate_without_controls(wells, cs_model):
    plate = "Week1_22123"
    no_dmso = wells[~((wells[schema.PLATE] == plate) & (wells[schema.ROLE] == "control"))]
    for call in (
        lambda: train_table_model(no_dmso, "cs-arm-bn"),
        lambda: predict_table(cs_model, no_dmso, "cs-arm-bn"),
        lambda: predict_table(cs_model, no_dmso, "ben"),
    ):
        with pytest.raises(ContextError, match=rf"{plate}.*no control rows"):
            call()
    # ARM-BN needs no controls; with a fallback, CS-ARM-BN uses ARM-BN on that plate.
    assert predict_table(cs_model, no_dmso, "arm-bn").embeddings is not None
    with pytest.warns(UserWarning, match=plate):
        fallback = predict_table(cs_model, no_dmso, "cs-arm-bn", allow_fallback=True)
    assert fallback.methods[plate] == "arm-bn"


def test_arm_bn_skips_plates_without_treated_rows(wells, cs_model):
    dmso_only = wells.groupby(schema.PLATE)[schema.ROLE].apply(lambda r: (r == "treated").any())
    plate = dmso_only[~dmso_only].index[0]
    with pytest.warns(UserWarning, match=plate):
        predictions = predict_table(cs_model, wells, "arm-bn")
    assert plate not in set(predictions.cells[schema.PLATE])
