"""A classifier trained on whole fields (site unit): accuracy against chance, and its cost.

Makes synthetic plates with the demo's layout (48 wells, 8 DMSO controls, 3
MoAs) and ``--sites`` fields per well: ``--train`` plates of the training lab
to train on, then one more training-lab plate and one plate of the demo's new
lab (brighter DNA/Mito, dimmer ER/AGP, blur, 10 % magnification) to test.
Trains a small ResNet-10 on field tiles (``TrainRunConfig(unit="site")``) with
CS-ARM-BN episodes, predicts the test plates per field with ERM (training
statistics) and CS-ARM-BN, and prints / writes accuracy per field and per well
next to chance (the share of the most frequent MoA among treated wells; the
demo layout has 8 MoAs, 5 wells each).

Usage::

    python benchmarks/bench_site_unit.py [--folder /tmp/site_bench] [--tile-size 64]
        [--epochs 20] [--quick] [--out docs/site_unit_benchmark.md]

With ``--out`` the figures go into the page's ``bench:site`` section (with
:func:`_common.write_doc_section`: the notes around it, and the ``--labs``
section, are hand-written or another run's and kept; a missing page is
created).  ``--quick``: one training plate, one site per well, 2 epochs.

``--labs`` (issue 15.5) instead takes the whole fields of the plates of
``bench_domain_shift.py`` (same labs, batches and splits as the crop benchmarks),
resized to ``--tile-size`` with the official per-image percentile input, trains
ERM and CS-ARM-BN networks on them (``bench_protocol.py``'s training, cached in
``--cache-dir``) and evaluates them in the three domains and under label shift
with the official sampler and ours; it writes its section of
docs/site_unit_benchmark.md::

    python benchmarks/bench_site_unit.py --labs [--seeds 0 1] [--quick]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

from phenoadapt import schema
from phenoadapt.cells.table import well_metadata
from phenoadapt.demo import DEMO_CONFIG, NEW_LAB, TRAIN_LAB, batch_effects, lab_effects
from phenoadapt.pipeline import RunConfig, TrainRunConfig, run_methods, train_plates
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.synthetic import generate_plate

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
SITE_START, SITE_END = "<!-- bench:site:start -->", "<!-- bench:site:end -->"
LABS_START, LABS_END = "<!-- bench:labs:start -->", "<!-- bench:labs:end -->"
TITLE = "Site-unit classifier benchmark"
WELL_COLUMNS = (
    schema.PLATE,
    schema.WELL,
    schema.TREATMENT,
    schema.MOA,
    schema.CONCENTRATION,
    schema.ROLE,
    schema.LAB,
    schema.BATCH,
)


def make_plate(folder: Path, plate_id: str, lab: str, seed: int, sites: int):
    """A demo-layout plate of one lab (reused when already on disk)."""
    path = folder / plate_id
    if not path.exists():
        generate_plate(
            folder,
            replace(DEMO_CONFIG, sites=sites),
            seed=seed,
            plate_id=plate_id,
            lab_id=lab,
            batch_id=f"{lab}_{seed}",
            lab=lab_effects(lab),
            batch=batch_effects(seed + 100),
            workers=1,
        )
    plate = open_plate(path)
    return plate, read_platemap(path / "platemap.csv", plate_id=plate_id)


def chance(platemap, wells) -> float:
    """Share of the most frequent MoA among treated wells: the best constant guess."""
    rows = [well_metadata(platemap, w) for w in wells]
    moas = [r[schema.MOA] for r in rows if str(r[schema.ROLE]).lower() == "treated"]
    return max(moas.count(m) for m in set(moas)) / len(moas)


def field_data(work: Path, size: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Every field of the cached domain-shift plates as a ``size`` tile, with its well's rows.

    Cached next to the crops (``fields_<size>.npy`` and ``.csv``).
    """
    from phenoadapt.pipeline.tiles import field_tiles

    images_path, table_path = work / f"fields_{size}.npy", work / f"fields_{size}.csv"
    if images_path.exists() and table_path.exists():
        return np.load(images_path), pd.read_csv(table_path)
    cells = pd.read_csv(work / "cells.csv")
    wells = cells.drop_duplicates([schema.PLATE, schema.WELL])[list(WELL_COLUMNS)]
    tiles, tables = [], []
    for folder in sorted((work / "plates").iterdir()):
        plate = open_plate(folder)
        images, table = field_tiles(plate, plate.channel_index(list(CHANNELS)), size)
        tiles.append(images)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True).merge(
        wells, on=[schema.PLATE, schema.WELL], how="left", validate="many_to_one"
    )
    keep = table[schema.ROLE].notna().to_numpy()  # wells without a cell have no row
    images = np.concatenate(tiles)[keep]
    table = table[keep].reset_index(drop=True)
    np.save(images_path, images)
    table.to_csv(table_path, index=False)
    return images, table


