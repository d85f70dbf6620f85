"""Parameters of segmentation and measurement, checked before any pixel is touched.

Every number here is one a user may need to change for another magnification,
cell line or stain; the defaults suit Cell Painting fields at 20x (nuclei about
30-50 pixels across), as in the JUMP and pediatric-atlas Opera Phenix plates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CellsError
from .filters import FILTER_ENGINES

THRESHOLD_METHODS = ("otsu", "li", "triangle", "yen", "mean")
BACKENDS = ("classical", "cellpose")
COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")
#: How illumination functions average each pixel over a plate's fields
#: (:mod:`phenoadapt.cells.illumination`): lower quartile (default), minimum, median, mean.
ILLUMINATION_STATISTICS = ("quartile", "minimum", "median", "mean")


@dataclass(frozen=True)
class SegmentationParams:
    """How nuclei and cells are found in a field.

    Parameters
    ----------
    nucleus_diameter
        Typical nucleus diameter in pixels.  Smoothing, the distance between
        seeds of touching nuclei and the size filters all scale with it; this is
        the one number to change for another magnification (about 40 at 20x
        with 2x2 binning, 80 at 40x).
    nucleus_channel
        Name or role of the channel that shows the nuclei (``"DNA"``).
    cytoplasm_channel
        Name or role of the channel whose signal outlines whole cells; AGP
        (actin, Golgi, plasma membrane) or RNA work best in Cell Painting.
    threshold_method
        Global threshold for the nuclei: one of ``li`` (minimum cross-entropy,
        as in the usual CellProfiler Cell Painting pipelines; the default),
        ``otsu``, ``triangle``, ``yen``, ``mean``.
    threshold_correction
        Factor applied to the nuclear threshold (>1 stricter, <1 more lenient),
        as CellProfiler's "threshold correction factor".
    cell_threshold_method, cell_threshold_correction
        The same for the cytoplasm channel (the threshold is taken on the
        log-intensity, where dim cell edges separate better from background).
    min_nucleus_diameter, max_nucleus_diameter
        Objects whose equivalent diameter lies outside this range are dropped
        (debris; clumps or bright artefacts).  Default: 0.4x and 2.5x
        ``nucleus_diameter``.
    max_cell_radius
        Cells reach at most this far (pixels) from their nucleus.  Default:
        3x ``nucleus_diameter``.
    split_touching
        Split touching nuclei with a distance transform and a seeded watershed.
    exclude_border
        Drop cells (and their nuclei) that touch the edge of the field, as
        CellProfiler pipelines usually do.  Off by default: crops handle edge
        cells themselves (see :class:`CropParams`).
    max_saturated_fraction
        A channel with more than this fraction of pixels at the maximum of its
        integer type is refused as saturated.  None disables the check.
    min_contrast
        A field whose nuclei stand out of the background by less than this many
        background standard deviations is refused as empty.
    backend
        ``"classical"`` (no weights needed) or ``"cellpose"`` (only when the
        package is installed and its weights are already on disk).
    cellpose_model
        Path to a cellpose weights file, or the name of a model in the cellpose
        models folder (``cpsam``, ``cyto3``...).
    illumination_correction
        Divide every field by the plate's illumination functions (computed once
        per plate from its own fields, as CellProfiler's
        CorrectIlluminationCalculate does, and cached; see
        :mod:`phenoadapt.cells.illumination`) before segmenting and measuring.
        Off by default; needs a plate of at least 10 fields.
    illumination_statistic
        How the illumination functions average each pixel over the fields:
        ``"quartile"`` (default), ``"minimum"``, ``"median"`` or ``"mean"``
        (CellProfiler's).  No statistic wins on every plate; the measured
        trade-offs are in docs/segmentation.md.
    filters
        Engine of the smoothing and edge filters: ``"scipy"`` (default) or
        ``"torch"``, which runs them on the GPU when torch sees one and falls
        back to scipy otherwise (see :mod:`phenoadapt.cells.filters`).
    """

    nucleus_diameter: float = 40.0
    nucleus_channel: str = "DNA"
    cytoplasm_channel: str = "AGP"
    threshold_method: str = "li"
    threshold_correction: float = 1.0
    cell_threshold_method: str = "otsu"
    cell_threshold_correction: float = 1.0
    min_nucleus_diameter: float | None = None
    max_nucleus_diameter: float | None = None
    max_cell_radius: float | None = None
    split_touching: bool = True
    exclude_border: bool = False
    max_saturated_fraction: float | None = 0.05
    min_contrast: float = 3.0
    backend: str = "classical"
    cellpose_model: str = "cpsam"
    illumination_correction: bool = False
    illumination_statistic: str = "quartile"
    filters: str = "scipy"

    def __post_init__(self) -> None:
        _positive("nucleus_diameter", self.nucleus_diameter, "of pixels")
        if self.nucleus_diameter < 4:
            raise CellsError(
                f"nucleus_diameter={self.nucleus_diameter:g} pixels is too small to segment: "
                "give the typical nucleus diameter in pixels (about 40 at 20x)."
            )
        for name in ("threshold_correction", "cell_threshold_correction"):
            _positive(name, getattr(self, name), "(1 keeps the threshold as computed)")
        for name in ("min_nucleus_diameter", "max_nucleus_diameter", "max_cell_radius"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value, "of pixels")
        if self.nucleus_size_range[0] >= self.nucleus_size_range[1]:
            raise CellsError(
                f"min_nucleus_diameter ({self.nucleus_size_range[0]:g}) must be smaller than "
                f"max_nucleus_diameter ({self.nucleus_size_range[1]:g})."
            )
        for name in ("threshold_method", "cell_threshold_method"):
            if getattr(self, name) not in THRESHOLD_METHODS:
                raise CellsError(
                    f"Unknown {name} {getattr(self, name)!r}: use one of "
                    f"{', '.join(THRESHOLD_METHODS)}."
                )
        if self.backend not in BACKENDS:
            raise CellsError(
                f"Unknown segmentation backend {self.backend!r}: use one of {', '.join(BACKENDS)}."
            )
        if self.max_saturated_fraction is not None and not 0 < self.max_saturated_fraction <= 1:
            raise CellsError(
                f"max_saturated_fraction={self.max_saturated_fraction!r} must lie in (0, 1], "
                "or be None to accept saturated channels."
            )
        if self.illumination_statistic not in ILLUMINATION_STATISTICS:
            raise CellsError(
                f"Unknown illumination_statistic {self.illumination_statistic!r}: use one of "
                f"{', '.join(ILLUMINATION_STATISTICS)}."
            )
        if self.min_contrast < 0:
            raise CellsError(f"min_contrast={self.min_contrast:g} must be >= 0.")
        if self.filters not in FILTER_ENGINES:
            raise CellsError(
                f"Unknown filters engine {self.filters!r}: use one of {', '.join(FILTER_ENGINES)}."
            )

    @property
    def nucleus_size_range(self) -> tuple[float, float]:
        """(min, max) equivalent diameter of a kept nucleus, in pixels."""
        lo = self.min_nucleus_diameter or 0.4 * self.nucleus_diameter
        hi = self.max_nucleus_diameter or 2.5 * self.nucleus_diameter
        return lo, hi

    @property
    def cell_radius(self) -> float:
        """Largest distance (pixels) a cell reaches from its nucleus."""
        return self.max_cell_radius or 3.0 * self.nucleus_diameter


@dataclass(frozen=True)
class MeasureParams:
    """What is measured for each cell.

    Parameters
    ----------
    channels
        Names or roles of the channels to measure; None measures every
        fluorescent channel (brightfield is left out).
    texture
        Compute Haralick (grey-level co-occurrence) texture features.
    texture_levels
        Grey levels each object is quantized to before the co-occurrence
        matrix (8 keeps it fast and robust).
    texture_distance
        Pixel offset of the co-occurrence matrix (CellProfiler's default: 3).
    compartments
        Any of ``Nuclei``, ``Cells``, ``Cytoplasm``.
    """

    channels: tuple[str, ...] | None = None
    texture: bool = True
    texture_levels: int = 8
    texture_distance: int = 3
    compartments: tuple[str, ...] = field(default=COMPARTMENTS)

    def __post_init__(self) -> None:
        if not 2 <= self.texture_levels <= 256:
            raise CellsError(
                f"texture_levels={self.texture_levels} must lie between 2 and 256 grey levels."
            )
        if self.texture_distance < 1:
            raise CellsError(f"texture_distance={self.texture_distance} must be >= 1 pixel.")
        unknown = set(self.compartments) - set(COMPARTMENTS)
        if unknown or not self.compartments:
            raise CellsError(
                f"Unknown compartments {sorted(unknown)}: choose among {', '.join(COMPARTMENTS)}."
            )


def _positive(name: str, value: float, unit: str) -> None:
    if not value > 0:  # also catches NaN
        raise CellsError(f"{name}={value!r} must be a positive number {unit}.")
