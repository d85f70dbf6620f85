"""Plate formats and well names.

Wells are named the way biologists write them, with a zero-padded column:
``A01`` on a 96-well plate, ``P24`` on a 384-well plate, ``AF48`` on a
1536-well plate (rows past ``Z`` continue ``AA``, ``AB``, ...).  Every reader
and plate map converts its own spelling (``A1``, ``r01c01``, ``(1, 1)``) to
this canonical name with :func:`normalize_well`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import ascii_uppercase

from ..errors import OptionError, PlateMapError

_WELL_RE = re.compile(r"^\s*([A-Za-z]{1,2})\s*0*(\d{1,2})\s*$")


@dataclass(frozen=True)
class PlateFormat:
    """A plate format: number of wells as rows x columns.

    Parameters
    ----------
    n_rows, n_columns
        Grid size (8 x 12, 16 x 24 or 32 x 48).
    """

    n_rows: int
    n_columns: int

    @property
    def n_wells(self) -> int:
        """Number of wells on the plate."""
        return self.n_rows * self.n_columns

    def __str__(self) -> str:
        return f"{self.n_wells}-well"

    def wells(self) -> list[str]:
        """All well names in row-major order (A01, A02, ... )."""
        return [
            well_name(r, c) for r in range(1, self.n_rows + 1) for c in range(1, self.n_columns + 1)
        ]

    def contains(self, well: str) -> bool:
        """Return True if ``well`` (canonical name) lies on this plate."""
        row, col = well_position(well)
        return 1 <= row <= self.n_rows and 1 <= col <= self.n_columns

    def is_edge(self, well: str) -> bool:
        """Return True for wells in the outermost rows or columns."""
        row, col = well_position(well)
        return row in (1, self.n_rows) or col in (1, self.n_columns)


PLATE_96 = PlateFormat(8, 12)
PLATE_384 = PlateFormat(16, 24)
PLATE_1536 = PlateFormat(32, 48)
PLATE_FORMATS = {96: PLATE_96, 384: PLATE_384, 1536: PLATE_1536}


def plate_format(n_wells: int) -> PlateFormat:
    """Return the :class:`PlateFormat` for 96, 384 or 1536 wells.

    Raises
    ------
    OptionError
        For any other number of wells (a ValueError).
    """
    try:
        return PLATE_FORMATS[int(n_wells)]
    except (KeyError, ValueError):
        raise OptionError(f"Unknown plate format {n_wells!r}: use 96, 384 or 1536 wells.") from None


def row_name(row: int) -> str:
    """Letter(s) of a 1-based row index: 1 -> A, 26 -> Z, 27 -> AA."""
    if row < 1:
        raise ValueError(f"Row index must be >= 1, got {row}.")
    if row <= 26:
        return ascii_uppercase[row - 1]
    return ascii_uppercase[(row - 1) // 26 - 1] + ascii_uppercase[(row - 1) % 26]


def row_index(name: str) -> int:
    """1-based row index of row letters: A -> 1, AA -> 27."""
    name = name.upper()
    if len(name) == 1:
        return ascii_uppercase.index(name) + 1
    return (ascii_uppercase.index(name[0]) + 1) * 26 + ascii_uppercase.index(name[1]) + 1


def well_name(row: int, column: int) -> str:
    """Canonical well name of 1-based row and column: (3, 3) -> ``C03``."""
    if column < 1:
        raise ValueError(f"Column index must be >= 1, got {column}.")
    return f"{row_name(row)}{column:02d}"


def well_position(well: str) -> tuple[int, int]:
    """1-based (row, column) of a well name such as ``C03`` or ``c3``."""
    match = _WELL_RE.match(str(well))
    if match is None:
        raise PlateMapError(
            f"{well!r} is not a well name: write a row letter and a column number, "
            "e.g. 'A01' or 'P24'."
        )
    column = int(match.group(2))
    if column < 1:  # "A00": the pattern reads it, but columns start at 1
        raise PlateMapError(
            f"{well!r} is not a well name: columns start at 1 (A01 is the first well of a plate)."
        )
    return row_index(match.group(1)), column


def normalize_well(well: str) -> str:
    """Canonical spelling of a well name: ``a1`` -> ``A01``, ``B 7`` -> ``B07``."""
    return well_name(*well_position(well))


def guess_format(wells: list[str]) -> PlateFormat:
    """Smallest standard plate format that holds all ``wells``."""
    positions = [well_position(w) for w in wells]
    max_row = max((r for r, _ in positions), default=1)
    max_col = max((c for _, c in positions), default=1)
    for fmt in (PLATE_96, PLATE_384, PLATE_1536):
        if max_row <= fmt.n_rows and max_col <= fmt.n_columns:
            return fmt
    raise PlateMapError(
        f"Wells reach row {row_name(max_row)} and column {max_col}, beyond a 1536-well plate."
    )
