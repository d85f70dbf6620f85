"""The session's palettes: one colour per class and per plate in every dock.

Each view (plate grid, overlay and Run legend, UMAP) asks these functions
rather than building its own palette, so the colours are those of
:mod:`phenoadapt.palette` computed over *every* name the session knows: the
model's classes, the MoAs of every open plate map and those in the result
table.  A class therefore has the same colour whatever subset a view shows
(a plate with three MoAs, a field with two predicted classes).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .. import schema
from ..palette import ClassPalette, class_colours, plate_colours, role_colours
from ..schema import Role


def _column_values(table: Any, column: str) -> list[str]:
    if not isinstance(table, pd.DataFrame) or column not in table.columns:
        return []
    return [str(v) for v in pd.unique(table[column].dropna())]


def _control_only(platemaps: list[Any], column: str) -> set[str]:
    """Names that the maps give to control wells only (a map's own negative control)."""
    controls: set[str] = set()
    others: set[str] = set()
    for platemap in platemaps:
        frame = platemap.to_frame()
        if column not in frame.columns:
            continue
        is_control = frame[schema.ROLE] == Role.CONTROL.value
        controls |= {str(v) for v in frame.loc[is_control, column].dropna()}
        others |= {str(v) for v in frame.loc[~is_control, column].dropna()}
    return controls - others


def session_class_palette(session: Any) -> ClassPalette:
    """Colours of MoAs and predicted classes, shared by every dock of a session.

    Parameters
    ----------
    session
        A :class:`~phenoadapt.gui.session.PlateSession`.

    Returns
    -------
    ClassPalette
        Over the model's classes, the plate maps' MoAs and the result's MoAs
        and predictions; MoAs found only in control wells count as controls.
    """
    result = getattr(session, "result", None)
    platemaps = list(getattr(session, "platemaps", {}).values())
    names: list[str] = [str(c) for c in (getattr(result, "classes", None) or ())]
    for platemap in platemaps:
        names += platemap.moas()
    cells = getattr(result, "cells", None)
    names += _column_values(cells, schema.MOA) + _column_values(cells, schema.PREDICTION)
    return class_colours(names, controls=_control_only(platemaps, schema.MOA))


def session_treatment_palette(session: Any) -> ClassPalette:
    """Colours of treatments over every open plate map (controls grey)."""
    platemaps = list(getattr(session, "platemaps", {}).values())
    names = [t for platemap in platemaps for t in platemap.treatments()]
    return class_colours(names, controls=_control_only(platemaps, schema.TREATMENT))


def session_plate_palette(session: Any) -> ClassPalette:
    """Colours of plates: the open plates and those of the result, sorted by id."""
    result = getattr(session, "result", None)
    ids = [str(p) for p in getattr(session, "plates", {})]
    ids += _column_values(getattr(result, "cells", None), schema.PLATE)
    return plate_colours(ids)


def column_palette(session: Any, column: str) -> ClassPalette:
    """The session's palette for a table column (what "colour by" reads).

    Plates, roles, treatments, and MoA and prediction alike (one palette, so a
    class has one colour whether points show the known or the predicted MoA).
    """
    if column == schema.PLATE:
        return session_plate_palette(session)
    if column == schema.ROLE:
        return role_colours()
    if column == schema.TREATMENT:
        return session_treatment_palette(session)
    return session_class_palette(session)
