"""``phenoadapt synth``: write synthetic Cell Painting plates with batch effects and ground truth.

Writes ``labs x batches x plates`` plate folders (Opera Phenix layout, uint16
TIFF, channels ch1..ch5 = DNA, ER, RNA, AGP, Mito) with a plate map and ground
truth each, and an ``experiment.csv`` manifest, into OUT.  Refuses to write into
a non-empty plate folder unless ``--overwrite``.
"""

from __future__ import annotations

import argparse

from ..errors import OptionError
from ..plate.synthetic import EffectStrengths, SyntheticPlateConfig, generate_experiment
from .progress import progress_bar


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="write synthetic Cell Painting plates with batch effects and ground truth",
        description=(
            "Write synthetic Cell Painting plates from several labs and batches: Opera Phenix "
            "folders of uint16 TIFFs (ch1..ch5 = DNA, ER, RNA, AGP, Mito), a plate map with DMSO "
            "controls on every plate, ground-truth masks and a per-cell table (treatment, MoA, "
            "responder), and experiment.csv listing the plates. The same seed gives the same files."
        ),
    )
    parser.add_argument("out", metavar="OUT", help="folder that receives the plate folders")
    parser.add_argument(
        "--wells", type=int, choices=(96, 384, 1536), default=96, help="plate format (default: 96)"
    )
    parser.add_argument(
        "--only-wells",
        nargs="+",
        metavar="WELL",
        help="image only these wells (A01 B05 or A01,B05), for quick plates; they must include "
        "a control well such as A01",
    )
    parser.add_argument("--sites", type=int, default=2, help="fields per well (default: 2)")
    parser.add_argument(
        "--size", type=int, default=256, metavar="PX", help="field width and height (default: 256)"
    )
    parser.add_argument("--labs", type=int, default=2, help="labs (instruments) (default: 2)")
    parser.add_argument("--batches", type=int, default=1, help="batches per lab (default: 1)")
    parser.add_argument("--plates", type=int, default=1, help="plates per batch (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--label-shift-alpha",
        type=float,
        default=None,
        metavar="A",
        help="draw each plate's MoA proportions from Dirichlet(A) (small A = strong label "
        "shift); equal proportions when not given",
    )
    parser.add_argument(
        "--effect-strength",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply every batch-effect strength by F (0 = no batch effects; default: 1)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: one per CPU for larger plates)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing synthetic plate folders"
    )
    parser.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Run ``phenoadapt synth``."""
    for name in ("sites", "labs", "batches", "plates"):
        if getattr(args, name) < 1:
            raise OptionError(f"--{name} {getattr(args, name)}: give at least 1.")
    if args.size < 32:
        raise OptionError(f"--size {args.size}: fields must be at least 32 pixels wide.")
    if args.effect_strength < 0:
        raise OptionError(f"--effect-strength {args.effect_strength}: give a factor >= 0.")
    config = SyntheticPlateConfig(
        n_wells=args.wells,
        sites=args.sites,
        field_shape=(args.size, args.size),
        label_shift_alpha=args.label_shift_alpha,
        strengths=EffectStrengths().scaled(args.effect_strength),
        wells=_parse_wells(args.only_wells),
    )
    experiment = _run_with_bar(args, config)
    for plate in experiment.plates:
        print(f"{plate.path}: {plate.n_fields} fields, {plate.n_cells} cells")
    print(f"{len(experiment.plates)} plate(s) listed in {experiment.path / 'experiment.csv'}")
    return 0


def _parse_wells(values: list[str] | None) -> tuple[str, ...] | None:
    """Wells from ``--only-wells A01 B02`` or ``--only-wells A01,B02``."""
    if not values:
        return None
    return tuple(w.strip() for value in values for w in value.split(",") if w.strip())


def _run_with_bar(args: argparse.Namespace, config: SyntheticPlateConfig):
    with progress_bar("synth", unit="well") as progress:
        return generate_experiment(
            args.out,
            labs=args.labs,
            batches_per_lab=args.batches,
            plates_per_batch=args.plates,
            config=config,
            seed=args.seed,
            overwrite=args.overwrite,
            workers=args.workers,
            progress=progress,
        )
