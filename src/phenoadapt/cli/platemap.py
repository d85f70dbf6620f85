"""``phenoadapt platemap``: check a plate map and convert it (e.g. JUMP) to phenoadapt's schema.

Examples
--------
::

    phenoadapt platemap check map.csv --format 384 --controls DMSO
    phenoadapt platemap check JUMP-MOA_compound_platemap.tsv \\
        --compound-metadata JUMP-MOA_compound_metadata.tsv --min-controls 16
    phenoadapt platemap convert JUMP-MOA_compound_platemap.tsv platemap.csv \\
        --compound-metadata JUMP-MOA_compound_metadata.tsv
"""

from __future__ import annotations

import argparse
import sys

from .. import schema
from ..export import needs_neutralising
from ..plate.platemap import PlateMap, read_platemap, write_platemap
from ..plate.wells import PLATE_FORMATS


def _add_reading_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("map", metavar="MAP", help="plate map, CSV or TSV, one row per well")
    parser.add_argument(
        "--format",
        type=int,
        choices=sorted(PLATE_FORMATS),
        default=None,
        help="number of wells of the plate (default: guessed from the wells)",
    )
    parser.add_argument(
        "--compound-metadata",
        metavar="META",
        default=None,
        help="per-compound table to join on the compound column "
        "(JUMP: *_compound_metadata.tsv, adds names, MoAs and negcon controls)",
    )
    parser.add_argument(
        "--controls",
        metavar="TREATMENT",
        action="append",
        default=None,
        help="treatment of the negative-control wells (repeat for several); "
        "default: the map's role column, else DMSO",
    )
    parser.add_argument(
        "--plate",
        metavar="ID",
        default=None,
        help="plate id: pick this plate's rows in a map of several plates",
    )


def _read(args: argparse.Namespace) -> PlateMap:
    return read_platemap(
        args.map,
        plate_format=args.format,
        controls=args.controls,
        compound_metadata=args.compound_metadata,
        plate_id=args.plate,
    )


_SHOWN_FORMULAS = 5


def formula_names(platemap: PlateMap) -> list[str]:
    """Names of the map that a spreadsheet would run as formulas, with their column and well.

    Treatment, MoA or plate names beginning with ``=``, ``+``, ``-``, ``@``, a tab
    or a carriage return (``=HYPERLINK(...)``, ``+1+1``): phenoadapt writes them
    with a protective ``'``, other programs may not.
    """
    frame = platemap.to_frame()
    found = []
    for column in frame.columns:
        if column == schema.WELL:
            continue
        for well, value in zip(frame[schema.WELL], frame[column], strict=True):
            if needs_neutralising(value):
                found.append(f"{value!r} ({column}, well {well})")
    return found


def warn_formulas(platemap: PlateMap) -> None:
    """Warn on stderr about names that would run as spreadsheet formulas."""
    found = formula_names(platemap)
    if not found:
        return
    more = f" and {len(found) - _SHOWN_FORMULAS} more" if len(found) > _SHOWN_FORMULAS else ""
    print(
        f"warning: {len(found)} name(s) begin with =, +, -, @, a tab or a carriage return and "
        f"would run as formulas in a spreadsheet: {', '.join(found[:_SHOWN_FORMULAS])}{more}. "
        "phenoadapt writes them with a leading ' in its CSV files (and reads them back as "
        "typed); rename them if other programs open the map or its results.",
        file=sys.stderr,
    )


def run_check(args: argparse.Namespace) -> int:
    """Read and check a plate map, print its summary; errors exit with status 2."""
    platemap = _read(args)
    print(platemap.summary())
    warn_formulas(platemap)
    if args.min_controls > 0:
        platemap.require_controls(args.min_controls, method=args.method)
    elif not platemap.controls:
        print(
            f"warning: no negative-control wells: {args.method} needs them. Name the control "
            "treatment with --controls, or put 'control' in the map's role column.",
            file=sys.stderr,
        )
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Read a plate map in any supported form and write it in phenoadapt's schema."""
    platemap = _read(args)
    path = write_platemap(platemap, args.out, overwrite=args.overwrite)
    counts = platemap.counts()
    print(
        f"Wrote {path}: {len(platemap)} wells "
        + ", ".join(f"{n} {role.value}" for role, n in counts.items())
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``platemap`` command and its ``check`` and ``convert`` actions."""
    parser = subparsers.add_parser(
        "platemap",
        help="check plate maps and convert them to phenoadapt's schema",
        description="Check a plate map (wells, treatments, MoAs, controls) or convert it, "
        "e.g. a JUMP plate map with its compound metadata, to phenoadapt's CSV schema.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    check = actions.add_parser(
        "check",
        help="read a plate map and print a summary; exit status 2 on errors",
        description="Read a plate map, check every well and print a summary.",
    )
    _add_reading_options(check)
    check.add_argument(
        "--min-controls",
        type=int,
        default=0,
        metavar="N",
        help="fail unless the map has at least N negative-control wells (default: only warn "
        "when it has none)",
    )
    check.add_argument(
        "--method",
        default="CS-ARM-BN",
        help="method named in messages about controls",
    )
    check.set_defaults(func=run_check)

    convert = actions.add_parser(
        "convert",
        help="write a plate map in phenoadapt's schema (CSV, or TSV for .tsv)",
        description="Read a plate map and write it with phenoadapt's columns "
        "(Metadata_Well, Metadata_Treatment, Metadata_MoA, Metadata_Concentration, Metadata_Role).",
    )
    _add_reading_options(convert)
    convert.add_argument("out", metavar="OUT", help="file to write (.csv or .tsv)")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    convert.set_defaults(func=run_convert)
