"""Measurement profiles: what normalization to each plate's controls does to retrieval and mixing.

Written into docs/own-plate.md ("Measurement profiles: measured").

Two synthetic 96-well plates from two labs (``phenoadapt synth --labs 2 --sites 1``:
DMSO controls on every plate, lab and plate batch effects) are segmented and
measured by ``phenoadapt segment`` (no texture); the per-cell table is then
profiled with each normalization by :func:`phenoadapt.profiles.build_profiles`
and scored with :mod:`phenoadapt.evaluate`:

- **activity mAP**: replicates of a treatment against the controls of their own
  plate (copairs, cosine), and the fraction of treatments retrieved (BH 5%);
- **MoA mAP**: treated wells of the same MoA and another compound;
- **kNN plate accuracy** (5 neighbours, chance 0.5) and **LISI** (1 to 2) of the
  treated wells: how much of the plate the profiles still show.

Raw medians get their missing values filled with the feature's median (the
metrics refuse NaN).

Usage::

    python benchmarks/bench_measurement_profiles.py             # prints and updates the doc
    python benchmarks/bench_measurement_profiles.py --no-write
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from phenoadapt import schema
from phenoadapt.cli import main as cli
from phenoadapt.evaluate import batch_mixing, map_activity, map_consistency
from phenoadapt.profiles import build_profiles

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own-plate.md"
START, END = "<!-- measurement-profiles:start -->", "<!-- measurement-profiles:end -->"
SETTINGS = (("none", False), ("none", True), ("robust-zscore", True), ("sphering", True))


def segment_two_plates(folder: Path, seed: int) -> pd.DataFrame:
    """Synthesize two plates and segment them with the CLI; the per-cell table."""
    if cli(["synth", str(folder / "plates"), "--sites", "1", "--labs", "2", "--seed", str(seed)]):
        raise SystemExit("phenoadapt synth failed")
    plates = sorted(str(p) for p in (folder / "plates").iterdir() if p.is_dir())
    cells = folder / "cells.csv"
    if cli(["segment", *plates, "--no-texture", "--out", str(cells)]):
        raise SystemExit("phenoadapt segment failed")
    return pd.read_csv(cells)


def score(cells: pd.DataFrame, normalize: str, select: bool) -> dict[str, object]:
    """Build the profiles with one setting and score them."""
    start = time.perf_counter()
    profiles = build_profiles(cells, None, normalize, select)
    seconds = time.perf_counter() - start
    table = profiles.table.copy()
    features = [c for c in table.columns if not c.startswith("Metadata_")]
    if normalize == "none":
        table[features] = table[features].fillna(table[features].median())
        features = [f for f in features if table[f].std() > 0]
    treated = table[table[schema.ROLE] == "treated"]
    activity = map_activity(table, features, same_plate_column=schema.PLATE, null_size=2000)
    moa = map_consistency(treated, features, different=[schema.TREATMENT], null_size=2000)
    perplexity = min(20, (len(treated) - 1) // 3)  # LISI weighs 3 x perplexity neighbours
    mixing = batch_mixing(treated, features, role_column=None, n_neighbors=5, perplexity=perplexity)
    return {
        "normalization": normalize,
        "feature selection": "on" if select else "off",
        "features": len(features),
        "activity mAP": f"{activity.mean_map:.2f}",
        "retrieved": f"{activity.fraction_significant:.0%}",
        "MoA mAP": f"{moa.mean_map:.2f}",
        "kNN plate acc.": f"{mixing.knn_accuracy:.2f}",
        "LISI": f"{mixing.lisi:.2f}",
        "profiling time": f"{seconds:.1f} s",
    }


def markdown(rows: list[dict[str, object]], n_cells: int, n_wells: int) -> str:
    """The doc section."""
    head = list(rows[0])
    lines = [
        f"Two synthetic 96-well plates from two labs, {n_wells} wells, {n_cells:,} cells "
        "(`python benchmarks/bench_measurement_profiles.py`); higher mAP is better, kNN plate "
        "accuracy nearer chance (0.50) and LISI nearer 2 mean better-mixed plates.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(str(row[k]) for k in head) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cells = segment_two_plates(Path(tmp), args.seed)
    rows = [score(cells, normalize, select) for normalize, select in SETTINGS]
    n_wells = cells.groupby([schema.PLATE, schema.WELL]).ngroups
    text = markdown(rows, len(cells), n_wells)
    print(text)
    if not args.no_write:
        write_doc_section(DOC, text, START, END)


if __name__ == "__main__":
    main()
