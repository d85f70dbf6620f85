"""PhenoProfiler: CDC formula, network shapes, losses, profile targets, trainer, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from phenoadapt import schema
from phenoadapt.embed import load_embedder
from phenoadapt.errors import Cancelled, ModelError, PlateMapError, TableError
from phenoadapt.nn import (
    Normalization,
    PhenoProfilerConfig,
    ResNetConfig,
    build_network,
    build_resnet,
    fit_normalization,
    phenoprofiler,
)
from phenoadapt.nn.cdc import CentralDifferenceConv2d, GradientEncoder
from phenoadapt.train import (
    CheckpointMetadata,
    EmbedderData,
    EmbedderTrainConfig,
    LossWeights,
    ProfileTargets,
    contrastive_loss,
    load_checkpoint,
    make_toy_plates,
    phenoprofiler_loss,
    save_checkpoint,
    train_phenoprofiler,
)
from phenoadapt.train.phenoprofiler_data import class_names

DIM = 6


# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(n_channels: int = 5, num_classes: int = 4, seed: int = 0, **kw):
    options = dict(arch="resnet10", width=4, stem="small", heads=2, seed=seed)
    options.update(kw)
    return phenoprofiler(n_channels, num_classes, DIM, **options)


def _profiles(images: np.ndarray, table: pd.DataFrame, n_noise: int = 4) -> pd.DataFrame:
    """Site profiles: median channel intensities of the site's crops plus noise features."""
    frame = table.copy()
    means = images.mean(axis=(2, 3))
    for c in range(images.shape[1]):
        frame[f"Cells_Intensity_Mean_ch{c}"] = means[:, c]
    rng = np.random.default_rng(1)
    for j in range(n_noise):
        frame[f"Nuclei_Noise_{j}"] = rng.normal(size=len(frame))
    features = [c for c in frame.columns if c.startswith(("Cells_", "Nuclei_"))]
    keys = [schema.PLATE, schema.WELL, schema.SITE]
    agg = {**dict.fromkeys(features, "median"), schema.ROLE: "first"}
    return frame.groupby(keys, sort=False).agg(agg).reset_index()


@pytest.fixture(scope="module")
def toy():
    images, table = make_toy_plates(3, n_channels=5, size=16, treated_per_class=16,
                                    n_controls=16, cells_per_well=4, seed=0)  # fmt: skip
    table[schema.SITE] = 1
    profiles = _profiles(images, table)
    targets = ProfileTargets(DIM)
    data = EmbedderData.from_tables(images, table, profiles, targets, class_by="treatment")
    return images, table, profiles, targets, data


# --------------------------------------------------------------------------- CDC


