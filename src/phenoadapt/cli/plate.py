"""``phenoadapt info`` and ``phenoadapt convert``: describe a plate, convert it to OME-Zarr."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import OptionError
from ..plate.channel_map import save_channel_map
from ..plate.model import Plate
from ..plate.readers import UnmatchedImagesWarning, open_plate, verify_plate, write_ome_zarr
from ..plate.wells import normalize_well
from .open_args import add_open_options, open_options
from .progress import progress_bar


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` and ``convert`` subcommands."""
    info = subparsers.add_parser(
        "info",
        help="describe a plate: layout, wells, sites, channels and roles, field size",
        description="Open a plate folder or OME-Zarr plate (reading no pixels) and describe it.",
    )
    _add_open_options(info)
    info.add_argument(
        "--save-channels",
        action="store_true",
        help="save the channel names and roles shown (with --channels: the ones given) as the "
        "plate's channel map, used from then on by every command and the GUI",
    )
    info.add_argument(
        "--check",
        action="store_true",
        help="also read every file's header to find corrupt files or sites of another size",
    )
    info.set_defaults(func=run_info)

    convert = subparsers.add_parser(
        "convert",
        help="convert a plate to an OME-Zarr HCS plate",
        description=(
            "Write a plate as an OME-Zarr HCS plate (NGFF), one field at a time. Site numbers "
            "and channel names are kept."
        ),
    )
    _add_open_options(convert)
    convert.add_argument("output", metavar="OUT.zarr", help="output OME-Zarr folder")
    convert.add_argument(
        "--overwrite", action="store_true", help="replace OUT.zarr if it is an existing Zarr store"
    )
    convert.add_argument(
        "--wells", help="comma-separated wells to convert (e.g. A01,B02); all by default"
    )
    convert.add_argument(
        "--ngff-version",
        choices=("0.4", "0.5"),
        default="0.5",
        help="NGFF version: 0.5 (Zarr v3, default) or 0.4 (Zarr v2, for older viewers)",
    )
    convert.add_argument(
        "--pyramid",
        type=int,
        default=0,
        metavar="N",
        help="add N downsampled levels (factors 2, 4, ...) for faster viewing; 0 by default",
    )
    convert.set_defaults(func=run_convert)


def _add_open_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plate", metavar="PLATE", help="plate folder or OME-Zarr plate")
    add_open_options(parser)
    parser.add_argument("--plate-id", help="plate id (barcode) to use instead of the detected one")
    parser.add_argument(
        "--plate-format", type=int, choices=(96, 384, 1536), help="plate format in wells"
    )


def _open(args: argparse.Namespace) -> Plate:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnmatchedImagesWarning)
        plate = open_plate(
            args.plate, plate_id=args.plate_id, plate_format=args.plate_format, **open_options(args)
        )
    for warning in caught:  # image files the pattern left out: said once, plainly
        print(f"phenoadapt: warning: {warning.message}", file=sys.stderr)
    return plate


def describe(plate: Plate) -> str:
    """A multi-line, human-readable description of a plate."""
    wells = plate.wells
    site_counts = sorted({len(plate.sites_of(w)) for w in wells})
    per_well = (
        str(site_counts[0]) if len(site_counts) == 1 else f"{site_counts[0]}-{site_counts[-1]}"
    )
    instrument = plate.metadata.get("instrument")
    rows = [
        ("plate", plate.plate_id),
        ("path", plate.path),
        ("layout", plate.layout + (f" ({instrument})" if instrument else "")),
        ("format", plate.format),
        ("wells", f"{len(wells)} ({_well_summary(wells)})"),
        ("sites", f"{per_well} per well, {plate.n_fields} fields"),
        ("field shape", f"{plate.field_shape[0]} x {plate.field_shape[1]}"),
        ("dtype", plate.dtype),
    ]
    optional = {
        "plane": "plane read",
        "pixel_size_um": "pixel size um",
        "index_file": "metadata file",
        "channel_map": "channel map",
        "ignored_files": "files ignored",
        "unmatched_images": "images not matched",
    }
    rows += [(label, plate.metadata[k]) for k, label in optional.items() if plate.metadata.get(k)]
    if plate.metadata.get("unmatched_examples"):
        rows.append(("not matched e.g.", ", ".join(plate.metadata["unmatched_examples"])))
    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label + ':':<{width}}{value}" for label, value in rows]
    lines.append("channels:")
    for i, channel in enumerate(plate.channels):
        lines.append(
            f"  {i}: {channel.name:<14} role {channel.role!s:<12} key {channel.key:<6} "
            f"({channel.source})"
        )
    if any(c.is_guess for c in plate.channels):
        lines.append(
            "  (names guessed from the usual channel order: check them against the images, "
            "then confirm with --save-channels, or give --channels)"
        )
    return "\n".join(lines)


def _well_summary(wells: list[str]) -> str:
    if len(wells) <= 6:
        return ", ".join(wells)
    return f"{', '.join(wells[:3])}, ..., {', '.join(wells[-2:])}"


def run_info(args: argparse.Namespace) -> int:
    """Print the description of a plate; with ``--check``, verify every file's header."""
    plate = _open(args)
    print(describe(plate))
    if args.save_channels:
        where = save_channel_map(plate.path, plate.channels)
        print(f"channel map saved to {where}")
    if args.check:
        checked = verify_plate(plate)
        print(f"check: {checked} files read, all fit the plate")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Convert a plate to OME-Zarr and report what was written."""
    plate = _open(args)
    wells = [w.strip() for w in args.wells.split(",") if w.strip()] if args.wells else None
    if wells is not None:
        wells = [normalize_well(w) for w in wells]
    if args.pyramid < 0:
        raise OptionError("--pyramid must be 0 or more levels.")
    factors = tuple(2 ** (i + 1) for i in range(args.pyramid))
    with progress_bar("convert", unit="field") as progress:
        out = write_ome_zarr(
            plate,
            args.output,
            wells=wells,
            overwrite=args.overwrite,
            ngff_version=args.ngff_version,
            scale_factors=factors,
            progress=progress,
        )
    n_fields = progress.total
    print(
        f"wrote {out}: plate {plate.plate_id}, {n_fields} fields, "
        f"channels {', '.join(plate.channel_names)} (OME-Zarr NGFF {args.ngff_version})"
    )
    return 0
