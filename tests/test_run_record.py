"""The run record: what produced a set of tables, named by a stable run id."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from phenoadapt import __version__, schema
from phenoadapt.export import annotate_cells, result_tables, with_run_id
from phenoadapt.models import default_model_path
from phenoadapt.pipeline import RunConfig
from phenoadapt.pipeline.record import file_sha256, json_ready, run_id, run_record


@dataclass
class _Plate:
    plate_id: str
    path: Path


@dataclass
class _Result:
    cells: pd.DataFrame
    methods: dict = field(default_factory=lambda: {"P1": "cs-arm-bn"})
    failures: list = field(default_factory=list)
    segmentation: object = None
    unit: str = "cell"


def _record(tmp_path: Path, folder: str, **config) -> dict:
    model = tmp_path / folder / "model.safetensors"
    model.parent.mkdir(exist_ok=True)
    shutil.copy(default_model_path(), model)
    plate = _Plate("P1", tmp_path / folder / "plate")
    result = _Result(pd.DataFrame({schema.PLATE: ["P1"] * 3}))
    return run_record(RunConfig(checkpoint=model, **config), [plate], result)


def test_the_id_names_the_run_not_the_machine(tmp_path) -> None:
    here, there = _record(tmp_path, "a"), _record(tmp_path, "b")
    # Other folders, same model bytes and settings: the same run id.
    assert here["plates"][0]["folder"] != there["plates"][0]["folder"]
    assert here["run_id"] == there["run_id"] and len(here["run_id"]) == 12
    assert _record(tmp_path, "c", seed=1)["run_id"] != here["run_id"]
    assert _record(tmp_path, "d", method="erm")["run_id"] != here["run_id"]
    assert here["phenoadapt_version"] == __version__ and here["n_cells"] == 3
    assert here["models"][0]["sha256"] == file_sha256(default_model_path())
    assert here["contexts"]["controls_per_context"] == RunConfig().controls_per_context
    assert "checkpoint" not in here["settings"]


def test_the_creation_time_is_recorded_but_not_hashed(tmp_path) -> None:
    record = _record(tmp_path, "a")
    later = dict(record, created=datetime(2030, 1, 1, tzinfo=UTC).isoformat())
    assert run_id(later) == record["run_id"]


def test_json_ready_turns_paths_sets_and_numpy_into_plain_values() -> None:
    import numpy as np

    ready = json_ready({"p": Path("/x"), "s": {2, 1}, "n": np.float32(0.5), 3: (1, 2)})
    assert ready == {"p": "/x", "s": [1, 2], "n": 0.5, "3": [1, 2]}


def test_tables_carry_the_run_id_and_cells_their_annotations() -> None:
    cells = pd.DataFrame({schema.PLATE: ["P"] * 3, schema.WELL: ["A01", "A02", "A03"]})
    wells = pd.DataFrame({schema.PLATE: ["P"], schema.WELL: ["A01"]})
    result = _Result(cells)
    result.wells, result.accuracy, result.record = wells, None, {"run_id": "abc"}
    umap = pd.DataFrame({"umap_after_1": [0.0, 1.0, 2.0]})
    tables = result_tables(result, selected=[1], umap=umap)
    assert set(tables) == {"cells", "wells"}
    assert tables["cells"]["selected"].tolist() == [False, True, False]
    assert tables["cells"]["umap_after_1"].tolist() == [0.0, 1.0, 2.0]
    assert all((t[schema.RUN_ID] == "abc").all() for t in tables.values())
    assert list(tables["cells"].columns[:2]) == [schema.PLATE, schema.WELL]
    assert annotate_cells(cells) is cells and with_run_id(cells, None) is cells
