"""The model-input contract: one record per checkpoint, one conversion of format 1, one reader.

Each rule is pinned where it lives: :mod:`phenoadapt.model_input` (the contract,
the legacy conversion, the channel matching), the checkpoint format 2 that
stores it, and the readers -- prediction and embedding honour a checkpoint's
unit, tile size and segmentation alike.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_fixtures import CHANNELS, make_plate
from safetensors import safe_open
from safetensors.torch import save_file

import phenoadapt.train
from phenoadapt import model_input as mi
from phenoadapt.adapt import MIN_CONTROLS, ContextSpec
from phenoadapt.cells import SegmentationParams
from phenoadapt.cli import main
from phenoadapt.errors import ModelError
from phenoadapt.models import default_model_path
from phenoadapt.nn import Normalization, ResNetConfig, build_resnet, phenoprofiler
from phenoadapt.pipeline import embed as pipeline_embed
from phenoadapt.pipeline import plate_inputs, segmentation_for
from phenoadapt.pipeline.run import RunConfig
from phenoadapt.plate.channels import ChannelRole
from phenoadapt.train.checkpoint import (
    FORMAT_VERSION,
    METADATA_KEY,
    CheckpointMetadata,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ("a", "b", "c")


def _resnet() -> torch.nn.Module:
    norm = Normalization("log1p", (5.0,) * 5, (0.5,) * 5, (4000.0,) * 5)
    return build_resnet(ResNetConfig("resnet10", 5, 3, width=4, stem="small", normalization=norm))


def _embedder() -> torch.nn.Module:
    norm = Normalization("log1p", (5.5,) * 5, (1.0,) * 5, None)
    return phenoprofiler(
        5, 3, 6, arch="resnet10", width=4, stem="small", heads=2, normalization=norm, seed=0
    ).eval()


def _format_1(path: Path, model: torch.nn.Module, extra: dict, **fields) -> Path:
    """A checkpoint as phenoadapt 0.1 wrote it: format 1, the contract as notes in ``extra``."""
    meta = CheckpointMetadata(
        network=model.spec(), classes=CLASSES, channel_names=CHANNELS, **fields
    )
    doc = json.loads(meta.to_json())
    doc["format_version"] = 1
    doc["extra"] = extra
    del doc["model_input"]
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    header = {"format": "phenoadapt-checkpoint", METADATA_KEY: json.dumps(doc)}
    save_file(tensors, str(path), metadata=header)
    return path


# --------------------------------------------------------------------------- the record


def test_the_shipped_format_1_model_reads_into_its_contract(tmp_path) -> None:
    path = default_model_path()
    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()[METADATA_KEY])["format_version"] == 1
    meta = read_checkpoint_metadata(path)
    contract = meta.model_input
    assert contract.unit == "cell" and contract.crop_size == 24 and contract.tile_size is None
    assert contract.crop_scale == 0.5 and contract.input_size is None
    assert contract.segmentation.nucleus_diameter == 16
    assert contract.segmentation.threshold_method == "li"
    assert contract.channel_names == ("DNA", "ER", "RNA", "AGP", "Mito")
    assert contract.channels[0].role is ChannelRole.DNA
    assert contract.classes == meta.classes and len(contract.classes) == 8
    assert contract.normalization == meta.normalization
    # Saved again it is format 2 and reads back into the same contract.
    ckpt = load_checkpoint(path)
    again = save_checkpoint(tmp_path / "v2", ckpt.model, ckpt.metadata)
    with safe_open(str(again), framework="pt") as handle:
        doc = json.loads(handle.metadata()[METADATA_KEY])
    assert doc["format_version"] == FORMAT_VERSION == 2 and doc["model_input"]["size"] == 24
    assert read_checkpoint_metadata(again).model_input == contract


def test_a_format_1_checkpoint_reads_into_the_contract_format_2_stores(tmp_path) -> None:
    model = _resnet()
    seg = {"nucleus_diameter": 20, "nucleus_channel": "DNA", "from_a_newer_version": 1}
    old = _format_1(
        tmp_path / "old.safetensors", model, {"unit": "cell", "crop_scale": 0.75,
        "segmentation": seg}, crop_size=32, input_size=28,
    )  # fmt: skip
    contract = read_checkpoint_metadata(old).model_input
    expected = mi.ModelInput(
        channels=tuple(mi.InputChannel.named(c) for c in CHANNELS), classes=CLASSES,
        unit="cell", size=32, input_size=28, crop_scale=0.75,
        normalization=model.spec()["normalization"],
        segmentation=SegmentationParams(nucleus_diameter=20, nucleus_channel="DNA"),
    )  # fmt: skip
    assert contract == expected
    assert mi.ModelInput.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract
    new = save_checkpoint(
        tmp_path / "new", model,
        CheckpointMetadata(network={}, classes=CLASSES, channel_names=CHANNELS, crop_size=32,
                           input_size=28, model_input=contract),
    )  # fmt: skip
    meta = read_checkpoint_metadata(new)
    assert meta.model_input == contract and "unit" not in meta.extra


def test_legacy_site_units_tile_sizes_and_unknown_units(tmp_path) -> None:
    def legacy(**extra) -> mi.ModelInput:
        meta = CheckpointMetadata(
            network={}, classes=CLASSES, channel_names=CHANNELS, crop_size=64, extra=extra
        )
        return meta.model_input

    assert legacy(unit="site", tile_size=96).tile_size == 96  # tile_size wins over crop_size
    assert legacy(unit="site").tile_size == 64  # format 1 wrote the tile side as crop_size
    assert legacy(unit="site", segmentation={"nucleus_diameter": 9}).segmentation is None
    assert legacy(segmentation={"nucleus_diameter": -3}).segmentation is None  # unreadable
    assert legacy().segmentation_or_default() == SegmentationParams()
    with pytest.raises(ModelError, match="unit 'organoid'.*update phenoadapt"):
        legacy(unit="organoid")
    # The same refusal when a file says so: at load, for predict and embed alike.
    odd = _format_1(tmp_path / "odd.safetensors", _resnet(), {"unit": "x"}, crop_size=24)
    with pytest.raises(ModelError, match="odd.safetensors: .*unit 'x'"):
        load_checkpoint(odd)


def test_sizes_missing_are_said_per_unit() -> None:
    cells = mi.ModelInput(channels=(), classes=CLASSES)
    with pytest.raises(ModelError, match="no crop size"):
        cells.image_size()
    with pytest.raises(ModelError, match="no tile size.*--unit site"):
        replace(cells, unit="site").image_size()
    assert replace(cells, size=48).image_size() == 48


def test_a_contract_that_contradicts_its_metadata_is_not_saved(tmp_path) -> None:
    meta = CheckpointMetadata(network={}, classes=CLASSES, channel_names=CHANNELS, crop_size=24)
    meta.model_input = replace(meta.model_input, size=32)
    with pytest.raises(ValueError, match="crop_size 32"):
        save_checkpoint(tmp_path / "bad", _resnet(), meta)


def test_channel_matching_has_one_home() -> None:
    assert phenoadapt.train.match_channels is mi.match_channels
    assert phenoadapt.train.checkpoint.match_channels is mi.match_channels
    contract = CheckpointMetadata(
        network={}, classes=CLASSES, channel_names=CHANNELS, crop_size=24
    ).model_input
    assert mi.match_channels(contract, ["Mito", "AGP", "RNA", "ER", "Hoechst"]) == [4, 3, 2, 1, 0]


def test_the_fewest_controls_rule_per_unit() -> None:
    assert MIN_CONTROLS == {"cell": 32, "site": 8}
    spec = ContextSpec()
    assert spec.min_controls_for("cell") == 32 and spec.min_controls_for("site") == 8
    assert ContextSpec(min_controls=5).min_controls_for("site") == 5
    config = RunConfig(min_controls=20, min_control_sites=4)
    assert config.contexts("cell").min_controls == 20 and config.contexts("site").min_controls == 4
    assert RunConfig().contexts("cell").min_controls_for("cell") == 32


# --------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    plate, platemap, folder = make_plate(tmp_path_factory.mktemp("contract"))
    return plate, platemap, folder


def _embedder_checkpoint(path: Path, **extra) -> Path:
    meta = CheckpointMetadata(
        network={}, classes=CLASSES, channel_names=CHANNELS, method="erm", crop_size=32,
        extra={"kind": "embedder", **extra},
    )  # fmt: skip
    return save_checkpoint(path, _embedder(), meta)


def test_embed_honours_unit_and_tile_size_as_predict(tiny, tmp_path, monkeypatch) -> None:
    plate, platemap, folder = tiny
    ckpt = load_checkpoint(_embedder_checkpoint(tmp_path / "site.safetensors", unit="site",
                                                tile_size=48))  # fmt: skip
    # What prediction cuts for this checkpoint: 48-pixel tiles (not its crop_size 32).
    predicted = plate_inputs(plate, ckpt.metadata.model_input, platemap=platemap)
    assert predicted.images.shape[-2:] == (48, 48)
    sizes = []
    tiles = pipeline_embed.field_tiles

    def spy(plate, channels, size, *args, **kwargs):
        sizes.append(size)
        return tiles(plate, channels, size, *args, **kwargs)

    monkeypatch.setattr(pipeline_embed, "field_tiles", spy)
    table = pipeline_embed.embed_plate(
        plate, ckpt, platemap, profile=pipeline_embed.ProfileOptions("site")
    )
    assert sizes == [48] and len(table) == len(predicted.table)
    with pytest.raises(ModelError, match="unit 'site'"):
        pipeline_embed.embed_plate(
            plate, ckpt, platemap, profile=pipeline_embed.ProfileOptions("cell")
        )


def test_embed_segments_as_the_checkpoint_was_trained(tiny, tmp_path, monkeypatch) -> None:
    plate, platemap, folder = tiny
    seg = {"nucleus_diameter": 14, "threshold_method": "otsu"}
    path = _embedder_checkpoint(tmp_path / "cell.safetensors", unit="cell", crop_scale=0.5,
                                segmentation=seg)  # fmt: skip
    ckpt = load_checkpoint(path)
    seen = []

    class Stream(pipeline_embed.CropStream):
        def __post_init__(self) -> None:
            seen.append((self.segmentation, self.crop))
            super().__post_init__()

    monkeypatch.setattr(pipeline_embed, "CropStream", Stream)
    pipeline_embed.embed_plate(plate, ckpt, platemap, wells=["A01", "A02"])
    pipeline_embed.embed_plate(
        plate, ckpt, platemap, wells=["A01"], segmentation={"nucleus_diameter": 18},
    )  # fmt: skip
    trained = SegmentationParams(nucleus_diameter=14, threshold_method="otsu")
    assert seen[0][0] == trained
    assert seen[1][0] == replace(trained, nucleus_diameter=18)
    assert seen[0][1].size == 32 and seen[0][1].scale == 0.5
    # Prediction's rule is the same one.
    run = RunConfig(segmentation_overrides={"nucleus_diameter": 18})
    assert segmentation_for(run, ckpt) == seen[1][0]
    # The CLI's --nucleus-diameter goes on top of the checkpoint's, not of the defaults.
    captured = []
    monkeypatch.setattr(
        "phenoadapt.cli.embed.embed_plate", lambda *a, **k: captured.append(k) or _stop()
    )
    argv = ["embed", str(folder), "--checkpoint", str(path), "--out", str(tmp_path / "e.csv")]
    main(argv)
    assert captured[-1]["segmentation"] == {}
    main([*argv, "--nucleus-diameter", "12"])
    assert captured[-1]["segmentation"] == {"nucleus_diameter": 12.0}


def _stop():
    raise ModelError("stopped by the test")


def test_predict_and_embed_plan_their_contexts_alike(tiny, tmp_path) -> None:
    plate, platemap, folder = tiny
    ckpt = load_checkpoint(_embedder_checkpoint(tmp_path / "c.safetensors", unit="cell"))
    crops = plate_inputs(plate, ckpt.metadata.model_input, platemap=platemap)
    spec = ContextSpec(seed=3, min_controls=1, context="chunks", treated_per_context=16)
    planned = spec.plan(crops.table, "cs-arm-bn")
    values, rows = pipeline_embed.image_embeddings(
        ckpt.model, crops.images, crops.table, bn_method="cs-arm-bn", contexts=spec
    )
    covered = np.unique(np.concatenate([c.predict for c in planned]))
    assert np.array_equal(rows, covered) and values.shape == (len(rows), 6)


def test_one_out_of_memory_message_and_one_context_record() -> None:
    from phenoadapt.adapt import Runtime
    from phenoadapt.errors import OptionError, PhenoadaptError

    runtime = Runtime(device=None, batch_size=4)
    with pytest.raises(
        PhenoadaptError, match="Out of memory while embedding plate P1.*--device cpu"
    ):
        with runtime.out_of_memory_said("embedding plate P1", "a smaller batch size"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
    with pytest.raises(RuntimeError, match="shape mismatch"):  # a bug keeps its traceback
        with runtime.out_of_memory_said("embedding plate P1", "a smaller batch size"):
            raise RuntimeError("shape mismatch")
    with pytest.raises(OptionError, match="batch_size"):
        Runtime(batch_size=0)
    for bad in ({"context": "everything"}, {"context_size": 0}, {"min_controls": 0}):
        with pytest.raises(OptionError):
            ContextSpec(**bad)
    assert ContextSpec(context="CHUNKS").context.value == "chunks"
