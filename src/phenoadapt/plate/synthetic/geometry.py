"""Where cells are and what shape they have: nuclei seeded in a field, cells grown around them.

Nuclei are placed by dart throwing with a minimum spacing, over a smooth
random density map so cells form loose colonies with crowded and sparse
parts.  Each nucleus is an ellipse with a wobbly outline; each cell is a larger
wobbly ellipse around (and a little off) its nucleus.  Cells are grown from
their nuclei by a watershed on the normalised distance to the cell centres, so
crowded cells touch along Voronoi-like borders while lonely cells stop at
their own outline, and every cell contains its nucleus.  Some cells carry two
nuclei (multinucleation).

Everything is drawn on a *canvas* larger than the field, so cells are cut by
the field's edge as on a real image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

# Angular resolution of the outline tables (radius as a function of angle).
_N_ANGLES = 128
_ANGLES = np.linspace(-math.pi, math.pi, _N_ANGLES, endpoint=False)


@dataclass
class CellLayout:
    """Label images and per-object geometry of the cells on a canvas.

    Attributes
    ----------
    nuclei
        int32 label image: the id of the cell a nucleus belongs to, 0 elsewhere.
    cells
        int32 label image of whole cells (nucleus included), 0 for background.
    nucleus_distance
        Distance to the nearest nucleus centre in units of that nucleus' radius
        along the same direction (< 1 inside a nucleus).
    cell_ids
        Ids of the cells that made it onto the canvas (a subset of 1..n).
    nucleus_centres, nucleus_radii, nucleus_parent
        One row per nucleus (cells with two nuclei have two rows): centre (y, x),
        mean radius in pixels and the id of its cell.
    cell_centres
        (n, 2) centre (y, x) of each cell's primary nucleus, by id - 1.
    cell_radii
        (n,) nominal cell radius in pixels, by id - 1.
    orientation
        (n,) long-axis angle of each cell in radians, by id - 1.
    n_nuclei
        (n,) number of nuclei of each cell, by id - 1.
    """

    nuclei: np.ndarray
    cells: np.ndarray
    nucleus_distance: np.ndarray
    cell_ids: np.ndarray
    nucleus_centres: np.ndarray
    nucleus_radii: np.ndarray
    nucleus_parent: np.ndarray
    cell_centres: np.ndarray
    cell_radii: np.ndarray
    orientation: np.ndarray
    n_nuclei: np.ndarray


def density_map(rng: np.random.Generator, shape: tuple[int, int], length: float) -> np.ndarray:
    """A smooth random map of relative cell density (mean about 1) for loose colonies.

    Parameters
    ----------
    rng
        Random generator.
    shape
        Canvas shape.
    length
        Correlation length of the clusters in pixels.
    """
    step = 8
    coarse_shape = (shape[0] // step + 2, shape[1] // step + 2)
    noise = ndi.gaussian_filter(rng.standard_normal(coarse_shape), length / step, mode="wrap")
    noise /= noise.std() + 1e-9
    return np.exp(0.6 * noise - 0.18)


def place_nuclei(
    rng: np.random.Generator,
    shape: tuple[int, int],
    spacing: np.ndarray,
    density: np.ndarray,
    attempts: int = 24,
) -> np.ndarray:
    """Positions for cells with given spacing radii, by dart throwing over a density map.

    Parameters
    ----------
    rng
        Random generator.
    shape
        Canvas shape.
    spacing
        (n,) exclusion radius of each cell; two cells i, j keep their centres at
        least ``spacing[i] + spacing[j]`` apart.
    density
        Coarse density map from :func:`density_map` (cell of 8 x 8 pixels).
    attempts
        Candidate positions tried per cell before it is dropped.

    Returns
    -------
    (n, 2) float array of (y, x) centres, NaN for cells that found no room.
    """
    n = len(spacing)
    centres = np.full((n, 2), np.nan)
    placed = np.zeros((0, 2))
    placed_r = np.zeros(0)
    w_max = density.max()
    for i in range(n):
        cand = rng.random((attempts, 2)) * np.array(shape)
        weight = density[(cand[:, 0] // 8).astype(int), (cand[:, 1] // 8).astype(int)]
        keep = rng.random(attempts) * w_max < weight
        cand = cand[keep]
        if len(cand) == 0:
            continue
        if len(placed):
            dist = np.hypot(
                cand[:, None, 0] - placed[None, :, 0], cand[:, None, 1] - placed[None, :, 1]
            )
            ok = np.all(dist >= spacing[i] + placed_r[None, :], axis=1)
            cand = cand[ok]
        if len(cand):
            centres[i] = cand[0]
            placed = np.vstack([placed, cand[:1]])
            placed_r = np.append(placed_r, spacing[i])
    return centres


def outline(
    rng: np.random.Generator,
    radius: float,
    elongation: float,
    angle: float,
    irregularity: float,
    harmonics: range,
) -> np.ndarray:
    """Radius of a wobbly ellipse as a function of angle (table over ``_ANGLES``).

    The ellipse keeps the area of a circle of ``radius``; ``irregularity``
    scales random Fourier harmonics of its outline.
    """
    a = radius * math.sqrt(1 + elongation)
    b = radius / math.sqrt(1 + elongation)
    t = _ANGLES - angle
    r = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    k = np.asarray(harmonics, float)[:, None]
    amplitude = irregularity / np.sqrt(k) * rng.standard_normal((len(k), 1))
    phase = rng.uniform(0, 2 * math.pi, (len(k), 1))
    wobble = (amplitude * np.cos(k * _ANGLES + phase)).sum(axis=0)
    return r * np.clip(1 + wobble, 0.4, None)


def _stamp(
    centre: np.ndarray, table: np.ndarray, label: int, best: np.ndarray, labels: np.ndarray
) -> None:
    """Write the normalised distance of one outline into ``best`` where it is the smallest."""
    extent = float(table.max()) + 1.5
    h, w = best.shape
    y0, y1 = max(int(centre[0] - extent), 0), min(int(centre[0] + extent) + 2, h)
    x0, x1 = max(int(centre[1] - extent), 0), min(int(centre[1] + extent) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(centre[0])
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(centre[1])
    idx = ((np.arctan2(dy, dx) + math.pi) * (_N_ANGLES / (2 * math.pi))).astype(np.int32)
    d = np.hypot(dy, dx) / table.astype(np.float32)[idx % _N_ANGLES]
    view, lab = best[y0:y1, x0:x1], labels[y0:y1, x0:x1]
    closer = d < view
    view[closer] = d[closer]
    lab[closer] = label


def grow_cells(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centres: np.ndarray,
    traits: dict[str, np.ndarray],
    binucleate: np.ndarray,
    nucleus_radius: float,
    cell_radius: float,
) -> CellLayout:
    """Draw nuclei and cells at ``centres`` with the shapes given by their traits.

    Parameters
    ----------
    rng
        Random generator.
    shape
        Canvas shape.
    centres
        (n, 2) primary nucleus centres; rows with NaN (cells that found no room) are skipped.
    traits
        Per-cell traits (see :mod:`.phenotypes`), each an array of n values.
    binucleate
        (n,) bool: cells drawn with two nuclei.
    nucleus_radius, cell_radius
        Mean radii in pixels, already scaled for magnification and batch.
    """
    n = len(centres)
    best_n = np.full(shape, np.inf, np.float32)
    best_c = np.full(shape, np.inf, np.float32)
    nuc_lab = np.zeros(shape, np.int32)
    cell_lab = np.zeros(shape, np.int32)  # nearest cell outline, used only for the landscape
    two = binucleate
    orientation = rng.uniform(-math.pi, math.pi, n)
    nuc_rows: list[tuple[float, float, float, int]] = []
    radii = cell_radius * traits["cell_size"]
    for i in range(n):
        if np.isnan(centres[i, 0]):
            continue
        cell_id = i + 1
        r_nuc = nucleus_radius * traits["nucleus_size"][i]
        angle = orientation[i] + 0.3 * rng.standard_normal()
        if two[i]:
            # Two daughter nuclei side by side, each a little smaller.
            r_nuc *= 0.85
            step = 1.05 * r_nuc * np.array([math.sin(angle), math.cos(angle)])
            nuc_centres = [centres[i] - step, centres[i] + step]
        else:
            nuc_centres = [centres[i]]
        for c in nuc_centres:
            table = outline(
                rng,
                r_nuc,
                traits["nucleus_elongation"][i],
                angle,
                traits["nucleus_irregularity"][i],
                range(2, 6),
            )
            _stamp(c, table, cell_id, best_n, nuc_lab)
            nuc_rows.append((c[0], c[1], r_nuc, cell_id))
        # The cell sits a little off its nucleus, elongated along the same axis.
        shift = 0.2 * radii[i] * rng.random()
        direction = rng.uniform(0, 2 * math.pi)
        cell_centre = centres[i] + shift * np.array([math.sin(direction), math.cos(direction)])
        table = outline(
            rng,
            radii[i] * (1.25 if two[i] else 1.0),
            traits["cell_elongation"][i],
            orientation[i],
            traits["cell_irregularity"][i],
            range(2, 8),
        )
        _stamp(cell_centre, table, cell_id, best_c, cell_lab)

    nuclei = np.where(best_n < 1, nuc_lab, 0)
    landscape = np.where(np.isfinite(best_c), best_c, 10.0)
    cells = watershed(landscape, markers=nuclei, mask=(best_c < 1) | (nuclei > 0))
    cell_ids = np.unique(nuclei[nuclei > 0]).astype(np.int32)
    nuc_arr = np.array(nuc_rows, float).reshape(-1, 4)
    n_nuclei = np.bincount(nuc_arr[:, 3].astype(int), minlength=n + 1)[1:]
    return CellLayout(
        nuclei=nuclei.astype(np.int32),
        cells=cells.astype(np.int32),
        nucleus_distance=best_n,
        cell_ids=cell_ids,
        nucleus_centres=nuc_arr[:, :2],
        nucleus_radii=nuc_arr[:, 2],
        nucleus_parent=nuc_arr[:, 3].astype(np.int32),
        cell_centres=centres,
        cell_radii=radii,
        orientation=orientation,
        n_nuclei=n_nuclei,
    )
