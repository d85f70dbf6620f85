"""The one job runner of every dock: the lock across docks, napari progress, cancel, errors.

Run under a display (``xvfb-run -a python -m pytest``).
"""

from __future__ import annotations

import threading
import time

import pytest
from gui_run_helpers import tiny_plate, tiny_result

from phenoadapt.errors import PhenoadaptError
from phenoadapt.gui.jobs import (
    JobControls,
    JobKind,
    JobRunner,
    JobStyle,
    warm_up_activity_dock,
)
from phenoadapt.gui.session import get_session
from phenoadapt.progress import check_cancel

pytestmark = pytest.mark.gui
__all__ = ["tiny_plate", "tiny_result"]  # fixtures used below
WAIT_MS = 20_000


def slow_job(release: threading.Event, *, progress, cancel) -> str:
    """A callback-style job: reports 1/3, then waits for ``release`` or Cancel."""
    progress("work", 1, 3)
    while not release.wait(0.02):
        check_cancel(cancel, "The slow job")
    progress("work", 3, 3)
    return "done"


def failing_job(*, progress, cancel) -> None:
    raise PhenoadaptError(
        "Plate P1 has no negative controls: mark them, or allow the fallback "
        "(--allow-fallback; RunConfig(allow_fallback=True))."
    )


def test_napari_progress_is_shown_updated_and_closed(make_napari_viewer, qtbot) -> None:
    from napari.utils import progress

    session = get_session(make_napari_viewer())
    release = threading.Event()
    ends: list[str] = []
    runner = JobRunner(session, "Slow", slow_job, (release,), on_end=ends.append).start()
    bar = runner.progress_bar
    # Listed where napari's activity dock looks, with the job's stage and counts.
    assert bar in progress._all_instances and session.job == "Slow"
    qtbot.waitUntil(lambda: bar.total == 3 and bar.n == 1, timeout=WAIT_MS)
    assert "Slow: work" in bar.desc
    release.set()
    qtbot.waitUntil(lambda: ends == ["done"], timeout=WAIT_MS)
    assert bar not in progress._all_instances and runner.progress_bar is None
    assert session.job is None and not runner.running


def test_first_job_bar_does_not_relay_the_window_out(make_napari_viewer, qtbot) -> None:
    """After the warm-up, a job's napari bar leaves the window's layout (and canvas) alone.

    The first bar of a window made its status bar taller, which laid the whole
    window out and redrew the canvas when Run was pressed (a 0.1-0.4 s freeze).
    """
    from napari.utils import progress

    viewer = make_napari_viewer(show=True)
    status_bar = viewer.window._qt_window.statusBar()
    canvas = viewer.window._qt_viewer.canvas.native
    warm_up_activity_dock(viewer)
    warm_up_activity_dock(viewer)  # once per viewer: a second call shows nothing
    qtbot.wait(100)
    assert not [bar for bar in progress._all_instances if "phenoadapt" in str(bar.desc)]
    before = (status_bar.height(), canvas.size())
    release = threading.Event()
    runner = JobRunner(get_session(viewer), "Slow", slow_job, (release,)).start()
    qtbot.waitUntil(lambda: runner.progress_bar.n == 1, timeout=WAIT_MS)
    assert (status_bar.height(), canvas.size()) == before
    release.set()
    qtbot.waitUntil(lambda: not runner.running, timeout=WAIT_MS)


def test_cancel_releases_the_slot_and_drops_the_result(make_napari_viewer, qtbot) -> None:
    session = get_session(make_napari_viewer())
    results: list[str] = []
    ends: list[str] = []
    runner = JobRunner(
        session, "Slow", slow_job, (threading.Event(),), on_result=results.append,
        on_end=ends.append,
    ).start()  # fmt: skip
    qtbot.waitUntil(lambda: runner.progress_bar.n == 1, timeout=WAIT_MS)
    t0 = time.perf_counter()
    runner.cancel()
    qtbot.waitUntil(lambda: ends == ["cancelled"], timeout=WAIT_MS)
    assert time.perf_counter() - t0 < 2 and results == [] and session.job is None


def test_one_job_at_a_time_across_docks(make_napari_viewer, qtbot) -> None:
    """A job of one dock refuses another dock's job, and says so in that dock."""
    from phenoadapt.gui.segmentation import SegmentationWidget
    from phenoadapt.gui.umap_dock import UmapWidget

    viewer = make_napari_viewer()
    session = get_session(viewer)
    segment = SegmentationWidget(viewer)
    umap = UmapWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment")
    viewer.window.add_dock_widget(umap, name="UMAP")
    release = threading.Event()
    ends: list[str] = []
    # Nobody keeps the runner: it must live until its job ended all the same.
    JobRunner(session, "Run", slow_job, (release,), on_end=ends.append).start()
    # Segment is refused, in its own dock, with the GUI's wording; nothing started.
    segment.run()
    assert segment.worker is None and segment.controls.errors.shown
    assert "'Run' is still running" in segment.controls.errors.text.text()
    assert segment.run_button.isEnabled()
    # The UMAP waits for the slot rather than failing.
    umap.compute()
    assert umap.worker is None and "Waiting for 'Run'" in umap.status.text()
    # A background job (the overlay's outlines) is never refused.
    background = JobRunner(
        session, "Outline", lambda: "outlined", kind=JobKind.BACKGROUND, style=JobStyle.FUNCTION,
        on_end=ends.append,
    ).start()  # fmt: skip
    assert background.progress_bar is None  # too short for the activity dock
    qtbot.waitUntil(lambda: "done" in ends, timeout=WAIT_MS)
    assert session.job == "Run" and not background.running
    release.set()
    qtbot.waitUntil(lambda: ends == ["done", "done"] and session.job is None, timeout=WAIT_MS)


