"""Result tables to CSV, written atomically and never over an existing file unless asked.

A table is first written to a temporary file in the target folder and then
renamed into place with :func:`os.replace`, so a reader never sees half a file:
the target either does not exist, holds the previous complete file, or holds
the new complete file.  A crash, an error or a Cancel mid-write leaves at most
a ``.tmp`` file that this module removes.  :func:`write_atomic` is the one
writer of every output (CLI commands, the GUI's export, plate maps): a new file
gets the permissions the umask gives (``0644`` under umask ``022``), an existing
file is never replaced unless ``overwrite`` (CLI ``--overwrite``) is asked for.

Every CSV phenoadapt writes goes through :func:`to_csv_safe`, which neutralises
formula injection as OWASP advises: a text cell (or column name) that begins
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading
``'`` so a spreadsheet shows it as text instead of running it.  Numbers, and
text that reads as a number (``-1.5``), are left alone.  :func:`restore_formulas`
undoes it when phenoadapt reads its own tables back, so names survive a round
trip.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import schema
from .errors import PhenoadaptError

#: File names written by :func:`export_results`.
RESULT_FILES = {"cells": "cells.csv", "wells": "wells.csv", "accuracy": "accuracy.csv"}


#: Characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# A cell that needs a quote: optional quotes already there, then a formula character
# (quotes already there are counted so that restoring removes exactly the one added).
_NEEDS_QUOTE = re.compile(r"^'*[=+\-@\t\r]")
_QUOTED = re.compile(r"^'+[=+\-@\t\r]")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text  # "-1.5" is a number; "-1.5\t" is not


def needs_neutralising(value: object) -> bool:
    """Whether a cell is text a spreadsheet would run as a formula."""
    return isinstance(value, str) and bool(_NEEDS_QUOTE.match(value)) and not _is_number(value)


def neutralise_cell(value: object) -> object:
    """``'=SUM(A1)`` for ``=SUM(A1)``; anything else unchanged."""
    return f"'{value}" if needs_neutralising(value) else value


def restore_cell(value: object) -> object:
    """Undo :func:`neutralise_cell` (one leading ``'`` before a formula character)."""
    if isinstance(value, str) and _QUOTED.match(value):
        return value[1:]
    return value


def _text_columns(table: pd.DataFrame) -> list:
    return [
        c
        for c in table.columns
        if pd.api.types.is_object_dtype(table[c].dtype)
        or pd.api.types.is_string_dtype(table[c].dtype)
        or isinstance(table[c].dtype, pd.CategoricalDtype)
    ]


def _distinct(values: pd.Series) -> list:
    """The distinct non-missing cells of a column (a big table repeats few names)."""
    present = values.dropna()
    try:
        return list(pd.unique(present))
    except TypeError:  # unhashable cells (lists): each one
        return present.tolist()


def _changes(values: pd.Series, cell: Any) -> dict[str, Any]:
    """The text cells of a column that ``cell`` changes, and what they become."""
    changes = {}
    for value in _distinct(values):
        if isinstance(value, str):
            new = cell(value)
            if new != value:
                changes[value] = new
    return changes


