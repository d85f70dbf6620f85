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

``--part crops`` measures what a plate's crops cost on their way from the
workers that cut them to the context tasks (the client gathers them, then
scatters each context's rows again): bytes and seconds per plate on the
2-worker cluster, beside the plate's segmentation and context tasks, and the
arithmetic for a real plate.

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
CROPS_START = "<!-- benchmark:scale_out_crops:start -->"
CROPS_END = "<!-- benchmark:scale_out_crops:end -->"
#: Cells per real field assumed for the arithmetic (a 20x Phenix field holds 100-300).
REAL_CELLS_PER_FIELD = 200
#: A cluster's network for the arithmetic: 10 Gb/s, in bytes per second.
LINK_BYTES_S = 1.25e9
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
    parser.add_argument("--part", choices=("segment", "predict", "crops", "all"), default="all",
                        help="what to time (default all)")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.plates, args.wells = 2, 4
    if args.part in ("segment", "all"):
        bench_segment(args)
    if args.part in ("predict", "all"):
        bench_predict(args)
    if args.part in ("crops", "all"):
        bench_crops(args)


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


def bench_crops(args: argparse.Namespace) -> None:
    """The crops round-trip table: per plate, gathered to the client, then scattered again."""
    import torch
    from distributed import Client

    from phenoadapt.pipeline import RunConfig
    from phenoadapt.pipeline.context_tasks import ClusterNetwork
    from phenoadapt.pipeline.run import load_models

    torch.set_num_threads(1)  # as each single-threaded worker
    config = RunConfig(device="cpu", min_controls=8)
    checkpoints = load_models(config)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        screen = make_screen(Path(tmp) / "screen", args.plates, args.wells)
        with _cluster() as cluster, Client(cluster) as client:
            network = ClusterNetwork(client, checkpoints, "cpu")
            _round_trip(client, network, checkpoints, config, *screen[0])  # workers warm up
            rows = [_round_trip(client, network, checkpoints, config, p, m) for p, m in screen]
            network.close()
            bandwidth = _bandwidth(client)
    meta = checkpoints[0].metadata
    text = crops_report(rows, meta.model_input.image_size(), len(meta.channel_names),
                        bandwidth, os.getloadavg()[0])  # fmt: skip
    print(text)
    if not args.quick:
        write_doc_section(DOC, text, CROPS_START, CROPS_END)
        print(f"wrote {DOC}")


def _round_trip(client, network, checkpoints, config, plate, platemap) -> dict[str, float]:
    """One plate: crops cut as tasks, gathered here, each context's rows scattered again.

    The steps of ``run_plates(..., scheduler=client)``, timed one by one: the
    crop tasks (kept on the workers until gathered), the gather, the
    concatenation into the plate's array, the scatter of the context inputs,
    and the context tasks themselves (which scatter their inputs once more).
    """
    import numpy as np
    import pandas as pd
    from distributed import wait

    from phenoadapt.adapt.methods import predict_plate
    from phenoadapt.cells.crops import CropStream, _crop_chunk
    from phenoadapt.pipeline.context_tasks import context_inputs
    from phenoadapt.pipeline.crops import attach_platemap, checkpoint_crop_params
    from phenoadapt.scale.tasks import chunk_items

    meta = checkpoints[0].metadata
    stream = CropStream(plate, crop=checkpoint_crop_params(meta.model_input, plate),
                        segmentation=meta.model_input.segmentation_or_default(),
                        platemap=platemap)  # fmt: skip
    chunks = chunk_items(stream.field_list(), sum(client.nthreads().values()))
    started = time.perf_counter()
    futures = [client.submit(_crop_chunk, stream, c, pure=False) for c in chunks]
    wait(futures)
    cut = time.perf_counter() - started
    started = time.perf_counter()
    outcomes = [o for chunk in client.gather(futures) for o in chunk if isinstance(o, tuple)]
    gather = time.perf_counter() - started
    started = time.perf_counter()
    images = np.concatenate([c for c, _ in outcomes])
    table = attach_platemap(pd.concat([r for _, r in outcomes], ignore_index=True), platemap)
    concat = time.perf_counter() - started
    client.cancel(futures)
    contexts = config.contexts().plan(table, config.method)
    inputs = [context_inputs(images, ctx)[0] for ctx in contexts]
    started = time.perf_counter()
    scattered = client.scatter(inputs, hash=False)
    wait(scattered)
    scatter = time.perf_counter() - started
    client.cancel(scattered)
    started = time.perf_counter()
    with torch_inference():
        predict_plate([k.model for k in checkpoints], images, table, meta.classes, config.method,
                      contexts=config.contexts(), runtime=config.runtime(),
                      input_size=meta.model_input.input_size,
                      runner=network.runner(plate.plate_id))  # fmt: skip
    tasks = time.perf_counter() - started
    return {
        "cells": len(table), "crop_bytes": images.nbytes,
        "context_bytes": sum(i.images.nbytes for i in inputs), "contexts": len(contexts),
        "cut": cut, "gather": gather, "concat": concat, "scatter": scatter, "tasks": tasks,
    }  # fmt: skip


def _bandwidth(client, megabytes: int = 256) -> float:
    """Bytes per second of one large scatter and gather between the client and a worker.

    A plate's crops are megabytes here, where each transfer's fixed cost
    dominates; a real plate's are gigabytes, moved at this rate.
    """
    import numpy as np
    from distributed import wait

    blob = np.ones(megabytes * 2**20, dtype=np.uint8)
    started = time.perf_counter()
    (future,) = client.scatter([blob], hash=False)
    wait([future])
    back = future.result()
    seconds = time.perf_counter() - started
    assert back.nbytes == blob.nbytes
    client.cancel([future])
    return 2 * blob.nbytes / seconds


def torch_inference():
    """``torch.inference_mode()``, as run_plates runs."""
    import torch

    return torch.inference_mode()


def crops_report(
    rows: list[dict[str, float]], size: int, channels: int, bandwidth: float, load: float
) -> str:
    """The markdown section of the crops round-trip measurement, and a real plate's arithmetic."""
    lines = [
        f"Measured by `python benchmarks/bench_scale_out.py --part crops` on {platform.machine()} "
        f"with {os.cpu_count()} CPU cores shared with other jobs (load average {load:.1f} at the "
        f"end), on the 2-worker LocalCluster above, with the demo classifier's crops ({channels} "
        f"channels x {size} x {size} float32) and CS-ARM-BN (one sampled context per plate): per "
        "plate, the crop tasks, the crops gathered to the client, joined into the plate's array, "
        "scattered again as the context's inputs, and the context tasks (their own scatter "
        "included).",
        "",
        "| plate | cells | crops (MB) | context inputs (MB) | crop tasks (s) | gather (s) | "
        "join (s) | scatter (s) | context tasks (s) | round trip / plate time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(rows, 1):
        trip = r["gather"] + r["concat"] + r["scatter"]
        total = r["cut"] + trip + r["tasks"]
        lines.append(
            f"| {i} | {r['cells']:,} | {r['crop_bytes'] / 1e6:.1f} | "
            f"{r['context_bytes'] / 1e6:.1f} | {r['cut']:.2f} | {r['gather']:.3f} | "
            f"{r['concat']:.3f} | {r['scatter']:.3f} | {r['tasks']:.2f} | {trip / total:.1%} |"
        )  # fmt: skip
    per_cell = channels * size * size * 4
    real_cells = REAL_FIELDS_PER_PLATE * REAL_CELLS_PER_FIELD
    real_bytes = real_cells * per_cell
    lines += [
        "",
        "These plates' crops are a few MB, so each transfer's fixed cost dominates; one "
        f"256 MiB array went to a worker and back at {bandwidth / 1e6:,.0f} MB/s (loopback: "
        f"the client and the workers on one machine). A real plate of {REAL_FIELDS_PER_PLATE:,} "
        f"fields x about {REAL_CELLS_PER_FIELD} cells is {real_cells / 1e6:.2f} million cells, "
        f"{real_bytes / 1e9:.1f} GB of such crops ({per_cell / 1e3:.1f} kB a cell; the size "
        "grows with the square of the crop size): the round trip moves it twice, "
        f"{2 * real_bytes / LINK_BYTES_S:.0f} s on a 10 Gb/s link (at the loopback speed "
        f"measured here, {2 * real_bytes / bandwidth:.0f} s), against "
        "the plate's segmentation on the cluster (its 7.5 CPU-s fields on 200 cores: "
        f"{REAL_FIELDS_PER_PLATE * 7.5 / 200:.0f} s).",
    ]
    return "\n".join(lines)


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
