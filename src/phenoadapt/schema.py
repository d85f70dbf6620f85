"""Column names shared by every table phenoadapt reads or writes.

One schema for per-cell and per-well results: the same columns appear in CSV
exports, napari layer ``features`` and the Python API.  Metadata columns follow
the profiling convention of pycytominer and copairs (``Metadata_`` prefix).
"""

from __future__ import annotations

from enum import Enum

PLATE = "Metadata_Plate"
WELL = "Metadata_Well"
SITE = "Metadata_Site"
ROW = "Metadata_Row"
COLUMN = "Metadata_Column"
TREATMENT = "Metadata_Treatment"
MOA = "Metadata_MoA"
CONCENTRATION = "Metadata_Concentration"
ROLE = "Metadata_Role"
LAB = "Metadata_Lab"
BATCH = "Metadata_Batch"

CELL_ID = "cell_id"
CENTROID_Y = "centroid_y"
CENTROID_X = "centroid_x"
PREDICTION = "predicted_moa"
CONFIDENCE = "confidence"
UNCERTAINTY = "uncertainty"
PROB_PREFIX = "prob_"
UMAP_1 = "umap_1"
UMAP_2 = "umap_2"
EMBEDDING_PREFIX = "emb_"
#: The run id every exported table carries (see phenoadapt.pipeline.record).
RUN_ID = "Metadata_RunID"

METADATA_COLUMNS = (PLATE, WELL, SITE, TREATMENT, MOA, CONCENTRATION, ROLE)


class Role(str, Enum):  # noqa: UP042 (str() spelling kept for saved files)
    """Role of a well on a plate."""

    CONTROL = "control"  # negative control (e.g. DMSO)
    TREATED = "treated"
    EXCLUDED = "excluded"  # empty, failed or deliberately ignored wells

    def __str__(self) -> str:  # pandas and CSVs show the plain value
        return self.value


def embedding_columns(n: int) -> list[str]:
    """Names of ``n`` embedding columns: ``emb_0`` ... ``emb_{n-1}`` (the one spelling)."""
    return [f"{EMBEDDING_PREFIX}{i}" for i in range(n)]


def is_metadata(column: str) -> bool:
    """Return True when ``column`` is a metadata column (``Metadata_`` prefix)."""
    return column.startswith("Metadata_")
