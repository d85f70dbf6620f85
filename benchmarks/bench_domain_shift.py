"""Domain shift and label shift on synthetic Cell Painting plates; writes docs/domain-shift.md.

What it measures
----------------
A synthetic experiment (``phenoadapt.plate.synthetic``) of three labs.  Lab 1
has four batches: the plates of batches 1-2 train the networks, batch 3 holds
the validation plate (early stopping), batch 4 the held-out test plates;
labs 2 and 3 are new labs.  Every plate carries DMSO control wells.  One crop
per ground-truth cell (5 channels, nucleus-centred, resampled to half
resolution) is the network's input; the class is the MoA (8 classes).

1. Accuracy under domain shift.  ResNet-10 classifiers are trained with ERM,
   ARM-BN and CS-ARM-BN (``phenoadapt.train``), then each is evaluated with
   the test-time methods ERM, AdaBN, ARM-BN, BEN and CS-ARM-BN
   (``phenoadapt.adapt``) in three domains: held-out wells of the training
   plates (training domain), the plates of a new batch of lab 1 (new plates,
   same lab) and the plates of labs 2 and 3 (new lab).  Mean +- std over seeds
   (network initialization and episode sampling; the plates are the same).
2. Label shift.  On the held-out plates, contexts of L treated + C control cells
   whose class proportions are drawn from Dirichlet(alpha)
   (``LabelShiftSampler``), alpha in {0.01, 0.1, 1, 10}; the statistics of each
   context come from its treated cells (ARM-BN), its controls (BEN), both
   (CS-ARM-BN) or training (ERM).

Run ``python benchmarks/bench_domain_shift.py``; it prints the tables and
writes them and the figures between the markers of ``docs/domain-shift.md``.
On a busy machine run parts side by side (``--seeds 0 --methods cs-arm-bn``...,
each saves its tables in the work folder) and then ``--report``, which gathers
every saved table and writes the doc.  About 15 CPU-minutes in all plus the
plates; on two shared cores each (seed, method) part took 17 min of wall time.
``--quick`` is a two-minute smoke run
on a few wells that writes nothing to ``docs/``.  Plates and crops are cached in
``--work-dir``, so a rerun starts at training.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phenoadapt import schema
from phenoadapt.nn import ResNetConfig, build_resnet, fit_normalization
from phenoadapt.train import (
    CellData,
    LabelShiftSampler,
    TrainConfig,
    evaluate_contexts,
    evaluate_plates,
    train_model,
)

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

try:  # run as a script (benchmarks/ on sys.path) or imported by the tests
    from _synthetic_data import DataSettings, count_cells, design, prepare_crops
except ImportError:  # pragma: no cover - imported as benchmarks._synthetic_data
    from benchmarks._synthetic_data import DataSettings, count_cells, design, prepare_crops

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "domain-shift.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

TRAIN_METHODS = ("erm", "arm-bn", "cs-arm-bn")
TEST_METHODS = ("erm", "adabn", "arm-bn", "ben", "cs-arm-bn")
STATS_METHODS = ("erm", "arm-bn", "ben", "cs-arm-bn")
#: Plate contexts of CS-ARM-BN compared by ``--contexts``: (choice, context_size).
CONTEXT_CHOICES = (("chunks", None), ("plate", None), ("sample", 192), ("sample", 512))
CONTEXTS_DOC = ROOT / "docs" / "adaptation.md"
CONTEXTS_START, CONTEXTS_END = "<!-- bench:contexts:start -->", "<!-- bench:contexts:end -->"
DOMAINS = ("training domain", "new plates, same lab", "new lab")
LABELS = {
    "erm": "ERM",
    "adabn": "AdaBN",
    "arm-bn": "ARM-BN",
    "ben": "BEN",
    "cs-arm-bn": "CS-ARM-BN",
}

# Lab 1: two training batches of 2 plates, a validation batch of 1, a test batch of 2;
# labs 2 and 3: one batch of 2 plates each.
FULL_DESIGN = {1: [2, 2, 1, 2], 2: [2], 3: [2]}
QUICK_DESIGN = {1: [2, 1, 1], 2: [1]}

Log = Callable[[str], None]


@dataclass
class BenchConfig:
    """Settings of the training and evaluation runs.

    Attributes
    ----------
    seeds
        One network per (training method, seed).
    width
        Width of the ResNet-10.
    max_epochs, patience
        Training length and early stopping on the validation plate.
    steps_per_epoch
        Cap on optimizer steps per epoch (None: a full pass over the training
        cells); the CPU budget of the benchmark, the same for every method.
    treated_per_context, controls_per_context, plates_per_step
        L, C (training episodes and test contexts) and P.
    alphas
        Dirichlet concentrations of the label-shift contexts.
    contexts_per_plate
        Label-shift contexts drawn per held-out plate.
    holdout_fraction
        Fraction of each training plate's treated wells (per MoA) kept out of
        training to measure accuracy in the training domain.
    methods
        Training methods to run (separate processes may run different ones).
    label_shift_methods
        Training methods whose networks are also evaluated under label shift
        (any network with ERM statistics is the no-context reference).
    max_test_treated
        Treated cells per test plate (a random sample, every control kept);
        None = all.  Bounds the CPU time of evaluation.
    """

    seeds: Sequence[int] = (0, 1, 2)
    width: int = 16
    max_epochs: int = 6
    patience: int = 3
    steps_per_epoch: int | None = 12
    treated_per_context: int = 64
    controls_per_context: int = 128
    plates_per_step: int = 2
    alphas: Sequence[float] = (0.01, 0.1, 1.0, 10.0)
    contexts_per_plate: int = 4
    holdout_fraction: float = 0.25
    max_test_treated: int | None = 500
    methods: Sequence[str] = TRAIN_METHODS
    label_shift_methods: Sequence[str] = ("arm-bn", "cs-arm-bn")


@dataclass
class Splits:
    """The cells of each role, all sharing one class list."""

    train: CellData
    val: CellData
    domains: dict[str, CellData]
    label_shift: CellData
    plates: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Results:
    """Tidy tables of everything measured."""

    accuracy: pd.DataFrame
    label_shift: pd.DataFrame
    training: pd.DataFrame
    splits: Splits
    seconds: float


# --------------------------------------------------------------------------- data split


def plate_roles(cells: pd.DataFrame) -> dict[str, list[str]]:
    """Plates by role: lab 1's last batch is the test batch, the one before it validation."""
    plates = cells[[schema.PLATE, schema.LAB, schema.BATCH]].drop_duplicates()
    lab1 = plates[plates[schema.LAB] == "lab1"]
    batches = sorted(lab1[schema.BATCH].unique(), key=lambda b: int(b.rsplit("batch", 1)[1]))
    if len(batches) < 3:
        raise ValueError("Lab 1 needs at least 3 batches (training, validation, test).")

    def of(mask: pd.Series) -> list[str]:
        return sorted(plates.loc[mask, schema.PLATE])

    in_lab1 = plates[schema.LAB] == "lab1"
    return {
        "train": of(in_lab1 & plates[schema.BATCH].isin(batches[:-2])),
        "val": of(in_lab1 & (plates[schema.BATCH] == batches[-2])),
        "same lab": of(in_lab1 & (plates[schema.BATCH] == batches[-1])),
        "new lab": of(~in_lab1),
    }


