"""BBBC021 benchmark: MoA by nearest neighbour (NSC/NSCB) and batch effects per correction.

What it measures
----------------
For each way of correcting the 632 per-well CellProfiler profiles of BBBC021
(55 plates, 10 weeks; see ``docs/bbbc021.md``):

- NSC and NSCB: 1-nearest-neighbour MoA accuracy on treatment-level profiles
  (mean of the treated wells of each compound-concentration, cosine similarity),
  the neighbour being another compound (NSC) or another compound from another
  week (NSCB);
- mAP of MoA consistency (copairs; positives = same MoA, other compound) and folds
  of enrichment (99th percentile; mean of per-query odds ratios, and the pooled odds
  ratio of all pairs) on the same treatment-level profiles;
- week predictability (lower is better): leave-one-out 5-NN accuracy (cosine) of
  the week of a DMSO well from the other DMSO wells, and of a treated well from the
  treated wells of other compounds (each compound was imaged in one week, so its own
  wells would give the week away through biology).

Every choice is fixed in advance, from conventions of image-based profiling, and no
parameter is tuned on the MoA labels; the sensitivity table shows how the
recommended pipeline moves when its choices change.

The network rows train an MLP with batch norm (:mod:`phenoadapt.pipeline.tables`)
to classify the MoA of treated wells with ERM, ARM-BN or CS-ARM-BN episodes, and use
its plate-context-normalized embedding as the profile.  To keep the MoA labels of a
query away from the model that embeds it, the compounds are split into 5 folds: each
fold's model is trained without that fold's compounds, embeds every well, and only
the fold's treatments are scored as queries (their neighbours may be any other
treatment).  Several seeds give mean +- std.

Run ``python benchmarks/bench_bbbc021.py [--data DIR] [--seeds 0 1 2] [--no-network]``
(default ``tests/data/bbbc021``; about a minute without the networks, 5-10 minutes of
CPU for three seeds of the networks, one thread); it prints the tables, writes them
between the benchmark markers of ``docs/bbbc021.md`` and draws
``docs/images/bbbc021_*.png``.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from phenoadapt import schema  # noqa: E402
from phenoadapt.evaluate import (  # noqa: E402
    batch_knn_accuracy,
    folds_of_enrichment,
    majority_fraction,
    map_consistency,
    nearest_neighbour_moa,
    nsc_nscb,
    umap_coordinates,
)
from phenoadapt.pipeline.tables import (  # noqa: E402
    embedding_table,
    predict_table,
    table_config,
    train_table_model,
)
from phenoadapt.profiles import (  # noqa: E402
    COMPOUND,
    aggregate_profiles,
    control_mask,
    correlation_filter,
    drop_position_features,
    feature_columns,
    load_bbbc021,
    metadata_columns,
    normalize_profiles,
)
from phenoadapt.train import MixedBatchSampler, PlateEpisodeSampler  # noqa: E402

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bbbc021.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- benchmark:bbbc021:start -->", "<!-- benchmark:bbbc021:end -->"

Corrector = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class Pipeline:
    """A named correction from the loaded table to corrected well profiles."""

    name: str
    run: Corrector
    aggregate: str = "mean"


# ---------------------------------------------------------------- corrections


def with_pca(corrected: pd.DataFrame, n_components: int) -> pd.DataFrame:
    """Project corrected wells on their first principal axes (fit on all wells)."""
    features = feature_columns(corrected)
    scores = PCA(n_components, random_state=0).fit_transform(corrected[features].to_numpy())
    names = [f"emb_{i}" for i in range(n_components)]
    meta = corrected[metadata_columns(corrected)].reset_index(drop=True)
    return pd.concat([meta, pd.DataFrame(scores, columns=names)], axis=1)


def select_features(table: pd.DataFrame, threshold: float | None) -> list[str]:
    """Drop position features, then (optionally) collinear ones, using no labels."""
    features = drop_position_features(feature_columns(table))
    if threshold is None:
        return features
    return correlation_filter(table, features, threshold=threshold)


def sphered(
    table: pd.DataFrame,
    *,
    threshold: float | None = 0.9,
    shrinkage: str | float = "ledoit-wolf",
    centre_plates: bool = False,
) -> pd.DataFrame:
    """Feature selection, optional per-plate DMSO centring, then DMSO sphering."""
    features = select_features(table, threshold)
    if centre_plates:
        table = normalize_profiles(table, "phenotype", features=features, fraction=1.0)
    return normalize_profiles(table, "sphering", features=features, shrinkage=shrinkage)


def zscored_then(method: str, **options: object) -> Corrector:
    """Global z-score (so no feature dominates by its units) followed by ``method``."""

    def run(table: pd.DataFrame) -> pd.DataFrame:
        return normalize_profiles(normalize_profiles(table, "zscore"), method, **options)

    return run


RECOMMENDED = "selection + sphering (recommended)"

PIPELINES: tuple[Pipeline, ...] = (
    Pipeline("global z-score", lambda t: normalize_profiles(t, "zscore")),
    Pipeline("global z-score, PCA-20", lambda t: with_pca(normalize_profiles(t, "zscore"), 20)),
    Pipeline("per-plate DMSO z-score", lambda t: normalize_profiles(t, "control-zscore")),
    Pipeline(
        "per-plate DMSO z-score, PCA-20",
        lambda t: with_pca(normalize_profiles(t, "control-zscore"), 20),
    ),
    Pipeline("phenotype correction (0.7)", zscored_then("phenotype")),
    Pipeline("per-plate DMSO centring (1.0)", zscored_then("phenotype", fraction=1.0)),
    Pipeline("TVN per plate", lambda t: normalize_profiles(t, "tvn")),
    Pipeline("TVN per week", lambda t: normalize_profiles(t, "tvn", plate_column=schema.BATCH)),
    Pipeline("sphering (Ledoit-Wolf)", lambda t: normalize_profiles(t, "sphering")),
    Pipeline(
        "selection + TVN per plate",
        lambda t: normalize_profiles(t, "tvn", features=select_features(t, 0.9)),
    ),
    Pipeline(RECOMMENDED, sphered),
)

SENSITIVITY: tuple[Pipeline, ...] = (
    Pipeline("recommended", sphered),
    Pipeline("no correlation filter", lambda t: sphered(t, threshold=None)),
    Pipeline("correlation filter 0.8", lambda t: sphered(t, threshold=0.8)),
    Pipeline("correlation filter 0.95", lambda t: sphered(t, threshold=0.95)),
    Pipeline("ridge 0.1 instead of Ledoit-Wolf", lambda t: sphered(t, shrinkage=0.1)),
    Pipeline("ridge 1.0 instead of Ledoit-Wolf", lambda t: sphered(t, shrinkage=1.0)),
    Pipeline("+ per-plate DMSO centring", lambda t: sphered(t, centre_plates=True)),
    Pipeline("median of wells", sphered, aggregate="median"),
)


# ---------------------------------------------------------------- evaluation


def treatment_profiles(corrected: pd.DataFrame, aggregate: str = "mean") -> pd.DataFrame:
    """Treated wells aggregated per compound-concentration."""
    treated = corrected[~control_mask(corrected)]
    return aggregate_profiles(treated, [schema.TREATMENT], feature_columns(treated), aggregate)


def week_predictability(corrected: pd.DataFrame) -> tuple[float, float]:
    """5-NN week accuracy of DMSO wells, and of treated wells among other compounds."""
    features = feature_columns(corrected)
    X = corrected[features].to_numpy()
    controls = control_mask(corrected)
    weeks = corrected[schema.BATCH].to_numpy()
    dmso = batch_knn_accuracy(X[controls], weeks[controls], n_neighbors=5, metric="cosine")
    treated = batch_knn_accuracy(
        X[~controls],
        weeks[~controls],
        n_neighbors=5,
        metric="cosine",
        ignore_same=corrected.loc[~controls, COMPOUND].to_numpy(),
    )
    return dmso, treated


def evaluate(corrected: pd.DataFrame, aggregate: str = "mean") -> dict[str, float]:
    """NSC, NSCB, MoA mAP, FoE and week predictability of corrected well profiles."""
    profiles = treatment_profiles(corrected, aggregate)
    features = feature_columns(profiles)
    nn = nsc_nscb(
        profiles, moa_column=schema.MOA, compound_column=COMPOUND, batch_column=schema.BATCH
    )
    consistency = map_consistency(
        profiles, moa_column=schema.MOA, different=[COMPOUND], null_size=10_000, seed=0
    )
    foe = folds_of_enrichment(
        profiles[features].to_numpy(),
        profiles[schema.MOA].to_numpy(),
        ignore_same=profiles[COMPOUND].to_numpy(),
    )
    dmso, treated = week_predictability(corrected)
    return {
        "NSC": nn["nsc"].accuracy,
        "NSCB": nn["nscb"].accuracy,
        "MoA mAP": consistency.mean_map,
        "FoE": foe.mean_odds_ratio,
        "FoE pooled": foe.pooled_odds_ratio,
        "week kNN, DMSO": dmso,
        "week kNN, treated": treated,
        "dims": len(features),
    }


def run_all(table: pd.DataFrame, pipelines: tuple[Pipeline, ...]) -> tuple[pd.DataFrame, dict]:
    rows, corrected = [], {}
    for pipeline in pipelines:
        start = time.perf_counter()
        corrected[pipeline.name] = pipeline.run(table)
        scores = evaluate(corrected[pipeline.name], pipeline.aggregate)
        scores["seconds"] = time.perf_counter() - start
        rows.append({"method": pipeline.name, **scores})
        print(
            f"{pipeline.name:42s} NSC {scores['NSC']:.3f}  NSCB {scores['NSCB']:.3f}  "
            f"mAP {scores['MoA mAP']:.3f}  week(DMSO) {scores['week kNN, DMSO']:.2f}  "
            f"week(treated) {scores['week kNN, treated']:.2f}",
            flush=True,
        )
    return pd.DataFrame(rows), corrected


# ---------------------------------------------------------------- plate-context batch norm

#: Test-time variants of the MLP: (row name, training method, test-time method, domain).
#: The domain is the unit of a batch-norm context: the plate (the convention of the
#: CS-ARM-BN paper) or the week (BBBC021's experimental batch: 3-6 plates, so a
#: context pools 18-36 DMSO wells instead of 6).
NETWORK_VARIANTS: tuple[tuple[str, str, str, str], ...] = (
    ("MLP ERM (training statistics)", "erm", "erm", schema.PLATE),
    ("MLP ERM + AdaBN (whole plate)", "erm", "adabn", schema.PLATE),
    ("MLP ERM + BEN (plate's DMSO)", "erm", "ben", schema.PLATE),
    ("MLP ARM-BN (plate's treated)", "arm-bn", "arm-bn", schema.PLATE),
    ("MLP CS-ARM-BN (plate's treated + DMSO)", "cs-arm-bn", "cs-arm-bn", schema.PLATE),
    ("MLP ARM-BN, week contexts", "arm-bn", "arm-bn", schema.BATCH),
    ("MLP CS-ARM-BN, week contexts", "cs-arm-bn", "cs-arm-bn", schema.BATCH),
)
N_FOLDS = 5
#: Adam steps of every training run, fixed in advance (not tuned on MoA labels); the
#: number of epochs follows from each method's steps per epoch, so ERM, ARM-BN and
#: CS-ARM-BN make the same number of updates.
TRAIN_STEPS = 300
HIDDEN = (512, 128)


def compound_folds(table: pd.DataFrame, seed: int) -> list[np.ndarray]:
    """Held-out compounds of each of 5 folds, the compounds of an MoA in different folds.

    Compounds are shuffled within their MoA and dealt to the folds in turn, MoA after
    MoA, so that no MoA (2-4 compounds each) loses all its compounds in one fold.
    """
    treated = table[~control_mask(table)]
    compounds = treated.groupby(COMPOUND)[schema.MOA].first()
    rng = np.random.default_rng(seed)
    dealt = [
        name
        for moa in sorted(compounds.unique())
        for name in rng.permutation(sorted(compounds.index[compounds == moa]))
    ]
    return [np.array(dealt[k::N_FOLDS]) for k in range(N_FOLDS)]


def _epochs_for(table: pd.DataFrame, method: str) -> int:
    """Epochs that give :data:`TRAIN_STEPS` Adam steps with the method's sampler."""
    if method == "erm":
        sampler = MixedBatchSampler(table, batch_size=64, batches_per_step=8)
    else:
        controls = 128 if method == "cs-arm-bn" else 0
        sampler = PlateEpisodeSampler(table, 64, controls, plates_per_step=8)
    return max(1, math.ceil(TRAIN_STEPS / sampler.steps_per_epoch()))


