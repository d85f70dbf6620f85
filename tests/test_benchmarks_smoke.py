"""Smoke tests of the synthetic-plate benchmarks: their core functions run on tiny plates.

The benchmarks themselves take many minutes; these tests only make sure the
scripts cannot rot (APIs they call, table and figure writing), not the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _synthetic_data as data  # noqa: E402
import bench_domain_shift as domain  # noqa: E402
import bench_throughput as throughput  # noqa: E402

WELLS = tuple(f"{r}{c:02d}" for r in "AB" for c in range(1, 13))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, data.DataSettings]:
    """Four small plates: lab 1 with three batches (train, validation, test), and lab 2."""
    work = tmp_path_factory.mktemp("bench")
    settings = data.DataSettings(
        plates=tuple(data.design({1: [1, 1, 1], 2: [1]})),
        wells=WELLS,
        field_size=128,
        crop_size=16,
        crop_scale=0.5,
    )
    return work, settings


def test_prepare_crops_caches(tiny: tuple[Path, data.DataSettings]) -> None:
    work, settings = tiny
    crops, cells = data.prepare_crops(work, settings, workers=1, log=lambda _: None)
    assert crops.dtype == np.uint16 and crops.shape[1:] == (5, 16, 16)
    assert len(crops) == len(cells) > 0
    assert set(cells["Metadata_Plate"]) == {s.plate_id for s in settings.plates}
    messages: list[str] = []
    again, _ = data.prepare_crops(work, settings, log=messages.append)
    assert messages and "cached" in messages[0]
    np.testing.assert_array_equal(again, crops)


def test_domain_shift_core(tiny: tuple[Path, data.DataSettings], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    work, settings = tiny
    crops, cells = data.prepare_crops(work, settings, workers=1, log=lambda _: None)
    config = domain.BenchConfig(
        seeds=(0,),
        width=4,
        max_epochs=1,
        patience=1,
        steps_per_epoch=2,
        treated_per_context=16,
        controls_per_context=16,
        plates_per_step=1,
        alphas=(0.01, 10.0),
        contexts_per_plate=2,
    )
    results = domain.run_benchmark(crops, cells, config, log=lambda _: None)
    roles = results.splits.plates
    assert roles["train"] == ["lab1_batch1_plate1"] and roles["new lab"] == ["lab2_batch1_plate1"]
    # No held-out well of the training domain was trained on.
    train_keys = set(
        zip(
            results.splits.train.table["Metadata_Plate"],
            results.splits.train.table["Metadata_Well"],
            strict=True,
        )
    )
    held = results.splits.domains[domain.DOMAINS[0]]
    held_treated = held.table[held.table["Metadata_Role"] == "treated"]
    assert held_treated.shape[0] > 0
    assert not train_keys & set(
        zip(held_treated["Metadata_Plate"], held_treated["Metadata_Well"], strict=True)
    )
    expected = len(domain.TRAIN_METHODS) * len(domain.DOMAINS) * len(domain.TEST_METHODS)
    assert len(results.accuracy) == expected
    assert results.accuracy["accuracy"].between(0, 1).all()
    n_label_shift = len(config.label_shift_methods) * 2 * len(domain.STATS_METHODS)
    assert len(results.label_shift) == n_label_shift
    section = domain.render_markdown(
        results, config, cells, settings, {"domains": "d.png", "label_shift": "l.png"}
    )
    assert "ERM drop" in section and "| CS-ARM-BN |" in section
    doc = tmp_path / "doc.md"
    doc.write_text(f"# T\n\nintro\n\n{domain.START}\nSTALE-SECTION\n{domain.END}\n\noutro\n")
    domain.write_doc_section(doc, section, domain.START, domain.END)
    text = doc.read_text()
    assert (
        "intro" in text and "outro" in text and "STALE-SECTION" not in text and "ERM drop" in text
    )
    domain.plot_domains(results, tmp_path / "d.png")
    domain.plot_label_shift(results, tmp_path / "l.png")
    assert (tmp_path / "d.png").stat().st_size > 0 and (tmp_path / "l.png").stat().st_size > 0


def test_throughput_core(tiny: tuple[Path, data.DataSettings]) -> None:
    torch.set_num_threads(1)
    work, settings = tiny
    data.prepare_crops(work, settings, workers=1, log=lambda _: None)
    one = data.DataSettings(
        plates=settings.plates[:1], wells=WELLS, field_size=128, crop_size=16, crop_scale=0.5
    )
    case = throughput.Case("resnet10", 4, "small", 16, 0.5)
    big = throughput.Case("resnet10", 4, "small", 16, 0.5, tile=3, default_only=True)
    table, e2e = throughput.run_benchmark(
        work, (case, big), (32,), torch.device("cpu"), 1, one, None, log=lambda _: None
    )
    # One row per plate context, raw measured side by side with each; the tiled plate
    # (3 times the cells) measures the default context only.
    assert list(table["context"]) == ["chunks", "plate", "sample 512", "sample 512"]
    assert table["cells"].iloc[-1] == 3 * table["cells"].iloc[0]
    assert big.name.endswith("plate x3")
    for row in table.itertuples():
        assert row.raw_cells_per_s > 0 and row.adapted_cells_per_s > 0
        assert row.ratio == pytest.approx(row.raw_cells_per_s / row.adapted_cells_per_s)
        assert row.throughput_ratio == pytest.approx(1 / row.ratio)
        assert 0 < row.cpu_throughput_ratio < 100  # from the running thread's CPU time
    assert e2e is None
    text = throughput.render_section(table, e2e, torch.device("cpu"), 1)
    assert case.name in text and "Throughput ratio" in text and "sample 512" in text
    assert "from CPU time" in text
    assert f"| {big.name} |" in text and "| - | - |" in text  # unmeasured contexts
    doc = work / "throughput.md"
    doc.write_text(f"# T\n\nintro\n\n{throughput.START}\nSTALE\n{throughput.END}\n\nGPU\n")
    throughput.write_doc_section(doc, text, throughput.START, throughput.END)
    page = doc.read_text()
    assert "intro" in page and "GPU" in page and "STALE" not in page and case.name in page


def test_throughput_keeps_the_least_wall_and_cpu_time_each() -> None:
    runs = [throughput.Seconds(2.0, 1.5), throughput.Seconds(3.0, 1.0)]
    assert throughput.fastest(runs) == throughput.Seconds(2.0, 1.0)
