"""A plate's contexts adapted and predicted (or embedded) as dask tasks (pipeline/context_tasks.py).

The tasks must give the same predictions and embeddings, bit for bit, as the
single-process loop; the weights travel as safetensors bytes and are built once per worker;
the tasks ask for a GPU when a worker offers one; Cancel removes them.  The
clusters here are in-process (``processes=False``): cheap to start on a busy
CI machine, and they let the test see the workers' model cache.  The
end-to-end CLI check on worker processes is in test_scale_out.py.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_fixtures import make_plate, trained_like_resnet

from phenoadapt.adapt.methods import (
    ContextSpec,
    Runtime,
    adapt_contexts,
    predict_contexts,
    predict_plate,
)
from phenoadapt.embed import ProfileOptions, embed_plate
from phenoadapt.errors import Cancelled, OptionError
from phenoadapt.pipeline import RunConfig, context_tasks, run_plates
from phenoadapt.pipeline.context_tasks import (
    ClusterNetwork,
    cluster_network,
    context_inputs,
    model_payload,
    worker_models,
)
from phenoadapt.pipeline.runner import embed_contexts
from phenoadapt.train.toy import make_toy_plates

CLASSES = ("moa_a", "moa_b", "moa_c")

# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def plates() -> tuple[np.ndarray, pd.DataFrame]:
    # 90 treated + 50 controls per plate.
    return make_toy_plates(["P1", "P2"], treated_per_class=30, n_controls=50, size=12, seed=3)


@pytest.fixture(scope="module")
def model(plates) -> torch.nn.Module:
    return trained_like_resnet(plates[0])


def _checkpoint(model: torch.nn.Module) -> SimpleNamespace:
    """What ClusterNetwork reads of a Checkpoint: the model and its network spec."""
    return SimpleNamespace(model=model, metadata=SimpleNamespace(network=model.spec()))


def _local_cluster(**kwargs):
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=kwargs.pop("n_workers", 2), threads_per_worker=1, processes=False,
        dashboard_address=None, silence_logs=logging.ERROR, **kwargs,
    )  # fmt: skip


# ---------------------------------------------------------------- no cluster


def test_a_context_runner_is_handed_the_plate_runtime_as_one(model, plates) -> None:
    """predict_plate gives its runner the Runtime itself, not its fields one by one."""
    images, table = plates
    seen = []

    def runner(members, images, contexts, runtime, **options):
        seen.append((runtime, options))
        return adapt_contexts(members, images, contexts, runtime, **options)

    runtime = Runtime(device=None, batch_size=16, max_pass_size=64, amp=False)
    spec = ContextSpec(context="chunks", treated_per_context=32, controls_per_context=16)
    got = predict_plate(model, images, table, CLASSES, contexts=spec, runtime=runtime,
                        runner=runner)  # fmt: skip
    want = predict_plate(model, images, table, CLASSES, contexts=spec, runtime=runtime)
    assert seen[0][0] is runtime and set(seen[0][1]) == {
        "input_size",
        "return_embeddings",
        "progress",
        "cancel",
    }
    pd.testing.assert_frame_equal(got.cells, want.cells)


def test_a_context_on_its_own_rows_predicts_the_same_bits(model, plates) -> None:
    images, table = plates
    spec = ContextSpec(context="chunks", treated_per_context=32, controls_per_context=16)
    contexts = spec.plan(table, "cs-arm-bn", unit="cell")
    assert len(contexts) > 2
    whole = predict_contexts(model, images, contexts, batch_size=16, return_embeddings=True)
    for ctx, expected in zip(contexts, whole, strict=True):
        inputs, rows = context_inputs(images, ctx)
        assert len(rows) < len(images)  # only the context's rows travel
        np.testing.assert_array_equal(rows[inputs.context.predict], ctx.predict)
        np.testing.assert_array_equal(rows[inputs.context.statistics], ctx.statistics)
        (alone,) = predict_contexts(
            model, inputs.images, [inputs.context], batch_size=16, return_embeddings=True
        )
        assert np.array_equal(alone.probabilities, expected.probabilities)
        assert np.array_equal(alone.embeddings, expected.embeddings)


def _embedder(n_channels: int = 3) -> torch.nn.Module:
    """A tiny PhenoProfiler whose batch norms hold statistics as after training."""
    from phenoadapt.nn import Normalization, phenoprofiler

    norm = Normalization("log1p", (5.5,) * n_channels, (1.0,) * n_channels, None)
    model = phenoprofiler(n_channels, 3, 16, arch="resnet10", width=4, stem="small", heads=2,
                          normalization=norm, seed=0)  # fmt: skip
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    return model.eval()


def test_a_context_on_its_own_rows_embeds_the_same_bits(plates) -> None:
    images, table = plates
    model = _embedder()
    contexts = ContextSpec(context="chunks", treated_per_context=32, controls_per_context=16).plan(
        table, "cs-arm-bn", unit="cell"
    )
    runtime = Runtime(device=None, batch_size=16, max_pass_size=None, amp=False)
    whole = embed_contexts(model, images, contexts, input_size=10, runtime=runtime)
    assert len(whole) == len(contexts) > 2
    for ctx, expected in zip(contexts, whole, strict=True):
        inputs, _ = context_inputs(images, ctx)
        (alone,) = embed_contexts(model, inputs.images, [inputs.context], input_size=10,
                                  runtime=runtime)  # fmt: skip
        assert alone.shape == (len(ctx.predict), 16)
        assert np.array_equal(alone, expected)


def test_weights_travel_as_safetensors_and_are_built_once(model, plates) -> None:
    payload = model_payload([_checkpoint(model)])
    # A safetensors blob: an 8-byte header length, then the JSON header (never a pickle).
    assert all(blob[8:9] == b"{" for blob in payload.weights)
    before = context_tasks.models_built()
    first = worker_models(payload, "cpu")
    assert worker_models(payload, "cpu") is first  # cached: built once per worker thread
    assert context_tasks.models_built() == before + 1
    images = torch.from_numpy(plates[0][:8])
    with torch.no_grad():
        assert torch.equal(first[0](images), model(images))
    if not torch.cuda.is_available():  # a worker without a GPU asked for one: a user error
        with pytest.raises(OptionError, match="--resources GPU=1"):
            worker_models(payload, "cuda")
    other = model_payload([_checkpoint(trained_like_resnet(plates[0][::-1].copy()))])
    assert other.key != payload.key


# ---------------------------------------------------------------- on a cluster


@pytest.mark.slow
def test_contexts_as_tasks_give_the_same_tables(model, plates) -> None:
    from distributed import Client

    images, table = plates
    spec = ContextSpec(context="chunks", treated_per_context=32, controls_per_context=16)
    runtime = Runtime(device=None, batch_size=16)
    here = predict_plate(model, images, table, CLASSES, contexts=spec, runtime=runtime,
                         return_embeddings=True)  # fmt: skip
    built = context_tasks.models_built()
    reports: list[tuple[str, int, int]] = []
    with _local_cluster() as cluster, Client(cluster) as client:
        network = ClusterNetwork(client, [_checkpoint(model)], device="cpu")
        assert network.resources is None  # no worker offers a GPU: any worker runs them
        there = predict_plate(
            model, images, table, CLASSES, contexts=spec, runtime=runtime,
            return_embeddings=True, runner=network.runner("P"),
            progress=lambda *r: reports.append(r),
        )  # fmt: skip
        network.close()
    # Each worker thread that ran contexts built the network once, whatever their number.
    assert 1 <= context_tasks.models_built() - built <= 2
    assert here.cells.to_csv() == there.cells.to_csv()
    assert here.wells.to_csv() == there.wells.to_csv()
    assert np.array_equal(here.embeddings, there.embeddings, equal_nan=True)
    n = len(spec.plan(table, "cs-arm-bn"))
    assert sorted(d for _, d, _ in reports) == list(range(1, n + 1))
    assert {(s, t) for s, _, t in reports} == {("adapt", n)}


@pytest.mark.slow
def test_tasks_ask_for_a_gpu_when_a_worker_offers_one(model, plates) -> None:
    from distributed import Client

    images, table = plates
    with (
        _local_cluster(n_workers=1, resources={"GPU": 1}) as cluster,
        Client(cluster) as client,
    ):
        network = ClusterNetwork(client, [_checkpoint(model)], device="auto")
        assert network.resources == {"GPU": 1}
        assert network.gpus == list(client.scheduler_info(n_workers=-1)["workers"])
        runner = network.runner("P")
        contexts = ContextSpec().plan(table, "adabn")
        got = runner([model], images, contexts, Runtime(device=None, batch_size=64))
        # "auto" on a worker without CUDA: the CPU, with the same outputs.
        want = predict_contexts(model, images, contexts, batch_size=64)
        for a, b in zip(got, want, strict=True):
            assert np.array_equal(a.probabilities, b.probabilities)
            assert np.array_equal(a.context.predict, b.context.predict)
        network.close()


@pytest.mark.slow
def test_cancel_removes_the_context_tasks(model, plates) -> None:
    from distributed import Client

    images, table = plates
    with _local_cluster() as cluster, Client(cluster) as client:
        network = ClusterNetwork(client, [_checkpoint(model)], device="cpu")
        contexts = ContextSpec(context="chunks", treated_per_context=8).plan(table, "arm-bn")
        with pytest.raises(Cancelled):
            network.runner("P")([model], images, contexts, Runtime(), cancel=lambda: True)
        network.close()
        deadline = time.monotonic() + 20
        while cluster.scheduler.tasks and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not cluster.scheduler.tasks


@pytest.mark.slow
def test_ctrl_c_during_a_run_releases_the_weights(model) -> None:
    from distributed import Client

    with _local_cluster() as cluster, Client(cluster) as client:
        with (
            pytest.raises(KeyboardInterrupt),
            cluster_network(client, [_checkpoint(model)], "cpu") as network,
        ):
            assert network is not None and cluster.scheduler.tasks  # the scattered weights
            raise KeyboardInterrupt
        deadline = time.monotonic() + 20
        while cluster.scheduler.tasks and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not cluster.scheduler.tasks
    with cluster_network(None, [_checkpoint(model)]) as nothing:
        assert nothing is None  # no scheduler: the run's own process


@pytest.mark.slow
def test_run_plates_on_a_cluster_equals_one_process(tmp_path) -> None:
    from distributed import Client
    from pipeline_fixtures import make_checkpoint

    plate, platemap, _ = make_plate(tmp_path / "plates", "ctx1", seed=4)
    config = RunConfig(checkpoint=make_checkpoint(tmp_path / "m.safetensors"), device="cpu",
                       min_controls=4, controls_per_context=16, batch_size=32)  # fmt: skip
    here = run_plates([plate], [platemap], config)
    built = context_tasks.models_built()
    with _local_cluster() as cluster, Client(cluster) as client:
        there = run_plates([plate], [platemap], config, scheduler=client)
    assert context_tasks.models_built() > built, "the contexts did not run on the workers"
    assert here.cells.to_csv() == there.cells.to_csv()
    assert here.wells.to_csv() == there.wells.to_csv()
    assert np.array_equal(here.embeddings, there.embeddings, equal_nan=True)
    assert np.array_equal(here.embeddings_unadapted, there.embeddings_unadapted, equal_nan=True)


def _embedder_checkpoint(path):
    """A PhenoProfiler checkpoint fit for the tiny plates of pipeline_fixtures."""
    from pipeline_fixtures import CHANNELS

    from phenoadapt.train import CheckpointMetadata, save_checkpoint

    meta = CheckpointMetadata(
        network={}, classes=("DMSO", "a", "b"), channel_names=CHANNELS, method="erm",
        crop_size=24, extra={"kind": "embedder", "unit": "cell", "crop_scale": 0.5,
                             "segmentation": {"nucleus_diameter": 16}},
    )  # fmt: skip
    return save_checkpoint(path, _embedder(len(CHANNELS)), meta)


@pytest.mark.slow
def test_embed_plate_on_a_cluster_equals_one_process(tmp_path) -> None:
    """embed_plate's contexts run as tasks on the workers: the same table, byte for byte."""
    from distributed import Client

    plate, platemap, _ = make_plate(tmp_path / "plates", "emb1", seed=5)
    ckpt = _embedder_checkpoint(tmp_path / "pp.safetensors")
    spec = ContextSpec(context="chunks", treated_per_context=16, controls_per_context=8,
                       min_controls=4)  # fmt: skip
    runtime = Runtime(device="cpu", batch_size=32, max_pass_size=None, amp=False)
    profile = ProfileOptions(level="cell", correction="cs-arm-bn+phenotype")
    options = {"profile": profile, "contexts": spec, "runtime": runtime}
    here = embed_plate(plate, ckpt, platemap, **options)
    built = context_tasks.models_built()
    stages: list[tuple[str, int, int]] = []
    with _local_cluster() as cluster, Client(cluster) as client:
        there = embed_plate(plate, ckpt, platemap, scheduler=client,
                            progress=lambda *r: stages.append(r), **options)  # fmt: skip
        # The weights are released with the plate: nothing is left on the cluster.
        deadline = time.monotonic() + 20
        while cluster.scheduler.tasks and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not cluster.scheduler.tasks
    assert context_tasks.models_built() > built, "the contexts did not run on the workers"
    assert len(here) > 50 and here.to_csv() == there.to_csv()
    embedded = [(d, t) for s, d, t in stages if s == "embed"]
    n = embedded[0][1] if embedded else 0
    assert n > 2 and sorted(d for d, _ in embedded) == list(range(1, n + 1))


