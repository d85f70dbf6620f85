"""Chunks of work as dask tasks, followed as they complete, handed back in order."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")

#: Times a task that raised is run again.  A task lost with a dying worker is
#: rescheduled by the scheduler itself (``distributed.scheduler.allowed-failures``).
RETRIES = 2

#: Most items (fields) per task: enough to amortise the per-task overhead,
#: few enough that progress moves and a lost worker costs little.
MAX_ITEMS_PER_TASK = 8

#: Seconds between polls of the cancel hook while tasks run.
POLL_S = 0.25


def chunk_items(
    items: Sequence[Item], threads: int, per_task: int | None = None
) -> list[list[Item]]:
    """Split ``items`` into consecutive chunks: about four per worker thread, at most 8 items.

    ``per_task`` fixes the chunk size instead (1: a task per item).
    """
    size = per_task or max(1, min(MAX_ITEMS_PER_TASK, math.ceil(len(items) / max(1, 4 * threads))))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _identity(value: Any) -> Any:
    return value


def map_ordered(
    client: Any,
    function: Callable[[Any, list[Item]], Any],
    shared: Any,
    items: Sequence[Item],
    *,
    name: str = "phenoadapt",
    on_done: Callable[[int], None] | None = None,
    poll: Callable[[], None] | None = None,
    per_task: int | None = None,
    resources: dict[str, float] | None = None,
) -> Iterator[tuple[list[Item], Any, BaseException | None]]:
    """Run ``function(shared, chunk)`` on the cluster for chunks of ``items``, in order.

    Parameters
    ----------
    client
        A connected :class:`distributed.Client`.
    function
        A module-level function (workers import it by name).
    shared
        What every chunk needs (the plate, parameters...): sent to the cluster
        once, as a task of its own, so a worker that dies with it loses
        nothing (the scheduler recomputes it).  A :class:`distributed.Future`
        (e.g. a model scattered to every worker) is used as it is, and left
        to its owner.
    items
        The work (e.g. ``(well, site)`` fields).
    name
        Prefix of the task keys shown on the dashboard.
    on_done
        Called with the number of items of each chunk as it completes (in any order).
    poll
        Called while tasks run; whatever it raises (e.g.
        :class:`~phenoadapt.errors.Cancelled`) cancels the futures and propagates,
        as does a KeyboardInterrupt.
    per_task
        Items per task (None: about four chunks per worker thread, at most
        :data:`MAX_ITEMS_PER_TASK`).
    resources
        Worker resources each task needs (e.g. ``{"GPU": 1}``: only workers
        started with ``--resources GPU=1`` run it, one task per GPU at a time).

    Yields
    ------
    (chunk, result, error)
        In the order of ``items``: ``error`` is None, or the exception of a task
        that failed even after :data:`RETRIES` retries (``result`` is then None).
    """
    from distributed import Future, wait

    if not items:
        return
    token = f"{name}-{uuid.uuid4().hex[:8]}"
    threads = max(1, sum(client.nthreads().values()))
    chunks = chunk_items(items, threads, per_task)
    owned = not isinstance(shared, Future)
    shared_future = (
        client.submit(_identity, shared, pure=False, key=f"{token}-shared") if owned else shared
    )
    futures = [
        client.submit(function, shared_future, chunk, pure=False, retries=RETRIES,
                      key=f"{token}-{i}", resources=resources)
        for i, chunk in enumerate(chunks)
    ]  # fmt: skip
    sizes = {f.key: len(c) for f, c in zip(futures, chunks, strict=True)}
    running = set(futures)
    next_out = 0
    try:
        while next_out < len(futures):
            if poll is not None:
                poll()
            finished = {f for f in running if f.done()}
            if not finished:
                try:
                    wait(list(running), timeout=POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    pass
                finished = {f for f in running if f.done()}
            for future in finished:
                running.discard(future)
                if on_done is not None:
                    on_done(sizes[future.key])
            # Only futures already counted above: one that finished since would
            # be yielded unreported, and the last report would go missing.
            while next_out < len(futures) and futures[next_out] not in running:
                yield chunks[next_out], *_outcome(futures[next_out])
                futures[next_out].release()
                next_out += 1
    except BaseException:  # Cancelled, KeyboardInterrupt, a consumer that stopped early
        client.cancel([*futures[next_out:], *([shared_future] if owned else [])])
        raise
    finally:
        if owned:
            shared_future.release()


def _outcome(future: Any) -> tuple[Any, BaseException | None]:
    """(result, None), or (None, the exception) for a task that failed for good."""
    if future.status == "error":
        return None, future.exception()
    if future.status == "cancelled":
        from distributed.client import FutureCancelledError

        return None, FutureCancelledError(future.key, "cancelled on the cluster")
    return future.result(), None
