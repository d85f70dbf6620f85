"""napari reader contribution: a plate folder (or OME-Zarr plate) dropped onto napari.

The reader shows the first imaged field (or ``well``/``site`` when called from
the API) as one image layer per channel.  A folder that is not a plate gets a
notification that says why and how to describe its file names, never a
traceback dialog.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import PhenoadaptError
from ..plate import open_plate
from .layers import LayerData, field_layer_data

# napari's way of saying "handled, nothing to add" without another dialog.
NULL_LAYER: list[tuple[None]] = [(None,)]


def get_plate_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """Return a reader when ``path`` is a single folder, else None (napari asks others)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not Path(path).is_dir():
        return None
    return read_plate_folder


def read_plate_folder(
    path: str | list[str], well: str | None = None, site: int | None = None
) -> list[LayerData] | list[tuple[None]]:
    """Open a plate folder and return layer data for one field.

    Parameters
    ----------
    path
        The plate folder (or a one-element list holding it).
    well, site
        Field to show; the first imaged well and its first site by default.
    """
    from napari.utils.notifications import show_error, show_info

    folder = path[0] if isinstance(path, list) else path
    try:
        plate = open_plate(folder)
        well = well or plate.wells[0]
        site = plate.sites_of(well)[0] if site is None else site
        layers = field_layer_data(plate, well, site)
    except PhenoadaptError as exc:
        show_error(f"phenoadapt could not open {folder}: {exc}")
        return NULL_LAYER
    show_info(
        f"Opened plate {plate.plate_id} ({plate.format}, {len(plate.wells)} wells, "
        f"{plate.n_fields} fields); showing {well} site {site}."
    )
    return layers