def average_precisions(
    X: np.ndarray, moa: np.ndarray, compound: np.ndarray, queries: np.ndarray
) -> np.ndarray:
    """Average precision of each query row: other compounds ranked by cosine, same MoA = hit.

    The pairing of :func:`phenoadapt.evaluate.map_consistency` (positives share the MoA
    and differ in compound; negatives differ in MoA), computed per query so that a
    fold's queries can be scored with the model that never saw their labels.
    """
    unit = X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12)
    out = np.full(len(queries), np.nan)
    for k, q in enumerate(queries):
        candidates = np.flatnonzero(compound != compound[q])
        order = candidates[np.argsort(-(unit[candidates] @ unit[q]), kind="stable")]
        hits = moa[order] == moa[q]
        if hits.any():
            precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            out[k] = precision[hits].mean()
    return out


def fold_scores(embedded: pd.DataFrame, held_out: np.ndarray) -> dict[str, object]:
    """NSC/NSCB hits and APs of the held-out compounds' treatments, and week predictability."""
    profiles = treatment_profiles(embedded).reset_index(drop=True)
    X = profiles[feature_columns(profiles)].to_numpy()
    moa = profiles[schema.MOA].astype(str).to_numpy()
    compound = profiles[COMPOUND].astype(str).to_numpy()
    week = profiles[schema.BATCH].astype(str).to_numpy()
    is_query = np.isin(compound, held_out)
    scores: dict[str, object] = {}
    for name, exclude in (("NSC", [compound]), ("NSCB", [compound, week])):
        per_query = nearest_neighbour_moa(X, moa, exclude).per_query
        scores[name] = per_query.loc[is_query[per_query["query"]], "correct"].to_numpy()
    queries = np.flatnonzero(is_query)
    scores["AP"] = pd.DataFrame(
        {"moa": moa[queries], "ap": average_precisions(X, moa, compound, queries)}
    )
    scores["week"] = week_predictability(embedded)
    return scores


