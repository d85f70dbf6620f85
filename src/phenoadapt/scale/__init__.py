"""Scale out: run fields (and plates) as dask.distributed tasks, from a laptop to a cluster.

- :func:`open_scheduler` turns a ``scheduler`` argument (None, ``"local"``,
  ``"local:N"``, ``"tcp://host:port"``, a :class:`distributed.Client` or a
  cluster object such as dask-jobqueue's ``SLURMCluster``) into a connected
  client for the length of a ``with`` block;
- :func:`map_ordered` submits chunks of work as tasks (``pure=False``, retried
  when a worker dies), follows them as they complete (progress, cancel,
  Ctrl-C cancel the futures) and hands the results back in submission order,
  so tables come out exactly as a single-process run writes them.

``scheduler=None`` everywhere keeps the single-machine path (a process pool
for ``segment``, one process for the crops of ``predict`` and ``embed``); see
docs/scale-out.md.  Nothing here imports Qt or napari.
"""

from .scheduler import (
    LOCAL,
    SchedulerError,
    SchedulerSpec,
    dashboard_link,
    default_workers,
    describe_client,
    open_scheduler,
)
from .tasks import MAX_ITEMS_PER_TASK, RETRIES, map_ordered

__all__ = [
    "default_workers",
    "LOCAL",
    "MAX_ITEMS_PER_TASK",
    "RETRIES",
    "SchedulerError",
    "SchedulerSpec",
    "dashboard_link",
    "describe_client",
    "map_ordered",
    "open_scheduler",
]
