"""``phenoadapt gui``: napari with the phenoadapt docks, optionally on the demo plates."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import PhenoadaptError
from .open_args import add_open_options, open_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gui`` subcommand."""
    parser = subparsers.add_parser(
        "gui",
        help="open napari with the phenoadapt docks",
        description=(
            "Open napari with the phenoadapt docks (Plate, Plate map and controls, Run, UMAP, "
            "Export). With --demo, demo plates (a plate from the demo model's training lab and "
            "one from a new lab) are made if needed and opened with their controls marked."
        ),
    )
    parser.add_argument("plates", nargs="*", metavar="PLATE", help="plate folders to open")
    parser.add_argument("--demo", action="store_true", help="open the demo plates")
    parser.add_argument(
        "--demo-dir",
        default="phenoadapt-demo",
        metavar="DIR",
        help="folder of the demo plates (default: ./phenoadapt-demo; reused when present)",
    )
    add_open_options(parser, many=True)
    parser.add_argument(
        "--screenshot",
        metavar="PNG",
        help="save a screenshot of the window and exit instead of staying open",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start napari (blocks until the window is closed)."""
    if not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ) and sys.platform.startswith("linux"):
        raise PhenoadaptError(
            "No display: napari needs a screen. On a server, run it under a virtual one: "
            "xvfb-run -a phenoadapt gui ... (with --screenshot to save what it shows)."
        )
    try:
        from ..gui.app import launch
    except ImportError as exc:  # no Qt binding installed
        raise PhenoadaptError(
            f"napari cannot start ({exc}). Install the GUI: pip install 'phenoadapt[gui,qt]'."
        ) from exc
    launch(
        args.plates,
        demo=args.demo,
        demo_dir=args.demo_dir,
        open_options=open_options(args),
        screenshot=args.screenshot,
        show=True,
    )
    if args.screenshot:
        print(f"Screenshot written to {args.screenshot}")
    return 0