@pytest.mark.slow
def test_contexts_whose_inputs_are_lost_are_sent_again(model, plates, monkeypatch) -> None:
    """Scattered inputs die with their worker (dask cannot recompute them): sent again."""
    from distributed import Client

    images, table = plates
    contexts = ContextSpec(context="chunks", treated_per_context=32).plan(table, "arm-bn")
    want = predict_contexts(model, images, contexts, batch_size=64)
    with _local_cluster() as cluster, Client(cluster) as client:
        network = ClusterNetwork(client, [_checkpoint(model)], device="cpu")
        scatter, lost = client.scatter, []

        calls = []

        def scatter_then_lose(data, **kwargs):
            calls.append(len(data))
            futures = scatter(data, **kwargs)
            if not lost:  # the first plate's inputs vanish, as with a dead worker
                lost.append(futures)
                client.cancel(futures[1:])
            return futures

        monkeypatch.setattr(client, "scatter", scatter_then_lose)
        got = network.runner("P")([model], images, contexts, Runtime(device=None, batch_size=64))
        network.close()
    # Sent again once: the contexts not gathered before the loss (at most all of them).
    assert len(calls) == 2 and calls[0] == len(contexts) and 1 <= calls[1] <= len(contexts)
    for a, b in zip(got, want, strict=True):
        assert np.array_equal(a.probabilities, b.probabilities)


