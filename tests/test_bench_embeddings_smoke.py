"""Smoke run of benchmarks/bench_embeddings.py on tiny synthetic plates (a few seconds).

Checks that the benchmark's core runs end to end - plates, measurements, crops,
stepwise training, every correction, every score - and that its figures and
markdown are written, without asserting any figure of merit.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from phenoadapt import schema

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_embeddings.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_embeddings", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_embeddings"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_embeddings", None)


@pytest.fixture(scope="module")
def outcome(bench, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    wells = tuple(f"{row}{col:02d}" for row in "AB" for col in range(1, 13))  # 4 controls
    settings = bench.Settings(
        labs=3, plates_per_lab=1, wells=wells, field_size=96, moas=bench.MOAS[:2],
        crop_size=16, width=4, embedding_dim=8, mse_epochs=1, epochs=1, batch_size=64,
        controls_per_batch=16, seeds=(0,), max_steps_per_epoch=2, knn_neighbors=3,
        perplexity=5, umap_neighbors=5, null_size=50,
    )  # fmt: skip
    try:
        yield settings, bench.run(settings, tmp_path_factory.mktemp("bench"), log=lambda _: None)
    finally:
        torch.set_num_threads(before)


def test_every_method_is_scored(bench, outcome):
    settings, result = outcome
    methods = [bench.HANDCRAFTED] + [variant[0] for variant in settings.variants]
    assert bench.method_order(result.scores) == methods
    keys = [key for key, _, _ in bench.COLUMNS]
    values = result.scores[keys].to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values >= -1).all() and (values <= 3).all()
    assert set(result.tables) == set(methods)
    held_out = set(settings.held_out)
    wells = {tuple(r) for r in result.tables[bench.HANDCRAFTED][[schema.PLATE, schema.WELL]].values}
    assert len(wells) >= 60  # of 3 x 24 imaged wells; a tiny field can hold no cell
    for table in result.tables.values():
        # Every plate is embedded, the held-out lab's included, one row per well with cells.
        assert {tuple(r) for r in table[[schema.PLATE, schema.WELL]].values} == wells
        assert held_out <= set(table[schema.LAB])


def test_tvn_and_phenotype_correct_the_controls(outcome):
    _, result = outcome
    tvn = result.tables["TVN (control PCA whitening)"]
    emb = [c for c in tvn.columns if c.startswith("emb_")]
    controls = tvn[tvn[schema.ROLE] == "control"]
    means = controls.groupby(schema.PLATE)[emb].mean().to_numpy()
    assert np.allclose(means, 0, atol=1e-4)  # TVN centres each plate's controls


def test_handcrafted_profiles_are_control_zscored(bench, outcome):
    _, result = outcome
    table = result.tables[bench.HANDCRAFTED]
    features = [c for c in table.columns if c.startswith(("Cells_", "Nuclei_", "Cytoplasm_"))]
    assert features and np.isfinite(table[features].to_numpy()).all()
    controls = table[table[schema.ROLE] == "control"]
    assert np.allclose(controls.groupby(schema.PLATE)[features].mean().to_numpy(), 0, atol=1e-6)


def test_report_and_figures(bench, outcome, tmp_path):
    settings, result = outcome
    text = bench.report(result, settings, wall=12.0)
    assert "| hand-crafted (control z-score) |" in text and "MoA mAP held-out lab" in text
    doc = tmp_path / "embeddings.md"
    doc.write_text(f"# Title\n\nintro\n\n{bench.BEGIN}\nold\n{bench.END}\n\nafter\n")
    bench.write_doc_section(doc, text, bench.BEGIN, bench.END)
    written = doc.read_text()
    assert "old" not in written and "intro" in written and "after" in written
    # Random coordinates: the figure code, not UMAP (which compiles with numba for seconds).
    rng = np.random.default_rng(0)
    coords = {name: rng.normal(size=(len(t), 2)) for name, t in result.tables.items()}
    bench.umap_figure(result.tables, coords, result.scores, tmp_path / "umap.png")
    bench.scores_figure(result.scores, tmp_path / "scores.png")
    assert (tmp_path / "umap.png").stat().st_size > 10_000
    assert (tmp_path / "scores.png").stat().st_size > 10_000


def test_summary_table_has_mean_and_std_over_seeds(bench):
    scores = pd.DataFrame(
        {"method": ["a", "a", "b"], "seed": [0, 1, 0]}
        | {key: [0.2, 0.4, 0.5] for key, _, _ in bench.COLUMNS}
    )
    rows = bench.summary_table(scores)
    assert rows[2].startswith("| a | 0.300 +- 0.100") and rows[3].startswith("| b | 0.500 |")
