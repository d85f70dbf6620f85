"""Evaluating predictions and embeddings across plates and batches.

- :mod:`.accuracy`: the one accuracy rule (which rows are scored), accuracy per plate
  (mean +- std over plates) and the `accuracy.csv` table of a prediction run;
- :mod:`.retrieval`: mAP of phenotypic activity and consistency (copairs), folds of
  enrichment;
- :mod:`.moa`: NSC / NSCB nearest-neighbour MoA accuracy on treatment profiles;
- :mod:`.mixing`: batch-mixing scores (kNN batch accuracy, silhouette, LISI);
- :mod:`.integration`: kBET and graph connectivity (the scIB neighbourhood scores);
- :mod:`.projection`: seeded UMAP coordinates;
- :mod:`.report`: all of the above for one table (``phenoadapt evaluate``).
"""

from .accuracy import PlateAccuracy, accuracy_per_plate, accuracy_table, mean_std, scored_rows
from .integration import graph_connectivity, kbet
from .mixing import (
    BatchMixing,
    batch_knn_accuracy,
    batch_mixing,
    batch_silhouette,
    lisi,
    majority_fraction,
)
from .moa import NeighbourAccuracy, nearest_neighbour_moa, nsc_nscb
from .projection import add_umap, umap_coordinates
from .report import EvaluationReport, evaluate_table
from .retrieval import (
    EnrichmentResult,
    MapResult,
    folds_of_enrichment,
    map_activity,
    map_consistency,
)

__all__ = [
    "BatchMixing",
    "EnrichmentResult",
    "EvaluationReport",
    "MapResult",
    "NeighbourAccuracy",
    "PlateAccuracy",
    "accuracy_per_plate",
    "accuracy_table",
    "add_umap",
    "batch_knn_accuracy",
    "batch_mixing",
    "batch_silhouette",
    "evaluate_table",
    "folds_of_enrichment",
    "graph_connectivity",
    "kbet",
    "lisi",
    "majority_fraction",
    "map_activity",
    "map_consistency",
    "mean_std",
    "nearest_neighbour_moa",
    "nsc_nscb",
    "scored_rows",
    "umap_coordinates",
]
