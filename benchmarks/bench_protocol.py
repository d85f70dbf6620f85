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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phenoadapt import schema
from phenoadapt.adapt import plan_contexts, predict_contexts
from phenoadapt.evaluate.ceiling import (
    accuracy_by,
    well_accuracy,
)
from phenoadapt.evaluate.label_shift import PlateLabelShiftSampler
from phenoadapt.nn import ResNetConfig, build_resnet, fit_normalization
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
    from benchmarks._synthetic_data import DataSettings, design, prepare_crops
    from benchmarks.bench_domain_shift import FULL_DESIGN, QUICK_DESIGN, Splits, make_splits

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "protocol.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
#: Bump when the evaluation changes: cached evaluation tables are then recomputed.
EVAL_VERSION = 3

TRAIN_METHODS = ("erm", "arm-bn", "cs-arm-bn")
TEST_METHODS = ("erm", "adabn", "arm-bn", "ben", "cs-arm-bn")
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
    ours_contexts_per_plate: int = 4
    max_test_treated: int | None = 500


# --------------------------------------------------------------------------- networks


def network_config(splits: Splits, budget: Budget, norm: str, seed: int) -> ResNetConfig:
    """The untrained network: normalization fitted on the training crops."""
    if norm == "image":
        normalization = fit_normalization(
            splits.train.images, transform="linear", image_percentile=99.99, seed=seed
        )
    else:
        normalization = fit_normalization(splits.train.images, seed=seed)
    return ResNetConfig(
        budget.arch,
        5,
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
                "responders": float(correct[table["responder"].to_numpy(bool)].mean()),
                "wells": well_accuracy(table, probs, labels),
            }
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
    """Accuracy of each kind of statistics, both samplers, the alpha and treated sweeps."""
    data = splits.label_shift
    grid = [(a, 64) for a in settings.alphas]
    grid += [(settings.sweep_alpha, n) for n in settings.treated_sweep if n != 64]
    rows = []
    for sampler in SAMPLERS:
        for alpha, treated in grid:
            contexts = label_shift_contexts(data, sampler, alpha, treated, settings, seed)
            sizes = [len(c.treated) for c in contexts]
            for stats in STATS_METHODS:
                ev = evaluate_contexts(model, data, [c.context(stats) for c in contexts])
                rows.append(
                    {
                        "sampler": sampler,
                        "alpha": alpha,
                        "treated": treated,
                        "stats": stats,
                        "accuracy": ev.accuracy,
                        "mean_treated": float(np.mean(sizes)),
                    }
                )
    return rows


def evaluate_network(
    path: Path,
    splits: Splits,
    settings: EvalSettings,
    method: str,
    seed: int,
    budget: Budget,
    cache: Path,
) -> dict[str, pd.DataFrame]:
    """Every table of one network, from the cache when its evaluation is current."""
    stem = path.name.removesuffix(".safetensors")
    tag = f"{stem}_eval{EVAL_VERSION}"
    names = ("domains", "detail", "label_shift")
    files = {n: cache / f"{tag}_{n}.csv" for n in names}
    if all(f.exists() for f in files.values()):
        return {n: pd.read_csv(f) for n, f in files.items()}
    model = load_checkpoint(path).model.eval()
    started = time.perf_counter()
    domains, detail = evaluate_domains(model, splits, method, seed, budget)
    tables = {
        "domains": pd.DataFrame(domains),
        "detail": pd.DataFrame(detail),
        "label_shift": pd.DataFrame(evaluate_label_shift(model, splits, settings, seed)),
    }
    for name, table in tables.items():
        table.to_csv(files[name], index=False)
    print(f"evaluated {stem} in {time.perf_counter() - started:.0f} s", flush=True)
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
            path, splits, settings, method, seed, budget, cache
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
    parser.add_argument("--methods", nargs="+", choices=TRAIN_METHODS, default=list(TRAIN_METHODS))
    parser.add_argument("--norms", nargs="+", choices=NORMS, default=list(NORMS))
    parser.add_argument("--train-only", action="store_true", help="train what is missing, stop")
    parser.add_argument(
        "--eval-only", action="store_true", help="evaluate cached networks (no training), no docs"
    )
    parser.add_argument(
        "--report", action="store_true", help="write the docs from the cache; trains nothing"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering fields")
    return parser.parse_args()


def choose(args: argparse.Namespace) -> tuple[DataSettings, Budget, EvalSettings, Path, Path]:
    """Data, budget, evaluation, work and cache folders of the chosen preset."""
    if args.quick:
        settings = DataSettings(
            plates=tuple(design(QUICK_DESIGN)),
            wells=tuple(f"{r}{c:02d}" for r in "ABCD" for c in range(1, 13)),
            field_size=192,
        )
        return (
            settings,
            QUICK_BUDGET,
            EvalSettings(alphas=(0.01, 10.0), treated_sweep=(16, 64)),
            args.work_dir / "quick",
            args.cache_dir / "quick",
        )
    settings = DataSettings(plates=tuple(design(FULL_DESIGN)))
    budget = GPU_BUDGET if args.gpu_budget else WIDE_BUDGET if args.wide else CPU_BUDGET
    return settings, budget, EvalSettings(), args.work_dir / "full", args.cache_dir / "full"


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
    tables = gather(cache, budget, splits, evals, runs, evaluate=True)
    if args.eval_only:
        return
    report(args, tables, budget, evals, settings, cells, splits)


def report(args, tables, budget, evals, settings, cells, splits) -> None:  # placeholder
    for name, table in tables.items():
        print(name, table.head(20).to_string())


if __name__ == "__main__":
    main()
