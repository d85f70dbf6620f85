"""The one training loop (train/_loop.py): best state, early stopping, cancel, for every trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from phenoadapt import schema
from phenoadapt.errors import Cancelled
from phenoadapt.nn import ResNetConfig, build_resnet, fit_normalization, phenoprofiler
from phenoadapt.nn.abra import AbraNetConfig, build_abra
from phenoadapt.train import (
    AbraConfig,
    CellData,
    EmbedderData,
    EmbedderTrainConfig,
    ProfileTargets,
    TrainConfig,
    _loop,
    make_toy_plates,
    train_model,
    train_phenoprofiler,
    trainers,
)
from phenoadapt.train import phenoprofiler as pp_trainer
from phenoadapt.train._loop import Step, Tally, run_epochs

# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _scripted_step(model: nn.Module, val_losses: list[float]) -> Step:
    """A step whose weight moves by +1 per update and whose validation loss is scripted."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)

    def loss(net, _item, _keys):
        value = -net.weight.sum()  # gradient -1: each SGD step adds 1 to the weight
        return value, np.array([float(value.detach())])

    return Step(
        optimizer=optimizer,
        batches=lambda _epoch: [[0]],
        loss=loss,
        summarize=lambda epoch, means: {"epoch": epoch + 1, "train": float(means[0])},
        validate=lambda epoch: (val_losses[epoch], {"val": val_losses[epoch]}),
    )


def _scalar_model() -> nn.Module:
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    return model


def test_early_stopping_restores_the_best_state() -> None:
    model = _scalar_model()
    losses = [3.0, 1.0, 2.0, 2.5, 0.5]  # best after epoch 2, then two worse: stop at epoch 4
    outcome = run_epochs(model, _scripted_step(model, losses), 5, Tally(5, 5), patience=2)
    assert outcome.stopped_early and len(outcome.history) == 4
    assert outcome.best_epoch == 2 and outcome.best_loss == 1.0
    assert model.weight.item() == 2.0  # the weights after epoch 2, not epoch 4's 4.0
    assert [r["val"] for r in outcome.history] == losses[:4]


def test_without_patience_every_epoch_runs_and_the_best_is_kept() -> None:
    model = _scalar_model()
    outcome = run_epochs(model, _scripted_step(model, [3.0, 1.0, 2.0, 2.5]), 4, Tally(4, 4))
    assert not outcome.stopped_early and len(outcome.history) == 4
    assert model.weight.item() == 2.0


def test_progress_counts_over_stages_and_cancel_stops_within_one_step() -> None:
    model = _scalar_model()
    events: list[tuple] = []
    tally = Tally(4, 4, progress=lambda *e: events.append(e))
    for _ in range(2):  # two stages share one tally
        run_epochs(model, _scripted_step(model, [1.0, 1.0]), 2, tally)
    assert [e for e in events if e[0] == "epoch"] == [("epoch", i, 4) for i in range(1, 5)]
    assert events[-2:] == [("train", 4, 4), ("epoch", 4, 4)]
    steps: list[tuple] = []
    stop = Tally(9, 9, progress=lambda *e: steps.append(e), cancel=lambda: len(steps) >= 1)
    with pytest.raises(Cancelled):
        run_epochs(model, _scripted_step(model, [1.0] * 9), 9, stop)
    assert [e for e in steps if e[0] == "train"] == [("train", 1, 9)]  # no step after the request


# --------------------------------------------------------------------------- each trainer


@pytest.fixture(scope="module")
def cells() -> CellData:
    images, table = make_toy_plates(["P1", "P2"], treated_per_class=8, n_controls=8, size=12)
    return CellData.from_table(images, table, channel_names=["DNA", "ER", "Mito"])


def _classifier(data: CellData, abra: bool) -> nn.Module:
    resnet = ResNetConfig(
        "resnet10", 3, 3, width=8, stem="small", normalization=fit_normalization(data.images)
    )
    return build_abra(AbraNetConfig(resnet=resnet), seed=0) if abra else build_resnet(resnet, 0)


@pytest.fixture(scope="module")
def embedder_data() -> EmbedderData:
    images, table = make_toy_plates(2, n_channels=3, size=16, treated_per_class=8,
                                    n_controls=8, cells_per_well=4, seed=0)  # fmt: skip
    table[schema.SITE] = 1
    frame = table.copy()
    for c in range(3):
        frame[f"Cells_Intensity_Mean_ch{c}"] = images.mean(axis=(2, 3))[:, c]
    keys = [schema.PLATE, schema.WELL, schema.SITE]
    feats = [c for c in frame.columns if c.startswith("Cells_")]
    agg = {**dict.fromkeys(feats, "median"), schema.ROLE: "first"}
    profiles = frame.groupby(keys, sort=False).agg(agg).reset_index()
    return EmbedderData.from_tables(
        images, table, profiles, ProfileTargets(3), class_by="treatment"
    )


def _embedder(data: EmbedderData) -> nn.Module:
    norm = fit_normalization(np.asarray(data.images))
    return phenoprofiler(3, len(data.classes), 3, arch="resnet10", width=4, stem="small",
                         heads=2, seed=0, normalization=norm)  # fmt: skip


def _trainers(cells: CellData, embedder_data: EmbedderData):
    cfg = dict(max_epochs=3, treated_per_episode=8, controls_per_episode=8, plates_per_step=2,
               device="cpu")  # fmt: skip
    return {
        "classifier": lambda **hooks: train_model(
            _classifier(cells, False), cells, None, TrainConfig(**cfg), **hooks
        ),
        "abra": lambda **hooks: train_model(
            _classifier(cells, True), cells, None, TrainConfig(**cfg, abra=AbraConfig()), **hooks
        ),
        "phenoprofiler": lambda **hooks: train_phenoprofiler(
            _embedder(embedder_data),
            embedder_data,
            None,
            EmbedderTrainConfig(schedule="joint", epochs=3, batch_size=16, device="cpu"),
            **hooks,
        ),  # fmt: skip
    }


@pytest.mark.parametrize("name", ["classifier", "abra", "phenoprofiler"])
def test_every_trainer_runs_the_shared_loop_and_stops_within_one_step(
    name, cells, embedder_data, monkeypatch
) -> None:
    calls: list[int] = []

    def spy(model, step, epochs, tally, **kw):
        calls.append(epochs)
        return _loop.run_epochs(model, step, epochs, tally, **kw)

    monkeypatch.setattr(trainers, "run_epochs", spy)
    monkeypatch.setattr(pp_trainer, "run_epochs", spy)
    train = _trainers(cells, embedder_data)[name]
    steps: list[tuple] = []
    with pytest.raises(Cancelled):
        train(progress=lambda *e: steps.append(e), cancel=lambda: len(steps) >= 1)
    assert calls == [3]
    assert [e for e in steps if e[0] == "train"] == [steps[0]] and steps[0][1] == 1
