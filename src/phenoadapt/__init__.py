"""phenoadapt: trust deep-learning results on Cell Painting plates from a new batch.

The package imports without a display; napari and Qt are only imported by
:mod:`phenoadapt.gui`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
