"""``phenoadapt train``: train an MoA classifier (ERM, ARM-BN, CS-ARM-BN; optionally ABRA).

Segments every plate, cuts a crop per cell (or, with ``--unit site``, resizes
every field whole to one tile), trains a ResNet with plate episodes
and writes one ``.safetensors`` checkpoint (never replacing an existing file
without ``--overwrite``).  Runs data-parallel under torchrun::

    torchrun --nproc_per_node=2 -m phenoadapt train --plate P1 P2 --platemap M1 M2 --out m
"""

from __future__ import annotations

import argparse
import sys

from ..adapt.methods import method_choices
from ..cells import SegmentationParams
from ..model_input import UNITS
from ..nn.normalize import INPUT_SCALINGS
from ..nn.resnet import ARCHITECTURES
from ..pipeline.training import TrainRunConfig, checkpoint_target
from ..train.abra import AbraConfig
from .cells import parse_wells
from .open_args import add_open_options
from .predict import (
    add_threads_option,
    open_inputs,
    torch_threads,
    warnings_to_stderr,
)
from .progress import progress_bar
from .segmentation_args import add_channel_arguments, channel_params

DEFAULTS = TrainRunConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train an MoA classifier on plates with plate maps (ERM, ARM-BN, CS-ARM-BN, ABRA)",
        description=(
            "Train a ResNet to predict each cell's mechanism of action from plates and their "
            "plate maps. CS-ARM-BN (default) trains on plate episodes of 64 treated + 128 "
            "control cells so that at test time the network can normalize with a new plate's "
            "own cells. Works under torchrun (one process per GPU, or gloo on CPU)."
        ),
    )
    parser.add_argument("--plate", nargs="+", required=True, metavar="DIR", help="plate folders")
    parser.add_argument(
        "--platemap", nargs="+", required=True, metavar="CSV", help="plate map per plate"
    )
    add_open_options(parser, many=True)
    parser.add_argument("--out", required=True, metavar="PATH", help="checkpoint (.safetensors)")
    parser.add_argument(
        "--method", choices=method_choices(trainable=True), default=DEFAULTS.method,
        help="default: %(default)s",
    )  # fmt: skip
    parser.add_argument(
        "--unit", choices=UNITS, default=DEFAULTS.unit,
        help="cell: one crop per segmented cell (default); site: one tile per field, the whole "
        "field resized to --tile-size (no segmentation; the CS-ARM-BN paper's unit)",
    )  # fmt: skip
    parser.add_argument(
        "--tile-size", type=int, default=DEFAULTS.tile_size, metavar="PX",
        help="side of the field tiles with --unit site (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default=DEFAULTS.arch)
    parser.add_argument("--width", type=int, default=DEFAULTS.width, help="first-stage channels")
    parser.add_argument(
        "--input-scaling", choices=INPUT_SCALINGS, default=DEFAULTS.input_scaling,
        help="log1p: clip at the training pixels' 99.99th percentile, then log1p (default); "
        "image: each crop or tile by its own 99.99th percentile, 8 bits (the official "
        "CS-ARM-BN input). Recorded in the checkpoint; predict applies it",
    )  # fmt: skip
    parser.add_argument("--crop-size", type=int, default=DEFAULTS.crop_size, metavar="PX")
    parser.add_argument(
        "--crop-scale", type=float, default=DEFAULTS.crop_scale,
        help="resample fields by this factor before cropping (default: %(default)g)",
    )  # fmt: skip
    parser.add_argument(
        "--input-size", type=int, metavar="PX",
        help="random crop in training, centre crop at test (0: whole crops or tiles; "
        f"default: {DEFAULTS.input_size} for cells, whole tiles for sites)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=DEFAULTS.max_epochs)
    parser.add_argument("--patience", type=int, default=DEFAULTS.patience)
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr)
    parser.add_argument("--treated-per-episode", type=int, default=DEFAULTS.treated_per_episode)
    parser.add_argument("--controls-per-episode", type=int, default=DEFAULTS.controls_per_episode)
    parser.add_argument("--plates-per-step", type=int, default=DEFAULTS.plates_per_step)
    parser.add_argument("--max-steps-per-epoch", type=int, metavar="N")
    parser.add_argument(
        "--validation-plates", nargs="+", metavar="ID",
        help="plate ids held out for early stopping (default: none)",
    )  # fmt: skip
    parser.add_argument("--wells", nargs="+", metavar="WELL", help="wells to use; all by default")
    parser.add_argument(
        "--nucleus-diameter", type=float, default=SegmentationParams.nucleus_diameter,
        metavar="D", help="nucleus diameter in pixels (default: %(default)g)",
    )  # fmt: skip
    add_channel_arguments(parser)
    parser.add_argument("--device", default=DEFAULTS.device, help="auto (default), cpu, cuda")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    add_threads_option(parser, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    parser.add_argument(
        "--abra", action="store_true",
        help="train with ABRA on top of --method: adversarial perturbation of feature "
        "statistics, angular-margin head, alignment loss (docs/abra.md); not under torchrun",
    )  # fmt: skip
    parser.add_argument(
        "--abra-epsilon", type=float, default=AbraConfig().epsilon, metavar="E",
        help="ABRA bound on the perturbation, in batch standard deviations (default: %(default)s)",
    )  # fmt: skip
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Run ``phenoadapt train`` (one process, or one rank of a torchrun job)."""
    from ..pipeline import train_plates
    from ..train import distributed as dist_utils

    checkpoint_target(args.out, args.overwrite)  # refuse before any work
    given = None if args.input_size is None else (args.input_size or None)
    input_size = DEFAULTS.input_size if args.input_size is None else given
    config = TrainRunConfig(
        method=args.method, unit=args.unit, tile_size=args.tile_size, tile_input_size=given,
        arch=args.arch, width=args.width, input_scaling=args.input_scaling,
        crop_size=args.crop_size,
        crop_scale=args.crop_scale, input_size=input_size,
        max_epochs=args.epochs, patience=args.patience, lr=args.lr,
        treated_per_episode=args.treated_per_episode,
        controls_per_episode=args.controls_per_episode, plates_per_step=args.plates_per_step,
        max_steps_per_epoch=args.max_steps_per_epoch, validation_plates=args.validation_plates,
        wells=parse_wells(args.wells),
        segmentation=SegmentationParams(
            nucleus_diameter=args.nucleus_diameter, **channel_params(args)
        ),
        seed=args.seed, device=args.device, overwrite=args.overwrite,
        abra=AbraConfig(epsilon=args.abra_epsilon) if args.abra else None,
    )  # fmt: skip
    plates, platemaps, _ = open_inputs(args)
    info = dist_utils.init_distributed(args.device)
    try:
        with (
            warnings_to_stderr(),
            torch_threads(args.threads),
            progress_bar(enabled=info.is_main) as progress,
        ):
            result = train_plates(plates, platemaps, config, args.out, progress=progress)
    finally:
        dist_utils.shutdown_distributed()
    if info.is_main:
        for failure, plate in zip(result.failures, result.plate_failures, strict=True):
            print(f"phenoadapt: warning: plate {plate} {failure.well} site {failure.site} "
                  f"skipped: {failure.message}", file=sys.stderr)  # fmt: skip
        best = result.result.metrics()
        cells = ", ".join(f"{p}: {n}" for p, n in result.cells_per_plate.items())
        unit = "sites" if config.unit == "site" else "cells"
        method = f"{config.method} + ABRA" if config.abra is not None else config.method
        print(f"trained {method} on {cells} {unit}; best epoch {best['best_epoch']} of "
              f"{best['epochs_run']}")  # fmt: skip
        if "val_accuracy" in best:
            print(f"  validation accuracy {best['val_accuracy']:.3f}")
        print(f"wrote {result.path}")
    return 0
