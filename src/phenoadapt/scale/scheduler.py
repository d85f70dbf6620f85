"""From a ``scheduler`` argument to a connected :class:`distributed.Client`.

``distributed`` is imported only when a scheduler is asked for, so the
single-machine path (``scheduler=None``) costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

from ..errors import PhenoadaptError


def default_workers() -> int:
    """Number of cores this process may use (its CPU affinity, where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: The value that starts a LocalCluster sized to this machine (``local:N``: N workers).
LOCAL = "local"

#: What ``scheduler=`` accepts: None, ``"local"``, ``"local:N"``, an address, a
#: ``distributed.Client``, or a cluster object (anything with ``scheduler_address``).
SchedulerSpec = Any

#: Seconds to wait for a remote scheduler before saying it cannot be reached.
CONNECT_TIMEOUT_S = 20

_LOCAL_N = re.compile(r"^local(?::(\d+))?$")


class SchedulerError(PhenoadaptError, ValueError):
    """A scheduler address that is malformed or that cannot be reached."""


@contextlib.contextmanager
def open_scheduler(scheduler: SchedulerSpec) -> Iterator[Any | None]:
    """A connected client for ``scheduler`` inside the block (None for None).

    Parameters
    ----------
    scheduler
        None: no client (the caller's single-machine path).  ``"local"``: a
        ``LocalCluster`` of one single-threaded worker process per core
        (``"local:N"``: N workers), closed at the end of the block.  An address
        (``tcp://host:8786``, ``host:8786``, ``tls://...``): a client of that
        scheduler, closed at the end.  A ``distributed.Client``: used as it is
        and left open.  A cluster object (``LocalCluster``, dask-jobqueue's
        ``SLURMCluster``...): a client of it, closed at the end (the cluster
        stays up).

    Yields
    ------
    distributed.Client or None

    Raises
    ------
    SchedulerError
        A malformed address, or a scheduler that does not answer.
    """
    if scheduler is None:
        yield None
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if hasattr(scheduler, "scheduler_address"):
        with Client(scheduler) as client:
            yield client
        return
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise SchedulerError(
            f"scheduler={scheduler!r}: give 'local', an address such as tcp://host:8786, "
            "a distributed.Client or a cluster object."
        )
    text = scheduler.strip()
    if match := _LOCAL_N.match(text):
        with _local_client(int(match.group(1)) if match.group(1) else None) as client:
            yield client
        return
    with _remote_client(text) as client:
        yield client


@contextlib.contextmanager
def _local_client(n_workers: int | None) -> Iterator[Any]:
    """A LocalCluster of single-threaded worker processes, and its client."""
    from distributed import Client, LocalCluster

    if n_workers is not None and n_workers < 1:
        raise SchedulerError(f"scheduler 'local:{n_workers}': give at least 1 worker.")
    # One thread per worker: segmentation is numpy/scipy code that holds the
    # GIL in places, so processes, not threads, use the cores.
    cluster = LocalCluster(
        n_workers=n_workers or default_workers(),
        threads_per_worker=1,
        processes=True,
        silence_logs=logging.ERROR,
    )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def _remote_client(address: str) -> Iterator[Any]:
    """A client of the scheduler at ``address``; a clear message when it does not answer."""
    from distributed import Client

    if "://" not in address and not re.match(r"^[\w.\-\[\]:]+:\d+$", address):
        raise SchedulerError(
            f"Scheduler address {address!r} is not one: give tcp://HOST:PORT (the address "
            "`dask scheduler` prints, e.g. tcp://10.0.0.5:8786), or 'local' for a cluster "
            "on this machine."
        )
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(
            f"Could not reach the dask scheduler at {address} within {CONNECT_TIMEOUT_S} s "
            f"({exc}). Start one with `dask scheduler` (and workers with `dask worker "
            f"{address}`), check the host and port, or use 'local'."
        ) from None
    with client:
        yield client


def dashboard_link(client: Any) -> str | None:
    """The dask dashboard address of ``client``'s scheduler (None when it serves none)."""
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:  # noqa: BLE001  (a link is a courtesy; never fail a run for it)
        return None
    return client.dashboard_link if "dashboard" in services else None


def describe_client(client: Any) -> str:
    """One line naming the scheduler, its workers and threads, and the dashboard."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(int(w.get("nthreads", 1)) for w in workers.values())
    link = dashboard_link(client)
    # distributed serves its dashboard only where bokeh is installed.
    where = (
        f"dashboard {link}" if link else "no dashboard (pip install bokeh on the scheduler for one)"
    )
    return (
        f"dask scheduler {info.get('address', '?')}: {len(workers)} worker(s), "
        f"{threads} thread(s); {where}"
    )