def _map_text(table: pd.DataFrame, cell: Any) -> pd.DataFrame:
    columns = [cell(c) if isinstance(c, str) else c for c in table.columns]
    changed = {c: m for c in _text_columns(table) if (m := _changes(table[c], cell))}
    if not changed and columns == list(table.columns):
        return table  # nothing to change: the table itself, no copy
    out = table.copy()
    for column, changes in changed.items():
        values = out[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(object)
        out[column] = values.map(
            lambda v, changes=changes: changes.get(v, v) if isinstance(v, str) else v
        )
    out.columns = columns
    return out


def neutralise_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose text cells and column names cannot run as formulas.

    Parameters
    ----------
    table
        Any table; numeric columns are never changed.

    Returns
    -------
    pandas.DataFrame
        ``table`` itself when nothing needed a change, else a neutralised copy.
    """
    return _map_text(table, neutralise_cell)


def restore_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`neutralise_formulas` on a table phenoadapt wrote (names round-trip)."""
    return _map_text(table, restore_cell)


def formula_cells(values: Any) -> list[str]:
    """The distinct text values a spreadsheet would run as formulas, in first-seen order."""
    seen: dict[str, None] = {}
    for value in values:
        if needs_neutralising(value):
            seen.setdefault(value, None)
    return list(seen)


def to_csv_safe(table: pd.DataFrame, target: Any, **kwargs: Any) -> None:
    """``table.to_csv(target, **kwargs)`` with formula injection neutralised.

    The one CSV writer of phenoadapt: every table it writes passes here.
    """
    kwargs.setdefault("index", False)
    safe = neutralise_formulas(table)
    if "lineterminator" not in kwargs and _has_carriage_return(safe):
        # The csv writer quotes only the characters of its line ending: with "\n" a
        # lone "\r" in a name goes out bare and splits the row when read back.
        kwargs["lineterminator"] = "\r\n"
    safe.to_csv(target, **kwargs)


def _has_carriage_return(table: pd.DataFrame) -> bool:
    if any(isinstance(c, str) and "\r" in c for c in table.columns):
        return True
    return any(
        isinstance(v, str) and "\r" in v for c in _text_columns(table) for v in _distinct(table[c])
    )


class OutputExistsError(PhenoadaptError, FileExistsError):
    """An output file that would be replaced without ``overwrite``."""


class OutputNotWritableError(PhenoadaptError, PermissionError):
    """An output folder that cannot be created or written to."""


def _umask() -> int:
    """The process's umask.

    Read from ``/proc/self/status`` where Linux offers it: setting the umask to
    read it (the portable way) briefly changes it for every thread, and the GUI
    writes files while workers run.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _writable_folder(folder: Path, what: Path) -> None:
    """Create ``folder`` if needed; a clear error when it cannot hold files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise OutputNotWritableError(
            f"Cannot write {what}: {exc.filename or folder} is a file, not a folder. Choose "
            "another output path."
        ) from exc
    except PermissionError as exc:
        raise OutputNotWritableError(
            f"Cannot create the folder {folder} for {what}: permission denied. Choose a folder "
            "you can write to."
        ) from exc
    if not folder.is_dir():
        raise OutputNotWritableError(f"Cannot write {what}: {folder} is not a folder.")


def _existing_ancestor(folder: Path) -> Path:
    """The nearest folder (or file in the way) of ``folder``'s path that exists."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _check_folder(folder: Path, what: Path) -> None:
    """Refuse a folder that could not be created or written, without creating it.

    Folders are created only when a file is written (:func:`write_atomic`), so a
    run refused or failing before its first output leaves no empty folder behind.
    """
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        raise OutputNotWritableError(
            f"Cannot write {what}: {existing} is a file, not a folder. Choose another output path."
        )
    if not os.access(existing, os.W_OK):
        if existing == folder:
            raise OutputNotWritableError(
                f"Cannot write {what}: the folder {folder} is read-only. Choose a folder you "
                "can write to."
            )
        raise OutputNotWritableError(
            f"Cannot create the folder {folder} for {what}: permission denied ({existing} is "
            "read-only). Choose a folder you can write to."
        )


def check_writable(paths: list[Path] | tuple[Path, ...], overwrite: bool = False) -> None:
    """Refuse, before any work, outputs that exist (unless ``overwrite``) or cannot be written.

    Nothing is created: missing folders are made when the first file is written.

    Raises
    ------
    OutputExistsError
        An output exists and ``overwrite`` is False; the message names the file
        and ``--overwrite``.
    OutputNotWritableError
        An output that is a folder, the same file named twice, or a folder that
        cannot be created or is not writable.
    """
    paths = [Path(p) for p in paths]
    if len(set(paths)) != len(paths):
        twice = sorted({str(p) for p in paths if paths.count(p) > 1})
        raise OutputNotWritableError(
            f"{', '.join(twice)} is named for two outputs: give each output its own file."
        )
    for path in paths:
        if path.is_dir():
            raise OutputNotWritableError(
                f"{path} is a folder: give a file name such as {path / 'cells.csv'}."
            )
        if path.exists() and not overwrite:
            raise OutputExistsError(
                f"{path} already exists: choose another output, or pass --overwrite "
                "(overwrite=True) to replace it."
            )
        _check_folder(path.parent, path)


def _new_file_mode(path: Path) -> int:
    """Permissions for the file written at ``path``.

    Those of the file it replaces (as opening it for writing would keep them),
    else ``0o666`` less the umask, like any new file; never mkstemp's owner-only 0600.
    """
    if path.exists():
        return path.stat().st_mode & 0o7777
    return 0o666 & ~_umask()


def write_atomic(
    path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False
) -> Path:
    """Write a file atomically: ``write(temp)`` in the target folder, then rename into place.

    The one atomic writer of phenoadapt's outputs (tables, plate maps, settings,
    metrics): readers see no file, the old file or the complete new one.

    Parameters
    ----------
    path
        Target file; its folder is created if needed.
    write
        Writes the content to the temporary path it is given.
    overwrite
        Replace an existing file; without it an existing file is refused.

    Returns
    -------
    Path
        The file written: a new file with the permissions the umask gives, a
        replaced one with the permissions it had.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (a :class:`FileExistsError`).
    OutputNotWritableError
        The folder cannot be created or written to, or the disk is full.
    """
    path = Path(path)
    check_writable([path], overwrite)
    _writable_folder(path.parent, path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError as exc:
        raise OutputNotWritableError(
            f"Cannot write {path}: the folder {path.parent} is read-only. Choose a folder you "
            "can write to."
        ) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.chmod(tmp, _new_file_mode(path))
        if not overwrite and path.exists():  # appeared while writing: still never replace it
            raise OutputExistsError(
                f"{path} appeared while it was being written: not replaced. Choose another "
                "output, or pass --overwrite (overwrite=True)."
            )
        os.replace(tmp, path)
    except OSError as exc:
        if isinstance(exc, PhenoadaptError):
            raise
        if exc.errno == errno.ENOSPC:
            raise OutputNotWritableError(f"No space left on the device to write {path}.") from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def _format_of(path: Path) -> tuple[str, str | None]:
    """Delimiter and compression a file name asks for: ``.tsv``/``.tab`` tabs, ``.gz`` gzip."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = "gzip" if suffixes and suffixes[-1] == ".gz" else None
    if compression:
        suffixes = suffixes[:-1]
    return ("\t" if suffixes and suffixes[-1] in (".tsv", ".tab") else ","), compression


