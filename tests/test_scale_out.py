"""Scale-out: fields as dask tasks, plate lists, and a core install without GUI packages.

A 2-worker ``LocalCluster`` (worker processes, one thread each) segments and
predicts two tiny plates through the CLI and must write the same files, byte
for byte, as the single-process run (and embed_plate's context tasks the same
table); a worker that dies mid-plate has its tasks run again, one that dies
holding a context's crops has them sent again, and the tables are still
complete; Cancel removes the tasks from
the cluster.  Plate lists skip finished plates, resume, redo with
``--overwrite`` and go on past a plate that fails.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from pipeline_fixtures import CHANNELS, SEGMENTATION, make_checkpoint, make_plate

from phenoadapt.cells import segment_plate
from phenoadapt.cells.process import default_workers
from phenoadapt.cli import main
from phenoadapt.cli.plate_list import read_plate_list
from phenoadapt.errors import Cancelled, InputNotFoundError, OptionError
from phenoadapt.nn import Normalization, phenoprofiler
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.scale import SchedulerError, open_scheduler
from phenoadapt.scale.tasks import chunk_items
from phenoadapt.train import CheckpointMetadata, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
GUI_PACKAGES = ("napari", "npe2", "magicgui", "qtpy", "superqt", "pyqt5", "pyqt6", "pyside2",
                "pyside6", "vispy", "app-model")  # fmt: skip
SEGMENT = ["--nucleus-diameter", "16", "--workers", "1"]


# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def screen(tmp_path_factory) -> dict:
    """Two tiny plates, a list file naming them (one relative path, a comment), a checkpoint."""
    folder = tmp_path_factory.mktemp("screen")
    dirs = [make_plate(folder / "plates", f"scale{i}", seed=i)[2] for i in (1, 2)]
    plate_list = folder / "plates.txt"
    plate_list.write_text(f"# the screen\n{dirs[0]}\n\nplates/{dirs[1].name}\n")
    return {
        "folder": folder,
        "dirs": dirs,
        "list": str(plate_list),
        "ckpt": str(make_checkpoint(folder / "model.safetensors")),
        "embedder": str(_embedder(folder / "pp.safetensors")),
    }


def _embedder(path: Path) -> Path:
    """An untrained PhenoProfiler checkpoint for the tiny plates."""
    norm = Normalization("log1p", (5.5,) * 5, (1.0,) * 5, None)
    model = phenoprofiler(5, 3, 6, arch="resnet10", width=4, stem="small", heads=2,
                          normalization=norm, seed=0).eval()  # fmt: skip
    meta = CheckpointMetadata(
        network={}, classes=("DMSO", "a", "b"), channel_names=CHANNELS, method="erm",
        crop_size=16, extra={"kind": "embedder", "unit": "cell", "crop_scale": 0.5},
    )  # fmt: skip
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes (processes, so one can be killed)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as local,
        Client(local) as client,
    ):  # fmt: skip
        yield local, client


@pytest.fixture(scope="module")
def reference(screen, tmp_path_factory) -> Path:
    """``segment --plates`` in one process (no scheduler): the files every other run must match."""
    out = tmp_path_factory.mktemp("reference")
    args = ["segment", "--plates", screen["list"], "--per-well", "wells.csv", *SEGMENT]
    assert main([*args, "--out", str(out / "cells.csv")]) == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes; ``run.json`` without its creation time (the rest must match)."""
    files = {}
    for path in sorted(folder.rglob("*.*")):
        content = path.read_bytes()
        if path.name == "run.json":
            record = json.loads(content)
            record.pop("created")
            content = json.dumps(record, sort_keys=True).encode()
        files[str(path.relative_to(folder))] = content
    return files


# ---------------------------------------------------------------- same tables on a cluster


@pytest.mark.slow
def test_segment_on_a_cluster_writes_the_same_files(
    screen, reference, cluster, tmp_path, capsys
) -> None:
    _, client = cluster
    address = client.scheduler.address
    args = ["segment", "--plates", screen["list"], "--per-well", "wells.csv", *SEGMENT]
    assert main([*args, "--out", str(tmp_path / "cells.csv"), "--scheduler", address]) == 0
    err = capsys.readouterr().err
    assert f"dask scheduler {address}: 2 worker(s), 2 thread(s)" in err
    single, distributed = _files(reference), _files(tmp_path)
    names = ("cells.csv", "cells.segmentation.json", "wells.csv")
    assert sorted(single) == [f"{d.name}/{f}" for d in screen["dirs"] for f in names]
    assert single == distributed


