"""The paper's protocol on synthetic plates (issue 15); writes docs/protocol.md.

What it measures, on the plates of ``bench_domain_shift.py`` (same cache, same
splits: lab 1 batches 1-2 train, batch 3 validates, batch 4 and labs 2-3 test):

1. Input normalization: global clip + log1p (ours) against the official code's
   per-image, per-channel 99.99th-percentile scaling to 8 bits, for ERM and
   CS-ARM-BN networks, paired by seed.
2. Label shift with the official sampler (one Dirichlet draw per test plate,
   8 contexts rotated so each class dominates once, counts capped at what the
   plate holds) beside ours (a draw per context, resampled), for ERM-, ARM-BN-
   and CS-ARM-BN-trained networks with ERM, ARM-BN, BEN and CS-ARM-BN
   statistics, and a sweep of treated cells per context (8/16/32/64 with 128
   controls).
3. The ceiling: an oracle on the generator's ground-truth traits, and the
   networks' accuracy on responders only, per dose and per well.
4. Training to convergence (early stopping on the validation loss; learning
   curves in the doc) and a wider network.
5. (``bench_site_unit.py``: the whole-field unit.)

Every network is saved (safetensors checkpoint, history, evaluation tables)
in ``--cache-dir`` (default ``~/.cache/phenoadapt/bench-protocol``, never
committed), keyed by everything that determines it, so a rerun only evaluates
(minutes) and a changed evaluation only re-evaluates.  Runs::

    python benchmarks/bench_protocol.py --quick              # smoke run, no docs
    python benchmarks/bench_protocol.py --train-only --methods erm --norms log1p image
    python benchmarks/bench_protocol.py                      # train what is missing, report
    python benchmarks/bench_protocol.py --report             # tables from the cache only
    python benchmarks/bench_protocol.py --gpu-budget         # the paper's budget on a GPU

Mean ± sample standard deviation (ddof=1) over seeds; differences between
settings are paired per seed (same seed = same initialization, episodes and
evaluation contexts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phenoadapt import schema
from phenoadapt.adapt import plan_contexts, predict_contexts
from phenoadapt.evaluate.ceiling import accuracy_by, trait_oracle, well_accuracy
from phenoadapt.evaluate.label_shift import PlateLabelShiftSampler
from phenoadapt.nn import ResNetConfig, build_resnet, fit_input_scaling
from phenoadapt.train import (
    CellData,
    LabelShiftSampler,
    TrainConfig,
    evaluate_contexts,
    load_checkpoint,
    train_model,
)

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
    from _synthetic_data import DataSettings, design, prepare_crops
    from bench_domain_shift import FULL_DESIGN, QUICK_DESIGN, Splits, make_splits
except ImportError:  # pragma: no cover - imported as benchmarks.bench_protocol
    from benchmarks._common import write_doc_section
    from benchmarks._synthetic_data import DataSettings, design, prepare_crops
    from benchmarks.bench_domain_shift import FULL_DESIGN, QUICK_DESIGN, Splits, make_splits

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "protocol.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
#: Bump when the evaluation changes: cached evaluation tables are then recomputed.
EVAL_VERSION = 3

TRAIN_METHODS = ("erm", "arm-bn", "cs-arm-bn")
#: Test-time methods of the domain tables (AdaBN and ARM-BN statistics are left to
#: the label-shift tables: the CPU budget).
TEST_METHODS = ("erm", "ben", "cs-arm-bn")
STATS_METHODS = ("erm", "arm-bn", "ben", "cs-arm-bn")
NORMS = ("log1p", "image")
DOMAINS = ("training domain", "new plates, same lab", "new lab")
LABELS = {
    "erm": "ERM",
    "adabn": "AdaBN",
    "arm-bn": "ARM-BN",
    "ben": "BEN",
    "cs-arm-bn": "CS-ARM-BN",
    "log1p": "clip + log1p",
    "image": "per-image p99.99",
}
SAMPLERS = ("official", "ours")


@dataclass(frozen=True)
class Budget:
    """Network and training budget (everything that determines a trained network)."""

    arch: str = "resnet10"
    width: int = 16
    max_epochs: int = 40
    patience: int = 6
    steps_per_epoch: int | None = 12
    plates_per_step: int = 2
    treated: int = 64
    controls: int = 128
    device: str = "cpu"

    def key(self, method: str, norm: str, seed: int) -> str:
        """File stem of a network: readable prefix + hash of every setting."""
        blob = json.dumps(
            {**asdict(self), "method": method, "norm": norm, "seed": seed}, sort_keys=True
        )
        digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
        return f"{method}_{norm}_{self.arch}w{self.width}_s{seed}_{digest}"


CPU_BUDGET = Budget()
WIDE_BUDGET = Budget(width=32)
#: Training to convergence (issue 15.4): the CPU budget with up to 90 epochs and a
#: patience window of 10, so the validation loss must stay flat for 10 epochs; one
#: CS-ARM-BN network stays under ~10 min on one idle thread.
LONG_BUDGET = Budget(max_epochs=90, patience=10)
QUICK_BUDGET = Budget(width=8, max_epochs=3, patience=2, steps_per_epoch=4)
#: The paper's budget: ResNet-50, P = 8 plates per step, up to 200 full epochs,
#: patience 20 (CS-ARM-BN's run script); for a GPU.
GPU_BUDGET = Budget(
    arch="resnet50",
    width=64,
    max_epochs=200,
    patience=20,
    steps_per_epoch=None,
    plates_per_step=8,
    device="cuda",
)


@dataclass(frozen=True)
class EvalSettings:
    """What is evaluated for every network."""

    alphas: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    treated_sweep: tuple[int, ...] = (8, 16, 32, 64)
    sweep_alpha: float = 0.01
    #: Our sampler (CPU budget): these alphas at L = 64, and the sweep.
    ours_alphas: tuple[float, ...] = (0.01, 1.0)
    ours_treated_sweep: tuple[int, ...] = (16, 64)
    ours_contexts_per_plate: int = 4
    max_test_treated: int | None = 500
    #: Inputs whose networks are evaluated under label shift (the CPU budget).
    shift_norms: tuple[str, ...] = ("log1p", "image")
    #: False: only label-shift tables already in the cache are read (a report that
    #: must not start a long evaluation).
    compute_shift: bool = True

    def grid(self, sampler: str) -> list[tuple[float, int]]:
        """(alpha, L) points evaluated with one sampler."""
        alphas = self.alphas if sampler == "official" else self.ours_alphas
        sweep = self.treated_sweep if sampler == "official" else self.ours_treated_sweep
        return [(a, 64) for a in alphas] + [(self.sweep_alpha, n) for n in sweep if n != 64]


# --------------------------------------------------------------------------- networks


def network_config(splits: Splits, budget: Budget, norm: str, seed: int) -> ResNetConfig:
    """The untrained network: normalization fitted on the training crops."""
    # The same named scalings as ``phenoadapt train --input-scaling``.
    normalization = fit_input_scaling(splits.train.images, norm, seed=seed)
    return ResNetConfig(
        budget.arch,
        int(splits.train.images.shape[1]),
        len(splits.train.classes),
        width=budget.width,
        stem="small",
        normalization=normalization,
    )


def train_network(
    splits: Splits, budget: Budget, method: str, norm: str, seed: int, cache: Path
) -> Path:
    """Train one network unless its checkpoint is cached; returns the checkpoint path."""
    stem = budget.key(method, norm, seed)
    path = cache / f"{stem}.safetensors"
    if path.exists():
        return path
    config = TrainConfig(
        method=method,
        max_epochs=budget.max_epochs,
        patience=budget.patience,
        treated_per_episode=budget.treated,
        controls_per_episode=budget.controls,
        plates_per_step=budget.plates_per_step,
        device=budget.device,
        seed=seed,
        max_steps_per_epoch=budget.steps_per_epoch,
        val_treated_per_context=None,
        val_controls_per_context=budget.controls,
    )
    started = time.perf_counter()
    model = build_resnet(network_config(splits, budget, norm, seed), seed=seed)
    tmp = cache / f"{stem}.tmp.safetensors"
    result = train_model(model, splits.train, splits.val, config, checkpoint_path=tmp)
    seconds = time.perf_counter() - started
    history = pd.DataFrame(result.history).assign(seed=seed, method=method, norm=norm)
    history.to_csv(cache / f"{stem}_history.csv", index=False)
    facts = {
        "seed": seed,
        "method": method,
        "norm": norm,
        "arch": budget.arch,
        "width": budget.width,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "seconds": seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (cache / f"{stem}_train.json").write_text(json.dumps(facts))
    # Renamed last: its presence means the network and its tables are complete.
    tmp.replace(path)
    print(
        f"trained {stem}: {len(result.history)} epochs, best {result.best_epoch}, {seconds:.0f} s",
        flush=True,
    )
    return path


# --------------------------------------------------------------------------- evaluation


def _cell_outputs(
    model: torch.nn.Module, data: CellData, method: str, seed: int, budget: Budget
) -> tuple[np.ndarray, np.ndarray]:
    """Positions and class probabilities of every treated cell of ``data`` under ``method``."""
    contexts = plan_contexts(
        data.table,
        method,
        controls_per_context=budget.controls,
        treated_per_context=None if method in ("erm", "adabn", "ben") else budget.treated,
        predict_controls=False,
        min_controls=1,
        seed=seed,
    )
    outputs = predict_contexts(model, data.images, contexts)
    positions = np.concatenate([o.context.predict for o in outputs])
    probs = np.concatenate([o.probabilities for o in outputs])
    keep = data.labels[positions] >= 0
    return positions[keep], probs[keep]


def evaluate_domains(
    model: torch.nn.Module, splits: Splits, own: str, seed: int, budget: Budget
) -> tuple[list[dict], list[dict]]:
    """Accuracy of every test-time method in every domain (the seed chooses the contexts).

    Also the breakdown of the network's own test-time method: responders,
    per dose, per well.
    """
    rows, detail = [], []
    for domain, data in splits.domains.items():
        for test in TEST_METHODS:
            positions, probs = _cell_outputs(model, data, test, seed, budget)
            labels = data.labels[positions]
            correct = probs.argmax(axis=1) == labels
            rows.append(
                {
                    "domain": domain,
                    "test_method": test,
                    "accuracy": float(correct.mean()),
                    "n_cells": len(labels),
                }
            )
            if test != own and test != "erm":
                continue
            table = data.table.iloc[positions].reset_index(drop=True)
            entry = {
                "domain": domain,
                "test_method": test,
                # Fields (site unit) have no responder flag: only cells do.
                "responders": float(correct[table["responder"].to_numpy(bool)].mean())
                if "responder" in table.columns
                else float("nan"),
                "wells": well_accuracy(table, probs, labels),
            }
            if schema.CONCENTRATION in table.columns:
                for dose, acc in accuracy_by(table, correct, schema.CONCENTRATION).items():
                    entry[f"dose {dose:g}"] = float(acc)
            detail.append(entry)
    return rows, detail


def label_shift_contexts(
    data: CellData, sampler: str, alpha: float, treated: int, settings: EvalSettings, seed: int
) -> list:
    """Label-shift contexts of one sampler (the seed is the evaluation's)."""
    if sampler == "official":
        return PlateLabelShiftSampler(
            data.table, data.labels, alpha, treated, 128, n_classes=len(data.classes), seed=seed
        ).contexts()
    return LabelShiftSampler(
        data.table,
        data.labels,
        alpha,
        treated,
        128,
        contexts_per_plate=settings.ours_contexts_per_plate,
        seed=seed,
    ).contexts()


def evaluate_label_shift(
    model: torch.nn.Module, splits: Splits, settings: EvalSettings, seed: int
) -> list[dict]:
    """Accuracy of each kind of statistics, both samplers, the alpha and treated sweeps.

    ERM statistics do not depend on the context: each cell is predicted once
    and its prediction counted in every context that holds it.
    """
    data = splits.label_shift
    positions, probs = _cell_outputs(model, data, "erm", seed, Budget())
    erm_hit = np.zeros(len(data), dtype=bool)
    erm_hit[positions] = probs.argmax(axis=1) == data.labels[positions]
    rows = []
    for sampler in SAMPLERS:
        for alpha, treated in settings.grid(sampler):
            contexts = label_shift_contexts(data, sampler, alpha, treated, settings, seed)
            sizes = [len(c.treated) for c in contexts]
            for stats in STATS_METHODS:
                if stats == "erm":
                    accuracy = float(erm_hit[np.concatenate([c.treated for c in contexts])].mean())
                else:
                    contexts_of = [c.context(stats) for c in contexts]
                    accuracy = evaluate_contexts(model, data, contexts_of).accuracy
                rows.append(
                    {
                        "sampler": sampler,
                        "alpha": alpha,
                        "treated": treated,
                        "stats": stats,
                        "accuracy": accuracy,
                        "mean_treated": float(np.mean(sizes)),
                    }
                )
    return rows


def _load(path: Path, budget: Budget) -> torch.nn.Module:
    """A cached network in eval mode, on the budget's device when it has one."""
    device = budget.device if budget.device == "cpu" or torch.cuda.is_available() else "cpu"
    return load_checkpoint(path).model.to(device).eval()


def evaluate_network(
    path: Path,
    splits: Splits,
    settings: EvalSettings,
    method: str,
    norm: str,
    seed: int,
    budget: Budget,
    cache: Path,
) -> dict[str, pd.DataFrame]:
    """Every table of one network, from the cache when its evaluation is current."""
    stem = path.name.removesuffix(".safetensors")
    tag = f"{stem}_eval{EVAL_VERSION}"
    files = {n: cache / f"{tag}_{n}.csv" for n in ("domains", "detail")}
    shift_file = cache / f"{tag}_label_shift.csv"
    want_shift = norm in settings.shift_norms
    model = None
    tables = {}
    if all(f.exists() for f in files.values()):
        tables = {n: pd.read_csv(f) for n, f in files.items()}
    else:
        model = _load(path, budget)
        started = time.perf_counter()
        domains, detail = evaluate_domains(model, splits, method, seed, budget)
        tables = {"domains": pd.DataFrame(domains), "detail": pd.DataFrame(detail)}
        for name, table in tables.items():
            table.to_csv(files[name], index=False)
        print(f"domains of {stem}: {time.perf_counter() - started:.0f} s", flush=True)
    if want_shift and not shift_file.exists() and not settings.compute_shift:
        print(f"label shift of {stem} not in the cache: left out", flush=True)
    elif want_shift and shift_file.exists():
        tables["label_shift"] = pd.read_csv(shift_file)
    elif want_shift:
        model = model if model is not None else _load(path, budget)
        started = time.perf_counter()
        tables["label_shift"] = pd.DataFrame(evaluate_label_shift(model, splits, settings, seed))
        tables["label_shift"].to_csv(shift_file, index=False)
        print(f"label shift of {stem}: {time.perf_counter() - started:.0f} s", flush=True)
    return tables


def gather(
    cache: Path,
    budget: Budget,
    splits: Splits,
    settings: EvalSettings,
    runs: Sequence[tuple[str, str, int]],
    evaluate: bool,
) -> dict[str, pd.DataFrame]:
    """Tables of every cached network of ``runs`` (method, norm, seed), with its identity."""
    parts: dict[str, list[pd.DataFrame]] = {
        "domains": [],
        "detail": [],
        "label_shift": [],
        "training": [],
        "history": [],
    }
    for method, norm, seed in runs:
        stem = budget.key(method, norm, seed)
        path = cache / f"{stem}.safetensors"
        if not path.exists():
            continue
        ident = {"method": method, "norm": norm, "seed": seed, "width": budget.width}
        parts["training"].append(
            pd.DataFrame([json.loads((cache / f"{stem}_train.json").read_text())])
        )
        parts["history"].append(pd.read_csv(cache / f"{stem}_history.csv").assign(**ident))
        if not evaluate:
            continue
        for name, table in evaluate_network(
            path, splits, settings, method, norm, seed, budget, cache
        ).items():
            parts[name].append(table.assign(**ident))
    return {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in parts.items()}


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    """Command line of the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run on a few wells; no docs")
    parser.add_argument(
        "--gpu-budget",
        action="store_true",
        help="the paper's budget (ResNet-50, P = 8, 200 epochs, patience 20) "
        "on CUDA; writes docs/protocol-gpu.md",
    )
    parser.add_argument("--wide", action="store_true", help="train/evaluate the width-32 network")
    parser.add_argument(
        "--long",
        action="store_true",
        help="train/evaluate with up to 90 epochs and patience 10 (convergence, issue 15.4)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/phenoadapt-bench-domain-shift"),
        help="cache of plates and crops (shared with bench_domain_shift.py)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path.home() / ".cache" / "phenoadapt" / "bench-protocol",
        help="trained networks and their evaluation tables",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=TRAIN_METHODS,
        default=["erm", "cs-arm-bn"],
        help="training methods (ARM-BN training is optional: its statistics are evaluated "
        "on every network)",
    )
    parser.add_argument(
        "--shift-norms",
        nargs="+",
        choices=NORMS,
        default=["log1p"],
        help="inputs whose networks are evaluated under label shift (CPU budget)",
    )
    parser.add_argument("--norms", nargs="+", choices=NORMS, default=list(NORMS))
    parser.add_argument("--train-only", action="store_true", help="train what is missing, stop")
    parser.add_argument(
        "--eval-only", action="store_true", help="evaluate cached networks (no training), no docs"
    )
    parser.add_argument(
        "--report", action="store_true", help="write the docs from the cache; trains nothing"
    )
    parser.add_argument(
        "--cached-shift-only",
        action="store_true",
        help="report label shift only for networks whose tables are cached",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering fields")
    return parser.parse_args()


def choose(args: argparse.Namespace) -> tuple[DataSettings, Budget, EvalSettings, Path, Path]:
    """Data, budget, evaluation, work and cache folders of the chosen preset."""
    shift = tuple(args.shift_norms)
    if args.quick:
        settings = DataSettings(
            plates=tuple(design(QUICK_DESIGN)),
            wells=tuple(f"{r}{c:02d}" for r in "ABCD" for c in range(1, 13)),
            field_size=192,
        )
        return (
            settings,
            QUICK_BUDGET,
            EvalSettings(alphas=(0.01, 10.0), treated_sweep=(16, 64), shift_norms=shift),
            args.work_dir / "quick",
            args.cache_dir / "quick",
        )
    settings = DataSettings(plates=tuple(design(FULL_DESIGN)))
    budget = (
        GPU_BUDGET
        if args.gpu_budget
        else WIDE_BUDGET
        if args.wide
        else LONG_BUDGET
        if args.long
        else CPU_BUDGET
    )
    evals = EvalSettings(shift_norms=shift, compute_shift=not args.cached_shift_only)
    return settings, budget, evals, args.work_dir / "full", args.cache_dir / "full"


def main() -> None:
    """Train what is missing, evaluate, write docs/protocol.md."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    settings, budget, evals, work, cache = choose(args)
    cache.mkdir(parents=True, exist_ok=True)
    crops, cells = prepare_crops(work, settings, workers=args.workers)
    splits = make_splits(crops, cells, 0.25, evals.max_test_treated)
    runs = [(m, n, s) for n in args.norms for m in args.methods for s in args.seeds]
    if not args.report and not args.eval_only:
        for method, norm, seed in runs:
            train_network(splits, budget, method, norm, seed, cache)
    if args.train_only:
        return
    # Every network's domains first (quick), then the label shift (slow).
    gather(cache, budget, splits, replace(evals, shift_norms=()), runs, evaluate=True)
    tables = gather(cache, budget, splits, evals, runs, evaluate=True)
    if args.eval_only:
        return
    report(args, tables, budget, evals, splits, cache)


# --------------------------------------------------------------------------- reporting


def ms(values: pd.Series | np.ndarray, digits: int = 3) -> str:
    """Mean ± sample standard deviation (ddof=1); the mean alone for one value."""
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return "n/a"
    if len(v) == 1:
        return f"{v.iloc[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def paired(a: pd.Series, b: pd.Series, digits: int = 3) -> str:
    """Mean ± sd over seeds of the per-seed difference a - b (both indexed by seed)."""
    d = (a - b).dropna()
    if d.empty:
        return "n/a"
    text = ms(d, digits)
    sign = "+" if d.mean() >= 0 else ""
    return f"{sign}{text} (n={len(d)})"


def by_seed(table: pd.DataFrame, **where: object) -> pd.Series:
    """The accuracy column of the rows matching ``where``, indexed by seed."""
    mask = np.ones(len(table), dtype=bool)
    for column, value in where.items():
        mask &= (table[column] == value).to_numpy()
    return table.loc[mask].set_index("seed")["accuracy"]


def own(domains: pd.DataFrame, method: str, norm: str, domain: str) -> pd.Series:
    """A training method's accuracy with its own test-time procedure, by seed."""
    return by_seed(domains, method=method, norm=norm, test_method=method, domain=domain)


def training_table(training: pd.DataFrame) -> list[str]:
    """Epochs, early stopping and time of every (method, normalization)."""
    lines = [
        "| trained with | input | seeds | epochs run | best epoch | stopped early | minutes "
        "per network | parameters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, norm), g in training.groupby(["method", "norm"], sort=False):
        lines.append(
            f"| {LABELS[method]} | {LABELS[norm]} | {len(g)} | {ms(g['epochs_run'], 1)} | "
            f"{ms(g['best_epoch'], 1)} | {int(g['stopped_early'].sum())} of {len(g)} | "
            f"{ms(g['seconds'] / 60, 1)} | {int(g['parameters'].iloc[0]):,} |"
        )
    return lines


def norm_table(domains: pd.DataFrame, methods: Sequence[str]) -> list[str]:
    """Each method (own test-time procedure) with both inputs, per domain, paired difference."""
    lines = [
        "| trained with | domain | clip + log1p | per-image p99.99 | per-image minus log1p |",
        "|---|---|---|---|---|",
    ]
    for method in methods:
        for domain in DOMAINS:
            a, b = own(domains, method, "log1p", domain), own(domains, method, "image", domain)
            if a.empty and b.empty:
                continue
            lines.append(f"| {LABELS[method]} | {domain} | {ms(a)} | {ms(b)} | {paired(b, a)} |")
    return lines


def matched_table(domains: pd.DataFrame, norm: str) -> list[str]:
    """Each training method with its own test-time procedure across domains (paper's view)."""
    lines = [
        "| method (train = test) | " + " | ".join(DOMAINS) + " | drop to new lab |",
        "|---" * (len(DOMAINS) + 2) + "|",
    ]
    for method in TRAIN_METHODS:
        per = [own(domains, method, norm, d) for d in DOMAINS]
        if per[0].empty:
            continue
        lines.append(
            f"| {LABELS[method]} | "
            + " | ".join(ms(p) for p in per)
            + f" | {ms(per[0] - per[2])} |"
        )
    return lines


def full_table(domains: pd.DataFrame, norm: str, domain: str) -> list[str]:
    """Training method x test-time method in one domain."""
    lines = [
        "| trained with \\ test-time | " + " | ".join(LABELS[t] for t in TEST_METHODS) + " |",
        "|---" * (len(TEST_METHODS) + 1) + "|",
    ]
    for method in TRAIN_METHODS:
        cells = [
            ms(by_seed(domains, method=method, norm=norm, domain=domain, test_method=t))
            for t in TEST_METHODS
        ]
        if cells[0] != "n/a":
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return lines


def shift_table(
    ls: pd.DataFrame, norm: str, column: str, values: Sequence, fixed: dict
) -> list[str]:
    """(sampler, training, statistics) x ``column`` (alpha or treated per context)."""
    head = "α" if column == "alpha" else "L"
    lines = [
        "| sampler | trained with | statistics | "
        + " | ".join(f"{head} = {v:g}" for v in values)
        + " |",
        "|---" * (len(values) + 3) + "|",
    ]
    for sampler in SAMPLERS:
        for method in TRAIN_METHODS:
            for stats in STATS_METHODS:
                cells = [
                    ms(
                        by_seed(
                            ls,
                            sampler=sampler,
                            method=method,
                            norm=norm,
                            stats=stats,
                            **{column: v},
                            **fixed,
                        )
                    )
                    for v in values
                ]
                if all(c == "n/a" for c in cells):
                    continue
                lines.append(
                    f"| {sampler} | {LABELS[method]} | {LABELS[stats]} | "
                    + " | ".join(cells)
                    + " |"
                )
    return lines


def context_sizes(ls: pd.DataFrame, treated_values: Sequence[int], alpha: float) -> list[str]:
    """Mean treated cells per context of each sampler (the official caps shrink them)."""
    lines = [
        "| sampler | " + " | ".join(f"L = {n}" for n in treated_values) + " |",
        "|---" * (len(treated_values) + 1) + "|",
    ]
    for sampler in SAMPLERS:
        mine = ls[(ls["sampler"] == sampler) & (ls["alpha"] == alpha)]
        sizes = [mine.loc[mine["treated"] == n, "mean_treated"].mean() for n in treated_values]
        cells = ["n/a" if np.isnan(v) else f"{v:.1f}" for v in sizes]
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    return lines


def oracle_rows(splits: Splits) -> tuple[list[str], dict[str, float]]:
    """The trait oracle on the treated cells of each evaluation set."""
    sets = {**splits.domains, "label-shift plates": splits.label_shift}
    lines = [
        "| cells of | oracle accuracy | responders only | dose 1 µM | dose 10 µM | per well |",
        "|---|---|---|---|---|---|",
    ]
    ceiling = {}
    for name, data in sets.items():
        treated = data.table[data.labels >= 0]
        r = trait_oracle(treated, seed=0)
        ceiling[name] = r.accuracy
        lines.append(
            f"| {name} | {r.accuracy:.3f} | {r.responder_accuracy:.3f} | "
            f"{r.by_dose.get(1.0, float('nan')):.3f} | {r.by_dose.get(10.0, float('nan')):.3f} "
            f"| {r.well_accuracy:.3f} |"
        )
    return lines, ceiling


def detail_table(detail: pd.DataFrame, norm: str) -> list[str]:
    """The networks' accuracy by subgroup (own test-time procedure and ERM statistics)."""
    doses = sorted(c for c in detail.columns if c.startswith("dose "))
    lines = [
        "| trained with | test-time | domain | responders only | "
        + " | ".join(f"{d} µM" for d in doses)
        + " | per well |",
        "|---" * (len(doses) + 5) + "|",
    ]
    mine = detail[detail["norm"] == norm]
    for (method, test, domain), g in mine.groupby(["method", "test_method", "domain"], sort=False):
        lines.append(
            f"| {LABELS[method]} | {LABELS[test]} | {domain} | {ms(g['responders'])} | "
            + " | ".join(ms(g[d]) for d in doses)
            + f" | {ms(g['wells'])} |"
        )
    return lines


def shift_point(ls: pd.DataFrame, method: str, norm: str, stats: str, alpha: float) -> pd.Series:
    """Official sampler, L = 64: one training x statistics accuracy at ``alpha``, by seed."""
    return by_seed(
        ls, sampler="official", method=method, norm=norm, stats=stats, alpha=alpha, treated=64
    )


def _per_seed(d: pd.Series) -> str:
    """Each seed's value, signed: ``s0 +0.012, s1 -0.003``."""
    d = d.dropna().sort_index()
    return ", ".join(f"s{int(k)} {v:+.3f}" for k, v in d.items()) or "n/a"


def paired_table(domains: pd.DataFrame, ls: pd.DataFrame, norm: str) -> list[str]:
    """Per-seed differences of the main comparison (a seed fixes the initialization,
    the episodes and the evaluation contexts of both networks it pairs)."""
    cs = {d: own(domains, "cs-arm-bn", norm, d) for d in DOMAINS}
    erm = {d: own(domains, "erm", norm, d) for d in DOMAINS}
    rows = [
        (f"CS-ARM-BN minus ERM, {d} (each its own test-time procedure)", cs[d] - erm[d])
        for d in DOMAINS
    ]
    rows.append(
        (
            "drop to the new lab, ERM's minus CS-ARM-BN's",
            (erm[DOMAINS[0]] - erm[DOMAINS[2]]) - (cs[DOMAINS[0]] - cs[DOMAINS[2]]),
        )
    )
    if not ls.empty:
        point = {s: shift_point(ls, "cs-arm-bn", norm, s, 0.01) for s in STATS_METHODS}
        rows += [
            (
                "CS-ARM-BN network at α = 0.01 (official, L = 64): CS-ARM-BN minus BEN statistics",
                point["cs-arm-bn"] - point["ben"],
            ),
            (
                "CS-ARM-BN network, CS-ARM-BN statistics: α = 0.01 (official, L = 64) minus "
                "training domain",
                point["cs-arm-bn"] - cs[DOMAINS[0]],
            ),
        ]
    lines = ["| difference | per seed | mean ± sd over seeds |", "|---|---|---|"]
    for name, d in rows:
        lines.append(f"| {name} | {_per_seed(d)} | {paired(d, 0 * d)} |")
    return lines


def plateau_table(history: pd.DataFrame, window: int) -> list[str]:
    """Whether each network's validation loss is flat over the last ``window`` epochs.

    Flat: the run stopped early (no better epoch in the window) and the
    least-squares change of the loss across the window is no steeper than
    -1 % of the best loss (not still falling between noisy epochs).
    """
    lines = [
        f"| trained with | input | seed | epochs run | best epoch | best validation loss | "
        f"fitted change over the last {window} epochs | flat |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, norm, seed), g in history.groupby(["method", "norm", "seed"], sort=False):
        g = g.sort_values("epoch")
        best = g.loc[g["val_loss"].idxmin()]
        tail = g.tail(window)
        slope = np.polyfit(tail["epoch"], tail["val_loss"], 1)[0] if len(tail) > 1 else 0.0
        change = slope * (len(tail) - 1) / best["val_loss"]
        stopped = len(g) - int(best["epoch"]) >= window
        flat = stopped and change >= -0.01
        percent = round(100 * change, 1) + 0.0  # + 0.0: no "-0.0 %"
        lines.append(
            f"| {LABELS[method]} | {LABELS[norm]} | {seed} | {len(g)} | {int(best['epoch'])} | "
            f"{best['val_loss']:.3f} | {percent:+.1f} % | {'yes' if flat else 'no'} |"
        )
    return lines


def long_table(short: dict[str, pd.DataFrame], long: dict[str, pd.DataFrame]) -> list[str]:
    """CS-ARM-BN (log1p) trained long against the 40-epoch budget, paired by seed."""
    lines = [
        f"| CS-ARM-BN, own test-time | {CPU_BUDGET.max_epochs} epochs | up to "
        f"{LONG_BUDGET.max_epochs}, patience {LONG_BUDGET.patience} | long minus short |",
        "|---|---|---|---|",
    ]
    pairs = [
        (
            d,
            own(short["domains"], "cs-arm-bn", "log1p", d),
            own(long["domains"], "cs-arm-bn", "log1p", d),
        )
        for d in DOMAINS
    ]
    for alpha in (0.01, 10.0):
        pairs.append(
            (
                f"label shift α = {alpha:g} (official, L = 64)",
                shift_point(short["label_shift"], "cs-arm-bn", "log1p", "cs-arm-bn", alpha),
                shift_point(long["label_shift"], "cs-arm-bn", "log1p", "cs-arm-bn", alpha)
                if not long["label_shift"].empty
                else pd.Series(dtype=float),
            )
        )
    for name, a, b in pairs:
        a = a[a.index.isin(b.index)]  # the seeds trained both ways
        lines.append(f"| {name} | {ms(a)} | {ms(b)} | {paired(b, a)} |")
    return lines


def targets(domains: pd.DataFrame, ls: pd.DataFrame, norm: str, ceiling: float) -> list[str]:
    """The issue's three targets, each with the measured numbers and a verdict."""
    cs_in = own(domains, "cs-arm-bn", norm, DOMAINS[0])
    cs_new = own(domains, "cs-arm-bn", norm, DOMAINS[2])
    erm_in, erm_new = own(domains, "erm", norm, DOMAINS[0]), own(domains, "erm", norm, DOMAINS[2])
    shift = by_seed(
        ls,
        sampler="official",
        method="cs-arm-bn",
        norm=norm,
        stats="cs-arm-bn",
        alpha=0.01,
        treated=64,
    )
    lines = []
    if not cs_in.empty and not erm_in.empty:
        cs_drop, erm_drop = (cs_in - cs_new), (erm_in - erm_new)
        ok = cs_drop.mean() <= 0.01 and erm_drop.mean() >= 0.05
        lines.append(
            f"- **CS-ARM-BN within 1 point of in-domain in a new lab while ERM loses >= 5**: "
            f"CS-ARM-BN loses {ms(cs_drop)}, ERM {ms(erm_drop)} — "
            + ("reached." if ok else "**not reached**.")
        )
    if not cs_in.empty and not shift.empty:
        ratio = shift / cs_in
        lines.append(
            f"- **At α = 0.01 CS-ARM-BN >= 0.95 x its in-domain accuracy** (official sampler, "
            f"L = 64): {ms(shift)} against {ms(cs_in)} in domain, ratio {ms(ratio)} — "
            + ("reached." if ratio.mean() >= 0.95 else "**not reached**.")
        )
    if not cs_in.empty:
        share = cs_in / ceiling
        lines.append(
            f"- **In-domain accuracy >= 0.8 of the measured ceiling**: CS-ARM-BN {ms(cs_in)} "
            f"against the trait oracle's {ceiling:.3f} on the same cells, {ms(share)} of it — "
            + ("reached." if share.mean() >= 0.8 else "**not reached**.")
        )
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


NORM_COLOURS = {"log1p": "#0072b2", "image": "#d55e00"}
STATS_STYLE = {
    "erm": ("#888888", ":"),
    "arm-bn": ("#e69f00", "-"),
    "ben": ("#009e73", "--"),
    "cs-arm-bn": ("#0072b2", "-"),
}


def plot_curves(history: pd.DataFrame, path: Path) -> None:
    """Validation (solid) and training (dotted) loss per epoch, one panel per training method."""
    plt = _pyplot()
    methods = [m for m in TRAIN_METHODS if m in set(history["method"])]
    fig, axes = plt.subplots(
        1, len(methods), figsize=(4.3 * len(methods), 3.4), sharey=True, squeeze=False
    )
    for ax, method in zip(axes[0], methods, strict=True):
        for (norm, seed), g in history[history["method"] == method].groupby(["norm", "seed"]):
            colour = NORM_COLOURS[norm]
            label = LABELS[norm] if seed == history["seed"].min() else None
            ax.plot(g["epoch"], g["val_loss"], color=colour, lw=1.2, label=label)
            ax.plot(g["epoch"], g["train_loss"], color=colour, lw=0.8, ls=":")
            best = g.loc[g["val_loss"].idxmin()]
            ax.plot(best["epoch"], best["val_loss"], "o", color=colour, ms=4)
        ax.set_title(f"trained {LABELS[method]}")
        ax.set_xlabel("epoch (12 steps)")
    axes[0][0].set_ylabel("loss (solid: validation plate, dotted: training)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_shift(ls: pd.DataFrame, norm: str, column: str, fixed: dict, path: Path) -> None:
    """Accuracy against alpha (or L), one panel per sampler x training method."""
    plt = _pyplot()
    mine = ls[(ls["norm"] == norm)]
    for k, v in fixed.items():
        mine = mine[mine[k] == v]
    methods = [m for m in TRAIN_METHODS if m in set(mine["method"])]
    fig, axes = plt.subplots(
        len(SAMPLERS),
        len(methods),
        figsize=(4 * len(methods), 6.4),
        sharey=True,
        sharex=True,
        squeeze=False,
    )
    for i, sampler in enumerate(SAMPLERS):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            here = mine[(mine["sampler"] == sampler) & (mine["method"] == method)]
            for stats in STATS_METHODS:
                g = here[here["stats"] == stats].groupby(column)["accuracy"]
                if not len(g):
                    continue
                colour, style = STATS_STYLE[stats]
                std = g.std(ddof=1).fillna(0)
                ax.errorbar(
                    g.mean().index,
                    g.mean(),
                    yerr=std,
                    color=colour,
                    ls=style,
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=f"{LABELS[stats]} statistics",
                )
            ax.set_xscale("log", base=10 if column == "alpha" else 2)
            ax.set_title(f"{sampler} sampler, trained {LABELS[method]}", fontsize=9)
            ax.set_ylim(0, 0.8)
            if i == len(SAMPLERS) - 1:
                ax.set_xlabel("Dirichlet α" if column == "alpha" else "treated cells per context")
        axes[i][0].set_ylabel("accuracy, held-out plates")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def choose_norm(domains: pd.DataFrame) -> tuple[str, list[str]]:
    """The input for new checkpoints: per-image only if it loses no in-domain accuracy."""
    verdicts, keep = [], True
    for method in ("erm", "cs-arm-bn"):
        a = own(domains, method, "log1p", DOMAINS[0])
        b = own(domains, method, "image", DOMAINS[0])
        d = (b - a).dropna()
        if d.empty:
            return "log1p", ["Per-image networks are missing: the default stays clip + log1p."]
        keep &= d.mean() >= 0
        verdicts.append(f"{LABELS[method]} {paired(b, a)}")
    rule = "; ".join(verdicts)
    if keep:
        return "image", [
            f"In-domain accuracy, per-image minus log1p (paired by seed): {rule}: "
            "per-image does not lose, so it is the input of the tables below."
        ]
    return "log1p", [
        f"In-domain accuracy, per-image minus log1p (paired by seed): {rule}: "
        "per-image loses in-domain accuracy, so the default for new checkpoints "
        "stays clip + log1p and the tables below use it."
    ]


def render(
    tables: dict[str, pd.DataFrame],
    budget: Budget,
    evals: EvalSettings,
    splits: Splits,
    wide: dict[str, pd.DataFrame] | None,
    long: dict[str, pd.DataFrame] | None = None,
) -> str:
    """The measured section of docs/protocol.md."""
    domains, ls, training = tables["domains"], tables["label_shift"], tables["training"]
    norm, decision = choose_norm(domains)
    if norm not in set(ls["norm"]):
        decision.append(
            f"(Label shift was evaluated for the {LABELS[ls['norm'].iloc[0]]} networks only, "
            "so its tables use them; run with `--shift-norms image` to add the others.)"
        )
        norm = str(ls["norm"].iloc[0])
    oracle, ceiling = oracle_rows(splits)
    seeds = sorted(int(s) for s in training["seed"].unique())
    lines = [
        f"Measured by `benchmarks/bench_protocol.py` on CPU ({platform.machine()}, "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}), seeds {seeds}; "
        "mean ± sample standard deviation (ddof=1) over seeds, differences paired by seed. "
        f"Plates, crops and splits of [domain-shift.md](domain-shift.md) "
        f"({len(splits.train)} training cells; {evals.max_test_treated} treated cells per test "
        "plate with all its controls).",
        "",
        f"Networks: {budget.arch} width {budget.width} (small stem), Adam lr 1e-3, "
        f"L = {budget.treated} (+ C = {budget.controls} for CS-ARM-BN) per episode, "
        f"P = {budget.plates_per_step} episodes per step, epochs of {budget.steps_per_epoch} "
        "steps, "
        f"up to {budget.max_epochs} epochs, early stopping when the validation loss has not "
        f"improved for {budget.patience} epochs (the best epoch's weights are kept).",
        "",
        "### Training to convergence",
        "",
        *training_table(training),
        "",
        "![Learning curves](images/protocol_curves.png)",
        "",
        "### Input normalization (issue 15.1)",
        "",
        *norm_table(domains, ("erm", "arm-bn", "cs-arm-bn")),
        "",
        *decision,
        "",
        f"### Domain shift ({LABELS[norm]} input)",
        "",
        *matched_table(domains, norm),
        "",
    ]
    for domain in DOMAINS:
        lines += [
            f"**{domain.capitalize()}**, every training x test-time method:",
            "",
            *full_table(domains, norm, domain),
            "",
        ]
    lines += [
        f"### Label shift, both samplers (held-out plates, {LABELS[norm]} input)",
        "",
        "Official: one Dirichlet(α) draw of L treated per plate, 8 contexts rotated so each "
        "class dominates once, each class capped at the cells the plate holds, 128 controls "
        "(with replacement, as the official code). Ours: a draw per context, "
        f"{evals.ours_contexts_per_plate} contexts per plate, L treated always (resampled when "
        "a class runs short), 128 controls. The seed of the evaluation is the network's.",
        "",
        "L = 64 treated per context:",
        "",
        *shift_table(ls, norm, "alpha", evals.alphas, {"treated": 64}),
        "",
        "![Label shift](images/protocol_label_shift.png)",
        "",
        f"Treated cells per context at α = {evals.sweep_alpha:g} (128 controls):",
        "",
        *shift_table(ls, norm, "treated", evals.treated_sweep, {"alpha": evals.sweep_alpha}),
        "",
        "Mean treated cells actually in a context (the official caps):",
        "",
        *context_sizes(ls[ls["norm"] == norm], evals.treated_sweep, evals.sweep_alpha),
        "",
        "![Treated per context](images/protocol_treated_sweep.png)",
        "",
        "### The ceiling (issue 15.3)",
        "",
        "Trait oracle: a gradient-boosted classifier on the generator's ground-truth traits "
        "(`phenoadapt.evaluate.ceiling.trait_oracle`), trained on two fresh draws of cells with "
        "the same compounds and doses, scored on a third; no image, optics or batch effect. "
        "15 % of treated cells are non-responders (DMSO-like).",
        "",
        *oracle,
        "",
        "The networks' own test-time procedure (and ERM statistics), by subgroup:",
        "",
        *detail_table(tables["detail"], norm),
        "",
        "### Paired per-seed differences",
        "",
        *paired_table(domains, ls, norm),
        "",
        "### Targets of the issue",
        "",
        *targets(domains, ls, norm, ceiling[DOMAINS[0]]),
    ]
    if long is not None and not long["training"].empty:
        lines += [
            "",
            f"### Longer training (issue 15.4): up to {LONG_BUDGET.max_epochs} epochs, patience "
            f"{LONG_BUDGET.patience}",
            "",
            *plateau_table(long["history"], LONG_BUDGET.patience),
            "",
            "The 40-epoch networks of the tables above, same test:",
            "",
            *plateau_table(
                tables["history"][
                    (tables["history"]["method"] == "cs-arm-bn")
                    & (tables["history"]["norm"] == "log1p")
                ],
                LONG_BUDGET.patience,
            ),
            "",
            *long_table(tables, long),
            "",
            "The issue's targets with the longer-trained networks:",
            "",
            *targets(long["domains"], long["label_shift"], "log1p", ceiling[DOMAINS[0]]),
            "",
            "![Learning curves, long training](images/protocol_curves_long.png)",
        ]
    if wide is not None and not wide["training"].empty:
        lines += [
            "",
            f"### Wider network (width {WIDE_BUDGET.width}, {LABELS['log1p']} input)",
            "",
            *training_table(wide["training"]),
            "",
            *matched_table(wide["domains"], "log1p"),
        ]
    return "\n".join(lines)


def report(
    args: argparse.Namespace,
    tables: dict[str, pd.DataFrame],
    budget: Budget,
    evals: EvalSettings,
    splits: Splits,
    cache: Path,
) -> None:
    """Print the tables and, unless a quick run, write docs/protocol.md and its figures."""
    wide = long = None
    out = cache if args.quick else IMAGES
    out.mkdir(parents=True, exist_ok=True)
    if not args.quick and not args.gpu_budget and not args.wide and not args.long:
        runs = [(m, "log1p", s) for m in ("erm", "cs-arm-bn") for s in args.seeds]
        wide = gather(cache, WIDE_BUDGET, splits, evals, runs, evaluate=True)
        long = gather(cache, LONG_BUDGET, splits, evals, runs, evaluate=True)
        if not long["history"].empty:
            plot_curves(long["history"], out / "protocol_curves_long.png")
    norm, _ = choose_norm(tables["domains"])
    if norm not in set(tables["label_shift"]["norm"]):
        norm = str(tables["label_shift"]["norm"].iloc[0])
    plot_curves(tables["history"], out / "protocol_curves.png")
    plot_shift(
        tables["label_shift"], norm, "alpha", {"treated": 64}, out / "protocol_label_shift.png"
    )
    plot_shift(
        tables["label_shift"],
        norm,
        "treated",
        {"alpha": evals.sweep_alpha},
        out / "protocol_treated_sweep.png",
    )
    text = render(tables, budget, evals, splits, wide, long)
    print(text)
    if args.quick:
        print(f"quick run: figures in {out}, docs untouched")
        return
    doc = DOC.with_name("protocol-gpu.md") if args.gpu_budget else DOC
    write_doc_section(doc, text, START, END, title="The paper's protocol on synthetic plates")
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
