"""Every CUDA measurement of the project in one run (< 8 minutes); writes docs/gpu.md.

Sections (each prints its figures and its own seconds):

1. *throughput*: raw forward against CS-ARM-BN ``predict_plate`` (bfloat16 autocast
   and channels-last on CUDA, as the library does) for ResNet-10 and ResNet-50,
   batch 64 and 256, by :func:`bench_throughput.run_benchmark`;
2. *end to end*: :func:`phenoadapt.pipeline.run_plate` on a synthetic 384-well
   plate of 1080 x 1080 fields (segmentation, crops, adaptation, prediction,
   per-cell and per-well tables), by :func:`bench_throughput.end_to_end`;
3. *training*: CS-ARM-BN plate episodes of a ResNet-50 (``train_model``): steps/s
   and peak GPU memory (``torch.cuda.max_memory_allocated``);
4. *UMAP on the GPU*: cuML's UMAP through ``umap_coordinates`` when cuML is installed.

Run ``python benchmarks/gpu_check.py`` on a CUDA machine: it writes ``docs/gpu.md``
(``--out`` elsewhere).  Without CUDA (or with ``--cpu-smoke``) it runs every section
at tiny sizes in seconds and writes ``gpu.md`` in the work folder, not docs/
(``tests/test_gpu_check.py`` runs it, so the script cannot rot).
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phenoadapt.evaluate import projection
from phenoadapt.nn import ResNetConfig, build_resnet, fit_normalization
from phenoadapt.train import CellData, TrainConfig, make_toy_plates, train_model

try:  # run as a script: benchmarks/ is on sys.path
    import bench_throughput as throughput
    from _common import write_doc_section
    from _synthetic_data import DataSettings, design, generate_plates
except ImportError:  # pragma: no cover - imported as benchmarks.gpu_check
    from benchmarks import bench_throughput as throughput
    from benchmarks._common import write_doc_section
    from benchmarks._synthetic_data import DataSettings, design, generate_plates

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "gpu.md"
START, END = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->"
BUDGET_S = 8 * 60
Log = Callable[[str], None]


@dataclass(frozen=True)
class Sizes:
    """How big each section is: the full check or the CPU smoke run."""

    cases: tuple[throughput.Case, ...]
    batch_sizes: tuple[int, ...]
    throughput_plate: DataSettings
    e2e_plate: DataSettings
    train_width: int
    train_crop: int
    train_steps: int
    umap_cells: int


FULL = Sizes(
    # Every cell of the plate (no CPU subsample): ResNet-10 at 24 px, ResNet-50 at 48 px.
    cases=(
        replace(throughput.FULL_CASES[0], max_cells=None),
        replace(throughput.FULL_CASES[2], max_cells=None),
    ),
    batch_sizes=(64, 256),
    throughput_plate=DataSettings(plates=tuple(design({1: [1]}))),
    e2e_plate=DataSettings(plates=tuple(design({1: [1]})), n_wells=384, field_size=1080),
    train_width=64,
    train_crop=48,
    train_steps=30,
    umap_cells=100_000,
)
SMOKE = Sizes(
    cases=(
        throughput.Case("resnet10", 4, "small", 16, 0.5),
        throughput.Case("resnet50", 4, "small", 16, 0.5),
    ),
    batch_sizes=(32,),
    throughput_plate=DataSettings(
        # Rows A and B: enough control wells for CS-ARM-BN contexts.
        plates=tuple(design({1: [1]})),
        wells=tuple(f"{r}{c:02d}" for r in "AB" for c in range(1, 13)),
        field_size=128,
    ),
    e2e_plate=DataSettings(plates=tuple(design({1: [1]})), wells=("A01", "A02"), field_size=128),
    train_width=4,
    train_crop=16,
    train_steps=2,
    umap_cells=300,
)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"


def section_throughput(sizes: Sizes, work: Path, device: torch.device, log: Log) -> dict:
    """Raw vs CS-ARM-BN cells/s per network and batch size."""
    table, _ = throughput.run_benchmark(
        work / "throughput",
        sizes.cases,
        sizes.batch_sizes,
        device,
        1,
        sizes.throughput_plate,
        None,
        log=log,
    )
    return {"table": table}


def section_end_to_end(sizes: Sizes, work: Path, device: torch.device, log: Log) -> dict:
    """Seconds of run_plate over every well of the synthetic plate (generation not counted)."""
    settings, folder = sizes.e2e_plate, work / "e2e"
    started = time.perf_counter()
    generate_plates(settings, folder / "plates", workers=None, log=log)
    generated = time.perf_counter() - started
    wells = list(settings.wells) if settings.wells else None
    if wells is None:
        from phenoadapt.plate import open_plate

        plate = open_plate(throughput.plate_folder(folder, settings.plates[0].plate_id))
        wells = list(plate.wells)
    row = throughput.end_to_end(folder, settings, sizes.cases[0], device, wells)
    if row is None:
        return {"skipped": "phenoadapt.pipeline is not installed"}
    row = dict(row, wells=len(wells), generation_s=generated)
    row["seconds"] = row["seconds_per_field"] * row["fields"]
    log(
        f"end to end: {row['fields']} fields, {row['cells']} cells, {row['seconds']:.1f} s "
        f"({row['seconds_per_field']:.2f} s/field)"
    )
    return row


def section_training(sizes: Sizes, device: torch.device, log: Log) -> dict:
    """Steps/s and peak GPU memory of CS-ARM-BN plate episodes of a ResNet-50."""
    plates, per_step = 4, 64
    # Enough treated cells for the timed steps in one epoch (3 classes x 4 plates).
    treated = math.ceil(per_step * sizes.train_steps / (3 * plates)) + per_step
    images, table = make_toy_plates(
        plates, n_channels=5, size=sizes.train_crop, treated_per_class=treated, n_controls=128
    )
    data = CellData.from_table(images, table)
    config = ResNetConfig(
        "resnet50",
        5,
        len(data.classes),
        width=sizes.train_width,
        stem="imagenet" if sizes.train_width >= 64 else "small",
        normalization=fit_normalization(images),
    )

    def steps(n: int) -> float:
        train = TrainConfig(
            method="cs-arm-bn",
            max_epochs=1,
            max_steps_per_epoch=n,
            treated_per_episode=per_step,
            controls_per_episode=per_step,
            plates_per_step=1,
            device=str(device),
            seed=0,
        )
        model = build_resnet(config, seed=0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        train_model(model, data, None, train)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    steps(1)  # warm-up: cuDNN's kernel choice, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = steps(sizes.train_steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    row = {
        "steps": sizes.train_steps,
        "steps_per_s": sizes.train_steps / seconds,
        "episode": f"{per_step} treated + {per_step} controls of one plate",
        "crop": sizes.train_crop,
        "width": sizes.train_width,
        "peak_gib": peak,
    }
    log(f"training: {row['steps_per_s']:.2f} steps/s, peak GPU memory {peak or 0:.2f} GiB")
    return row


def section_umap(sizes: Sizes, log: Log) -> dict:
    """cuML's UMAP of stand-in embeddings, when cuML and a CUDA device are there."""
    if projection._cuml_umap() is None:
        log("UMAP: cuML not installed (or no CUDA device): skipped")
        return {"skipped": "cuML is not installed"}
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3, size=(6, 256))
    X = centres[rng.integers(6, size=sizes.umap_cells)] + rng.normal(size=(sizes.umap_cells, 256))
    started = time.perf_counter()
    projection.umap_coordinates(X, seed=0, backend="cuml")
    seconds = time.perf_counter() - started
    log(f"UMAP (cuML): {sizes.umap_cells:,} cells in {seconds:.1f} s")
    return {"cells": sizes.umap_cells, "seconds": seconds}


