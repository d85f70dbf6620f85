"""The hierarchy of technical effects on synthetic plates.

Real batch effects nest: a lab's microscope (optics, camera, illumination)
images every plate of that lab; a batch of plates shares a stain preparation
and a cell seeding; each plate drifts while it is read; wells at the plate's
edge evaporate faster; each field has its own focus and vignetting.  Each level
is a small frozen dataclass of *values* (:class:`LabEffects`,
:class:`BatchEffects`, :class:`PlateEffects`), drawn by its ``sample`` method
from the *spreads* in :class:`EffectStrengths`.

Almost every effect multiplies or adds to intensities, blurs, or rescales
lengths and counts, so that statistics of the plate's own control cells can
undo most of it, as they largely do on real plates.  Channels are always in
the order DNA, ER, RNA, AGP, Mito.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from ..wells import PlateFormat, well_position

N_CHANNELS = 5


def _ones() -> tuple[float, ...]:
    return (1.0,) * N_CHANNELS


def _check_channels(name: str, values: tuple[float, ...]) -> None:
    if len(values) != N_CHANNELS:
        raise ValueError(
            f"{name} needs one value per channel (DNA, ER, RNA, AGP, Mito), got {len(values)}."
        )


@dataclass(frozen=True)
class EffectStrengths:
    """How far labs, batches, plates, wells and fields differ (the spreads of all effects).

    ``*_sd`` fields are standard deviations of the natural log of a
    multiplicative factor unless said otherwise; 0 switches the effect off.
    The defaults give a clear loss of accuracy for a classifier moved between
    labs (see ``docs/synthetic-plates.md``).

    Parameters
    ----------
    lab_gain_sd
        Per-channel camera gain and exposure of a lab.
    lab_exposure_sd
        Gain shared by all channels of a lab (lamp power, exposure time).
    lab_background_sd
        Per-channel background (autofluorescence, stray light) around 150 counts.
    lab_psf_sd
        Width of the point-spread function around 1 pixel (objective, NA).
    lab_chromatic_sd
        Per-channel variation of the PSF width (chromatic aberration).
    lab_magnification_sd
        Pixel size: cells are this much larger or smaller in pixels.
    lab_noise_sd
        Shot-noise level (camera conversion gain) and read noise.
    lab_vignetting
        Mean strength of the radial fall-off of illumination at a field's corners
        (fraction lost); each lab draws its own around it.
    lab_tilt
        Largest linear illumination gradient across a field (fraction).
    batch_stain_sd
        Per-channel stain intensity of a batch (dye lot, staining time).
    batch_density_sd
        Cell seeding density of a batch.
    batch_cell_size_sd
        Cell and nucleus size of a batch (culture conditions).
    plate_gain_sd
        Per-channel intensity of one plate against its batch.
    plate_drift_sd
        Per-channel intensity drift from the first to the last well read.
    plate_focus_drift
        Largest extra blur (pixels) reached at the last well read.
    edge_intensity
        Extra stain intensity in the outer ring of wells (evaporation); half
        of it in the second ring.
    edge_density
        Fewer cells in the outer ring of wells (fraction); half in the second ring.
    field_gain_sd
        Intensity of one field against its well.
    field_focus_sd
        Defocus of one field (pixels of extra blur, half-normal).
    field_density_sd
        Number of cells of one field against its well.
    """

    lab_gain_sd: float = 0.35
    lab_exposure_sd: float = 0.3
    lab_background_sd: float = 0.6
    lab_psf_sd: float = 0.35
    lab_chromatic_sd: float = 0.1
    lab_magnification_sd: float = 0.12
    lab_noise_sd: float = 0.4
    lab_vignetting: float = 0.25
    lab_tilt: float = 0.12
    batch_stain_sd: float = 0.2
    batch_density_sd: float = 0.25
    batch_cell_size_sd: float = 0.06
    plate_gain_sd: float = 0.08
    plate_drift_sd: float = 0.08
    plate_focus_drift: float = 0.6
    edge_intensity: float = 0.12
    edge_density: float = 0.25
    field_gain_sd: float = 0.03
    field_focus_sd: float = 0.3
    field_density_sd: float = 0.2

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(
                    f"Effect strength {f.name} must be >= 0, got {getattr(self, f.name)}."
                )

    def scaled(self, factor: float) -> EffectStrengths:
        """All strengths multiplied by ``factor`` (0 gives plates without batch effects)."""
        if factor < 0:
            raise ValueError(f"The effect-strength factor must be >= 0, got {factor}.")
        return replace(self, **{f.name: getattr(self, f.name) * factor for f in fields(self)})


@dataclass(frozen=True)
class LabEffects:
    """Everything a lab's instrument does to its images.

    The defaults describe a reference instrument; :meth:`sample` draws other
    labs around it and :meth:`ideal` gives a perfect one (no blur, noise,
    background or uneven illumination), for tests.

    Parameters
    ----------
    gain
        Counts per unit of stain, per channel (camera gain x exposure).
    background
        Counts of background per channel, added before illumination fall-off.
    offset
        Camera pedestal (counts) added to every pixel.
    psf_sigma
        Gaussian PSF width in pixels.
    chromatic
        Per-channel factor on ``psf_sigma``.
    magnification
        Lengths in pixels relative to the reference instrument (1.2 = cells
        look 20 % larger and 1/1.44 as many fit a field).
    shot_noise
        Shot noise as a multiple of sqrt(signal) (1 = one photo-electron per count).
    read_noise
        Standard deviation of camera read noise, in counts.
    vignetting
        Fraction of illumination lost at a field's corners (radial, quadratic).
    tilt
        Linear illumination gradient across a field (fraction, end to end).
    tilt_angle
        Direction of that gradient, in radians.
    """

    gain: tuple[float, ...] = field(default_factory=_ones)
    background: tuple[float, ...] = (150.0,) * N_CHANNELS
    offset: float = 100.0
    psf_sigma: float = 1.0
    chromatic: tuple[float, ...] = field(default_factory=_ones)
    magnification: float = 1.0
    shot_noise: float = 1.0
    read_noise: float = 4.0
    vignetting: float = 0.25
    tilt: float = 0.0
    tilt_angle: float = 0.0

    def __post_init__(self) -> None:
        for name in ("gain", "background", "chromatic"):
            _check_channels(name, getattr(self, name))
        if self.magnification <= 0:
            raise ValueError(f"magnification must be > 0, got {self.magnification}.")
        if not 0 <= self.vignetting < 1:
            raise ValueError(f"vignetting must be in [0, 1), got {self.vignetting}.")

    @classmethod
    def ideal(cls) -> LabEffects:
        """A perfect instrument: unit gain, no blur, background, offset, noise or fall-off."""
        return cls(
            background=(0.0,) * N_CHANNELS,
            offset=0.0,
            psf_sigma=0.0,
            shot_noise=0.0,
            read_noise=0.0,
            vignetting=0.0,
        )

    @classmethod
    def sample(cls, rng: np.random.Generator, strengths: EffectStrengths) -> LabEffects:
        """Draw a lab around the reference instrument.

        Parameters
        ----------
        rng
            Random generator (one per lab).
        strengths
            Spreads of the effects.
        """
        s = strengths
        exposure = math.exp(s.lab_exposure_sd * rng.standard_normal())
        gain = exposure * np.exp(s.lab_gain_sd * rng.standard_normal(N_CHANNELS))
        background = 150.0 * np.exp(s.lab_background_sd * rng.standard_normal(N_CHANNELS))
        chromatic = np.exp(s.lab_chromatic_sd * rng.standard_normal(N_CHANNELS))
        noise = math.exp(s.lab_noise_sd * rng.standard_normal())
        read = 4.0 * math.exp(s.lab_noise_sd * rng.standard_normal())
        vignetting = min(0.7, s.lab_vignetting * math.exp(0.5 * rng.standard_normal()))
        return cls(
            gain=_tuple(gain),
            background=_tuple(background),
            psf_sigma=round(float(math.exp(s.lab_psf_sd * rng.standard_normal())), 4),
            chromatic=_tuple(chromatic),
            magnification=round(math.exp(s.lab_magnification_sd * rng.standard_normal()), 4),
            shot_noise=round(noise, 4),
            read_noise=round(read, 3),
            vignetting=round(vignetting, 4),
            tilt=round(s.lab_tilt * float(rng.random()), 4),
            tilt_angle=round(float(rng.uniform(0, 2 * math.pi)), 4),
        )


@dataclass(frozen=True)
class BatchEffects:
    """What one batch of plates shares: stain preparation and cell seeding.

    Parameters
    ----------
    stain
        Stain intensity factor per channel.
    density
        Cell density factor.
    cell_size
        Factor on the size of cells and nuclei.
    """

    stain: tuple[float, ...] = field(default_factory=_ones)
    density: float = 1.0
    cell_size: float = 1.0

    def __post_init__(self) -> None:
        _check_channels("stain", self.stain)

    @classmethod
    def sample(cls, rng: np.random.Generator, strengths: EffectStrengths) -> BatchEffects:
        """Draw a batch; see :class:`EffectStrengths` for the spreads."""
        s = strengths
        stain = np.exp(s.batch_stain_sd * rng.standard_normal(N_CHANNELS))
        return cls(
            stain=_tuple(stain),
            density=round(math.exp(s.batch_density_sd * rng.standard_normal()), 4),
            cell_size=round(math.exp(s.batch_cell_size_sd * rng.standard_normal()), 4),
        )


@dataclass(frozen=True)
class PlateEffects:
    """What happens to one plate: intensity offset and drift, focus drift, edge effects.

    Parameters
    ----------
    gain
        Intensity factor per channel.
    drift
        Per-channel relative intensity change from the first to the last well read
        (wells are read row by row, serpentine).
    focus_drift
        Extra blur (pixels) reached at the last well read.
    edge_intensity
        Extra stain in outer-ring wells (fraction; half in the second ring).
    edge_density
        Fraction of cells missing in outer-ring wells (half in the second ring).
    field_gain_sd, field_focus_sd, field_density_sd
        Per-field jitter of intensity, focus and cell number (see :class:`EffectStrengths`).
    """

    gain: tuple[float, ...] = field(default_factory=_ones)
    drift: tuple[float, ...] = (0.0,) * N_CHANNELS
    focus_drift: float = 0.0
    edge_intensity: float = 0.0
    edge_density: float = 0.0
    field_gain_sd: float = 0.0
    field_focus_sd: float = 0.0
    field_density_sd: float = 0.0

    def __post_init__(self) -> None:
        _check_channels("gain", self.gain)
        _check_channels("drift", self.drift)
        if not 0 <= self.edge_density < 1:
            raise ValueError(f"edge_density must be in [0, 1), got {self.edge_density}.")

    @classmethod
    def sample(cls, rng: np.random.Generator, strengths: EffectStrengths) -> PlateEffects:
        """Draw a plate; see :class:`EffectStrengths` for the spreads."""
        s = strengths
        gain = np.exp(s.plate_gain_sd * rng.standard_normal(N_CHANNELS))
        drift = s.plate_drift_sd * rng.standard_normal(N_CHANNELS)
        jitter = math.exp(0.2 * rng.standard_normal())  # plates differ a little in edge effects
        return cls(
            gain=_tuple(gain),
            drift=_tuple(drift),
            focus_drift=round(s.plate_focus_drift * float(rng.random()), 4),
            edge_intensity=round(s.edge_intensity * jitter, 4),
            edge_density=round(min(0.9, s.edge_density * jitter), 4),
            field_gain_sd=s.field_gain_sd,
            field_focus_sd=s.field_focus_sd,
            field_density_sd=s.field_density_sd,
        )


@dataclass(frozen=True)
class WellConditions:
    """Technical conditions of one well, from its position on the plate.

    Parameters
    ----------
    stain
        Intensity factor per channel (plate gain x drift x edge).
    density
        Cell-number factor (edge evaporation).
    extra_blur
        Blur (pixels) added by focus drift.
    """

    stain: tuple[float, ...]
    density: float
    extra_blur: float


def _tuple(values: np.ndarray) -> tuple[float, ...]:
    # Rounded so the values written to effects.json read back exactly.
    return tuple(round(float(v), 4) for v in values)


def edge_weight(fmt: PlateFormat, well: str) -> float:
    """1 for the outer ring of wells, 0.5 for the second ring, 0 inside."""
    row, col = well_position(well)
    ring = min(row - 1, col - 1, fmt.n_rows - row, fmt.n_columns - col)
    return {0: 1.0, 1: 0.5}.get(ring, 0.0)


def read_order(fmt: PlateFormat, well: str) -> float:
    """When a well is read, from 0 (first) to 1 (last); rows are read serpentine."""
    row, col = well_position(well)
    col_step = col - 1 if row % 2 == 1 else fmt.n_columns - col
    index = (row - 1) * fmt.n_columns + col_step
    return index / max(fmt.n_wells - 1, 1)


def well_conditions(plate: PlateEffects, fmt: PlateFormat, well: str) -> WellConditions:
    """Technical conditions of ``well`` on a plate of format ``fmt``."""
    t = read_order(fmt, well)
    edge = edge_weight(fmt, well)
    stain = tuple(
        g * (1.0 + d * (t - 0.5)) * (1.0 + plate.edge_intensity * edge)
        for g, d in zip(plate.gain, plate.drift, strict=True)
    )
    return WellConditions(
        stain=stain,
        density=1.0 - plate.edge_density * edge,
        extra_blur=plate.focus_drift * t,
    )


def illumination(lab: LabEffects, shape: tuple[int, int]) -> np.ndarray:
    """The lab's illumination profile over a field (1 at the brightest point).

    Radial quadratic vignetting (``lab.vignetting`` lost at the corners) times a
    linear gradient along ``lab.tilt_angle`` that loses ``lab.tilt`` from the bright
    edge of the field to the dark one.
    """
    h, w = shape
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / max((h - 1) / 2, 1)
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / max((w - 1) / 2, 1)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    radial = 1.0 - lab.vignetting * (yy**2 + xx**2) / 2.0
    along = math.cos(lab.tilt_angle) * xx + math.sin(lab.tilt_angle) * yy
    # ``along`` runs from -1 to 1 across the field: the dark edge gets 1 - tilt.
    gradient = 1.0 - lab.tilt * (1.0 - along) / 2.0
    profile = radial * gradient
    return (profile / profile.max()).astype(np.float32)
