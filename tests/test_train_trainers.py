"""Trainers: ERM degrades on a shifted plate, CS-ARM-BN recovers; early stopping, hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from phenoadapt.adapt import Runtime, predict_plate
from phenoadapt.errors import Cancelled
from phenoadapt.nn import ResNetConfig, build_resnet, fit_normalization
from phenoadapt.train import (
    CellData,
    LabelShiftSampler,
    TrainConfig,
    evaluate_contexts,
    evaluate_plates,
    load_checkpoint,
    make_toy_plates,
    train_model,
)
from phenoadapt.train.samplers import Episode
from phenoadapt.train.trainers import _episode_loss

# The held-out plate T1 has strong per-channel gains and offsets; training plates
# vary by at most exp(+-0.2).  Class k brightens channel k, so a gain looks like a class.
SHIFT = {"T1": ([2.5, 0.4, 1.8], [10.0, 0.0, 30.0])}


# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> CellData:
    images, table = make_toy_plates(
        ["P1", "P2", "P3", "V1", "T1"], treated_per_class=24, n_controls=48, size=12,
        signal=1.0, shifts=SHIFT, seed=0,
    )  # fmt: skip
    return CellData.from_table(images, table, channel_names=["DNA", "ER", "Mito"])


def _model(data: CellData, seed: int = 0) -> torch.nn.Module:
    norm = fit_normalization(data.subset(["P1", "P2", "P3"]).images)
    config = ResNetConfig("resnet10", 3, 3, width=8, stem="small", normalization=norm)
    return build_resnet(config, seed=seed)


def _config(method: str, **kw) -> TrainConfig:
    base = dict(
        method=method, max_epochs=4, patience=4, treated_per_episode=24,
        controls_per_episode=24, plates_per_step=1, device="cpu", seed=0,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(data: CellData) -> dict[str, object]:
    train, val = data.subset(["P1", "P2", "P3"]), data.subset(["V1"])
    return {m: train_model(_model(data), train, val, _config(m)) for m in ("erm", "cs-arm-bn")}


def test_erm_degrades_on_a_shifted_plate_and_cs_arm_bn_recovers(data: CellData, trained) -> None:
    test, val = data.subset(["T1"]), data.subset(["V1"])
    erm, cs = trained["erm"].model, trained["cs-arm-bn"].model
    erm_val = evaluate_plates(erm, val, "erm").accuracy
    erm_test = evaluate_plates(erm, test, "erm").accuracy
    cs_test = evaluate_plates(
        cs, test, "cs-arm-bn", treated_per_context=24, controls_per_context=24
    )
    # ERM learned the task on unshifted plates but loses it on the shifted plate ...
    assert erm_val > 0.8
    assert erm_test < erm_val - 0.2
    # ... while CS-ARM-BN, normalizing with the plate's own context, recovers.
    assert cs_test.accuracy > 0.85
    assert cs_test.accuracy > erm_test + 0.2
    assert cs_test.per_plate.keys() == {"T1"}


def test_label_shift_contexts_hurt_arm_bn_more_than_cs_arm_bn(data: CellData, trained) -> None:
    # Evaluation of the CS-ARM-BN-trained model with contexts of ~one class each.
    test = data.subset(["V1"])
    cs = trained["cs-arm-bn"].model
    sampler = LabelShiftSampler(test.table, test.labels, 0.01, 24, 48, contexts_per_plate=6, seed=0)
    shifted = sampler.contexts()
    with_controls = evaluate_contexts(cs, test, [c.context("cs-arm-bn") for c in shifted])
    treated_only = evaluate_contexts(cs, test, [c.context("arm-bn") for c in shifted])
    assert with_controls.n_cells == 6 * 24
    assert with_controls.accuracy > treated_only.accuracy


def test_history_and_best_weights(data: CellData, trained) -> None:
    result = trained["cs-arm-bn"]
    assert len(result.history) == 4 and result.best_epoch >= 1
    losses = [h["val_loss"] for h in result.history]
    assert result.best_val_loss == pytest.approx(min(losses))
    assert result.history[result.best_epoch - 1]["val_loss"] == pytest.approx(min(losses))
    # The returned model holds the best epoch's weights: re-evaluating gives its loss.
    again = evaluate_plates(result.model, data.subset(["V1"]), "cs-arm-bn")
    assert again.loss == pytest.approx(result.best_val_loss, rel=1e-5)
    assert result.training_plates == ["P1", "P2", "P3"] and result.validation_plates == ["V1"]
    meta = result.checkpoint_metadata(crop_size=12)
    assert meta.method == "cs-arm-bn" and meta.metrics["best_epoch"] == result.best_epoch
    assert meta.channel_names == ("DNA", "ER", "Mito") and meta.crop_size == 12


def test_early_stopping_patience(data: CellData) -> None:
    train, val = data.subset(["P1"]), data.subset(["V1"])
    # A huge learning rate makes the validation loss stop improving quickly.
    cfg = _config("arm-bn", max_epochs=30, patience=2, lr=0.5, plates_per_step=1)
    result = train_model(_model(data), train, val, cfg)
    assert result.stopped_early and len(result.history) == result.best_epoch + 2


def test_controls_are_masked_out_of_the_loss(data: CellData) -> None:
    model = _model(data).train()
    treated = np.flatnonzero(data.labels >= 0)[:6]
    controls = np.flatnonzero(data.roles == "control")[:10]
    cfg = _config("cs-arm-bn", flip=False, rot90=False)
    loss = _episode_loss(
        model, data, Episode("P1", treated, controls), torch.Generator(), cfg,
        torch.device("cpu"), False, False,
    )  # fmt: skip
    logits = model(data.batch(np.concatenate([treated, controls])))  # joint pass: pooled BN stats
    expected = F.cross_entropy(logits[:6], torch.as_tensor(data.labels[treated]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    alone = F.cross_entropy(model(data.batch(treated)), torch.as_tensor(data.labels[treated]))
    assert loss.item() != pytest.approx(alone.item(), rel=1e-3)  # controls shape the statistics


def test_training_is_deterministic_and_reports_progress(data: CellData, tmp_path) -> None:
    train = data.subset(["P1", "P2"])
    cfg = _config("cs-arm-bn", max_epochs=2, plates_per_step=2, max_steps_per_epoch=2)
    events = []
    a = train_model(_model(data), train, None, cfg, progress=lambda *e: events.append(e),
                    checkpoint_path=tmp_path / "m.safetensors", crop_size=12)  # fmt: skip
    b = train_model(_model(data), train, None, cfg)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ("train", 4, 4) in events and events[-1] == ("epoch", 2, 2)
    assert [e for e in events if e[0] == "train"] == [("train", i, 4) for i in range(1, 5)]
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.metadata.training["max_epochs"] == 2 and loaded.metadata.crop_size == 12
    x = data.batch(np.arange(8))
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), a.model(x), atol=1e-6)


def test_cancel_and_bad_configs(data: CellData) -> None:
    with pytest.raises(Cancelled):
        train_model(_model(data), data.subset(["P1"]), None, _config("erm"), cancel=lambda: True)
    with pytest.raises(ValueError, match="Cannot train with 'ben'"):
        TrainConfig(method="ben")
    with pytest.raises(ValueError, match="Unknown adaptation method"):
        TrainConfig(method="tent")


def test_random_crop_training_and_centre_crop_prediction(data: CellData) -> None:
    train = data.subset(["P1", "P2"])
    cfg = _config("cs-arm-bn", max_epochs=1, plates_per_step=2, input_size=8)
    result = train_model(_model(data), train, data.subset(["V1"]), cfg)
    assert result.checkpoint_metadata().input_size == 8
    out = predict_plate(result.model, data.subset(["V1"]).images, data.subset(["V1"]).table,
                        data.classes, input_size=8, runtime=Runtime(device="cpu"))  # fmt: skip
    assert out.cells["predicted_moa"].notna().all()
