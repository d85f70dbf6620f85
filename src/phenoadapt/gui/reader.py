"""napari reader contribution: a plate folder (or OME-Zarr plate) dropped onto napari.

napari asks every reader whether it takes a path, so phenoadapt answers quickly
and only for what it opens: a folder a built-in layout recognises or an OME-Zarr
plate (:func:`~phenoadapt.plate.readers.is_plate`, a bounded look at the first
files).  A lone image, a table or an unrelated folder is declined (None) and
left to other readers; a folder with its own naming is opened from the Plate
dock with a file pattern, which the dock suggests.

The reader shows the first imaged field (or ``well``/``site`` when called from
the API) as one image layer per channel.  A recognised folder that still cannot
be opened (a missing channel file) gets a notification that says why, never a
traceback dialog; image files the layout left out get a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from ..errors import PhenoadaptError
from ..plate import open_plate
from ..plate.readers import UnmatchedImagesWarning, is_plate
from .layers import LayerData, field_layer_data

# napari's way of saying "handled, nothing to add" without another dialog.
NULL_LAYER: list[tuple[None]] = [(None,)]


def get_plate_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """Return a reader when ``path`` is one plate folder or OME-Zarr plate, else None.

    Files, several paths and folders that are not plates are declined without
    an error, after reading at most a few thousand directory entries.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return read_plate_folder if is_plate(Path(path)) else None
    except OSError:  # an unreadable path is not ours to report
        return None


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
    from napari.utils.notifications import show_error, show_info, show_warning

    folder = path[0] if isinstance(path, list) else path
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnmatchedImagesWarning)
            plate = open_plate(folder)
        well = well or plate.wells[0]
        site = plate.sites_of(well)[0] if site is None else site
        layers = field_layer_data(plate, well, site)
    except PhenoadaptError as exc:
        show_error(f"phenoadapt could not open {folder}: {exc}")
        return NULL_LAYER
    for warning in caught:
        if issubclass(warning.category, UnmatchedImagesWarning):
            show_warning(str(warning.message))
    show_info(
        f"Opened plate {plate.plate_id} ({plate.format}, {len(plate.wells)} wells, "
        f"{plate.n_fields} fields); showing {well} site {site}."
    )
    return layers
