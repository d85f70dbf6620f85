"""One colour per class and per plate, the same in every view (no Qt here).

The plate grid, the cell overlay and its legend, the UMAP maps and the summary
figures all ask this module for colours, so a class has one colour wherever
it is drawn:

- a class's colour depends only on its name and the set of names coloured
  together: names are sorted (case-insensitively), never ordered by frequency
  or by their order in a table, and the i-th name gets the i-th colour;
- colours are colour-blind safe: Okabe-Ito (without black, which vanishes on
  napari's dark theme), then Paul Tol's *muted* scheme, then a deterministic
  extension of hues spread by the golden ratio;
- negative controls (DMSO, "control", "negative control"...) are always the
  fixed grey :data:`CONTROL_COLOUR` and are flagged, so views can mark them
  (a "C" in the plate grid, "(control)" in legends); they take no palette slot.

Plates get their own palette (:func:`plate_colours`, Paul Tol's *bright*
scheme first), so "colour by plate" never looks like "colour by MoA".
"""

from __future__ import annotations

import colorsys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from .schema import Role

#: Okabe & Ito (2008), without black.
OKABE_ITO: tuple[str, ...] = (
    "#e69f00",
    "#56b4e9",
    "#009e73",
    "#f0e442",
    "#0072b2",
    "#d55e00",
    "#cc79a7",
)
#: Paul Tol's muted scheme, without its pale grey (that is for bad data).
TOL_MUTED: tuple[str, ...] = (
    "#cc6677",
    "#332288",
    "#ddcc77",
    "#117733",
    "#88ccee",
    "#882255",
    "#44aa99",
    "#999933",
    "#aa4499",
)
#: Paul Tol's bright scheme, without grey: the first plate colours.
TOL_BRIGHT: tuple[str, ...] = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377")
#: Class colours in slot order: Okabe-Ito, then Tol muted (16 colours before the extension).
CLASS_PALETTE: tuple[str, ...] = OKABE_ITO + TOL_MUTED
#: The negative-control colour, in every view.
CONTROL_COLOUR = "#b0b0b0"
#: Colour of a value that is missing (no prediction, no MoA).
MISSING_COLOUR = "#7d838c"
#: Names that mean "negative control" whatever the plate map says (compared case-folded).
CONTROL_NAMES: frozenset[str] = frozenset(
    {"dmso", "control", "negative control", "negative_control", "negcon", "neg control"}
)
#: Colours of well roles: controls the control grey, excluded wells a dark grey
#: (the plate grid hatches them as well, so they stay visible on a dark theme).
ROLE_COLOURS: dict[str, str] = {
    Role.CONTROL.value: CONTROL_COLOUR,
    Role.TREATED.value: "#e69f00",
    Role.EXCLUDED.value: "#5a5f66",
}


def is_control(name: object, controls: Iterable[str] = ()) -> bool:
    """True when a class or treatment name is a negative control.

    Parameters
    ----------
    name
        A class, MoA or treatment name (anything else is never a control).
    controls
        Further names that are controls here (e.g. a plate map's control
        treatments), compared case-insensitively.

    Returns
    -------
    bool
    """
    if not isinstance(name, str):
        return False
    key = name.strip().casefold()
    return key in CONTROL_NAMES or key in {c.strip().casefold() for c in controls}


def extended_colour(index: int) -> str:
    """The ``index``-th colour after the fixed palettes (deterministic, never grey).

    Hues step by the golden ratio so neighbours differ; lightness alternates
    between two levels that both read on a dark background.
    """
    hue = (0.11 + index * 0.618033988749895) % 1.0
    lightness = 0.62 if index % 2 else 0.48
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, 0.65)
    return "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in (red, green, blue)))


def palette_colour(index: int, palette: tuple[str, ...] = CLASS_PALETTE) -> str:
    """Colour of palette slot ``index``: the palette, then :func:`extended_colour`."""
    if index < len(palette):
        return palette[index]
    return extended_colour(index - len(palette))


def sort_names(names: Iterable[object]) -> list[str]:
    """Distinct names as text, sorted case-insensitively (ties by exact spelling)."""
    distinct = {str(n) for n in names if has_name(n)}
    return sorted(distinct, key=lambda n: (n.casefold(), n))