def run_check(sizes: Sizes, work: Path, device: torch.device, log: Log = print) -> dict:
    """Every section; each result carries its own ``section_s``."""
    sections: dict[str, Callable[[], dict]] = {
        "throughput": lambda: section_throughput(sizes, work, device, log),
        "end_to_end": lambda: section_end_to_end(sizes, work, device, log),
        "training": lambda: section_training(sizes, device, log),
        "umap": lambda: section_umap(sizes, log),
    }
    results = {}
    for name, run in sections.items():
        started = time.perf_counter()
        results[name] = run()
        results[name]["section_s"] = time.perf_counter() - started
        log(f"[{name}: {results[name]['section_s']:.0f} s]")
    return results


def _throughput_lines(table: pd.DataFrame) -> list[str]:
    lines = [
        "| network, crop | cells | batch | raw (cells/s) | CS-ARM-BN (cells/s) | adapted/raw |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.network} | {row.cells:,} | {row.batch_size} | {row.raw_cells_per_s:,.0f} "
            f"| {row.adapted_cells_per_s:,.0f} | {1 / row.ratio:.2f} |"
        )
    return lines


def render(results: dict, device: torch.device, smoke: bool) -> str:
    """The markdown section of docs/gpu.md."""
    total = sum(r["section_s"] for r in results.values())
    head = "CPU smoke run (tiny sizes; not a measurement)" if smoke else "Measured"
    lines = [
        f"{head} by `benchmarks/gpu_check.py` on **{device_name(device)}**, torch "
        f"{torch.__version__}; {total:.0f} s in all (budget {BUDGET_S} s).",
        "",
        "## Throughput (bfloat16 autocast, channels-last on CUDA)",
        "",
        *_throughput_lines(results["throughput"]["table"]),
        "",
        "## End to end",
        "",
    ]
    e2e = results["end_to_end"]
    if "skipped" in e2e:
        lines.append(f"Skipped: {e2e['skipped']}.")
    else:
        lines.append(
            f"`run_plate` on a synthetic plate of {e2e['wells']} wells x 1 site, "
            f"{e2e['fields']} fields (segmentation, crops, CS-ARM-BN adaptation, prediction, "
            f"tables), {e2e['network']}: **{e2e['seconds']:.1f} s** "
            f"({e2e['seconds_per_field']:.2f} s per field, {e2e['cells']:,} cells, "
            f"{e2e['cells_per_s']:.0f} cells/s); generating the plate took "
            f"{e2e['generation_s']:.0f} s (not counted)."
        )
    train = results["training"]
    peak = f"{train['peak_gib']:.2f} GiB" if train["peak_gib"] is not None else "n/a (CPU)"
    lines += [
        "",
        "## Training",
        "",
        f"ResNet-50 (width {train['width']}), CS-ARM-BN plate episodes of {train['episode']}, "
        f"{train['crop']} px crops: **{train['steps_per_s']:.2f} steps/s** over "
        f"{train['steps']} steps; peak GPU memory (`torch.cuda.max_memory_allocated`) {peak}.",
        "",
        "## UMAP",
        "",
    ]
    umap = results["umap"]
    if "skipped" in umap:
        lines.append(f"Skipped: {umap['skipped']} (`umap_coordinates` uses umap-learn on the CPU).")
    else:
        lines.append(
            f"cuML's UMAP (`umap_coordinates(..., backend='cuml')`, 256 features, PCA to 50 "
            f"first): {umap['cells']:,} cells in **{umap['seconds']:.1f} s**."
        )
    lines += ["", "Seconds per section: " + ", ".join(
        f"{name} {r['section_s']:.0f} s" for name, r in results.items()
    ) + "."]  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the check and write its page; returns the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny sizes on the CPU (automatic without CUDA)"
    )
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/phenoadapt-gpu-check"))
    parser.add_argument(
        "--out", type=Path, help="page to write (default docs/gpu.md; smoke: WORK_DIR/gpu.md)"
    )
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke or not torch.cuda.is_available()
    device = torch.device("cpu" if smoke else "cuda")
    if smoke:
        torch.set_num_threads(1)
    sizes = SMOKE if smoke else FULL
    work = args.work_dir / ("smoke" if smoke else "full")
    started = time.perf_counter()
    results = run_check(sizes, work, device)
    total = time.perf_counter() - started
    out = args.out or (work / "gpu.md" if smoke else DOC)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(results, device, smoke)
    write_doc_section(out, text, START, END, title="GPU check")
    print(text)
    print(f"total {total:.0f} s{' (over the 8-minute budget)' if total > BUDGET_S else ''}")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
