"""A plate's contexts adapted and predicted as dask tasks, on GPU workers where there are some.

With a scheduler, :func:`phenoadapt.pipeline.run_plates` hands each planned
context of a plate (its crops or tiles and the positions of its statistics and
predicted cells) to the cluster as a task of its own: the task computes the
context's batch-norm statistics and predicts its cells with them
(:func:`~phenoadapt.adapt.methods.adapt_contexts`, the one loop of the
single-process run, on the context's rows only), and the outputs are gathered
in context order, so the tables are the same as without a scheduler.
:func:`phenoadapt.pipeline.embed_plate` embeds its contexts the same way
(:meth:`ClusterNetwork.embedder`, the loop of
:func:`~phenoadapt.pipeline.embed.embed_contexts` on each context's rows).

- The weights are sent once per worker: safetensors bytes of each member's
  state dict (never a pickle), scattered with ``broadcast=True``; a worker
  thread builds the network once per run and keeps it in a cache keyed by
  the weights' SHA-256 (:func:`worker_models`).
- When a worker advertises a ``GPU`` resource (``dask worker ... --resources
  GPU=1``, one worker per device, each with its ``CUDA_VISIBLE_DEVICES``),
  every context task asks for ``{"GPU": 1}``, so only those workers run the
  network, one task per device at a time; otherwise any worker runs it.  The
  task resolves the run's ``device`` on the worker (``auto``: CUDA when the
  worker has it).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ..adapt.methods import Context, ContextOutput, ContextRunner, Runtime, adapt_contexts
from ..errors import OptionError
from ..nn.registry import build_network
from ..nn.runtime import select_device
from ..progress import CancelFn, ProgressFn, check_cancel
from ..scale.tasks import map_ordered
from ..train.checkpoint import Checkpoint
from .runner import EmbedRunner, embed_contexts

#: The worker resource that marks a GPU (``dask worker --resources GPU=1``).
GPU_RESOURCE = "GPU"
#: Times the contexts of a plate whose scattered inputs were lost (their worker died)
#: are sent again.
LOST_INPUT_RETRIES = 2
#: Networks a worker keeps built (a run uses one model; a second covers a change of run).
CACHE_SIZE = 2

# One cache per worker thread: computing a context's statistics sets the model's
# train/eval flags and batch-norm buffers, so two threads must never share a model.
_local = threading.local()
_built = [0]
_built_lock = threading.Lock()


def models_built() -> int:
    """Times this process built a run's networks (cache misses of :func:`worker_models`)."""
    return _built[0]


def _cache() -> OrderedDict[tuple[str, str], list[nn.Module]]:
    if not hasattr(_local, "models"):
        _local.models = OrderedDict()
    return _local.models


