"""A real plate phenoadapt has never seen, from the command line.

The real Opera Phenix field of tests/data is copied as another instrument would
write it: three of its stains (Hoechst, SYTO 14, phalloidin/WGA), other file
names (ImageXpress-style ``LAB7_C03_s3_w1.tif``), other channel numbers and no
metadata.  It must go from unknown channels (``w1``..``w3``) to named channels
to cells to a prediction by a model trained on those three stains.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import tifffile

from phenoadapt import schema
from phenoadapt.cli import main
from phenoadapt.plate import open_plate
from phenoadapt.plate.channel_map import CHANNEL_MAP_FILE

FIELD = Path(__file__).parent / "data" / "phenix_BR00143976"
# The new "instrument" numbers the three stains its own way: w1 Hoechst, w2 SYTO 14, w3 phalloidin.
RENUMBERED = {"w1": 5, "w2": 6, "w3": 3}
NAMES = "w1=Hoechst 33342,w2=SYTO 14,w3=Phalloidin/WGA"
CELLPROFILER_CELLS = 40  # about 40 cells in CellProfiler's outlines of this field


def renamed_field(folder: Path) -> Path:
    """The real field as a three-stain plate of another instrument, metadata stripped."""
    folder.mkdir(parents=True)
    for key, channel in RENUMBERED.items():
        data = tifffile.imread(FIELD / f"r03c03f03p01-ch{channel}sk1fk1fl1.tiff")
        tifffile.imwrite(folder / f"LAB7_C03_s3_{key}.tif", data, metadata=None)
    return folder


def three_stain_plate(folder: Path) -> tuple[Path, Path]:
    """A tiny synthetic plate keeping only DNA, RNA and AGP; returns (plate, plate map)."""
    from pipeline_fixtures import make_plate

    _, _, path = make_plate(folder, plate_id="train3")
    for dropped in (2, 5):  # ER and Mito
        for file in path.glob(f"*-ch{dropped}sk1fk1fl1.tiff"):
            file.unlink()
    (path / CHANNEL_MAP_FILE).write_text("key,name,role\n1,DNA,DNA\n3,RNA,RNA\n4,AGP,AGP\n")
    return path, path / "platemap.csv"


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> Path:
    return renamed_field(tmp_path_factory.mktemp("real") / "LAB7")


def test_unknown_channels_keep_their_keys_and_segment_says_what_to_do(field, capsys):
    plate = open_plate(field)
    assert plate.layout == "imagexpress"
    assert plate.channel_names == ["w1", "w2", "w3"]
    assert main(["info", str(field)]) == 0
    assert "channel key (unnamed)" in capsys.readouterr().out
    out = field.parent / "nope.csv"
    assert main(["segment", str(field), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no DNA channel (it has w1, w2, w3)" in err and "--nucleus-channel" in err
    assert not out.exists()


def test_named_channels_give_cells_with_an_estimated_diameter(field, tmp_path, capsys):
    cells = tmp_path / "cells.csv"
    status = main(["segment", str(field), "--channels", NAMES, "--out", str(cells),
                   "--no-texture", "--workers", "1"])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "estimated nucleus diameter" in captured.err
    table = pd.read_csv(cells)
    # The estimate fits the field: about CellProfiler's count, not the 40 px default's guess.
    assert 0.6 * CELLPROFILER_CELLS <= len(table) <= 1.6 * CELLPROFILER_CELLS
    settings = json.loads((tmp_path / "cells.segmentation.json").read_text())
    assert settings["nucleus_diameter_estimated"]
    assert 30 <= settings["nucleus_diameter_px"] <= 50  # CellProfiler: about 43 px
    assert (settings["nucleus_channel"], settings["cell_channel"]) == (
        "Hoechst 33342",
        "Phalloidin/WGA",
    )


def test_saved_channel_map_is_used_by_every_later_command(tmp_path, capsys):
    plate_dir = renamed_field(tmp_path / "LAB7")
    assert main(["info", str(plate_dir), "--channels", NAMES, "--save-channels"]) == 0
    assert (plate_dir / CHANNEL_MAP_FILE).is_file()
    capsys.readouterr()
    cells = tmp_path / "cells.csv"
    assert main(["segment", str(plate_dir), "--out", str(cells), "--no-texture"]) == 0
    assert len(pd.read_csv(cells)) > 10


def test_three_stain_model_trained_and_predicted_on_the_real_field(field, tmp_path, capsys):
    plate, platemap = three_stain_plate(tmp_path / "train")
    model = tmp_path / "model3.safetensors"
    status = main([
        "train", "--plate", str(plate), "--platemap", str(platemap), "--out", str(model),
        "--width", "4", "--crop-size", "24", "--crop-scale", "0.5", "--input-size", "20",
        "--epochs", "1", "--max-steps-per-epoch", "1", "--treated-per-episode", "16",
        "--controls-per-episode", "16", "--nucleus-diameter", "16", "--method", "erm",
        "--device", "cpu",
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    from phenoadapt.train import load_checkpoint

    assert list(load_checkpoint(model).metadata.channel_names) == ["DNA", "RNA", "AGP"]
    # Predicting the 5-stain demo plate's way would fail; this plate's three stains fit.
    out = tmp_path / "pred"
    status = main(["predict", "--plate", str(field), "--checkpoint", str(model),
                   "--channels", NAMES, "--method", "erm", "--nucleus-diameter", "40",
                   "--out", str(out), "--device", "cpu"])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    predicted = pd.read_csv(out / "cells.csv")
    assert len(predicted) > 10
    assert set(predicted[schema.PREDICTION]) <= {
        "tubulin_inhibitor",
        "actin_disruptor",
        "er_stress_inducer",
    }


def test_model_needing_missing_stains_is_refused_in_one_sentence(field, tmp_path, capsys):
    from pipeline_fixtures import make_checkpoint

    five = make_checkpoint(tmp_path / "five.safetensors")
    out = tmp_path / "pred"
    status = main(["predict", "--plate", str(field), "--checkpoint", str(five),
                   "--channels", NAMES, "--method", "erm", "--out", str(out)])  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert (
        "This model was trained on DNA, ER, RNA, AGP, Mito; this plate has Hoechst 33342, "
        "SYTO 14, Phalloidin/WGA (no ER, Mito): choose a model trained on these stains" in err
    )
    assert not out.exists() or not any(out.iterdir())
    shutil.rmtree(out, ignore_errors=True)
