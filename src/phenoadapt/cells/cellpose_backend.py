"""Optional learned segmentation with cellpose, only from weights already on disk.

phenoadapt never downloads weights.  This backend is used when the user asks
for it (``SegmentationParams(backend="cellpose")``), the ``cellpose`` package is
installed, and the model's weights file is found: either the path given as
``cellpose_model``, or a file of that name in cellpose's models folder
(``$CELLPOSE_LOCAL_MODELS_PATH``, by default ``~/.cellpose/models``).

Cellpose outlines whole cells (from the cytoplasm and DNA channels); nuclei
still come from the classical DNA segmentation, and each cell keeps the nucleus
it overlaps most, clipped to the cell, so that cell ``i`` contains nucleus ``i``
as with the classical backend.  Cells without a nucleus are dropped.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ..errors import CellsError
from .classical import Segmentation, segment_nuclei
from .params import SegmentationParams

INSTALL_HINT = (
    "Install it with `pip install cellpose` and copy the weights file of the model "
    "(e.g. `cpsam`) into {folder} (or give its full path as cellpose_model); "
    "phenoadapt never downloads weights. Or use backend='classical', which needs none."
)


def models_folder() -> Path:
    """Where cellpose looks for weights.

    ``$CELLPOSE_LOCAL_MODELS_PATH``, by default ``~/.cellpose/models``.
    """
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env).expanduser() if env else Path.home() / ".cellpose" / "models"


def weights_path(model: str) -> Path:
    """The weights file of ``model`` (a path, or a name in :func:`models_folder`).

    Raises
    ------
    CellsError
        When the file is not on this machine.
    """
    candidate = Path(model).expanduser()
    if candidate.is_file():
        return candidate
    in_folder = models_folder() / model
    if in_folder.is_file():
        return in_folder
    raise CellsError(
        f"Cellpose weights {model!r} were not found (looked at {candidate} and {in_folder}). "
        + INSTALL_HINT.format(folder=models_folder())
    )


def check_available(params: SegmentationParams) -> Path:
    """Check that cellpose is installed and the weights are on disk; return their path.

    Raises
    ------
    CellsError
        Saying how to install cellpose and where its weights must be.
    """
    try:
        import cellpose  # noqa: F401  (optional dependency)
    except ImportError:
        raise CellsError(
            "The cellpose segmentation backend needs the cellpose package, which is not "
            "installed. " + INSTALL_HINT.format(folder=models_folder())
        ) from None
    return weights_path(params.cellpose_model)


def segment_with_cellpose(
    dna: np.ndarray, cyto: np.ndarray, params: SegmentationParams, field_name: str = "the field"
) -> Segmentation:
    """Cells from cellpose, nuclei from the classical method, consistently numbered."""
    model = _load_model(str(check_available(params)))
    image = np.stack([_unit(cyto), _unit(dna)], axis=-1)
    # channels=[1, 2]: cytoplasm in the first plane, nuclei in the second (cellpose < 4;
    # cellpose 4 reads every plane itself and ignores it).
    result = model.eval(
        image, channel_axis=-1, channels=[1, 2], diameter=2.5 * params.nucleus_diameter
    )
    cells = np.asarray(result[0]).astype(np.int32)
    nuclei = segment_nuclei(dna, params, field_name)
    return pair_cells_with_nuclei(cells, nuclei)


@functools.lru_cache(maxsize=2)
def _load_model(path: str):
    from cellpose import models

    return models.CellposeModel(gpu=False, pretrained_model=path)


def _unit(plane: np.ndarray) -> np.ndarray:
    """Scale a plane to [0, 1] between its 1st and 99.9th percentiles."""
    lo, hi = np.percentile(plane, [1, 99.9])
    return np.clip((plane.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)


def pair_cells_with_nuclei(cells: np.ndarray, nuclei: np.ndarray) -> Segmentation:
    """Renumber cells and nuclei so that cell ``i`` contains nucleus ``i``.

    Each cell keeps the nucleus it overlaps most (clipped to the cell); cells
    without any nucleus pixel are dropped, as are nuclei outside every cell.
    """
    both = (cells > 0) & (nuclei > 0)
    pairs, overlap = np.unique(np.stack([cells[both], nuclei[both]]), axis=1, return_counts=True)
    best: dict[int, tuple[int, int]] = {}  # cell -> (overlap, nucleus)
    for (cell, nucleus), count in zip(pairs.T, overlap, strict=True):
        if count > best.get(int(cell), (0, 0))[0]:
            best[int(cell)] = (int(count), int(nucleus))
    cell_lut = np.zeros(int(cells.max(initial=0)) + 1, dtype=np.int32)
    nucleus_of = np.zeros(int(cells.max(initial=0)) + 1, dtype=np.int64)
    for new, cell in enumerate(sorted(best), start=1):
        cell_lut[cell] = new
        nucleus_of[cell] = best[cell][1]
    new_cells = cell_lut[cells]
    # A nucleus pixel is kept where it lies in the cell that chose that nucleus.
    chosen = (nucleus_of[cells] == nuclei) & both
    new_nuclei = np.where(chosen, new_cells, 0).astype(np.int32)
    return Segmentation(nuclei=new_nuclei, cells=new_cells)
