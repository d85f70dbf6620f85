"""``phenoadapt predict``, ``train`` and ``run``: outputs, exit codes, no partial outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
from pipeline_fixtures import make_checkpoint, make_plate

from phenoadapt import schema
from phenoadapt.cli import main
from phenoadapt.pipeline.record import file_sha256
from phenoadapt.train import load_checkpoint

# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_pipeline")
    _, _, plate_dir = make_plate(folder / "plates", "cli1", seed=3)
    return {
        "folder": folder,
        "plate": str(plate_dir),
        "map": str(plate_dir / "platemap.csv"),
        "ckpt": str(make_checkpoint(folder / "model.safetensors")),
    }


def _predict(inputs, out, *extra: str) -> list[str]:
    return [
        "predict", "--plate", inputs["plate"], "--platemap", inputs["map"], "--checkpoint",
        inputs["ckpt"], "--out", str(out), "--device", "cpu", "--min-controls", "4",
        "--controls-per-context", "16", *extra,
    ]  # fmt: skip


def test_predict_writes_tables_and_refuses_to_overwrite(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(_predict(inputs, out, "--embeddings")) == 0
    printed = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["accuracy.csv", "cells.csv", "embeddings.csv", "embeddings_unadapted.csv",
                     "run.json", "wells.csv"]  # fmt: skip
    assert str(out / "cells.csv") in printed and "cell accuracy" in printed
    cells = pd.read_csv(out / "cells.csv")
    record = json.loads((out / "run.json").read_text())
    assert record["method"] == "cs-arm-bn" and len(record["models"][0]["sha256"]) == 64
    for name in ("cells", "wells", "accuracy", "embeddings"):
        table = pd.read_csv(out / f"{name}.csv")
        assert (table[schema.RUN_ID] == record["run_id"]).all(), name
    assert {schema.WELL, schema.CELL_ID, schema.PREDICTION, "adapt_method"} <= set(cells.columns)
    assert (cells["adapt_method"] == "cs-arm-bn").all()
    emb = pd.read_csv(out / "embeddings.csv")
    assert len(emb) == len(cells) and "emb_0" in emb.columns
    # The column order of every cell embedding table (pipeline/embed.py cell_embedding_table):
    # the cells' metadata, cell id and centroid, emb_*, and the run id last (export.with_run_id).
    meta = [c for c in cells.columns if c.startswith("Metadata_") and c != schema.RUN_ID]
    ids = [schema.CELL_ID, schema.CENTROID_Y, schema.CENTROID_X]
    embedded = [c for c in emb.columns if c.startswith("emb_")]
    assert list(emb.columns) == meta + ids + embedded + [schema.RUN_ID]
    assert meta[:3] == [schema.PLATE, schema.WELL, schema.SITE]
    unadapted = pd.read_csv(out / "embeddings_unadapted.csv")
    assert list(unadapted.columns) == list(emb.columns)
    before = (out / "cells.csv").read_bytes()
    assert main(_predict(inputs, out)) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "cells.csv").read_bytes() == before
    assert main(_predict(inputs, out, "--overwrite", "--method", "erm")) == 0
    assert (pd.read_csv(out / "cells.csv")["adapt_method"] == "erm").all()
    # Another method is another run: another id.
    assert json.loads((out / "run.json").read_text())["run_id"] != record["run_id"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--min-controls", "100000"), "needs at least 100000"),
        (("--checkpoint", "NOT_A_CHECKPOINT"), "not a phenoadapt checkpoint"),
        (("--treated-per-context", "many"), "--treated-per-context"),
        (("--context", "sample", "--context-size", "0"), "context_size must be at least 1"),
    ],
)
def test_predict_bad_input_exits_2_without_outputs(inputs, tmp_path, capsys, extra, message):
    args = _predict(inputs, tmp_path / "out")
    if extra[0] == "--checkpoint":
        bogus = tmp_path / "bogus.safetensors"
        bogus.write_bytes(b"\x00" * 64)
        args[args.index("--checkpoint") + 1] = str(bogus)
    else:
        args += list(extra)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    if "needs at least" in message:
        assert "--allow-fallback" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_predict_context_choices_give_every_cell_a_prediction(inputs, tmp_path) -> None:
    tables = {}
    for context in ("chunks", "plate", "sample"):
        out = tmp_path / context
        assert main(_predict(inputs, out, "--context", context, "--context-size", "40")) == 0
        tables[context] = pd.read_csv(out / "cells.csv")
        assert tables[context][schema.PREDICTION].notna().all()
    # Same cells, statistics of different cells: close but not identical probabilities.
    probs = [c for c in tables["plate"].columns if c.startswith(schema.PROB_PREFIX)]
    assert not tables["plate"][probs].equals(tables["sample"][probs])
    assert len(tables["plate"]) == len(tables["chunks"]) == len(tables["sample"])


def test_predict_allow_fallback(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(_predict(inputs, out, "--min-controls", "100000", "--allow-fallback")) == 0
    captured = capsys.readouterr()
    assert "Falling back to ARM-BN" in captured.err
    assert (pd.read_csv(out / "cells.csv")["adapt_method"] == "arm-bn").all()


def _train(inputs, out, *extra: str) -> list[str]:
    return [
        "train", "--plate", inputs["plate"], "--platemap", inputs["map"], "--out", str(out),
        "--width", "4", "--crop-size", "24", "--crop-scale", "0.5", "--input-size", "20",
        "--epochs", "1", "--max-steps-per-epoch", "1", "--treated-per-episode", "16",
        "--controls-per-episode", "16", "--plates-per-step", "2", "--nucleus-diameter", "16",
        "--device", "cpu", *extra,
    ]  # fmt: skip


def test_train_writes_checkpoint_and_never_replaces_it(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "model.safetensors"
    assert main(_train(inputs, out)) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    meta = load_checkpoint(out).metadata
    assert meta.method == "cs-arm-bn" and meta.crop_size == 24
    # The default input stays the global clip + log1p: no per-image keys in the spec.
    assert meta.model_input.normalization["transform"] == "log1p"
    assert "image_percentile" not in meta.model_input.normalization
    stamp = out.stat().st_mtime_ns
    assert main(_train(inputs, out)) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == stamp


def test_train_with_per_image_scaling_predicts_with_it(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "image.safetensors"
    assert main(_train(inputs, out, "--input-scaling", "image")) == 0
    checkpoint = load_checkpoint(out)
    recorded = checkpoint.metadata.model_input.normalization
    assert recorded["image_percentile"] == 99.99 and recorded["image_levels"] == 255
    assert recorded["transform"] == "linear" and recorded["clip"] is None
    # The loaded network scales each crop by its own percentile: a crop twice as
    # bright (an exact power of two) gives the same logits, which log1p would not.
    model = checkpoint.model.eval()
    crops = torch.rand(6, len(checkpoint.metadata.channel_names), 20, 20) * 3000.0
    with torch.no_grad():
        torch.testing.assert_close(model(crops * 2.0), model(crops))
    tables = tmp_path / "pred"
    assert main(_predict({**inputs, "ckpt": str(out)}, tables)) == 0
    cells = pd.read_csv(tables / "cells.csv")
    assert len(cells) > 0 and cells[schema.PREDICTION].notna().all()
    record = json.loads((tables / "run.json").read_text())
    assert record["models"][0]["sha256"] == file_sha256(out)  # predicted with this checkpoint
    with pytest.raises(SystemExit):  # argparse: only the known scalings
        main(_train(inputs, tmp_path / "m", "--input-scaling", "p99"))


def test_train_rejects_bad_method_and_missing_map(inputs, tmp_path, capsys) -> None:
    assert main([*_train(inputs, tmp_path / "m"), "--platemap", inputs["map"], inputs["map"]]) == 2
    assert "one per plate" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(SystemExit):  # argparse: --method must be a training method
        main([*_train(inputs, tmp_path / "m"), "--method", "ben"])


def test_run_needs_demo(capsys) -> None:
    assert main(["run"]) == 2
    assert "--demo" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_train_under_torchrun_two_processes(inputs, tmp_path) -> None:
    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29517", "-m", "phenoadapt", *_train(inputs, out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count(f"wrote {out}") == 1  # rank 0 only
    assert load_checkpoint(out).metadata.training["plates_per_step"] == 2


def test_train_with_abra_gives_a_checkpoint_that_predicts(inputs, tmp_path, capsys) -> None:
    out = tmp_path / "abra.safetensors"
    assert main(_train(inputs, out, "--abra", "--abra-epsilon", "0.5")) == 0
    assert "cs-arm-bn + ABRA" in capsys.readouterr().out
    meta = load_checkpoint(out).metadata
    assert meta.training["abra"]["epsilon"] == 0.5
    model = load_checkpoint(out).model
    assert type(model).__name__ == "AbraClassifier"
    tables = tmp_path / "pred"
    assert main([*_predict({**inputs, "ckpt": str(out)}, tables)]) == 0
    assert (tables / "cells.csv").is_file() or any(tables.glob("*cells*.csv"))
