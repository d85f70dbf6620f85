"""Errors raised for bad user input.

Every message says what is wrong and how to fix it; the CLI prints the message
and exits non-zero, the GUI shows it as a napari notification.
"""

from __future__ import annotations


class PhenoadaptError(Exception):
    """Base class of all errors that are the user's input, not a bug."""


class PlateLayoutError(PhenoadaptError, ValueError):
    """A folder whose files match no known plate layout."""


class PlateReadError(PhenoadaptError, OSError):
    """An image file that cannot be read (corrupt, truncated, wrong shape)."""


class PlateMapError(PhenoadaptError, ValueError):
    """A plate map that does not fit its plate or misses required columns."""


class CellsError(PhenoadaptError, ValueError):
    """A field that cannot be segmented or measured (empty, saturated, missing channel)."""


class ModelError(PhenoadaptError, ValueError):
    """A checkpoint that is not one, or whose channels or classes do not fit the plate."""


class ContextError(PhenoadaptError, ValueError):
    """A plate context unfit for an adaptation method (no or too few controls)."""


class TableError(PhenoadaptError, ValueError):
    """A feature table with missing columns, NaN or constant features, or too few rows."""


class Cancelled(PhenoadaptError):
    """Raised inside a job when the user pressed Cancel."""
