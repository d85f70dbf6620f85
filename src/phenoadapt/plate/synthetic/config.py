"""Settings of a synthetic plate: format, fields, cells, treatments and effect strengths."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import OptionError
from ..wells import PLATE_FORMATS, PlateFormat, normalize_well, plate_format, well_position
from .effects import EffectStrengths
from .phenotypes import MOAS, PHENOTYPES

# Channel names in the order of the files ch1..ch5 (channels.DEFAULT_ORDERS["cellpainting5"]).
CHANNEL_NAMES: tuple[str, ...] = ("DNA", "ER", "RNA", "AGP", "Mito")

# Counts at unit gain of a typical bright cell, per channel: what a well-exposed
# 16-bit camera shows (nuclei brightest, AGP dimmest).
DEFAULT_BRIGHTNESS: tuple[float, ...] = (5000.0, 2500.0, 2200.0, 2000.0, 3000.0)


@dataclass(frozen=True)
class SyntheticPlateConfig:
    """What a synthetic plate holds.

    Parameters
    ----------
    n_wells
        Plate format: 96, 384 or 1536 wells.
    sites
        Fields imaged per well.
    field_shape
        (height, width) of a field in pixels.
    nucleus_radius
        Mean nucleus radius in pixels on the reference instrument.
    cell_radius
        Mean radius of a free-spreading cell in pixels on the reference instrument;
        crowded cells are smaller, bounded by their neighbours.
    cell_density
        Cells per square pixel on the reference instrument (6e-4 is about 40
        cells in a 256 x 256 field, nearly confluent).
    control_fraction
        Fraction of wells that hold DMSO negative controls (every plate has them).
    concentrations
        Concentrations (micromolar) each compound is tested at.
    moas
        Mechanisms of action on the plate (default: all of
        :data:`~phenoadapt.plate.synthetic.phenotypes.MOAS`).
    responder_fraction
        Probability that a treated cell responds at all.
    cell_variation
        Scale of cell-to-cell variation of every trait (1 = default).
    label_shift_alpha
        When set, each plate draws its MoA proportions from a Dirichlet
        distribution with this concentration (small = a few MoAs dominate);
        when None all MoAs get equal numbers of wells.
    strengths
        Spreads of the technical effects between labs, batches, plates, wells and fields.
    brightness
        Counts at unit gain per channel (DNA, ER, RNA, AGP, Mito).
    wells
        Image only these wells (quick plates for tests and demos); all wells when
        None.  The controls are the wells of the control lattice among them, so
        the list must hold at least one (``A01`` always is).
    """

    n_wells: int = 96
    sites: int = 2
    field_shape: tuple[int, int] = (256, 256)
    nucleus_radius: float = 8.0
    cell_radius: float = 20.0
    cell_density: float = 6e-4
    control_fraction: float = 1 / 6
    concentrations: tuple[float, ...] = (1.0, 10.0)
    moas: tuple[str, ...] = MOAS
    responder_fraction: float = 0.85
    cell_variation: float = 1.0
    label_shift_alpha: float | None = None
    strengths: EffectStrengths = field(default_factory=EffectStrengths)
    brightness: tuple[float, ...] = DEFAULT_BRIGHTNESS
    wells: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.n_wells not in PLATE_FORMATS:
            raise OptionError(
                f"Unknown plate format {self.n_wells} wells: use one of "
                f"{', '.join(map(str, PLATE_FORMATS))}."
            )
        if self.sites < 1:
            raise OptionError(f"sites must be at least 1, got {self.sites}.")
        shape = tuple(int(s) for s in self.field_shape)
        if len(shape) != 2 or min(shape) < 32:
            raise OptionError(
                "field_shape must be (height, width) of at least 32 pixels, "
                f"got {self.field_shape}."
            )
        object.__setattr__(self, "field_shape", shape)
        if not 0 < self.nucleus_radius < self.cell_radius:
            raise OptionError(
                f"Need 0 < nucleus_radius < cell_radius, got {self.nucleus_radius} and "
                f"{self.cell_radius} pixels."
            )
        if self.cell_density <= 0:
            raise OptionError(f"cell_density must be > 0, got {self.cell_density}.")
        if not 0 < self.control_fraction <= 0.5:
            raise OptionError(
                f"control_fraction must be in (0, 0.5], got {self.control_fraction}: "
                "every plate needs controls and treated wells."
            )
        if not self.concentrations or min(self.concentrations) <= 0:
            raise OptionError(f"concentrations must be positive, got {self.concentrations}.")
        unknown = [m for m in self.moas if m not in PHENOTYPES or m == "DMSO"]
        if unknown or not self.moas:
            raise OptionError(
                f"Unknown MoA(s) {unknown or '(none given)'}: choose from {', '.join(MOAS)}."
            )
        if not 0 <= self.responder_fraction <= 1:
            raise OptionError(
                f"responder_fraction must be in [0, 1], got {self.responder_fraction}."
            )
        if self.label_shift_alpha is not None and self.label_shift_alpha <= 0:
            raise OptionError(
                f"label_shift_alpha must be > 0 (or None for balanced plates), got "
                f"{self.label_shift_alpha}."
            )
        if len(self.brightness) != len(CHANNEL_NAMES):
            raise OptionError(
                f"brightness needs {len(CHANNEL_NAMES)} values, got {self.brightness}."
            )
        if self.wells is not None:
            object.__setattr__(self, "wells", self._check_wells(self.wells))

    def _check_wells(self, wells: tuple[str, ...]) -> tuple[str, ...]:
        fmt = self.format
        names = [normalize_well(w) for w in wells]
        outside = [w for w in names if not fmt.contains(w)]
        if outside or not names:
            raise OptionError(
                f"Wells {outside or '(none given)'} are not on a {fmt} plate: give wells "
                f"between A01 and {fmt.wells()[-1]}."
            )
        if len(set(names)) != len(names):
            raise OptionError(f"Wells are listed more than once: {sorted(names)}.")
        return tuple(sorted(names, key=well_position))

    def imaged_wells(self) -> list[str]:
        """Wells that are imaged, in row-major order."""
        return list(self.wells) if self.wells is not None else self.format.wells()

    @property
    def format(self) -> PlateFormat:
        """The plate format."""
        return plate_format(self.n_wells)