def holdout_wells(
    cells: pd.DataFrame, plates: Sequence[str], fraction: float, seed: int
) -> np.ndarray:
    """Mask of treated cells in wells kept out of training (``fraction`` of each plate's MoA)."""
    rng = np.random.default_rng(seed)
    treated = (cells[schema.ROLE] == schema.Role.TREATED.value) & cells[schema.PLATE].isin(plates)
    wells = cells.loc[treated, [schema.PLATE, schema.WELL, schema.MOA]].drop_duplicates()
    held: list[tuple[str, str]] = []
    for (plate, _), group in wells.groupby([schema.PLATE, schema.MOA]):
        k = max(1, round(fraction * len(group))) if len(group) >= 2 else 0
        held += [(plate, w) for w in rng.choice(group[schema.WELL].to_numpy(), k, replace=False)]
    keys = pd.MultiIndex.from_frame(cells[[schema.PLATE, schema.WELL]])
    return treated.to_numpy() & keys.isin(held)


def sample_treated(data: CellData, limit: int | None, seed: int = 0) -> CellData:
    """At most ``limit`` random treated cells per plate, with every control of the plate."""
    if limit is None:
        return data
    rng = np.random.default_rng(seed)
    treated = data.roles == schema.Role.TREATED.value
    plates = data.table[schema.PLATE].astype(str).to_numpy()
    keep = [np.flatnonzero(~treated)]
    for plate in data.plates:
        mine = np.flatnonzero(treated & (plates == plate))
        keep.append(rng.choice(mine, min(limit, len(mine)), replace=False))
    return data.take(np.sort(np.concatenate(keep)))


