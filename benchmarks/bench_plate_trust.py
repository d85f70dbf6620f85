"""Plate trust check on the domain-shift plates; writes docs/plate-trust.md.

What it measures
----------------
The synthetic experiment of ``bench_domain_shift.py`` (lab 1: 2 training batches,
a validation batch, a test batch; labs 2 and 3: new labs).  For every (seed,
training method) the network of that benchmark is trained (or loaded from the
work folder, where both benchmarks keep their weights), and

- its plate-trust reference is fitted on the training plates' control cells
  (:func:`phenoadapt.pipeline.trust.reference_for_model`, with the validation plate);
- every plate gets its distance (:func:`phenoadapt.pipeline.trust.plate_trust`) from
  its control cells;
- every plate gets its accuracy: ERM-trained network with training statistics,
  CS-ARM-BN-trained network with CS-ARM-BN contexts (64 treated + 128 controls).

Then: does the distance predict ERM's accuracy drop (mean accuracy on the training
plates' held-out wells minus the plate's) and CS-ARM-BN's recovery (its accuracy
minus ERM's on the same plate)?  Spearman correlations over the plates that were
not trained on (validation, same-lab test, new labs), pooled over seeds, and the
mean of the per-seed correlations.

Run ``python benchmarks/bench_plate_trust.py [--seeds 0 1 2]`` (CPU, one thread).
The crops and the CS-ARM-BN weights of ``bench_domain_shift.py --contexts`` are
reused from ``--work-dir``; missing networks are trained (about 2-4 CPU minutes
each on the shared machine) and saved there.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from phenoadapt import schema
from phenoadapt.pipeline.trust import control_features, plate_trust, reference_for_model
from phenoadapt.train import CellData, evaluate_plates

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
    from _synthetic_data import DataSettings, design, prepare_crops
    from bench_domain_shift import (
        FULL_DESIGN,
        BenchConfig,
        Splits,
        _network,
        make_splits,
        train_one,
    )
except ImportError:  # pragma: no cover - imported as benchmarks.*
    from benchmarks._common import write_doc_section
    from benchmarks._synthetic_data import DataSettings, design, prepare_crops
    from benchmarks.bench_domain_shift import (
        FULL_DESIGN,
        BenchConfig,
        Splits,
        _network,
        make_splits,
        train_one,
    )

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plate-trust.md"
FIGURE = ROOT / "docs" / "images" / "plate_trust.png"
START, END = "<!-- bench:trust:start -->", "<!-- bench:trust:end -->"
METHODS = ("erm", "cs-arm-bn")
ROLES = ("training (held-out wells)", "validation", "same lab, new batch", "new lab")


def load_or_train(method: str, seed: int, splits: Splits, config: BenchConfig, work: Path):
    """The benchmark's network for (method, seed): saved weights if any, else trained and saved."""
    for name in (f"contexts_model_seed{seed}_{method}.pt", f"trust_model_seed{seed}_{method}.pt"):
        path = work / name
        if path.exists():
            model = _network(splits, config, seed)
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval(), 0.0
    started = time.perf_counter()
    model, _ = train_one(method, seed, splits, config)
    torch.save(model.state_dict(), work / f"trust_model_seed{seed}_{method}.pt")
    return model.eval(), time.perf_counter() - started


def plate_sets(splits: Splits) -> dict[str, tuple[str, CellData]]:
    """Every plate with the data it is scored on and its role."""
    out: dict[str, tuple[str, CellData]] = {}
    roles = {
        "training (held-out wells)": splits.domains["training domain"],
        "validation": splits.val,
        "same lab, new batch": splits.domains["new plates, same lab"],
        "new lab": splits.domains["new lab"],
    }
    for role, data in roles.items():
        for plate in data.plates:
            out[plate] = (role, data.subset([plate]))
    return out


