"""``phenoadapt run --demo``: the whole job on synthetic plates, with the shipped demo model.

Makes two small synthetic plates (one from the lab the demo model was trained
in, one from a new lab whose microscope differs), predicts them with every
test-time method (or the one chosen), and writes per-cell and per-well tables,
``accuracy.csv`` and ``summary.png`` into a new numbered folder
``DIR/results-NNN``.  The plates in ``DIR/plates`` are reused by later runs;
earlier results are never touched.
"""

from __future__ import annotations

import argparse
import time

from ..errors import PhenoadaptError
from .predict import (
    METHOD_CHOICES,
    add_threads_option,
    torch_threads,
    warnings_to_stderr,
)
from .progress import progress_bar


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="the demo: synthetic plates of two labs -> adapted predictions -> tables, figure",
        description=(
            "With --demo: make (or reuse) a synthetic plate of the demo model's training lab and "
            "one of a new lab, predict every cell with each test-time method (ERM, AdaBN, "
            "ARM-BN, BEN, CS-ARM-BN) and write cells_<method>.csv, wells_<method>.csv, "
            "accuracy.csv and summary.png into DIR/results-NNN (a new folder each run). "
            "To predict your own plates use `phenoadapt predict`."
        ),
    )
    parser.add_argument("--demo", action="store_true", help="run the built-in demo")
    parser.add_argument(
        "--out", default="phenoadapt-demo", metavar="DIR", help="demo folder (default: %(default)s)"
    )
    parser.add_argument(
        "--method", choices=(*METHOD_CHOICES, "all"), default="all",
        help="test-time method to run (default: all five)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed of the plates and contexts")
    # The demo model is tiny: a second thread only adds synchronization (7x slower on a busy CPU).
    add_threads_option(parser, default=1)
    parser.add_argument(
        "--overwrite", action="store_true", help="regenerate the demo plates in DIR/plates"
    )
    parser.set_defaults(func=run_run)


def run_run(args: argparse.Namespace) -> int:
    """Run ``phenoadapt run``."""
    if not args.demo:
        raise PhenoadaptError(
            "`phenoadapt run` needs --demo (the built-in demo). To predict your own plates use "
            "`phenoadapt predict --plate DIR --platemap CSV --checkpoint PATH`."
        )
    from ..demo import ALL_METHODS, run_demo

    methods = ALL_METHODS if args.method == "all" else (args.method,)
    started = time.perf_counter()
    with warnings_to_stderr(), torch_threads(args.threads), progress_bar() as progress:
        demo = run_demo(
            args.out, methods=methods, seed=args.seed, device=args.device,
            overwrite_plates=args.overwrite, progress=progress,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    state = "reused" if demo.plates.reused else "made"
    print(f"demo plates ({state}): {', '.join(str(p) for p in demo.plates.plates)}")
    print("accuracy of treated cells / wells:")
    for row in demo.accuracy.itertuples(index=False):
        print(
            f"  {row.method:>9}  {row.lab:<24} cells {row.cell_accuracy:.3f}  "
            f"wells {row.well_accuracy:.3f}"
        )
    print(f"results in {demo.results_dir} ({seconds:.0f} s):")
    for path in demo.files.values():
        print(f"  {path}")
    return 0
