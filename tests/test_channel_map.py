"""Channel names and roles: where each comes from, and channel maps saved with a plate."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_readers import phenix_names, write_files

from phenoadapt.errors import PlateLayoutError
from phenoadapt.plate import open_plate
from phenoadapt.plate.channel_map import (
    CHANNEL_MAP_FILE,
    find_channel_map,
    parse_channel_map,
    save_channel_map,
    user_channel_map_path,
)
from phenoadapt.plate.channels import (
    CHANNEL_MAP,
    FILE_NAME,
    GUESS,
    KEY,
    METADATA,
    USER,
    Channel,
    ChannelRole,
    parse_name_role,
    role_from_name,
)
from phenoadapt.plate.readers.metadata import read_htd_channel_names
from phenoadapt.plate.readers.naming import resolve_channels


@pytest.mark.parametrize(
    ("stain", "role"),
    [
        ("Hoechst 33342", ChannelRole.DNA),
        ("DAPI", ChannelRole.DNA),
        ("Concanavalin A", ChannelRole.ER),
        ("SYTO 14", ChannelRole.RNA),
        ("Phalloidin/WGA", ChannelRole.AGP),
        ("MitoTracker Deep Red", ChannelRole.MITO),
        ("Brightfield", ChannelRole.BRIGHTFIELD),
        ("GFP", ChannelRole.OTHER),
    ],
)
def test_roles_from_stain_words(stain, role):
    assert role_from_name(stain) is role


def test_three_unnamed_channels_keep_their_keys():
    channels = resolve_channels(["2", "4", "5"])
    assert [c.name for c in channels] == ["ch2", "ch4", "ch5"]  # never renumbered
    assert {c.source for c in channels} == {KEY}
    assert {c.role for c in channels} == {ChannelRole.OTHER}


def test_usual_order_is_a_labelled_guess():
    channels = resolve_channels(["1", "2", "3", "4", "5"])
    assert [c.name for c in channels] == ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert all(c.is_guess and c.source == GUESS for c in channels)


def test_sources_in_order_of_trust():
    saved = parse_channel_map("key,name,role\n2,Alexa 568,AGP\n4,Hoechst,DNA\n")
    channels = resolve_channels(
        ["2", "4", "5"],
        user={"5": "SYTO 14"},
        metadata={"2": "ConA", "4": "DAPI", "5": "Mito"},
        saved=saved,
    )
    assert [(c.name, c.role, c.source) for c in channels] == [
        ("Alexa 568", ChannelRole.AGP, CHANNEL_MAP),  # the map's role, not one guessed
        ("Hoechst", ChannelRole.DNA, CHANNEL_MAP),
        ("SYTO 14", ChannelRole.RNA, USER),
    ]
    meta = resolve_channels(["2", "4"], metadata={"2": "ConA", "4": ""})
    assert [(c.name, c.source) for c in meta] == [("ConA", METADATA), ("ch4", KEY)]
    words = resolve_channels(["DAPI", "FITC"])
    assert [(c.role, c.source) for c in words] == [
        (ChannelRole.DNA, FILE_NAME),
        (ChannelRole.OTHER, FILE_NAME),
    ]


def test_a_name_may_carry_its_role():
    assert parse_name_role("Alexa 568:AGP") == ("Alexa 568", ChannelRole.AGP)
    assert parse_name_role("Hoechst") == ("Hoechst", ChannelRole.DNA)
    assert parse_name_role("a:b") == ("a:b", ChannelRole.OTHER)  # not a role: part of the name


def test_source_is_not_part_of_equality():
    assert Channel("1", "DNA", ChannelRole.DNA, USER) == Channel("1", "DNA", ChannelRole.DNA, KEY)


def test_channel_map_saved_next_to_plate_and_read_back(tmp_path):
    write_files(tmp_path, phenix_names(["B02"], [1], [2, 4, 5]))
    plate = open_plate(tmp_path)
    assert plate.channel_names == ["ch2", "ch4", "ch5"]
    images = sorted(p.name for p in tmp_path.iterdir())
    named = resolve_channels(["2", "4", "5"], user=["Concanavalin A", "Phalloidin", "Hoechst"])
    path = save_channel_map(tmp_path, named)
    assert path == tmp_path / CHANNEL_MAP_FILE
    assert path.read_text().splitlines()[0] == "key,name,role"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*images, CHANNEL_MAP_FILE])
    again = open_plate(tmp_path)
    assert [(c.name, c.role, c.source) for c in again.channels] == [
        ("Concanavalin A", ChannelRole.ER, CHANNEL_MAP),
        ("Phalloidin", ChannelRole.AGP, CHANNEL_MAP),
        ("Hoechst", ChannelRole.DNA, CHANNEL_MAP),
    ]
    assert again.metadata["channel_map"] == str(path)
    # What the user types now still wins over the saved map.
    assert open_plate(tmp_path, channel_names={"5": "DRAQ5"}).channels[2].name == "DRAQ5"


def test_read_only_plate_gets_a_per_user_map(tmp_path, monkeypatch):
    plate_dir = tmp_path / "export"
    write_files(plate_dir, phenix_names(["B02"], [1], [1, 2, 3]))
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, m: False if str(p) == str(plate_dir.resolve()) else real_access(p, m),
    )
    channels = resolve_channels(["1", "2", "3"], user=["DNA", "RNA", "AGP"])
    path = save_channel_map(plate_dir, channels)
    assert path == user_channel_map_path(plate_dir)
    assert not (plate_dir / CHANNEL_MAP_FILE).exists()
    assert find_channel_map(plate_dir) == path
    assert open_plate(plate_dir).channel_names == ["DNA", "RNA", "AGP"]
    # Another plate of the same folder name elsewhere does not share it.
    other = tmp_path / "elsewhere" / "export"
    write_files(other, phenix_names(["B02"], [1], [1, 2, 3]))
    assert open_plate(other).channel_names == ["ch1", "ch2", "ch3"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name\nDNA\n", "needs the columns key, name, role"),
        ("key,name,role\n1,DNA,DNA\n1,ER,ER\n", "appears twice"),
        ("key,name,role\n1,Hoechst,nucleus\n", "role 'nucleus' is not one of"),
    ],
)
def test_bad_channel_maps_say_what_is_wrong(text, words):
    with pytest.raises(PlateLayoutError, match=words):
        parse_channel_map(text)


def test_htd_names_imagexpress_channels(tmp_path):
    write_files(tmp_path, [f"PL1_{w}_w{c}.tif" for w in ("C05", "D06") for c in (1, 2, 3)])
    (tmp_path / "PL1.HTD").write_text(
        '"HTSInfoFile", Version 1.0\n"NWavelengths", 3\n"WaveName1", "DAPI"\n'
        '"WaveName2", "FITC"\n"WaveName3", "Texas Red"\n'
    )
    assert read_htd_channel_names(tmp_path / "PL1.HTD") == {
        "w1": "DAPI",
        "w2": "FITC",
        "w3": "Texas Red",
    }
    plate = open_plate(tmp_path)
    assert plate.channel_names == ["DAPI", "FITC", "Texas Red"]
    assert plate.channels[0].role is ChannelRole.DNA and plate.channels[0].source == METADATA


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "phenoadapt", *args], capture_output=True, text=True, check=False
    )


def test_cli_info_saves_the_channels_and_reads_them_back(tmp_path):
    write_files(tmp_path, phenix_names(["B02"], [1], [2, 4, 5]))
    shown = _cli("info", str(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert "ch2" in shown.stdout and "channel key (unnamed)" in shown.stdout
    saved = _cli("info", str(tmp_path), "--channels", "2=ConA,4=Phalloidin,5=Hoechst",
                 "--save-channels")  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    assert f"channel map saved to {tmp_path / CHANNEL_MAP_FILE}" in saved.stdout
    again = _cli("info", str(tmp_path))
    assert "Hoechst" in again.stdout and "(channel map)" in again.stdout


def test_every_command_that_opens_a_plate_takes_channels():
    for command in ("segment", "train", "predict", "embed", "gui", "info", "convert"):
        result = _cli(command, "--help")
        assert "--channels" in result.stdout, command