def score_seed(seed: int, splits: Splits, config: BenchConfig, work: Path, log=print) -> list[dict]:
    """Distances and accuracies of every plate for one seed."""
    models = {}
    for method in METHODS:
        models[method], seconds = load_or_train(method, seed, splits, config, work)
        log(f"seed {seed} {method}: " + (f"trained in {seconds:.0f} s" if seconds else "loaded"))
    references = {
        m: reference_for_model(
            model,
            splits.train.images,
            splits.train.table,
            validation=(splits.val.images, splits.val.table),
        )  # fmt: skip
        for m, model in models.items()
    }
    rows = []
    for plate, (role, data) in plate_sets(splits).items():
        row = {"seed": seed, "plate": plate, "role": role,
               "lab": str(data.table[schema.LAB].iloc[0])}  # fmt: skip
        controls = data.roles == schema.Role.CONTROL.value
        for method, model in models.items():
            feats = control_features(model, data.images[controls])
            (trust,) = plate_trust(feats, [plate] * len(feats), np.ones(len(feats), bool),
                                   references[method])  # fmt: skip
            ref = references[method]
            # A training plate is scored against the other training plates (leave one out).
            row[f"d_{method}"] = ref.training.get(plate, trust.distance)
            row[f"limit_{method}"] = ref.limit
        erm = evaluate_plates(
            models["erm"],
            data,
            "erm",
            treated_per_context=None,
            controls_per_context=config.controls_per_context,
            seed=seed,
        )
        cs = evaluate_plates(
            models["cs-arm-bn"], data, "cs-arm-bn", seed=seed,
            treated_per_context=config.treated_per_context,
            controls_per_context=config.controls_per_context,
        )  # fmt: skip
        row.update(acc_erm=erm.accuracy, acc_cs=cs.accuracy, n_controls=int(controls.sum()))
        rows.append(row)
    table = pd.DataFrame(rows)
    in_domain = table.loc[table["role"] == "training (held-out wells)", "acc_erm"].mean()
    table["erm_drop"] = in_domain - table["acc_erm"]
    table["recovery"] = table["acc_cs"] - table["acc_erm"]
    log(table.round(3).to_string())
    return table.to_dict("records")


def correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman rho of each distance with each outcome over the plates not trained on."""
    test = table[table["role"] != "training (held-out wells)"]
    rows = []
    for d in ("d_erm", "d_cs-arm-bn"):
        for outcome in ("erm_drop", "recovery", "acc_cs"):
            pooled = spearmanr(test[d], test[outcome])
            per_seed = [
                spearmanr(g[d], g[outcome]).statistic for _, g in test.groupby("seed") if len(g) > 2
            ]
            rows.append({
                "distance": d, "outcome": outcome, "rho": pooled.statistic,
                "p": pooled.pvalue, "n": len(test), "rho_seed": np.mean(per_seed),
                "rho_seed_sd": np.std(per_seed, ddof=1) if len(per_seed) > 1 else np.nan,
                "seeds": len(per_seed),
            })  # fmt: skip
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path) -> None:
    """Distance (deployed CS-ARM-BN network) against ERM's drop and CS-ARM-BN's recovery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for role, marker in zip(ROLES, "o^sD", strict=True):
        mine = table[table["role"] == role]
        for ax, outcome in zip(axes, ("erm_drop", "recovery"), strict=True):
            ax.scatter(mine["d_cs-arm-bn"], mine[outcome], marker=marker, label=role, alpha=0.8)
    limit = table.groupby("seed")["limit_cs-arm-bn"].first().mean()
    for ax, title in zip(axes, ("ERM accuracy drop", "CS-ARM-BN recovery (CS - ERM)"), strict=True):
        ax.axvline(limit, color="grey", ls="--", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("plate distance (CS-ARM-BN network)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render(table: pd.DataFrame, corr: pd.DataFrame, seconds: float) -> str:
    """The generated section of docs/plate-trust.md."""
    seeds = sorted(table["seed"].unique())
    lines = [
        f"Seeds {', '.join(map(str, seeds))}; ResNet-10 width 16 of `bench_domain_shift.py` "
        f"(same data, same training). Per plate, mean over seeds (sample std):",
        "",
        "| plate | role | n controls | distance (ERM net) | distance (CS-ARM-BN net) | ERM acc | "
        "ERM drop | CS-ARM-BN acc | recovery |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = list(ROLES)
    grouped = table.groupby(["plate", "role"], sort=False)
    keys = sorted(grouped.groups, key=lambda k: (order.index(k[1]), k[0]))

    def ms(values: pd.Series) -> str:
        sd = values.std(ddof=1) if len(values) > 1 else float("nan")
        return f"{values.mean():.3f} ± {sd:.3f}" if np.isfinite(sd) else f"{values.mean():.3f}"

    for plate, role in keys:
        g = grouped.get_group((plate, role))
        lines.append(
            f"| {plate} | {role} | {int(g['n_controls'].iloc[0])} | {ms(g['d_erm'])} | "
            f"{ms(g['d_cs-arm-bn'])} | {ms(g['acc_erm'])} | {ms(g['erm_drop'])} | "
            f"{ms(g['acc_cs'])} | {ms(g['recovery'])} |"
        )
    limits = table.groupby("seed")[["limit_erm", "limit_cs-arm-bn"]].first()
    lines += [
        "",
        f"Reference limit (furthest training or validation plate): ERM net "
        f"{limits['limit_erm'].mean():.3f}, CS-ARM-BN net {limits['limit_cs-arm-bn'].mean():.3f} "
        "(mean over seeds). Training plates are scored leave-one-plate-out.",
        "",
        "**Spearman correlation over the plates not trained on** (pooled over seeds: n plates x "
        "seeds, not independent; *per seed*: mean ± sample std of the per-seed rho, n = "
        f"{int((table['role'] != 'training (held-out wells)').sum() / len(seeds))} plates each)",
        "",
        "| distance from | outcome | rho (pooled) | p | n | rho per seed |",
        "|---|---|---|---|---|---|",
    ]
    names = {"d_erm": "ERM net", "d_cs-arm-bn": "CS-ARM-BN net"}
    outcomes = {"erm_drop": "ERM accuracy drop", "recovery": "CS-ARM-BN recovery (CS - ERM)",
                "acc_cs": "CS-ARM-BN accuracy"}  # fmt: skip
    for r in corr.itertuples(index=False):
        lines.append(
            f"| {names[r.distance]} | {outcomes[r.outcome]} | {r.rho:.2f} | {r.p:.3f} | {r.n} | "
            f"{r.rho_seed:.2f} ± {r.rho_seed_sd:.2f} |"
        )
    lines += ["", f"Report in {seconds / 60:.1f} min (per-seed tables cached in the work folder; "
              "a seed from scratch: about 2 min, ERM training included) on "
              f"{platform.processor() or platform.machine()}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--work-dir", type=Path,
                        default=Path("/tmp/phenoadapt-bench-plate-trust/full"))  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    settings = DataSettings(plates=tuple(design(FULL_DESIGN)))
    crops, cells = prepare_crops(args.work_dir, settings, workers=1)
    config = BenchConfig()
    splits = make_splits(crops, cells, config.holdout_fraction, config.max_test_treated)
    for seed in args.seeds:
        path = args.work_dir / f"trust_seed{seed}.csv"
        if not path.exists():
            pd.DataFrame(score_seed(seed, splits, config, args.work_dir)).to_csv(path, index=False)
    table = pd.concat([pd.read_csv(args.work_dir / f"trust_seed{s}.csv") for s in args.seeds])
    corr = correlations(table)
    print(corr.round(3).to_string())
    if not args.no_doc:
        text = render(table, corr, time.perf_counter() - started)
        plot(table, FIGURE)
        text += "\n![distance against accuracy](images/plate_trust.png)\n"
        write_doc_section(DOC, text, START, END, title="Plate trust check")
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
