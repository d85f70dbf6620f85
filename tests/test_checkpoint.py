"""Checkpoints: safetensors + JSON round trip, ensembles, errors for foreign or unfit files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from phenoadapt.adapt import ContextSpec, Runtime
from phenoadapt.errors import ModelError
from phenoadapt.nn import Normalization, ResNetConfig, build_resnet
from phenoadapt.plate.channels import Channel, ChannelRole, make_channels
from phenoadapt.train import (
    CheckpointMetadata,
    check_classes,
    load_checkpoint,
    load_ensemble,
    make_toy_plates,
    match_channels,
    predict_with_checkpoints,
    read_checkpoint_metadata,
    save_checkpoint,
)
from phenoadapt.train.checkpoint import METADATA_KEY

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
CLASSES = ("moa_a", "moa_b", "moa_c")


# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0, n_channels: int = 5) -> torch.nn.Module:
    norm = Normalization("log1p", (5.0,) * n_channels, (0.5,) * n_channels, (4000.0,) * n_channels)
    config = ResNetConfig("resnet10", n_channels, 3, width=4, stem="small", normalization=norm)
    model = build_resnet(config, seed=seed)
    with torch.no_grad():  # running statistics as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(17)
    return model.eval()


def _metadata(**kw) -> CheckpointMetadata:
    base = dict(
        network={}, classes=CLASSES, channel_names=CHANNELS, method="cs-arm-bn", crop_size=64,
        input_size=56, training_plates=("P1", "P2"), validation_plates=("V1",),
        metrics={"val_accuracy": 0.9, "best_epoch": np.int64(3)}, training={"lr": 1e-3},
    )  # fmt: skip
    return CheckpointMetadata(**{**base, **kw})


def test_round_trip(tmp_path: Path) -> None:
    model = _model()
    path = save_checkpoint(tmp_path / "model", model, _metadata())
    assert path.suffix == ".safetensors" and path.exists()
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves nothing behind
    loaded = load_checkpoint(path)
    meta = loaded.metadata
    assert meta.classes == CLASSES and meta.channel_names == CHANNELS
    assert meta.crop_size == 64 and meta.input_size == 56 and meta.method == "cs-arm-bn"
    assert meta.training_plates == ("P1", "P2") and meta.metrics["best_epoch"] == 3
    assert meta.network["arch"] == "resnet10" and meta.architecture == "resnet10"
    assert meta.normalization["transform"] == "log1p" and meta.normalization["clip"] == [4000.0] * 5
    assert set(meta.versions) >= {"phenoadapt", "torch", "numpy", "safetensors"} and meta.created
    original, restored = model.state_dict(), loaded.model.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)  # BN buffers included
    assert not loaded.model.training
    x = torch.rand(3, 5, 16, 16) * 3000
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))
    assert read_checkpoint_metadata(path).classes == CLASSES


def test_a_checkpoint_gets_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    """Checkpoints are written by export.write_atomic like every output: not mkstemp's 0600."""
    import os

    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "sub" / "model", _model(), _metadata())
        assert path.stat().st_mode & 0o777 == 0o644
        os.chmod(path, 0o640)  # a replaced checkpoint keeps the permissions it had
        save_checkpoint(path, _model(seed=1), _metadata())
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    assert not list(path.parent.glob("*.tmp")) and load_checkpoint(path).metadata.crop_size == 64


def test_metadata_is_plain_json_in_the_safetensors_header(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.safetensors", _model(), _metadata())
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    doc = json.loads(header["__metadata__"][METADATA_KEY])
    assert doc["format"] == "phenoadapt-checkpoint" and doc["classes"] == list(CLASSES)


def test_save_refuses_inconsistent_metadata(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 outputs but 2 classes"):
        save_checkpoint(tmp_path / "m", _model(), _metadata(classes=("a", "b")))
    with pytest.raises(ValueError, match="5 channels but 3 are named"):
        save_checkpoint(tmp_path / "m", _model(), _metadata(channel_names=("DNA", "ER", "RNA")))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="No checkpoint file"):
        load_checkpoint(tmp_path / "missing.safetensors")
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, I am not a model")
    with pytest.raises(ModelError, match="not a phenoadapt checkpoint.*safetensors"):
        load_checkpoint(text)
    pickled = tmp_path / "model.pt"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelError, match="not a phenoadapt checkpoint"):
        load_checkpoint(pickled)  # never unpickled
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(ModelError, match="without phenoadapt metadata"):
        load_checkpoint(foreign)


