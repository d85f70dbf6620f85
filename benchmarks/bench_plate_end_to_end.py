"""End-to-end time of a synthetic 384-well x 9-site plate on this CPU, by stage (issue 14.5).

What it measures
----------------
A plate of 384 wells x 9 sites is 3,456 fields of 1080 x 1080 pixels and
5 channels; writing them all (40 GB) and processing them would take hours
here, so the benchmark measures ``--wells`` wells (default 48, all 9 sites:
432 fields) of the 384-well plate map and extrapolates each stage to the
whole plate by its own unit (fields for the image stages, cells for the
others).  The fields are synthetic (:func:`phenoadapt.plate.synthetic.render_field`,
nuclei ~40 px across, ~70 cells per field): ``--pool`` distinct fields are
rendered once and linked into every (well, site) position, so the plate costs
no disk while every field is still read, decoded, segmented and measured.

Stages, each timed on its own (wall seconds):

1. *segmentation + measurement*: :func:`phenoadapt.cells.segment_plate` on
   every core (read the planes, segment, measure shape / intensity / texture
   of 3 compartments x 5 channels); split between segmentation and
   measurement by their CPU seconds on the pool's fields in this process;
2. *crops*: :class:`phenoadapt.cells.CropStream` cuts 24 px crops (scale 0.5)
   at the table's centroids (reads the fields again);
3. *adaptation* and *prediction*: :func:`phenoadapt.adapt.predict_plate` of
   a ResNet-10 (width 16, random weights: speed does not depend on them) with
   CS-ARM-BN and the default context, against the same call with ERM (no
   adaptation): prediction = the ERM time, adaptation = the difference;
4. *tables*: the per-cell table (measurements + predictions) and the per-well
   profiles (medians) and summaries, written as CSV with
   :func:`phenoadapt.export.write_table`.

Usage::

    python benchmarks/bench_plate_end_to_end.py            # 48 wells; writes docs/throughput.md
    python benchmarks/bench_plate_end_to_end.py --wells 4 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch

from phenoadapt import schema
from phenoadapt.adapt import predict_plate
from phenoadapt.cells import CropParams, CropStream, aggregate_profiles, segment_plate
from phenoadapt.cells.measure import measure_cells
from phenoadapt.cells.process import default_workers
from phenoadapt.cells.segment import segment_field
from phenoadapt.export import write_table
from phenoadapt.nn import ResNetConfig, build_resnet, fit_normalization
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.channel_map import format_channel_map
from phenoadapt.plate.channels import make_channels
from phenoadapt.plate.platemap import PlateMap, write_platemap
from phenoadapt.plate.synthetic import MOAS, SyntheticPlateConfig, design_plate, render_field
from phenoadapt.plate.wells import PLATE_384

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "throughput.md"
START, END = "<!-- plate-e2e:start -->", "<!-- plate-e2e:end -->"
SITES = 9
FULL_FIELDS = len(PLATE_384.wells()) * SITES
CHANNELS = make_channels(["1", "2", "3", "4", "5"], ["DNA", "ER", "RNA", "AGP", "Mito"])
#: 1080 x 1080 fields at a 20x-like scale: nuclei ~40 px across (the default
#: SegmentationParams), ~70 cells per field (the real Phenix field has 38).
FIELD = SyntheticPlateConfig(
    n_wells=384, field_shape=(1080, 1080), nucleus_radius=20, cell_radius=50, cell_density=6e-5
)
CROP = CropParams(size=24, scale=0.5)


def build_plate(folder: Path, n_wells: int, pool: int, seed: int = 0) -> Path:
    """A Phenix-layout folder of ``n_wells`` wells x 9 sites linking ``pool`` rendered fields.

    The wells are the first ``n_wells`` of the 384-well plate map in a
    shuffled order that keeps its share of control wells.
    """
    platemap, _ = design_plate(FIELD, np.random.default_rng(seed))
    platemap = _subset(platemap, n_wells, seed)
    store = folder / "pool"
    store.mkdir(parents=True, exist_ok=True)
    for i in range(pool):
        moa = ("DMSO", *MOAS)[i % (len(MOAS) + 1)]
        planes = render_field(FIELD, moa=moa, seed=seed + i).image
        for c, plane in enumerate(planes, start=1):
            tifffile.imwrite(store / f"{i}-ch{c}.tiff", plane)
    plate_dir = folder / "E2E384"
    plate_dir.mkdir(exist_ok=True)
    k = 0
    for well in platemap[schema.WELL]:
        row, col = ord(well[0]) - 64, int(well[1:])
        for site in range(1, SITES + 1):
            for c in range(1, 6):
                name = f"r{row:02d}c{col:02d}f{site:02d}p01-ch{c}sk1fk1fl1.tiff"
                os.symlink(store / f"{k % pool}-ch{c}.tiff", plate_dir / name)
            k += 1
    write_platemap(
        PlateMap(platemap, plate_format=384, plate_id="E2E384"), plate_dir / "platemap.csv"
    )
    (plate_dir / "phenoadapt-channels.csv").write_text(
        format_channel_map(CHANNELS), encoding="utf-8"
    )
    return plate_dir


def _subset(platemap: pd.DataFrame, n_wells: int, seed: int) -> pd.DataFrame:
    """``n_wells`` wells of the plate map with its share of controls (at least two)."""
    rng = np.random.default_rng(seed)
    controls = platemap[platemap[schema.ROLE] == "control"]
    treated = platemap[platemap[schema.ROLE] != "control"]
    if n_wells < 3:
        raise SystemExit("--wells must be at least 3 (two control wells and a treated one).")
    n_controls = min(max(2, round(n_wells * len(controls) / len(platemap))), n_wells - 1)
    picked = pd.concat(
        [
            controls.iloc[rng.permutation(len(controls))[:n_controls]],
            treated.iloc[rng.permutation(len(treated))[: n_wells - n_controls]],
        ]
    )
    order = [PLATE_384.wells().index(w) for w in picked[schema.WELL]]
    return picked.iloc[np.argsort(order)].reset_index(drop=True)


def cpu_split(plate_dir: Path, pool: int) -> tuple[float, float]:
    """CPU seconds per field of segmentation and of measurement, on the pool's fields."""
    plate = open_plate(plate_dir)
    segment = measure = 0.0
    fields = list(plate.fields())[:pool]
    for well, site in fields:
        image = plate.read_field(well, site)
        start = time.process_time()
        seg = segment_field(image, plate.channels)
        middle = time.process_time()
        measure_cells(image, plate.channels, seg)
        segment += middle - start
        measure += time.process_time() - middle
    return segment / len(fields), measure / len(fields)


