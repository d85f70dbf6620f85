"""A full check of a plate's files: every header read (no pixels), compared with the plate."""

from __future__ import annotations

import numpy as np

from ...errors import PlateReadError
from ...progress import ProgressFn
from ..model import Plate, TiffSource
from .ome_zarr import ZarrSource
from .tiff_header import read_header


def verify_plate(plate: Plate, progress: ProgressFn | None = None) -> int:
    """Read the header of every file (or Zarr array) and check it fits the plate.

    Opening a plate reads a few headers; this reads all of them, which finds a
    corrupt or truncated file, a site of another size or another pixel type
    before a long job meets it.  No pixel data is read.

    Parameters
    ----------
    plate
        A plate from :func:`~phenoadapt.plate.readers.open_plate`.
    progress
        Called as ``progress("verify", done, total)``.

    Returns
    -------
    int
        Number of files (or fields) checked.

    Raises
    ------
    PlateReadError
        For the first file that cannot be read or does not fit, naming it.
    """
    source = plate.source
    if isinstance(source, ZarrSource):
        return _verify_zarr(plate, source, progress)
    if not isinstance(source, TiffSource):
        return 0
    stack = bool(plate.metadata.get("per_site_stacks"))
    paths = sorted({ref.path for ref in source.files.values()})
    if hasattr(source, "planes"):  # z-projections read every plane's file
        paths = sorted({ref.path for refs in source.planes.values() for ref in refs} | set(paths))
    for done, path in enumerate(paths, 1):
        header = read_header(path, stack=stack)
        _check(plate, str(path), header.shape, header.dtype)
        if stack and len(header.channels) != len(plate.channels):
            raise PlateReadError(
                f"{path} holds {len(header.channels)} channels but the plate has "
                f"{len(plate.channels)}: every site file must hold the same channels."
            )
        if progress is not None:
            progress("verify", done, len(paths))
    return len(paths)


def _verify_zarr(plate: Plate, source: ZarrSource, progress: ProgressFn | None) -> int:
    fields = list(source.fields.values())
    for done, path in enumerate(fields, 1):
        array, axes, dataset = source.field_array(path)
        shape = (int(array.shape[axes.index("y")]), int(array.shape[axes.index("x")]))
        _check(plate, f"{source.store / path / dataset}", shape, np.dtype(array.dtype))
        if progress is not None:
            progress("verify", done, len(fields))
    return len(fields)


def _check(plate: Plate, where: str, shape: tuple[int, int], dtype: np.dtype) -> None:
    if tuple(shape) != tuple(plate.field_shape):
        raise PlateReadError(
            f"{where} is {shape[0]}x{shape[1]} pixels but the plate's fields are "
            f"{plate.field_shape[0]}x{plate.field_shape[1]}: all sites of a plate must have the "
            "same size (was it acquired with other settings?). Move it out of the plate folder."
        )
    if np.dtype(dtype) != np.dtype(plate.dtype):
        raise PlateReadError(
            f"{where} holds {np.dtype(dtype)} pixels but the plate's are {np.dtype(plate.dtype)}: "
            "all files of a plate must have the same pixel type."
        )
