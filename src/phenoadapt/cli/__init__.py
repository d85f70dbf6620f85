"""The ``phenoadapt`` command line.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it.  :func:`main` turns user errors
(:class:`~phenoadapt.errors.PhenoadaptError`) into a one-line message on stderr
and exit status 2.  Anything else is a bug: it is reported as one, with the
exception, exit status 1 and a hint to run again with ``--debug``, which prints
the full traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence

from .. import __version__
from ..errors import Cancelled, PhenoadaptError, PhenoadaptWarning

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

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
DEBUG_HELP = "show full tracebacks instead of short messages"


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
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    _accept_debug_after_commands(parser)
    return parser


def _accept_debug_after_commands(parser: argparse.ArgumentParser) -> None:
    """Let ``--debug`` also follow a command (``phenoadapt predict ... --debug``).

    ``SUPPRESS`` keeps a ``--debug`` given before the command when it is not
    repeated after it.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in set(action.choices.values()):
                command.add_argument(
                    "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
                )
                _accept_debug_after_commands(command)


def report_error(exc: BaseException, debug: bool) -> int:
    """Print an exception the way the CLI shows it; returns the exit status.

    A :class:`PhenoadaptError` is the user's input: its message, status 2
    (130 for a cancel).  Anything else is a bug in phenoadapt: said as such,
    status 1; ``debug`` adds the full traceback to either.
    """
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, Cancelled):
        print(f"phenoadapt: cancelled: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(exc, PhenoadaptError):
        print(f"phenoadapt: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(
        f"phenoadapt: internal error (a bug in phenoadapt, not in your input): "
        f"{type(exc).__name__}: {exc}",
        file=sys.stderr,
    )
    if not debug:
        print(
            "phenoadapt: run again with --debug to see the traceback, and please report it.",
            file=sys.stderr,
        )
    return EXIT_BUG


@contextlib.contextmanager
def plain_warnings() -> Iterator[None]:
    """Show warnings about the user's input as ``phenoadapt: warning: ...`` lines.

    A :class:`~phenoadapt.errors.PhenoadaptWarning` is a message for the user,
    not a source line to debug; other warnings are shown as Python shows them.
    """
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, PhenoadaptWarning):
            print(f"phenoadapt: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``phenoadapt`` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        with plain_warnings():
            result = args.func(args)
    except KeyboardInterrupt:
        print("phenoadapt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001  (every failure gets a message and a status)
        return report_error(exc, args.debug)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
