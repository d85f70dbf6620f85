"""Segment and measure every field of a plate, in parallel, with progress and Cancel.

Fields are independent, so they are spread over a pool of processes (one per
core by default), or, given a ``scheduler``, over the workers of a
dask.distributed cluster (:mod:`phenoadapt.scale`).  Each worker receives the
plate description once and reads its fields itself: the parent never holds more
than the per-cell rows.  A field that fails (blank, saturated, unreadable...) is
recorded with a message naming it, and the rest of the plate is still processed.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import Cancelled, CellsError, PhenoadaptError
from ..plate.model import Plate
from ..progress import CancelFn, ProgressFn
from ..scale import SchedulerSpec, default_workers
from .backends import check_backend
from .illumination import Illumination, apply_illumination, compute_illumination
from .measure import measure_cells
from .params import MeasureParams, SegmentationParams
from .profiles import aggregate_profiles
from .segment import Segmentation, check_field, segment_field
from .table import cell_table, empty_cell_table

STAGE = "segment"


@dataclass(frozen=True)
class FieldFailure:
    """A field that could not be processed, and why."""

    well: str
    site: int
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class PlateCells:
    """Result of :func:`segment_plate`.

    Attributes
    ----------
    cells
        The per-cell table of all processed fields, in plate order.
    failures
        Fields that failed, with the reason.
    n_fields
        Number of fields attempted.
    """

    cells: pd.DataFrame
    failures: list[FieldFailure] = field(default_factory=list)
    n_fields: int = 0

    def per_site(self, statistic: str = "median") -> pd.DataFrame:
        """Site-level morphology profiles (see :func:`aggregate_profiles`)."""
        return aggregate_profiles(self.cells, "site", statistic)

    def per_well(self, statistic: str = "median") -> pd.DataFrame:
        """Well-level morphology profiles (see :func:`aggregate_profiles`)."""
        return aggregate_profiles(self.cells, "well", statistic)


def field_name(plate: Plate, well: str, site: int) -> str:
    """How messages name a field: ``plate BR00143976, well C03, site 3``."""
    return f"plate {plate.plate_id}, well {well}, site {site}"


def process_field(
    plate: Plate,
    well: str,
    site: int,
    segmentation: SegmentationParams | None = None,
    measure: MeasureParams | None = None,
    platemap: Any | None = None,
    illumination: Illumination | None = None,
) -> tuple[Segmentation, pd.DataFrame]:
    """Read, segment and measure one field.

    Parameters
    ----------
    plate
        The plate.
    well, site
        The field.
    segmentation, measure
        Parameters; defaults when None.
    platemap
        Optional plate map for the role, treatment and MoA columns.
    illumination
        The plate's illumination functions, used when
        ``segmentation.illumination_correction`` is on; computed (or loaded
        from the plate's cache) when None.

    Returns
    -------
    (Segmentation, pandas.DataFrame)
        The labels and the field's per-cell table (of the corrected field when
        illumination correction is on).

    Raises
    ------
    PhenoadaptError
        A message naming the field when it cannot be read, segmented or measured.
    """
    segmentation = segmentation or SegmentationParams()
    name = field_name(plate, well, site)
    image = plate.read_field(well, site)
    if segmentation.illumination_correction:
        # Blank and saturated channels are judged on the raw counts: corrected
        # values are float and no longer sit at the camera's maximum.
        check_field(image, plate.channels, segmentation, field_name=name)
        illumination = illumination or compute_illumination(
            plate, statistic=segmentation.illumination_statistic
        )
        image = apply_illumination(image, illumination.functions_for(plate.channels))
    seg = segment_field(image, plate.channels, segmentation, field_name=name)
    values = measure_cells(image, plate.channels, seg, measure, field_name=name)
    return seg, cell_table(values, plate.plate_id, well, site, platemap)


def segment_plate(
    plate: Plate,
    wells: Sequence[str] | None = None,
    segmentation: SegmentationParams | None = None,
    measure: MeasureParams | None = None,
    platemap: Any | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    illumination: Illumination | None = None,
    scheduler: SchedulerSpec = None,
) -> PlateCells:
    """Segment and measure every field of a plate (or of some wells).

    Parameters
    ----------
    plate
        The plate.
    wells
        Restrict to these wells; all imaged wells when None.
    segmentation, measure
        Parameters; defaults when None.
    platemap
        Optional plate map for the role, treatment and MoA columns.
    workers
        Number of processes; 1 runs in this process.  Default: every core.
    progress
        Called as ``progress("segment", done, total)`` after each field (and
        ``progress("illumination", done, total)`` while the illumination
        functions are computed).
    cancel
        Polled between fields; when it returns True, pending fields are
        dropped and :class:`~phenoadapt.errors.Cancelled` is raised.
    illumination
        Illumination functions to use when
        ``segmentation.illumination_correction`` is on; computed once for the
        whole plate (or loaded from its cache) when None.
    scheduler
        None (default): the process pool of ``workers`` described above.
        Otherwise fields run as dask tasks on that scheduler (``"local"``, an
        address such as ``"tcp://host:8786"``, a ``distributed.Client``... see
        :func:`phenoadapt.scale.open_scheduler`; ``workers`` is then ignored):
        retried when a worker dies, gathered in plate order, so the table is
        the same as without a scheduler.

    Returns
    -------
    PlateCells
        The per-cell table (plate order) and the failed fields.
    """
    segmentation = segmentation or SegmentationParams()
    measure = measure or MeasureParams()
    check_backend(segmentation)  # fail once, not once per field
    if wells is not None:
        unknown = [w for w in wells if w not in plate.sites]
        if unknown:
            raise CellsError(
                f"Wells {', '.join(unknown)} were not imaged on plate {plate.plate_id}; "
                f"imaged wells: {_listing(plate.wells)}."
            )
    fields = list(plate.fields(wells))
    workers = max(1, min(workers or default_workers(), len(fields) or 1))
    report = progress or (lambda stage, done, total: None)
    if segmentation.illumination_correction and illumination is None:
        # Once in the parent, before the pool: every worker gets the same functions.
        illumination = compute_illumination(
            plate,
            statistic=segmentation.illumination_statistic,
            progress=report,
            cancel=cancel,
        )
    args = (plate, segmentation, measure, platemap, illumination)
    report(STAGE, 0, len(fields))
    if scheduler is not None:
        from ..scale import open_scheduler

        with open_scheduler(scheduler) as client:
            outcomes = _run_dask(fields, args, client, report, cancel, plate)
    elif workers == 1:
        outcomes = _run_serial(fields, args, report, cancel, plate)
    else:
        outcomes = _run_pool(fields, args, workers, report, cancel, plate)
    tables, failures = [], []
    for (well, site), (ok, value) in zip(fields, outcomes, strict=True):
        if ok:
            tables.append(value)
        else:
            failures.append(FieldFailure(well, site, value))
    cells = pd.concat(tables, ignore_index=True) if tables else empty_cell_table()
    return PlateCells(cells=cells, failures=failures, n_fields=len(fields))


def _listing(items: list[str], shown: int = 12) -> str:
    """``A01, A02, ...`` with at most ``shown`` items."""
    return ", ".join(items[:shown]) + (", ..." if len(items) > shown else "")


# -- execution ------------------------------------------------------------------
Outcome = tuple[bool, Any]  # (True, table) or (False, message)

_WORKER_ARGS: tuple | None = None  # set once per worker process by _init_worker


def _init_worker(args: tuple) -> None:
    global _WORKER_ARGS
    _WORKER_ARGS = args


def _field_outcome(args: tuple, well: str, site: int) -> Outcome:
    """Process one field; turn any failure into a message naming the field."""
    plate, segmentation, measure, platemap, illumination = args
    try:
        result = process_field(plate, well, site, segmentation, measure, platemap, illumination)
        return True, result[1]
    except PhenoadaptError as exc:
        return False, str(exc)
    except Exception as exc:  # a library error on odd pixels must not stop the plate
        return False, (
            f"{field_name(plate, well, site)} failed: {type(exc).__name__}: {exc}. "
            "The field was skipped."
        )


def _worker_task(well: str, site: int) -> Outcome:
    assert _WORKER_ARGS is not None, "worker used before initialisation"
    return _field_outcome(_WORKER_ARGS, well, site)


def _cancelled(cancel: CancelFn | None, done: int, total: int, plate: Plate) -> Cancelled | None:
    if cancel is not None and cancel():
        return Cancelled(
            f"Segmentation of plate {plate.plate_id} cancelled after {done} of {total} fields."
        )
    return None


def _run_serial(
    fields: list[tuple[str, int]],
    args: tuple,
    report: ProgressFn,
    cancel: CancelFn | None,
    plate: Plate,
) -> list[Outcome]:
    outcomes = []
    for done, (well, site) in enumerate(fields):
        if (stop := _cancelled(cancel, done, len(fields), plate)) is not None:
            raise stop
        outcomes.append(_field_outcome(args, well, site))
        report(STAGE, done + 1, len(fields))
    return outcomes


def _pool_context() -> multiprocessing.context.BaseContext:
    # 'forkserver' (or 'spawn') rather than 'fork': the GUI calls this from a
    # thread, and forking a multi-threaded process can deadlock.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Workers forked from a server that has already imported this module start faster.
    context.set_forkserver_preload([__name__])
    return context


def _run_pool(
    fields: list[tuple[str, int]],
    args: tuple,
    workers: int,
    report: ProgressFn,
    cancel: CancelFn | None,
    plate: Plate,
) -> list[Outcome]:
    """Run fields in a process pool, keeping only a few in flight so Cancel acts fast."""
    outcomes: list[Outcome | None] = [None] * len(fields)
    pending: dict[Future, int] = {}
    next_index = done = 0
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(), initializer=_init_worker, initargs=(args,)
    ) as pool:
        while done < len(fields):
            if (stop := _cancelled(cancel, done, len(fields), plate)) is not None:
                for future in pending:
                    future.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
                raise stop
            while next_index < len(fields) and len(pending) < 2 * workers:
                well, site = fields[next_index]
                pending[pool.submit(_worker_task, well, site)] = next_index
                next_index += 1
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                outcomes[index] = _future_outcome(future, plate, *fields[index])
                done += 1
                report(STAGE, done, len(fields))
    return [o for o in outcomes if o is not None]


def _future_outcome(future: Future, plate: Plate, well: str, site: int) -> Outcome:
    """The outcome of a finished task; a crashed worker becomes a failed field."""
    try:
        return future.result()
    except Exception as exc:  # BrokenProcessPool, unpicklable results...
        return False, f"{field_name(plate, well, site)} failed in a worker process: {exc}"


def _chunk_outcomes(args: tuple, chunk: list[tuple[str, int]]) -> list[Outcome]:
    """A dask task: the outcomes of some fields (module level, so workers import it)."""
    return [_field_outcome(args, well, site) for well, site in chunk]


def _run_dask(
    fields: list[tuple[str, int]],
    args: tuple,
    client: Any,
    report: ProgressFn,
    cancel: CancelFn | None,
    plate: Plate,
) -> list[Outcome]:
    """Run fields as dask tasks; outcomes in plate order, progress as tasks complete."""
    from ..scale import map_ordered

    done = 0

    def finished(n: int) -> None:
        nonlocal done
        done += n
        report(STAGE, done, len(fields))

    def poll() -> None:
        if (stop := _cancelled(cancel, done, len(fields), plate)) is not None:
            raise stop

    outcomes: list[Outcome] = []
    tasks = map_ordered(
        client, _chunk_outcomes, args, fields, name=f"segment-{plate.plate_id}",
        on_done=finished, poll=poll,
    )  # fmt: skip
    for chunk, values, error in tasks:
        if error is None:
            outcomes += values
        else:  # lost even after the retries: the fields fail, the plate goes on
            outcomes += [
                (False, f"{field_name(plate, w, s)} failed on the dask cluster: "
                        f"{type(error).__name__}: {error}")
                for w, s in chunk
            ]  # fmt: skip
    return outcomes