class _LostInputs(Exception):
    """A context task failed because its scattered inputs are gone."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class ModelPayload:
    """The networks of a run as plain data: architecture specs and safetensors bytes.

    Attributes
    ----------
    key
        SHA-256 of the weights (the workers' cache key).
    networks
        Each member's ``metadata.network`` (what :func:`build_network` rebuilds).
    weights
        Each member's state dict as safetensors bytes.
    """

    key: str
    networks: tuple[dict[str, Any], ...]
    weights: tuple[bytes, ...]


def model_payload(checkpoints: Sequence[Checkpoint]) -> ModelPayload:
    """The networks of ``checkpoints`` as a :class:`ModelPayload` (weights copied to the CPU)."""
    weights = []
    digest = hashlib.sha256()
    for ckpt in checkpoints:
        # clone: safetensors refuses tensors that share storage (views of one buffer).
        state = {
            k: v.detach().cpu().clone().contiguous() for k, v in ckpt.model.state_dict().items()
        }
        blob = save_safetensors(state)
        digest.update(blob)
        weights.append(blob)
    networks = tuple(dict(c.metadata.network) for c in checkpoints)
    return ModelPayload(digest.hexdigest(), networks, tuple(weights))


def worker_models(payload: ModelPayload, device: str) -> list[nn.Module]:
    """The networks of ``payload`` on ``device``, built once per worker thread and cached.

    A worker process with one thread (the advice for GPU workers: one per
    device) builds them once; each thread of a multi-threaded worker has its
    own copy (see :data:`_local`).
    """
    try:
        target = select_device(device)
    except ValueError as exc:  # e.g. --device cuda, and this worker has no GPU
        raise OptionError(
            f"{exc} (on a dask worker). Start the GPU workers with `dask worker ... "
            "--resources GPU=1` (the contexts then run on them only), or use --device auto."
        ) from None
    key = (payload.key, str(target))
    cache = _cache()
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    models = []
    for spec, blob in zip(payload.networks, payload.weights, strict=True):
        model = build_network(spec)
        model.load_state_dict(load_safetensors(blob), strict=True)
        models.append(model.to(target).eval())
    cache[key] = models
    with _built_lock:
        _built[0] += 1
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
    return models


@dataclass(frozen=True)
class ContextInputs:
    """One context's work: its rows' images and the context renumbered to index them."""

    images: np.ndarray
    context: Context


def context_inputs(images: np.ndarray, context: Context) -> tuple[ContextInputs, np.ndarray]:
    """The images a context needs (statistics and predicted rows), and those rows.

    The positions are renumbered into the returned images; the renumbering
    keeps their order, so the task forwards the same batches as the whole-plate run.
    """
    rows = np.union1d(context.statistics, context.predict).astype(np.int64)
    local = replace(
        context,
        statistics=np.searchsorted(rows, context.statistics).astype(np.int64),
        predict=np.searchsorted(rows, context.predict).astype(np.int64),
    )
    return ContextInputs(np.ascontiguousarray(np.asarray(images)[rows]), local), rows


@dataclass(frozen=True)
class ContextJob:
    """How every context task of a plate runs (small: travels with each task).

    ``runtime.device`` is the run's device, resolved on the worker (``auto``:
    CUDA where it has one); the rest of the runtime is the plate's own.
    """

    runtime: Runtime
    input_size: int | None
    return_embeddings: bool

    @property
    def device(self) -> str:
        """The device the worker builds the networks on."""
        return str(self.runtime.device)


def run_context_tasks(
    payload: ModelPayload, work: list[tuple[ContextInputs, ContextJob]]
) -> list[ContextOutput]:
    """Worker side: adapt and predict each context of ``work`` (one per task in practice)."""
    outputs = []
    for inputs, job in work:
        models = worker_models(payload, job.device)
        with torch.inference_mode():
            (out,) = adapt_contexts(
                models, inputs.images, [inputs.context], job.runtime, input_size=job.input_size,
                return_embeddings=job.return_embeddings,
            )  # fmt: skip
        outputs.append(out)
    return outputs


def run_embed_tasks(
    payload: ModelPayload, work: list[tuple[ContextInputs, ContextJob]]
) -> list[np.ndarray]:
    """Worker side: adapt and embed each context of ``work`` (one per task in practice)."""
    outputs = []
    for inputs, job in work:
        (model, *_) = worker_models(payload, job.device)
        # No inference_mode, as embed_plate has none (the passes run under no_grad):
        # under it the statistics pass's own outputs differ in their last bits.
        outputs += embed_contexts(
            model, inputs.images, [inputs.context], input_size=job.input_size, runtime=job.runtime
        )
    return outputs


def gpu_workers(client: Any) -> list[str]:
    """Addresses of the workers that advertise a ``GPU`` resource."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return [a for a, w in workers.items() if w.get("resources", {}).get(GPU_RESOURCE, 0) > 0]