class Stage:
    """Wall and CPU seconds (this process, all its threads) of a ``with`` block."""

    def __enter__(self) -> Stage:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run(plate_dir: Path, pool: int, log=print) -> dict:
    """Time every stage on the plate folder; returns ``{stage: (wall s, CPU s)}`` and counts."""
    plate = open_plate(plate_dir)
    platemap = read_platemap(plate_dir / "platemap.csv")
    n_fields = len(list(plate.fields()))
    workers = default_workers()
    out: dict = {"fields": n_fields, "workers": workers, "threads": torch.get_num_threads()}

    with Stage() as pooled:
        result = segment_plate(plate, platemap=platemap, workers=workers)
    if result.failures:
        raise SystemExit(f"benchmark fields failed: {result.failures[0]}")
    cells = result.cells
    out["cells"] = len(cells)
    log(f"segmentation + measurement: {pooled.wall:.1f} s, {len(cells)} cells")
    cpu_segment, cpu_measure = cpu_split(plate_dir, pool)
    share = cpu_segment / (cpu_segment + cpu_measure)
    # The workers' CPU time is not this process's: each field's, measured here, times the fields.
    out["segmentation"] = (pooled.wall * share, cpu_segment * n_fields)
    out["measurement"] = (pooled.wall * (1 - share), cpu_measure * n_fields)
    out["cpu_per_field"] = (cpu_segment, cpu_measure)

    with Stage() as cropping:
        stream = CropStream(plate, crop=CROP, cells=cells, platemap=platemap, batch_size=4096)
        batches = list(stream)
    out["crops"] = (cropping.wall, cropping.cpu)
    crops = np.concatenate([b.crops for b in batches]).astype(np.float32)
    table = pd.concat([b.cells for b in batches], ignore_index=True)
    log(f"crops: {cropping.wall:.1f} s, {len(crops)} crops")

    classes = tuple(sorted(table.loc[table[schema.ROLE] == "treated", schema.MOA].unique()))
    config = ResNetConfig(
        "resnet10", 5, len(classes), width=16, stem="small",
        normalization=fit_normalization(crops[:4096]),
    )  # fmt: skip
    model = build_resnet(config, seed=0)
    predict_plate(model, crops[:512], table.iloc[:512], classes, method="erm", device="cpu")
    timed = {}
    for method in ("erm", "cs-arm-bn"):
        with Stage() as predicting:
            predictions = predict_plate(model, crops, table, classes, method=method, device="cpu")
        timed[method] = predicting
        log(f"predict_plate {method}: {predicting.wall:.1f} s")
    erm, adapted = timed["erm"], timed["cs-arm-bn"]
    out["prediction"] = (erm.wall, erm.cpu)
    out["adaptation"] = (max(adapted.wall - erm.wall, 0.0), max(adapted.cpu - erm.cpu, 0.0))

    with tempfile.TemporaryDirectory() as tmp, Stage() as writing:
        per_cell = cells.merge(
            predictions.cells, on=[schema.PLATE, schema.WELL, schema.SITE, schema.CELL_ID],
            how="left", suffixes=("", "_prediction"),
        )  # fmt: skip
        write_table(per_cell, Path(tmp) / "cells.csv.gz")
        write_table(aggregate_profiles(cells, "well"), Path(tmp) / "profiles.csv")
        write_table(predictions.wells, Path(tmp) / "wells.csv")
        out["table_mb"] = (Path(tmp) / "cells.csv.gz").stat().st_size / 1e6
    out["tables"] = (writing.wall, writing.cpu)
    log(f"tables: {writing.wall:.1f} s")
    return out