def make_splits(
    crops: np.ndarray,
    cells: pd.DataFrame,
    holdout_fraction: float,
    max_test_treated: int | None = None,
) -> Splits:
    """Training, validation, test domains and label-shift plates of the experiment."""
    roles = plate_roles(cells)
    data = CellData.from_table(crops, cells, channel_names=("DNA", "ER", "RNA", "AGP", "Mito"))
    table = data.table
    held = holdout_wells(table, roles["train"], holdout_fraction, seed=0)
    on_train = table[schema.PLATE].isin(roles["train"]).to_numpy()
    controls = (table[schema.ROLE] == schema.Role.CONTROL.value).to_numpy()
    return Splits(
        train=data.take(np.flatnonzero(on_train & ~held)),
        val=data.subset(roles["val"]),
        domains={
            DOMAINS[0]: data.take(np.flatnonzero(on_train & (held | controls))),
            DOMAINS[1]: sample_treated(data.subset(roles["same lab"]), max_test_treated),
            DOMAINS[2]: sample_treated(data.subset(roles["new lab"]), max_test_treated),
        },
        label_shift=data.subset(roles["same lab"] + roles["new lab"]),
        plates=roles,
    )


# --------------------------------------------------------------------------- runs


def _network_config(splits: Splits, config: BenchConfig, seed: int) -> ResNetConfig:
    norm = fit_normalization(splits.train.images, seed=seed)
    return ResNetConfig(
        "resnet10",
        5,
        len(splits.train.classes),
        width=config.width,
        stem="small",
        normalization=norm,
    )


def _network(splits: Splits, config: BenchConfig, seed: int) -> torch.nn.Module:
    """An untrained network of the benchmark (to load saved weights into)."""
    return build_resnet(_network_config(splits, config, seed), seed=seed).eval()


def train_one(
    method: str, seed: int, splits: Splits, config: BenchConfig
) -> tuple[torch.nn.Module, dict]:
    """One network trained with ``method``; returns it and a row of training facts."""
    network = _network_config(splits, config, seed)
    train_config = TrainConfig(
        method=method,
        max_epochs=config.max_epochs,
        patience=config.patience,
        treated_per_episode=config.treated_per_context,
        controls_per_episode=config.controls_per_context,
        plates_per_step=config.plates_per_step,
        device="cpu",
        seed=seed,
        max_steps_per_epoch=config.steps_per_epoch,
        val_treated_per_context=None,
        val_controls_per_context=config.controls_per_context,
    )
    started = time.perf_counter()
    result = train_model(build_resnet(network, seed=seed), splits.train, splits.val, train_config)
    best = result.history[result.best_epoch - 1]
    row = {
        "seed": seed,
        "train_method": method,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "val_accuracy": best.get("val_accuracy", np.nan),
        "seconds": time.perf_counter() - started,
    }
    return result.model, row


def evaluate_domains(
    model: torch.nn.Module, splits: Splits, config: BenchConfig, seed: int = 0
) -> list[dict]:
    """Accuracy of every test-time method in every domain (``seed`` chooses the contexts)."""
    rows = []
    for domain, data in splits.domains.items():
        for test_method in TEST_METHODS:
            ev = evaluate_plates(
                model,
                data,
                test_method,
                controls_per_context=config.controls_per_context,
                treated_per_context=None
                if test_method in ("erm", "adabn", "ben")
                else config.treated_per_context,
                seed=seed,
            )
            rows.append(
                {
                    "domain": domain,
                    "test_method": test_method,
                    "accuracy": ev.accuracy,
                    "n_cells": ev.n_cells,
                }
            )
    return rows


def evaluate_label_shift(
    model: torch.nn.Module, splits: Splits, config: BenchConfig, seed: int
) -> list[dict]:
    """Accuracy of each kind of context statistics under Dirichlet label shift."""
    data = splits.label_shift
    rows = []
    for alpha in config.alphas:
        sampler = LabelShiftSampler(
            data.table,
            data.labels,
            alpha,
            config.treated_per_context,
            config.controls_per_context,
            contexts_per_plate=config.contexts_per_plate,
            seed=seed,
        )
        contexts = sampler.contexts()
        for stats in STATS_METHODS:
            ev = evaluate_contexts(model, data, [c.context(stats) for c in contexts])
            rows.append({"alpha": alpha, "stats": stats, "accuracy": ev.accuracy})
    return rows


def context_label(choice: str, size: int | None) -> str:
    """How a context choice is named in tables."""
    return f"{choice} {size}" if size else choice


