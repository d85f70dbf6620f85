"""The Plate dock shows the plate-trust reading of a run's plate."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pipeline_fixtures import CHANNELS, MOAS, make_plate

from phenoadapt import schema
from phenoadapt.nn import ResNetConfig, build_resnet
from phenoadapt.pipeline.trust import METADATA_KEY, fit_trust_reference
from phenoadapt.train import CheckpointMetadata, save_checkpoint

pytest.importorskip("napari")

from phenoadapt.gui.plate_dock import PlateDock  # noqa: E402
from phenoadapt.gui.session import get_session  # noqa: E402


def _checkpoint(path, reference: dict):
    model = build_resnet(ResNetConfig("resnet10", 5, len(MOAS), width=4, stem="small"), seed=0)
    meta = CheckpointMetadata(
        network=model.spec(), classes=MOAS, channel_names=CHANNELS, crop_size=24,
        extra={METADATA_KEY: reference},
    )  # fmt: skip
    return save_checkpoint(path, model, meta)


def test_plate_dock_shows_the_trust_of_the_plate(make_napari_viewer, qtbot, tmp_path) -> None:
    plate, _, folder = make_plate(tmp_path / "plates", "far1", seed=1)
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 4))
    ref = fit_trust_reference(train, np.repeat(["a", "b", "c"], 100), np.ones(300, bool))
    ckpt = _checkpoint(tmp_path / "m.safetensors", ref.to_json())
    cells = pd.DataFrame({schema.PLATE: "far1", schema.WELL: "A01",
                          schema.ROLE: ["control"] * 40 + ["treated"] * 10})  # fmt: skip
    result = SimpleNamespace(
        wells=pd.DataFrame({schema.PLATE: ["far1"], schema.WELL: ["A01"],
                            schema.PREDICTION: [MOAS[0]], schema.CONFIDENCE: [0.5]}),
        cells=cells, classes=MOAS, embeddings_unadapted=rng.normal(3.0, 1.0, (50, 4)),
        record={"models": [{"file": str(ckpt)}]},
    )  # fmt: skip
    viewer = make_napari_viewer()
    dock = PlateDock(viewer)
    dock.open_folder(folder)
    assert dock.trust.text() == ""  # no run yet
    get_session(viewer).set_result(result)
    qtbot.waitUntil(lambda: not dock.refresh_pending, timeout=5_000)  # drawn a turn later
    assert "further from the training data than any training plate" in dock.trust.text()
    get_session(viewer).set_result(None)
    assert dock.trust.text() == ""
