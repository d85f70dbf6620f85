r"""Help for folders whose file names match no known layout: a ``--pattern`` written for them.

:func:`suggest_pattern` looks at *all* image file names of a folder, not one:
names are cut at separators (``_``, ``-``, spaces...) into segments, and
segments into letter and digit runs.  Parts that are the same in every file
stay literal; parts that vary become groups:

- the well: a row of 1-2 letters and a column of 1-3 digits (``B03``, ``B7``,
  ``WellB03``), a ``r02c03`` pair, or a row and column apart (``B - 03``);
- numbers after a hint (``s``/``f``/``fld``/``xy`` site, ``w``/``c``/``ch``
  channel, ``z``/``p`` plane, ``t`` time point) become those groups;
- words that vary (``DAPI``, ``GFP``, ``Cy5``) become the channel, so that a
  stain named in the file name names the channel and its role;
- other numbers that vary become the site, then the channel, then the plane;
  a number that only repeats what other groups already say (a running file
  counter) is matched without being captured.

The pattern is built for the names sharing the most common shape, then
checked against every image name of the folder; :func:`unmatched_images`
says which image files a pattern leaves out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import PlateLayoutError
from .layouts import LAYOUTS
from .scan import is_image

GENERIC_EXAMPLE = (r"(?P<well>[A-P]\d{2})_s(?P<site>\d+)_w(?P<channel>\d)\.tif", "A01_s1_w1.tif")

# Readable images the pattern is written for (phenoadapt reads TIFF).
_TIFF_END = re.compile(r"(\.ome)?\.tiff?$", re.IGNORECASE)
# Segments split into runs; ``WellB03`` splits as Well, B, 03 (a word glued to a well).
_RUNS = re.compile(r"[A-Z]?[a-z]+(?=[A-Z]{1,2}\d)|[A-Za-z]+|\d+")
_SEPARATORS = re.compile(r"([^A-Za-z0-9]+)")

# Text before a number that says what the number is (compared in lower case).
_HINTS: dict[str, str] = {
    **dict.fromkeys(("s", "f", "fld", "field", "site", "pos", "position", "xy", "fov"), "site"),
    **dict.fromkeys(("w", "c", "ch", "channel", "d", "wv", "wl", "wavelength"), "channel"),
    **dict.fromkeys(("z", "p", "plane", "zstep", "slice"), "plane"),
    **dict.fromkeys(("t", "tp", "time", "timepoint", "sk"), "timepoint"),
}
# Free roles an unexplained varying number takes, in this order.
_NUMBER_ROLES = ("site", "channel", "plane", "timepoint")
_MAX_COLUMN = 48
# Row names of plates up to 1536 wells: A-Z, then AA-AF.
_ROWS = {chr(c) for c in range(ord("A"), ord("Z") + 1)} | {f"A{c}" for c in "ABCDEF"}
_WORDS = {"word": r"[A-Za-z0-9]+", "alpha": r"[A-Za-z]+"}


@dataclass
class _Slot:
    """One aligned part of the names: a separator, a letter run, a digit run or a word."""

    kind: str  # "sep", "alpha", "digit" or "word"
    values: list[str]
    regex: str | None = None  # set once the slot is given a role
    spans: int = 1  # a well group may cover this slot and the next ones

    @property
    def constant(self) -> bool:
        return len(set(self.values)) == 1


@dataclass
class _Plan:
    """The slots of a set of names and the groups given to them so far."""

    slots: list[_Slot]
    roles: dict[str, list[int]] = field(default_factory=dict)  # group -> slot indices

    def key(self) -> list[tuple[str, ...]]:
        """Per file, the values of every slot given a group so far."""
        index = sorted(i for slots in self.roles.values() for i in slots)
        n = len(self.slots[0].values)
        return [tuple(self.slots[i].values[f] for i in index) for f in range(n)]

    def determined(self, i: int) -> bool:
        """True when slot ``i`` only repeats what the groups already say (a file counter)."""
        seen: dict[tuple[str, ...], str] = {}
        for key, value in zip(self.key(), self.slots[i].values, strict=True):
            if seen.setdefault(key, value) != value:
                return False
        return True

    def give(self, role: str, indices: list[int], regex: str) -> None:
        self.roles[role] = indices
        self.slots[indices[0]].regex = f"(?P<{role}>{regex})"
        self.slots[indices[0]].spans = len(indices)
        for i in indices[1:]:
            self.slots[i].regex = ""


def _escape(text: str) -> str:
    """Escape only the characters that mean something in a regex, so examples stay readable."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text)