@pytest.mark.slow
def test_predict_on_a_cluster_writes_the_same_files(screen, cluster, tmp_path) -> None:
    _, client = cluster
    common = [
        "predict", "--plates", screen["list"], "--checkpoint", screen["ckpt"], "--device", "cpu",
        "--min-controls", "4", "--controls-per-context", "16", "--threads", "1",
    ]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    address = client.scheduler.address
    assert main([*common, "--out", str(tmp_path / "dask"), "--scheduler", address]) == 0
    single, distributed = _files(tmp_path / "one"), _files(tmp_path / "dask")
    assert {f"{screen['dirs'][0].name}/cells.csv", f"{screen['dirs'][1].name}/wells.csv"} <= set(
        single
    )
    assert single == distributed


@pytest.mark.slow
def test_embed_on_a_cluster_writes_the_same_files(screen, cluster, tmp_path) -> None:
    _, client = cluster
    common = ["embed", "--plates", screen["list"], "--checkpoint", screen["embedder"],
              "--nucleus-diameter", "16", "--level", "site"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "one" / "emb.csv")]) == 0
    address = client.scheduler.address
    assert main([*common, "--out", str(tmp_path / "dask" / "emb.csv"), "--scheduler", address]) == 0
    single, distributed = _files(tmp_path / "one"), _files(tmp_path / "dask")
    assert sorted(single) == [f"{d.name}/emb.csv" for d in screen["dirs"]]
    assert single == distributed


@pytest.mark.slow
def test_embed_plate_contexts_on_worker_processes_give_the_same_table(screen, cluster) -> None:
    """A batch-norm correction: each context embedded by a worker process, the same bytes."""
    from phenoadapt.adapt.methods import ContextSpec
    from phenoadapt.embed import ProfileOptions, embed_plate
    from phenoadapt.pipeline import context_tasks

    _, client = cluster
    plate = open_plate(screen["dirs"][1])
    platemap = read_platemap(screen["dirs"][1] / "platemap.csv", plate_id=plate.plate_id)
    spec = ContextSpec(context="chunks", treated_per_context=16, controls_per_context=8,
                       min_controls=4)  # fmt: skip
    options = {"profile": ProfileOptions(level="cell", correction="cs-arm-bn"),
               "contexts": spec, "segmentation": SEGMENTATION}  # fmt: skip
    here = embed_plate(plate, screen["embedder"], platemap, **options)
    built = sum(client.run(context_tasks.models_built).values())
    stages = []
    there = embed_plate(plate, screen["embedder"], platemap, scheduler=client,
                        progress=lambda stage, *_: stages.append(stage), **options)  # fmt: skip
    assert sum(client.run(context_tasks.models_built).values()) > built, "not on the workers"
    assert "embed" in stages and len(here) > 20
    assert here.to_csv() == there.to_csv()


