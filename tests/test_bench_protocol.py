"""Smoke test of benchmarks/bench_protocol.py on toy plates: train, cache, evaluate, tables."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_protocol as bp  # noqa: E402
from bench_domain_shift import DOMAINS, Splits  # noqa: E402

from phenoadapt.train import CellData, make_toy_plates  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def splits() -> Splits:
    images, table = make_toy_plates(
        ["T1", "T2", "V1", "S1", "S2"], n_channels=5, size=8, treated_per_class=16,
        n_controls=16, seed=0,
    )  # fmt: skip
    data = CellData.from_table(images, table)
    return Splits(
        train=data.subset(["T1", "T2"]),
        val=data.subset(["V1"]),
        domains={
            DOMAINS[0]: data.subset(["T1"]),
            DOMAINS[1]: data.subset(["S1"]),
            DOMAINS[2]: data.subset(["S2"]),
        },  # fmt: skip
        label_shift=data.subset(["S1", "S2"]),
    )


def test_train_cache_evaluate_and_tables(splits: Splits, tmp_path: Path) -> None:
    budget = bp.Budget(width=4, max_epochs=2, patience=2, steps_per_epoch=2, treated=8, controls=8)
    evals = bp.EvalSettings(alphas=(0.01,), treated_sweep=(8, 64), ours_alphas=(0.01,),
                            ours_treated_sweep=(64,), shift_norms=("image",))  # fmt: skip
    runs = [(m, n, 0) for m in ("erm", "cs-arm-bn") for n in ("log1p", "image")]
    for method, norm, seed in runs:
        path = bp.train_network(splits, budget, method, norm, seed, tmp_path)
        assert path.exists()
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.safetensors")}
    bp.train_network(splits, budget, "erm", "log1p", 0, tmp_path)  # cached: not retrained
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.safetensors")} == stamp
    tables = bp.gather(tmp_path, budget, splits, evals, runs, evaluate=True)
    domains, ls = tables["domains"], tables["label_shift"]
    assert len(domains) == len(runs) * len(DOMAINS) * len(bp.TEST_METHODS)
    assert set(ls["norm"]) == {"image"}  # label shift only for the chosen inputs
    assert set(ls["sampler"]) == set(bp.SAMPLERS)
    assert domains["accuracy"].between(0, 1).all() and tables["detail"]["wells"].notna().all()
    # Evaluations are cached: a second gather reads the same numbers.
    again = bp.gather(tmp_path, budget, splits, evals, runs, evaluate=True)
    pd.testing.assert_frame_equal(again["label_shift"], ls)
    assert any("| ERM |" in line for line in bp.matched_table(domains, "log1p"))
    assert len(bp.shift_table(ls, "image", "alpha", (0.01,), {"treated": 64})) > 2
    norm, decision = bp.choose_norm(domains)
    assert norm in bp.NORMS and "n=1" in decision[0]
    assert "history" in tables and set(tables["history"]["method"]) == {"erm", "cs-arm-bn"}


def test_mean_std_is_the_sample_std_and_paired_by_seed() -> None:
    assert bp.ms(pd.Series([1.0, 2.0, 3.0])) == "2.000 ± 1.000"  # ddof=1
    assert bp.ms(pd.Series([0.5])) == "0.500"
    a = pd.Series([0.5, 0.6], index=[0, 1])
    b = pd.Series([0.4, 0.4], index=[0, 1])
    assert bp.paired(a, b) == f"+0.150 ± {np.std([0.1, 0.2], ddof=1):.3f} (n=2)"


def test_plateau_table_calls_a_falling_curve_not_flat() -> None:
    epochs = np.arange(1, 31)
    falling = pd.DataFrame({"epoch": epochs, "val_loss": 2.0 - 0.02 * epochs})
    plateau = pd.DataFrame(
        {"epoch": epochs, "val_loss": np.r_[2.0 - 0.05 * epochs[:15], [1.3] * 15]}
    )
    history = pd.concat(
        [
            falling.assign(method="cs-arm-bn", norm="log1p", seed=0),
            plateau.assign(method="cs-arm-bn", norm="log1p", seed=1),
        ]
    )
    rows = bp.plateau_table(history, window=10)[2:]
    assert rows[0].endswith("| no |") and "| 30 | 30 |" in rows[0]  # best = last epoch
    assert rows[1].endswith("| yes |") and "+0.0 %" in rows[1]


def test_paired_table_pairs_networks_by_seed() -> None:
    rows = []
    for seed, (erm, cs) in enumerate([(0.50, 0.60), (0.48, 0.62)]):
        for method, acc in (("erm", erm), ("cs-arm-bn", cs)):
            for domain in DOMAINS:
                rows.append({"method": method, "norm": "log1p", "seed": seed,
                             "test_method": method, "domain": domain, "accuracy": acc})  # fmt: skip
    lines = bp.paired_table(pd.DataFrame(rows), pd.DataFrame(), "log1p")
    first = lines[2]
    assert "s0 +0.100, s1 +0.140" in first
    assert f"+0.120 ± {np.std([0.1, 0.14], ddof=1):.3f} (n=2)" in first
