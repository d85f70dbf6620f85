"""Segmentation options shared by the commands that segment a plate.

``segment``, ``train`` and ``embed`` all find nuclei and cells; the channels
they use and the nucleus size are chosen the same way everywhere.
"""

from __future__ import annotations

import argparse
import sys
from itertools import islice

from ..cells.params import SegmentationParams
from ..cells.scale import estimate_nucleus_diameter
from ..cells.segment import find_channel

#: Fields sampled to estimate the nucleus size of a plate.
SAMPLE_FIELDS = 3


def add_channel_arguments(
    parser: argparse.ArgumentParser, *, from_checkpoint: bool = False
) -> None:
    """Add ``--nucleus-channel`` and ``--cell-channel``.

    With ``from_checkpoint`` they default to None: the channels the checkpoint
    was trained with.
    """
    trained = "the checkpoint's, else " if from_checkpoint else ""
    parser.add_argument(
        "--nucleus-channel",
        default=None if from_checkpoint else SegmentationParams.nucleus_channel,
        metavar="CHANNEL",
        help=f"channel (name or role) that shows the nuclei (default: {trained}DNA; without a "
        "DNA channel, one named DAPI, Hoechst, DRAQ5 or *nuc* is used)",
    )
    parser.add_argument(
        "--cell-channel",
        "--cytoplasm-channel",
        dest="cell_channel",
        default=None if from_checkpoint else SegmentationParams.cytoplasm_channel,
        metavar="CHANNEL",
        help=f"channel (name or role) that outlines whole cells (default: {trained}AGP; without "
        "AGP, RNA, ER or Mito in that order)",
    )


def channel_params(args: argparse.Namespace) -> dict[str, str]:
    """The SegmentationParams fields that ``add_channel_arguments`` sets (those given)."""
    given = {"nucleus_channel": args.nucleus_channel, "cytoplasm_channel": args.cell_channel}
    return {k: v for k, v in given.items() if v is not None}


def plate_nucleus_diameter(plate, nucleus_channel: str, wells: list[str] | None = None) -> float:
    """Nucleus diameter (pixels) estimated from a few fields of ``plate``'s DNA channel.

    Raises
    ------
    phenoadapt.errors.CellsError
        When the plate has no nucleus channel, or no nuclei stand out.
    """
    index = find_channel(plate.channels, nucleus_channel, f"plate {plate.plate_id}")
    # Wells not on the plate sample the whole plate: segment_plate then says which are missing.
    fields = [f for f in plate.fields() if wells is None or f[0] in wells] or list(plate.fields())
    step = max(1, len(fields) // SAMPLE_FIELDS)
    images = [plate.read_field(*f)[index] for f in islice(fields[::step], SAMPLE_FIELDS)]
    pixel = plate.metadata.get("pixel_size_um")
    diameter = estimate_nucleus_diameter(
        images, field_name=f"plate {plate.plate_id}", pixel_size_um=pixel
    )
    microns = f" ({diameter * float(pixel):.1f} um at {float(pixel):.3g} um/px)" if pixel else ""
    print(f"estimated nucleus diameter: {diameter:.0f} px{microns}", file=sys.stderr)
    return diameter
