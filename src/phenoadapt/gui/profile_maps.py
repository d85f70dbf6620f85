"""Measurement profiles of the cells segmented in the viewer, for the UMAP and Export docks.

A plate that no model fits still gets a picture: the Segment dock leaves one
``cells`` Labels layer per field whose ``features`` are the field's per-cell
measurements.  Here they become per-well profiles
(:func:`phenoadapt.profiles.build_profiles`), annotated from the session's plate
maps, and two feature spaces for the UMAP dock:

- **before**: the raw per-well medians, standardized over all wells (so that no
  feature dominates by its units; plate effects stay);
- **after**: robust z-score to each plate's own control wells, then feature
  selection (what ``phenoadapt segment --per-well`` writes).

Nothing here draws; the science is in :mod:`phenoadapt.profiles.measurements`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..errors import PhenoadaptError
from ..plate.platemap.model import NotEnoughControlsError
from ..profiles.measurements import (
    build_profiles,
    profile_activity,
    profile_features,
    well_profiles,
)
from .layers import META_KEY

#: The UMAP dock's name for this source, beside the model embeddings.
PROFILES_SOURCE = "Profiles: measurements"
#: Panel titles, short like the model's ("Before adaptation (ERM)"); the dock's note says more.
TITLES = {
    "before": "Before normalization (well medians)",
    "after": "After normalization (robust z-score)",
}
#: Fewest wells a profile map is drawn for (UMAP needs more points than neighbours).
MIN_WELLS = 4


def cells_layers(viewer: Any) -> list[Any]:
    """The Segment dock's ``cells`` layers that hold measurements (``features``)."""
    layers = []
    for layer in viewer.layers:
        info = layer.metadata.get(META_KEY) if isinstance(layer.metadata, dict) else None
        features = getattr(layer, "features", None)
        if isinstance(info, dict) and info.get("kind") == "cells" and features is not None:
            if len(features):
                layers.append(layer)
    return layers


def segmented_cells(viewer: Any) -> pd.DataFrame:
    """The per-cell tables of every segmented field in the viewer, concatenated.

    Raises
    ------
    PhenoadaptError
        When no ``cells`` layer of the Segment dock is in the viewer.
    """
    # napari's own 'index' column maps label values to rows; it is no measurement.
    tables = [
        pd.DataFrame(layer.features).drop(columns=["index"], errors="ignore")
        for layer in cells_layers(viewer)
    ]
    if not tables:
        raise PhenoadaptError(
            "No segmented cells in the viewer: segment some wells in the Segment dock "
            "(Scope: Wells), with controls among them; their measurements become per-well "
            "profiles."
        )
    return pd.concat(tables, ignore_index=True)


def session_platemaps(session: Any) -> dict[str, Any]:
    """The session's plate maps that say something (a blank map excludes every well)."""
    maps = {}
    for plate_id, platemap in getattr(session, "platemaps", {}).items():
        if platemap is not None and (platemap.controls or platemap.treated):
            maps[str(plate_id)] = platemap
    return maps


def activity_key(viewer: Any, session: Any) -> tuple:
    """What :func:`well_activity` depends on: the segmented fields and the map versions."""
    layers = tuple((id(layer), len(layer.features)) for layer in cells_layers(viewer))
    maps = tuple(
        sorted((str(p), getattr(m, "version", 0)) for p, m in session_platemaps(session).items())
    )
    return layers, maps


def well_activity(viewer: Any, session: Any) -> dict[str, dict[str, float]]:
    """Plate -> well -> distance of its profile from its plate's controls.

    From the cells segmented in the viewer, normalized to each plate's controls
    (robust z-score, feature selection; ``profile_activity``).  Callers that
    redraw often keep the answer until :func:`activity_key` changes.

    Raises
    ------
    PhenoadaptError
        No segmented cells, or a plate without control wells among them.
    """
    table = build_profiles(segmented_cells(viewer), session_platemaps(session) or None).table
    by_plate: dict[str, dict[str, float]] = {}
    for plate, well, value in zip(
        table[schema.PLATE].astype(str),
        table[schema.WELL].astype(str),
        profile_activity(table),
        strict=True,
    ):
        by_plate.setdefault(plate, {})[well] = float(value)
    return by_plate


