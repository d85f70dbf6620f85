"""Train the shipped demo model: a small CS-ARM-BN ResNet-10 on synthetic plates of one lab.

Steps (all on CPU, seeded):

1. write ``--plates`` synthetic plates of the *training lab* (rows A-D of a
   96-well plate, 2 fields per well, 5 channels), each from its own batch;
2. train with :func:`phenoadapt.pipeline.train_plates` on real segmentation
   crops (the last plate is held out for early stopping);
3. make the demo plates (:func:`phenoadapt.demo.make_demo_plates`: a new plate
   of the training lab and one of a *new lab*) and measure accuracy with ERM
   (training statistics) and CS-ARM-BN through :func:`phenoadapt.pipeline.run_methods`;
4. write ``src/phenoadapt/models/demo_cs_arm_bn.safetensors`` (metrics in its
   metadata) and ``demo_cs_arm_bn.json`` (the same metadata, readable).

Usage::

    python scripts/train_demo_model.py --overwrite          # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from phenoadapt.demo import (
    DEMO_CONFIG,
    DEMO_MODEL_FILE,
    DEMO_SEGMENTATION,
    TRAIN_LAB,
    batch_effects,
    lab_effects,
    make_demo_plates,
)
from phenoadapt.pipeline import RunConfig, TrainRunConfig, run_methods, train_plates
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.synthetic import generate_plate, is_synthetic_plate
from phenoadapt.train import load_checkpoint, save_checkpoint

MODELS = Path(__file__).resolve().parents[1] / "src" / "phenoadapt" / "models"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plates", type=int, default=3, help="training-lab plates (default 3)")
    parser.add_argument("--epochs", type=int, default=15, help="maximum epochs (default 15)")
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--width", type=int, default=8, help="ResNet first-stage width")
    parser.add_argument("--crop-size", type=int, default=24, help="crop side in pixels")
    parser.add_argument("--crop-scale", type=float, default=0.5, help="resampling before crop")
    parser.add_argument("--plates-per-step", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=8, help="optimizer steps per epoch")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--work", type=Path, help="folder for the plates (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=MODELS / DEMO_MODEL_FILE)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model")
    return parser.parse_args(argv)


def training_plates(folder: Path, n: int, seed: int) -> tuple[list, list]:
    """``n`` training-lab plates, each from its own batch; plates and plate maps."""
    plates, maps = [], []
    for i in range(n):
        existing = folder / f"train_plate{i + 1}"
        if is_synthetic_plate(existing) and (existing / "platemap.csv").is_file():
            # Same seed, same bytes: a rerun in the same --work folder reuses the plates.
            plates.append(open_plate(existing))
            maps.append(read_platemap(existing / "platemap.csv", plate_id=existing.name))
            print(f"  {existing.name}: reused", flush=True)
            continue
        plate = generate_plate(
            folder, DEMO_CONFIG, seed=1_000 + 10 * seed + i, plate_id=f"train_plate{i + 1}",
            lab_id=TRAIN_LAB, batch_id=f"{TRAIN_LAB}_batch{i + 1}", lab=lab_effects(TRAIN_LAB),
            batch=batch_effects(2_000 + 10 * seed + i), overwrite=True, workers=1,
        )  # fmt: skip
        plates.append(open_plate(plate.path))
        maps.append(read_platemap(plate.platemap_path, plate_id=plate.plate_id))
        print(f"  {plate.plate_id}: {plate.n_cells} cells", flush=True)
    return plates, maps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.out.exists() and not args.overwrite:
        print(f"{args.out} exists: pass --overwrite to replace it.", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="phenoadapt-demo-train-"))
    started = time.perf_counter()
    print(f"1. training-lab plates in {work}", flush=True)
    plates, maps = training_plates(work / "train", args.plates, args.seed)

    print("2. training CS-ARM-BN", flush=True)
    config = TrainRunConfig(
        method="cs-arm-bn", arch="resnet10", width=args.width, stem="small",
        crop_size=args.crop_size, crop_scale=args.crop_scale, input_size=None,
        max_epochs=args.epochs, patience=args.patience, plates_per_step=args.plates_per_step,
        max_steps_per_epoch=args.max_steps, lr=args.lr,
        validation_plates=[plates[-1].plate_id], segmentation=DEMO_SEGMENTATION,
        seed=args.seed, device="cpu", overwrite=True,
    )  # fmt: skip
    tmp_model = work / "model.safetensors"

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "epoch":
            print(f"   epoch {done}/{total} ({time.perf_counter() - started:.0f} s)", flush=True)

    trained = train_plates(plates, maps, config, tmp_model, progress=progress)
    for record in trained.result.history:
        print("   " + ", ".join(f"{k} {v:.3g}" for k, v in record.items()), flush=True)

    print("3. accuracy on the demo plates (segmented crops)", flush=True)
    demo = make_demo_plates(work / "demo", seed=0)
    demo_plates = [open_plate(p) for p in demo.plates]
    demo_maps = [read_platemap(m) for m in demo.platemaps]
    results = run_methods(
        demo_plates, demo_maps, ["erm", "cs-arm-bn"],
        RunConfig(checkpoint=tmp_model, device="cpu", compare_unadapted=False),
    )  # fmt: skip
    accuracy: dict[str, dict[str, float]] = {}
    for method, result in results.items():
        table = result.accuracy.set_index("Metadata_Plate")
        for plate_id, lab in ((demo.train_lab, "training_lab"), (demo.new_lab, "new_lab")):
            accuracy.setdefault(lab, {})[f"{method}_cell"] = round(
                float(table.loc[plate_id, "cell_accuracy"]), 4
            )
            accuracy[lab][f"{method}_well"] = round(float(table.loc[plate_id, "well_accuracy"]), 4)
    print(json.dumps(accuracy, indent=2), flush=True)

    print("4. writing the model", flush=True)
    ckpt = load_checkpoint(tmp_model)
    meta = ckpt.metadata
    meta.extra.update(
        {
            "demo": {
                "made_by": "scripts/train_demo_model.py",
                "seed": args.seed,
                "training_data": (
                    f"{args.plates} synthetic plates of the training lab (phenoadapt.demo), "
                    f"wells A01-D12, {DEMO_CONFIG.sites} fields of 256x256 per well; the last "
                    "plate held out for early stopping"
                ),
                "accuracy_demo_plates": accuracy,
                "accuracy_note": (
                    "accuracy on make_demo_plates(seed=0): a new plate of the training lab "
                    "and a plate of a new lab, segmented crops, test-time ERM (training "
                    "statistics) vs CS-ARM-BN (64 treated + 128 controls per context)"
                ),
                "train_seconds": round(time.perf_counter() - started, 1),
                "cells_per_plate": trained.cells_per_plate,
            }
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(args.out, ckpt.model, meta)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps(json.loads(meta.to_json()), indent=2, sort_keys=True) + "\n")
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.2f} MB) and {sidecar} in {time.perf_counter() - started:.0f} s")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