def held_out_accuracy(cells: pd.DataFrame, held_out: np.ndarray) -> tuple[int, int]:
    """Wells of held-out compounds whose MoA the classifier head gets right."""
    rows = cells[cells[COMPOUND].isin(held_out) & (cells[schema.ROLE] == "treated")]
    rows = rows[rows[schema.PREDICTION].notna()]
    return int((rows[schema.PREDICTION] == rows[schema.MOA]).sum()), len(rows)


def run_network_seed(table: pd.DataFrame, seed: int) -> dict[str, dict[str, float]]:
    """Every network variant for one seed: 5 compound folds, each scored on its held-out part."""
    torch.manual_seed(seed)
    collected: dict[str, dict[str, list]] = {
        name: {"NSC": [], "NSCB": [], "AP": [], "week": [], "acc": []}
        for name, *_ in NETWORK_VARIANTS
    }
    # Week contexts: the week stands in for the plate as the domain of a context.
    domains = {
        schema.PLATE: table,
        schema.BATCH: table.assign(**{schema.PLATE: table[schema.BATCH]}),
    }
    for held_out in compound_folds(table, seed):
        models = {}
        for method, domain in sorted({(m, d) for _, m, _, d in NETWORK_VARIANTS}):
            if method == "erm" and domain != schema.PLATE:
                continue  # ERM training knows no domains
            data = domains[domain]
            train = data[~data[COMPOUND].isin(held_out)]
            config = table_config(method, max_epochs=_epochs_for(train, method))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ARM-BN: plates with one treated well
                models[method, domain] = train_table_model(
                    train, method, hidden=HIDDEN, config=config, seed=seed
                )
        for name, trained, test, domain in NETWORK_VARIANTS:
            model = models[trained, domain if trained != "erm" else schema.PLATE]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ARM-BN: DMSO-only plates
                predictions = predict_table(model, domains[domain], test, seed=seed)
            embedded = embedding_table(predictions)
            scores = fold_scores(embedded, held_out)
            store = collected[name]
            for key in ("NSC", "NSCB", "AP", "week"):
                store[key].append(scores[key])
            store["acc"].append(held_out_accuracy(predictions.cells, held_out))
    results = {}
    for name, store in collected.items():
        ap = pd.concat(store["AP"]).dropna()
        weeks = np.array(store["week"])
        hits, n = np.array(store["acc"]).sum(axis=0)
        results[name] = {
            "NSC": float(np.concatenate(store["NSC"]).mean()),
            "NSCB": float(np.concatenate(store["NSCB"]).mean()),
            "MoA mAP": float(ap.groupby("moa")["ap"].mean().mean()),
            "week kNN, DMSO": float(weeks[:, 0].mean()),
            "week kNN, treated": float(weeks[:, 1].mean()),
            "held-out MoA acc": hits / n,
        }
    return results


