"""Errors raised for bad user input.

Every message says what is wrong and how to fix it; the CLI prints the message
and exits with status 2, the GUI shows it as a napari notification.  Anything
that is not a :class:`PhenoadaptError` is a bug: the CLI says so and keeps its
traceback for ``--debug``.  Several classes also derive from the built-in
exception a caller would expect (``ValueError``, ``FileNotFoundError``,
``KeyError``), so ``except ValueError`` in user code keeps working.
"""

from __future__ import annotations


class PhenoadaptError(Exception):
    """Base class of all errors that are the user's input, not a bug."""


class PhenoadaptWarning(UserWarning):
    """Base class of warnings about the user's input (the CLI prints them plainly)."""


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


class OptionError(PhenoadaptError, ValueError):
    """A setting out of its range or not among its choices (a CLI option, a config field)."""


class InputNotFoundError(PhenoadaptError, FileNotFoundError):
    """An input file or folder the user named that does not exist."""


class NotOnPlateError(PhenoadaptError, KeyError):
    """A well, site or channel that the plate does not have."""

    def __str__(self) -> str:
        # KeyError shows its argument's repr ('"Well ..."'); a message reads better plain.
        return str(self.args[0]) if self.args else ""


class Cancelled(PhenoadaptError):
    """Raised inside a job when the user pressed Cancel."""