def standardized(table: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Features z-scored over all rows; missing values at the feature's mean (0).

    Features that are constant or missing everywhere carry nothing and are left out.
    """
    values = table[features].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(values, axis=0) if len(values) else np.zeros(len(features))
        std = np.nanstd(values, axis=0)
    keep = np.isfinite(std) & (std > 0)
    z = (values[:, keep] - mean[keep]) / std[keep]
    return np.nan_to_num(z, nan=0.0)


def profile_spaces(
    cells: pd.DataFrame, platemaps: Mapping[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, np.ndarray], str]:
    """Well points, their features before and after normalization, and a note.

    Returns
    -------
    (points, spaces, note)
        ``points`` holds the wells' metadata; ``spaces`` always has ``"before"``
        and has ``"after"`` when every plate has control wells; ``note`` says
        what was kept, or why there is no ``"after"``.
    """
    maps = dict(platemaps or {})
    raw = well_profiles(cells, maps or None)
    if len(raw) < MIN_WELLS:
        raise PhenoadaptError(
            f"Only {len(raw)} profiled well(s): a profile map needs at least {MIN_WELLS} "
            "wells; segment more wells in the Segment dock (Scope: Wells)."
        )
    points = raw[[c for c in raw.columns if schema.is_metadata(str(c))]]
    spaces = {"before": standardized(raw, profile_features(raw))}
    try:
        result = build_profiles(cells, maps or None, "robust-zscore", True)
    except NotEnoughControlsError as exc:
        return points, spaces, f"No 'after' map: {exc}"
    spaces["after"] = result.table[profile_features(result.table)].to_numpy(dtype=np.float64)
    return (
        points,
        spaces,
        (
            "Before: each well's median per feature, z-scored over all wells. After: each plate "
            f"scaled to its own control wells, then feature selection; {result.summary()}."
        ),
    )


def profile_umap_job(
    cells: pd.DataFrame,
    platemaps: Mapping[str, Any] | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    fit: Callable[..., np.ndarray] | None = None,
) -> Generator[tuple[str, Any], None, Any]:
    """UMAP maps of the well profiles before and after normalization, yielding progress.

    Yields ``("progress", (message, done, total))``; returns
    :class:`phenoadapt.gui.umap_maps.UmapMaps` with one point per well (no point
    belongs to a run result's cells, so a selection on these maps picks none).
    ``fit`` computes one map (default :func:`phenoadapt.evaluate.umap_coordinates`;
    the dock passes the same function run in its child process, so Cancel stops it).
    """
    from ..evaluate import umap_coordinates
    from .umap_maps import UmapMaps, plate_mixing

    fit = fit or umap_coordinates

    yield "progress", ("Aggregating cells into per-well profiles...", 0, 0)
    points, spaces, note = profile_spaces(cells, platemaps)
    # A handful of wells: the neighbourhood shrinks to fit rather than refusing.
    neighbours = max(2, min(n_neighbors, len(points) - 1))
    if neighbours < n_neighbors:
        note += f" UMAP neighbours lowered to {neighbours} for {len(points)} wells."
    coordinates, mixing = {}, {}
    total = 2 * len(spaces)
    for step, (key, values) in enumerate(spaces.items()):
        yield "progress", (f"UMAP of {len(points)} well profiles, {key}...", 2 * step, total)
        coordinates[key] = fit(values, n_neighbors=neighbours, seed=seed)
        mixing[key] = plate_mixing(points, values, seed)
    yield "progress", ("Done.", total, total)
    return UmapMaps(
        "well",
        points.reset_index(drop=True),
        np.zeros(0, dtype=np.int64),
        coordinates,
        mixing,
        neighbours,
        seed,
        titles={key: TITLES[key] for key in coordinates},
        source_note=note,
    )


def profile_umap_events(
    cells: pd.DataFrame,
    platemaps: Mapping[str, Any] | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    fit: Callable[..., np.ndarray] | None = None,
) -> Generator[tuple[str, Any], None, Any]:
    """:func:`profile_umap_job` for a worker: errors become ``("error", message)`` events."""
    from .umap_maps import map_events

    job = profile_umap_job(cells, platemaps, n_neighbors, seed, fit)
    return (yield from map_events(job, "Profile map"))


def export_profiles(
    viewer: Any, session: Any, folder: str | Path, *, overwrite: bool = False
) -> Path:
    """Write ``profiles.csv``: the normalized well profiles of the cells in the viewer.

    Raises
    ------
    PhenoadaptError
        No segmented cells, a plate without control wells; FileExistsError when
        the file exists and ``overwrite`` is False.
    """
    from ..export import write_table

    cells = segmented_cells(viewer)
    profiles = build_profiles(cells, session_platemaps(session) or None)
    return Path(write_table(profiles.table, Path(folder) / "profiles.csv", overwrite=overwrite))
