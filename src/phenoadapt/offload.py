"""Run a heavy function in a child process, so the caller's process stays responsive.

A thread is not enough for some work: UMAP's numba-compiled loops hold Python's
global interpreter lock for hundreds of milliseconds at a time, so napari's
main thread stutters while a "background" thread fits a map.  A
:class:`ChildProcess` runs such functions in one spawned process of its own
(kept warm between calls, so imports and numba's compiled code are paid once)
and waits for the answer while polling a cancel flag; Cancel ends the process
at once, mid-fit, and the next call starts a fresh one.

Only phenoadapt's own functions and arrays travel between the two processes
(pickled over a pipe); nothing a user hands in is ever unpickled.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable
from typing import Any

from .errors import Cancelled, PhenoadaptError
from .progress import CancelFn

_POLL_S = 0.05  # how often the waiting thread looks at the cancel flag


def _serve(tasks: Any, answers: Any) -> None:
    """The child's loop: run each ``(fn, args, kwargs)`` and send ``(ok, value)`` back."""
    while True:
        task = tasks.get()
        if task is None:
            return
        fn, args, kwargs = task
        try:
            answers.put((True, fn(*args, **kwargs)))
        except BaseException as exc:  # sent back and raised in the parent
            answers.put((False, exc))


class ChildProcess:
    """One spawned worker process that runs functions for the parent, one at a time.

    Examples
    --------
    >>> child = ChildProcess()                                 # doctest: +SKIP
    >>> xy = child.call(umap_coordinates, features, seed=0)   # doctest: +SKIP
    >>> child.close()                                          # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")  # no forked Qt or CUDA state
        self._process: Any = None
        self._tasks: Any = None
        self._answers: Any = None
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        """Whether the worker process is running."""
        return self._process is not None and self._process.is_alive()

    def _start(self) -> None:
        self._tasks = self._context.Queue()
        self._answers = self._context.Queue()
        self._process = self._context.Process(
            target=_serve, args=(self._tasks, self._answers), daemon=True,
            name="phenoadapt-worker",
        )  # fmt: skip
        self._process.start()

    def call(
        self, fn: Callable[..., Any], *args: Any, cancel: CancelFn | None = None, **kwargs: Any
    ) -> Any:
        """``fn(*args, **kwargs)`` in the child process.

        Parameters
        ----------
        fn
            A module-level function (it is pickled by name).
        *args, **kwargs
            Its arguments (numpy arrays and plain values).
        cancel
            Polled while waiting; when it returns True the child is terminated
            and :class:`~phenoadapt.errors.Cancelled` is raised.

        Returns
        -------
        Any
            What ``fn`` returned.

        Raises
        ------
        Cancelled
            ``cancel()`` became True.
        PhenoadaptError
            The child died (killed, out of memory); a later call starts another.
        Exception
            Whatever ``fn`` raised, raised again here.
        """
        with self._lock:  # one call at a time: the answers queue is shared
            if not self.alive:
                self._start()
            self._tasks.put((fn, args, kwargs))
            while True:
                if cancel is not None and cancel():
                    self.terminate()
                    raise Cancelled("Cancelled.")
                try:
                    ok, value = self._answers.get(timeout=_POLL_S)
                except queue.Empty:
                    if not self._process.is_alive():
                        code = self._process.exitcode
                        self._process = None
                        raise PhenoadaptError(
                            f"The worker process stopped (exit code {code}), perhaps out of "
                            "memory: try again with fewer points."
                        ) from None
                    continue
                if ok:
                    return value
                raise value

    def terminate(self) -> None:
        """End the child now (mid-call too); the next :meth:`call` starts a new one."""
        if self._process is not None:
            self._process.terminate()
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout=5)
        self._process = None

    def close(self) -> None:
        """Stop the child after its current task (or at once when idle)."""
        if self.alive:
            self._tasks.put(None)
            self._process.join(timeout=5)
        self.terminate()


__all__ = ["ChildProcess"]
