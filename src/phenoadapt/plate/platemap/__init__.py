"""Plate maps: which treatment, MoA, concentration and role each well of a plate has.

Read a map with :func:`read_platemap` (CSV/TSV with common column names, or a
JUMP map joined with its compound metadata), build one with
:func:`make_platemap` or :meth:`PlateMap.from_frame`, edit roles with
:meth:`PlateMap.set_role` / :meth:`PlateMap.mark_controls_where`, and save it
with :func:`write_platemap`.  :func:`platemap_for_plate` is the one policy for
which map a plate gets (given > shipped with the plate > none), used by the
GUI, the CLI and the API.  Negative controls (``Role.CONTROL``, usually
DMSO) are what CS-ARM-BN adapts a model with; :meth:`PlateMap.require_controls`
says clearly when a plate has too few.
"""

from .build import make_platemap
from .canonical import DEFAULT_CONTROLS
from .check import WellCheck
from .columns import ALIASES, parse_role
from .for_plate import SHIPPED_NAMES, platemap_for_plate, read_map_for_plate, shipped_platemap
from .io import read_jump_platemap, read_platemap, read_table, sniff_delimiter, write_platemap
from .model import NotEnoughControlsError, PlateMap

__all__ = [
    "ALIASES",
    "SHIPPED_NAMES",
    "DEFAULT_CONTROLS",
    "NotEnoughControlsError",
    "PlateMap",
    "WellCheck",
    "make_platemap",
    "parse_role",
    "platemap_for_plate",
    "read_map_for_plate",
    "read_jump_platemap",
    "read_platemap",
    "read_table",
    "shipped_platemap",
    "sniff_delimiter",
    "write_platemap",
]
