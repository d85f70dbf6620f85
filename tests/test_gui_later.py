"""Work moved to later event-loop turns: one call per turn, coalesced, never into a closed dock."""

from __future__ import annotations

from qtpy.QtCore import QObject, QTimer

from phenoadapt.gui.common import STEP_MS, LaterCall, call_later


def test_queued_calls_run_in_separate_turns_in_order(qtbot):
    """Two calls queued in one turn do not run in the same pass (the window repaints between)."""
    steps: list[str] = []
    ticks = QTimer()
    ticks.setInterval(1)
    ticks.timeout.connect(lambda: steps.append("tick"))
    ticks.start()
    call_later(lambda: steps.append("a"))
    call_later(lambda: steps.append("b"))
    call_later(lambda: steps.append("c"))
    assert "a" not in steps  # not in the caller's turn
    qtbot.waitUntil(lambda: "c" in steps, timeout=5_000)
    ticks.stop()
    a, b, c = (steps.index(name) for name in "abc")
    assert a < b < c
    assert "tick" in steps[a:b] and "tick" in steps[b:c], steps


def test_a_failing_call_does_not_stop_the_queue(qtbot, monkeypatch):
    import sys

    seen: list[str] = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append("error"))

    def fail() -> None:
        raise ValueError("boom")

    call_later(fail)
    call_later(lambda: seen.append("after"))
    qtbot.waitUntil(lambda: "after" in seen, timeout=5_000)


def test_later_call_coalesces_cancels_and_skips_a_deleted_owner(qtbot):
    calls: list[int] = []
    owner = QObject()
    later = LaterCall(owner, lambda: calls.append(1))
    later.start()
    later.start()  # several signals of one turn: one call
    assert later.isActive()
    qtbot.waitUntil(lambda: not later.isActive(), timeout=5_000)
    qtbot.wait(3 * STEP_MS)
    assert calls == [1]
    later.start()
    later.stop()
    qtbot.wait(3 * STEP_MS)
    assert calls == [1] and not later.isActive()
    later.start()
    owner.deleteLater()
    qtbot.waitUntil(lambda: not later._alive, timeout=5_000)
    qtbot.wait(3 * STEP_MS)
    assert calls == [1]
