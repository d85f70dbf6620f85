"""``phenoadapt segment``: segment and measure every cell of one or more plates, write tables.

Writes the per-cell table (``--out``, all plates together) and, on request,
per-well profiles normalized to each plate's own controls and feature-selected
(``--per-well``, :func:`phenoadapt.profiles.build_profiles`) and raw per-site
median profiles, through :func:`phenoadapt.export.write_table` (atomic; an
existing file is never replaced without ``--overwrite``).  Fields that fail are
listed on stderr; the command fails only when no field worked.  A normalization
that cannot work (a plate without control wells) is refused before any field is
segmented.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd

from .. import schema
from ..cells import MeasureParams, SegmentationParams, segment_plate
from ..cells.params import ILLUMINATION_STATISTICS, THRESHOLD_METHODS
from ..cells.process import PlateCells, default_workers
from ..errors import CellsError, OptionError
from ..export import check_writable, write_table, write_text
from ..plate import Plate, open_plate
from ..plate.platemap import PlateMap
from ..plate.wells import normalize_well
from ..profiles.measurements import NORMALIZATIONS, build_profiles, require_controls
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
    parser.add_argument(
        "plate", nargs="+", metavar="PLATE", help="plate folder(s) or OME-Zarr plate(s)"
    )
    parser.add_argument(
        "--platemap",
        action="append",
        metavar="MAP",
        help="plate map (CSV/TSV) for role, treatment, MoA: once for every plate, or repeated "
        "once per plate in plate order (default: the one shipped with each plate, e.g. "
        "PLATE/platemap.csv)",
    )
    parser.add_argument(
        "--wells",
        nargs="+",
        metavar="WELL",
        help="wells to process (A01 B02 or A01,B02); all by default",
    )
    parser.add_argument("--out", default="cells.csv", help="per-cell table (default: cells.csv)")
    parser.add_argument(
        "--per-well",
        metavar="CSV",
        help="also write per-well profiles: medians over each well's cells, normalized to "
        "each plate's control wells (--normalize), feature-selected (--feature-select)",
    )
    parser.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        default="robust-zscore",
        help="per-well normalization, each plate on its own control wells: robust-zscore "
        "(median and MAD of the controls, default), sphering (robust z-score, then ZCA "
        "whitening on the controls of all plates) or none (raw medians)",
    )
    parser.add_argument(
        "--feature-select",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="drop position, constant, NaN-heavy (>5%% of wells) and highly correlated "
        "(|r| > 0.9) features from the per-well profiles (default: on)",
    )
    parser.add_argument(
        "--per-site", metavar="CSV", help="also write per-site median profiles (raw)"
    )
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
        "--plate-id", help="plate id to use (and to pick the plate's rows of the map); one plate"
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
    wells = parse_wells(args.wells)
    plates, platemaps = open_plates(args)
    if args.per_well and args.normalize != "none":
        check_controls(plates, platemaps, wells, args.normalize)
    done = segment_plates(args, plates, platemaps, wells)
    n_fields = sum(result.n_fields for _, _, result in done)
    written = write_outputs(args, done)
    failed = sum(len(result.failures) for _, _, result in done)
    print(f"{n_fields - failed} of {n_fields} fields segmented: " + "; ".join(written))
    return 0


def segment_plates(
    args: argparse.Namespace,
    plates: list[Plate],
    platemaps: list[PlateMap | None],
    wells: list[str] | None,
) -> list[tuple[Plate, SegmentationParams, PlateCells]]:
    """Segment and measure each plate in turn (fields in parallel), listing failed fields.

    Raises
    ------
    CellsError
        When no field of any plate gave a cell.
    """
    measure = MeasureParams(texture=not args.no_texture)
    done = []
    for plate, platemap in zip(plates, platemaps, strict=True):
        params = segmentation_params(args, plate, wells)
        result = _run_with_bar(
            plate, wells, params, measure, platemap, args.workers, getattr(args, "scheduler", None)
        )
        report_failures(result)
        done.append((plate, params, result))
    if all(result.cells.empty for _, _, result in done):
        n_fields = sum(result.n_fields for _, _, result in done)
        raise CellsError(
            f"No cell was found in any of the {n_fields} fields of plate(s) "
            f"{', '.join(p.plate_id for p in plates)} (see the messages above); nothing was "
            "written."
        )
    return done


def write_outputs(
    args: argparse.Namespace, done: list[tuple[Plate, SegmentationParams, PlateCells]]
) -> list[str]:
    """Write the per-cell table, its settings and the profiles asked for; one line each."""
    results = [result for _, _, result in done if not result.cells.empty]
    table = pd.concat([r.cells for r in results], ignore_index=True)
    write_table(table, args.out, overwrite=args.overwrite)
    settings = write_settings(
        Path(args.out),
        [(plate, params) for plate, params, _ in done],
        estimated=not args.nucleus_diameter,
        overwrite=args.overwrite,
    )
    written = [f"{len(table)} cells -> {args.out} (settings: {settings.name})"]
    if args.per_well:
        profiles = build_profiles(table, None, args.normalize, args.feature_select)
        write_table(profiles.table, args.per_well, overwrite=args.overwrite)
        written.append(f"{profiles.summary()} -> {args.per_well}")
    if args.per_site:
        sites = pd.concat([r.per_site() for r in results], ignore_index=True)
        write_table(sites, args.per_site, overwrite=args.overwrite)
        written.append(f"{len(sites)} sites -> {args.per_site}")
    return written


def open_plates(args: argparse.Namespace) -> tuple[list[Plate], list[PlateMap | None]]:
    """The plates named on the command line and the plate map of each.

    Raises
    ------
    OptionError
        ``--plate-id`` with several plates, a count of ``--platemap`` that is
        neither one nor one per plate, or two plates with the same id.
    """
    n = len(args.plate)
    if args.plate_id and n > 1:
        raise OptionError(
            f"--plate-id names one plate but {n} plates were given: segment them one at a time "
            "to rename one, or leave --plate-id out."
        )
    maps = args.platemap or [None]
    if len(maps) not in (1, n):
        raise OptionError(
            f"{len(maps)} plate maps for {n} plates: give one --platemap for all plates, or "
            "one per plate in the order of the plates."
        )
    maps = maps * n if len(maps) == 1 else maps
    plates, platemaps = [], []
    for path, map_path in zip(args.plate, maps, strict=True):
        plate = open_plate(path, plate_id=args.plate_id, **open_options(args))
        warn_guessed_channels(plate)
        if plate.plate_id in {p.plate_id for p in plates}:
            raise OptionError(
                f"Two of the plates have the id {plate.plate_id!r} ({path}): the tables would "
                "mix them; segment them separately with --plate-id."
            )
        plates.append(plate)
        platemaps.append(open_platemap(plate, map_path))
    return plates, platemaps


def check_controls(
    plates: list[Plate], platemaps: list[PlateMap | None], wells: list[str] | None, method: str
) -> None:
    """Refuse at once a normalization that needs control wells a plate lacks.

    Raises
    ------
    NotEnoughControlsError
        Naming the plates without a control well among the wells to segment.
    """
    rows = []
    for plate, platemap in zip(plates, platemaps, strict=True):
        chosen = set(wells) if wells else set(plate.wells)
        controls = [w for w in (platemap.controls if platemap else []) if w in chosen]
        rows += [(plate.plate_id, "control") for _ in controls] or [(plate.plate_id, None)]
    require_controls(pd.DataFrame(rows, columns=[schema.PLATE, schema.ROLE]), method)


def segmentation_params(
    args: argparse.Namespace, plate: Plate, wells: list[str] | None
) -> SegmentationParams:
    """The segmentation parameters of one plate (its own nucleus size when none is given)."""
    diameter = args.nucleus_diameter or plate_nucleus_diameter(plate, args.nucleus_channel, wells)
    return SegmentationParams(
        nucleus_diameter=diameter,
        **channel_params(args),
        threshold_method=args.threshold_method,
        threshold_correction=args.threshold_correction,
        exclude_border=args.exclude_border,
        backend=args.backend,
        illumination_correction=args.illumination_correction,
        illumination_statistic=args.illumination_statistic,
    )


def settings_path(cells_csv: Path) -> Path:
    """Where the segmentation settings of a cells table go: ``cells.segmentation.json``."""
    return cells_csv.with_name(cells_csv.name.split(".")[0] + ".segmentation.json")


def write_settings(
    cells_csv: Path,
    plates: list[tuple[Plate, SegmentationParams]],
    *,
    estimated: bool,
    overwrite: bool = False,
) -> Path:
    """Write what the cells were segmented with next to them, so a result can be reproduced.

    Per plate: the nucleus diameter (and whether it was estimated from the DNA
    channel), the channels used and the plate's channels with their roles.  One
    plate gives one such object; several give ``{"plates": [...]}``.
    """
    entries = [plate_settings(plate, params, estimated) for plate, params in plates]
    settings = entries[0] if len(entries) == 1 else {"plates": entries}
    text = json.dumps(settings, indent=2, default=str) + "\n"
    return write_text(text, settings_path(cells_csv), overwrite=overwrite)


def plate_settings(plate: Plate, params: SegmentationParams, estimated: bool) -> dict:
    """The settings record of one plate (see :func:`write_settings`)."""
    from .. import __version__
    from ..cells.segment import find_cell_channel, find_channel

    nucleus = find_channel(plate.channels, params.nucleus_channel)
    cell = find_cell_channel(plate.channels, params.cytoplasm_channel, nucleus)
    return {
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
