"""Plates per hour of a synthetic screen: one process, the process pool, a 2-worker dask cluster.

What it measures
----------------
A screen of small synthetic plates (96-well format, ``--wells`` wells x 2
sites of 256 x 256 pixels, 5 channels) is segmented and measured plate after
plate with :func:`phenoadapt.cells.segment_plate`, exactly what
``phenoadapt segment --plates`` does per plate, in three ways:

- *one process*: ``workers=1``;
- *process pool*: ``workers=2``, the default path (``scheduler=None``);
- *dask LocalCluster*: ``scheduler=client`` of a cluster of 2 single-threaded
  worker processes, started once for the screen (its start-up is timed apart,
  as ``--scheduler local`` pays it once per command).

Every way must give the same per-cell tables (checked byte for byte).  It also
times one 1080 x 1080 field (the size of an Opera Phenix field) in one process,
which gives the arithmetic for a real 1,000-plate screen of 384 wells x 9 sites.

``--part predict`` times prediction with the shipped demo classifier
(:func:`phenoadapt.pipeline.run_plates`, CS-ARM-BN): the whole run (segment,
crop, adapt and predict) and the network part alone (each plate's contexts on
its gathered crops, :func:`phenoadapt.adapt.methods.predict_plate`), in this
process and with the contexts as tasks on the 2-worker cluster
(:mod:`phenoadapt.pipeline.context_tasks`), for the default sampled context
and the paper's chunks (many contexts per plate); the tables must be the same.
``min_controls`` is 8: the small plates have fewer than 32 control cells.

Run ``python benchmarks/bench_scale_out.py`` (writes its sections of
docs/scale-out.md); ``--quick`` measures a tiny screen and writes nothing.
The machine's other load shows in the numbers: the docs say on what it ran.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

from phenoadapt.cells import SegmentationParams, segment_plate
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.synthetic import SyntheticPlateConfig, generate_plate

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

DOC = Path(__file__).resolve().parents[1] / "docs" / "scale-out.md"
START, END = "<!-- benchmark:scale_out:start -->", "<!-- benchmark:scale_out:end -->"
PREDICT_START = "<!-- benchmark:scale_out_predict:start -->"
PREDICT_END = "<!-- benchmark:scale_out_predict:end -->"
SEGMENTATION = SegmentationParams(nucleus_diameter=16)
#: A real screen: 384 wells x 9 sites per plate, 1,000 plates.
REAL_FIELDS_PER_PLATE = 384 * 9
REAL_PLATES = 1000


def make_screen(folder: Path, n_plates: int, n_wells: int) -> list[tuple]:
    """``n_plates`` synthetic plates of ``n_wells`` wells x 2 sites; (plate, plate map) each."""
    wells = tuple(f"{r}{c:02d}" for r in "ABCDEFGH" for c in range(1, 13))[:n_wells]
    config = SyntheticPlateConfig(sites=2, field_shape=(256, 256), wells=wells)
    screen = []
    for i in range(n_plates):
        written = generate_plate(folder, config, seed=i, plate_id=f"screen{i + 1}", workers=1)
        plate = open_plate(written.path)
        screen.append((plate, read_platemap(written.platemap_path, plate_id=plate.plate_id)))
    return screen


def run_screen(screen: list[tuple], **how) -> tuple[float, list[str]]:
    """Seconds to segment every plate, and each plate's table as CSV text."""
    started = time.perf_counter()
    tables = [
        segment_plate(plate, segmentation=SEGMENTATION, platemap=platemap, **how).cells.to_csv()
        for plate, platemap in screen
    ]
    return time.perf_counter() - started, tables


def real_field_seconds(folder: Path, n_fields: int = 2) -> float:
    """CPU seconds per 1080 x 1080 field, segmented and measured in one process.

    CPU time, not wall-clock: it is what a field costs a core, whatever else
    the machine runs.
    """
    config = SyntheticPlateConfig(
        sites=1, field_shape=(1080, 1080), wells=tuple(f"A{c:02d}" for c in range(1, n_fields + 1))
    )
    written = generate_plate(folder, config, seed=0, plate_id="phenix_size", workers=1)
    plate = open_plate(written.path)
    started = time.process_time()
    segment_plate(plate, segmentation=SEGMENTATION, workers=1)
    return (time.process_time() - started) / n_fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plates", type=int, default=3, help="plates in the screen (default 3)")
    parser.add_argument("--wells", type=int, default=8, help="wells per plate (default 8)")
    parser.add_argument("--quick", action="store_true", help="2 plates of 4 wells; no docs")
    parser.add_argument("--part", choices=("segment", "predict", "all"), default="all",
                        help="what to time (default all)")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.plates, args.wells = 2, 4
    if args.part in ("segment", "all"):
        bench_segment(args)
    if args.part in ("predict", "all"):
        bench_predict(args)