def plate_label_shift(data: CellData, alpha: float, n_treated: int, seed: int) -> CellData:
    """Each plate's treated cells resampled to a class mix drawn from Dirichlet(alpha).

    One draw per plate, as the official evaluation does: ``n_treated`` treated
    cells split by multinomial counts, each class capped at the cells the plate
    holds (no resampling); every control of the plate is kept.
    """
    rng = np.random.default_rng(seed)
    treated = data.labels >= 0
    plates = data.table[schema.PLATE].astype(str).to_numpy()
    keep = [np.flatnonzero(~treated & (data.roles == schema.Role.CONTROL.value))]
    for plate in data.plates:
        mine = np.flatnonzero(treated & (plates == plate))
        classes = np.unique(data.labels[mine])
        counts = rng.multinomial(n_treated, rng.dirichlet(np.full(len(classes), alpha)))
        for k, count in zip(classes, counts, strict=True):
            of_class = mine[data.labels[mine] == k]
            keep.append(rng.choice(of_class, min(count, len(of_class)), replace=False))
    return data.take(np.sort(np.concatenate(keep)))


def evaluate_context_choices(
    model: torch.nn.Module, splits: Splits, config: BenchConfig, seed: int
) -> list[dict]:
    """CS-ARM-BN accuracy with each plate context, in each domain and under plate label shift."""
    sets = dict(splits.domains)
    for alpha in config.alphas:
        n = config.max_test_treated or 500
        sets[f"label shift α={alpha:g}"] = plate_label_shift(splits.label_shift, alpha, n, seed)
    rows = []
    for name, data in sets.items():
        for choice, size in CONTEXT_CHOICES:
            started = time.perf_counter()
            ev = evaluate_plates(
                model, data, "cs-arm-bn", treated_per_context=config.treated_per_context,
                controls_per_context=config.controls_per_context, context=choice,
                context_size=size or 512, seed=seed,
            )  # fmt: skip
            rows.append(
                {
                    "set": name,
                    "context": context_label(choice, size),
                    "accuracy": ev.accuracy,
                    "n_cells": ev.n_cells,
                    "seconds": time.perf_counter() - started,
                }
            )
    return rows


def run_contexts(
    crops: np.ndarray, cells: pd.DataFrame, config: BenchConfig, work: Path, log: Log = print
) -> None:
    """Train each (seed, method) network and save its context-choice accuracies in ``work``."""
    splits = make_splits(crops, cells, config.holdout_fraction, config.max_test_treated)
    for seed in config.seeds:
        for method in config.methods:
            # The weights are kept (tensors only, loaded with weights_only), so a rerun
            # that changes only the evaluation skips the training.
            weights = work / f"contexts_model_seed{seed}_{method}.pt"
            if weights.exists():
                model, row = _network(splits, config, seed), {"seconds": 0.0}
                model.load_state_dict(torch.load(weights, weights_only=True))
            else:
                model, row = train_one(method, seed, splits, config)
                torch.save(model.state_dict(), weights)
            rows = evaluate_context_choices(model, splits, config, seed)
            table = pd.DataFrame(rows).assign(seed=seed, train_method=method)
            table.to_csv(work / f"contexts_seed{seed}_{method}.csv", index=False)
            wide = table.pivot(index="set", columns="context", values="accuracy")
            log(f"seed {seed} {method} ({row['seconds']:.0f} s training):\n{wide.round(3)}")


def contexts_table(work: Path) -> tuple[list[str], pd.DataFrame]:
    """Markdown table of every saved context-choice run in ``work`` (mean ± std over seeds)."""
    parts = [pd.read_csv(p) for p in sorted(work.glob("contexts_seed*.csv"))]
    if not parts:
        raise FileNotFoundError(f"No contexts_seed*.csv in {work}: run --contexts first.")
    table = pd.concat(parts, ignore_index=True)
    labels = [context_label(c, s) for c, s in CONTEXT_CHOICES]
    rows = ["| trained with | set | " + " | ".join(labels) + " |", "|---" * (len(labels) + 2) + "|"]
    for method in sorted(table["train_method"].unique()):
        mine = table[table["train_method"] == method]
        for name in dict.fromkeys(mine["set"]):
            here = mine[mine["set"] == name]
            cells = [_mean_std(here.loc[here["context"] == c, "accuracy"]) for c in labels]
            rows.append(f"| {LABELS[method]} | {name} | " + " | ".join(cells) + " |")
    # Paired differences to the paper's chunks, per seed: noise of the networks cancels.
    base = table[table["context"] == "chunks"].set_index(["seed", "train_method", "set"])
    diff = []
    for c in labels[1:]:
        other = table[table["context"] == c].set_index(["seed", "train_method", "set"])
        d = (other["accuracy"] - base["accuracy"]).groupby(level=[0, 1]).mean()
        diff.append({"context": c, "mean": d.mean(), "std": d.std(ddof=1), "seeds": len(d)})
    return rows, pd.DataFrame(diff)