def test_benchmark_predict_report() -> None:
    """benchmarks/bench_scale_out.py --part predict: the table it writes into the docs."""
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, folder)
    try:
        import bench_scale_out as bench
    finally:
        sys.path.remove(folder)
    rows = [("sample", "contexts only: this process", 2.0, 0.0),
            ("sample", "contexts only: tasks on 2 workers", 4.0, 20.0)]  # fmt: skip
    text = bench.predict_report(rows, n_plates=2, n_cells=1000, load=1.0)
    assert "| sample | contexts only: this process | 2.0 | 500 | - |" in text
    assert "| sample | contexts only: tasks on 2 workers | 4.0 | 250 | 20.0 |" in text
    assert "2 synthetic plates made as above (1,000 cells)" in text


def test_benchmark_crops_report() -> None:
    """benchmarks/bench_scale_out.py --part crops: the round-trip table and its arithmetic."""
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, folder)
    try:
        import bench_scale_out as bench
    finally:
        sys.path.remove(folder)
    row = {"cells": 1000, "crop_bytes": 11.52e6, "context_bytes": 11.52e6, "contexts": 1,
           "cut": 2.0, "gather": 0.05, "concat": 0.01, "scatter": 0.04, "tasks": 0.9}  # fmt: skip
    text = bench.crops_report([row], size=24, channels=5, bandwidth=1e8, load=1.0)
    assert "| 1 | 1,000 | 11.5 | 11.5 | 2.00 | 0.050 | 0.010 | 0.040 | 0.90 | 3.3% |" in text
    # 3,456 fields x 200 cells x 11.52 kB = 7.96 GB, twice: 13 s at 10 Gb/s, 159 s at 0.1 GB/s.
    assert "8.0 GB" in text and "13 s on a 10 Gb/s link" in text and "159 s" in text
