"""The UMAP dock's maps and their batch-mixing scores (no Qt: shared with the profile maps).

:class:`UmapMaps` holds what one fit produced (points, coordinates per space,
mixing scores); :func:`plate_mixing` scores how much of the plate the features
still tell.  :mod:`.umap_dock` draws them and :mod:`.profile_maps` makes them
from measurement profiles.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..errors import Cancelled, PhenoadaptError
from ..evaluate import BatchMixing, batch_mixing
from .scatter import encode_categories, stratified_subsample

#: Treated points the mixing scores are computed on (kNN and LISI are quadratic in it).
MIXING_SAMPLES = 2000
MIXING_NEIGHBOURS = 5
MIXING_PERPLEXITY = 30.0


@dataclass
class UmapMaps:
    """UMAP coordinates and mixing scores of one run result at one level.

    Attributes
    ----------
    level
        ``"cell"`` or ``"well"``.
    points
        Metadata of each point (plate, well, treatment, MoA, role, prediction).
    point_of_cell
        For each row of ``result.cells``, the index of its point (-1 for a cell
        without features: the pipeline gives NaN features to cells it could not
        predict).
    coordinates
        ``(n_points, 2)`` UMAP coordinates per space (``"before"``, ``"after"``).
    mixing
        Mixing scores per space, or the reason why there are none.
    n_neighbors, seed
        The UMAP settings (the same for every space).
    n_no_features
        Cells without features (NaN rows), hence without a point.
    titles, source_note
        Panel titles per space and a note, for maps not made of the run result.
    """

    level: str
    points: pd.DataFrame
    point_of_cell: np.ndarray
    coordinates: dict[str, np.ndarray]
    mixing: dict[str, BatchMixing | str]
    n_neighbors: int
    seed: int
    n_no_features: int = 0
    titles: dict[str, str] = field(default_factory=dict)
    source_note: str = ""

    @property
    def noun(self) -> str:
        """What a point is, plural."""
        return "cells" if self.level == "cell" else "wells"

    @property
    def n_unmapped(self) -> int:
        """Cells left off the maps: without features, or beyond the cell cap."""
        return int(np.count_nonzero(self.point_of_cell < 0))

    def cells_of(self, points: np.ndarray) -> np.ndarray:
        """Rows of ``result.cells`` that belong to these points."""
        return np.flatnonzero(np.isin(self.point_of_cell, np.asarray(points, dtype=np.int64)))

    def cell_coordinates(self) -> pd.DataFrame:
        """Per-cell coordinates (rows of ``result.cells``): ``umap_<space>_1/2`` per space.

        A cell takes its point's coordinates (its well's, for a well-level map);
        cells without a point get NaN.
        """
        has_point = self.point_of_cell >= 0
        columns = {}
        for space, xy in self.coordinates.items():
            values = np.full((len(self.point_of_cell), 2), np.nan)
            values[has_point] = xy[self.point_of_cell[has_point]]
            columns[f"umap_{space}_1"] = values[:, 0]
            columns[f"umap_{space}_2"] = values[:, 1]
        return pd.DataFrame(columns)

    def points_of(self, rows: np.ndarray) -> np.ndarray:
        """Points that hold these rows of ``result.cells``."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[(rows >= 0) & (rows < len(self.point_of_cell))]
        points = np.unique(self.point_of_cell[rows])
        return points[points >= 0]


def plate_mixing(points: pd.DataFrame, features: np.ndarray, seed: int = 0) -> BatchMixing | str:
    """Batch-mixing scores by plate of treated points, or why they cannot be computed.

    At most :data:`MIXING_SAMPLES` treated points are scored (a seeded sample
    stratified by plate); controls are left out, as in ``phenoadapt evaluate``.
    """
    treated = np.ones(len(points), dtype=bool)
    if schema.ROLE in points.columns:
        treated = (points[schema.ROLE].astype(str) != schema.Role.CONTROL.value).to_numpy()
    plates = points[schema.PLATE].astype(str).to_numpy()
    if len(np.unique(plates[treated])) < 2:
        return "needs treated cells on two plates or more"
    rows = np.flatnonzero(treated)
    _, codes = encode_categories(plates[rows])
    rows = rows[stratified_subsample(codes, MIXING_SAMPLES, seed)]
    # LISI weighs 3 x perplexity neighbours: shrink the perplexity for small maps.
    perplexity = min(MIXING_PERPLEXITY, (len(rows) - 1) // 3)
    if perplexity < 2:
        return f"needs more treated points than {len(rows)}"
    values = features[rows]
    # Dead ReLU units give constant columns, which the mixing scores refuse: they carry nothing.
    values = values[:, np.ptp(values, axis=0) > 0]
    table = pd.DataFrame(values, columns=schema.embedding_columns(values.shape[1]))
    table[schema.PLATE] = plates[rows]
    try:
        return batch_mixing(
            table,
            list(table.columns[:-1]),
            role_column=None,
            n_neighbors=MIXING_NEIGHBOURS,
            perplexity=perplexity,
        )
    except PhenoadaptError as exc:
        return str(exc)


def map_events(
    job: Generator[tuple[str, Any], None, Any], what: str
) -> Generator[tuple[str, Any], None, Any]:
    """A map job for a worker thread: errors become ``("error", message)`` events.

    A Cancel (the child process ended) ends it quietly; a user error is its
    message; anything else is reported as ``"<what> failed: ..."`` so the dock
    answers and napari never crashes.
    """
    try:
        return (yield from job)
    except Cancelled:
        return None
    except PhenoadaptError as exc:
        yield "error", str(exc)
    except Exception as exc:  # the dock must report, never crash napari
        yield "error", f"{what} failed: {type(exc).__name__}: {exc}"
    return None