def write_table(table: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``table`` to a CSV file atomically (no index column).

    Every table phenoadapt writes goes through here (results, cells, embeddings,
    plate maps).  Tab-separated for ``.tsv``/``.tab`` names, gzipped for ``.gz``;
    formula injection is neutralised (:func:`to_csv_safe`).

    Parameters
    ----------
    table
        The table.
    path
        Target file; its folder is created if needed.
    overwrite
        Replace an existing file (atomically: readers see the old or the new file).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (a :class:`FileExistsError`).
    OutputNotWritableError
        The folder cannot be created or written to.
    """
    sep, compression = _format_of(Path(path))

    def write(tmp: Path) -> None:
        if compression:
            to_csv_safe(table, tmp, sep=sep, compression=compression)
            return
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            to_csv_safe(table, handle, sep=sep)

    return write_atomic(path, write, overwrite=overwrite)


def write_text(text: str, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a text file (JSON settings, metrics) atomically; see :func:`write_atomic`."""
    return write_atomic(
        path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite
    )


def write_tables(
    tables: Mapping[str | os.PathLike, pd.DataFrame], *, overwrite: bool = False
) -> list[Path]:
    """Write several tables; every target is checked before the first is written.

    A failure part-way removes the files this call wrote, so a set of outputs is
    complete or absent (with ``overwrite``, replaced files cannot be restored).
    """
    paths = [Path(p) for p in tables]
    check_writable(paths, overwrite)
    created = _missing_folders(paths)
    written: list[Path] = []
    try:
        for path, table in zip(paths, tables.values(), strict=True):
            written.append(write_table(table, path, overwrite=overwrite))
    except BaseException:
        if not overwrite:
            for path in written:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        for folder in created:  # deepest first; a folder someone filled meanwhile stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return written


def _missing_folders(paths: list[Path]) -> list[Path]:
    """Folders that writing ``paths`` will create, deepest first."""
    missing: set[Path] = set()
    for path in paths:
        folder = path.parent
        while not folder.exists() and folder.parent != folder:
            missing.add(folder)
            folder = folder.parent
    return sorted(missing, key=lambda f: len(f.parts), reverse=True)


#: Settings and provenance of a run, written next to its tables.
RUN_FILE = "run.json"

#: Column of the cells table that marks the cells selected (on the UMAP).
SELECTED_COLUMN = "selected"


def with_run_id(table: pd.DataFrame, run_id: str | None) -> pd.DataFrame:
    """``table`` with a last ``Metadata_RunID`` column (unchanged when None or present).

    Last, so plate, well and site stay the first columns a person reads; tools
    that follow pycytominer find metadata by its prefix, not its place.
    """
    if run_id is None or schema.RUN_ID in table.columns:
        return table
    out = table.copy()
    out[schema.RUN_ID] = run_id
    return out


def annotate_cells(
    cells: pd.DataFrame,
    *,
    selected: Any = None,
    umap: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The cells table with a ``selected`` column and UMAP coordinates added.

    Parameters
    ----------
    cells
        The per-cell table of a run.
    selected
        Positional rows of ``cells`` that are selected (e.g. on the UMAP), or a
        boolean mask; None adds no column.
    umap
        Per-cell coordinates aligned with ``cells`` (e.g. ``umap_after_1``...);
        NaN for cells without a point.

    Returns
    -------
    pandas.DataFrame
        A copy with the columns appended (``cells`` itself when nothing is added).
    """
    if selected is None and umap is None:
        return cells
    out = cells.copy()
    if selected is not None:
        chosen = np.asarray(selected)
        mask = np.zeros(len(out), dtype=bool)
        if chosen.dtype == bool:
            if len(chosen) != len(out):
                raise ValueError(f"A mask of {len(chosen)} for {len(out)} cells.")
            mask = chosen
        else:
            mask[chosen.astype(np.int64)] = True
        out[SELECTED_COLUMN] = mask
    if umap is not None:
        if len(umap) != len(out):
            raise ValueError(f"UMAP coordinates for {len(umap)} rows, {len(out)} cells.")
        for column in umap.columns:
            out[column] = umap[column].to_numpy()
    return out


def result_tables(
    result: Any, *, selected: Any = None, umap: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """The tables of a :class:`~phenoadapt.pipeline.RunResult` worth saving, by name.

    Every table carries the run id (``Metadata_RunID``) when the result has a
    record; ``selected`` and ``umap`` annotate the cells (:func:`annotate_cells`).
    """
    record = getattr(result, "record", None)
    run_id = record.get("run_id") if record else None
    tables = {"cells": annotate_cells(result.cells, selected=selected, umap=umap)}
    tables["wells"] = result.wells
    if getattr(result, "accuracy", None) is not None:
        tables["accuracy"] = result.accuracy
    return {name: with_run_id(table, run_id) for name, table in tables.items()}


def run_json(result: Any, extra: dict[str, Any] | None = None) -> str | None:
    """``run.json`` text of a result (its record plus ``extra``), None without a record."""
    record = getattr(result, "record", None)
    if not record:
        return None
    return json.dumps({**record, **(extra or {})}, indent=2) + "\n"


def export_results(
    result: Any,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    selected: Any = None,
    umap: pd.DataFrame | None = None,
    only_selected: bool = False,
    extra_files: dict[str, str] | None = None,
    run_extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``cells.csv``, ``wells.csv``, ``accuracy.csv`` (when known) and ``run.json``.

    Parameters
    ----------
    result
        A :class:`~phenoadapt.pipeline.RunResult`.
    out_dir
        Folder receiving the files (created if needed).
    overwrite
        Replace existing files; without it, no file is written when any exists.
    selected, umap
        Annotations of the cells table (:func:`annotate_cells`).
    only_selected
        Write only the selected cells (``cells_selected.csv``) and ``run.json``.
    extra_files
        Table name -> file name overrides (e.g. a prefix per export).
    run_extra
        Entries added to ``run.json`` (e.g. the UMAP settings).

    Returns
    -------
    dict
        Table name (and ``run``) -> file written.
    """
    out = Path(out_dir)
    tables = result_tables(result, selected=selected, umap=umap)
    names = dict(RESULT_FILES, **(extra_files or {}))
    if only_selected:
        cells = tables["cells"]
        if SELECTED_COLUMN not in cells.columns or not cells[SELECTED_COLUMN].any():
            raise PhenoadaptError(
                "No cells are selected: select points on the UMAP (or cells in the viewer) first."
            )
        tables = {"cells_selected": cells[cells[SELECTED_COLUMN]].reset_index(drop=True)}
        names.setdefault("cells_selected", "cells_selected.csv")
    targets = {out / names[name]: table for name, table in tables.items()}
    settings = run_json(result, run_extra)
    run_path = out / RUN_FILE
    check_writable([*targets, *([run_path] if settings else [])], overwrite)
    written = dict(zip(tables, write_tables(targets, overwrite=overwrite), strict=True))
    if settings:
        written["run"] = write_text(settings, run_path, overwrite=overwrite)
    return written


__all__ = [
    "FORMULA_PREFIXES",
    "RESULT_FILES",
    "RUN_FILE",
    "SELECTED_COLUMN",
    "annotate_cells",
    "with_run_id",
    "run_json",
    "formula_cells",
    "needs_neutralising",
    "neutralise_formulas",
    "restore_formulas",
    "to_csv_safe",
    "OutputExistsError",
    "OutputNotWritableError",
    "check_writable",
    "export_results",
    "result_tables",
    "write_atomic",
    "write_table",
    "write_tables",
    "write_text",
]
