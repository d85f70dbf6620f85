"""Progress and cancellation hooks shared by long-running jobs.

Every long job in phenoadapt (segmentation, crops, adaptation, training) takes two
optional callbacks:

- ``progress(stage, done, total)``: called as work advances;
- ``cancel() -> bool``: polled between units of work; when it returns True the
  job raises :class:`~phenoadapt.errors.Cancelled` and leaves nothing half-written.

:func:`iterate_progress` turns such a callback-style job into a generator of
:class:`Progress` events that returns the job's result, which is the shape a
napari ``thread_worker`` (and a notebook loop) wants. The job runs in its own
thread so the generator can yield regularly even while a long batch computes:
a consumer that stops iterating (``close()``) is never kept waiting for the
next progress call before its cancel request is seen.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import Cancelled

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]
T = TypeVar("T")

#: Seconds between heartbeat events while the job reports nothing new.
HEARTBEAT_S = 0.2


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes
    ----------
    stage
        What is being done (``"segment"``, ``"crops"``, ``"adapt"``, ``"predict"``...).
    done, total
        Units finished and expected in this stage (``total`` 0 when unknown).
    """

    stage: str
    done: int
    total: int

    @property
    def fraction(self) -> float | None:
        """Finished fraction of the stage, or None when the total is unknown."""
        return None if self.total <= 0 else min(1.0, self.done / self.total)

    def __str__(self) -> str:
        if self.total > 0:
            return f"{self.stage}: {self.done}/{self.total}"
        return f"{self.stage}: {self.done}"


class _Done:
    """Sentinel put on the queue when the job ends."""

    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result = result
        self.error = error


def iterate_progress(
    job: Callable[..., T],
    /,
    *args: Any,
    heartbeat_s: float = HEARTBEAT_S,
    stop: threading.Event | None = None,
    **kwargs: Any,
) -> Generator[Progress, None, T]:
    """Run a callback-style job in a thread and yield its progress.

    Parameters
    ----------
    job
        Called as ``job(*args, progress=..., cancel=..., **kwargs)``; it must
        report through ``progress`` and poll ``cancel``.
    heartbeat_s
        While the job reports nothing new, the last event is yielded again every
        ``heartbeat_s`` seconds so that a consumer can stop the generator.
    stop
        The cancel flag the job polls; setting it cancels the job even when the
        generator is abandoned rather than closed (a napari worker's ``quit()``
        stops consuming without closing).  A private flag when None.
    *args, **kwargs
        Passed to ``job``.

    Yields
    ------
    Progress
        The job's reports (several fast reports may be merged into the latest).

    Returns
    -------
    The job's return value (``StopIteration.value``; ``yield from`` gives it).

    Raises
    ------
    Exception
        Whatever the job raised, re-raised in the consuming thread.

    Notes
    -----
    Closing the generator (``gen.close()``, or a napari worker's ``quit()``) sets
    the cancel flag and waits for the job to notice it and stop.
    """
    events: queue.Queue[Progress | _Done] = queue.Queue()
    stop = stop if stop is not None else threading.Event()

    def report(stage: str, done: int, total: int) -> None:
        events.put(Progress(str(stage), int(done), int(total)))

    def target() -> None:
        try:
            result = job(*args, progress=report, cancel=stop.is_set, **kwargs)
        except BaseException as exc:  # re-raised in the consumer's thread
            events.put(_Done(error=exc))
        else:
            events.put(_Done(result=result))

    thread = threading.Thread(target=target, name=f"phenoadapt-{getattr(job, '__name__', 'job')}")
    thread.daemon = True  # a job must not keep the interpreter alive after napari closes
    last = Progress("start", 0, 0)
    thread.start()
    try:
        while True:
            try:
                event = events.get(timeout=heartbeat_s)
            except queue.Empty:
                yield last
                continue
            # Merge a backlog of reports: the consumer only needs the newest one.
            backlog = [event]
            while not isinstance(backlog[-1], _Done) and not events.empty():
                backlog.append(events.get_nowait())
            reports = [e for e in backlog if isinstance(e, Progress)]
            if reports:
                last = reports[-1]
                yield last
            end = backlog[-1]
            if isinstance(end, _Done):
                if end.error is not None:
                    raise end.error
                return end.result
    finally:
        if thread.is_alive():
            stop.set()
            thread.join()


def check_cancel(cancel: CancelFn | None, what: str = "The job") -> None:
    """Raise :class:`Cancelled` when ``cancel()`` says so.

    Parameters
    ----------
    cancel
        The job's cancel callback (None: never cancelled).
    what
        Named in the exception message.
    """
    if cancel is not None and cancel():
        raise Cancelled(f"{what} was cancelled.")