def bench_segment(args: argparse.Namespace) -> None:
    """The segmentation table of docs/scale-out.md."""
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as tmp:
        screen = make_screen(Path(tmp) / "screen", args.plates, args.wells)
        n_fields = sum(p.n_fields for p, _ in screen)
        rows = []
        serial, reference = run_screen(screen, workers=1)
        rows.append(("one process (`workers=1`)", serial, 0.0))
        pool, tables = run_screen(screen, workers=2)
        assert tables == reference, "the process pool changed a table"
        rows.append(("process pool, 2 processes (default)", pool, 0.0))
        started = time.perf_counter()
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0", silence_logs=logging.ERROR) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            # Workers import phenoadapt on their first task: part of the start-up.
            run_screen(screen[:1], scheduler=client)
            startup = time.perf_counter() - started
            clustered, tables = run_screen(screen, scheduler=client)
        assert tables == reference, "the dask cluster changed a table"
        rows.append(("dask LocalCluster, 2 workers x 1 thread", clustered, startup))
        per_field = real_field_seconds(Path(tmp) / "real", 1 if args.quick else 2)
    text = report(rows, args.plates, n_fields, per_field, os.getloadavg()[0])
    print(text)
    if not args.quick:
        write_doc_section(DOC, text, START, END)
        print(f"wrote {DOC}")


def _cluster():
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                        dashboard_address=":0", silence_logs=logging.ERROR)  # fmt: skip


def bench_predict(args: argparse.Namespace) -> None:
    """The prediction table: contexts in this process, or as tasks on 2 workers."""
    import torch
    from distributed import Client

    from phenoadapt.pipeline import RunConfig, run_plates
    from phenoadapt.pipeline.context_tasks import ClusterNetwork
    from phenoadapt.pipeline.run import load_models
    from phenoadapt.pipeline.runner import plate_inputs

    torch.set_num_threads(1)  # as each single-threaded worker
    rows: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        screen = make_screen(Path(tmp) / "screen", args.plates, args.wells)
        plates, maps = [p for p, _ in screen], [m for _, m in screen]
        configs = {
            "sample (default)": RunConfig(device="cpu", min_controls=8),
            "chunks": RunConfig(device="cpu", context="chunks", min_controls=8),
        }
        checkpoints = load_models(configs["chunks"])
        meta = checkpoints[0].metadata
        with torch.inference_mode():
            crops = [plate_inputs(p, meta.model_input, platemap=m) for p, m in screen]
        n_cells = sum(len(c.table) for c in crops)
        started = time.perf_counter()
        with _cluster() as cluster, Client(cluster) as client:
            network = ClusterNetwork(client, checkpoints, "cpu")
            _contexts(crops[:1], checkpoints, configs["chunks"], network)  # workers warm up
            startup = time.perf_counter() - started
            for name, config in configs.items():
                here, want = _contexts(crops, checkpoints, config, None)
                there, got = _contexts(crops, checkpoints, config, network)
                assert got == want, f"contexts as tasks changed a table ({name})"
                rows += [(name, "contexts only: this process", here, 0.0),
                         (name, "contexts only: tasks on 2 workers", there, startup)]  # fmt: skip
            config = configs["sample (default)"]
            started = time.perf_counter()
            want = run_plates(plates, maps, config).cells.to_csv()
            here = time.perf_counter() - started
            started = time.perf_counter()
            got = run_plates(plates, maps, config, scheduler=client).cells.to_csv()
            there = time.perf_counter() - started
            assert got == want, "predict on the cluster changed a table"
            name = "sample (default)"
            rows += [(name, "whole predict run: one process", here, 0.0),
                     (name, "whole predict run: 2 workers", there, startup)]  # fmt: skip
            network.close()
    text = predict_report(rows, args.plates, n_cells, os.getloadavg()[0])
    print(text)
    if not args.quick:
        write_doc_section(DOC, text, PREDICT_START, PREDICT_END)
        print(f"wrote {DOC}")


