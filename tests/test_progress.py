"""Callback-style jobs turned into generators of progress events."""

from __future__ import annotations

import threading
import time

import pytest

from phenoadapt.errors import Cancelled, PlateReadError
from phenoadapt.progress import Progress, check_cancel, iterate_progress


def _counting_job(n, *, progress, cancel, delay=0.0):
    for i in range(n):
        check_cancel(cancel, "Counting")
        time.sleep(delay)
        progress("count", i + 1, n)
    return n * 10


def _drain(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_events_then_result():
    events, result = _drain(iterate_progress(_counting_job, 5, delay=0.01))
    assert result == 50
    assert events[-1] == Progress("count", 5, 5)
    assert all(e.stage in {"count", "start"} for e in events)
    assert [e.done for e in events if e.stage == "count"] == sorted(
        e.done for e in events if e.stage == "count"
    )


def test_yield_from_gives_the_result():
    def outer():
        value = yield from iterate_progress(_counting_job, 3)
        return value + 1

    _, result = _drain(outer())
    assert result == 31


def test_job_errors_reach_the_consumer():
    def failing(*, progress, cancel):
        progress("read", 0, 1)
        raise PlateReadError("bad file r01c01f01p01-ch1sk1fk1fl1.tiff")

    with pytest.raises(PlateReadError, match="r01c01f01"):
        _drain(iterate_progress(failing))


def test_heartbeat_while_the_job_is_silent():
    def slow(*, progress, cancel):
        time.sleep(0.5)
        return "done"

    events, result = _drain(iterate_progress(slow, heartbeat_s=0.05))
    assert result == "done"
    assert len(events) >= 3  # the consumer got control back while nothing happened


def test_closing_the_generator_cancels_the_job_promptly():
    finished = threading.Event()
    cancelled = threading.Event()

    def long_job(*, progress, cancel):
        try:
            for i in range(10_000):
                check_cancel(cancel)
                time.sleep(0.01)
                progress("work", i, 10_000)
        except Cancelled:
            cancelled.set()
            raise
        finished.set()

    gen = iterate_progress(long_job, heartbeat_s=0.05)
    next(gen)
    next(gen)
    start = time.monotonic()
    gen.close()
    assert time.monotonic() - start < 2.0
    assert cancelled.is_set() and not finished.is_set()


def test_progress_fraction_and_text():
    assert Progress("segment", 3, 4).fraction == 0.75
    assert Progress("segment", 3, 0).fraction is None
    assert str(Progress("predict", 2, 8)) == "predict: 2/8"


def test_check_cancel():
    check_cancel(None)
    check_cancel(lambda: False)
    with pytest.raises(Cancelled, match="Training was cancelled"):
        check_cancel(lambda: True, "Training")


def test_an_outside_stop_flag_cancels_an_abandoned_generator():
    stop = threading.Event()
    cancelled = threading.Event()

    def long_job(*, progress, cancel):
        try:
            while True:
                check_cancel(cancel)
                time.sleep(0.01)
                progress("work", 0, 0)
        except Cancelled:
            cancelled.set()
            raise

    gen = iterate_progress(long_job, heartbeat_s=0.05, stop=stop)
    next(gen)  # the job runs; the consumer then walks away without closing
    stop.set()
    assert cancelled.wait(2.0)
    with pytest.raises(Cancelled):
        for _ in gen:
            pass
