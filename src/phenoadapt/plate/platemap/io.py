"""Reading and writing plate-map files: CSV or TSV, phenoadapt's schema or JUMP's.

Reading sniffs the delimiter, finds columns by their common names and checks
every well; writing goes through :func:`phenoadapt.export.write_table` (atomic:
a temporary file renamed over the target), so an interrupted save never leaves
half a plate map behind.
"""

from __future__ import annotations

import codecs
import gzip
import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ...errors import PhenoadaptWarning, PlateMapError
from ...export import restore_formulas, write_table
from ..wells import PLATE_384, PlateFormat
from .canonical import COMPOUND_TABLE, Origin
from .model import PlateMap

# Delimiters tried when sniffing, in order of preference on ties.
_DELIMITERS = ("\t", ",", ";")
_TAB_SUFFIXES = (".tsv", ".tab")
_SPREADSHEET_SUFFIXES = (".xlsx", ".xls", ".ods")


def _suffix(path: Path) -> str:
    """The suffix that says the format, looking past ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


class PlateMapEncodingWarning(PhenoadaptWarning):
    """A plate map read in another encoding than UTF-8 (the warning names it)."""


# Byte-order marks, longest first (a UTF-32 LE mark begins like UTF-16 LE's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 (little-endian)"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 (big-endian)"),
)
_SAVE_AS_UTF8 = "save it as CSV UTF-8 (Excel: File > Save As > CSV UTF-8)"


def _file_bytes(path: Path) -> bytes:
    """The bytes of a file, gunzipped for ``.gz`` names."""
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise PlateMapError(
                f"{path.name} is named .gz but is not a readable gzip file ({exc}): "
                "decompress or re-export it."
            ) from exc
    return data


def decode_text(data: bytes, name: str) -> tuple[str, str]:
    """Text of a table file and the encoding it was read in.

    UTF-8 with or without a byte-order mark; UTF-16 and UTF-32 by their
    byte-order mark; else, when the bytes are not valid UTF-8, Windows-1252 or
    latin-1 (what Excel and older instruments write), with a
    :class:`PlateMapEncodingWarning` naming the encoding used.

    Raises
    ------
    PlateMapError
        Bytes that are no text in any of these encodings (NUL characters: UTF-16
        without a byte-order mark, or not a text file), naming the encoding problem.
    """
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom) :].decode(codec)
            except UnicodeDecodeError as exc:
                raise PlateMapError(
                    f"{name} starts with a {label} byte-order mark but is not valid {label} "
                    f"(byte {exc.start}): {_SAVE_AS_UTF8}."
                ) from exc
            return _no_nul(text, name, label), label
    try:
        return _no_nul(data.decode("utf-8"), name, "UTF-8"), "UTF-8"
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
    if data.count(0) > len(data) // 4:  # every other byte zero: UTF-16 without its mark
        raise PlateMapError(
            f"{name} looks like UTF-16 text without a byte-order mark, which cannot be read "
            f"reliably: {_SAVE_AS_UTF8}."
        )
    for codec, label in (("cp1252", "Windows-1252"), ("latin-1", "latin-1 (ISO-8859-1)")):
        try:
            text = _no_nul(data.decode(codec), name, label)
        except UnicodeDecodeError:
            continue
        warnings.warn(
            f"{name} is not UTF-8 (line {line} holds bytes that are not): read as {label}. "
            f"Check the names with accents, or {_SAVE_AS_UTF8}.",
            PlateMapEncodingWarning,
            stacklevel=3,
        )
        return text, label
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def _no_nul(text: str, name: str, label: str) -> str:
    if "\x00" in text:
        raise PlateMapError(
            f"{name} holds NUL characters when read as {label}: it is not a text table (a "
            f"binary file, or text in another encoding); {_SAVE_AS_UTF8}."
        )
    return text


def _read_text(path: Path) -> str:
    return decode_text(_file_bytes(path), path.name)[0]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def sniff_delimiter(path: str | Path, text: str | None = None) -> str:
    """The delimiter of a CSV/TSV file: the one that splits its header line most.

    Header names seldom contain a delimiter, while values often do (InChI
    strings are full of commas), so the header line decides.  A file with a
    single column gets a tab for ``.tsv`` names and a comma otherwise.
    ``text`` is the file's decoded text when the caller has read it already.
    """
    path = Path(path)
    header = _first_line(_read_text(path) if text is None else text)
    counts = {d: header.count(d) for d in _DELIMITERS}
    if _suffix(path) in _TAB_SUFFIXES:
        counts["\t"] += 0.5  # break ties in favour of what the name says
    best = max(_DELIMITERS, key=lambda d: counts[d])
    if counts[best] >= 1:
        return best
    return "\t" if _suffix(path) in _TAB_SUFFIXES else ","


def read_table(path: str | Path, *, what: str = "plate map") -> tuple[pd.DataFrame, Origin]:
    """Read a CSV/TSV table as text, indexed by file line number.

    Parameters
    ----------
    path
        The file (``.csv``, ``.tsv``, ``.txt``, optionally gzipped).
    what
        What the file should be, for error messages.

    Returns
    -------
    (DataFrame, Origin)
        Every cell as text (empty cells and ``NA`` as missing), blank lines and
        empty unnamed columns dropped, and where the rows came from.

    Raises
    ------
    PlateMapError
        When the file is missing, a spreadsheet, empty or not a table.
    """
    path = Path(path)
    origin = Origin(path.name, row_word="line")
    if not path.is_file():
        raise PlateMapError(
            f"No {what} at {path}: check the path{' (it is a folder)' if path.is_dir() else ''}."
        )
    if _suffix(path) in _SPREADSHEET_SUFFIXES:
        raise PlateMapError(
            f"{path.name} is a spreadsheet: save the {what} as CSV (File > Save As > CSV) and use "
            "that file."
        )
    text = _read_text(path)
    if not _first_line(text).strip():
        raise PlateMapError(
            f"The {what} {path} is empty: it needs a header line and one row per well."
        )
    try:
        table = pd.read_csv(
            io.StringIO(text),
            sep=sniff_delimiter(path, text),
            dtype=str,
            skip_blank_lines=False,
            skipinitialspace=True,
        )
    except pd.errors.ParserError as exc:
        raise PlateMapError(
            f"{path.name} is not a readable CSV/TSV table: {exc}. Check that every line has the "
            "same number of fields."
        ) from exc
    table.columns = [str(c).strip() for c in table.columns]
    # Names phenoadapt wrote with a protective quote ("'=A1") read back as typed.
    table = restore_formulas(table)
    # Line numbers as the user sees them: the header is line 1.
    table.index = pd.RangeIndex(2, len(table) + 2)
    table = table.dropna(how="all")
    # Trailing delimiters make empty "Unnamed: n" columns; they carry nothing.
    empty_unnamed = [c for c in table.columns if c.startswith("Unnamed:") and table[c].isna().all()]
    table = table.drop(columns=empty_unnamed)
    if table.empty:
        raise PlateMapError(
            f"The {what} {path.name} has a header ({', '.join(table.columns)}) but no rows: "
            "add one row per well."
        )
    return table, origin


def read_platemap(
    path: str | Path,
    *,
    plate_format: PlateFormat | int | None = None,
    columns: Mapping[str, str | None] | None = None,
    controls: str | Sequence[str] | None = None,
    compound_metadata: str | Path | pd.DataFrame | None = None,
    plate_id: str | None = None,
) -> PlateMap:
    """Read a plate map from a CSV or TSV file.

    Parameters
    ----------
    path
        The plate map: one row per well.  Columns are found by their common
        names (``Metadata_Well``/``well``/``well_position``...,
        ``Metadata_Treatment``/``compound``/``pert_iname``/``broad_sample``...,
        ``moa``, ``concentration``/``dose``..., ``Metadata_Role``/``role``/
        ``pert_type``/``control_type``).
    plate_format
        Plate format or number of wells; guessed from the wells when None.
    columns
        Field -> column name where the aliases do not find the right column
        (``{"well": "Pos", "treatment": "Drug"}``; None ignores a field).
    controls
        Treatment name(s) of the negative controls.  Without a role column
        they decide (default: DMSO); with one, their wells are added to the
        controls the file marks.
    compound_metadata
        A per-compound table (file or DataFrame) to join on the map's compound
        column, e.g. ``JUMP-MOA_compound_metadata.tsv``: adds compound names,
        MoAs and control types (JUMP ``negcon`` wells become controls).
    plate_id
        The plate's id; selects that plate's rows in a map of several plates.

    Returns
    -------
    PlateMap
        An unmodified map whose ``source`` is ``path``.

    Raises
    ------
    PlateMapError
        For an unreadable or empty file, missing columns, bad wells, repeated
        wells, wells outside the plate, unknown roles or compounds.
    """
    table, origin = read_table(path)
    meta_origin = COMPOUND_TABLE
    if compound_metadata is not None and not isinstance(compound_metadata, pd.DataFrame):
        compound_metadata, meta_origin = read_table(compound_metadata, what="compound metadata")
    return PlateMap.from_frame(
        table,
        plate_format=plate_format,
        plate_id=plate_id,
        columns=columns,
        controls=controls,
        compound_metadata=compound_metadata,
        source=path,
        origin=origin,
        meta_origin=meta_origin,
    )


def read_jump_platemap(
    platemap_path: str | Path,
    metadata_path: str | Path,
    *,
    plate_format: PlateFormat | int = PLATE_384,
    controls: str | Sequence[str] | None = None,
    plate_id: str | None = None,
) -> PlateMap:
    """Read a JUMP Cell Painting plate map with its compound metadata.

    The plate map (``well_position``, ``broad_sample``, ``solvent``) is joined
    on ``broad_sample`` with the metadata (``pert_iname``, ``moa``,
    ``pert_type``, ``control_type``).  Treatments are compound names
    (``pert_iname``); ``control_type`` ``negcon`` (DMSO, written with an empty
    ``broad_sample``) marks the controls; positive controls count as treated.

    Parameters
    ----------
    platemap_path, metadata_path
        The two JUMP files (e.g. ``JUMP-MOA_compound_platemap.tsv`` and
        ``JUMP-MOA_compound_metadata.tsv``).
    plate_format
        JUMP plates have 384 wells.
    controls, plate_id
        As for :func:`read_platemap`.
    """
    table, origin = read_table(platemap_path)
    if "broad_sample" not in table.columns:
        raise PlateMapError(
            f"{origin.name} is not a JUMP plate map: it needs a 'broad_sample' column (found "
            f"{', '.join(table.columns)}). Use read_platemap for other plate maps."
        )
    metadata, meta_origin = read_table(metadata_path, what="compound metadata")
    return PlateMap.from_frame(
        table,
        plate_format=plate_format,
        plate_id=plate_id,
        controls=controls,
        compound_metadata=metadata,
        source=platemap_path,
        origin=origin,
        meta_origin=meta_origin,
    )


def write_platemap(platemap: PlateMap, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a plate map in phenoadapt's schema, atomically.

    Columns are those of :meth:`PlateMap.to_frame`; tab-separated for
    ``.tsv``/``.tab`` names, comma-separated otherwise, gzipped for ``.gz``.
    The map is marked saved.  Reading the file back gives an equal map.  The
    file is written by :func:`phenoadapt.export.write_table`, like every table.

    Parameters
    ----------
    platemap
        The map to write.
    path
        Target file; its folder is created if needed.
    overwrite
        Replace an existing file; without it an existing file is an error.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    phenoadapt.export.OutputExistsError
        When the file exists (and ``overwrite`` is False).
    phenoadapt.export.OutputNotWritableError
        When ``path`` is a folder or its folder cannot be written.
    """
    path = write_table(platemap.to_frame(), path, overwrite=overwrite)
    platemap.mark_saved(path)
    return path
