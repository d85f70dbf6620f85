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
        [--epochs 20] [--out docs/site_unit_benchmark.md]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from phenoadapt import schema
from phenoadapt.cells.table import well_metadata
from phenoadapt.demo import DEMO_CONFIG, NEW_LAB, TRAIN_LAB, batch_effects, lab_effects
from phenoadapt.pipeline import RunConfig, TrainRunConfig, run_methods, train_plates
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.synthetic import generate_plate


def make_plate(folder: Path, plate_id: str, lab: str, seed: int, sites: int):
    """A demo-layout plate of one lab (reused when already on disk)."""
    path = folder / plate_id
    if not path.exists():
        generate_plate(
            folder, replace(DEMO_CONFIG, sites=sites), seed=seed, plate_id=plate_id, lab_id=lab,
            batch_id=f"{lab}_{seed}", lab=lab_effects(lab), batch=batch_effects(seed + 100),
            workers=1,
        )  # fmt: skip
    plate = open_plate(path)
    return plate, read_platemap(path / "platemap.csv", plate_id=plate_id)


def chance(platemap, wells) -> float:
    """Share of the most frequent MoA among treated wells: the best constant guess."""
    rows = [well_metadata(platemap, w) for w in wells]
    moas = [r[schema.MOA] for r in rows if str(r[schema.ROLE]).lower() == "treated"]
    return max(moas.count(m) for m in set(moas)) / len(moas)


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.folder / "plates"

    t0 = time.perf_counter()
    train = [make_plate(folder, f"train{i}", TRAIN_LAB, 10 + i, args.sites)
             for i in range(args.train)]  # fmt: skip
    tests = [make_plate(folder, "test_training_lab", TRAIN_LAB, 50, args.sites),
             make_plate(folder, "test_new_lab", NEW_LAB, 51, args.sites)]  # fmt: skip
    t_plates = time.perf_counter() - t0

    ckpt = args.folder / f"site_model_{args.tile_size}.safetensors"
    config = TrainRunConfig(
        unit="site", tile_size=args.tile_size, width=args.width, max_epochs=args.epochs,
        patience=args.epochs, device="cpu", seed=0, overwrite=True,
    )  # fmt: skip
    t0 = time.perf_counter()
    trained = train_plates([p for p, _ in train], [m for _, m in train], config, ckpt)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = run_methods(
        [p for p, _ in tests], [m for _, m in tests], ["erm", "cs-arm-bn"],
        RunConfig(checkpoint=ckpt, device="cpu", compare_unadapted=False),
    )  # fmt: skip
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
        args.out.write_text("# Site-unit classifier benchmark\n\n" + text + "\n")


if __name__ == "__main__":
    main()
