"""Cells: segmentation, per-cell measurements, crops and plate-wide processing.

The usual entry points:

- :func:`segment_field` -> :class:`Segmentation` (nucleus and cell labels of one field);
- :func:`measure_cells` -> per-cell measurements with CellProfiler-style names;
- :func:`segment_plate` -> :class:`PlateCells` (per-cell table of a plate, per-site and
  per-well profiles, failed fields), parallel over fields with progress and Cancel;
- :class:`CropStream` / :class:`CellCropDataset` -> batches of fixed-size crops over a plate.

Nothing here imports napari or Qt; torch is imported only by :class:`CellCropDataset`.
"""

from typing import Any

from .classical import Segmentation, segment_cells, segment_nuclei
from .crops import CropBatch, CropParams, CropStream, extract_crops
from .measure import feature_columns, measure_cells
from .params import MeasureParams, SegmentationParams
from .process import FieldFailure, PlateCells, process_field, segment_plate
from .profiles import CELL_COUNT, aggregate_profiles
from .quality import MatchScores, labels_from_outlines, match_labels
from .segment import check_field, segment_field
from .table import cell_table

__all__ = [
    "CELL_COUNT",
    "CellCropDataset",
    "CropBatch",
    "CropParams",
    "CropStream",
    "FieldFailure",
    "MatchScores",
    "MeasureParams",
    "PlateCells",
    "Segmentation",
    "SegmentationParams",
    "aggregate_profiles",
    "cell_table",
    "check_field",
    "extract_crops",
    "feature_columns",
    "labels_from_outlines",
    "match_labels",
    "measure_cells",
    "process_field",
    "segment_cells",
    "segment_field",
    "segment_nuclei",
    "segment_plate",
]


def __getattr__(name: str) -> Any:
    # torch is heavy: import the dataset only when it is asked for.
    if name == "CellCropDataset":
        from .dataset import CellCropDataset

        return CellCropDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
