"""benchmarks/gpu_check.py's CPU smoke run: every section runs at tiny sizes and writes its page."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402

from phenoadapt.evaluate import projection  # noqa: E402


class FakeCumlUMAP:
    """Stands in for cuml.manifold.UMAP (no cuML nor GPU here)."""

    def __init__(self, **options: object) -> None:
        self.options = options

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return X[:, :2]


@pytest.mark.slow
def test_cpu_smoke_runs_every_section_and_writes_the_page(tmp_path, monkeypatch):
    monkeypatch.setattr(projection, "_cuml_umap", lambda: FakeCumlUMAP)
    doc = gpu_check.DOC
    before = doc.stat().st_mtime_ns if doc.exists() else None
    out = tmp_path / "gpu.md"
    results = gpu_check.main(
        ["--cpu-smoke", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    )

    table = results["throughput"]["table"]
    assert set(table["network"].str.split().str[0]) == {"resnet10", "resnet50"}
    assert (table["raw_cells_per_s"] > 0).all() and (table["adapted_cells_per_s"] > 0).all()
    e2e = results["end_to_end"]
    assert e2e["fields"] == 2 and e2e["cells"] > 0 and e2e["seconds"] > 0
    train = results["training"]
    assert train["steps"] == 2 and train["steps_per_s"] > 0 and train["peak_gib"] is None
    assert results["umap"]["cells"] == gpu_check.SMOKE.umap_cells

    page = out.read_text()
    assert page.startswith("# GPU check")
    assert "CPU smoke run" in page and "**CPU (" in page
    for heading in ("## Throughput", "## End to end", "## Training", "## UMAP"):
        assert heading in page
    assert "cuML's UMAP" in page
    # The smoke run never touches docs/gpu.md.
    assert (doc.stat().st_mtime_ns if doc.exists() else None) == before


def test_umap_section_is_skipped_without_cuml(monkeypatch):
    monkeypatch.setattr(projection, "_cuml_umap", lambda: None)
    lines: list[str] = []
    assert gpu_check.section_umap(gpu_check.SMOKE, lines.append) == {
        "skipped": "cuML is not installed"
    }
    assert "skipped" in lines[0]


def test_full_sizes_measure_every_cell_of_both_networks():
    archs = [case.arch for case in gpu_check.FULL.cases]
    assert archs == ["resnet10", "resnet50"]
    assert all(case.max_cells is None for case in gpu_check.FULL.cases)
    assert gpu_check.FULL.batch_sizes == (64, 256)
    plate = gpu_check.FULL.e2e_plate
    assert (plate.n_wells, plate.field_size, plate.wells) == (384, 1080, None)
