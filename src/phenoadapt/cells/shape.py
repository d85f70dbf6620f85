"""Shape features of one object, computed from its bounding-box mask in a few numpy calls.

The definitions are scikit-image's ``regionprops`` (the CellProfiler-style
``AreaShape`` columns of :mod:`.measure` were first computed with it), but
each object costs a handful of array operations instead of a Python property
chain per feature.  What ``regionprops`` spent most of its time on:

- ``convex_hull_image`` tests every pixel of the bounding box against the hull
  polygon; here the hull's pixels are counted row by row from the polygon's
  edges (a convex polygon covers one interval per row);
- ``feret_diameter_max`` traces the hull image's contour with marching squares;
  here the contour points (the midpoints of the pixel edges between the hull
  image and the outside, which is where a 0.5 level crosses them) come
  straight from the per-row intervals.

Perimeter and Euler number use the same pixel configurations and weights as
``skimage.measure.perimeter`` (4-neighbourhood) and ``euler_number``
(8-connectivity), so they are identical; the moment-based features and the
convex area and Feret diameter agree to floating-point rounding
(``tests/test_cells_shape.py`` checks every column against ``regionprops_table``
on real cells).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError

#: Order of the values returned by :func:`object_shape` (regionprops names).
SHAPE_PROPERTIES = (
    "area",
    "perimeter",
    "eccentricity",
    "solidity",
    "extent",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "euler_number",
    "equivalent_diameter_area",
    "feret_diameter_max",
    "area_convex",
)

# skimage.measure.perimeter: weight of a border pixel by its code (1 for itself,
# 2 per 4-neighbour and 10 per diagonal neighbour on the border).
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2
# skimage.measure.euler_number, 8-connectivity: contribution of each 2 x 2 configuration.
_EULER_COEFS = np.array([0, 0, 0, 0, 0, 0, -1, 0, 1, 0, 0, 0, 0, 0, -1, 0])
# A grid point this close to a hull edge lies on it (the hull's vertices are half-integers).
_EPS = 1e-9


def object_shape(mask: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The :data:`SHAPE_PROPERTIES` of one object.

    Parameters
    ----------
    mask
        Boolean image of the object in its bounding box (``regionprops``'s
        ``image``): the box is the object's extent, so every row and column
        holds at least one pixel.
    ys, xs
        ``np.nonzero(mask)``, shared with the intensity features.

    Returns
    -------
    numpy.ndarray
        float64 values in the order of :data:`SHAPE_PROPERTIES`; orientation in
        radians, as ``regionprops`` gives it.
    """
    area = float(len(ys))
    major, minor, eccentricity, orientation = _moment_features(ys, xs)
    convex_area, feret = _convex_features(mask)
    return np.array(
        [
            area,
            perimeter(mask),
            eccentricity,
            area / convex_area,
            area / mask.size,
            major,
            minor,
            orientation,
            euler_number(mask),
            np.sqrt(4 * area / np.pi),
            feret,
            convex_area,
        ]
    )


def perimeter(mask: np.ndarray) -> float:
    """``skimage.measure.perimeter(mask, 4)``: weighted count of the border pixels."""
    padded = _pad(mask)
    inner = padded[1:-1, 1:-1]
    eroded = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    border = inner & ~eroded
    b = _pad(border).view(np.uint8)
    code = (
        b[1:-1, 1:-1]
        + 2 * (b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:])
        + 10 * (b[:-2, :-2] + b[:-2, 2:] + b[2:, :-2] + b[2:, 2:])
    )
    return float(np.bincount(code[border], minlength=50) @ _PERIMETER_WEIGHTS)


def euler_number(mask: np.ndarray) -> float:
    """``skimage.measure.euler_number(mask, 2)``: objects minus holes, 8-connected objects."""
    b = _pad(mask).view(np.uint8)
    # The 2 x 2 configuration codes of skimage's convolution kernel [[0,0,0],[0,1,4],[0,2,8]].
    code = b[1:, 1:] + 2 * b[:-1, 1:] + 4 * b[1:, :-1] + 8 * b[:-1, :-1]
    return float(np.bincount(code.ravel(), minlength=16) @ _EULER_COEFS)


def _moment_features(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float, float, float]:
    """Major and minor axis lengths, eccentricity and orientation from the second moments.

    ``regionprops``'s inertia tensor is ``[[var_x, -cov], [-cov, var_y]]``
    (row = axis 0): its eigenvalues give the axes (4 sqrt(l)), and the
    orientation is the angle between axis 0 and the major axis.
    """
    dy = ys - ys.mean()
    dx = xs - xs.mean()
    n = len(ys)
    a, c = float(dx @ dx) / n, float(dy @ dy) / n  # tensor diagonal: var_x, var_y
    b = -float(dy @ dx) / n
    half_trace, radius = (a + c) / 2, np.hypot((a - c) / 2, b)
    l1, l2 = max(half_trace + radius, 0.0), max(half_trace - radius, 0.0)
    eccentricity = 0.0 if l1 == 0 else np.sqrt(1 - l2 / l1)
    if a - c == 0:
        orientation = np.pi / 4 if b < 0 else -np.pi / 4
    else:
        orientation = 0.5 * np.arctan2(-2 * b, c - a)
    return 4 * np.sqrt(l1), 4 * np.sqrt(l2), float(eccentricity), float(orientation)


