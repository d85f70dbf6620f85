"""Classical segmentation of nuclei and whole cells in one Cell Painting field.

Nuclei come from the DNA channel (smoothing, a global threshold, touching
nuclei split by a distance transform and a seeded watershed); cells grow from
the nuclei by a seeded watershed on a cytoplasm channel (AGP or RNA), limited
to the cytoplasm's foreground and to a radius around each nucleus.  This is the
recipe of CellProfiler's IdentifyPrimaryObjects / IdentifySecondaryObjects,
built from scikit-image and scipy, and needs no model weights.

Labels are consistent: cell ``i`` contains nucleus ``i``, both numbered 1..n.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation
from skimage.feature import peak_local_max

from ..errors import CellsError
from ..plate.channels import Channel, ChannelRole
from .params import SegmentationParams

_THRESHOLDS = {
    "otsu": filters.threshold_otsu,
    "li": filters.threshold_li,
    "triangle": filters.threshold_triangle,
    "yen": filters.threshold_yen,
    "mean": filters.threshold_mean,
}


@dataclass
class Segmentation:
    """Nucleus and cell labels of one field.

    Attributes
    ----------
    nuclei, cells
        int32 label images of the field's shape; cell ``i`` contains nucleus
        ``i``; 0 is background.
    """

    nuclei: np.ndarray
    cells: np.ndarray

    @property
    def n_cells(self) -> int:
        """Number of segmented cells."""
        return int(self.cells.max(initial=0))

    @property
    def cytoplasm(self) -> np.ndarray:
        """Cytoplasm labels: each cell minus its nucleus (may be empty for a cell)."""
        return np.where(self.nuclei > 0, 0, self.cells)


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
    if params.backend == "cellpose":
        from .cellpose_backend import segment_with_cellpose

        result = segment_with_cellpose(dna, cyto, params, field_name)
    else:
        nuclei = segment_nuclei(dna, params, field_name)
        result = Segmentation(nuclei, segment_cells(cyto, nuclei, params))
    if params.exclude_border:
        result = _drop_border_cells(result)
    if result.n_cells == 0:
        raise CellsError(
            f"{field_name}: no cell left after removing those touching the field's edge."
        )
    return result


def segment_nuclei(
    dna: np.ndarray, params: SegmentationParams, field_name: str = "the field"
) -> np.ndarray:
    """Label the nuclei of a DNA image.

    Smoothing scales with the nucleus diameter; a global threshold separates
    nuclei from background; touching nuclei are split at the saddles of the
    distance transform (seeds at least a quarter of a nucleus diameter apart); objects
    outside the allowed size range are dropped.

    Returns
    -------
    numpy.ndarray
        int32 labels numbered 1..n.

    Raises
    ------
    CellsError
        When nothing stands out of the background (an empty field).
    """
    d = params.nucleus_diameter
    smooth = filters.gaussian(dna.astype(np.float32), sigma=max(d / 20, 1.0), preserve_range=True)
    threshold = _THRESHOLDS[params.threshold_method](smooth) * params.threshold_correction
    mask = smooth > threshold
    _check_contrast(dna, smooth, mask, params, field_name)
    mask = ndi.binary_fill_holes(mask)
    min_d, max_d = params.nucleus_size_range
    mask = morphology.remove_small_objects(mask, max_size=int(np.pi * (min_d / 2) ** 2))
    labels = _split_touching(mask, d) if params.split_touching else measure.label(mask)
    labels = _filter_by_size(labels, min_d, max_d)
    if labels.max() == 0:
        raise CellsError(
            f"{field_name}: no nuclei between {min_d:.0f} and {max_d:.0f} pixels across were "
            "found in the DNA channel. Check nucleus_diameter and the threshold parameters, "
            "or exclude the field if it is empty."
        )
    return labels


def segment_cells(cyto: np.ndarray, nuclei: np.ndarray, params: SegmentationParams) -> np.ndarray:
    """Grow whole cells from their nuclei on a cytoplasm image.

    The cell foreground is a threshold of the log-intensity (dim cell edges
    separate better from background there), limited to ``params.cell_radius``
    around the nuclei; a watershed on the intensity gradient, seeded by the
    nuclei, splits it between cells so that borders follow dim gaps between
    neighbours.

    Returns
    -------
    numpy.ndarray
        int32 cell labels; cell ``i`` contains nucleus ``i``.
    """
    d = params.nucleus_diameter
    smooth = filters.gaussian(cyto.astype(np.float32), sigma=max(d / 20, 1.0), preserve_range=True)
    log = np.log1p(np.maximum(smooth - smooth.min(), 0))
    threshold = _THRESHOLDS[params.cell_threshold_method](log) * params.cell_threshold_correction
    reach = segmentation.expand_labels(nuclei, distance=params.cell_radius) > 0
    mask = ((log > threshold) & reach) | (nuclei > 0)
    mask = ndi.binary_fill_holes(mask)
    gradient = filters.sobel(log)
    gradient = gradient / max(float(gradient.max()), 1e-12)
    # A little compactness (on the [0, 1] gradient) keeps a cell from leaking around
    # its neighbour; on the real Phenix field any value in 0.003..0.3 scores the same.
    cells = segmentation.watershed(gradient, markers=nuclei, mask=mask, compactness=0.01)
    cells[nuclei > 0] = nuclei[nuclei > 0]
    return _fill_cell_holes(cells)


def _check_contrast(
    raw: np.ndarray,
    smooth: np.ndarray,
    mask: np.ndarray,
    params: SegmentationParams,
    field_name: str,
) -> None:
    """Refuse a field whose 'nuclei' are only noise above a threshold of the background."""
    if not mask.any() or mask.all():
        raise CellsError(f"{field_name}: the DNA channel has no foreground: the field looks empty.")
    background = raw[~mask].astype(np.float32)
    noise = 1.4826 * np.median(np.abs(background - np.median(background)))
    contrast = (np.median(smooth[mask]) - np.median(smooth[~mask])) / max(noise, 1e-6)
    if contrast < params.min_contrast:
        raise CellsError(
            f"{field_name}: no nuclei stand out of the background in the DNA channel "
            f"(contrast {contrast:.1f} background deviations, at least {params.min_contrast:g} "
            "needed): the field looks empty or out of focus."
        )


def _split_touching(mask: np.ndarray, diameter: float) -> np.ndarray:
    """Split merged nuclei: one seed per maximum of the smoothed distance transform."""
    components = measure.label(mask)
    distance = ndi.distance_transform_edt(mask)
    # Smoothing the distance merges the shallow maxima of irregular outlines.
    distance = filters.gaussian(distance, sigma=max(diameter / 20, 1.0), preserve_range=True)
    peaks = peak_local_max(
        distance,
        min_distance=max(int(diameter / 4), 1),
        labels=components,
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # A component without a peak (a plateau) still becomes one nucleus.
    unseeded = np.setdiff1d(np.unique(components[components > 0]), components[tuple(peaks.T)])
    for extra, comp in enumerate(unseeded, start=len(peaks) + 1):
        markers[components == comp] = extra
    labels = segmentation.watershed(-distance, markers=markers, mask=mask)
    return labels.astype(np.int32)


def _filter_by_size(labels: np.ndarray, min_d: float, max_d: float) -> np.ndarray:
    """Keep objects whose equivalent diameter lies in [min_d, max_d], renumbered 1..n."""
    areas = np.bincount(labels.ravel())
    diameters = np.sqrt(4 * areas / np.pi)
    keep = (diameters >= min_d) & (diameters <= max_d)
    keep[0] = False
    lookup = np.zeros(len(areas), dtype=np.int32)
    lookup[keep] = np.arange(1, keep.sum() + 1)
    return lookup[labels]


def _fill_cell_holes(cells: np.ndarray) -> np.ndarray:
    """Fill holes inside each cell (dim vacuoles) with that cell's label."""
    filled = cells.copy()
    for i, sl in enumerate(ndi.find_objects(cells), start=1):
        if sl is None:
            continue
        own = cells[sl] == i
        holes = ndi.binary_fill_holes(own) & (cells[sl] == 0)
        filled[sl][holes] = i
    return filled.astype(np.int32)


def _drop_border_cells(result: Segmentation) -> Segmentation:
    """Remove cells touching the field edge and renumber both label images alike."""
    cells = segmentation.clear_border(result.cells)
    kept = np.unique(cells[cells > 0])
    lookup = np.zeros(result.cells.max() + 1, dtype=np.int32)
    lookup[kept] = np.arange(1, len(kept) + 1)
    return Segmentation(nuclei=lookup[result.nuclei], cells=lookup[cells])