def run_benchmark(
    crops: np.ndarray, cells: pd.DataFrame, config: BenchConfig, log: Log = print
) -> Results:
    """Train every (method, seed), evaluate domains and label shift; tidy result tables."""
    started = time.perf_counter()
    splits = make_splits(crops, cells, config.holdout_fraction, config.max_test_treated)
    log(
        f"{len(splits.train)} training cells on {splits.plates['train']}, validation "
        f"{splits.plates['val']}, same-lab test {splits.plates['same lab']}, "
        f"new lab {splits.plates['new lab']}"
    )
    accuracy, label_shift, training = [], [], []
    for seed in config.seeds:
        for method in config.methods:
            model, row = train_one(method, seed, splits, config)
            training.append(row)
            for r in evaluate_domains(model, splits, config, seed):
                accuracy.append({"seed": seed, "train_method": method, **r})
            if method in config.label_shift_methods:
                for r in evaluate_label_shift(model, splits, config, seed):
                    label_shift.append({"seed": seed, "train_method": method, **r})
            mine = pd.DataFrame(accuracy[-len(DOMAINS) * len(TEST_METHODS) :])
            summary = mine.pivot(index="domain", columns="test_method", values="accuracy")
            log(
                f"seed {seed} {method}: {row['epochs_run']} epochs ({row['seconds']:.0f} s), "
                f"best {row['best_epoch']}\n"
                + summary.loc[list(DOMAINS), list(TEST_METHODS)].round(3).to_string()
            )
    return Results(
        pd.DataFrame(accuracy),
        pd.DataFrame(label_shift),
        pd.DataFrame(training),
        splits,
        time.perf_counter() - started,
    )


# --------------------------------------------------------------------------- reporting


