"""The field's batch-correction baselines next to phenoadapt's; writes docs/batch-correction.md.

What it measures
----------------
Two data sets, the corrections of the JUMP batch-correction benchmark (Arevalo et
al., Nat Commun 2024) that install here next to phenoadapt's own, scored with that
benchmark's metrics.

1. **BBBC021** per-well CellProfiler profiles (632 wells, 55 plates, the 10 weeks
   as batches; ``docs/bbbc021.md``).  Label-free corrections: global z-score (the
   reference), per-plate DMSO z-score, phenotype correction, TVN, sphering on the
   DMSO wells, feature selection + sphering, Harmony and ComBat by week (on the
   z-scored features), Harmony after selection + sphering.  Plate-context batch
   norm: the MLP of ``bench_bbbc021.py`` (ERM; CS-ARM-BN with plate and with week
   contexts), trained on 4/5 of the compounds and scored on the held-out fifth
   (5 folds, one seed): a supervised reference, not a label-free correction.
2. **Synthetic embeddings**: the PhenoProfiler experiment of
   ``bench_embeddings.py`` (3 labs x 2 plates, one network trained on labs 1-2,
   full training settings, seed 0), its well-mean embeddings corrected by lab.

Scores
------
- Biology: NSC / NSCB (1-NN MoA of treatment profiles, another compound /
  another compound from another batch) and MoA mAP (copairs; positives share the
  MoA, not the compound).  Treatment profiles: compound-concentration means
  (BBBC021), compound means per lab (synthetic).
- Batch (lower is better for silhouette, higher for the others): silhouette by
  batch, iLISI (mean LISI of the batch, perplexity 30 on BBBC021, 15 on the 240
  synthetic wells), kBET acceptance rate, and graph connectivity of the MoAs
  (k = 15).  On BBBC021 each compound was imaged in one week, so the treated
  wells' week is partly biology: the batch scores use the 330 DMSO wells (graph
  connectivity: treated wells by MoA).  In the synthetic experiment every compound
  is on every plate, so the batch scores use the treated wells.

Run ``python benchmarks/bench_batch_correction.py [--skip-synthetic]`` (one thread;
BBBC021 about 3 min, the synthetic embeddings about 6 min the first time and
seconds afterwards: the embeddings are cached in ``--work-dir``).
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phenoadapt import schema
from phenoadapt.evaluate import (
    batch_silhouette,
    graph_connectivity,
    kbet,
    lisi,
    map_consistency,
    nsc_nscb,
)
from phenoadapt.profiles import (
    COMPOUND,
    aggregate_profiles,
    clean_features,
    control_mask,
    correct_batches,
    feature_columns,
    load_bbbc021,
    normalize_profiles,
)

try:  # run as a script: benchmarks/ is on sys.path
    import bench_bbbc021 as b21
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks.*
    from benchmarks import bench_bbbc021 as b21
    from benchmarks._common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "batch-correction.md"
MARKS = {
    "bbbc021": ("<!-- bench:batch:bbbc021:start -->", "<!-- bench:batch:bbbc021:end -->"),
    "synthetic": ("<!-- bench:batch:synthetic:start -->", "<!-- bench:batch:synthetic:end -->"),
}
Corrector = Callable[[pd.DataFrame], pd.DataFrame]
COLUMNS = ("NSC", "NSCB", "MoA mAP", "silhouette", "iLISI", "kBET", "graph conn.")


# ------------------------------------------------------------------ scores


def batch_scores(
    X: np.ndarray, batches: np.ndarray, X_bio: np.ndarray, moa: np.ndarray, perplexity: float
) -> dict[str, float]:
    """Silhouette, iLISI and kBET of ``batches`` on ``X``; graph connectivity of MoAs on X_bio."""
    return {
        "silhouette": batch_silhouette(X, batches),
        "iLISI": float(lisi(X, batches, perplexity).mean()),
        "kBET": kbet(X, batches),
        "graph conn.": graph_connectivity(X_bio, moa, n_neighbors=15),
    }


def biology_scores(profiles: pd.DataFrame, compound: str, batch: str) -> dict[str, float]:
    """NSC, NSCB and MoA mAP of treatment-level profiles."""
    nn = nsc_nscb(profiles, moa_column=schema.MOA, compound_column=compound, batch_column=batch)
    consistency = map_consistency(
        profiles, moa_column=schema.MOA, different=[compound], null_size=10_000, seed=0
    )
    return {"NSC": nn["nsc"].accuracy, "NSCB": nn["nscb"].accuracy,
            "MoA mAP": consistency.mean_map}  # fmt: skip


def score_bbbc021(corrected: pd.DataFrame) -> dict[str, float]:
    """Biology on compound-concentration means; batch on the DMSO wells (week)."""
    features = feature_columns(corrected)
    X = corrected[features].to_numpy()
    controls = control_mask(corrected)
    weeks = corrected[schema.BATCH].astype(str).to_numpy()
    scores = biology_scores(b21.treatment_profiles(corrected), COMPOUND, schema.BATCH)
    scores.update(batch_scores(X[controls], weeks[controls], X[~controls],
                               corrected.loc[~controls, schema.MOA].to_numpy(), 30.0))  # fmt: skip
    return scores


# ------------------------------------------------------------------ BBBC021


def _zscored(method: str, **options: object) -> Corrector:
    def run(table: pd.DataFrame) -> pd.DataFrame:
        z = normalize_profiles(table, "zscore")
        if method in ("harmony", "combat"):
            return correct_batches(z, method, batch_column=schema.BATCH, **options)
        return normalize_profiles(z, method, **options)

    return run


def _sphered_then_harmony(table: pd.DataFrame) -> pd.DataFrame:
    return correct_batches(b21.sphered(table), "harmony", batch_column=schema.BATCH)


BBBC021_METHODS: tuple[tuple[str, str, Corrector], ...] = (
    ("global z-score (reference)", "none", lambda t: normalize_profiles(t, "zscore")),
    ("per-plate DMSO z-score", "phenoadapt", lambda t: normalize_profiles(t, "control-zscore")),
    ("phenotype correction (0.7)", "phenoadapt", _zscored("phenotype")),
    ("TVN per plate", "phenoadapt", lambda t: normalize_profiles(t, "tvn")),
    ("sphering on DMSO (Ledoit-Wolf)", "phenoadapt", lambda t: normalize_profiles(t, "sphering")),
    ("selection + sphering (recommended)", "phenoadapt", b21.sphered),
    ("Harmony by week (PCA-50)", "field", _zscored("harmony")),
    ("ComBat by week", "field", _zscored("combat")),
    ("selection + sphering, then Harmony", "field", _sphered_then_harmony),
)

#: Plate-context batch norm rows: (name, training method, test method, domain column).
NETWORK_ROWS = (
    ("MLP ERM (training statistics)", "erm", "erm", schema.PLATE),
    ("MLP CS-ARM-BN, plate contexts", "cs-arm-bn", "cs-arm-bn", schema.PLATE),
    ("MLP CS-ARM-BN, week contexts", "cs-arm-bn", "cs-arm-bn", schema.BATCH),
)


def run_label_free(table: pd.DataFrame, log=print) -> list[dict]:
    rows = []
    for name, kind, correct in BBBC021_METHODS:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            corrected = correct(table)
        rows.append({"method": name, "kind": kind, **score_bbbc021(corrected),
                     "seconds": time.perf_counter() - start})  # fmt: skip
        log(_line(rows[-1]))
    return rows


def run_networks(table: pd.DataFrame, seed: int, log=print) -> list[dict]:
    """Plate-context batch-norm MLPs, compound folds as in ``bench_bbbc021.py``, one seed."""
    from phenoadapt.pipeline.tables import (
        embedding_table,
        predict_table,
        table_config,
        train_table_model,
    )

    torch.manual_seed(seed)
    domains = {schema.PLATE: table,
               schema.BATCH: table.assign(**{schema.PLATE: table[schema.BATCH]})}  # fmt: skip
    store: dict[str, dict[str, list]] = {
        n: {"hits": [], "ap": [], "batch": []} for n, *_ in NETWORK_ROWS
    }
    start = time.perf_counter()
    for held_out in b21.compound_folds(table, seed):
        for name, method, test, domain in NETWORK_ROWS:
            data = domains[domain]
            train = data[~data[COMPOUND].isin(held_out)]
            config = table_config(method, max_epochs=b21._epochs_for(train, method))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = train_table_model(train, method, hidden=b21.HIDDEN, config=config,
                                          seed=seed)  # fmt: skip
                embedded = embedding_table(predict_table(model, data, test, seed=seed))
            # Week contexts renamed the plate column: give the weeks back for the scores.
            embedded[schema.BATCH] = embedded[schema.BATCH].astype(str)
            scores = b21.fold_scores(embedded, held_out)
            store[name]["hits"].append((scores["NSC"], scores["NSCB"]))
            store[name]["ap"].append(scores["AP"])
            usable = embedded.dropna(subset=feature_columns(embedded))
            features = feature_columns(usable)
            X = usable[features].to_numpy()
            controls = control_mask(usable)
            weeks = usable[schema.BATCH].astype(str).to_numpy()
            store[name]["batch"].append(batch_scores(
                X[controls], weeks[controls], X[~controls],
                usable.loc[~controls, schema.MOA].to_numpy(), 30.0))  # fmt: skip
    rows = []
    for name, *_ in NETWORK_ROWS:
        s = store[name]
        ap = pd.concat(s["ap"]).dropna()
        batch = pd.DataFrame(s["batch"]).mean().to_dict()
        rows.append({
            "method": name, "kind": "MLP on MoA labels (supervised)",
            "NSC": float(np.concatenate([h[0] for h in s["hits"]]).mean()),
            "NSCB": float(np.concatenate([h[1] for h in s["hits"]]).mean()),
            "MoA mAP": float(ap.groupby("moa")["ap"].mean().mean()), **batch,
            "seconds": (time.perf_counter() - start) / len(NETWORK_ROWS),
        })  # fmt: skip
        log(_line(rows[-1]))
    return rows


# ------------------------------------------------------------------ synthetic embeddings


def synthetic_tables(work: Path, seed: int, log=print) -> dict[str, pd.DataFrame]:
    """Raw, CS-ARM-BN and hand-crafted well tables of the embeddings experiment (cached)."""
    names = {"raw": "synthetic_raw.csv", "cs-arm-bn": "synthetic_csarmbn.csv",
             "handcrafted": "synthetic_handcrafted.csv"}  # fmt: skip
    paths = {k: work / v for k, v in names.items()}
    if all(p.exists() for p in paths.values()):
        return {k: pd.read_csv(p) for k, p in paths.items()}
    try:
        import bench_embeddings as be
    except ImportError:  # pragma: no cover
        from benchmarks import bench_embeddings as be
    settings = be.Settings(seeds=(seed,))
    started = time.perf_counter()
    experiment = be.make_experiment(work / "plates", settings)
    cells = be.experiment_cells(experiment, settings)
    log(f"synthetic: {len(cells.table)} cells in {time.perf_counter() - started:.0f} s")
    model = be.train_embedder(cells, settings, seed, plate_context=False)
    tables = be.embedding_tables(model, cells, ["none", "cs-arm-bn"], seed)
    out = {"raw": tables["none"], "cs-arm-bn": tables["cs-arm-bn"],
           "handcrafted": be.handcrafted_wells(cells.table)}  # fmt: skip
    for key, table in out.items():
        table.to_csv(paths[key], index=False)
    log(f"synthetic embeddings cached in {work} ({time.perf_counter() - started:.0f} s)")
    return out


def score_synthetic(wells: pd.DataFrame) -> dict[str, float]:
    """Biology on compound means per lab (NSCB: another compound from another lab); batch
    scores by lab on the treated wells."""
    treated = wells[~control_mask(wells)].reset_index(drop=True)
    treated, _ = clean_features(treated)
    features = feature_columns(treated)
    profiles = aggregate_profiles(treated, [schema.TREATMENT, schema.LAB], features, "mean")
    scores = biology_scores(profiles, schema.TREATMENT, schema.LAB)
    X = treated[features].to_numpy()
    scores.update(batch_scores(X, treated[schema.LAB].astype(str).to_numpy(), X,
                               treated[schema.MOA].to_numpy(), 15.0))  # fmt: skip
    return scores


def run_synthetic(work: Path, seed: int, log=print) -> list[dict]:
    tables = synthetic_tables(work, seed, log)
    raw = tables["raw"]
    lab = {"batch_column": schema.LAB}
    methods: tuple[tuple[str, str, Callable[[], pd.DataFrame]], ...] = (
        ("raw embedding (reference)", "none", lambda: raw),
        ("phenotype correction (0.7)", "phenoadapt", lambda: normalize_profiles(raw, "phenotype")),
        ("TVN per plate", "phenoadapt", lambda: normalize_profiles(raw, "tvn")),
        ("sphering on controls", "phenoadapt", lambda: normalize_profiles(raw, "sphering")),
        ("plate-context BN (CS-ARM-BN statistics)", "phenoadapt", lambda: tables["cs-arm-bn"]),
        ("Harmony by lab", "field", lambda: correct_batches(raw, "harmony", **lab)),
        ("ComBat by lab", "field", lambda: correct_batches(raw, "combat", **lab)),
        ("Harmony by lab, after plate-context BN", "field",
         lambda: correct_batches(tables["cs-arm-bn"], "harmony", **lab)),
        ("hand-crafted (control z-score)", "none", lambda: tables["handcrafted"]),
    )  # fmt: skip
    rows = []
    for name, kind, make in methods:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = score_synthetic(make())
        rows.append({"method": name, "kind": kind, **scores,
                     "seconds": time.perf_counter() - start})  # fmt: skip
        log(_line(rows[-1]))
    return rows


# ------------------------------------------------------------------ report


def _line(row: dict) -> str:
    return f"{row['method']:45s} " + "  ".join(f"{c} {row[c]:.3f}" for c in COLUMNS)


def markdown(rows: list[dict], note: str) -> str:
    head = "| method | kind | " + " | ".join(COLUMNS) + " |"
    lines = [note, "", head, "|---|---|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append(f"| {r['method']} | {r['kind']} | "
                     + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "bbbc021")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/phenoadapt-bench-batch"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-bbbc021", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--no-network", action="store_true", help="BBBC021 without the MLPs")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("harmonypy").setLevel(logging.WARNING)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, 1 thread, torch {torch.__version__}"
    if not args.skip_bbbc021:
        start = time.perf_counter()
        table = load_bbbc021(args.data)
        rows = run_label_free(table)
        if not args.no_network:
            rows += run_networks(table, args.seed)
        note = (
            f"BBBC021, {len(table)} wells, batches = 10 weeks; {machine}; "
            f"{(time.perf_counter() - start) / 60:.1f} min.  NSC on 103 treatments, NSCB on 92; "
            "silhouette, iLISI (1-10) and kBET on the 330 DMSO wells by week; graph "
            "connectivity of the 12 MoAs on the treated wells.  MLP rows: seed "
            f"{args.seed}, 5 folds of held-out compounds, batch scores averaged over folds."
        )
        if not args.no_doc:
            write_doc_section(DOC, markdown(rows, note), *MARKS["bbbc021"],
                              title="Batch correction: the field's baselines")  # fmt: skip
    if not args.skip_synthetic:
        start = time.perf_counter()
        rows = run_synthetic(args.work_dir, args.seed)
        note = (
            f"Synthetic embeddings (`bench_embeddings.py` experiment, seed {args.seed}, full "
            f"training), batches = 3 labs (lab 3 never trained on); {machine}; scoring "
            f"{(time.perf_counter() - start) / 60:.1f} min.  NSC/NSCB on compound means per lab "
            "(NSCB: another compound from another lab); silhouette, iLISI (1-3), kBET by lab "
            "and graph connectivity of the MoAs on the treated wells."
        )
        if not args.no_doc:
            write_doc_section(DOC, markdown(rows, note), *MARKS["synthetic"],
                              title="Batch correction: the field's baselines")  # fmt: skip
    print(f"wrote {DOC}" if not args.no_doc else "done")


if __name__ == "__main__":
    main()
