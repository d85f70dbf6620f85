"""PhenoProfiler embeddings: a thin re-export of :mod:`phenoadapt.pipeline.embed`.

The code lives in :mod:`phenoadapt.pipeline.embed`, next to prediction, with which
it shares the model-input contract and the plate-context runner; this module
keeps ``from phenoadapt.embed import embed_plate`` working.
"""

from .pipeline.embed import (
    EMBED_RUNTIME,
    EMBEDDER_FAMILY,
    EMBEDDING_CORRECTIONS,
    LEVELS,
    STATISTICS,
    Correction,
    ProfileOptions,
    aggregate_embeddings,
    cell_embedding_table,
    check_images,
    correct_embeddings,
    embed_images,
    embed_plate,
    embedding_columns,
    image_embeddings,
    load_embedder,
    parse_correction,
    require_embedder,
)

__all__ = [
    "EMBEDDER_FAMILY",
    "EMBEDDING_CORRECTIONS",
    "EMBED_RUNTIME",
    "LEVELS",
    "STATISTICS",
    "Correction",
    "ProfileOptions",
    "aggregate_embeddings",
    "cell_embedding_table",
    "check_images",
    "correct_embeddings",
    "embed_images",
    "embed_plate",
    "embedding_columns",
    "image_embeddings",
    "load_embedder",
    "parse_correction",
    "require_embedder",
]
