"""map_ordered's bookkeeping, with a fake client whose futures finish at chosen moments."""

from __future__ import annotations

from typing import Any

import distributed
import pytest

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
        pass


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
