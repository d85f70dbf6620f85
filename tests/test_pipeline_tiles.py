"""Site unit: one tile per field for training and prediction (the CS-ARM-BN paper's unit)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from pipeline_fixtures import CHANNELS, CONFIG, MOAS, make_checkpoint
from skimage.transform import resize

from phenoadapt import schema
from phenoadapt.cells.table import well_metadata
from phenoadapt.cli import main
from phenoadapt.errors import ContextError, ModelError, PhenoadaptError
from phenoadapt.pipeline import (
    RunConfig,
    TrainRunConfig,
    checkpoint_tiles,
    field_tiles,
    model_channels,
    plate_tiles,
    run_plates,
    train_plates,
)
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.synthetic import generate_plate
from phenoadapt.train import load_checkpoint

#: The tiny plates of ``pipeline_fixtures`` with 3 fields per well: 24 sites,
#: 6 of them controls (A01, A07), 18 treated.
SITES = 3
TILE = 32


# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _plate(folder, plate_id: str, seed: int):
    written = generate_plate(
        folder, replace(CONFIG, sites=SITES), seed=seed, plate_id=plate_id, workers=1
    )
    plate = open_plate(written.path)
    return plate, read_platemap(written.platemap_path, plate_id=plate_id), written.path


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiles")
    plate, platemap, path = _plate(folder / "plates", "site1", seed=0)
    plate2, platemap2, _ = _plate(folder / "plates", "site2", seed=1)
    out = folder / "site_model.safetensors"
    config = TrainRunConfig(
        unit="site", tile_size=TILE, width=4, max_epochs=1, max_steps_per_epoch=2,
        plates_per_step=2, device="cpu",
    )  # fmt: skip
    trained = train_plates([plate, plate2], [platemap, platemap2], config, out)
    return {
        "folder": folder, "plate": plate, "map": platemap, "path": path, "plate2": plate2,
        "map2": platemap2, "ckpt": out, "trained": trained,
    }  # fmt: skip


def test_field_tiles_resize_whole_fields_in_the_given_channel_order(sites) -> None:
    plate = sites["plate"]
    order = [4, 0, 2]
    tiles, table = field_tiles(plate, order, TILE)
    n_fields = len(plate.wells) * SITES
    assert tiles.shape == (n_fields, 3, TILE, TILE) and tiles.dtype == np.float32
    assert list(table.columns) == [schema.PLATE, schema.WELL, schema.SITE]
    well, site = table.iloc[5][schema.WELL], int(table.iloc[5][schema.SITE])
    field = plate.read_field(well, site).astype(np.float32)
    for k, channel in enumerate(order):
        expected = resize(field[channel], (TILE, TILE), order=1, preserve_range=True,
                          anti_aliasing=True)  # fmt: skip
        np.testing.assert_allclose(tiles[5, k], expected, rtol=1e-5, atol=1e-5)
    # Raw intensities: downscaling keeps the field's mean, it does not rescale to [0, 1].
    assert tiles[5, 0].mean() == pytest.approx(field[4].mean(), rel=0.05)


def test_checkpoint_tiles_match_channels_by_name(sites, tmp_path) -> None:
    flipped = make_checkpoint(tmp_path / "flipped.safetensors", channels=CHANNELS[::-1])
    meta = load_checkpoint(flipped).metadata
    picked, size = checkpoint_tiles(meta, sites["plate"])
    names = [sites["plate"].channels[i].role.value for i in picked]
    assert names == list(CHANNELS[::-1]) and size == 24
    missing = make_checkpoint(tmp_path / "missing.safetensors", channels=("DNA", "GFP"))
    with pytest.raises(ModelError, match="Plate site1"):
        checkpoint_tiles(load_checkpoint(missing).metadata, sites["plate"])


def test_plate_tiles_take_role_and_moa_from_the_plate_map(sites) -> None:
    tiles = plate_tiles(sites["plate"], model_channels(sites["plate"])[0], TILE,
                        platemap=sites["map"], wells=["A01", "A02"])  # fmt: skip
    assert len(tiles.table) == 2 * SITES and tiles.images.shape[1:] == (5, TILE, TILE)
    by_well = tiles.table.groupby(schema.WELL)[schema.ROLE].first()
    assert by_well["A01"] == "control" and by_well["A02"] == "treated"
    expected = well_metadata(sites["map"], "A02")[schema.MOA]
    assert expected in MOAS
    assert (tiles.table.loc[tiles.table[schema.WELL] == "A02", schema.MOA] == expected).all()


def test_training_on_sites_writes_a_site_checkpoint(sites) -> None:
    trained = sites["trained"]
    assert trained.cells_per_plate == {"site1": 8 * SITES, "site2": 8 * SITES}
    meta = load_checkpoint(sites["ckpt"]).metadata
    contract = meta.model_input
    assert contract.unit == "site" and contract.tile_size == TILE and contract.crop_size is None
    assert meta.crop_size == TILE and meta.input_size is None
    assert contract.segmentation is None and "unit" not in meta.extra
    assert meta.channel_names == CHANNELS
    # Default episodes (64 treated + 128 controls) exceed the plates' 18 + 6 sites:
    # every episode took all the plate had and training ran.
    assert trained.result.metrics()["epochs_run"] == 1


def test_run_plates_with_a_site_checkpoint_predicts_per_field(sites) -> None:
    config = RunConfig(checkpoint=sites["ckpt"], device="cpu", min_control_sites=4)
    result = run_plates([sites["plate"]], [sites["map"]], config)
    assert result.unit == "site" and result.segmentation is None
    cells = result.cells
    assert len(cells) == 8 * SITES
    assert schema.CELL_ID not in cells.columns and schema.CENTROID_Y not in cells.columns
    assert cells[schema.PREDICTION].notna().all() and (cells["adapt_method"] == "cs-arm-bn").all()
    assert len(result.wells) == 8 and (result.wells["n_cells"] == SITES).all()
    assert result.accuracy is not None and int(result.accuracy["n_cells"].iloc[0]) == 6 * SITES
    assert result.embeddings is not None and len(result.embeddings) == len(cells)


def test_site_minimum_of_controls_is_unit_aware(sites) -> None:
    # 2 control wells x 3 sites = 6 control sites, below the default of 8 sites.
    config = RunConfig(checkpoint=sites["ckpt"], device="cpu", compare_unadapted=False)
    with pytest.raises(ContextError, match="6 control sites .* at least 8 \\(min_control_sites"):
        run_plates([sites["plate"]], [sites["map"]], config)
    # The per-cell minimum (32) does not apply to sites.
    ok = run_plates([sites["plate"]], [sites["map"]], replace(config, min_control_sites=6))
    assert ok.methods == {"site1": "cs-arm-bn"}


def test_site_checkpoint_refuses_cell_tables_and_mixed_ensembles(sites, tmp_path) -> None:
    cells = pd.DataFrame({schema.PLATE: ["site1"], schema.WELL: ["A02"], schema.SITE: [1],
                          schema.CENTROID_Y: [10.0], schema.CENTROID_X: [10.0]})  # fmt: skip
    config = RunConfig(checkpoint=sites["ckpt"], device="cpu", min_control_sites=4)
    with pytest.raises(ModelError, match="whole fields"):
        run_plates([sites["plate"]], [sites["map"]], config, cells=[cells])
    cell_model = make_checkpoint(tmp_path / "cells.safetensors", classes=tuple(sorted(MOAS)))
    mixed = replace(config, checkpoint=[sites["ckpt"], cell_model])
    with pytest.raises(ModelError, match="mixes checkpoints trained on cells and on sites"):
        run_plates([sites["plate"]], [sites["map"]], mixed)


def test_bad_unit_and_tile_settings_are_refused() -> None:
    with pytest.raises(PhenoadaptError, match="Unknown unit 'field'"):
        TrainRunConfig(unit="field")
    with pytest.raises(PhenoadaptError, match="tile_input_size 64"):
        TrainRunConfig(unit="site", tile_size=32, tile_input_size=64)


def test_cli_train_site_then_predict_round_trip(sites, tmp_path, capsys) -> None:
    ckpt = tmp_path / "cli_site.safetensors"
    plate, platemap = str(sites["path"]), str(sites["path"] / "platemap.csv")
    code = main([
        "train", "--plate", plate, "--platemap", platemap, "--out", str(ckpt), "--unit", "site",
        "--tile-size", "24", "--width", "4", "--epochs", "1", "--max-steps-per-epoch", "1",
        "--plates-per-step", "1", "--device", "cpu", "--threads", "1",
    ])  # fmt: skip
    assert code == 0 and "sites" in capsys.readouterr().out
    meta = load_checkpoint(ckpt).metadata
    assert meta.model_input.unit == "site" and meta.model_input.tile_size == 24
    predict = ["predict", "--plate", plate, "--platemap", platemap, "--checkpoint", str(ckpt),
               "--device", "cpu", "--threads", "1"]  # fmt: skip
    # The unit-aware default minimum (8 control sites) is more than the plate's 6.
    assert main([*predict, "--out", str(tmp_path / "refused")]) == 2
    assert "min_control_sites" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main([*predict, "--out", str(out), "--min-controls", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"{8 * SITES} sites and 8 wells predicted" in printed and "site accuracy" in printed
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 8 * SITES and schema.CELL_ID not in cells.columns
    assert len(pd.read_csv(out / "wells.csv")) == 8


def test_gui_overlay_shows_per_field_results_without_cell_labels(
    make_napari_viewer, qtbot, sites, monkeypatch
) -> None:
    import napari.utils.notifications as notifications
    from gui_run_helpers import open_in_viewer

    from phenoadapt.gui.results import LAYER_NAME, ResultsLegend, get_results_overlay

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_info", lambda m: shown.append(str(m)))
    config = RunConfig(checkpoint=sites["ckpt"], device="cpu", min_control_sites=4)
    result = run_plates([sites["plate"]], [sites["map"]], config)
    viewer = make_napari_viewer()
    session = open_in_viewer(viewer, sites["path"])
    overlay = get_results_overlay(viewer)
    legend = ResultsLegend(session)
    session.set_result(result)
    qtbot.wait(50)
    assert LAYER_NAME not in viewer.layers and overlay.worker is None
    assert any("whole fields" in m for m in shown)
    row = session.cells_of_field()
    assert len(row) == 1
    assert "per field" in legend.title.text()
    assert str(result.cells.iloc[row[0]][schema.PREDICTION]) in legend.title.text()
    assert "field accuracy" in legend.accuracy.text()
