"""Turn plate fields into napari layer data, with the metadata every dock relies on.

Each channel image layer carries ``metadata["phenoadapt"]`` with the plate path,
well, site, channel name and role, so docks can find the field on screen
without guessing from layer names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..plate import Plate

META_KEY = "phenoadapt"
LayerData = tuple[Any, dict[str, Any], str]


def display_limits(plane: np.ndarray, low: float = 0.5, high: float = 99.8) -> tuple[float, float]:
    """Contrast limits from percentiles of a plane (a strided sample keeps it fast)."""
    step = max(1, int(np.sqrt(plane.size / 250_000)))
    sample = np.asarray(plane[::step, ::step], dtype=np.float32)
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:  # a constant plane: any non-empty range shows it
        hi = lo + 1.0
    return float(lo), float(hi)


def field_metadata(plate: Plate, well: str, site: int, **extra: Any) -> dict[str, Any]:
    """The ``metadata["phenoadapt"]`` entry identifying a field on screen."""
    info = {
        "plate_path": str(plate.path) if plate.path is not None else "",
        "plate_id": plate.plate_id,
        "well": well,
        "site": int(site),
    }
    info.update(extra)
    return {META_KEY: info}


def field_layer_data(plate: Plate, well: str, site: int) -> list[LayerData]:
    """One additive image layer per channel of a field, in Cell Painting colours.

    Parameters
    ----------
    plate
        An opened plate.
    well, site
        The field to show.

    Returns
    -------
    list of (data, kwargs, "image") tuples, as napari readers return them.
    """
    layers: list[LayerData] = []
    for channel in plate.channels:
        plane = plate.read_plane(well, site, channel)
        meta = field_metadata(
            plate,
            well,
            site,
            channel=channel.name,
            channel_key=channel.key,
            role=channel.role.value,
        )
        kwargs = {
            "name": f"{channel.name} [{plate.plate_id} {well} s{site}]",
            "colormap": channel.colormap,
            "blending": "additive",
            "contrast_limits": display_limits(plane),
            "metadata": meta,
            # Brightfield would wash out the fluorescent composite; show it on demand.
            "visible": channel.role.value != "brightfield",
        }
        layers.append((plane, kwargs, "image"))
    return layers