def main_labs(args: argparse.Namespace) -> None:
    """``--labs``: the whole-field unit on the domain-shift labs, with label shift."""
    import bench_protocol as bp
    from bench_domain_shift import make_splits

    work = args.work_dir / ("quick" if args.quick else "full")
    started = time.perf_counter()
    tiles, table = field_data(work, args.tile_size)
    splits = make_splits(tiles, table, 0.25, None)
    t_data = time.perf_counter() - started
    budget = bp.Budget(
        width=args.width,
        max_epochs=3 if args.quick else args.epochs,
        patience=6,
        steps_per_epoch=None,
        treated=64,
        controls=128,
    )
    evals = bp.EvalSettings(
        alphas=(0.01, 1.0, 10.0),
        treated_sweep=(16, 64),
        ours_alphas=(0.01, 10.0),
        ours_treated_sweep=(64,),
        max_test_treated=None,
        shift_norms=("image",),
    )
    cache = args.cache_dir / f"sites{args.tile_size}" / ("quick" if args.quick else "full")
    cache.mkdir(parents=True, exist_ok=True)
    runs = [(m, "image", s) for m in ("erm", "cs-arm-bn") for s in args.seeds]
    started = time.perf_counter()
    for method, norm, seed in runs:
        bp.train_network(splits, budget, method, norm, seed, cache)
    tables = bp.gather(cache, budget, splits, evals, runs, evaluate=True)
    seconds = time.perf_counter() - started
    fields = table.groupby(schema.ROLE).size().to_dict()
    lines = [
        f"Measured by `benchmarks/bench_site_unit.py --labs`: the whole fields (256 x 256 px, "
        f"one per well) of the 11 plates of [domain-shift.md](domain-shift.md), resized to "
        f"{args.tile_size} x {args.tile_size} ({256 // args.tile_size}x down; the paper: 2x, "
        "then a random 256 crop), per-image 99.99th-percentile input as the official code, "
        f"{fields.get('treated', 0)} treated and {fields.get('control', 0)} control fields in "
        f"all; ResNet-10 width {args.width}, full passes over the treated fields, up to "
        f"{budget.max_epochs} epochs, patience {budget.patience}; seeds {list(args.seeds)}; "
        f"{t_data:.0f} s to tile, {seconds / 60:.1f} min to train and evaluate (1 thread, "
        "shared CPU). Mean ± sd (ddof=1) over seeds.",
        "",
        *bp.training_table(tables["training"]),
        "",
        *bp.matched_table(tables["domains"], "image"),
        "",
        "Per well is the same number here (one field per well). Label shift on the six "
        "held-out plates (80 treated fields per plate, about 10 per MoA, so the official caps "
        "bind: a context asking for 64 fields of one MoA gets about 10, plus 128 controls "
        "drawn with replacement from the plate's 16):",
        "",
        *bp.shift_table(tables["label_shift"], "image", "alpha", evals.alphas, {"treated": 64}),
        "",
        "Mean treated fields actually in a context:",
        "",
        *bp.context_sizes(tables["label_shift"], evals.treated_sweep, evals.sweep_alpha),
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        write_doc_section(ROOT_DOC, text, LABS_START, LABS_END)
        print(f"wrote {ROOT_DOC}")


ROOT_DOC = Path(__file__).resolve().parents[1] / "docs" / "site_unit_benchmark.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/phenoadapt_site_bench"))
    parser.add_argument("--train", type=int, default=3, help="training plates")
    parser.add_argument("--sites", type=int, default=4, help="fields per well")
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="markdown file for the figures")
    parser.add_argument(
        "--labs",
        action="store_true",
        help="whole fields of the domain-shift labs, with label shift (issue 15.5)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="1 training plate, 1 site, 2 epochs; with --labs: the quick plates",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/phenoadapt-bench-domain-shift"))
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "phenoadapt" / "bench-protocol"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.labs:
        main_labs(args)
        return
    if args.quick:
        args.train, args.sites, args.epochs = 1, 1, 2
    folder = args.folder / ("quick" if args.quick else "plates")  # quick plates are smaller

    t0 = time.perf_counter()
    train = [
        make_plate(folder, f"train{i}", TRAIN_LAB, 10 + i, args.sites) for i in range(args.train)
    ]
    tests = [
        make_plate(folder, "test_training_lab", TRAIN_LAB, 50, args.sites),
        make_plate(folder, "test_new_lab", NEW_LAB, 51, args.sites),
    ]
    t_plates = time.perf_counter() - t0

    ckpt = args.folder / f"site_model_{args.tile_size}.safetensors"
    config = TrainRunConfig(
        unit="site",
        tile_size=args.tile_size,
        width=args.width,
        max_epochs=args.epochs,
        patience=args.epochs,
        device="cpu",
        seed=0,
        overwrite=True,
    )
    t0 = time.perf_counter()
    trained = train_plates([p for p, _ in train], [m for _, m in train], config, ckpt)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = run_methods(
        [p for p, _ in tests],
        [m for _, m in tests],
        ["erm", "cs-arm-bn"],
        RunConfig(checkpoint=ckpt, device="cpu", compare_unadapted=False),
    )
    t_predict = time.perf_counter() - t0

    lines = [
        f"Site-unit classifier: ResNet-10 width {args.width}, {args.tile_size} x "
        f"{args.tile_size} tiles of 256 x 256 fields, CS-ARM-BN episodes, {args.epochs} "
        f"epochs on {args.train} training-lab plates ({sum(trained.cells_per_plate.values())} "
        f"sites; 48 wells x {args.sites} sites each, 8 DMSO wells).",
        "",
        "| test plate | chance (wells) | method | field accuracy (n) | well accuracy (n) |",
        "|---|---|---|---|---|",
    ]
    by_id = {plate.plate_id: (plate, platemap) for plate, platemap in tests}
    for method, result in results.items():
        for row in result.accuracy.itertuples(index=False):
            plate, platemap = by_id[getattr(row, schema.PLATE)]
            lines.append(
                f"| {plate.plate_id} | {chance(platemap, plate.wells):.3f} | "
                f"{method} | {row.cell_accuracy:.3f} ({row.n_cells}) | "
                f"{row.well_accuracy:.3f} ({row.n_wells}) |"
            )
    lines += [
        "",
        f"Time (1 torch thread, shared CPU): plates {t_plates:.0f} s, training {t_train:.0f} s, "
        f"prediction of 2 plates with 2 methods {t_predict:.1f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        print(f"wrote {write_section(args.out, text)}")


def write_section(page: Path, text: str) -> Path:
    """Put the site-unit figures into the page's ``bench:site`` section (the rest is kept)."""
    return write_doc_section(page, text, SITE_START, SITE_END, title=TITLE)


if __name__ == "__main__":
    main()