def _convex_features(mask: np.ndarray) -> tuple[float, float]:
    """Convex area and maximum Feret diameter, as ``regionprops`` defines them.

    The hull is ``convex_hull_image``'s: the hull of the midpoints of the outer
    pixels' edges (the first and last pixel of each row and column suffice),
    and its image holds the pixel centres inside or on it.
    """
    lo, hi = _hull_rows(_hull_vertices(mask))
    filled = hi >= lo
    convex_area = float((hi[filled] - lo[filled] + 1).sum())
    return convex_area, _feret_of_rows(lo, hi)


def _hull_vertices(mask: np.ndarray) -> np.ndarray:
    """Vertices (row, col) of ``convex_hull_image``'s hull polygon.

    ``convex_hull_image`` takes the edge midpoints of each row's and column's
    first and last pixels; the rows' alone span the same hull (every other
    pixel's midpoints lie between those of its row's ends), and of those only
    the ones :func:`_chain_points` keeps can be vertices.
    """
    w = mask.shape[1]
    rows = np.flatnonzero(mask.any(axis=1)).astype(np.float64)  # a cytoplasm may skip rows
    first = mask[rows.astype(np.intp)].argmax(axis=1).astype(np.float64)
    last = w - 1 - mask[rows.astype(np.intp), ::-1].argmax(axis=1).astype(np.float64)
    heights = np.concatenate([rows - 0.5, rows, rows + 0.5])
    order = np.argsort(heights, kind="stable")
    points = _chain_points(
        heights[order],
        np.concatenate([first, first - 0.5, first])[order],
        np.concatenate([last, last + 0.5, last])[order],
    )
    hull = ConvexHull(points)
    return hull.points[hull.vertices]


def _chain_points(heights: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The points (height, left) and (height, right) that can be convex-hull vertices.

    ``heights`` ascending.  Going down a convex outline, its left side moves
    left and then right: a left point is a vertex only if it lies strictly left
    of every point above it or of every point below it (the same, mirrored, on
    the right).  For pixel outlines this keeps the ends of the straight runs,
    a few times fewer points than the outline has, for the hull to process.
    """

    def extreme(values: np.ndarray) -> np.ndarray:
        above = np.minimum.accumulate(np.concatenate([[np.inf], values[:-1]]))
        below = np.minimum.accumulate(np.concatenate([[np.inf], values[:0:-1]]))[::-1]
        return (values < above) | (values < below)

    keep_left = extreme(left)
    keep_right = extreme(-right)
    return np.concatenate(
        [
            np.stack([heights[keep_left], left[keep_left]], axis=1),
            np.stack([heights[keep_right], right[keep_right]], axis=1),
        ]
    )


def _hull_rows(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last column of the grid points inside (or on) a convex polygon, per row.

    Rows run from the first to the last integer row the polygon reaches; a
    row that holds no grid point of the polygon (possible between the parts of
    a split cytoplasm) gets ``lo = inf``, ``hi = -inf``.
    """
    r0, c0 = vertices[:, 0], vertices[:, 1]
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    rows = np.arange(np.ceil(r0.min() - _EPS), np.floor(r0.max() + _EPS) + 1)[:, None]
    dr = r1 - r0
    slanted = dr != 0  # horizontal edges end on slanted ones, which give their columns
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (rows - r0) / np.where(slanted, dr, 1.0)
    crossing = slanted & (t >= -_EPS) & (t <= 1 + _EPS)
    cols = c0 + t * (c1 - c0)
    lo = np.ceil(np.where(crossing, cols, np.inf).min(axis=1) - _EPS)
    hi = np.floor(np.where(crossing, cols, -np.inf).max(axis=1) + _EPS)
    empty = hi < lo
    lo[empty], hi[empty] = np.inf, -np.inf
    return lo, hi


def _feret_of_rows(lo: np.ndarray, hi: np.ndarray) -> float:
    """Largest distance between two contour points of the image made of these row intervals.

    A 0.5 level crosses the edge between a hull pixel and an outside pixel at
    its midpoint: (row, lo - 0.5) and (row, hi + 0.5) on each row, and
    (row +/- 0.5, col) on the columns that a row covers and its neighbour
    does not.  Distance from a point is convex along a segment, so at each
    height only the leftmost and rightmost contour points can be farthest
    apart, and of those only the hull's vertices (:func:`_chain_points`).
    """
    filled = np.flatnonzero(hi >= lo)  # rows that hold hull pixels
    rows, lo, hi = filled.astype(np.float64), lo[filled], hi[filled]
    # Half rows: each row's ends seen from above and below (dominated ones are harmless).
    heights = np.concatenate([rows - 0.5, rows, rows + 0.5])
    order = np.argsort(heights, kind="stable")
    pts = _chain_points(
        heights[order],
        np.concatenate([lo, lo - 0.5, lo])[order],
        np.concatenate([hi, hi + 0.5, hi])[order],
    )
    try:
        pts = pts[ConvexHull(pts).vertices]
    except QhullError:  # all on one line (a one-row or one-column hull): use them all
        pass
    diff = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((diff**2).sum(axis=-1).max()))


def _pad(mask: np.ndarray) -> np.ndarray:
    """``np.pad(mask, 1)`` (zeros around), without its overhead on small arrays."""
    out = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=mask.dtype)
    out[1:-1, 1:-1] = mask
    return out