def _mean_std(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def accuracy_table(results: Results, domain: str) -> list[str]:
    """Markdown table of one domain: training method x test-time method."""
    acc = results.accuracy[results.accuracy["domain"] == domain]
    head = "| trained with \\ test-time | " + " | ".join(LABELS[m] for m in TEST_METHODS) + " |"
    rows = [head, "|---" * (len(TEST_METHODS) + 1) + "|"]
    for method in TRAIN_METHODS:
        mine = acc[acc["train_method"] == method]
        cells = [_mean_std(mine.loc[mine["test_method"] == t, "accuracy"]) for t in TEST_METHODS]
        rows.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return rows


def matched_table(results: Results) -> list[str]:
    """Each training method with its own test-time procedure, across domains (the paper's view)."""
    acc = results.accuracy
    rows = [
        "| method (train = test) | " + " | ".join(DOMAINS) + " | drop to new lab |",
        "|---" * (len(DOMAINS) + 2) + "|",
    ]
    for method in TRAIN_METHODS:
        mine = acc[(acc["train_method"] == method) & (acc["test_method"] == method)]
        per = [mine[mine["domain"] == d].set_index("seed")["accuracy"] for d in DOMAINS]
        drop = per[0] - per[2]
        rows.append(
            f"| {LABELS[method]} | "
            + " | ".join(_mean_std(p) for p in per)
            + f" | {_mean_std(drop)} |"
        )
    return rows


def label_shift_table(results: Results) -> list[str]:
    """Markdown table: (training method, context statistics) x alpha."""
    ls = results.label_shift
    alphas = sorted(ls["alpha"].unique())
    rows = [
        "| trained with | statistics of the context | "
        + " | ".join(f"α = {a:g}" for a in alphas)
        + " |",
        "|---" * (len(alphas) + 2) + "|",
    ]
    for method in [m for m in TRAIN_METHODS if m in set(ls["train_method"])]:
        for stats in STATS_METHODS:
            mine = ls[(ls["train_method"] == method) & (ls["stats"] == stats)]
            cells = [_mean_std(mine.loc[mine["alpha"] == a, "accuracy"]) for a in alphas]
            rows.append(f"| {LABELS[method]} | {LABELS[stats]} | " + " | ".join(cells) + " |")
    return rows


def erm_drop(results: Results) -> dict[str, tuple[float, float]]:
    """Mean and std over seeds of ERM's loss of accuracy from the training domain to each domain."""
    acc = results.accuracy
    erm = acc[(acc["train_method"] == "erm") & (acc["test_method"] == "erm")]
    base = erm[erm["domain"] == DOMAINS[0]].set_index("seed")["accuracy"]
    out = {}
    for domain in DOMAINS[1:]:
        drop = base - erm[erm["domain"] == domain].set_index("seed")["accuracy"]
        out[domain] = (float(drop.mean()), float(drop.std(ddof=1)))
    return out


def plot_domains(results: Results, path: Path) -> None:
    """Bar chart: accuracy per test-time method, one panel per domain, one bar per training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = results.accuracy
    fig, axes = plt.subplots(1, len(DOMAINS), figsize=(13, 3.8), sharey=True)
    x = np.arange(len(TEST_METHODS))
    width = 0.26
    colours = {"erm": "#888888", "arm-bn": "#e69f00", "cs-arm-bn": "#0072b2"}
    for ax, domain in zip(axes, DOMAINS, strict=True):
        for i, method in enumerate(TRAIN_METHODS):
            mine = acc[(acc["domain"] == domain) & (acc["train_method"] == method)]
            grouped = mine.groupby("test_method")["accuracy"]
            means = grouped.mean().reindex(TEST_METHODS)
            stds = grouped.std(ddof=1).reindex(TEST_METHODS).fillna(0)
            ax.bar(
                x + (i - 1) * width,
                means,
                width,
                yerr=stds,
                capsize=2,
                color=colours[method],
                label=f"trained {LABELS[method]}",
            )
        ax.set_xticks(x, [LABELS[m] for m in TEST_METHODS], rotation=20)
        ax.set_title(domain)
        ax.axhline(1 / len(results.splits.train.classes), color="k", lw=0.8, ls=":")
        ax.set_xlabel("test-time statistics")
    axes[0].set_ylabel("accuracy (8 MoA classes)")
    axes[0].set_ylim(0, 1)
    axes[-1].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_label_shift(results: Results, path: Path) -> None:
    """Accuracy against the Dirichlet alpha of the contexts, one line per (training, statistics)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ls = results.label_shift
    lines = [
        ("cs-arm-bn", "erm", "#888888", "-"),
        ("arm-bn", "arm-bn", "#e69f00", "-"),
        ("arm-bn", "cs-arm-bn", "#e69f00", ":"),
        ("arm-bn", "ben", "#e69f00", "--"),
        ("cs-arm-bn", "cs-arm-bn", "#0072b2", "-"),
        ("cs-arm-bn", "arm-bn", "#0072b2", ":"),
        ("cs-arm-bn", "ben", "#0072b2", "--"),
    ]
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    for train, stats, colour, style in lines:
        mine = ls[(ls["train_method"] == train) & (ls["stats"] == stats)]
        if mine.empty:
            continue
        grouped = mine.groupby("alpha")["accuracy"]
        means, stds = grouped.mean(), grouped.std(ddof=1).fillna(0)
        ax.errorbar(
            means.index,
            means,
            yerr=stds,
            color=colour,
            ls=style,
            marker="o",
            capsize=2,
            label=f"trained {LABELS[train]}, statistics {LABELS[stats]}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("Dirichlet α of each context's class mix (small = nearly one class)")
    ax.set_ylabel("accuracy on held-out plates")
    ax.set_ylim(0, 1)
    ax.axhline(1 / len(results.splits.train.classes), color="k", lw=0.8, ls=":")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_markdown(
    results: Results,
    config: BenchConfig,
    cells: pd.DataFrame,
    settings: DataSettings,
    images: dict[str, str],
) -> str:
    """The measured section of docs/domain-shift.md."""
    splits = results.splits
    drops = erm_drop(results)
    counts = count_cells(cells)
    threads = torch.get_num_threads()
    train_rows = results.training.groupby("train_method").agg(
        epochs=("epochs_run", "mean"),
        best=("best_epoch", "mean"),
        seconds=("seconds", "mean"),
        val=("val_accuracy", "mean"),
    )
    lines = [
        f"Measured by `benchmarks/bench_domain_shift.py` on CPU ({platform.machine()}, "
        f"{threads} torch thread(s), torch {torch.__version__}); seeds {list(config.seeds)}; "
        f"training and evaluation took {results.seconds / 60:.0f} min of wall time per process "
        "(one process per seed and training method, run side by side on two CPU cores shared "
        "with other jobs).",
        "",
        f"Data: {len(settings.plates)} plates of {settings.n_wells} wells, {settings.sites} "
        f"site(s) of {settings.field_size} x {settings.field_size} px, effect strength "
        f"{settings.effect_strength:g}; crops of {settings.crop_size} px at scale "
        f"{settings.crop_scale:g} ({round(settings.crop_size / settings.crop_scale)} field px); "
        f"{len(cells)} cells in all ({int(counts.get('control', pd.Series(0)).mean())} controls "
        f"and {int(counts.get('treated', pd.Series(0)).mean())} treated per plate on average). "
        f"Training plates {splits.plates['train']} ({len(splits.train)} cells after holding "
        f"out {config.holdout_fraction:.0%} of the treated wells of each MoA), validation "
        f"{splits.plates['val']}, new plates of lab 1 {splits.plates['same lab']}, new labs "
        f"{splits.plates['new lab']}; on test plates {config.max_test_treated} random treated "
        "cells per plate (and all its controls) are predicted.",
        "",
        f"Networks: ResNet-10 (small stem), width {config.width}, input normalization log1p "
        f"fitted on training crops; Adam lr 1e-3, L = {config.treated_per_context} treated "
        f"(+ C = {config.controls_per_context} controls for CS-ARM-BN) per episode, "
        f"P = {config.plates_per_step} episodes per step, up to {config.max_epochs} epochs of at "
        f"most {config.steps_per_epoch} steps, "
        f"early stopping on the validation plate (patience {config.patience}), flips and "
        "quarter turns.",
        "",
        "| trained with | epochs run | best epoch | minutes per model | validation accuracy |",
        "|---|---|---|---|---|",
        *[
            f"| {LABELS[m]} | {r.epochs:.1f} | {r.best:.1f} | {r.seconds / 60:.1f} | "
            + ("n/a" if np.isnan(r.val) else f"{r.val:.3f}")
            + " |"
            for m, r in train_rows.reindex(list(TRAIN_METHODS)).iterrows()
        ],
        "",
        "### Each method with its own test-time procedure",
        "",
        *matched_table(results),
        "",
        f"**ERM drop.** A network trained with ERM loses "
        f"{drops[DOMAINS[1]][0]:.3f} ± {drops[DOMAINS[1]][1]:.3f} accuracy on new plates of its "
        f"lab and {drops[DOMAINS[2]][0]:.3f} ± {drops[DOMAINS[2]][1]:.3f} in a new lab "
        "(training-domain accuracy minus accuracy there, mean ± std over seeds).",
        "",
        f"![Accuracy per domain]({images['domains']})",
        "",
    ]
    for domain in DOMAINS:
        lines += [
            f"### {domain.capitalize()}: every training x test-time method",
            "",
            *accuracy_table(results, domain),
            "",
        ]
    lines += [
        f"### Label shift (held-out plates, {config.contexts_per_plate} contexts per plate of "
        f"{config.treated_per_context} treated + {config.controls_per_context} controls)",
        "",
        *label_shift_table(results),
        "",
        f"![Accuracy under label shift]({images['label_shift']})",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


TABLES = ("accuracy", "label_shift", "training")


def save_results(
    results: Results, work: Path, seeds: Sequence[int], methods: Sequence[str]
) -> None:
    """Tidy tables of a run, named after its seeds and methods (other runs' tables are kept)."""
    tag = "-".join(str(s) for s in seeds) + "_" + "-".join(methods)
    for name in TABLES:
        getattr(results, name).to_csv(work / f"{name}_seeds{tag}.csv", index=False)
    (work / f"seconds_seeds{tag}.txt").write_text(f"{results.seconds:.1f}\n")


def load_results(
    work: Path, crops: np.ndarray, cells: pd.DataFrame, config: BenchConfig
) -> Results:
    """Every seed's saved tables in ``work``, merged (a seed saved twice counts once)."""
    frames = {}
    for name in TABLES:
        paths = sorted(work.glob(f"{name}_seeds*.csv"))
        parts = [pd.read_csv(p) for p in paths if p.stat().st_size > 1]
        if not parts:
            raise FileNotFoundError(f"No {name}_seeds*.csv in {work}: run some seeds first.")
        frames[name] = pd.concat(parts, ignore_index=True).drop_duplicates(
            subset=[c for c in parts[0].columns if c not in ("accuracy", "seconds", "n_cells")],
            keep="last",
        )
    seconds = [float(p.read_text()) for p in work.glob("seconds_seeds*.txt")]
    return Results(
        frames["accuracy"],
        frames["label_shift"],
        frames["training"],
        make_splits(crops, cells, config.holdout_fraction, config.max_test_treated),
        max(seconds, default=float("nan")),
    )


def quick_settings() -> DataSettings:
    """A few wells of small plates: the smoke run."""
    return DataSettings(
        plates=tuple(design(QUICK_DESIGN)),
        wells=tuple(f"{r}{c:02d}" for r in "ABCD" for c in range(1, 13)),
        field_size=192,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run; writes no docs")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/phenoadapt-bench-domain-shift"),
        help="cache of plates, crops and result tables",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--methods", nargs="+", choices=TRAIN_METHODS, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering fields")
    parser.add_argument(
        "--report", action="store_true", help="only gather saved per-seed tables and write docs"
    )
    parser.add_argument(
        "--contexts",
        action="store_true",
        help="compare CS-ARM-BN's plate contexts (chunks, plate, samples) instead; "
        "trains CS-ARM-BN only unless --methods; writes docs/adaptation.md",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.quick:
        settings = quick_settings()
        config = BenchConfig(
            seeds=(0,),
            max_epochs=2,
            patience=2,
            contexts_per_plate=4,
            alphas=(0.01, 10.0),
            plates_per_step=2,
        )
        work = args.work_dir / "quick"
    else:
        settings = DataSettings(plates=tuple(design(FULL_DESIGN)))
        config = BenchConfig()
        work = args.work_dir / "full"
    if args.seeds:
        config.seeds = tuple(args.seeds)
    if args.epochs:
        config.max_epochs = args.epochs
    if args.methods:
        config.methods = tuple(args.methods)
    elif args.contexts:
        config.methods = ("cs-arm-bn",)

    started = time.perf_counter()
    crops, cells = prepare_crops(work, settings, workers=args.workers)
    print(f"data ready in {time.perf_counter() - started:.0f} s: {crops.shape}")
    if args.contexts:
        main_contexts(args, crops, cells, config, work)
        return
    if not args.report:
        results = run_benchmark(crops, cells, config)
        save_results(results, work, config.seeds, config.methods)
    # Seeds may run in separate processes (``--seeds 0`` ... then ``--report``): the
    # report gathers every seed's tables found in the work folder.
    results = load_results(work, crops, cells, config)
    for domain in DOMAINS:
        print(f"\n{domain}\n" + "\n".join(accuracy_table(results, domain)))
    print("\n" + "\n".join(matched_table(results)))
    print("\n" + "\n".join(label_shift_table(results)))
    print(f"\nERM drop: {erm_drop(results)}")
    print(f"training and evaluation: {results.seconds / 60:.1f} min per process")
    if args.quick:
        plot_domains(results, work / "domain_shift.png")
        plot_label_shift(results, work / "label_shift.png")
        print(f"quick run: figures in {work}, docs untouched")
        return
    config.seeds = tuple(int(x) for x in sorted(results.accuracy["seed"].unique()))
    IMAGES.mkdir(parents=True, exist_ok=True)
    plot_domains(results, IMAGES / "domain_shift.png")
    plot_label_shift(results, IMAGES / "label_shift.png")
    images = {"domains": "images/domain_shift.png", "label_shift": "images/label_shift.png"}
    write_doc_section(DOC, render_markdown(results, config, cells, settings, images), START, END,
                      title="Domain shift")  # fmt: skip
    print(f"wrote {DOC}")


def render_contexts(rows: list[str], diff: pd.DataFrame, config: BenchConfig) -> str:
    """The section of docs/adaptation.md written by ``--contexts``."""
    lines = [
        f"Measured by `benchmarks/bench_domain_shift.py --contexts` on CPU ({platform.machine()}, "
        f"torch {torch.__version__}): ResNet-10 networks trained with CS-ARM-BN on the synthetic "
        "plates of [domain-shift.md](domain-shift.md) (same training budget), one network per "
        "seed, each evaluated with CS-ARM-BN statistics from every context choice "
        f"({config.treated_per_context} treated + {config.controls_per_context} controls per "
        "chunk; samples keep that share of treated cells). Sets: the three domains of "
        "domain-shift.md and, on the six held-out plates, plate-level label shift (one "
        f"Dirichlet(α) class mix per plate, {config.max_test_treated or 500} treated drawn, each "
        "class capped at what the plate holds, every control kept). Accuracy of the treated "
        "cells, mean ± std over seeds.",
        "",
        *rows,
        "",
        "Mean accuracy difference to the paper's chunks over all sets (per seed, then mean ± "
        "std over seeds; positive = better than chunks):",
        "",
        "| context | difference to chunks | seeds |",
        "|---|---|---|",
    ]
    for r in diff.itertuples(index=False):
        lines.append(f"| {r.context} | {r.mean:+.4f} ± {r.std:.4f} | {r.seeds} |")
    return "\n".join(lines)


def main_contexts(
    args: argparse.Namespace,
    crops: np.ndarray,
    cells: pd.DataFrame,
    config: BenchConfig,
    work: Path,
) -> None:
    """``--contexts``: train, evaluate every context choice, print, write docs/adaptation.md."""
    if not args.report:
        run_contexts(crops, cells, config, work)
    rows, diff = contexts_table(work)
    print("\n".join(rows))
    print(diff.to_string(index=False))
    if args.quick:
        print(f"quick run: tables in {work}, docs untouched")
        return
    text = render_contexts(rows, diff, config)
    write_doc_section(CONTEXTS_DOC, text, CONTEXTS_START, CONTEXTS_END)
    print(f"wrote {CONTEXTS_DOC}")


if __name__ == "__main__":
    main()
