"""Well names, plate formats and channel roles."""

from __future__ import annotations

import pytest

from phenoadapt.errors import PlateMapError
from phenoadapt.plate.channels import ChannelRole, default_names, make_channels, role_from_name
from phenoadapt.plate.wells import (
    PLATE_96,
    PLATE_384,
    PLATE_1536,
    guess_format,
    normalize_well,
    plate_format,
    row_index,
    row_name,
    well_position,
)


@pytest.mark.parametrize(
    "raw, canonical",
    [("a1", "A01"), ("B 7", "B07"), ("P24", "P24"), ("af48", "AF48"), ("C003", "C03")],
)
def test_normalize_well(raw, canonical):
    assert normalize_well(raw) == canonical


def test_row_names_round_trip_past_z():
    for row in range(1, 33):
        assert row_index(row_name(row)) == row
    assert row_name(27) == "AA" and row_name(32) == "AF"


@pytest.mark.parametrize("bad", ["", "A", "12", "A-1", "ABC1"])
def test_bad_well_names_say_how_to_write_them(bad):
    with pytest.raises(PlateMapError, match="not a well name"):
        well_position(bad)


def test_formats():
    assert [f.n_wells for f in (PLATE_96, PLATE_384, PLATE_1536)] == [96, 384, 1536]
    assert PLATE_96.wells()[:2] == ["A01", "A02"] and PLATE_96.wells()[-1] == "H12"
    assert PLATE_384.contains("P24") and not PLATE_96.contains("P24")
    assert PLATE_96.is_edge("A05") and PLATE_96.is_edge("D12") and not PLATE_96.is_edge("D05")
    assert plate_format(384) is PLATE_384
    with pytest.raises(ValueError, match="96, 384 or 1536"):
        plate_format(100)


def test_guess_format():
    assert guess_format(["A01", "H12"]) is PLATE_96
    assert guess_format(["A01", "I01"]) is PLATE_384
    assert guess_format(["AF48"]) is PLATE_1536


@pytest.mark.parametrize(
    "name, role",
    [
        ("Hoechst 33342", ChannelRole.DNA),
        ("ConA", ChannelRole.ER),
        ("ER", ChannelRole.ER),
        ("SYTO 14", ChannelRole.RNA),
        ("Phalloidin/WGA", ChannelRole.AGP),
        ("MitoTracker Deep Red", ChannelRole.MITO),
        ("Brightfield", ChannelRole.BRIGHTFIELD),
        ("ch7", ChannelRole.OTHER),
    ],
)
def test_role_from_name(name, role):
    assert role_from_name(name) == role


def test_make_channels_from_mapping_list_and_defaults():
    chans = make_channels(["1", "2", "3", "4", "5"])
    assert [c.name for c in chans] == list(default_names(5))
    assert chans[0].role == ChannelRole.DNA and chans[0].colormap == "blue"
    mapped = make_channels(["1", "2"], {1: "DAPI", "2": "Mito"})
    assert [c.role for c in mapped] == [ChannelRole.DNA, ChannelRole.MITO]
    with pytest.raises(ValueError, match="one name per channel"):
        make_channels(["1", "2"], ["DNA"])