def test_the_error_stays_in_the_dock_worded_for_the_gui(make_napari_viewer, qtbot) -> None:
    session = get_session(make_napari_viewer())
    controls = JobControls("Go")
    controls.show()
    qtbot.addWidget(controls)
    pressed: list[bool] = []

    def ended(outcome: str) -> None:
        controls.ended(runner, "Failed:", ("Allow the fallback", lambda: pressed.append(True)))

    runner = JobRunner(session, "Go", failing_job, on_end=ended)
    controls.busy("Going...")
    runner.start()
    qtbot.waitUntil(lambda: controls.errors.shown, timeout=WAIT_MS)
    text = controls.errors.text.text()
    assert "no negative controls" in text and "--allow-fallback" not in text
    assert "RunConfig" not in text and runner.outcome == "failed"
    assert controls.errors.action.isVisible() and controls.start_button.isEnabled()
    # It stays until dismissed or acted upon; the button does what the flag would.
    qtbot.wait(300)
    assert controls.errors.shown
    controls.errors.action.click()
    assert pressed == [True] and not controls.errors.shown
    controls.show_error("Another error")
    controls.errors.dismiss.click()
    assert not controls.errors.shown


def test_an_event_job_stops_at_its_next_event(make_napari_viewer, qtbot) -> None:
    session = get_session(make_napari_viewer())
    seen: list[int] = []
    ends: list[str] = []
    closed = threading.Event()

    def events():
        try:
            for i in range(10_000):
                time.sleep(0.01)
                yield i
        finally:
            closed.set()

    runner = JobRunner(
        session, "Events", events, style=JobStyle.EVENTS, on_event=seen.append, on_end=ends.append
    ).start()
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=WAIT_MS)
    runner.cancel()
    qtbot.waitUntil(lambda: ends == ["cancelled"], timeout=WAIT_MS)
    assert len(seen) < 10_000 and session.job is None


@pytest.mark.parametrize("style", [JobStyle.CALLBACKS, JobStyle.EVENTS, JobStyle.FUNCTION])
def test_a_runtime_error_is_a_failure_not_a_result(make_napari_viewer, qtbot, style) -> None:
    """superqt's generator worker swallows RuntimeError (torch's out-of-memory, say)."""
    session = get_session(make_napari_viewer())
    results: list = []
    ends: list[str] = []

    def broken(*, progress=None, cancel=None):
        raise RuntimeError("CUDA out of memory")

    def broken_events():
        yield 1
        raise RuntimeError("CUDA out of memory")

    job = broken_events if style is JobStyle.EVENTS else broken
    runner = JobRunner(
        session, "Broken", job, style=style, on_result=results.append, on_end=ends.append
    ).start()
    qtbot.waitUntil(lambda: ends == ["failed"], timeout=WAIT_MS)
    assert results == [] and isinstance(runner.error, RuntimeError)
    assert "out of memory" in str(runner.error) and session.job is None


@pytest.mark.skipif(
    not __import__("os").environ.get("PHENOADAPT_SCREENSHOTS"), reason="docs screenshots only"
)
def test_screenshots_of_the_job_docks(make_napari_viewer, qtbot, tiny_result, tmp_path) -> None:
    """docs/images/gui_jobs_1366.png: a job in the activity dock, refused and kept errors."""
    from pathlib import Path

    from skimage.io import imsave

    from phenoadapt.gui.export_dock import ExportWidget
    from phenoadapt.gui.run_dock import RunWidget
    from phenoadapt.gui.segmentation import SegmentationWidget

    docs = Path(__file__).parents[1] / "docs" / "images"
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    session = get_session(viewer)
    run = RunWidget(viewer)
    segment = SegmentationWidget(viewer)
    export = ExportWidget(viewer)
    viewer.window.add_dock_widget(run, name="Run")
    viewer.window.add_dock_widget(export, name="Export", tabify=True)
    viewer.window.add_dock_widget(segment, name="Segment", tabify=True)
    session.set_result(tiny_result)
    export.folder.setText(str(tmp_path))
    export.export()
    export.export()  # the files exist now: the Overwrite button
    release = threading.Event()
    JobRunner(session, "Run", slow_job, (release,)).start()
    segment.run()  # refused: the Run holds the slot
    window = viewer.window._qt_window
    window._activity_dialog.show()  # napari's activity dock, as its button shows it
    window._activity_dialog.move_to_bottom_right()
    qtbot.wait(800)
    imsave(docs / "gui_jobs_1366.png", viewer.screenshot(canvas_only=False, flash=False))
    docks = viewer.window._dock_widgets
    docks["Export"].raise_()  # its tab in front, at the dock's size
    qtbot.wait(200)
    export.grab().save(str(docs / "gui_export_error.png"))
    release.set()
    qtbot.waitUntil(lambda: session.job is None, timeout=WAIT_MS)
    for section in run.findChildren(__import__("superqt").QCollapsible):
        section.expand(animate=False)
    docks["Run"].raise_()
    qtbot.wait(300)
    run.grab().save(str(docs / "gui_run_dock.png"))