def image_names(paths: Sequence[str]) -> list[str]:
    """The TIFF file names (not paths) among ``paths``, in order, without repeats."""
    names = (path.rsplit("/", 1)[-1] for path in paths)
    return list(dict.fromkeys(n for n in names if _TIFF_END.search(n)))


def suggest_pattern(names: str | Sequence[str]) -> str | None:
    r"""A ``--pattern`` that reads well, site and channel out of a folder's file names.

    Parameters
    ----------
    names
        The folder's file names or relative paths (non-TIFF files are skipped),
        or one file name.

    Returns
    -------
    str or None
        A regular expression with named groups that matches every TIFF name of
        the most common shape; None when the names hold no well (``B03``).

    Examples
    --------
    >>> names = [f"B7_0{s}_{c}_1.tif" for s in (1, 2) for c in ("DAPI", "GFP")]
    >>> print(suggest_pattern(names))
    (?P<well>[A-Za-z]{1,2}\d{1,3})_(?P<site>\d+)_(?P<channel>[A-Za-z0-9]+)_1\.tif
    """
    listed = image_names([names] if isinstance(names, str) else list(names))
    if not listed:
        return None
    stems, ending = _split_endings(listed)
    plan = _plan(stems)
    if plan is None or not _give_well(plan):
        return None
    _give_words(plan)
    _give_numbers(plan)
    return _render(plan) + ending


# -- names to aligned slots ------------------------------------------------------
def _split_endings(names: list[str]) -> tuple[list[str], str]:
    """Stems and the regex for their extensions (literal when they are all the same)."""
    endings = [_TIFF_END.search(n) for n in names]
    stems = [n[: m.start()] for n, m in zip(names, endings, strict=True) if m]
    texts = {m.group(0) for m in endings if m}
    ending = _escape(texts.pop()) if len(texts) == 1 else r"(?:\.ome)?\.[Tt][Ii][Ff][Ff]?"
    return stems, ending


def _plan(stems: list[str]) -> _Plan | None:
    """Slots for the stems that share the most common shape (segments and separators)."""
    parts = [_SEPARATORS.split(stem) for stem in stems]
    shapes = Counter((len(p), tuple(p[1::2])) for p in parts)
    shape = shapes.most_common(1)[0][0]
    parts = [p for p in parts if (len(p), tuple(p[1::2])) == shape]
    slots: list[_Slot] = []
    for i in range(shape[0]):
        column = [p[i] for p in parts]
        if i % 2:
            slots.append(_Slot("sep", column))
        else:
            slots.extend(_segment_slots(column))
    return _Plan(slots) if slots else None


def _segment_slots(column: list[str]) -> list[_Slot]:
    """Letter and digit runs of one segment when all names split alike, else one word."""
    runs = [_RUNS.findall(text) for text in column]
    kinds = {tuple("digit" if r.isdigit() else "alpha" for r in run) for run in runs}
    if len(kinds) == 1:
        (shape,) = kinds
        return [_Slot(kind, [run[j] for run in runs]) for j, kind in enumerate(shape)]
    return [_Slot("word", column)] if any(column) else []


# -- groups ------------------------------------------------------------------------
def _is_row(slot: _Slot) -> bool:
    return slot.kind == "alpha" and all(v.upper() in _ROWS for v in slot.values)


def _is_column(slot: _Slot, digits: int = 3) -> bool:
    return slot.kind == "digit" and all(
        len(v) <= digits and 1 <= int(v) <= _MAX_COLUMN for v in slot.values
    )


def _starts_segment(slots: list[_Slot], i: int) -> bool:
    """True when slot ``i`` begins a segment, or follows a constant word (``Well`` of WellB03)."""
    if i == 0 or slots[i - 1].kind == "sep":
        return True
    before = slots[i - 1]
    return before.kind == "alpha" and before.constant and (i < 2 or slots[i - 2].kind == "sep")


