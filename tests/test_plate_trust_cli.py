"""The plate trust check end to end: ``phenoadapt train`` stores it, ``predict`` prints it."""

from __future__ import annotations

import json

import pytest
from pipeline_fixtures import make_plate

from phenoadapt.cli import main
from phenoadapt.pipeline.trust import METADATA_KEY, TrustReference
from phenoadapt.train import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trust_cli")
    plates = [make_plate(folder / "plates", f"tr{i}", seed=10 + i)[2] for i in range(3)]
    out = folder / "model.safetensors"
    args = [
        "train", "--plate", str(plates[0]), str(plates[1]), "--platemap",
        str(plates[0] / "platemap.csv"), str(plates[1] / "platemap.csv"), "--out", str(out),
        "--width", "4", "--crop-size", "24", "--crop-scale", "0.5", "--input-size", "20",
        "--epochs", "1", "--max-steps-per-epoch", "1", "--treated-per-episode", "16",
        "--controls-per-episode", "16", "--plates-per-step", "2", "--nucleus-diameter", "16",
        "--device", "cpu",
    ]  # fmt: skip
    assert main(args) == 0
    return {"folder": folder, "plates": plates, "ckpt": out}


def test_train_stores_a_plain_json_reference(trained) -> None:
    meta = load_checkpoint(trained["ckpt"]).metadata
    data = meta.extra[METADATA_KEY]
    json.dumps(data)  # plain numbers and strings only
    ref = TrustReference.from_json(data)
    assert len(ref.centre) == 32  # ResNet-10 of width 4: 8 x width pooled features
    assert len(ref.reference) >= 1  # a validation or leave-one-out training plate


def test_predict_prints_the_trust_of_each_plate(trained, tmp_path, capsys) -> None:
    new_plate = trained["plates"][2]
    args = [
        "predict", "--plate", str(new_plate), "--platemap", str(new_plate / "platemap.csv"),
        "--checkpoint", str(trained["ckpt"]),
        "--out", str(tmp_path / "out"), "--device", "cpu", "--min-controls", "4",
        "--controls-per-context", "16",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "trust:" in line)
    assert line.startswith("  tr2: trust: ")
    assert "distance" in line and "training plates up to" in line
    # The extra training-statistics pass does not write the embedding tables.
    assert not (tmp_path / "out" / "embeddings_unadapted.csv").exists()
