"""Throughput of adapted prediction against the plain forward pass; writes docs/throughput.md.

What it measures
----------------
On the crops of one synthetic 96-well plate (ground-truth cells, all wells):

- *raw forward*: ``model.eval()`` and the network applied batch by batch under
  ``torch.inference_mode()``, crops moved to the device per batch (bfloat16
  autocast and channels-last on CUDA, as the library does);
- *adapted*: :func:`phenoadapt.adapt.predict_plate` with ``method="cs-arm-bn"``
  and each plate context (``context=``): the paper's chunks (64 treated + 128
  controls per context), the whole plate, and a sampled plate context of 512
  cells.  Each context's exact batch-norm statistics are computed once, then
  its cells are predicted; everything from crops to the per-cell and per-well
  tables.

Both predict every cell of the plate (treated and controls), so cells/s is
comparable; the throughput ratio adapted / raw says what plate-context
adaptation costs (1 = free).  Networks: the ResNet-10 of
``bench_domain_shift.py`` at two crop sizes and the paper's ResNet-50 (width
64); two batch sizes each; then the ``--quick`` case, whose ratio is printed
last.  Weights are random (speed does not depend on them); the input
normalization is fitted on the crops.

Optionally (``phenoadapt.pipeline`` present) the end-to-end time per field of
:func:`phenoadapt.pipeline.run_plate`: read, segment, crop, adapt and predict.

Run ``python benchmarks/bench_throughput.py [--device cpu|cuda|auto]``;
``--quick`` measures one small case and writes nothing to ``docs/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from phenoadapt import schema
from phenoadapt.adapt import DEFAULT_CONTEXT, ContextSpec, Runtime, predict_plate
from phenoadapt.nn import ResNetConfig, build_resnet, fit_normalization, select_device
from phenoadapt.nn.runtime import autocast, to_device, use_amp, use_channels_last

try:  # run as a script: benchmarks/ is on sys.path
    from _common import timed, write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import timed, write_doc_section

try:  # run as a script (benchmarks/ on sys.path) or imported by the tests
    from _synthetic_data import DataSettings, crop_plates, design, generate_plates, plate_folder
except ImportError:  # pragma: no cover
    from benchmarks._synthetic_data import (
        DataSettings,
        crop_plates,
        design,
        generate_plates,
        plate_folder,
    )

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "throughput.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
#: Plate contexts measured: (choice, context_size); the first of the default choice is "adapted".
CONTEXTS = (("chunks", None), ("plate", None), ("sample", 512))
CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Case:
    """One network at one crop size."""

    arch: str
    width: int
    stem: str
    crop_size: int
    crop_scale: float
    max_cells: int | None = None  # subsample slow networks on CPU
    tile: int = 1  # repeat the plate's cells: a plate of realistic size (~100k cells)
    default_only: bool = False  # measure only the default context (the others are slow)

    @property
    def name(self) -> str:
        """Label used in tables."""
        name = f"{self.arch} w{self.width} ({self.stem} stem), {self.crop_size} px"
        return f"{name}, plate x{self.tile}" if self.tile > 1 else name


FULL_CASES = (
    Case("resnet10", 16, "small", 24, 0.5),
    Case("resnet10", 16, "small", 48, 1.0, max_cells=1000),
    # 1,000 cells, as for the 48 px ResNet-10: a plate smaller than the 512-cell sample
    # (200 cells until Dec 2026) sends every cell through the statistics pass, which
    # no real plate does.
    Case("resnet50", 64, "imagenet", 48, 1.0, max_cells=1000),
)
QUICK_CASES = (Case("resnet10", 8, "small", 24, 0.5),)
#: A 384-well plate holds ~100k cells: the 96-well plate's 3,466 cells repeated 29 times
#: (100,514 cells), with the quick case's network, the cheapest, where overhead shows most.
REALISTIC_CASES = (Case("resnet10", 8, "small", 24, 0.5, tile=29, default_only=True),)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Seconds(NamedTuple):
    """Wall seconds of a run and the CPU seconds of the thread that ran it.

    With one torch thread every operation of a CPU run executes in the calling
    thread, so its CPU time is the work itself, without the time spent waiting
    for a core that other jobs hold: on a shared machine it is the figure that
    does not move with the load (on a GPU it is only the host's share).
    """

    wall: float
    cpu: float


def _clock() -> Seconds:
    return Seconds(time.perf_counter(), time.thread_time())


def _since(start: Seconds) -> Seconds:
    now = _clock()
    return Seconds(now.wall - start.wall, now.cpu - start.cpu)


def time_raw(
    model: torch.nn.Module, crops: np.ndarray, batch_size: int, device: torch.device
) -> Seconds:
    """Seconds of one eval-mode pass over all crops (transfer to the device included)."""
    amp, cl = use_amp(device), use_channels_last(device)
    model.eval()
    _sync(device)
    start = _clock()
    with torch.inference_mode():
        for i in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[i : i + batch_size], np.float32))
            with autocast(device, amp):
                out = model(to_device(x, device, cl))
            out.float().cpu()
    _sync(device)
    return _since(start)


def context_label(context: str | None, size: int | None) -> str:
    """How a context choice is named in tables (None: the library's default)."""
    context = context or DEFAULT_CONTEXT.value
    return f"{context} {size}" if context == "sample" and size else context


def time_adapted(
    model: torch.nn.Module,
    crops: np.ndarray,
    table: pd.DataFrame,
    classes: tuple[str, ...],
    batch_size: int,
    device: torch.device,
    context: str | None = None,
    context_size: int = 512,
) -> Seconds:
    """Seconds of ``predict_plate`` with CS-ARM-BN over the plate (statistics included)."""
    _sync(device)
    start = _clock()
    result = predict_plate(
        model,
        crops,
        table,
        classes,
        "cs-arm-bn",
        contexts=ContextSpec(context=context, context_size=context_size),
        runtime=Runtime(device=device, batch_size=batch_size),
    )
    _sync(device)
    elapsed = _since(start)
    if result.cells[schema.PREDICTION].isna().any():
        raise RuntimeError("predict_plate left cells without a prediction.")
    return elapsed


def best_of(fn: Callable[[], Seconds], repeats: int) -> Seconds:
    """Fastest of ``repeats`` runs after one warm-up run (timings on a shared machine vary).

    ``fn`` returns its own seconds (it synchronizes the device before stopping the clock);
    the least wall and the least CPU time are kept, each on its own.
    """
    return fastest(timed(fn, warmup=1, repeat=repeats).results)


def fastest(runs: Sequence[Seconds]) -> Seconds:
    """The least wall time and the least CPU time of ``runs``."""
    return Seconds(min(r.wall for r in runs), min(r.cpu for r in runs))


def measure_case(
    case: Case,
    crops: np.ndarray,
    table: pd.DataFrame,
    batch_sizes: tuple[int, ...],
    device: torch.device,
    repeats: int,
    seed: int = 0,
    contexts: tuple[tuple[str, int | None], ...] = CONTEXTS,
) -> list[dict]:
    """Cells/s of the raw forward and of CS-ARM-BN prediction, per batch size and context.

    One row per (batch size, context); ``ratio`` is the time ratio adapted / raw,
    ``throughput_ratio`` its inverse (adapted cells/s over raw cells/s).  Raw and
    adapted runs alternate, and the fastest of ``repeats`` is kept for each, so
    a load burst on a shared machine hits both alike.
    """
    if case.max_cells is not None and len(table) > case.max_cells:
        keep = np.sort(
            np.random.default_rng(seed).choice(len(table), case.max_cells, replace=False)
        )
        crops, table = crops[keep], table.iloc[keep].reset_index(drop=True)
    if case.tile > 1:
        crops = np.concatenate([crops] * case.tile)
        table = pd.concat([table] * case.tile, ignore_index=True)
    if case.default_only:
        contexts = tuple(c for c in contexts if context_label(*c) == context_label(None, 512))
    classes = tuple(sorted(table.loc[table[schema.ROLE] == "treated", schema.MOA].unique()))
    config = ResNetConfig(
        case.arch,
        crops.shape[1],
        len(classes),
        width=case.width,
        stem=case.stem,
        normalization=fit_normalization(crops),
    )
    model = build_resnet(config, seed=seed).to(device)
    if use_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    rows = []
    for batch_size in batch_sizes:
        raw_fn = lambda bs=batch_size: time_raw(model, crops, bs, device)  # noqa: E731
        adapted_fns = {
            context_label(c, n): (
                lambda bs=batch_size, c=c, n=n: time_adapted(
                    model, crops, table, classes, bs, device, c, n or 512
                )
            )
            for c, n in contexts
        }
        raw_fn(), [fn() for fn in adapted_fns.values()]  # warm-up
        raw_times, adapted_times = [], {k: [] for k in adapted_fns}
        for _ in range(repeats):
            raw_times.append(raw_fn())
            for label, fn in adapted_fns.items():
                adapted_times[label].append(fn())
        raw = fastest(raw_times)
        for label, times in adapted_times.items():
            adapted = fastest(times)
            rows.append(
                {
                    "network": case.name,
                    "cells": len(table),
                    "batch_size": batch_size,
                    "context": label,
                    "raw_cells_per_s": len(table) / raw.wall,
                    "adapted_cells_per_s": len(table) / adapted.wall,
                    "ratio": adapted.wall / raw.wall,
                    "throughput_ratio": raw.wall / adapted.wall,
                    # The same ratio from the CPU time of the running thread: what
                    # the load of other jobs does not change (CPU runs only).
                    "cpu_throughput_ratio": raw.cpu / adapted.cpu if adapted.cpu > 0 else np.nan,
                }
            )
    return rows


def end_to_end(
    work: Path, settings: DataSettings, case: Case, device: torch.device, wells: list[str]
) -> dict | None:
    """Seconds per field of ``phenoadapt.pipeline.run_plate`` (None when the module is absent)."""
    try:
        from phenoadapt.pipeline import RunConfig, run_plate
    except ImportError:
        return None
    from phenoadapt.cells import SegmentationParams
    from phenoadapt.plate import open_plate, read_platemap
    from phenoadapt.train import CheckpointMetadata, save_checkpoint

    folder = plate_folder(work, settings.plates[0].plate_id)
    plate = open_plate(folder)
    platemap = read_platemap(folder / "platemap.csv")
    sample, table = crop_plates(
        replace(settings, crop_size=case.crop_size, crop_scale=case.crop_scale), work / "plates"
    )
    classes = tuple(sorted(table.loc[table[schema.ROLE] == "treated", schema.MOA].unique()))
    config = ResNetConfig(
        case.arch,
        5,
        len(classes),
        width=case.width,
        stem=case.stem,
        normalization=fit_normalization(sample),
    )
    model = build_resnet(config, seed=0)
    checkpoint = work / f"e2e_{case.arch}_{case.crop_size}.safetensors"
    save_checkpoint(
        checkpoint,
        model,
        CheckpointMetadata(
            network=model.spec(),
            classes=classes,
            channel_names=CHANNELS,
            crop_size=case.crop_size,
            extra={"crop_scale": case.crop_scale},
        ),
    )
    run = RunConfig(
        checkpoint=str(checkpoint),
        device=str(device),
        wells=wells,
        segmentation=SegmentationParams(nucleus_diameter=16.0),
        min_controls=8,
        compare_unadapted=False,
        return_embeddings=False,
    )
    start = time.perf_counter()
    result = run_plate(plate, platemap, run)
    elapsed = time.perf_counter() - start
    n_fields = len(list(plate.fields(wells)))
    return {
        "network": case.name,
        "fields": n_fields,
        "cells": len(result.cells),
        "seconds_per_field": elapsed / n_fields,
        "cells_per_s": len(result.cells) / elapsed,
    }


def run_benchmark(
    work: Path,
    cases: tuple[Case, ...],
    batch_sizes: tuple[int, ...],
    device: torch.device,
    repeats: int,
    settings: DataSettings,
    e2e_wells: list[str] | None,
    log: Log = print,
) -> tuple[pd.DataFrame, dict | None]:
    """Generate the plate once, then measure every case; returns the table and the e2e row."""
    spec = settings.plates[0]
    if not (plate_folder(work, spec.plate_id) / "platemap.csv").exists():
        log(f"generating plate {spec.plate_id} in {work / 'plates'}")
        generate_plates(settings, work / "plates", workers=None, log=log)
    rows = []
    for case in cases:
        crop_settings = replace(settings, crop_size=case.crop_size, crop_scale=case.crop_scale)
        crops, table = crop_plates(crop_settings, work / "plates")
        sizes = (64,) if case in QUICK_CASES + REALISTIC_CASES else batch_sizes
        for row in measure_case(case, crops, table, sizes, device, repeats):
            log(
                f"{row['network']}, batch {row['batch_size']}, {row['context']}: raw "
                f"{row['raw_cells_per_s']:.0f} cells/s, CS-ARM-BN {row['adapted_cells_per_s']:.0f} "
                f"cells/s: throughput adapted / raw {row['throughput_ratio']:.2f} "
                f"(time x{row['ratio']:.2f})"
            )
            rows.append(row)
    e2e = None
    if e2e_wells:
        e2e = end_to_end(work, settings, cases[0], device, e2e_wells)
        log(
            f"end to end: {e2e}" if e2e else "phenoadapt.pipeline not available: end-to-end skipped"
        )
    return pd.DataFrame(rows), e2e


def table_rows(results: pd.DataFrame) -> list[str]:
    """Markdown table of the measured cases: one row per (case, batch), a column per context."""
    labels = list(dict.fromkeys(results["context"]))
    default = context_label(None, 512)
    rows = [
        "| network, crop | cells | batch | raw forward (cells/s) | "
        + " | ".join(f"CS-ARM-BN {label} (cells/s)" for label in labels)
        + f" | throughput adapted / raw, default ({default}) | same, from CPU time |",
        "|---" * (len(labels) + 6) + "|",
    ]
    for (network, batch), group in results.groupby(["network", "batch_size"], sort=False):
        by = group.set_index("context")
        mine = by.loc[default] if default in by.index else by.iloc[0]
        cells = [
            f"{by.loc[label, 'adapted_cells_per_s']:,.0f}" if label in by.index else "-"
            for label in labels
        ]
        measured = [label for label in labels if label in by.index]
        ratios = ", ".join(f"{label} {by.loc[label, 'throughput_ratio']:.2f}" for label in measured)
        rows.append(
            f"| {network} | {mine['cells']} | {batch} | {mine['raw_cells_per_s']:,.0f} | "
            + " | ".join(cells)
            + f" | **{mine['throughput_ratio']:.2f}** ({ratios}) | {_cpu_ratio(mine)} |"
        )
    return rows


def _cpu_ratio(row: pd.Series) -> str:
    value = row.get("cpu_throughput_ratio", np.nan)
    return "-" if pd.isna(value) else f"{value:.2f}"


def render_section(
    results: pd.DataFrame, e2e: dict | None, device: torch.device, threads: int
) -> str:
    """The measured part of docs/throughput.md (between the bench markers)."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    where = gpu or f"CPU ({platform.machine()}, {threads} torch thread(s))"
    lines = [
        f"Measured by `benchmarks/bench_throughput.py` on {where}, torch {torch.__version__}; "
        "raw and adapted runs alternate, fastest of 3 after a warm-up. When the page was written "
        f"the load average was {os.getloadavg()[0]:.0f} on {os.cpu_count()} cores: the "
        "benchmark shared the CPU with other jobs, so absolute numbers are pessimistic and "
        "scatter between runs; compare the ratios (raw and adapted measured side by side).",
        "",
        *table_rows(results),
        "",
        "Throughput ratio = adapted cells/s over raw cells/s (1 = adaptation is free; the "
        "goal is >= 0.9 for the default context); the last column is the same ratio from "
        "the CPU time of the thread that ran each pass (with one torch thread, the work "
        "itself: it does not include waiting for a core that other jobs hold, so it moves "
        "less with the load than wall time; '-' on a GPU). The `resnet10 w8` row is the `--quick` "
        "case's network on this plate (`--quick` itself uses a 24-well plate of 479 cells); "
        "`plate x29` repeats this plate's cells 29 times (100,514 cells, the size of a "
        "384-well plate), default context only.",
        "",
    ]
    if e2e is not None:
        lines += [
            "### End to end",
            "",
            f"`phenoadapt.pipeline.run_plate` (read the five planes, segment with the classical "
            f"segmenter, crop, CS-ARM-BN with the default context, predict) on {e2e['fields']} "
            f"fields of the plate with {e2e['network']}: **{e2e['seconds_per_field']:.2f} s per "
            f"field**, {e2e['cells_per_s']:.0f} cells/s ({e2e['cells']} cells), everything "
            "included (reading planes, segmentation, crops, statistics, prediction, tables).",
            "",
        ]
    return "\n".join(lines).rstrip("\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one small case; writes no docs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/phenoadapt-bench-throughput"))
    parser.add_argument("--no-end-to-end", action="store_true", help="skip pipeline.run_plate")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if args.quick:
        wells = tuple(f"{r}{c:02d}" for r in "AB" for c in range(1, 13))
        settings = DataSettings(plates=tuple(design({1: [1]})), wells=wells, field_size=192)
        cases, batch_sizes, repeats, work = QUICK_CASES, (64,), 3, args.work_dir / "quick"
        e2e_wells = None if args.no_end_to_end else ["A01", "A02"]
    else:
        settings = DataSettings(plates=tuple(design({1: [1]})))
        cases, batch_sizes, repeats = FULL_CASES + QUICK_CASES + REALISTIC_CASES, (64, 256), 3
        work = args.work_dir / "full"
        e2e_wells = (
            None if args.no_end_to_end else [f"{r}{c:02d}" for r in "AB" for c in range(1, 13)]
        )
    started = time.perf_counter()
    results, e2e = run_benchmark(work, cases, batch_sizes, device, repeats, settings, e2e_wells)
    print("\n".join(table_rows(results)))
    print(f"total {time.perf_counter() - started:.0f} s")
    if not args.quick:
        text = render_section(results, e2e, device, torch.get_num_threads())
        write_doc_section(DOC, text, START, END, title="Throughput of adapted prediction")
        print(f"wrote {DOC}")
    quick = results[
        (results["network"] == QUICK_CASES[0].name)
        & (results["context"] == context_label(None, 512))
    ].iloc[-1]
    print(
        f"quick case ({quick['network']}, batch {quick['batch_size']}, {quick['context']} "
        f"context): throughput adapted / raw {quick['throughput_ratio']:.2f} "
        f"(time ratio {quick['ratio']:.2f}; from CPU time {_cpu_ratio(quick)})"
        + ("; quick run: docs untouched" if args.quick else "")
    )


if __name__ == "__main__":
    main()