NETWORK_COLUMNS = ["NSC", "NSCB", "MoA mAP", "week kNN, DMSO", "week kNN, treated"]


def run_networks(table: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every network variant."""
    per_seed = []
    for seed in seeds:
        start = time.perf_counter()
        per_seed.append(run_network_seed(table, seed))
        print(f"  seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for name, *_ in NETWORK_VARIANTS:
        values = pd.DataFrame([result[name] for result in per_seed])
        row = {"method": name}
        for column in values.columns:
            row[column] = values[column].mean()
            row[column + " std"] = values[column].std(ddof=1) if len(values) > 1 else 0.0
        rows.append(row)
        print(
            f"{name:42s} NSC {row['NSC']:.3f}±{row['NSC std']:.3f}  "
            f"NSCB {row['NSCB']:.3f}±{row['NSCB std']:.3f}  mAP {row['MoA mAP']:.3f}  "
            f"week(DMSO) {row['week kNN, DMSO']:.2f}  week(treated) "
            f"{row['week kNN, treated']:.2f}  held-out acc {row['held-out MoA acc']:.3f}",
            flush=True,
        )
    return pd.DataFrame(rows)


def check_fold_map(table: pd.DataFrame, pipeline: Pipeline, copairs_map: float) -> None:
    """Print the per-query mAP of the folds next to copairs' mAP for a label-free correction.

    A correction uses no labels, so scoring its treatments fold by fold must give
    copairs' number: this checks :func:`average_precisions` and the fold bookkeeping.
    """
    corrected = pipeline.run(table)
    aps = [fold_scores(corrected, held_out)["AP"] for held_out in compound_folds(table, 0)]
    ap = pd.concat(aps).dropna()
    ours = float(ap.groupby("moa")["ap"].mean().mean())
    print(f"mAP check ({pipeline.name}): folds {ours:.4f}, copairs {copairs_map:.4f}")


# ---------------------------------------------------------------- output


def markdown(frame: pd.DataFrame) -> str:
    columns = ["method", "NSC", "NSCB", "MoA mAP", "FoE", "FoE pooled"]
    columns += ["week kNN, DMSO", "week kNN, treated"]
    columns += [c for c in ("dims",) if c in frame]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = [str(row["method"])]
        for column in columns[1:]:
            value = row[column]
            if column == "dims":
                cells.append(f"{int(value)}")
            else:
                cells.append(f"{value:.1f}" if column.startswith("FoE") else f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def network_markdown(frame: pd.DataFrame) -> str:
    """Mean ± standard deviation over seeds of the network rows."""
    columns = [*NETWORK_COLUMNS, "held-out MoA acc"]
    lines = ["| method | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for _, row in frame.iterrows():
        cells = [f"{row[c]:.3f} ± {row[c + ' std']:.3f}" for c in columns]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_methods(frame: pd.DataFrame, chance: float, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8 + 0.25 * max(len(frame) - 11, 0)), sharey=True)
    y = np.arange(len(frame))
    height = 0.38
    err = {c: frame[c + " std"].fillna(0) if c + " std" in frame else None for c in ("NSC", "NSCB")}
    axes[0].barh(
        y - height / 2, frame["NSC"], height, xerr=err["NSC"], label="NSC", color="#4c72b0"
    )
    axes[0].barh(
        y + height / 2, frame["NSCB"], height, xerr=err["NSCB"], label="NSCB", color="#dd8452"
    )
    axes[0].axvline(0.85, color="grey", ls="--", lw=1, label="project target NSCB 0.85")
    axes[0].set_xlim(0.3, 1.0)
    axes[0].set_xlabel("1-NN MoA accuracy (higher is better)")
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8)
    axes[1].barh(
        y - height / 2, frame["week kNN, DMSO"], height, label="DMSO wells", color="#55a868"
    )
    axes[1].barh(
        y + height / 2, frame["week kNN, treated"], height, label="treated wells", color="#8172b2"
    )
    axes[1].axvline(chance, color="grey", ls=":", lw=1, label=f"chance (DMSO) {chance:.2f}")
    axes[1].set_xlabel("week predicted by 5-NN (lower is better)")
    axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8)
    axes[0].set_yticks(y, frame["method"], fontsize=9)
    axes[0].invert_yaxis()
    fig.suptitle(
        "BBBC021: MoA retrieval and batch (week) signal per correction "
        "(MLP rows: mean ± std over seeds, held-out compounds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_umaps(corrected: dict[str, pd.DataFrame], names: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 6))
    cmap = plt.get_cmap("tab20")
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        profiles = treatment_profiles(corrected[name])
        X = profiles[feature_columns(profiles)].to_numpy()
        unit = X / np.linalg.norm(X, axis=1, keepdims=True)  # cosine geometry
        xy = umap_coordinates(unit, n_neighbors=10, min_dist=0.3, seed=0)
        moas = sorted(profiles[schema.MOA].unique())
        for i, moa in enumerate(moas):
            sel = (profiles[schema.MOA] == moa).to_numpy()
            ax.scatter(xy[sel, 0], xy[sel, 1], s=30, color=cmap(i), label=moa)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[-1].legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
    fig.suptitle("BBBC021 treatment profiles (UMAP of cosine geometry), coloured by MoA")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "bbbc021")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs alone")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds of the MLP rows"
    )
    parser.add_argument("--no-network", action="store_true", help="skip the MLP rows")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small networks; the benchmark shares its machine

    table = load_bbbc021(args.data)
    controls = control_mask(table)
    chance = majority_fraction(table.loc[controls, schema.BATCH].to_numpy())
    print(
        f"BBBC021: {len(table)} wells, {int(controls.sum())} DMSO, "
        f"{table.loc[~controls, schema.TREATMENT].nunique()} treatments"
    )
    print("\nMethods")
    main_frame, corrected = run_all(table, PIPELINES)
    print("\nSensitivity of the recommended pipeline")
    sensitivity, _ = run_all(table, SENSITIVITY)

    networks = None
    if not args.no_network and args.seeds:
        baseline = next(p for p in PIPELINES if p.name == "per-plate DMSO z-score")
        reference = main_frame.set_index("method").loc[baseline.name, "MoA mAP"]
        check_fold_map(table, baseline, reference)
        print(f"\nPlate-context batch norm (MLP, {N_FOLDS} compound folds, seeds {args.seeds})")
        start = time.perf_counter()
        networks = run_networks(table, args.seeds)
        print(f"networks: {time.perf_counter() - start:.0f} s")

    IMAGES.mkdir(parents=True, exist_ok=True)
    plotted = main_frame
    if networks is not None:
        plotted = pd.concat([main_frame, networks], ignore_index=True)
    plot_methods(plotted, chance, IMAGES / "bbbc021_methods.png")
    plot_umaps(corrected, ["per-plate DMSO z-score", RECOMMENDED], IMAGES / "bbbc021_umap.png")

    text = "\n\n".join(
        [
            f"Data: {len(table)} wells ({int(controls.sum())} DMSO), 103 treatments; NSC on "
            "103 queries, NSCB on 92 (the two MoAs imaged in one week only are dropped). "
            f"Chance level of the DMSO week prediction: {chance:.3f} (most frequent week).",
            "**Corrections**\n\n" + markdown(main_frame),
            "**Sensitivity of the recommended pipeline** (one choice changed at a time)\n\n"
            + markdown(sensitivity.drop(columns=["dims"])),
            "![methods](images/bbbc021_methods.png)\n\n![umap](images/bbbc021_umap.png)",
        ]
    )
    if networks is not None:
        text += (
            f"\n\n**Plate-context batch norm on the profiles** (MLP {HIDDEN}, {TRAIN_STEPS} "
            f"Adam steps; {N_FOLDS} folds of held-out compounds; mean ± std over seeds "
            f"{', '.join(map(str, args.seeds))}; *held-out MoA acc*: the classifier's MoA for "
            "the wells of compounds it never saw)\n\n" + network_markdown(networks)
        )
    if not args.no_doc:
        write_doc_section(DOC, text, START, END)
        print(f"results written to {DOC}")


if __name__ == "__main__":
    main()