@dataclass
class ClusterNetwork:
    """A run's networks on a cluster: scattered once, then a :data:`ContextRunner` per plate.

    Parameters
    ----------
    client
        A connected :class:`distributed.Client`.
    checkpoints
        The run's checkpoints (loaded here on the CPU; the workers rebuild them).
    device
        The run's device, resolved on each worker (``auto``: CUDA where it has one).
    """

    client: Any
    checkpoints: Sequence[Checkpoint]
    device: str = "auto"

    def __post_init__(self) -> None:
        self.gpus = gpu_workers(self.client)
        # Kept here: scattered data dies with a worker, and dask cannot recompute it.
        self._weights = model_payload(self.checkpoints)
        self.payload = self._scatter_weights()

    def _scatter_weights(self) -> Any:
        """The weights on every worker that runs the network (the GPU workers of now)."""
        targets = (gpu_workers(self.client) or self.gpus) if self.gpus else None
        return self.client.scatter(self._weights, broadcast=True, hash=False, workers=targets)

    @property
    def resources(self) -> dict[str, float] | None:
        """What each context task asks of its worker: a GPU when the cluster has any."""
        return {GPU_RESOURCE: 1} if self.gpus else None

    def runner(self, plate_id: str) -> ContextRunner:
        """A :data:`ContextRunner` that runs a plate's contexts as tasks, in context order."""

        def run(
            members: Sequence[nn.Module],
            images: np.ndarray | torch.Tensor,
            contexts: Sequence[Context],
            runtime: Runtime,
            *,
            input_size: int | None = None,
            return_embeddings: bool = False,
            progress: ProgressFn | None = None,
            cancel: CancelFn | None = None,
        ) -> list[ContextOutput]:
            del members  # the workers hold their own copy (self.payload)
            # The plate's runtime, on the cluster's device (resolved on each worker).
            job = ContextJob(replace(runtime, device=self.device), input_size, return_embeddings)
            return self._run(plate_id, np.asarray(images), contexts, job, progress, cancel)

        return run

    def embedder(self, plate_id: str) -> EmbedRunner:
        """An :class:`~phenoadapt.pipeline.runner.EmbedRunner` that embeds a plate's contexts
        as tasks, in context order (the first model of the run is the embedder)."""

        def run(
            model: nn.Module,
            images: np.ndarray,
            contexts: Sequence[Context],
            *,
            input_size: int | None = None,
            runtime: Runtime,
            progress: ProgressFn | None = None,
            cancel: CancelFn | None = None,
        ) -> list[np.ndarray]:
            del model  # the workers hold their own copy (self.payload)
            job = ContextJob(replace(runtime, device=self.device), input_size, False)
            return self._tasks(
                run_embed_tasks, [context_inputs(images, ctx)[0] for ctx in contexts], job,
                f"embed-{plate_id}",
                lambda done: progress("embed", done, len(contexts)) if progress else None,
                lambda: check_cancel(cancel, "Plate-context embedding"),
            )  # fmt: skip

        return run

    def _run(
        self,
        plate_id: str,
        images: np.ndarray,
        contexts: Sequence[Context],
        job: ContextJob,
        progress: ProgressFn | None,
        cancel: CancelFn | None,
    ) -> list[ContextOutput]:
        inputs = [context_inputs(images, ctx)[0] for ctx in contexts]
        outputs = self._tasks(
            run_context_tasks, inputs, job, f"adapt-{plate_id}",
            lambda done: progress("adapt", done, len(contexts)) if progress else None,
            lambda: check_cancel(cancel, "Plate-context adaptation"),
        )  # fmt: skip
        # Back to the plate's own positions.
        return [replace(out, context=ctx) for out, ctx in zip(outputs, contexts, strict=True)]

    def unadapted(
        self,
        plate_id: str,
        images: np.ndarray,
        rows: np.ndarray,
        *,
        input_size: int | None,
        batch_size: int,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> np.ndarray:
        """Features of ``images[rows]`` under the first model's training statistics, as a task."""
        job = ContextJob(Runtime(self.device, batch_size, max_pass_size=None), input_size, False)
        (features,) = self._tasks(
            run_unadapted_task, [np.ascontiguousarray(np.asarray(images)[rows])], job,
            f"unadapted-{plate_id}", lambda done: None, lambda: check_cancel(cancel, "Prediction"),
        )  # fmt: skip
        if progress is not None:
            progress("predict", 1, 1)
        return features

    def _tasks(
        self,
        function: Callable[..., list[Any]],
        inputs: list[Any],
        job: ContextJob,
        name: str,
        report: Callable[[int], None],
        poll: Callable[[], None],
    ) -> list[Any]:
        """``function(payload, [(input, job)])`` for each input, one task each, in order.

        ``report(done)`` follows the tasks as they complete, ``poll()`` may raise
        to cancel them.  Scattered inputs die with their worker and dask cannot
        recompute them: the inputs not gathered yet are then sent again, at
        most :data:`LOST_INPUT_RETRIES` times (and the weights, when they went too).
        """
        outputs: list[Any] = []
        for attempt in range(LOST_INPUT_RETRIES + 1):
            try:
                self._submit(function, inputs[len(outputs) :], job, name, outputs, report, poll)
                return outputs
            except _LostInputs as lost:
                if attempt == LOST_INPUT_RETRIES:
                    raise lost.error from None
                # A dead worker can take the weights with it (seen even with broadcast=True).
                if self.payload.status != "finished":
                    self.payload = self._scatter_weights()
        return outputs  # pragma: no cover - the loop returns or raises

    def _submit(
        self,
        function: Callable[..., list[Any]],
        inputs: list[Any],
        job: ContextJob,
        name: str,
        outputs: list[Any],
        report: Callable[[int], None],
        poll: Callable[[], None],
    ) -> None:
        """One try of :meth:`_tasks`: appends each task's outputs to ``outputs`` in order."""
        from distributed.client import FutureCancelledError, FuturesCancelledError

        # To the GPU workers of now (one that died was replaced by a new address).
        targets = (gpu_workers(self.client) or self.gpus) if self.gpus else None
        # Scattered, not put in the task graph: a plate's crops are megabytes.
        futures = self.client.scatter(inputs, workers=targets, hash=False)
        # A future inside a tuple is resolved by dask (not one inside a dataclass).
        work = [(f, job) for f in futures]
        finished = [len(outputs)]  # tasks complete in any order; count them

        def on_done(n: int) -> None:
            finished[0] += n
            report(finished[0])

        try:
            for _, result, error in map_ordered(
                self.client, function, self.payload, work, name=name, on_done=on_done,
                poll=poll, per_task=1, resources=self.resources,
            ):  # fmt: skip
                if error is None:
                    outputs += result
                elif isinstance(error, FutureCancelledError) or any(
                    f.status in ("lost", "cancelled") for f in futures
                ):
                    raise _LostInputs(error)
                else:
                    raise error
        except (FutureCancelledError, FuturesCancelledError) as exc:
            raise _LostInputs(exc) from None  # "lost dependencies": the inputs' worker died
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        """Release the scattered weights."""
        self.client.cancel([self.payload])


@contextlib.contextmanager
def cluster_network(
    client: Any | None, checkpoints: Sequence[Checkpoint], device: str = "auto"
) -> Iterator[ClusterNetwork | None]:
    """A :class:`ClusterNetwork` for the block (None without a client), closed however it ends.

    Cancel, Ctrl-C or an error inside the block release the scattered weights
    too, so a long-lived scheduler is left with nothing of the run.
    """
    if client is None:
        yield None
        return
    network = ClusterNetwork(client, checkpoints, device)
    try:
        yield network
    finally:
        network.close()


def run_unadapted_task(
    payload: ModelPayload, work: list[tuple[np.ndarray, ContextJob]]
) -> list[np.ndarray]:
    """Worker side: pooled features under the training statistics (the "before" view)."""
    from .runner import unadapted_features

    outputs = []
    for images, job in work:
        (model, *_) = worker_models(payload, job.device)
        with torch.inference_mode():
            outputs.append(
                unadapted_features(
                    model,
                    images,
                    np.arange(len(images)),
                    job.input_size,
                    job.runtime.batch_size,
                    None,
                    None,
                )  # fmt: skip
            )
    return outputs
