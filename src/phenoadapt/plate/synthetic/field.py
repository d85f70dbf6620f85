"""One synthetic field: cells placed, painted and imaged, with ground-truth masks.

:func:`render_field` is the in-memory entry point (tests, napari sample data);
the plate writer calls :func:`render_spec` for every (well, site) of a plate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.fft as sfft

from ... import schema
from ...schema import Role
from ..wells import normalize_well
from .config import CHANNEL_NAMES, SyntheticPlateConfig
from .effects import BatchEffects, LabEffects, PlateEffects, well_conditions
from .geometry import density_map, grow_cells, place_nuclei
from .optics import FieldJitter, image_field
from .paint import paint_stains
from .phenotypes import COMPOUNDS, CONTROL, PHENOTYPES, cell_responses, compounds_of, sample_traits

Seed = int | np.random.SeedSequence

# Columns of the per-cell table of a field, after the metadata columns.
RESPONDER = "responder"
RESPONSE = "response"
AREA = "area"
NUCLEUS_AREA = "nucleus_area"
N_NUCLEI = "n_nuclei"
TOUCHES_BORDER = "touches_border"


@dataclass(frozen=True)
class FieldSpec:
    """What one field shows.

    Parameters
    ----------
    well
        Canonical well name; its position sets edge effects and drift.
    site
        Site (field) number, from 1.
    treatment
        Compound name (``"DMSO"`` for controls).
    moa
        Mechanism of action of the compound (``"DMSO"`` for controls).
    concentration
        Concentration in micromolar (0 for controls).
    response
        Expected response of a responding cell, 0..1 (the compound's dose response).
    """

    well: str
    site: int
    treatment: str
    moa: str
    concentration: float
    response: float

    @property
    def role(self) -> Role:
        """Control or treated."""
        return Role.CONTROL if self.moa == CONTROL else Role.TREATED


@dataclass
class SyntheticField:
    """A rendered field and its ground truth.

    Attributes
    ----------
    image
        (5, y, x) uint16 planes in the order DNA, ER, RNA, AGP, Mito.
    nuclei
        (y, x) uint16 nucleus labels; a nucleus has the label of its cell.
    cells
        (y, x) uint16 cell labels 1..n (nucleus included).  Cells whose nucleus
        lies outside the field are not labelled.
    table
        One row per cell: metadata columns, ``cell_id`` (= label),
        ``centroid_y``/``centroid_x`` (pixels), ``area``, ``nucleus_area``,
        ``n_nuclei``, ``responder``, ``response``, ``touches_border``.
    channel_names
        Names of the planes of ``image``.
    """

    image: np.ndarray
    nuclei: np.ndarray
    cells: np.ndarray
    table: pd.DataFrame
    channel_names: tuple[str, ...] = CHANNEL_NAMES


def as_seed_sequence(seed: Seed) -> np.random.SeedSequence:
    """A SeedSequence from an int or a SeedSequence."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    return np.random.SeedSequence(int(seed))


def child_seed(seed: Seed, *keys: int) -> np.random.SeedSequence:
    """The child of ``seed`` named by ``keys``: the same keys always give the same stream."""
    parent = as_seed_sequence(seed)
    return np.random.SeedSequence(parent.entropy, spawn_key=(*parent.spawn_key, *keys))


def render_spec(
    spec: FieldSpec,
    config: SyntheticPlateConfig,
    lab: LabEffects,
    batch: BatchEffects,
    plate: PlateEffects,
    seed: Seed,
) -> SyntheticField:
    """Render one field described by ``spec`` under the given technical effects.

    Parameters
    ----------
    spec
        Well, site, treatment and expected response.
    config
        Plate settings (field shape, cell sizes and density, brightness...).
    lab, batch, plate
        Technical effects.
    seed
        Seed of this field; the same seed gives the same pixels.
    """
    rng = np.random.default_rng(as_seed_sequence(seed))
    well = well_conditions(plate, config.format, spec.well)
    jitter = FieldJitter.sample(
        rng, plate.field_gain_sd, plate.field_focus_sd, plate.field_density_sd
    )
    scale = lab.magnification
    r_nuc = config.nucleus_radius * scale * batch.cell_size
    r_cell = config.cell_radius * scale * batch.cell_size
    height, width = config.field_shape
    pad = int(math.ceil(1.6 * r_cell)) + 6
    canvas = (sfft.next_fast_len(height + 2 * pad), sfft.next_fast_len(width + 2 * pad))
    crop = (slice(pad, pad + height), slice(pad, pad + width))

    phenotype = PHENOTYPES[spec.moa]
    expected = (
        config.cell_density
        / scale**2
        * canvas[0]
        * canvas[1]
        * batch.density
        * well.density
        * jitter.density
        * phenotype.density**spec.response
    )
    n = int(rng.poisson(expected))
    responder, response = cell_responses(rng, n, spec.response, config.responder_fraction)
    traits = sample_traits(rng, response, phenotype, config.cell_variation)
    binucleate = rng.random(n) < traits["multinucleation"]
    spacing = (
        1.05
        * r_nuc
        * traits["nucleus_size"]
        * (1 + 0.5 * traits["nucleus_elongation"])
        * np.where(binucleate, 2.0, 1.0)
    )
    centres = place_nuclei(rng, canvas, spacing, density_map(rng, canvas, 3 * r_cell))
    layout = grow_cells(rng, canvas, centres, traits, binucleate, r_nuc, r_cell)
    stains = paint_stains(rng, layout, traits, scale, r_nuc, r_cell)
    image = image_field(rng, stains, crop, config.brightness, lab, batch, well, jitter)

    nuclei, cells, ids = _crop_labels(layout.nuclei[crop], layout.cells[crop])
    table = _cell_table(nuclei, cells, ids)
    table[N_NUCLEI] = layout.n_nuclei[ids - 1]
    table[RESPONDER] = responder[ids - 1]
    table[RESPONSE] = np.round(response[ids - 1], 4)
    meta = {
        schema.WELL: spec.well,
        schema.SITE: spec.site,
        schema.TREATMENT: spec.treatment,
        schema.MOA: spec.moa,
        schema.CONCENTRATION: float(spec.concentration),
        schema.ROLE: spec.role.value,
    }
    table = pd.concat([pd.DataFrame(meta, index=table.index), table], axis=1)
    return SyntheticField(image=image, nuclei=nuclei, cells=cells, table=table)


def _crop_labels(
    nuclei: np.ndarray, cells: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the cells whose nucleus shows in the field and number them 1..k.

    Returns the relabelled uint16 nuclei and cells and the canvas ids of the
    kept cells, in label order.
    """
    ids = np.unique(nuclei[nuclei > 0])
    relabel = np.zeros(max(int(cells.max()), int(nuclei.max())) + 1, np.uint16)
    relabel[ids] = np.arange(1, len(ids) + 1, dtype=np.uint16)
    return relabel[nuclei], relabel[cells], ids


def _cell_table(nuclei: np.ndarray, cells: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
    """Label, centroid, areas and border contact of each cell."""
    k = len(ids)
    flat = cells.ravel()
    area = np.bincount(flat, minlength=k + 1)[1:]
    yy, xx = np.indices(cells.shape)
    sum_y = np.bincount(flat, weights=yy.ravel(), minlength=k + 1)[1:]
    sum_x = np.bincount(flat, weights=xx.ravel(), minlength=k + 1)[1:]
    nucleus_area = np.bincount(nuclei.ravel(), minlength=k + 1)[1:]
    edge = np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]])
    touches = np.zeros(k + 1, bool)
    touches[edge] = True
    return pd.DataFrame(
        {
            schema.CELL_ID: np.arange(1, k + 1, dtype=np.int64),
            schema.CENTROID_Y: np.round(sum_y / np.maximum(area, 1), 2),
            schema.CENTROID_X: np.round(sum_x / np.maximum(area, 1), 2),
            AREA: area,
            NUCLEUS_AREA: nucleus_area,
            TOUCHES_BORDER: touches[1:],
        }
    )


def render_field(
    config: SyntheticPlateConfig | None = None,
    *,
    moa: str = CONTROL,
    treatment: str | None = None,
    concentration: float | None = None,
    well: str = "C03",
    site: int = 1,
    lab: LabEffects | None = None,
    batch: BatchEffects | None = None,
    plate: PlateEffects | None = None,
    seed: Seed = 0,
) -> SyntheticField:
    """Render one synthetic field in memory, without writing anything.

    Parameters
    ----------
    config
        Plate settings; the defaults of :class:`SyntheticPlateConfig` when None.
    moa
        Mechanism of action, ``"DMSO"`` for a control field.
    treatment
        Compound of that MoA; its strongest compound when None.
    concentration
        Concentration in micromolar; the highest of ``config.concentrations`` when None.
    well, site
        Position of the field (edge wells get edge effects).
    lab, batch, plate
        Technical effects; the reference instrument and no batch or plate
        effects when None.
    seed
        Seed of the field.

    Returns
    -------
    SyntheticField
        Image, nucleus and cell masks, per-cell table.

    Examples
    --------
    >>> field = render_field(moa="tubulin_inhibitor", seed=1)
    >>> field.image.shape
    (5, 256, 256)
    """
    config = config or SyntheticPlateConfig()
    well = normalize_well(well)
    if not config.format.contains(well):
        raise ValueError(f"Well {well} is not on a {config.format} plate.")
    if moa not in PHENOTYPES:
        raise ValueError(f"Unknown MoA {moa!r}: use one of {', '.join(PHENOTYPES)}.")
    if treatment is None:
        compound = compounds_of(moa)[0]
    else:
        compound = COMPOUNDS.get(treatment)
        if compound is None or compound.moa != moa:
            names = ", ".join(c.name for c in compounds_of(moa))
            raise ValueError(f"Unknown compound {treatment!r} for MoA {moa!r}: use one of {names}.")
    if compound.moa == CONTROL:
        concentration = 0.0
    elif concentration is None:
        concentration = max(config.concentrations)
    spec = FieldSpec(
        well=well,
        site=site,
        treatment=compound.name,
        moa=moa,
        concentration=float(concentration),
        response=compound.response(concentration),
    )
    return render_spec(
        spec, config, lab or LabEffects(), batch or BatchEffects(), plate or PlateEffects(), seed
    )
