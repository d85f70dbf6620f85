"""map_ordered's bookkeeping (progress, Ctrl-C) and the scheduler's one-line description,
with fake clients whose futures finish at chosen moments."""

from __future__ import annotations

from typing import Any

import distributed
import pytest

from phenoadapt.scale import describe_client
from phenoadapt.scale.tasks import map_ordered


class _LateFuture:
    """Reports done from its ``ready_after``-th ``done()`` call on."""

    def __init__(self, key: str, value: Any, ready_after: int) -> None:
        self.key, self.value, self.calls, self.ready_after = key, value, 0, ready_after
        self.status = "finished"

    def done(self) -> bool:
        self.calls += 1
        return self.calls >= self.ready_after

    def result(self) -> Any:
        return self.value

    def release(self) -> None:
        pass


class _FakeClient:
    def __init__(self, ready_after: int) -> None:
        self.ready_after = ready_after

    def nthreads(self) -> dict[str, int]:
        return {"w": 1}

    def submit(self, function, *args, key: str, **_: Any) -> _LateFuture:
        if key.endswith("-shared"):
            return _LateFuture(key, args[0], 1)
        shared, chunk = args
        return _LateFuture(key, function(shared.value, chunk), self.ready_after)

    def cancel(self, futures: list[Any]) -> None:
        self.cancelled = [*getattr(self, "cancelled", []), *futures]


def _double(shared: int, chunk: list[int]) -> list[int]:
    return [shared * x for x in chunk]


@pytest.mark.parametrize("ready_after", [1, 2, 3, 4])
def test_every_chunk_is_reported_before_it_is_handed_back(monkeypatch, ready_after) -> None:
    # A future that finishes between the count and the hand-back used to be
    # yielded unreported: the last progress report went missing (CI, issue 16).
    monkeypatch.setattr(distributed, "wait", lambda *a, **k: None)
    reports: list[int] = []
    out = list(
        map_ordered(_FakeClient(ready_after), _double, 2, [1, 2, 3], per_task=1,
                    on_done=reports.append)
    )  # fmt: skip
    assert [result for _, result, _ in out] == [[2], [4], [6]]
    assert reports == [1, 1, 1]


def test_ctrl_c_cancels_the_futures_not_handed_back(monkeypatch) -> None:
    monkeypatch.setattr(distributed, "wait", lambda *a, **k: None)
    client = _FakeClient(ready_after=10**6)  # nothing ever finishes
    polls = []

    def poll() -> None:
        polls.append(1)
        if len(polls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(map_ordered(client, _double, 2, [1, 2, 3], per_task=1, poll=poll))
    # The three chunk tasks and the shared input: nothing is left running on the cluster.
    keys = sorted(f.key.rsplit("-", 1)[-1] for f in client.cancelled)
    assert keys == ["0", "1", "2", "shared"]


class _InfoClient:
    def __init__(self, services: dict[str, int]) -> None:
        self.services = services
        self.dashboard_link = "http://10.0.0.5:8787/status"

    def scheduler_info(self) -> dict[str, Any]:
        workers = {"tcp://a": {"nthreads": 1}, "tcp://b": {"nthreads": 2}}
        return {"address": "tcp://10.0.0.5:8786", "workers": workers, "services": self.services}


def test_the_dashboard_address_is_said_or_how_to_get_one() -> None:
    line = describe_client(_InfoClient({"dashboard": 8787}))
    assert line == (
        "dask scheduler tcp://10.0.0.5:8786: 2 worker(s), 3 thread(s); "
        "dashboard http://10.0.0.5:8787/status"
    )
    assert describe_client(_InfoClient({})).endswith("no dashboard (pip install bokeh on the "
                                                     "scheduler for one)")  # fmt: skip
