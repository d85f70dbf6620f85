"""ABRA: adversarial feature-statistics perturbations, angular margin, alignment, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phenoadapt.nn import (
    AbraClassifier,
    AbraNetConfig,
    AngularHead,
    FeatureStatPerturbation,
    ResNetConfig,
    build_abra,
    build_network,
    build_resnet,
    fit_normalization,
)
from phenoadapt.train import (
    AbraConfig,
    CellData,
    TrainConfig,
    abra_loss,
    adversarial_offsets,
    alignment_loss,
    evaluate_plates,
    load_checkpoint,
    make_toy_plates,
    train_model,
)
from phenoadapt.train.abra import _features_and_loss, _set_offsets

# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> CellData:
    images, table = make_toy_plates(
        ["P1", "P2", "P3", "V1"], treated_per_class=24, n_controls=48, size=12, signal=1.0,
        seed=0,
    )  # fmt: skip
    return CellData.from_table(images, table, channel_names=["DNA", "ER", "Mito"])


def _net(data: CellData, seed: int = 0, **kw) -> AbraClassifier:
    norm = fit_normalization(data.subset(["P1", "P2", "P3"]).images)
    resnet = ResNetConfig("resnet10", 3, 3, width=8, stem="small", normalization=norm)
    return build_abra(AbraNetConfig(resnet=resnet, **kw), seed=seed)


def _batch(data: CellData, n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    treated = np.flatnonzero(data.labels >= 0)[:: max(1, (data.labels >= 0).sum() // n)][:n]
    return data.batch(treated), torch.as_tensor(data.labels[treated])


def _config(**kw) -> TrainConfig:
    base = dict(
        method="erm", max_epochs=3, patience=3, treated_per_episode=24, plates_per_step=2,
        device="cpu", seed=0, abra=AbraConfig(epsilon=1.0, steps=1),
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


# -- the adversary ----------------------------------------------------------------------------
def test_adversary_raises_the_loss_it_attacks_within_the_bound(data):
    model = _net(data).train()
    x, y = _batch(data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = AbraConfig(epsilon=0.5, steps=3)
    offsets = adversarial_offsets(model, x, y, config)
    # The attack leaves the running statistics and the switches as they were.
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert all(not m.enabled for m in model.perturbations.values())
    assert set(offsets) == {"layer1", "layer2", "layer3"}
    for delta_mu, delta_sigma in offsets.values():
        assert delta_mu.shape == (len(x), delta_mu.shape[1])
        assert float(delta_mu.abs().max()) <= 0.5 + 1e-6
        assert float(delta_sigma.abs().max()) <= 0.5 + 1e-6
        assert float(delta_mu.abs().max()) > 0  # it moved
    with torch.no_grad():
        _, clean = _features_and_loss(model, x, y, x.device, False)
        _set_offsets(model, offsets)
        _, attacked = _features_and_loss(model, x, y, x.device, False)
        model.clear_perturbations()
    assert float(attacked) > float(clean) + 0.05


def test_no_attack_gives_zero_offsets(data):
    model = _net(data).train()
    x, y = _batch(data, 16)
    for config in (AbraConfig(epsilon=0.0), AbraConfig(steps=0)):
        assert not config.attacks
        offsets = adversarial_offsets(model, x, y, config)
        assert all(float(m.abs().max()) == 0 and float(s.abs().max()) == 0
                   for m, s in offsets.values())  # fmt: skip


# -- the perturbation -------------------------------------------------------------------------
def test_perturbation_is_identity_when_off_or_in_eval_mode():
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 5) * 3 + 1
    module = FeatureStatPerturbation().train()
    assert torch.equal(module(x), x)  # no offsets set
    module.set_offsets(torch.zeros(6, 4), torch.zeros(6, 4))
    torch.testing.assert_close(module(x), x, atol=1e-5, rtol=1e-5)  # zero offsets
    module.set_offsets(torch.full((6, 4), 0.8), torch.full((6, 4), -0.5))
    moved = module(x)
    assert not torch.allclose(moved, x)
    # Mean moved by 0.8 batch-std of the means, std by -0.5 batch-std of the stds.
    mu, sd = x.mean((2, 3)), x.std((2, 3), unbiased=False)
    torch.testing.assert_close(
        moved.mean((2, 3)), mu + 0.8 * mu.std(0, keepdim=True), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        moved.std((2, 3), unbiased=False), sd - 0.5 * sd.std(0, keepdim=True), atol=1e-3, rtol=1e-3
    )
    module.eval()
    assert torch.equal(module(x), x)
    module.train()
    module.set_offsets(None, None)
    assert torch.equal(module(x), x)
    module.set_offsets(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="do not match the feature map"):
        module(x)


def test_eval_mode_model_ignores_offsets(data):
    model = _net(data).eval()
    x, _ = _batch(data, 8)
    with torch.no_grad():
        plain = model(x)
        for module in model.perturbations.values():
            module.enabled = True
            module.delta_mu = module.delta_sigma = torch.ones(1)  # would fail if used
        torch.testing.assert_close(model(x), plain)


# -- angular head -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_angular_margin_math(kind):
    torch.manual_seed(1)
    head = AngularHead(7, 4, scale=10.0, margin=0.3, kind=kind)
    features = torch.randn(5, 7)
    labels = torch.tensor([0, 3, 1, -1, 2])
    cos = head.cosine(features).detach()
    assert float(cos.abs().max()) <= 1.0
    expected_cos = (
        torch.nn.functional.normalize(features)
        @ torch.nn.functional.normalize(head.weight.detach()).T
    )
    torch.testing.assert_close(cos.detach(), expected_cos)
    torch.testing.assert_close(head(features), 10.0 * cos)
    logits = head.margin_logits(features, labels).detach()
    plain = 10.0 * cos.detach()
    for i, label in enumerate(labels.tolist()):
        for k in range(4):
            if k != label:  # other classes and unlabelled rows: no margin
                assert float(logits[i, k]) == pytest.approx(float(plain[i, k]), abs=1e-5)
        if label >= 0:
            c = float(cos[i, label])
            want = c - 0.3 if kind == "cosface" else math.cos(math.acos(c) + 0.3)
            assert float(logits[i, label]) == pytest.approx(10.0 * want, abs=1e-4)
            assert float(logits[i, label]) < float(plain[i, label])  # the margin costs the truth


def test_abra_net_config_round_trip_and_checks(data):
    model = _net(data, stages=("layer3", "stem"), margin=0.1, margin_type="arcface")
    spec = model.spec()
    assert spec["family"] == "abra" and spec["stages"] == ["stem", "layer3"]
    rebuilt = build_network(spec)
    assert isinstance(rebuilt, AbraClassifier)
    assert rebuilt.abra_config == model.abra_config
    with pytest.raises(ValueError, match="ABRA stages"):
        AbraNetConfig(stages=("layer9",))
    with pytest.raises(ValueError, match="margin type"):
        AbraNetConfig(margin_type="sphere")
    with pytest.raises(ValueError, match="Unknown ABRA configuration keys"):
        AbraNetConfig.from_dict({**spec, "extra": 1})


# -- alignment --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cosine", "moments", "cosine+moments", "none"])
def test_alignment_is_zero_for_identical_features(kind):
    torch.manual_seed(2)
    clean = torch.rand(10, 6)
    assert float(alignment_loss(clean, clean.clone(), kind)) == pytest.approx(0.0, abs=1e-6)
    moved = (clean + torch.randn(10, 6)).requires_grad_(True)
    loss = alignment_loss(clean.requires_grad_(True), moved, kind)
    if kind == "none":
        assert float(loss) == 0.0
        return
    assert float(loss) > 0
    loss.backward()
    assert clean.grad is None  # the clean features are the fixed target
    assert moved.grad is not None and float(moved.grad.abs().sum()) > 0


def test_moment_matching_penalizes_collapse():
    torch.manual_seed(3)
    clean = torch.rand(32, 8)
    collapsed = clean.mean(0, keepdim=True).expand(32, 8).clone()
    assert float(alignment_loss(clean, collapsed, "moments")) > 0.01
    with pytest.raises(ValueError, match="Unknown alignment"):
        alignment_loss(clean, clean, "kl")


# -- training ---------------------------------------------------------------------------------
def test_abra_loss_parts_and_running_statistics(data):
    model = _net(data).train()
    x, y = _batch(data, 24)
    controls = data.batch(np.flatnonzero(data.labels < 0)[:8])
    bn = model.backbone.layer1[0].bn1
    before = bn.running_mean.clone()
    losses = abra_loss(model, torch.cat([x, controls]), y, AbraConfig(steps=2))
    assert float(losses.perturbed) > float(losses.clean)
    assert float(losses.alignment) > 0
    expected = 0.5 * losses.clean + 0.5 * losses.perturbed + losses.alignment
    torch.testing.assert_close(losses.total.detach(), expected)
    losses.total.backward()
    assert model.backbone.stem[0].weight.grad is not None
    # One running-statistics update (the clean pass), as in a plain training step.
    assert int(bn.num_batches_tracked) == 1 and not torch.equal(bn.running_mean, before)


def test_abra_training_learns_and_checkpoint_round_trips(data, tmp_path):
    train, val = data.subset(["P1", "P2", "P3"]), data.subset(["V1"])
    config = _config(method="cs-arm-bn", controls_per_episode=24)
    path = tmp_path / "abra.safetensors"
    result = train_model(_net(data), train, val, config, checkpoint_path=path, crop_size=12)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    for method in ("erm", "adabn", "cs-arm-bn"):
        accuracy = evaluate_plates(result.model, val, method).accuracy
        assert accuracy > 0.6, (method, accuracy)  # chance is 1/3
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, AbraClassifier)
    assert loaded.metadata.training["abra"]["steps"] == 1
    assert TrainConfig(**loaded.metadata.training).abra == config.abra
    x = val.batch(np.arange(16))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), result.model.eval()(x))


def test_abra_training_is_deterministic(data):
    train = data.subset(["P1", "P2"])
    config = _config(max_epochs=1, max_steps_per_epoch=2)
    first = train_model(_net(data, seed=3), train, None, config).model.state_dict()
    second = train_model(_net(data, seed=3), train, None, config).model.state_dict()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


def test_abra_needs_an_abra_network_and_valid_settings(data):
    norm = fit_normalization(data.subset(["P1"]).images)
    plain = build_resnet(ResNetConfig("resnet10", 3, 3, width=8, stem="small", normalization=norm))
    with pytest.raises(ValueError, match="build_abra"):
        train_model(plain, data.subset(["P1"]), None, _config(max_epochs=1))
    for bad in (dict(epsilon=-1), dict(step_size=0), dict(adv_weight=2), dict(alignment="kl")):
        with pytest.raises(ValueError, match="ABRA"):
            AbraConfig(**bad)
    assert AbraConfig(epsilon=1.0, steps=1).ascent_step == 1.0  # one step: FGSM
    assert AbraConfig(epsilon=1.0, steps=5).ascent_step == pytest.approx(0.5)