@pytest.mark.slow
def test_cancel_removes_the_tasks_from_the_cluster(screen, cluster) -> None:
    local, client = cluster
    plate = open_plate(screen["dirs"][1])
    reports = []

    def cancel() -> bool:
        return bool(reports)  # as soon as one field is done

    with pytest.raises(Cancelled, match="cancelled after"):
        segment_plate(
            plate, segmentation=SEGMENTATION, scheduler=client, cancel=cancel,
            progress=lambda stage, done, total: reports.append(done) if done else None,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while local.scheduler.tasks and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not local.scheduler.tasks


@pytest.mark.slow
def test_a_worker_killed_with_a_plates_contexts_and_predict_is_complete(
    screen, cluster, monkeypatch
) -> None:
    """The worker holding a context's crops dies: they are sent again, the table is whole."""
    from distributed import wait

    from phenoadapt.pipeline import RunConfig, run_plates
    from phenoadapt.pipeline.context_tasks import ContextInputs

    local, client = cluster
    plate = open_plate(screen["dirs"][0])
    platemap = read_platemap(screen["dirs"][0] / "platemap.csv", plate_id=plate.plate_id)
    config = RunConfig(checkpoint=screen["ckpt"], device="cpu", min_controls=4,
                       controls_per_context=16, batch_size=32, context="chunks")  # fmt: skip
    expected = run_plates([plate], [platemap], config)
    scatter, killed = client.scatter, []

    def scatter_then_kill(data, **kwargs):
        futures = scatter(data, **kwargs)
        if not killed and isinstance(data, list) and isinstance(data[0], ContextInputs):
            wait(futures)
            (holder,) = client.who_has([futures[0]])[futures[0].key]
            killed.append(holder)
            try:  # the worker process dies as on a lost node, without answering
                client.run(os._exit, 1, workers=[holder])
            except Exception:  # noqa: BLE001 - the lost connection is the point
                pass
        return futures

    monkeypatch.setattr(client, "scatter", scatter_then_kill)
    result = run_plates([plate], [platemap], config, scheduler=client)
    monkeypatch.undo()
    assert killed, "no worker was killed: the test proves nothing"
    assert result.cells.to_csv() == expected.cells.to_csv()
    assert result.wells.to_csv() == expected.wells.to_csv()
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next test


# The last test of the cluster: it leaves one worker restarting.
class KillOnce:
    """A pixel source that kills the dask worker reading ``well`` the first time."""

    def __init__(self, inner, marker: Path, well: str) -> None:
        self.inner, self.marker, self.well = inner, marker, well

    def read_plane(self, well, site, channel):
        if well == self.well and _in_dask_worker() and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-task, as on a lost node
        return self.inner.read_plane(well, site, channel)

    def describe(self, well, site, channel):
        return self.inner.describe(well, site, channel)


def _in_dask_worker() -> bool:
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_a_killed_workers_fields_run_again_and_the_table_is_complete(
    screen, cluster, tmp_path
) -> None:
    _, client = cluster
    plate = open_plate(screen["dirs"][0])
    platemap = read_platemap(screen["dirs"][0] / "platemap.csv", plate_id=plate.plate_id)
    expected = segment_plate(plate, segmentation=SEGMENTATION, platemap=platemap, workers=1)
    marker = tmp_path / "killed"
    doomed = replace(plate, source=KillOnce(plate.source, marker, well="A03"))
    result = segment_plate(doomed, segmentation=SEGMENTATION, platemap=platemap, scheduler=client)
    assert marker.exists(), "no worker was killed: the test proves nothing"
    assert result.failures == expected.failures
    assert result.cells.to_csv() == expected.cells.to_csv()


# ---------------------------------------------------------------- scheduler arguments


def test_scheduler_arguments(monkeypatch) -> None:
    monkeypatch.setattr("phenoadapt.scale.scheduler.CONNECT_TIMEOUT_S", 0.5)
    with open_scheduler(None) as client:
        assert client is None
    with pytest.raises(SchedulerError, match="is not one"), open_scheduler("not an address"):
        pass
    with pytest.raises(SchedulerError, match="at least 1 worker"), open_scheduler("local:0"):
        pass
    with (
        pytest.raises(SchedulerError, match="Could not reach"),
        open_scheduler("tcp://127.0.0.1:9"),
    ):
        pass


def test_chunks_keep_order_and_stay_small() -> None:
    items = list(range(1000))
    chunks = chunk_items(items, threads=2)
    assert [i for c in chunks for i in c] == items and max(map(len, chunks)) == 8
    assert chunk_items(items[:5], threads=4) == [[0], [1], [2], [3], [4]]
    assert default_workers() >= 1


# ---------------------------------------------------------------- plate lists


def test_plate_list_file_and_glob(screen, tmp_path) -> None:
    relative = screen["folder"] / "plates" / screen["dirs"][1].name  # from the list's folder
    assert read_plate_list(screen["list"]) == [screen["dirs"][0], relative]
    assert read_plate_list(str(screen["folder"] / "plates" / "*")) == sorted(screen["dirs"])
    with pytest.raises(InputNotFoundError, match="matches no plate"):
        read_plate_list(str(tmp_path / "none*"))
    with pytest.raises(InputNotFoundError, match="no such list file"):
        read_plate_list(str(tmp_path / "plates.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(OptionError, match="names no plate"):
        read_plate_list(str(tmp_path / "empty.txt"))


def test_plate_list_skips_resumes_and_overwrites(screen, reference, tmp_path, capsys) -> None:
    out = tmp_path / "seg"
    shutil.copytree(reference, out)  # a finished run
    args = ["segment", "--plates", screen["list"], "--out", str(out / "cells.csv"),
            "--per-well", "wells.csv", *SEGMENT]  # fmt: skip
    names = [d.name for d in screen["dirs"]]
    assert main(args) == 0
    assert "2 plate(s): 0 done, 2 skipped, 0 failed" in capsys.readouterr().err
    kept = out / names[0] / "cells.csv"
    stamp = kept.stat().st_mtime_ns
    (out / names[1] / "cells.csv").unlink()  # as if the run had stopped during this plate
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"{names[0]}: skipped, its outputs exist" in err
    assert f"{names[1]}: outputs incomplete (cells.csv missing): redoing the plate" in err
    assert "2 plate(s): 1 done, 1 skipped, 0 failed" in err
    assert kept.stat().st_mtime_ns == stamp
    assert _files(out) == _files(reference)
    assert main([*args, "--overwrite"]) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().err
    assert kept.stat().st_mtime_ns != stamp


def test_a_failed_plate_is_reported_and_the_others_run(screen, tmp_path, capsys) -> None:
    listing = tmp_path / "plates.txt"
    listing.write_text(f"{tmp_path / 'missing_plate'}\n{screen['dirs'][0]}\n")
    out = tmp_path / "seg"
    assert main(["segment", "--plates", str(listing), "--out", str(out / "cells.csv"),
                 *SEGMENT]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert (
        "missing_plate" in err and "2 plate(s): 1 done, 0 skipped, 1 failed: missing_plate" in err
    )
    assert (out / screen["dirs"][0].name / "cells.csv").exists()


def test_plate_list_refuses_what_names_one_plate(screen, tmp_path, capsys) -> None:
    out = str(tmp_path / "x.csv")
    assert main(["segment", str(screen["dirs"][0]), "--plates", screen["list"], "--out", out]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["segment", "--out", out]) == 2
    assert "--plates LIST" in capsys.readouterr().err
    assert main(["segment", "--plates", screen["list"], "--plate-id", "p", "--out", out]) == 2
    assert "--plate-id names one plate" in capsys.readouterr().err
    assert main(["embed", "--plates", screen["list"], "--checkpoint", "none.safetensors",
                 "--plate-id", "p", "--out", out]) == 2  # fmt: skip


# ---------------------------------------------------------------- workers need no GUI


def test_core_dependencies_hold_no_gui_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0]
                .strip().lower() for r in requirements}  # fmt: skip

    assert not names(project["dependencies"]) & set(GUI_PACKAGES)
    assert {"napari", "qtpy", "magicgui"} <= names(project["optional-dependencies"]["gui"])
    assert {"distributed", "dask"} <= names(project["dependencies"])


@pytest.mark.slow
def test_a_fresh_core_install_resolves_no_gui_package(tmp_path) -> None:
    """What ``pip install phenoadapt`` puts into an empty environment holds no GUI package.

    pip's own resolution (``--dry-run --ignore-installed``: as into a bare venv,
    transitive dependencies included), so a core dependency that pulls Qt in is
    caught, not only a GUI package named in pyproject.toml.  Needs the package
    index, as the CI's install does.
    """
    report = tmp_path / "report.json"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--no-input", "--report", str(report), str(ROOT)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if out.returncode != 0 and any(
        word in out.stderr for word in ("NewConnectionError", "No matching distribution")
    ):
        pytest.skip(f"the package index cannot be reached: {out.stderr.strip()[-300:]}")
    assert out.returncode == 0, out.stderr
    names = {
        item["metadata"]["name"].lower().replace("_", "-")
        for item in json.loads(report.read_text())["install"]
    }
    assert {"phenoadapt", "torch", "distributed", "tifffile"} <= names
    gui = {n for n in names if n in GUI_PACKAGES or "qt" in n or n.startswith("napari")}
    assert not gui, f"a core install would bring GUI packages: {sorted(gui)}"


BLOCK_GUI = """
import sys
class _NoGui:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].lower() in {blocked!r}:
            raise ImportError(f"{{name}} is not installed on this worker")
sys.meta_path.insert(0, _NoGui())
"""


@pytest.mark.slow
def test_a_node_without_gui_packages_runs_the_pipeline(screen, tmp_path) -> None:
    """As on a cluster node: napari and Qt cannot be imported, segment still runs."""
    code = BLOCK_GUI.format(blocked=set(GUI_PACKAGES)) + (
        "import phenoadapt.pipeline, phenoadapt.scale, phenoadapt.cli\n"
        "from phenoadapt.cli import main\n"
        f"status = main(['segment', {str(screen['dirs'][0])!r}, '--out', "
        f"{str(tmp_path / 'cells.csv')!r}, '--nucleus-diameter', '16', '--workers', '1'])\n"
        "gui = sorted(m for m in sys.modules if m.split('.')[0].lower() in "
        f"{set(GUI_PACKAGES)!r})\n"
        "print(status, gui)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    assert (tmp_path / "cells.csv").exists()


def test_benchmark_report_and_arithmetic() -> None:
    """benchmarks/bench_scale_out.py: the table and the 1,000-plate arithmetic it writes."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_scale_out as bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = [("one process", 60.0, 0.0), ("dask", 30.0, 5.0)]
    text = bench.report(rows, n_plates=2, n_fields=60, per_field=5.0, load=1.0)
    assert "| one process | 60.0 | 1.00 | 120 | - |" in text
    assert "| dask | 30.0 | 2.00 | 240 | 5.0 |" in text
    # 1,000 plates x 3,456 fields x 5 s = 4,800 core-hours; 24 hours on 200 cores.
    assert "4,800 core-hours" in text and "24.0 hours on 200 worker cores" in text
