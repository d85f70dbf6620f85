"""``phenoadapt segment``: segment and measure every cell of a plate, write tables.

Writes the per-cell table (``--out``) and, on request, per-well and per-site
median profiles, through :func:`phenoadapt.export.write_table` (atomic; an
existing file is never replaced without ``--overwrite``).  Fields
that fail are listed on stderr; the command fails only when no field worked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..cells import MeasureParams, SegmentationParams, segment_plate
from ..cells.params import ILLUMINATION_STATISTICS, THRESHOLD_METHODS
from ..cells.process import PlateCells, default_workers
from ..errors import CellsError
from ..export import check_writable, write_table, write_text
from ..plate import open_plate
from ..plate.wells import normalize_well
from .open_args import add_open_options, open_options, open_platemap, warn_guessed_channels
from .plate_list import PlateOutputs, add_scale_out_arguments, scaled
from .progress import progress_bar
from .segmentation_args import add_channel_arguments, channel_params, plate_nucleus_diameter


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``segment`` subcommand."""
    parser = subparsers.add_parser(
        "segment",
        help="segment nuclei and cells of a plate and measure them (per-cell and per-well tables)",
        description=(
            "Segment nuclei (DNA channel) and whole cells (a cytoplasm channel) in every field "
            "of a plate, measure shape, intensity and texture per compartment, and write a "
            "per-cell table with CellProfiler-style columns. Fields run in parallel."
        ),
    )
    parser.add_argument("plate", metavar="PLATE", help="plate folder or OME-Zarr plate")
    parser.add_argument(
        "--platemap",
        metavar="MAP",
        help="plate map (CSV/TSV) for role, treatment, MoA (default: the one shipped with the "
        "plate, e.g. PLATE/platemap.csv)",
    )
    parser.add_argument(
        "--wells",
        nargs="+",
        metavar="WELL",
        help="wells to process (A01 B02 or A01,B02); all by default",
    )
    parser.add_argument("--out", default="cells.csv", help="per-cell table (default: cells.csv)")
    parser.add_argument("--per-well", metavar="CSV", help="also write per-well median profiles")
    parser.add_argument("--per-site", metavar="CSV", help="also write per-site median profiles")
    parser.add_argument(
        "--nucleus-diameter",
        type=float,
        default=None,
        metavar="D",
        help="typical nucleus diameter in pixels (default: estimated from the DNA channel)",
    )
    add_channel_arguments(parser)
    parser.add_argument(
        "--threshold-method",
        choices=THRESHOLD_METHODS,
        default=SegmentationParams.threshold_method,
        help="nucleus threshold (default: %(default)s)",
    )
    parser.add_argument(
        "--threshold-correction",
        type=float,
        default=1.0,
        help="factor on the nucleus threshold, >1 stricter (default: 1)",
    )
    parser.add_argument(
        "--exclude-border", action="store_true", help="drop cells touching the field's edge"
    )
    parser.add_argument(
        "--backend",
        choices=("classical", "cellpose"),
        default="classical",
        help="segmentation method; cellpose needs the package and its weights on disk",
    )
    parser.add_argument(
        "--illumination-correction",
        action="store_true",
        help="divide each field by the plate's illumination functions (computed once from "
        "its fields as CellProfiler does, cached next to the plate; needs 10+ fields)",
    )
    parser.add_argument(
        "--illumination-statistic",
        choices=ILLUMINATION_STATISTICS,
        default="quartile",
        help="how the illumination functions average each pixel over the fields "
        "(default: quartile; 'mean' is CellProfiler's, often better for confluent stains; "
        "see docs/segmentation.md)",
    )
    parser.add_argument("--no-texture", action="store_true", help="skip texture features (faster)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help=f"processes for fields in parallel (default: all cores, here {default_workers()})",
    )
    add_open_options(parser)
    parser.add_argument(
        "--plate-id", help="plate id to use (and to pick the plate's rows of the map)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_scale_out_arguments(parser)
    parser.set_defaults(func=run_segment)


def _outputs(args: argparse.Namespace) -> list[Path]:
    """Every file ``segment`` writes with these arguments (all present: the plate is done)."""
    paths = [Path(p) for p in (args.out, args.per_well, args.per_site) if p]
    return [*paths, settings_path(Path(args.out))]


@scaled(PlateOutputs(done=_outputs, files=("out", "per_well", "per_site")))
def run_segment(args: argparse.Namespace) -> int:
    """Run ``phenoadapt segment``."""
    outputs = [Path(p) for p in (args.out, args.per_well, args.per_site) if p]
    outputs.append(settings_path(Path(args.out)))
    check_writable(outputs, args.overwrite)
    if args.workers is not None and args.workers < 1:
        raise CellsError(f"--workers {args.workers}: give at least 1 process.")
    plate = open_plate(args.plate, plate_id=args.plate_id, **open_options(args))
    warn_guessed_channels(plate)
    wells = parse_wells(args.wells)
    diameter = args.nucleus_diameter or plate_nucleus_diameter(plate, args.nucleus_channel, wells)
    params = SegmentationParams(
        nucleus_diameter=diameter,
        **channel_params(args),
        threshold_method=args.threshold_method,
        threshold_correction=args.threshold_correction,
        exclude_border=args.exclude_border,
        backend=args.backend,
        illumination_correction=args.illumination_correction,
        illumination_statistic=args.illumination_statistic,
    )
    platemap = open_platemap(plate, args.platemap)
    result = _run_with_bar(
        plate, wells, params, MeasureParams(texture=not args.no_texture), platemap, args.workers,
        getattr(args, "scheduler", None),
    )  # fmt: skip
    report_failures(result)
    if result.cells.empty:
        raise CellsError(
            f"No cell was found in any of the {result.n_fields} fields of plate {plate.plate_id} "
            "(see the messages above); nothing was written."
        )
    write_table(result.cells, args.out, overwrite=args.overwrite)
    settings = write_settings(
        Path(args.out), plate, params, estimated=not args.nucleus_diameter, overwrite=args.overwrite
    )
    written = [f"{len(result.cells)} cells -> {args.out} (settings: {settings.name})"]
    if args.per_well:
        wells_table = result.per_well()
        write_table(wells_table, args.per_well, overwrite=args.overwrite)
        written.append(f"{len(wells_table)} wells -> {args.per_well}")
    if args.per_site:
        sites_table = result.per_site()
        write_table(sites_table, args.per_site, overwrite=args.overwrite)
        written.append(f"{len(sites_table)} sites -> {args.per_site}")
    done = result.n_fields - len(result.failures)
    print(f"{done} of {result.n_fields} fields segmented: " + "; ".join(written))
    return 0


def settings_path(cells_csv: Path) -> Path:
    """Where the segmentation settings of a cells table go: ``cells.segmentation.json``."""
    return cells_csv.with_name(cells_csv.name.split(".")[0] + ".segmentation.json")


def write_settings(
    cells_csv: Path, plate, params: SegmentationParams, *, estimated: bool, overwrite: bool = False
) -> Path:
    """Write what the cells were segmented with next to them, so a result can be reproduced.

    The nucleus diameter (and whether it was estimated from the DNA channel),
    the channels used and the plate's channels with their roles.
    """
    from .. import __version__
    from ..cells.segment import find_cell_channel, find_channel

    nucleus = find_channel(plate.channels, params.nucleus_channel)
    cell = find_cell_channel(plate.channels, params.cytoplasm_channel, nucleus)
    settings = {
        "plate": plate.plate_id,
        "nucleus_diameter_px": round(float(params.nucleus_diameter), 2),
        "nucleus_diameter_estimated": estimated,
        "pixel_size_um": plate.metadata.get("pixel_size_um"),
        "nucleus_channel": plate.channels[nucleus].name,
        "cell_channel": plate.channels[cell].name,
        "channels": [{"key": c.key, "name": c.name, "role": c.role.value} for c in plate.channels],
        "parameters": dataclasses.asdict(params),
        "phenoadapt": __version__,
    }
    text = json.dumps(settings, indent=2, default=str) + "\n"
    return write_text(text, settings_path(cells_csv), overwrite=overwrite)


def _run_with_bar(plate, wells, params, measure, platemap, workers, scheduler=None) -> PlateCells:
    with progress_bar("segment", unit="field") as progress:  # "illumination", then "segment"
        return segment_plate(
            plate,
            wells,
            params,
            measure,
            platemap=platemap,
            workers=workers,
            progress=progress,
            scheduler=scheduler,
        )


def parse_wells(values: list[str] | None) -> list[str] | None:
    """Wells from ``--wells A01 B02`` or ``--wells A01,B02``, in canonical spelling."""
    if not values:
        return None
    wells = [w for value in values for w in value.split(",") if w.strip()]
    return [normalize_well(w) for w in wells]


def report_failures(result: PlateCells) -> None:
    """List failed fields on stderr."""
    if result.failures:
        print(
            f"phenoadapt: {len(result.failures)} of {result.n_fields} fields failed and were "
            "skipped:",
            file=sys.stderr,
        )
        for failure in result.failures:
            print(f"  - {failure.message}", file=sys.stderr)