def _rewrite(path: Path, tensors: dict, doc: dict) -> None:
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(doc)})


def test_tampered_checkpoints(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m", _model(), _metadata())
    doc = json.loads(read_checkpoint_metadata(path).to_json())
    tensors = {k: v.contiguous() for k, v in _model().state_dict().items()}

    evil = tmp_path / "evil.safetensors"
    _rewrite(evil, tensors, {**doc, "network": {"family": "subprocess", "cmd": "rm -rf /"}})
    with pytest.raises(ModelError, match="Unknown network family 'subprocess'"):
        load_checkpoint(evil)

    wrong = tmp_path / "wrong.safetensors"
    _rewrite(wrong, tensors, {**doc, "network": {**doc["network"], "arch": "resnet18"}})
    with pytest.raises(ModelError, match="do not fit its resnet18 description"):
        load_checkpoint(wrong)

    newer = tmp_path / "newer.safetensors"
    _rewrite(newer, tensors, {**doc, "format_version": 99})
    with pytest.raises(ModelError, match="newer phenoadapt"):
        load_checkpoint(newer)

    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata={METADATA_KEY: "{not json"})
    with pytest.raises(ModelError, match="not valid JSON"):
        load_checkpoint(broken)


def test_match_channels_by_name_or_role() -> None:
    meta = _metadata()
    plate = ["Brightfield", "ER", "AGP", "Mito", "DNA", "RNA"]  # Opera Phenix order
    assert match_channels(meta, plate) == [4, 1, 5, 2, 3]
    stains = [
        Channel("1", "Hoechst 33342", ChannelRole.DNA), Channel("2", "Alexa 488 ConA"),
        Channel("3", "SYTO 14"), Channel("4", "Phalloidin/WGA"), Channel("5", "MitoTracker"),
    ]  # fmt: skip
    assert match_channels(meta, stains) == [0, 1, 2, 3, 4]
    with pytest.raises(ModelError) as missing:
        match_channels(meta, ["DNA", "ER", "AGP"])
    assert str(missing.value) == (
        "This model was trained on DNA, ER, RNA, AGP, Mito; this plate has DNA, ER, AGP "
        "(no RNA, Mito): choose a model trained on these stains, or train one on them (the "
        "Run dock's Train tab, or phenoadapt train)."
    )
    unnamed = make_channels(["2", "4", "5"], {"2": "DNA"})
    with pytest.raises(ModelError, match="ch4, ch5 have no stain role.*name the channels"):
        match_channels(meta, unnamed)
    with pytest.raises(ModelError, match="several channels could be DNA"):
        match_channels(meta, ["Hoechst", "DAPI", "ER", "RNA", "AGP", "Mito"])


def test_check_classes() -> None:
    meta = _metadata()
    check_classes(meta, ["moa_a", "moa_c", np.nan, ""])
    with pytest.raises(ModelError, match=r"MoAs \['tubulin'\] that the checkpoint does not know"):
        check_classes(meta, ["moa_a", "tubulin"])


def test_ensemble_from_checkpoints(tmp_path: Path) -> None:
    def meta(*channels: str) -> CheckpointMetadata:
        return _metadata(channel_names=channels, input_size=None)

    a = save_checkpoint(tmp_path / "a", _model(0, 3), meta("DNA", "ER", "Mito"))
    b = save_checkpoint(tmp_path / "b", _model(1, 3), meta("DNA", "ER", "Mito"))
    images, table = make_toy_plates(["P1"], treated_per_class=10, n_controls=40, size=12, seed=0)
    members = load_ensemble([a, b], device="cpu")
    kw = dict(contexts=ContextSpec(treated_per_context=15, seed=1), runtime=Runtime(device="cpu"))
    both = predict_with_checkpoints(members, images, table, **kw).cells
    one = predict_with_checkpoints(members[0], images, table, **kw).cells
    two = predict_with_checkpoints(members[1], images, table, **kw).cells
    cols = [f"prob_{c}" for c in CLASSES]
    np.testing.assert_allclose(both[cols], (one[cols] + two[cols]) / 2, atol=1e-6)
    other = save_checkpoint(tmp_path / "c", _model(2, 3), meta("DNA", "ER", "RNA"))
    with pytest.raises(ModelError, match="differ in channel_names"):
        load_ensemble([a, other], device="cpu")