def has_name(value: object) -> bool:
    """False for a missing value: None, NaN, an empty string, or the text of a missing value."""
    if value is None:
        return False
    if isinstance(value, float) and value != value:  # NaN
        return False
    return str(value).strip() not in ("", "nan", "None", "<NA>")


@dataclass(frozen=True)
class ClassPalette(Mapping[str, str]):
    """Name -> hex colour for one colouring, with its controls flagged.

    Build it with :func:`class_colours` or :func:`plate_colours`.  It is a
    read-only mapping; :meth:`colour` also answers for names it was not built
    with (a stable colour from the name, or grey for controls).

    Attributes
    ----------
    colours
        Name -> ``#rrggbb`` in legend order (sorted, controls last).
    controls
        The names that are negative controls.
    """

    colours: dict[str, str] = field(default_factory=dict)
    controls: frozenset[str] = frozenset()

    def __getitem__(self, name: str) -> str:
        return self.colours[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.colours)

    def __len__(self) -> int:
        return len(self.colours)

    def colour(self, name: object) -> str:
        """Colour of a name; a missing value is :data:`MISSING_COLOUR`."""
        if not has_name(name):
            return MISSING_COLOUR
        text = str(name)
        if text in self.colours:
            return self.colours[text]
        if is_control(text, self.controls):
            return CONTROL_COLOUR
        # Not among the names coloured together: a stable colour from the name itself.
        return extended_colour(zlib.crc32(text.encode()) % 997)

    def is_control(self, name: object) -> bool:
        """True when ``name`` is a negative control of this colouring."""
        return isinstance(name, str) and (name in self.controls or is_control(name))

    def label(self, name: str) -> str:
        """Legend text: the name, with ``(control)`` after negative controls."""
        return f"{name} (control)" if self.is_control(name) else name

    def rgba(self, names: Iterable[object], alpha: float = 1.0) -> list[tuple[float, ...]]:
        """RGBA floats in [0, 1] of each name, in order (for matplotlib and napari)."""
        return [hex_to_rgba(self.colour(n), alpha) for n in names]


def class_colours(names: Iterable[object], controls: Iterable[str] = ()) -> ClassPalette:
    """Colours of classes (MoAs, predictions, treatments): stable and colour-blind safe.

    Parameters
    ----------
    names
        Every name that may be drawn together (e.g. the model's classes and the
        plate maps' MoAs).  Order and repeats do not matter: the names are
        sorted, so the same set always gives the same colours.
    controls
        Further names that are negative controls (besides DMSO, "control"...).

    Returns
    -------
    ClassPalette
        Controls are :data:`CONTROL_COLOUR` and listed last; other names take
        :data:`CLASS_PALETTE` slots in sorted order.
    """
    extra = tuple(controls)
    ordered = sort_names(names)
    flagged = [n for n in ordered if is_control(n, extra)]
    others = [n for n in ordered if not is_control(n, extra)]
    colours = {name: palette_colour(i) for i, name in enumerate(others)}
    colours.update(dict.fromkeys(flagged, CONTROL_COLOUR))
    return ClassPalette(colours, frozenset(flagged) | frozenset(extra))


def plate_colours(plate_ids: Iterable[object]) -> ClassPalette:
    """Colours of plates: sorted ids, Paul Tol bright then the deterministic extension.

    The same plates get the same colours in every view (cell and well maps,
    figures), whatever order the tables list them in.
    """
    ordered = sort_names(plate_ids)
    return ClassPalette({p: palette_colour(i, TOL_BRIGHT) for i, p in enumerate(ordered)})


def role_colours() -> ClassPalette:
    """Colours of well roles (:data:`ROLE_COLOURS`); controls flagged."""
    return ClassPalette(dict(ROLE_COLOURS), frozenset({Role.CONTROL.value}))


def hex_to_rgba(colour: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    """``"#rrggbb"`` (or ``"#rgb"``, ``"#rrggbbaa"``) as RGBA floats in [0, 1].

    Parameters
    ----------
    colour
        A hex colour string.
    alpha
        Opacity used when the string has none.

    Raises
    ------
    ValueError
        When ``colour`` is not a hex colour.
    """
    text = colour.strip().lstrip("#")
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    if len(text) not in (6, 8) or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"{colour!r} is not a hex colour such as '#e69f00'.")
    values = [int(text[i : i + 2], 16) / 255 for i in range(0, len(text), 2)]
    if len(values) == 3:
        values.append(float(alpha))
    return (values[0], values[1], values[2], values[3])
