"""Demo: the shipped model, demo plates (reuse, seeds), run_demo outputs and ``run --demo``."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pipeline_fixtures import CONFIG, make_checkpoint

import phenoadapt.demo as demo
from phenoadapt.cli import main
from phenoadapt.errors import Cancelled, PhenoadaptError
from phenoadapt.train import load_checkpoint, read_checkpoint_metadata

# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_shipped_model_is_small_and_documented() -> None:
    path = demo.demo_model_path()
    assert path.is_file() and path.stat().st_size <= 3_000_000
    meta = read_checkpoint_metadata(path)
    assert meta.method == "cs-arm-bn"
    assert meta.channel_names == ("DNA", "ER", "RNA", "AGP", "Mito")
    assert len(meta.classes) == 8 and meta.crop_size
    record = meta.extra["demo"]
    assert {"training_lab", "new_lab"} <= set(record["accuracy_demo_plates"])
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["classes"] == list(meta.classes)
    assert load_checkpoint(path).model.num_classes == 8


@pytest.fixture
def tiny_demo(monkeypatch, tmp_path):
    """The demo machinery with tiny plates and an untrained tiny model."""
    monkeypatch.setattr(demo, "DEMO_CONFIG", CONFIG)
    ckpt = make_checkpoint(tmp_path / "tiny.safetensors")
    monkeypatch.setattr(demo, "demo_model_path", lambda: ckpt)
    return tmp_path


def test_demo_plates_are_reused_with_the_same_seed(tiny_demo) -> None:
    first = demo.make_demo_plates(tiny_demo / "d", seed=0)
    assert not first.reused and len(first.plates) == 2
    assert all(p.is_dir() for p in first.plates) and all(m.is_file() for m in first.platemaps)
    assert (first.train_lab, first.new_lab) == ("demo_training_lab", "demo_new_lab")
    again = demo.make_demo_plates(tiny_demo / "d", seed=0)
    assert again.reused and again.plates == first.plates
    with pytest.raises(PhenoadaptError, match="seed"):
        demo.make_demo_plates(tiny_demo / "d", seed=5)


def test_new_lab_differs_from_training_lab(tiny_demo) -> None:
    from phenoadapt.plate import open_plate

    plates = demo.make_demo_plates(tiny_demo / "d")
    a, b = (open_plate(p) for p in plates.plates)
    mean_a = a.read_field("A01", 1).reshape(5, -1).mean(axis=1)
    mean_b = b.read_field("A01", 1).reshape(5, -1).mean(axis=1)
    assert abs(mean_b[0] / mean_a[0] - 1) > 0.3  # a different microscope, not noise


def test_run_demo_writes_a_new_numbered_folder_each_time(tiny_demo) -> None:
    methods = ("erm", "cs-arm-bn")
    kw = dict(methods=methods, device="cpu", min_controls=4)
    first = demo.run_demo(tiny_demo / "out", **kw)
    assert first.results_dir.name == "results-001"
    names = sorted(p.name for p in first.results_dir.iterdir())
    assert names == ["accuracy.csv", "cells_cs-arm-bn.csv", "cells_erm.csv", "summary.png",
                     "wells_cs-arm-bn.csv", "wells_erm.csv"]  # fmt: skip
    acc = pd.read_csv(first.results_dir / "accuracy.csv")
    assert set(acc["method"]) == set(methods) and len(acc) == 4
    assert set(acc["lab"]) == {"training lab (new plate)", "new lab"}
    assert (first.results_dir / "summary.png").read_bytes()[:4] == b"\x89PNG"
    second = demo.run_demo(tiny_demo / "out", **kw)
    assert second.results_dir.name == "results-002" and second.plates.reused
    assert (first.results_dir / "accuracy.csv").is_file()  # earlier results untouched


def test_cancelled_demo_leaves_no_results(tiny_demo) -> None:
    demo.make_demo_plates(tiny_demo / "out" / "plates")
    seen = []

    def cancel() -> bool:
        return "adapt" in seen

    with pytest.raises(Cancelled):
        demo.run_demo(tiny_demo / "out", methods=("erm",), device="cpu", min_controls=4,
                      progress=lambda s, d, t: seen.append(s), cancel=cancel)  # fmt: skip
    leftovers = [p.name for p in (tiny_demo / "out").iterdir() if p.name != "plates"]
    assert leftovers == []


@pytest.mark.slow
def test_run_demo_command_end_to_end(tmp_path, capsys) -> None:
    """The real demo: shipped model, two demo plates, all five methods (about 2 minutes)."""
    assert main(["run", "--demo", "--out", str(tmp_path), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    results = tmp_path / "results-001"
    assert str(results / "summary.png") in printed
    acc = pd.read_csv(results / "accuracy.csv").set_index(["method", "lab"])
    assert len(acc) == 10
    new_lab = acc.xs("new lab", level="lab")
    # Adapting to the new lab's own cells beats its training statistics.
    assert new_lab.loc["cs-arm-bn", "well_accuracy"] > new_lab.loc["erm", "well_accuracy"]
    assert new_lab.loc["cs-arm-bn", "cell_accuracy"] > 0.3  # chance is 1/8