def _contexts(crops, checkpoints, config, network) -> tuple[float, list[str]]:
    """Seconds to adapt and predict the plates' crops, and each plate's cell table."""
    import torch

    from phenoadapt.adapt.methods import predict_plate

    meta = checkpoints[0].metadata
    started = time.perf_counter()
    tables = []
    with torch.inference_mode():
        for c in crops:
            plate_id = str(c.table["Metadata_Plate"].iloc[0])
            out = predict_plate(
                [k.model for k in checkpoints], c.images, c.table, meta.classes, config.method,
                contexts=config.contexts(), runtime=config.runtime(),
                input_size=meta.model_input.input_size,
                runner=None if network is None else network.runner(plate_id),
            )  # fmt: skip
            tables.append(out.cells.to_csv())
    return time.perf_counter() - started, tables


def predict_report(rows: list[tuple], n_plates: int, n_cells: int, load: float) -> str:
    """The markdown section of the prediction benchmark."""
    lines = [
        f"Measured by `python benchmarks/bench_scale_out.py --part predict` on "
        f"{platform.machine()} with {os.cpu_count()} CPU cores shared with other jobs (load "
        f"average {load:.1f} at the end): a screen of {n_plates} synthetic plates made as above "
        f"({n_cells:,} cells), the shipped demo classifier, CS-ARM-BN, on the CPU, torch on "
        "one thread in this process and in each worker; contexts as tasks gave the same "
        "tables, byte for byte.",
        "",
        "| contexts | what is timed, where | seconds | cells/s | cluster start-up (s, once) |",
        "|---|---|---:|---:|---:|",
    ]
    for context, what, seconds, startup in rows:
        lines.append(
            f"| {context} | {what} | {seconds:.1f} | {n_cells / seconds:,.0f} | "
            + (f"{startup:.1f} |" if startup else "- |")
        )
    return "\n".join(lines)


def report(rows: list[tuple], n_plates: int, n_fields: int, per_field: float, load: float) -> str:
    """The markdown section: the table, then the arithmetic for a 1,000-plate screen."""
    lines = [
        f"Measured by `python benchmarks/bench_scale_out.py` on {platform.machine()} with "
        f"{os.cpu_count()} CPU cores shared with other jobs (load average {load:.1f} at the "
        "end, so the wall-clock numbers are slower than on an idle machine, and the "
        f"parallel ones most): a screen of {n_plates} synthetic plates, {n_fields // n_plates} "
        "fields each (256 x 256 px, 5 channels), segmented and measured plate after plate; "
        "every way wrote the same tables, byte for byte.",
        "",
        "| how | seconds | fields/s | plates/hour | cluster start-up (s, once) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds, startup in rows:
        lines.append(
            f"| {name} | {seconds:.1f} | {n_fields / seconds:.2f} | "
            f"{n_plates / seconds * 3600:.0f} | {startup:.1f} |" if startup else
            f"| {name} | {seconds:.1f} | {n_fields / seconds:.2f} | "
            f"{n_plates / seconds * 3600:.0f} | - |"
        )  # fmt: skip
    field_hours = REAL_PLATES * REAL_FIELDS_PER_PLATE * per_field / 3600
    lines += [
        "",
        f"One 1080 x 1080 field (an Opera Phenix field) costs {per_field:.1f} CPU seconds in one "
        f"process (classical segmentation, all measurements with texture). A real screen of "
        f"{REAL_PLATES:,} plates x {REAL_FIELDS_PER_PLATE:,} fields "
        f"(384 wells x 9 sites) is then {field_hours:,.0f} core-hours of segmentation: "
        f"{field_hours / 8 / 24:,.1f} days on one 8-core workstation, "
        f"{field_hours / 200:,.1f} hours on 200 worker cores "
        f"(e.g. 25 SLURM jobs of 8 cores), {field_hours / 1000:,.1f} hours on 1,000, "
        "plus reading the images from shared storage (0.08 s per real Phenix field from a "
        "local disk, see plate-readers.md), which the workers do in parallel too.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