def _cdc_by_hand(x: torch.Tensor, weight: torch.Tensor, theta: float, stride: int) -> torch.Tensor:
    """sum_k w_k (x(p0 + pk) - theta x(p0)) over every window, from unfolded patches."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    patches = F.unfold(x, k, padding=k // 2, stride=stride)  # (n, c*k*k, L)
    patches = patches.view(n, c, k * k, -1)
    centre = patches[:, :, (k * k) // 2 : (k * k) // 2 + 1, :]
    diffs = (patches - theta * centre).reshape(n, c * k * k, -1)
    out = weight.reshape(weight.shape[0], -1) @ diffs  # (n, out, L)
    h_out = (h + 2 * (k // 2) - k) // stride + 1
    return out.view(n, weight.shape[0], h_out, -1)


@pytest.mark.parametrize("theta", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("stride", [1, 2])
def test_cdc_matches_the_central_difference_formula(theta, stride):
    torch.manual_seed(0)
    cdc = CentralDifferenceConv2d(5, 3, 3, stride=stride, theta=theta)
    x = torch.randn(2, 5, 11, 10)
    expected = _cdc_by_hand(x, cdc.weight.detach(), theta, stride)
    assert torch.allclose(cdc(x), expected, atol=1e-5)
    # The module's own form: conv(x, W) - theta * x * sum(W).
    plain = F.conv2d(x, cdc.weight, stride=stride, padding=1)
    centre_term = (
        x[:, :, ::stride, ::stride].unsqueeze(1) * cdc.weight.sum((2, 3))[None, :, :, None, None]
    )
    assert torch.allclose(cdc(x), plain - theta * centre_term.sum(2), atol=1e-5)


def test_cdc_with_theta_one_ignores_a_constant_image():
    cdc = CentralDifferenceConv2d(2, 4, 3, stride=1, theta=1.0)
    flat = torch.full((1, 2, 8, 8), 7.0)
    interior = cdc(flat)[..., 1:-1, 1:-1]  # the borders see zero padding
    assert torch.allclose(interior, torch.zeros_like(interior), atol=1e-5)


def test_cdc_rejects_bad_settings():
    with pytest.raises(ValueError, match="odd"):
        CentralDifferenceConv2d(1, 1, 4)
    with pytest.raises(ValueError, match="theta"):
        CentralDifferenceConv2d(1, 1, 3, theta=1.5)


def test_gradient_encoder_halves_the_resolution_to_three_channels():
    encoder = GradientEncoder(5)
    assert [b[0].theta for b in encoder.branches] == [0.7, 0.3]
    out = encoder(torch.rand(2, 5, 32, 31))
    assert out.shape == (2, 3, 16, 16)
    assert float(out.detach().min()) >= 0 and float(out.detach().max()) <= 6  # ReLU6


# --------------------------------------------------------------------------- network


@pytest.mark.parametrize("n_channels", [3, 5, 6])
@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("tokens", ["spatial", "pooled"])
def test_shapes_for_any_channel_count_and_size(n_channels, size, tokens):
    model = _tiny(n_channels, num_classes=7, tokens=tokens).eval()
    x = torch.rand(3, n_channels, size, size) * 1000
    emb, logits = model.outputs(x)
    assert emb.shape == (3, DIM) and logits.shape == (3, 7)
    assert torch.allclose(model(x), logits)
    n_tokens = model.tokens(x).shape[1]
    assert n_tokens == (1 if tokens == "pooled" else (size // 2 // 8) ** 2)


def test_spatial_tokens_are_a_set_pooled_after_attention():
    model = _tiny(3).eval()
    x = torch.rand(2, 3, 32, 32)
    tokens = model.tokens(x)
    shuffled = tokens[:, torch.randperm(tokens.shape[1])]
    # No positional encoding: the pooled output ignores the order of the tokens.
    assert torch.allclose(
        model.transformer(tokens).mean(1), model.transformer(shuffled).mean(1), atol=1e-5
    )


def test_config_round_trip_and_validation():
    norm = Normalization("log1p", (1.0,) * 5, (2.0,) * 5, (900.0,) * 5)
    model = _tiny(normalization=norm)
    spec = model.spec()
    assert spec["family"] == "phenoprofiler"
    rebuilt = build_network(spec)
    assert rebuilt.config == model.config
    with pytest.raises(ValueError, match="heads"):
        PhenoProfilerConfig(arch="resnet10", width=4, heads=5)
    with pytest.raises(ModelError, match="Invalid phenoprofiler"):
        build_network({**spec, "colour": "blue"})


def test_seeded_builds_are_identical():
    a, b = _tiny(seed=3), _tiny(seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- losses


def _reference_contrastive(E: np.ndarray, P: np.ndarray) -> float:
    logits = E @ P.T
    sim = (E @ E.T + P @ P.T) / 2
    targets = np.exp(sim - sim.max(1, keepdims=True))
    targets /= targets.sum(1, keepdims=True)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    return float(-(targets * log_p).sum(1).mean())


def test_contrastive_loss_uses_soft_targets():
    rng = np.random.default_rng(0)
    E, P = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    got = contrastive_loss(torch.tensor(E), torch.tensor(P))
    assert math.isclose(float(got), _reference_contrastive(E, P), rel_tol=1e-9)
    # Identical images and profiles: uniform soft targets, loss = log(n).
    same = torch.ones(4, 3)
    assert math.isclose(float(contrastive_loss(same, same)), math.log(4), rel_tol=1e-6)
    sym = contrastive_loss(torch.tensor(E), torch.tensor(P), symmetric=True)
    back = _reference_contrastive(P, E)  # profile -> image direction, same soft targets
    assert math.isclose(float(sym), (float(got) + back) / 2, rel_tol=1e-9)
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(same, same, temperature=0)


def test_contrastive_targets_carry_no_gradient():
    E = torch.randn(4, 3, requires_grad=True)
    P = torch.randn(4, 3)
    contrastive_loss(E, P).backward()
    # Gradient of CE with fixed targets t: (softmax(E P^T) - t) P / n.
    with torch.no_grad():
        t = F.softmax((E @ E.T + P @ P.T) / 2, dim=1)
        expected = (F.softmax(E @ P.T, dim=1) - t) @ P / 4
    assert torch.allclose(E.grad, expected, atol=1e-6)


def test_loss_weights_and_stages():
    torch.manual_seed(0)
    emb = torch.randn(6, 4, requires_grad=True)
    logits = torch.randn(6, 3, requires_grad=True)
    prof, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    terms = phenoprofiler_loss(emb, logits, prof, labels)
    assert LossWeights() == LossWeights(1.0, 100.0, 0.1)
    expected = terms.contrastive + 100 * terms.mse + 0.1 * terms.classification
    assert torch.allclose(terms.total, expected)
    assert torch.allclose(terms.mse, ((emb - prof) ** 2).mean())
    assert torch.allclose(terms.classification, F.cross_entropy(logits, labels))
    stage1 = phenoprofiler_loss(emb, logits, prof, labels, stage="mse")
    assert torch.allclose(stage1.total, 100 * stage1.mse)
    stage1.total.backward()
    assert logits.grad is None  # the classifier gets nothing in the MSE-only stage
    custom = phenoprofiler_loss(emb, logits, prof, labels, weights=LossWeights(2.0, 0.0, 1.0))
    assert torch.allclose(custom.total, 2 * custom.contrastive + custom.classification)
    with pytest.raises(ValueError, match="stage"):
        phenoprofiler_loss(emb, logits, prof, labels, stage="warmup")


# --------------------------------------------------------------------------- targets and data


def test_profile_targets_pca_scale_and_plate_normalization(toy):
    _, _, profiles, _, _ = toy
    fitted = ProfileTargets(DIM).fit(profiles)
    values = fitted.transform(profiles)
    assert values.shape == (len(profiles), DIM) and fitted.summary()["pca"]
    assert math.isclose(float(values.var(axis=0).mean()), 1.0, rel_tol=1e-4)
    # A plate-wide shift of every feature changes global targets but not plate-control ones.
    shifted = profiles.copy()
    features = list(fitted.features)
    on_p1 = shifted[schema.PLATE] == "P1"
    shifted.loc[on_p1, features] = shifted.loc[on_p1, features] * 1.5 + 3.0
    plate_norm = ProfileTargets(DIM, "plate-controls").fit(profiles)
    assert np.allclose(plate_norm.transform(shifted), plate_norm.transform(profiles), atol=1e-4)
    assert not np.allclose(fitted.transform(shifted), values, atol=1e-2)
    with pytest.raises(TableError, match="at most"):
        ProfileTargets(50).fit(profiles)


def test_embedder_data_classes_and_errors(toy):
    images, table, profiles, targets, data = toy
    assert data.classes == ("DMSO", "cpd_moa_a", "cpd_moa_b", "cpd_moa_c")
    assert data.targets.shape == (len(table), DIM) and np.isfinite(data.targets).all()
    dosed = table.assign(**{schema.CONCENTRATION: np.where(table[schema.ROLE] == "control", 0, 10)})
    assert set(class_names(dosed)) == {"DMSO@0", "cpd_moa_a@10", "cpd_moa_b@10", "cpd_moa_c@10"}
    no_treatment = table.copy()
    no_treatment.loc[5, schema.TREATMENT] = None
    with pytest.raises(PlateMapError, match="no Metadata_Treatment"):
        EmbedderData.from_tables(images, no_treatment, profiles, targets)
    with pytest.raises(TableError, match="no site profile"):
        EmbedderData.from_tables(images, table, profiles.iloc[3:], targets)


# --------------------------------------------------------------------------- training


def _config(**kw) -> EmbedderTrainConfig:
    base = dict(mse_epochs=1, epochs=2, batch_size=24, device="cpu", seed=0, lr_steps=())
    base.update(kw)
    return EmbedderTrainConfig(**base)


def _model_for(data: EmbedderData, seed: int = 0):
    norm = fit_normalization(np.asarray(data.images))
    return _tiny(data.images.shape[1], len(data.classes), seed=seed, normalization=norm)


def _loss_on(model, data: EmbedderData) -> float:
    model.eval()
    with torch.no_grad():
        x, labels, targets = data.batch(data.usable)
        emb, logits = model.outputs(x)
        return float(phenoprofiler_loss(emb, logits, targets, labels).total)


def test_tiny_training_reduces_the_loss(toy):
    *_, data = toy
    model = _model_for(data)
    before = _loss_on(model, data)
    result = train_phenoprofiler(model, data, config=_config(schedule="joint", epochs=6))
    assert _loss_on(result.model, data) < 0.8 * before
    assert [r["stage"] for r in result.history] == ["all"] * 6


def test_stepwise_training_changes_stage_and_spares_the_classifier_at_first(toy):
    *_, data = toy
    model = _model_for(data)
    head0 = model.head.weight.detach().clone()
    enc0 = model.encoder.fuse[0].weight.detach().clone()
    config = _config(mse_epochs=1, epochs=1)
    steps_stage1 = len(range(0, len(data.usable), config.batch_size))
    seen: list[tuple[str, int, int]] = []
    with pytest.raises(Cancelled):
        train_phenoprofiler(
            model, data, config=config, progress=lambda *a: seen.append(a),
            cancel=lambda: sum(s == "train" for s, _, _ in seen) >= steps_stage1,
        )  # fmt: skip
    assert torch.equal(model.head.weight, head0)  # MSE only: no gradient reached the head
    assert not torch.equal(model.encoder.fuse[0].weight, enc0)
    result = train_phenoprofiler(_model_for(data), data, data.subset(["P3"]), config)
    assert [r["stage"] for r in result.history] == ["mse", "all"]
    assert set(result.best_epochs) == {"mse", "all"}
    assert {"val_loss", "val_mse", "train_contrastive", "lr"} <= set(result.history[-1])


def test_training_is_deterministic_and_plate_context_runs(toy):
    *_, data = toy
    config = _config(plate_context=True, controls_per_batch=8, batch_size=20)
    a = train_phenoprofiler(_model_for(data), data, config=config).model.state_dict()
    b = train_phenoprofiler(_model_for(data), data, config=config).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_learning_rate_steps():
    config = EmbedderTrainConfig()
    assert [config.lr_at(e) for e in (0, 19, 20, 50, 100, 150)] == pytest.approx(
        [1e-3, 1e-3, 5e-4, 1e-4, 5e-5, 5e-5]
    )
    assert config.weight_decay == 1e-3 and config.schedule == "stepwise"
    with pytest.raises(ValueError, match="schedule"):
        EmbedderTrainConfig(schedule="alternating")


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(toy, tmp_path):
    *_, data = toy
    result = train_phenoprofiler(_model_for(data), data, config=_config(epochs=1))
    path = save_checkpoint(
        tmp_path / "pp", result.model, result.checkpoint_metadata(crop_size=16, crop_scale=0.5)
    )
    loaded = load_embedder(path)
    x = data.batch(data.usable[:10])[0]
    with torch.no_grad():
        assert torch.allclose(loaded.model.embed(x), result.model.embed(x), atol=1e-6)
    meta = loaded.metadata
    assert meta.extra["kind"] == "embedder" and meta.model_input.crop_scale == 0.5
    assert meta.model_input.unit == "cell" and meta.model_input.crop_size == 16
    assert meta.classes == data.classes and meta.method == "erm"
    assert meta.training["schedule"] == "stepwise"


def test_a_classifier_checkpoint_is_refused_as_embedder(tmp_path):
    classifier = build_resnet(ResNetConfig("resnet10", 5, 3, width=4, stem="small"), seed=0)
    meta = CheckpointMetadata(network={}, classes=("a", "b", "c"), channel_names=("DNA",) * 5)
    path = save_checkpoint(tmp_path / "clf", classifier, meta)
    assert load_checkpoint(path).metadata.network["family"] == "resnet"
    with pytest.raises(ModelError, match="not a PhenoProfiler embedder"):
        load_embedder(path)


def test_training_rejects_mismatched_data(toy):
    *_, data = toy
    with pytest.raises(ValueError, match="channels"):
        train_phenoprofiler(_tiny(3, len(data.classes)), data, config=_config())
    with pytest.raises(ValueError, match="classes"):
        train_phenoprofiler(_tiny(5, 9), data, config=_config())
