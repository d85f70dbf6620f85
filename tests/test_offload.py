"""ChildProcess: functions run in a warm child process; Cancel ends it mid-call."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from phenoadapt.errors import Cancelled, PhenoadaptError
from phenoadapt.offload import ChildProcess


def _pid_and_sum(values: np.ndarray) -> tuple[int, float]:
    return os.getpid(), float(values.sum())


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _fail(message: str) -> None:
    raise ValueError(message)


def _die() -> None:
    os._exit(3)


@pytest.fixture
def child():
    process = ChildProcess()
    yield process
    process.close()


def test_calls_run_in_one_warm_child(child) -> None:
    first_pid, total = child.call(_pid_and_sum, np.arange(10.0))
    assert total == 45.0 and first_pid != os.getpid()
    second_pid, _ = child.call(_pid_and_sum, np.ones(3))
    assert second_pid == first_pid  # kept warm: imports are paid once


def test_errors_are_raised_in_the_parent_and_the_child_survives(child) -> None:
    with pytest.raises(ValueError, match="bad input"):
        child.call(_fail, "bad input")
    assert child.call(_sleep, 0.0) == "slept"


def test_cancel_ends_the_child_mid_call(child) -> None:
    flag = threading.Event()
    threading.Timer(0.3, flag.set).start()
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        child.call(_sleep, 60.0, cancel=flag.is_set)
    assert time.perf_counter() - started < 10 and not child.alive
    assert child.call(_sleep, 0.0) == "slept"  # a fresh child for the next call


def test_a_dead_child_is_a_clear_error(child) -> None:
    with pytest.raises(PhenoadaptError, match="exit code 3"):
        child.call(_die)
    assert child.call(_sleep, 0.0) == "slept"
