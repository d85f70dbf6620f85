"""The session's palettes: one colour per class and per plate in every dock.

Each view (plate grid, overlay and Run legend, UMAP) asks these functions
rather than building its own palette, so the colours are those of
:mod:`phenoadapt.palette` computed over *every* name the session knows: the
model's classes, the MoAs of every open plate map and those in the result
table.  A class therefore has the same colour whatever subset a view shows
(a plate with three MoAs, a field with two predicted classes).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import pandas as pd

from .. import schema
from ..palette import ClassPalette, class_colours, has_name, plate_colours, role_colours
from ..schema import Role


def _column_values(table: Any, column: str) -> list[str]:
    if not isinstance(table, pd.DataFrame) or column not in table.columns:
        return []
    return [str(v) for v in pd.unique(table[column].dropna()) if has_name(v)]


def _control_only(platemaps: list[Any], column: str) -> set[str]:
    """Names that the maps give to control wells only (a map's own negative control)."""
    controls: set[str] = set()
    others: set[str] = set()
    for platemap in platemaps:
        frame = platemap.to_frame()
        if column not in frame.columns:
            continue
        is_control = frame[schema.ROLE] == Role.CONTROL.value
        controls |= {str(v) for v in frame.loc[is_control, column] if has_name(v)}
        others |= {str(v) for v in frame.loc[~is_control, column] if has_name(v)}
    return controls - others


#: Last palette of each kind per session, with the state it was computed from:
#: docks redraw on every click, and the names of a large result take a while to list.
_CACHE: weakref.WeakKeyDictionary[Any, dict[str, tuple[tuple, ClassPalette]]] = (
    weakref.WeakKeyDictionary()
)


def _state(session: Any) -> tuple:
    """What the palettes depend on: the result, the open plates, their maps and map versions."""
    maps = getattr(session, "platemaps", {})
    return (
        getattr(session, "result", None),
        tuple(getattr(session, "plates", {})),
        tuple((pid, pm, getattr(pm, "version", 0)) for pid, pm in maps.items()),
    )


def _same_state(a: tuple, b: tuple) -> bool:
    """Objects compared by identity (a result's tables are never compared), the rest by value."""
    if a[0] is not b[0] or a[1] != b[1] or len(a[2]) != len(b[2]):
        return False
    return all(
        x[0] == y[0] and x[1] is y[1] and x[2] == y[2] for x, y in zip(a[2], b[2], strict=True)
    )


def _cached(session: Any, kind: str, build: Callable[[Any], ClassPalette]) -> ClassPalette:
    state = _state(session)
    try:
        store = _CACHE.setdefault(session, {})
    except TypeError:  # an object that takes no weak reference: no cache
        return build(session)
    hit = store.get(kind)
    if hit is not None and _same_state(hit[0], state):
        return hit[1]
    palette = build(session)
    store[kind] = (state, palette)
    return palette


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
        and predictions; MoAs found only in control wells count as controls
        (unless the model predicts them), as do DMSO and other control names.
    """
    return _cached(session, "classes", _class_palette)


def _class_palette(session: Any) -> ClassPalette:
    result = getattr(session, "result", None)
    platemaps = list(getattr(session, "platemaps", {}).values())
    names: list[str] = [str(c) for c in (getattr(result, "classes", None) or ())]
    for platemap in platemaps:
        names += platemap.moas()
    cells = getattr(result, "cells", None)
    names += _column_values(cells, schema.MOA) + _column_values(cells, schema.PREDICTION)
    # A map's own control MoA (e.g. "vehicle") is grey; a class the model predicts stays a
    # class even where a map (perhaps by mistake) has it in control wells only.
    classes = {str(c) for c in (getattr(result, "classes", None) or ())}
    return class_colours(names, controls=_control_only(platemaps, schema.MOA) - classes)


def session_treatment_palette(session: Any) -> ClassPalette:
    """Colours of treatments over every open plate map (controls grey)."""
    return _cached(session, "treatments", _treatment_palette)


def _treatment_palette(session: Any) -> ClassPalette:
    platemaps = list(getattr(session, "platemaps", {}).values())
    names = [t for platemap in platemaps for t in platemap.treatments()]
    return class_colours(names, controls=_control_only(platemaps, schema.TREATMENT))


def session_plate_palette(session: Any) -> ClassPalette:
    """Colours of plates: the open plates and those of the result, sorted by id."""
    return _cached(session, "plates", _plate_palette)


def _plate_palette(session: Any) -> ClassPalette:
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
