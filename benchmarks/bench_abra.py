"""Benchmark of ABRA training on synthetic Cell Painting plates with a held-out lab.

Synthetic experiment (:func:`phenoadapt.plate.synthetic.generate_experiment`):
3 labs x 1 batch x 2 plates of 96 wells, 1 field per well, 8 MoAs + DMSO.
Crops are cut at the ground-truth cells (:func:`read_cells` + ``CropStream(cells=...)``).
Training: lab1 (2 plates) + lab2 plate 1; validation (early stopping): lab2 plate 2;
test: both plates of lab3, never seen in training.  ResNet-10, width 8, small stem.

Models (each with every seed):

- ``erm``: plain cross-entropy on minibatches mixed across plates;
- ``margin``: ABRA's network and angular margin, adversary off (epsilon = 0), ERM batches;
- ``abra``: full ABRA (adversary + margin + alignment) on ERM batches;
- ``cs-arm-bn``: CS-ARM-BN plate episodes with controls;
- ``abra+cs`` (``--with-abra-cs``): ABRA on CS-ARM-BN episodes.

Each is evaluated on the held-out lab with the test-time methods ERM (training
statistics, no target data), AdaBN, BEN and CS-ARM-BN (the target plate's cells).

Run: ``python benchmarks/bench_abra.py [--quick] [--seeds 0 1 2] [--cache DIR] [--out PAGE]``
(CPU, one torch thread each).  Generating and cropping the plates takes about 1 CPU-minute;
training one seed of the four models about 8 CPU-minutes (ABRA about 3x ERM).  On a shared
machine, runs of single seeds / models go in parallel and are merged::

    python benchmarks/bench_abra.py --cache /tmp/abra --seeds 1 --kinds abra --out s1.md
    python benchmarks/bench_abra.py --cache /tmp/abra --combine s0.md s1.md ...

Writes its section of ``docs/abra-benchmark.md`` (between the ``bench:abra`` markers, with
:func:`_common.write_doc_section`; the notes around it are hand-written and kept), or of the
page ``--out`` names (created when missing); ``--quick`` writes only with ``--out``.  The table
is also copied into ``docs/abra.md`` by hand.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phenoadapt import schema
from phenoadapt.cells import CropParams, CropStream
from phenoadapt.nn import AbraNetConfig, ResNetConfig, build_abra, build_resnet, fit_normalization
from phenoadapt.plate import open_plate
from phenoadapt.plate.synthetic import SyntheticPlateConfig, generate_experiment, read_cells
from phenoadapt.train import AbraConfig, CellData, TrainConfig, evaluate_plates, train_model

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

OUT = Path(__file__).resolve().parents[1] / "docs" / "abra-benchmark.md"
START, END = "<!-- bench:abra:start -->", "<!-- bench:abra:end -->"
TITLE = "ABRA benchmark: held-out lab on synthetic Cell Painting plates"
TEST_METHODS = ("erm", "adabn", "ben", "cs-arm-bn")
CROP = CropParams(size=24, scale=0.5)  # a 48-pixel window: one cell (radius ~20 px) and a rim
TRAIN = ["lab1_batch1_plate1", "lab1_batch1_plate2", "lab2_batch1_plate1"]
VAL = ["lab2_batch1_plate2"]
TEST = ["lab3_batch1_plate1", "lab3_batch1_plate2"]


# -- data ------------------------------------------------------------------------------------
def load_crops(cache: Path, seed: int) -> CellData:
    """Generate the experiment (once) and crop every ground-truth cell; cached as .npy + .csv."""
    images_path, table_path = cache / "crops.npy", cache / "cells.csv"
    if not images_path.exists():
        start = time.perf_counter()
        exp = generate_experiment(
            cache / "plates", labs=3, batches_per_lab=1, plates_per_batch=2,
            config=SyntheticPlateConfig(sites=1), seed=seed, workers=1, overwrite=True,
        )  # fmt: skip
        crops, tables = [], []
        for plate_info in exp.plates:
            plate = open_plate(plate_info.path)
            cells = read_cells(plate_info.path)
            for batch in CropStream(plate, batch_size=4096, crop=CROP, cells=cells):
                crops.append(batch.crops)
                tables.append(batch.cells)
        np.save(images_path, np.concatenate(crops))
        pd.concat(tables, ignore_index=True).to_csv(table_path, index=False)
        print(f"generated and cropped in {time.perf_counter() - start:.0f} s", flush=True)
    table = pd.read_csv(table_path, dtype={schema.PLATE: str, schema.WELL: str})
    return CellData.from_table(np.load(images_path), table, channel_names=CROP_CHANNELS)


CROP_CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


# -- models ----------------------------------------------------------------------------------
def make_model(kind: str, norm, n_classes: int, seed: int) -> torch.nn.Module:
    resnet = ResNetConfig("resnet10", 5, n_classes, width=8, stem="small", normalization=norm)
    if kind in ("erm", "cs-arm-bn"):
        return build_resnet(resnet, seed=seed)
    return build_abra(AbraNetConfig(resnet=resnet), seed=seed)


def train_config(
    kind: str, seed: int, epochs: int, steps: int, epsilon: float = 1.0
) -> TrainConfig:
    method = "cs-arm-bn" if kind in ("cs-arm-bn", "abra+cs") else "erm"
    abra = {
        "margin": AbraConfig(epsilon=0.0),
        "abra": AbraConfig(epsilon=epsilon),
        "abra+cs": AbraConfig(epsilon=epsilon),
    }.get(kind)
    return TrainConfig(
        method=method, max_epochs=epochs, patience=3, treated_per_episode=64,
        controls_per_episode=64, plates_per_step=1, max_steps_per_epoch=steps,
        val_controls_per_context=64, device="cpu", seed=seed, abra=abra,
    )  # fmt: skip


def run(data, kinds, seeds, epochs, steps, epsilon=1.0, report=None) -> pd.DataFrame:
    train, val, test = data.subset(TRAIN), data.subset(VAL), data.subset(TEST)
    norm = fit_normalization(train.images)
    rows = []
    for seed in seeds:
        for kind in kinds:
            start = time.perf_counter()
            model = make_model(kind, norm, len(data.classes), seed)
            result = train_model(
                model, train, val, train_config(kind, seed, epochs, steps, epsilon)
            )
            seconds = time.perf_counter() - start
            row = {"model": kind, "seed": seed, "train_s": seconds,
                   "val_acc": result.history[result.best_epoch - 1]["val_accuracy"]}  # fmt: skip
            for method in TEST_METHODS:
                row[method] = evaluate_plates(
                    result.model, test, method, controls_per_context=64, seed=seed
                ).accuracy
            rows.append(row)
            if report is not None:
                report(pd.DataFrame(rows))
            print(
                {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True
            )
    return pd.DataFrame(rows)


# -- report ----------------------------------------------------------------------------------
LABELS = {
    "erm": "ERM",
    "margin": "angular margin only (ABRA, epsilon 0)",
    "abra": "ABRA (ERM batches)",
    "cs-arm-bn": "CS-ARM-BN",
    "abra+cs": "ABRA on CS-ARM-BN episodes",
}


def table(results: pd.DataFrame) -> list[str]:
    cols = ["val_acc", *TEST_METHODS]
    head = "| trained with | in-domain val (own test method) | " + " | ".join(
        f"lab3, test-time {m}" for m in TEST_METHODS
    )
    lines = [head + " | train s |", "|---" * (len(cols) + 2) + "|"]
    for kind, group in results.groupby("model", sort=False):
        cells = [f"{group[c].mean():.3f} +- {group[c].std(ddof=0):.3f}" for c in cols]
        lines.append(
            f"| {LABELS[kind]} | " + " | ".join(cells) + f" | {group['train_s'].mean():.0f} |"
        )
    return lines


def markdown(frame: pd.DataFrame) -> list[str]:
    """A DataFrame as a markdown table (floats to 3 decimals)."""
    fmt = [lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|---" * len(frame.columns) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(fmt[0](v) for v in row) + " |")
    return lines


def report_text(
    data: CellData, results: pd.DataFrame, epochs: int, steps: int, epsilon: float = 1.0
) -> str:
    counts = data.table.groupby(schema.PLATE).size()
    machine = f"{platform.machine()}, 1 torch thread, torch {torch.__version__}"
    seeds = sorted(results["seed"].unique().tolist())
    return "\n".join(
        [
            f"Written by `benchmarks/bench_abra.py` on CPU ({machine}).",
            f"{len(data)} ground-truth cells in {len(counts)} plates ({counts.min()}-"
            f"{counts.max()} per plate), {len(data.classes)} MoA classes, crops "
            f"{CROP.size} px at scale {CROP.scale}. Train {', '.join(TRAIN)}; validation "
            f"{VAL[0]}; test {', '.join(TEST)} (lab3 unseen). ResNet-10 width 8; "
            f"{epochs} epochs x {steps} steps of one episode of 64 treated cells (+64 controls "
            "for CS-ARM-BN), early stopping on validation loss (patience 3). "
            f"ABRA: epsilon {epsilon}, 1 ascent step, CosFace s=16 m=0.2, cosine+moments "
            f"alignment. Seeds {seeds}; "
            "mean +- std (population std over seeds).",
            "",
            *table(results),
            "",
            "Per-seed rows:",
            "",
            *markdown(results),
        ]
    )


def write_report(page: Path, text: str) -> Path:
    """Put ``text`` (:func:`report_text`) into the page's ``bench:abra`` section.

    The rest of the page is kept; a missing page (a partial run's ``--out``) is
    created with the benchmark's title.
    """
    return write_doc_section(page, text, START, END, title=TITLE)


def read_rows(path: Path) -> pd.DataFrame:
    """The per-seed rows of a report written by this script (to combine parallel runs)."""
    lines = path.read_text().splitlines()
    start = lines.index("Per-seed rows:") + 2
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    frame = pd.DataFrame(rows, columns=header)
    numeric = [c for c in header if c != "model"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, fewer steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per epoch")
    parser.add_argument("--with-abra-cs", action="store_true", help="also ABRA on CS episodes")
    parser.add_argument("--epsilon", type=float, default=1.0, help="ABRA bound")
    parser.add_argument("--kinds", nargs="+", default=None, help="models to train (all)")
    parser.add_argument("--cache", type=Path, default=None, help="keep generated crops here")
    parser.add_argument(
        "--out", type=Path, default=None,
        help=f"page whose section is written (default: {OUT.name}; with --quick: none)",
    )  # fmt: skip
    parser.add_argument(
        "--combine", type=Path, nargs="+", default=None,
        help="write one report from reports of runs with other seeds (run in parallel)",
    )  # fmt: skip
    args = parser.parse_args()
    page = args.out or (None if args.quick else OUT)  # quick figures never replace the docs'
    torch.set_num_threads(1)  # a shared machine; also makes timings comparable
    seeds = [args.seeds[0]] if args.quick else args.seeds
    epochs, steps = (3, 20) if args.quick else (args.epochs, args.steps)
    kinds = args.kinds or (
        ["erm", "margin", "abra", "cs-arm-bn"] + (["abra+cs"] if args.with_abra_cs else [])
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        data = load_crops(cache, seed=0)
        if args.combine:
            results = pd.concat([read_rows(path) for path in args.combine], ignore_index=True)
            text = report_text(data, results, epochs, steps, args.epsilon)
            print(text)
            if page is not None:
                print(f"wrote {write_report(page, text)}")
            return

        def report(results: pd.DataFrame) -> None:  # after every model: partial runs count
            if page is not None:
                write_report(page, report_text(data, results, epochs, steps, args.epsilon))

        results = run(data, kinds, seeds, epochs, steps, args.epsilon, report)
    print(report_text(data, results, epochs, steps, args.epsilon))
    if page is not None:
        print(f"wrote {page}")


if __name__ == "__main__":
    main()
