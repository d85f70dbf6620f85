"""Painting the five Cell Painting stains onto a layout of cells.

Each stain is built from the cell layout and the cells' traits, in relative
units (about 1 in a bright part of a typical cell), before any optics:

- DNA: domed nuclei with granular chromatin and bright chromocentres.
- ER: a reticular network densest around the nucleus, fading towards the cell
  edge, plus the nuclear envelope.
- RNA: bright nucleoli, dimmer nucleoplasm, perinuclear cytoplasmic RNA.
- AGP: plasma membranes at cell borders, actin stress fibres along the cell's
  long axis, a compact Golgi beside the nucleus, and actin aggregates.
- Mito: tubular or punctate mitochondria scattered around the nucleus.

Per-cell traits become images through look-up tables indexed by the label
images, and point-like structures are splatted as impulses and blurred once,
so a field costs a few dozen vectorised array operations.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from .geometry import CellLayout
from .spectral import gaussian_blur, gaussian_noise

# Per-cell traits: trait name -> one value per cell (by cell id - 1).
Traits = dict[str, np.ndarray]

# Orientations of the precomputed stress-fibre textures.
_N_FIBRE_ANGLES = 6


def lut(values: np.ndarray) -> np.ndarray:
    """Look-up table id -> value with 0 for background (index 0); ``values`` are by id - 1."""
    table = np.zeros(len(values) + 1, np.float32)
    table[1:] = values
    return table


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth random texture with unit standard deviation (correlation length ``sigma``)."""
    return gaussian_noise(rng, shape, sigma)


def splat(
    shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, weights: np.ndarray, sigma: float
) -> np.ndarray:
    """Gaussian spots of peak ``weights`` at (ys, xs); points off the canvas are dropped."""
    image = np.zeros(shape, np.float32)
    iy = np.round(ys).astype(np.int64)
    ix = np.round(xs).astype(np.int64)
    inside = (iy >= 0) & (iy < shape[0]) & (ix >= 0) & (ix < shape[1])
    np.add.at(image, (iy[inside], ix[inside]), weights[inside].astype(np.float32))
    # Scale so that a lone point keeps its weight as the peak of its spot.
    return gaussian_blur(image, sigma) * np.float32(2 * math.pi * sigma**2)


def fibre_textures(
    rng: np.random.Generator, shape: tuple[int, int], scale: float, angles: np.ndarray
) -> np.ndarray:
    """Stress-fibre textures: thin bright lines along each of the given angle bins.

    White noise is filtered in Fourier space with a kernel long along the fibre
    direction and band-passed across it; the positive part gives lines.

    Parameters
    ----------
    rng
        Random generator.
    shape
        Canvas shape.
    scale
        Magnification (fibre length, width and spacing scale with it).
    angles
        Indices of the angle bins (of ``_N_FIBRE_ANGLES`` over 180 degrees) to compute;
        other bins are left at zero.

    Returns
    -------
    (``_N_FIBRE_ANGLES``, y, x) float32 array with values about 0..5.
    """
    spectrum = sfft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    fy = (2 * math.pi * sfft.fftfreq(shape[0]))[:, None].astype(np.float32)
    fx = (2 * math.pi * sfft.rfftfreq(shape[1]))[None, :].astype(np.float32)
    length, width, spacing = 10.0 * scale, 0.9 * scale, 4.0 * scale
    out = np.zeros((_N_FIBRE_ANGLES, *shape), np.float32)
    for k in angles:
        theta = k * math.pi / _N_FIBRE_ANGLES
        f_along = fx * math.cos(theta) + fy * math.sin(theta)
        f_across2 = (-fx * math.sin(theta) + fy * math.cos(theta)) ** 2
        kernel = np.exp(-0.5 * (length**2 * f_along**2 + width**2 * f_across2)) * (
            1 - np.exp(-0.5 * spacing**2 * f_across2)
        )
        lines = sfft.irfft2(spectrum * kernel, s=shape)
        lines = np.maximum(lines / (lines.std() + 1e-6), 0)
        out[k] = lines * lines * np.sqrt(lines)  # power 2.5: sparse, bright bundles
    return out


