"""The Plate dock's channel table: name unknown channels, pick roles, save a channel map."""

from __future__ import annotations

import pytest
from test_readers import phenix_names, write_files

from phenoadapt.gui.layers import META_KEY
from phenoadapt.gui.plate_dock import PlateDock
from phenoadapt.plate import ChannelRole, open_plate
from phenoadapt.plate.channel_map import CHANNEL_MAP_FILE
from phenoadapt.plate.channels import CHANNEL_MAP, KEY, USER

pytestmark = pytest.mark.gui


@pytest.fixture
def notes(monkeypatch):
    import napari.utils.notifications as notifications

    shown = {"error": [], "info": [], "warning": []}
    for kind in shown:
        monkeypatch.setattr(notifications, f"show_{kind}", lambda m, k=kind: shown[k].append(m))
    return shown


def _layers(viewer) -> dict[str, object]:
    return {layer.metadata[META_KEY]["channel_key"]: layer for layer in viewer.layers}


def test_unnamed_channels_are_named_recoloured_and_saved(make_napari_viewer, tmp_path, notes):
    write_files(tmp_path, phenix_names(["B02", "C03"], [1], [2, 4, 5]), shape=(32, 32))
    viewer = make_napari_viewer()
    dock = PlateDock(viewer)
    viewer.window.add_dock_widget(dock)
    plate = dock.open_folder(tmp_path)
    assert plate is not None
    table = dock.channel_table
    assert table.plate_id == plate.plate_id
    assert [table.table.item(r, 1).text() for r in range(3)] == ["ch2", "ch4", "ch5"]
    assert [table.table.item(r, 4).text() for r in range(3)] == [KEY] * 3
    assert dock.channels_box.isExpanded()  # unnamed channels need the user's eye
    assert "no stain role" in table.note.text()
    assert {layer.colormap.name for layer in viewer.layers} == {"gray"}

    # Typing a stain name sets the role; choosing a role recolours the layer.
    table.set_channel(2, name="Hoechst 33342")
    table.set_channel(0, name="Concanavalin A")
    table.set_channel(1, name="Alexa 568", role="AGP")
    channels = dock.session.plate(plate.plate_id).channels
    assert [(c.name, c.role, c.source) for c in channels] == [
        ("Concanavalin A", ChannelRole.ER, USER),
        ("Alexa 568", ChannelRole.AGP, USER),
        ("Hoechst 33342", ChannelRole.DNA, USER),
    ]
    layers = _layers(viewer)
    assert len(viewer.layers) == 3  # renamed in place, no new layers
    assert layers["5"].name.startswith("Hoechst 33342 [") and layers["5"].colormap.name == "blue"
    assert layers["2"].colormap.name == "green" and layers["4"].colormap.name == "yellow"
    assert "Hoechst 33342" in dock.info.text()

    path = table.save()
    assert path == str(tmp_path / CHANNEL_MAP_FILE)
    assert any("saved next to the plate" in m for m in notes["info"])
    again = open_plate(tmp_path)
    assert [(c.name, c.role, c.source) for c in again.channels] == [
        ("Concanavalin A", ChannelRole.ER, CHANNEL_MAP),
        ("Alexa 568", ChannelRole.AGP, CHANNEL_MAP),
        ("Hoechst 33342", ChannelRole.DNA, CHANNEL_MAP),
    ]
    assert not notes["error"]


def test_named_plate_keeps_the_table_folded(make_napari_viewer, tmp_path):
    names = phenix_names(["B02"], [1], [1, 2])
    write_files(tmp_path, names, shape=(16, 16))
    (tmp_path / CHANNEL_MAP_FILE).write_text("key,name,role\n1,Hoechst,DNA\n2,MitoTracker,Mito\n")
    viewer = make_napari_viewer()
    dock = PlateDock(viewer)
    dock.open_folder(tmp_path)
    assert not dock.channels_box.isExpanded()
    assert dock.channel_table.note.text() == ""