def _well_candidates(plan: _Plan) -> list[tuple[tuple, str, list[int]]]:
    """Possible wells, each with a rank (higher is better), a kind and its slots."""
    slots = plan.slots
    found = []
    for i in range(len(slots) - 1):
        row, nxt = slots[i], slots[i + 1]
        varies = not (row.constant and nxt.constant)
        hint = row.values[0].lower() if row.constant else ""
        if (
            hint == "r"
            and _is_column(nxt)
            and i + 3 < len(slots)
            and slots[i + 2].constant
            and slots[i + 2].values[0].lower() == "c"
            and _is_column(slots[i + 3])
        ):
            found.append(((2, varies, True, True, True, -i), "rc", [i + 1, i + 3]))
        elif _is_row(row) and _is_column(nxt) and _starts_segment(slots, i):
            if row.constant and row.values[0].islower() and hint in _HINTS:
                continue  # s1, w2, f03: a site or channel, not a well
            upper = all(v.isupper() for v in row.values)
            rank = (1, not row.constant, hint not in _HINTS, varies, upper, -i)
            found.append((rank, "well", [i, i + 1]))
        elif (
            _is_row(row)
            and nxt.kind == "sep"
            and nxt.constant
            and i + 2 < len(slots)
            and _is_column(slots[i + 2])
            and _starts_segment(slots, i)
            and (i + 3 >= len(slots) or slots[i + 3].kind == "sep")
            and not (row.constant and row.values[0].islower() and hint in _HINTS)
        ):
            varies = not (row.constant and slots[i + 2].constant)
            rank = (1, not row.constant, hint not in _HINTS, varies, True, -i)
            found.append((rank, "split", [i, i + 2]))
    return found


def _give_well(plan: _Plan) -> bool:
    """Give the best well candidate its group(s); False when the names hold no well."""
    found = _well_candidates(plan)
    if not found:
        return False
    _, kind, (first, second) = max(found, key=lambda c: c[0])
    if kind == "well":
        plan.give("well", [first, second], r"[A-Za-z]{1,2}\d{1,3}")
    else:
        letters = r"\d{1,3}" if kind == "rc" else r"[A-Za-z]{1,2}"
        plan.give("row", [first], letters)
        plan.give("column", [second], r"\d{1,3}")
    return True


def _free(plan: _Plan, i: int) -> bool:
    return plan.slots[i].regex is None


def _give_words(plan: _Plan) -> None:
    """Varying words (and letter runs) become the channel; adjacent ones join (``UV - DAPI``)."""
    slots = plan.slots
    i = 0
    while i < len(slots):
        slot = slots[i]
        if not (_free(plan, i) and slot.kind in ("word", "alpha") and not slot.constant):
            i += 1
            continue
        span = [i]
        # "UV - DAPI": a varying word, a constant separator, another varying word.
        while (
            span[-1] + 2 < len(slots)
            and slots[span[-1] + 1].kind == "sep"
            and slots[span[-1] + 1].constant
            and slots[span[-1] + 2].kind in ("word", "alpha")
            and not slots[span[-1] + 2].constant
            and _free(plan, span[-1] + 2)
        ):
            span += [span[-1] + 1, span[-1] + 2]
        pieces = [_word_regex(slots, j) for j in span]
        if "channel" not in plan.roles:
            prefix = _camel_prefix(slot.values) if len(span) == 1 else ""
            plan.give("channel", span, "".join(pieces))
            if prefix:  # ChannelDAPI, ChannelGFP: the stain alone is the channel
                slot.regex = f"{_escape(prefix)}{slot.regex}"
        else:  # a second varying word: matched, not captured
            for j, piece in zip(span, pieces, strict=True):
                slots[j].regex = piece
        i = span[-1] + 1


def _word_regex(slots: list[_Slot], i: int) -> str:
    """A varying word's regex: letters and digits when it fills its segment (GFP, Cy5)."""
    slot = slots[i]
    if slot.kind == "sep":
        return _escape(slot.values[0])
    alone = (i == 0 or slots[i - 1].kind == "sep") and (
        i + 1 == len(slots) or slots[i + 1].kind == "sep"
    )
    return _WORDS["word" if alone else slot.kind]


def _camel_prefix(values: list[str]) -> str:
    """The shared word before a capital in every value (``Channel`` of ChannelDAPI), or ""."""
    first = values[0]
    end = 0
    while end < len(first) and all(len(v) > end and v[end] == first[end] for v in values):
        end += 1
    for k in range(end, 0, -1):
        if all(v[k - 1].islower() and len(v) > k and v[k].isupper() for v in values):
            return first[:k]
    return ""