def _points_in_nuclei(
    rng: np.random.Generator, layout: CellLayout, counts: np.ndarray, reach: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random points inside each nucleus object (``counts`` per nucleus, within ``reach`` radii).

    Returns ys, xs and the cell id of each point, keeping only points that
    landed in a nucleus of their own cell.
    """
    idx = np.repeat(np.arange(len(counts)), counts)
    r = layout.nucleus_radii[idx] * reach * np.sqrt(rng.random(len(idx)))
    a = rng.uniform(0, 2 * math.pi, len(idx))
    ys = layout.nucleus_centres[idx, 0] + r * np.sin(a)
    xs = layout.nucleus_centres[idx, 1] + r * np.cos(a)
    parent = layout.nucleus_parent[idx]
    keep = _label_at(layout.nuclei, ys, xs) == parent
    return ys[keep], xs[keep], parent[keep]


def _label_at(labels: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Label under each point (0 off the canvas)."""
    iy = np.round(ys).astype(np.int64)
    ix = np.round(xs).astype(np.int64)
    inside = (iy >= 0) & (iy < labels.shape[0]) & (ix >= 0) & (ix < labels.shape[1])
    out = np.zeros(len(ys), labels.dtype)
    out[inside] = labels[iy[inside], ix[inside]]
    return out


def paint_dna(
    rng: np.random.Generator,
    layout: CellLayout,
    traits: Traits,
    scale: float,
    nucleus_edge: np.ndarray,
) -> np.ndarray:
    """DNA: domed nuclei, granular chromatin, chromocentres."""
    nuc = layout.nuclei
    dna, texture = lut(traits["dna"])[nuc], lut(traits["chromatin_texture"])[nuc]
    dome = 1.0 - 0.3 * np.minimum(layout.nucleus_distance, 1.0) ** 2
    grain = np.clip(1.0 + texture * smooth_noise(rng, nuc.shape, 0.9 * scale), 0.2, None)
    counts = rng.poisson(6, len(layout.nucleus_radii))
    ys, xs, parent = _points_in_nuclei(rng, layout, counts, 0.8)
    weight = 2.2 * traits["chromatin_texture"][parent - 1] * traits["dna"][parent - 1]
    spots = splat(nuc.shape, ys, xs, weight, 0.9 * scale)
    return (dna * dome * grain + spots) * nucleus_edge


def paint_er(
    rng: np.random.Generator,
    layout: CellLayout,
    traits: Traits,
    scale: float,
    nucleus_edge: np.ndarray,
    dist_nucleus: np.ndarray,
    radius: np.ndarray,
) -> np.ndarray:
    """ER: perinuclear reticulum fading to the cell edge, and the nuclear envelope."""
    cells, nuc = layout.cells, layout.nuclei
    cyto = (cells > 0) & (nuc == 0)
    spread = lut(traits["er_spread"])[cells] * radius[cells] + 1e-3
    fine = smooth_noise(rng, cells.shape, 0.8 * scale)
    coarse = smooth_noise(rng, cells.shape, 2.5 * scale)
    network = np.clip(1.0 + 1.6 * lut(traits["er_texture"])[cells] * (fine - 0.6 * coarse), 0, None)
    level = 0.12 + 0.88 * np.exp(-dist_nucleus / spread)
    er_cyto = lut(traits["er"])[cells] * level * network * cyto
    rim = np.exp(-(((1.0 - np.minimum(layout.nucleus_distance, 1.0)) / 0.12) ** 2))
    envelope = lut(traits["er"])[nuc] * (0.08 + 0.55 * rim) * nucleus_edge
    return er_cyto + envelope


def paint_rna(
    rng: np.random.Generator,
    layout: CellLayout,
    traits: Traits,
    scale: float,
    nucleus_edge: np.ndarray,
    dist_nucleus: np.ndarray,
    radius: np.ndarray,
) -> np.ndarray:
    """RNA: nucleoli, nucleoplasm and perinuclear cytoplasmic RNA."""
    cells, nuc = layout.cells, layout.nuclei
    cyto = (cells > 0) & (nuc == 0)
    rna_c = lut(traits["rna"])[cells]
    granular = np.clip(1.0 + 0.35 * smooth_noise(rng, cells.shape, 0.7 * scale), 0, None)
    cytoplasm = rna_c * 0.5 * (0.15 + np.exp(-dist_nucleus / (0.35 * radius[cells] + 1e-3)))
    nucleoplasm = lut(traits["rna"])[nuc] * 0.4 * nucleus_edge
    mean_count = traits["nucleoli_count"][layout.nucleus_parent - 1]
    counts = np.maximum(rng.poisson(mean_count), 1)
    ys, xs, parent = _points_in_nuclei(rng, layout, counts, 0.5)
    weight = 1.6 * traits["nucleoli"][parent - 1]
    nucleoli = splat(cells.shape, ys, xs, weight, 1.4 * scale) * nucleus_edge
    return cytoplasm * granular * cyto + nucleoplasm + nucleoli


def paint_agp(
    rng: np.random.Generator,
    layout: CellLayout,
    traits: Traits,
    scale: float,
    radius: np.ndarray,
    nucleus_radius: np.ndarray,
) -> np.ndarray:
    """AGP: plasma membranes, stress fibres, Golgi and actin aggregates."""
    cells, nuc = layout.cells, layout.nuclei
    shape = cells.shape
    inside = cells > 0
    agp = lut(traits["agp"])[cells]
    borders = find_boundaries(cells, mode="inner").astype(np.float32)
    # Membranes vary in brightness along their length (ruffles, WGA patches).
    ruffles = np.clip(1.0 + 0.35 * smooth_noise(rng, shape, 2.0 * scale), 0.2, None)
    membrane = 1.8 * gaussian_blur(borders, 0.7 * scale) * agp * ruffles
    # Each cell shows the fibre texture closest to its long axis.
    angle_bin = (
        np.round((layout.orientation % math.pi) / (math.pi / _N_FIBRE_ANGLES)).astype(np.int64)
        % _N_FIBRE_ANGLES
    )
    fibres = fibre_textures(rng, shape, scale, np.unique(angle_bin[layout.cell_ids - 1]))
    choice = np.zeros(len(layout.orientation) + 1, np.int64)
    choice[1:] = angle_bin
    fibre = np.take_along_axis(fibres, choice[cells][None], axis=0)[0]
    # Patchy: fibres are bundled in some parts of a cell and absent in others.
    patches = np.clip(0.6 + 0.6 * smooth_noise(rng, shape, 5.0 * scale), 0, None)
    actin = 0.2 * lut(traits["actin"])[cells] * fibre * patches * np.where(nuc > 0, 0.5, 1.0)

    ids = layout.cell_ids
    centres = layout.cell_centres[ids - 1]
    # Golgi: a crescent of elements hugging one side of the nucleus; dispersal
    # (golgi_spread > 1) scatters them around the nucleus and further out.
    n_golgi = 10
    idx = np.repeat(np.arange(len(ids)), n_golgi)
    spread = traits["golgi_spread"][ids - 1][idx]
    side = rng.uniform(0, 2 * math.pi, len(ids))[idx] + 0.45 * spread * rng.standard_normal(
        len(idx)
    )
    dist = nucleus_radius[ids - 1][idx] + scale * (1.5 + 2.0 * spread * rng.random(len(idx)))
    gy = centres[idx, 0] + dist * np.sin(side)
    gx = centres[idx, 1] + dist * np.cos(side)
    owner = ids[idx]
    keep = _label_at(cells, gy, gx) == owner
    golgi = splat(shape, gy[keep], gx[keep], 1.0 * traits["golgi"][owner[keep] - 1], 1.0 * scale)
    # Actin aggregates: bright foci scattered in the cytoplasm.
    n_foci = rng.poisson(traits["agp_foci"][ids - 1])
    fidx = np.repeat(np.arange(len(ids)), n_foci)
    fr = nucleus_radius[ids - 1][fidx] + rng.random(len(fidx)) * 0.6 * radius[ids][fidx]
    fa = rng.uniform(0, 2 * math.pi, len(fidx))
    fy, fx = centres[fidx, 0] + fr * np.sin(fa), centres[fidx, 1] + fr * np.cos(fa)
    fowner = ids[fidx]
    fkeep = _label_at(cells, fy, fx) == fowner
    foci = splat(shape, fy[fkeep], fx[fkeep], np.full(fkeep.sum(), 2.0), 1.2 * scale)
    return (0.18 * agp + actin + golgi + foci) * inside + membrane


def paint_mito(
    rng: np.random.Generator,
    layout: CellLayout,
    traits: Traits,
    scale: float,
    radius: np.ndarray,
    nucleus_radius: np.ndarray,
    nominal_radius: float,
) -> np.ndarray:
    """Mito: tubules (or, when fragmented, puncta) scattered around the nucleus."""
    cells, nuc = layout.cells, layout.nuclei
    ids = layout.cell_ids
    centres = layout.cell_centres[ids - 1]
    r_cell, r_nuc = radius[ids], nucleus_radius[ids - 1]
    count = rng.poisson(traits["mito_count"][ids - 1] * 40 * (r_cell / nominal_radius) ** 2)
    m = np.repeat(np.arange(len(ids)), count)
    reach = np.abs(rng.standard_normal(len(m))) * 0.5 * traits["mito_spread"][ids - 1][m]
    r = r_nuc[m] + reach * np.maximum(r_cell[m] - r_nuc[m], 1.0)
    a = rng.uniform(0, 2 * math.pi, len(m))
    start_y, start_x = centres[m, 0] + r * np.sin(a), centres[m, 1] + r * np.cos(a)
    # Each mitochondrion is a short chain of points; fragmented ones are single puncta.
    length = 1 + rng.poisson(4.0 * traits["mito_length"][ids - 1][m])
    heading = rng.uniform(0, 2 * math.pi, len(m))
    p = np.repeat(np.arange(len(m)), length)
    step = (np.arange(len(p)) - np.repeat(np.cumsum(length) - length, length)) * scale
    ys = start_y[p] + step * np.sin(heading[p])
    xs = start_x[p] + step * np.cos(heading[p])
    owner = ids[m][p]
    under = _label_at(cells, ys, xs)
    over_nucleus = _label_at(nuc, ys, xs) > 0
    weight = 0.7 * traits["mito"][owner - 1] * np.where(over_nucleus, 0.25, 1.0)
    keep = under == owner
    puncta = splat(cells.shape, ys[keep], xs[keep], weight[keep], 0.8 * scale)
    diffuse = 0.06 * lut(traits["mito"])[cells] * ((cells > 0) & (nuc == 0))
    return puncta + diffuse


def paint_stains(
    rng: np.random.Generator,
    layout: CellLayout,
    traits: Traits,
    scale: float,
    nucleus_radius: float,
    nominal_radius: float,
) -> np.ndarray:
    """All five stains (DNA, ER, RNA, AGP, Mito) of a layout, shape (5, y, x), float32.

    Parameters
    ----------
    rng
        Random generator.
    layout
        Cells and nuclei from :func:`~.geometry.grow_cells`.
    traits
        Per-cell traits, arrays by cell id - 1.
    scale
        Pixels per reference pixel (the lab's magnification): sizes of
        sub-cellular structures.
    nucleus_radius
        Mean nucleus radius in pixels (before each cell's ``nucleus_size``).
    nominal_radius
        Mean cell radius in pixels (before each cell's ``cell_size``); the
        number of mitochondria scales with a cell's area relative to it.
    """
    nucleus_edge = np.clip((1.0 - layout.nucleus_distance) / 0.12, 0, 1) * (layout.nuclei > 0)
    nucleus_edge = nucleus_edge.astype(np.float32)
    dist_nucleus = ndi.distance_transform_edt(layout.nuclei == 0).astype(np.float32)
    radius = lut(layout.cell_radii)
    r_nuc = nucleus_radius * traits["nucleus_size"]
    stains = np.stack(
        [
            paint_dna(rng, layout, traits, scale, nucleus_edge),
            paint_er(rng, layout, traits, scale, nucleus_edge, dist_nucleus, radius),
            paint_rna(rng, layout, traits, scale, nucleus_edge, dist_nucleus, radius),
            paint_agp(rng, layout, traits, scale, radius, r_nuc),
            paint_mito(rng, layout, traits, scale, radius, r_nuc, nominal_radius),
        ]
    ).astype(np.float32, copy=False)
    # Stains are amounts: no negative values (Fourier blurs ring a little).
    return np.maximum(stains, 0, out=stains)