STAGES = {
    "segmentation": "segmentation",
    "measurement": "measurement (shape, intensity, texture)",
    "crops": "crops (read again, cut 24 px)",
    "adaptation": "adaptation (CS-ARM-BN statistics)",
    "prediction": "prediction (ResNet-10 forward)",
    "tables": "tables (per cell, per well, CSV)",
}


def idle_seconds(out: dict, stage: str) -> float:
    """Seconds the stage would take on idle cores: CPU time over the cores it can use."""
    cpu = out[stage][1]
    if stage in ("segmentation", "measurement"):
        return cpu / out["workers"]  # one process per core
    if stage in ("adaptation", "prediction"):
        return cpu / out["threads"]  # torch's threads
    return cpu  # one thread


def render(out: dict, load: float) -> list[str]:
    """The measured section of docs/throughput.md."""
    fields, cells = out["fields"], out["cells"]
    scale = FULL_FIELDS / fields  # cells scale with fields at a constant density
    idle = {stage: idle_seconds(out, stage) for stage in STAGES}
    wall_total = sum(out[s][0] for s in STAGES)
    idle_total = sum(idle.values())
    rows = [
        "| stage | wall s (measured) | CPU s | share (CPU) | whole plate on idle cores "
        "(extrapolated) |",
        "|---|---|---|---|---|",
    ]
    cpu_total = sum(out[s][1] for s in STAGES)
    for stage, name in STAGES.items():
        wall, cpu = out[stage]
        rows.append(
            f"| {name} | {wall:.1f} | {cpu:.1f} | {cpu / cpu_total:.0%} "
            f"| {idle[stage] * scale / 60:.1f} min |"
        )
    rows.append(
        f"| **total** | **{wall_total:.1f}** | **{cpu_total:.1f}** | 100% "
        f"| **{idle_total * scale / 60:.1f} min** |"
    )
    seg, meas = out["cpu_per_field"]
    return [
        f"Measured with `python benchmarks/bench_plate_end_to_end.py --wells "
        f"{fields // SITES}` on {platform.machine()} with {out['workers']} cores, torch "
        f"{torch.__version__} ({out['threads']} threads); load average {load:.1f} when it "
        "finished: other jobs shared the cores, so the wall seconds are pessimistic and the "
        "CPU seconds are the stable figure.",
        "",
        f"**{fields // SITES} wells x {SITES} sites = {fields} fields measured** of the "
        f"{FULL_FIELDS} of a 384-well x 9-site plate ({cells:,} cells, {cells / fields:.0f} "
        f"per field). The last column extrapolates each stage to {FULL_FIELDS} fields "
        f"(~{cells * scale:,.0f} cells) on idle cores: its CPU seconds x {scale:.1f}, over "
        f"{out['workers']} processes for segmentation and measurement, over torch's "
        f"{out['threads']} threads for adaptation and prediction, one thread otherwise "
        f"(this run's wall time, scaled the same way, is {wall_total * scale / 60:.0f} min):",
        "",
        *rows,
        "",
        f"Segmentation and measurement ran together on {out['workers']} processes "
        f"({out['segmentation'][0] + out['measurement'][0]:.1f} s wall); their CPU seconds are "
        f"those of the same fields in one process ({seg:.2f} s segmentation + {meas:.2f} s "
        f"measurement per field) times the fields, and the wall time is split in that "
        f"proportion. Adaptation is the CS-ARM-BN call minus the ERM call (same cells, same "
        f"network). The per-cell table of the measured fields is {out['table_mb']:.0f} MB "
        "gzipped.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wells", type=int, default=48, help="wells measured (x 9 sites)")
    parser.add_argument("--pool", type=int, default=12, help="distinct rendered fields")
    parser.add_argument("--threads", type=int, default=default_workers(), help="torch threads")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        plate_dir = build_plate(Path(tmp), args.wells, args.pool)
        print(f"plate of {args.wells} wells x {SITES} sites built", flush=True)
        out = run(plate_dir, args.pool)
    text = "\n".join(render(out, os.getloadavg()[0]))
    print(text)
    print(f"benchmark took {time.perf_counter() - started:.0f} s")
    if not args.no_write:
        write_doc_section(DOC, text, START, END)
        print(f"written to {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
