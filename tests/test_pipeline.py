"""Pipeline: plates -> segmentation -> crops -> adapted predictions -> tables; training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pipeline_fixtures import MOAS, SEGMENTATION, make_checkpoint, make_plate

from phenoadapt import schema
from phenoadapt.cells import segment_field
from phenoadapt.errors import Cancelled, CellsError, ContextError, ModelError
from phenoadapt.pipeline import (
    CheckpointExistsError,
    RunConfig,
    TrainRunConfig,
    iterate_progress,
    run_methods,
    run_plate,
    run_plates,
    train_plates,
)
from phenoadapt.plate.platemap import PlateMap
from phenoadapt.train import load_checkpoint

# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    plate, platemap, _ = make_plate(folder / "plates", "tiny1", seed=0)
    plate2, platemap2, _ = make_plate(folder / "plates", "tiny2", seed=1)
    ckpt = make_checkpoint(folder / "model.safetensors")
    return {
        "folder": folder, "plate": plate, "map": platemap, "plate2": plate2, "map2": platemap2,
        "ckpt": ckpt,
    }  # fmt: skip


def _config(tiny, **kw) -> RunConfig:
    base = dict(checkpoint=tiny["ckpt"], device="cpu", min_controls=4, controls_per_context=16,
                treated_per_context=32, batch_size=64)  # fmt: skip
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def result(tiny):
    stages: list[tuple[str, int, int]] = []
    res = run_plates(
        [tiny["plate"], tiny["plate2"]], [tiny["map"], tiny["map2"]], _config(tiny),
        progress=lambda s, d, t: stages.append((s, d, t)),
    )  # fmt: skip
    return res, stages


def test_cell_table_has_schema_columns_and_probabilities(tiny, result) -> None:
    res, _ = result
    cells = res.cells
    expected = [schema.PLATE, schema.WELL, schema.SITE, schema.ROLE, schema.MOA, schema.TREATMENT]
    expected += [schema.CELL_ID, schema.CENTROID_Y, schema.CENTROID_X, "adapt_method"]
    expected += [schema.PREDICTION, schema.CONFIDENCE, schema.UNCERTAINTY]
    for column in expected:
        assert column in cells.columns, column
    probs = cells[[f"prob_{c}" for c in MOAS]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(cells[schema.PLATE]) == {"tiny1", "tiny2"}
    assert set(cells["adapt_method"]) == {"cs-arm-bn"}
    assert res.methods == {"tiny1": "cs-arm-bn", "tiny2": "cs-arm-bn"}
    assert res.classes == MOAS
    assert cells[schema.PREDICTION].isin(MOAS).all()
    # Controls are predicted too (they carry no label).
    assert (cells[schema.ROLE] == "control").sum() > 0


def test_cell_ids_are_the_labels_of_segment_field(tiny, result) -> None:
    res, _ = result
    assert res.segmentation == SEGMENTATION  # taken from the checkpoint's metadata
    plate = tiny["plate"]
    well, site = next(iter(plate.fields()))
    seg = segment_field(plate.read_field(well, site), plate.channels, res.segmentation)
    rows = res.cells[(res.cells[schema.PLATE] == "tiny1") & (res.cells[schema.WELL] == well)]
    ys = rows[schema.CENTROID_Y].round().astype(int).to_numpy()
    xs = rows[schema.CENTROID_X].round().astype(int).to_numpy()
    assert (seg.cells[ys, xs] == rows[schema.CELL_ID].to_numpy()).all()


def test_well_table_and_accuracy(result) -> None:
    res, _ = result
    wells = res.wells
    assert {schema.PLATE, schema.WELL, "n_cells", schema.PREDICTION, "agreement"} <= set(wells)
    assert len(wells) == 16  # 8 wells x 2 plates
    assert wells["n_cells"].sum() == len(res.cells)
    acc = res.accuracy
    assert list(acc[schema.PLATE]) == ["tiny1", "tiny2"]
    assert {"n_cells", "cell_accuracy", "n_wells", "well_accuracy"} <= set(acc.columns)
    treated = res.cells[
        (res.cells[schema.PLATE] == "tiny1") & (res.cells[schema.ROLE] == "treated")
    ]
    expected = (treated[schema.PREDICTION] == treated[schema.MOA]).mean()
    assert acc.loc[0, "cell_accuracy"] == pytest.approx(expected)
    assert acc.loc[0, "n_wells"] == 6


def test_embeddings_aligned_and_unadapted_differ(result) -> None:
    res, _ = result
    assert res.embeddings.shape[0] == len(res.cells)
    assert res.embeddings_unadapted.shape == res.embeddings.shape
    assert np.isfinite(res.embeddings).all()
    assert not np.allclose(res.embeddings, res.embeddings_unadapted)


def test_progress_stages(result) -> None:
    _, stages = result
    names = [s for s, _, _ in stages]
    assert {"segment", "adapt", "predict"} <= set(names)
    segment = [(d, t) for s, d, t in stages if s == "segment"]
    assert segment[-1] == (16, 16)  # 8 wells x 1 field x 2 plates, counted across plates
    assert all(t == segment[0][1] for _, t in segment)


def test_iterate_progress_returns_the_result(tiny) -> None:
    gen = iterate_progress(run_plate, tiny["plate"], tiny["map"], _config(tiny))
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    assert events and len(res.cells) > 0


def test_cancel_raises_and_stops(tiny) -> None:
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        run_plate(tiny["plate"], tiny["map"], _config(tiny), cancel=cancel)
    assert len(calls) == 4  # stopped at the first poll that said so


def test_methods_and_fallback(tiny) -> None:
    results = run_methods([tiny["plate"]], [tiny["map"]], ["erm", "ben"], _config(tiny))
    assert set(results) == {"erm", "ben"}
    assert set(results["erm"].cells["adapt_method"]) == {"erm"}
    # Too few controls: a message saying how many are needed and how to fall back ...
    with pytest.raises(ContextError, match=r"needs at least 100000.*--allow-fallback"):
        run_plate(tiny["plate"], tiny["map"], _config(tiny, min_controls=100_000))
    # ... or the fallback, when allowed.
    with pytest.warns(UserWarning, match="Falling back"):
        res = run_plate(
            tiny["plate"], tiny["map"], _config(tiny, min_controls=100_000, allow_fallback=True)
        )
    assert res.methods == {"tiny1": "arm-bn"}


def test_every_well_excluded_is_nothing_to_run(tiny) -> None:
    frame = tiny["map"].to_frame()
    frame[schema.ROLE] = "excluded"
    nothing = PlateMap.from_frame(frame, plate_id="tiny1")
    polls = []
    for method in ("erm", "cs-arm-bn"):
        with pytest.raises(ContextError, match="Nothing to run on plate tiny1.*Mark treated and"):
            run_plate(tiny["plate"], nothing, _config(tiny, method=method),
                      cancel=lambda: polls.append(1) or False)  # fmt: skip
    assert not polls  # refused before any field was segmented


def test_dmso_marked_treated_gets_mark_as_controls(tiny) -> None:
    frame = tiny["map"].to_frame()
    controls = frame[schema.ROLE] == "control"
    frame.loc[controls, schema.ROLE] = "treated"
    frame.loc[controls, schema.TREATMENT] = "DMSO"
    wrong = PlateMap.from_frame(frame, plate_id="tiny1")
    with pytest.raises(ContextError, match="hold DMSO but are marked as treated.*mark them as co"):
        run_plate(tiny["plate"], wrong, _config(tiny))


def test_no_controls_fails_before_segmentation(tiny) -> None:
    frame = tiny["map"].to_frame()
    frame[schema.ROLE] = frame[schema.ROLE].replace("control", "excluded")
    no_controls = PlateMap.from_frame(frame, plate_id="tiny1")
    polls = []
    with pytest.raises(ContextError, match="no imaged well as a negative control"):
        run_plate(
            tiny["plate"], no_controls, _config(tiny), cancel=lambda: polls.append(1) or False
        )
    assert not polls  # nothing was segmented
    with pytest.raises(ContextError, match="no plate map"):
        run_plate(tiny["plate"], None, _config(tiny))
    # Without a map every cell counts as treated: ERM still predicts.
    res = run_plate(tiny["plate"], None, _config(tiny, method="erm"))
    assert res.accuracy is None and len(res.cells) > 0


def test_ensemble_averages_members(tiny) -> None:
    second = make_checkpoint(tiny["folder"] / "second.safetensors", seed=1)
    one = run_plate(tiny["plate"], tiny["map"], _config(tiny, method="erm"))
    two = run_plate(tiny["plate"], tiny["map"], _config(tiny, method="erm", checkpoint=second))
    both = run_plate(
        tiny["plate"], tiny["map"], _config(tiny, method="erm", checkpoint=[tiny["ckpt"], second])
    )
    cols = [f"prob_{c}" for c in MOAS]
    mean = (one.cells[cols].to_numpy() + two.cells[cols].to_numpy()) / 2
    assert np.allclose(both.cells[cols].to_numpy(), mean, atol=1e-5)
    assert both.embeddings is None  # members have unrelated feature spaces


def test_channel_and_class_mismatch(tiny) -> None:
    gfp = make_checkpoint(tiny["folder"] / "gfp.safetensors", channels=("DNA", "GFP"))
    with pytest.raises(ModelError, match="GFP"):
        run_plate(tiny["plate"], tiny["map"], _config(tiny, checkpoint=gfp))
    other = make_checkpoint(tiny["folder"] / "other.safetensors", classes=("hdac_inhibitor", "x"))
    with pytest.raises(ModelError, match="tubulin_inhibitor"):
        run_plate(tiny["plate"], tiny["map"], _config(tiny, checkpoint=other))
    not_ckpt = tiny["folder"] / "notes.safetensors"
    not_ckpt.write_text("not a checkpoint")
    with pytest.raises(ModelError, match="not a phenoadapt checkpoint"):
        run_plate(tiny["plate"], tiny["map"], _config(tiny, checkpoint=not_ckpt))


def test_constant_crops_are_refused(tiny, tmp_path) -> None:
    # A blank field (an empty or unexposed well) gives constant crops wherever cells are said to be.
    import shutil

    import numpy as np
    import tifffile

    from phenoadapt.plate import open_plate

    folder = shutil.copytree(tiny["plate"].path, tmp_path / "blank")
    for plane in folder.glob("r01c0[12]f01p01-ch*.tiff"):
        tifffile.imwrite(plane, np.zeros_like(tifffile.imread(plane)))
    table = pd.DataFrame({schema.PLATE: "tiny1", schema.WELL: ["A01", "A02"], schema.SITE: 1,
                          schema.CELL_ID: [1, 1], schema.CENTROID_Y: 40.0,
                          schema.CENTROID_X: 40.0})  # fmt: skip
    with pytest.raises(ContextError, match="constant"):
        run_plate(
            open_plate(folder, plate_id="tiny1"),
            tiny["map"],
            _config(tiny, method="erm"),
            cells=table,
        )


def test_no_cells_is_a_cells_error(tiny) -> None:
    with pytest.raises(CellsError, match="No cell was found"):
        run_plate(
            tiny["plate"], tiny["map"], _config(tiny, method="erm"),
            cells=pd.DataFrame({schema.PLATE: [], schema.WELL: [], schema.SITE: [],
                                schema.CELL_ID: [], schema.CENTROID_Y: [], schema.CENTROID_X: []}),
        )  # fmt: skip


def test_train_plates_writes_a_checkpoint_that_predicts(tiny) -> None:
    out = tiny["folder"] / "trained.safetensors"
    config = TrainRunConfig(
        width=4, crop_size=24, crop_scale=0.5, input_size=20, max_epochs=1,
        treated_per_episode=16, controls_per_episode=16, plates_per_step=2,
        max_steps_per_epoch=2, segmentation=SEGMENTATION, device="cpu",
        validation_plates=["tiny2"],
    )  # fmt: skip
    seen = []
    trained = train_plates([tiny["plate"], tiny["plate2"]], [tiny["map"], tiny["map2"]], config,
                           out, progress=lambda s, d, t: seen.append(s))  # fmt: skip
    assert trained.path == out and out.is_file()
    assert {"segment", "train", "epoch"} <= set(seen)
    meta = load_checkpoint(out).metadata
    assert meta.crop_size == 24 and meta.input_size == 20
    assert meta.channel_names == ("DNA", "ER", "RNA", "AGP", "Mito")
    contract = meta.model_input
    assert contract.crop_scale == 0.5 and contract.segmentation.nucleus_diameter == 16
    assert contract.unit == "cell" and contract.crop_size == 24 and contract.input_size == 20
    assert meta.validation_plates == ("tiny2",)
    res = run_plate(tiny["plate"], tiny["map"], _config(tiny, checkpoint=out))
    assert len(res.cells) > 0
    # Never replaced silently.
    with pytest.raises(CheckpointExistsError, match="already exists"):
        train_plates([tiny["plate"]], [tiny["map"]], config, out)
