"""The ``phenoadapt`` command line.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it.  :func:`main` turns user errors into a message on stderr
and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import Cancelled, PhenoadaptError

# Modules holding subcommands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "run",  # the demo first: what a newcomer tries
    "plate",
    "platemap",
    "synth",
    "cells",
    "train",
    "predict",
    "embed",
    "evaluate",
    "gui",
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="phenoadapt",
        description=(
            "Adapt deep-learning models to Cell Painting plates from a new batch using the "
            "plate's own negative controls, and look at the results."
        ),
    )
    parser.add_argument("--version", action="version", version=f"phenoadapt {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks instead of short messages"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``phenoadapt`` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except (PhenoadaptError, FileNotFoundError, ValueError, KeyError) as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, Cancelled):
            print(f"phenoadapt: cancelled: {message}", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"phenoadapt: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("phenoadapt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
