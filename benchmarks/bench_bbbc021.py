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

Run ``python benchmarks/bench_bbbc021.py [--data DIR]`` (default ``tests/data/bbbc021``,
about a minute on 2 cores); it prints the tables, writes them between the benchmark
markers of ``docs/bbbc021.md`` and draws ``docs/images/bbbc021_*.png``.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from phenoadapt import schema  # noqa: E402
from phenoadapt.evaluate import (  # noqa: E402
    batch_knn_accuracy,
    folds_of_enrichment,
    majority_fraction,
    map_consistency,
    nsc_nscb,
    umap_coordinates,
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


def plot_methods(frame: pd.DataFrame, chance: float, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8), sharey=True)
    y = np.arange(len(frame))
    height = 0.38
    axes[0].barh(y - height / 2, frame["NSC"], height, label="NSC", color="#4c72b0")
    axes[0].barh(y + height / 2, frame["NSCB"], height, label="NSCB", color="#dd8452")
    axes[0].axvline(0.85, color="grey", ls="--", lw=1, label="project target NSCB 0.85")
    axes[0].set_xlim(0.5, 1.0)
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
    fig.suptitle("BBBC021: MoA retrieval and batch (week) signal per correction")
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


def write_doc(text: str) -> None:
    if not DOC.exists():
        print(f"{DOC} does not exist: results not written")
        return
    content = DOC.read_text()
    if START not in content:
        print(f"{DOC} has no benchmark markers: results not written")
        return
    block = f"{START}\n{text}\n{END}"
    DOC.write_text(
        re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, content, flags=re.S)
    )
    print(f"results written to {DOC}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "bbbc021")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs alone")
    args = parser.parse_args()

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

    IMAGES.mkdir(parents=True, exist_ok=True)
    plot_methods(main_frame, chance, IMAGES / "bbbc021_methods.png")
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
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
