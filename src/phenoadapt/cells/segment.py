"""Segmentation of nuclei and whole cells in one Cell Painting field: channels, checks, backend.

:func:`segment_field` finds the DNA and cytoplasm channels, checks the field
and hands the planes to the backend the parameters name
(:mod:`.backends`: the classical method of :mod:`.classical`, or cellpose).
:class:`Segmentation`, :func:`segment_nuclei` and :func:`segment_cells` are the
classical method's, imported here for callers of this module.

Labels are consistent: cell ``i`` contains nucleus ``i``, both numbered 1..n.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage import segmentation

from ..errors import CellsError
from ..plate.channels import Channel, ChannelRole
from .backends import segment_with_backend
from .classical import Segmentation
from .params import SegmentationParams

#: Words in a channel name that mark a nuclear stain (lower case).
NUCLEAR_STAIN_WORDS = ("dapi", "hoechst", "draq5", "nuc")


#: Stains that outline whole cells, best first: where the chosen one is missing the next is used.
CELL_OUTLINE_ROLES: tuple[ChannelRole, ...] = (
    ChannelRole.AGP,
    ChannelRole.RNA,
    ChannelRole.ER,
    ChannelRole.MITO,
)


def find_cell_channel(
    channels: Sequence[Channel],
    which: str | ChannelRole,
    nucleus_index: int,
    field_name: str = "the field",
) -> int:
    """Position of the channel that outlines whole cells.

    ``which`` (a name or role) when the plate has it.  When ``which`` is a
    cell-outline role the plate lacks (AGP on a DNA/RNA/ER plate), the first of
    :data:`CELL_OUTLINE_ROLES` it has, else its one fluorescent channel besides
    the nuclei (GFP on a DAPI/GFP plate): a cell outline needs any cytoplasmic
    signal, and a plate of three stains should not stop here.

    Raises
    ------
    CellsError
        When nothing but the nucleus channel (or brightfield) is left, or a
        channel named explicitly is missing.
    """
    try:
        return find_channel(channels, which, field_name)
    except CellsError:
        if str(which).lower() not in {r.value.lower() for r in CELL_OUTLINE_ROLES}:
            raise
    for role in CELL_OUTLINE_ROLES:
        for i, ch in enumerate(channels):
            if ch.role is role and i != nucleus_index:
                return i
    others = [
        i
        for i, ch in enumerate(channels)
        if i != nucleus_index and ch.role not in (ChannelRole.DNA, ChannelRole.BRIGHTFIELD)
    ]
    if len(others) == 1:
        return others[0]
    raise CellsError(
        f"{field_name} has no {which} channel to outline cells (it has "
        f"{', '.join(c.name for c in channels)}): choose one with --cell-channel (the Segment "
        "dock's Cell channel), or name the plate's channels (--channels, the Plate dock's "
        "channel table)."
    )


def find_channel(
    channels: Sequence[Channel], which: str | ChannelRole, field_name: str = "the field"
) -> int:
    """Position of the channel named ``which`` (or having that role) in ``channels``.

    When ``which`` is the DNA role and no channel has it, a channel whose name
    suggests nuclei (DAPI, Hoechst, DRAQ5, "nuc") is taken: plates of other
    assays name their stains, not Cell Painting roles.

    Raises
    ------
    CellsError
        When no channel matches, naming the field, the channels it has and the
        option that chooses one.
    """
    wanted = str(which).lower()
    for by_role in (False, True):  # an exact name wins over a role
        for i, ch in enumerate(channels):
            key = ch.role.value if by_role else ch.name
            if key.lower() == wanted:
                return i
    if wanted == ChannelRole.DNA.value.lower():
        for i, ch in enumerate(channels):
            if any(word in ch.name.lower() for word in NUCLEAR_STAIN_WORDS):
                return i
    raise CellsError(
        f"{field_name} has no {which} channel (it has {', '.join(c.name for c in channels)}): "
        "choose the channels to segment with --nucleus-channel and --cell-channel "
        "(nucleus_channel / cytoplasm_channel in the segmentation parameters)."
    )


def check_field(
    image: np.ndarray,
    channels: Sequence[Channel],
    params: SegmentationParams,
    field_name: str = "the field",
) -> None:
    """Refuse fields that cannot give meaningful cells: blank, constant or saturated channels.

    Parameters
    ----------
    image
        (channel, y, x) array.
    channels
        The channels of ``image``, in order.
    params
        Segmentation parameters (saturation tolerance).
    field_name
        How to name the field in messages (``"plate P, well C03, site 3"``).

    Raises
    ------
    CellsError
        Naming the field, the channel and what is wrong with it.
    """
    if image.ndim != 3 or image.shape[0] != len(channels):
        raise CellsError(
            f"{field_name}: expected a (channel, y, x) array with {len(channels)} channels, "
            f"got shape {image.shape}."
        )
    min_side = int(np.ceil(params.nucleus_diameter * 2))
    if min(image.shape[1:]) < min_side:
        raise CellsError(
            f"{field_name} is {image.shape[1]}x{image.shape[2]} pixels, too small for nuclei of "
            f"{params.nucleus_diameter:g} pixels: check nucleus_diameter."
        )
    for plane, ch in zip(image, channels, strict=True):
        if ch.role is ChannelRole.BRIGHTFIELD:
            continue  # brightfield is neither segmented nor measured
        lo, hi = plane.min(), plane.max()
        if hi == 0:
            raise CellsError(
                f"{field_name}: channel {ch.name} is all zero (no signal). "
                "Was the channel acquired? Exclude the field or the well."
            )
        if lo == hi:
            raise CellsError(
                f"{field_name}: channel {ch.name} is constant ({lo}) and shows nothing."
            )
        if params.max_saturated_fraction is not None and np.issubdtype(plane.dtype, np.integer):
            saturated = np.count_nonzero(plane == np.iinfo(plane.dtype).max) / plane.size
            if saturated > params.max_saturated_fraction:
                raise CellsError(
                    f"{field_name}: channel {ch.name} is saturated ({saturated:.0%} of pixels at "
                    f"{np.iinfo(plane.dtype).max}). Reduce exposure, exclude the field, or raise "
                    "max_saturated_fraction."
                )


def segment_field(
    image: np.ndarray,
    channels: Sequence[Channel],
    params: SegmentationParams | None = None,
    field_name: str = "the field",
) -> Segmentation:
    """Segment nuclei and cells in one field.

    Parameters
    ----------
    image
        (channel, y, x) array in the order of ``channels``.
    channels
        Channels of the field; the nucleus and cytoplasm channels are found by
        name or role.
    params
        Segmentation parameters; defaults suit Cell Painting at 20x.
    field_name
        Name of the field used in error messages.

    Returns
    -------
    Segmentation
        Nucleus and cell labels, cell ``i`` containing nucleus ``i``.

    Raises
    ------
    CellsError
        A missing channel, a blank or saturated channel, or no nuclei found.
    """
    params = params or SegmentationParams()
    image = np.asarray(image)
    check_field(image, channels, params, field_name)
    nucleus_index = find_channel(channels, params.nucleus_channel, field_name)
    dna = image[nucleus_index]
    cyto = image[find_cell_channel(channels, params.cytoplasm_channel, nucleus_index, field_name)]
    result = segment_with_backend(dna, cyto, params, field_name)
    if params.exclude_border:
        result = _drop_border_cells(result)
    if result.n_cells == 0:
        raise CellsError(
            f"{field_name}: no cell left after removing those touching the field's edge."
        )
    return result


def _drop_border_cells(result: Segmentation) -> Segmentation:
    """Remove cells touching the field edge and renumber both label images alike."""
    cells = segmentation.clear_border(result.cells)
    kept = np.unique(cells[cells > 0])
    lookup = np.zeros(result.cells.max() + 1, dtype=np.int32)
    lookup[kept] = np.arange(1, len(kept) + 1)
    return Segmentation(nuclei=lookup[result.nuclei], cells=lookup[cells])
