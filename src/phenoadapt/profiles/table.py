"""Reading feature tables and telling metadata from features.

A feature table has one row per profile (a cell, a well or a treatment), metadata
columns named ``Metadata_*`` and numeric feature columns: CellProfiler measurements
(``Cells_*``, ``Cytoplasm_*``, ``Nuclei_*``) or network embeddings (``emb_*``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema
from ..errors import InputNotFoundError, TableError
from ..export import restore_formulas

#: Prefixes of feature columns: CellProfiler compartments and phenoadapt embeddings.
FEATURE_PREFIXES: tuple[str, ...] = ("Cells_", "Cytoplasm_", "Nuclei_", schema.EMBEDDING_PREFIX)

_READERS = {
    # Text cells phenoadapt wrote with a protective quote read back as typed.
    ".csv": lambda p: restore_formulas(pd.read_csv(p)),
    ".tsv": lambda p: restore_formulas(pd.read_csv(p, sep="\t")),
    ".parquet": lambda p: pd.read_parquet(p),
    ".pq": lambda p: pd.read_parquet(p),
}


def _table_suffix(path: Path) -> str:
    """The suffix that decides the format, ignoring a trailing compression suffix."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zip"):
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a feature table from CSV, TSV (optionally compressed) or Parquet.

    Parameters
    ----------
    path
        ``.csv``, ``.csv.gz``, ``.tsv``, ``.tsv.gz`` or ``.parquet`` file.

    Returns
    -------
    pandas.DataFrame
        The table as stored; use :func:`feature_columns` to find its features.

    Raises
    ------
    phenoadapt.errors.InputNotFoundError
        When ``path`` does not exist (a FileNotFoundError).
    phenoadapt.errors.TableError
        When the suffix is not a known table format or the file is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"The table {path} does not exist: check the path.")
    suffix = _table_suffix(path)
    if suffix not in _READERS:
        known = ", ".join(sorted(_READERS))
        raise TableError(
            f"{path}: unknown table format {suffix or '(no suffix)'!r}; "
            f"save the table as one of {known} (optionally .gz-compressed)"
        )
    try:
        table = _READERS[suffix](path)
    except pd.errors.EmptyDataError as exc:
        raise TableError(f"{path} is empty: it holds no rows or columns") from exc
    if table.empty:
        raise TableError(f"{path} holds no rows")
    return table


def feature_columns(table: pd.DataFrame, prefixes: Sequence[str] = FEATURE_PREFIXES) -> list[str]:
    """Names of the feature columns of ``table``, in table order.

    A feature column starts with one of ``prefixes`` and holds numbers.

    Raises
    ------
    phenoadapt.errors.TableError
        When no column qualifies, naming the prefixes that were looked for.
    """
    names = [c for c in table.columns if str(c).startswith(tuple(prefixes))]
    numeric = [c for c in names if pd.api.types.is_numeric_dtype(table[c])]
    if not numeric:
        shown = ", ".join(map(str, list(table.columns)[:8]))
        raise TableError(
            f"the table has no numeric feature columns: expected names starting with "
            f"{', '.join(prefixes)} (CellProfiler or embeddings); its first columns are {shown}"
        )
    return numeric


def metadata_columns(table: pd.DataFrame) -> list[str]:
    """Names of the ``Metadata_*`` columns of ``table``, in table order."""
    return [c for c in table.columns if schema.is_metadata(str(c))]


def require_columns(table: pd.DataFrame, columns: Iterable[str], purpose: str) -> None:
    """Raise a clear error when ``table`` lacks any of ``columns``.

    Parameters
    ----------
    table
        The table to check.
    columns
        Column names that must be present.
    purpose
        What the columns are needed for, quoted in the message (e.g. ``"NSCB"``).
    """
    missing = [c for c in columns if c not in table.columns]
    if missing:
        present = ", ".join(metadata_columns(table)) or "none"
        raise TableError(
            f"{purpose} needs the column(s) {', '.join(missing)}, which the table lacks; "
            f"its metadata columns are: {present}. Rename a column or pass its name."
        )


def feature_matrix(table: pd.DataFrame, features: Sequence[str] | None = None) -> np.ndarray:
    """The features of ``table`` as a float64 array ``(rows, features)``.

    Raises
    ------
    phenoadapt.errors.TableError
        When a feature holds NaN or infinite values (naming the columns), since every
        distance and mean downstream would silently turn into NaN.
    """
    features = list(features) if features is not None else feature_columns(table)
    values = table[features].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=0)
    if bad.any():
        names = [features[i] for i in np.flatnonzero(bad)]
        raise TableError(
            f"{len(names)} feature column(s) hold NaN or infinite values: "
            f"{_shorten(names)}; drop them with phenoadapt.profiles.clean_features "
            f"(CLI: --clean)"
        )
    return values


def control_mask(table: pd.DataFrame, role_column: str = schema.ROLE) -> np.ndarray:
    """Boolean mask of the negative-control rows (role ``control``)."""
    require_columns(table, [role_column], "finding the negative controls")
    return (table[role_column].astype(str) == schema.Role.CONTROL.value).to_numpy()


def _shorten(names: Sequence[str], limit: int = 10) -> str:
    """Join names for a message, ending with a count when there are many."""
    shown = ", ".join(map(str, names[:limit]))
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
