"""The one dispatcher of segmentation backends: parameters in, a :class:`Segmentation` out.

:func:`segment_field` (in :mod:`.segment`) and :func:`segment_plate` reach a
backend only through here, and a backend module never imports the modules that
call it, so there is no import cycle: ``segment -> backends -> classical |
cellpose_backend -> classical``.
"""

from __future__ import annotations

import numpy as np

from .classical import Segmentation, segment_cells, segment_nuclei
from .params import SegmentationParams


def check_backend(params: SegmentationParams) -> None:
    """Fail early, once per plate, when the backend cannot run here.

    (:class:`SegmentationParams` already refuses a backend not in ``params.BACKENDS``.)

    Raises
    ------
    CellsError
        Cellpose without its package or its weights on disk.
    """
    if params.backend == "cellpose":
        from .cellpose_backend import check_available  # optional dependency: only when asked

        check_available(params)


def segment_with_backend(
    dna: np.ndarray, cyto: np.ndarray, params: SegmentationParams, field_name: str = "the field"
) -> Segmentation:
    """Nuclei and cells of one field's DNA and cytoplasm planes with ``params.backend``.

    Parameters
    ----------
    dna, cyto
        The field's DNA plane and the plane cells grow on.
    params
        Segmentation settings; ``backend`` picks the method.
    field_name
        Name of the field for error messages.

    Returns
    -------
    Segmentation
        Cell ``i`` contains nucleus ``i``.
    """
    if params.backend == "cellpose":
        from .cellpose_backend import segment_with_cellpose

        return segment_with_cellpose(dna, cyto, params, field_name)
    nuclei = segment_nuclei(dna, params, field_name)
    return Segmentation(nuclei, segment_cells(cyto, nuclei, params))
