"""The palette service: one stable, colour-blind-safe colour per class and per plate."""

from __future__ import annotations

import subprocess
import sys

import pytest

from phenoadapt.palette import (
    CLASS_PALETTE,
    CONTROL_COLOUR,
    MISSING_COLOUR,
    OKABE_ITO,
    TOL_BRIGHT,
    TOL_MUTED,
    class_colours,
    extended_colour,
    hex_to_rgba,
    is_control,
    plate_colours,
    role_colours,
)


def test_colours_follow_sorted_names_not_order_or_frequency():
    a = class_colours(["tubulin", "Actin", "DMSO", "tubulin", "aurora"])
    b = class_colours(["aurora", "DMSO", "Actin", "tubulin"])
    assert dict(a) == dict(b)
    # Sorted case-insensitively: Actin, aurora, tubulin take the first Okabe-Ito slots.
    assert [a["Actin"], a["aurora"], a["tubulin"]] == list(OKABE_ITO[:3])
    assert list(a) == ["Actin", "aurora", "tubulin", "DMSO"]  # controls last in legends


def test_controls_are_grey_flagged_and_take_no_slot():
    palette = class_colours(["DMSO", "negative control", "b", "a"], controls=["vehicle"])
    assert palette["DMSO"] == palette["negative control"] == CONTROL_COLOUR
    assert palette["a"] == OKABE_ITO[0] and palette["b"] == OKABE_ITO[1]
    assert palette.is_control("DMSO") and not palette.is_control("a")
    assert palette.label("DMSO") == "DMSO (control)" and palette.label("a") == "a"
    # A name not built in: a control by rule is grey, others get a stable colour.
    assert palette.colour("vehicle") == CONTROL_COLOUR
    assert palette.colour("zzz") == palette.colour("zzz") != CONTROL_COLOUR
    assert palette.colour(None) == palette.colour(float("nan")) == MISSING_COLOUR
    assert is_control(" dmso ") and is_control("PBS", ["pbs"]) and not is_control("taxol")
    assert not is_control(None) and not is_control(3.0)


def test_many_classes_okabe_ito_then_tol_then_distinct_extension():
    names = [f"class{i:02d}" for i in range(40)]
    palette = class_colours(names)
    colours = [palette[n] for n in names]
    assert colours[:7] == list(OKABE_ITO) and colours[7:16] == list(TOL_MUTED)
    assert len(set(colours)) == 40  # every class its own colour
    assert CONTROL_COLOUR not in colours and "#000000" not in colours
    assert colours[16:] == [extended_colour(i) for i in range(24)]
    assert len(CLASS_PALETTE) == 16


def test_extension_colours_are_saturated_enough_to_tell_from_grey():
    for i in range(200):
        r, g, b, _ = hex_to_rgba(extended_colour(i))
        assert max(r, g, b) - min(r, g, b) > 0.2


def test_plate_colours_sorted_and_separate_from_classes():
    one = plate_colours(["nf1_plate2", "nf1_plate1"])
    two = plate_colours(["nf1_plate1", "nf1_plate2", "nf1_plate1"])
    assert dict(one) == dict(two)
    assert one["nf1_plate1"] == TOL_BRIGHT[0] and one["nf1_plate2"] == TOL_BRIGHT[1]
    assert not set(TOL_BRIGHT) & set(CLASS_PALETTE)
    assert len(set(plate_colours([f"p{i}" for i in range(12)]).values())) == 12


def test_role_colours_mark_controls():
    roles = role_colours()
    assert roles["control"] == CONTROL_COLOUR and roles.is_control("control")
    assert roles["treated"] != roles["excluded"]


def test_hex_to_rgba():
    assert hex_to_rgba("#ff0000") == (1.0, 0.0, 0.0, 1.0)
    assert hex_to_rgba("#00f", 0.5) == (0.0, 0.0, 1.0, 0.5)
    assert hex_to_rgba("#ffffff80")[3] == pytest.approx(128 / 255)
    with pytest.raises(ValueError, match="not a hex colour"):
        hex_to_rgba("red")
    rgba = class_colours(["a"]).rgba(["a", None], alpha=0.3)
    assert rgba[0] == hex_to_rgba(OKABE_ITO[0], 0.3) and rgba[1] == hex_to_rgba(MISSING_COLOUR, 0.3)


def test_palette_imports_no_qt():
    code = (
        "import sys, phenoadapt.palette; "
        "print(any(m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari')"
        " for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