def _hint(slots: list[_Slot], i: int) -> str | None:
    """The role a constant text before digit slot ``i`` names (``s`` of s02, ``fld`` of fld 1)."""
    before = slots[i - 1] if i >= 1 else None
    if before is not None and before.kind == "alpha" and before.constant:
        return _HINTS.get(before.values[0].lower())
    if before is not None and before.kind == "sep" and i >= 2:
        word = slots[i - 2]
        if word.kind in ("alpha", "word") and word.constant and word.regex is None:
            if i < 3 or slots[i - 3].kind == "sep":  # a whole word, not the end of B03fld
                return _HINTS.get(word.values[0].lower())
    return None


def _give_numbers(plan: _Plan) -> None:
    """Hinted numbers take their role; other varying numbers the next free role, or none."""
    slots = plan.slots
    digits = [i for i, s in enumerate(slots) if s.kind == "digit" and _free(plan, i)]
    for i in digits:
        role = _hint(slots, i)
        if role is not None and role not in plan.roles:
            plan.give(role, [i], r"\d+")
        elif role is not None and not slots[i].constant:
            slots[i].regex = r"\d+"
    for i in digits:
        if not _free(plan, i) or slots[i].constant:
            continue
        if plan.determined(i):
            slots[i].regex = r"\d+"  # a counter: matched, not captured
            continue
        role = next((r for r in _NUMBER_ROLES if r not in plan.roles), None)
        if role is None:
            slots[i].regex = r"\d+"
        else:
            plan.give(role, [i], r"\d+")


def _render(plan: _Plan) -> str:
    out = []
    for slot in plan.slots:
        if slot.regex is not None:
            out.append(slot.regex)
        else:
            out.append(_escape(slot.values[0]))
    return "".join(out)


# -- reports -------------------------------------------------------------------------
def unmatched_images(paths: Sequence[str], matched: Sequence[str]) -> list[str]:
    """Image files among ``paths`` (relative) that are not among ``matched``."""
    taken = set(matched)
    return [p for p in paths if is_image(p) and p not in taken]


def unmatched_message(
    n_unmatched: int,
    examples: Sequence[str],
    n_images: int,
    what: str = "layout",
    suggestion: str | None = None,
) -> str:
    """Say how many image files a layout or ``what="pattern"`` left out, with a way out."""
    shown = ", ".join(examples)
    more = ", ..." if n_unmatched > len(examples) else ""
    fix = (
        f"try --pattern '{suggestion}' (the Plate dock's File pattern), which describes them"
        if suggestion
        else "describe all names with --pattern (the Plate dock's File pattern)"
    )
    return (
        f"{n_unmatched} of {n_images} image files do not match the file-name {what} and are "
        f"not opened (e.g. "
        f"{shown}{more}); if they belong to the plate, {fix}."
    )


class NoLayoutError(PlateLayoutError):
    """A folder whose file names match no layout; ``suggestion`` is a pattern for them or None."""

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.suggestion = suggestion


def no_layout_error(folder: Path, paths: list[str]) -> NoLayoutError:
    """The error for a folder whose files match no layout, carrying the suggested pattern."""
    suggestion = suggest_pattern(paths)
    return NoLayoutError(no_layout_message(folder, paths, suggestion), suggestion)


def no_layout_message(folder: Path, paths: list[str], pattern: str | None = None) -> str:
    """The error text for a folder whose files match no layout: names, layouts, ``pattern``."""
    shown = paths[:5]
    more = f"\n  ... and {len(paths) - len(shown)} more" if len(paths) > len(shown) else ""
    known = "; ".join(f"{layout.name} ({layout.example})" for layout in LAYOUTS)
    names = image_names(paths)
    lines = "\n  ".join(shown)
    if pattern is None:
        pattern, about = GENERIC_EXAMPLE[0], f"For a file named {GENERIC_EXAMPLE[1]!r}"
    else:
        about = f"For the {len(names)} image files here (e.g. {names[0]!r})"
    return (
        f"No plate layout recognised in {folder} ({len(paths)} files), e.g.:\n  {lines}{more}\n"
        f"Known layouts: {known}; and OME-Zarr HCS plates.\n"
        "Describe your file names with a regular expression with named groups well (or row "
        "and column), site and channel (leave channel out when each file holds all channels "
        f"of a site). {about}:\n"
        f"  phenoadapt info {folder} --pattern '{pattern}'\n"
        f"  (Python: open_plate(path, pattern=r'{pattern}'))"
    )
