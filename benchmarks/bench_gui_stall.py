"""How long does napari's main thread freeze while the Run dock runs a plate?

A QTimer fires every 10 ms on the main thread and records the time between
firings.  Any gap much longer than 10 ms is a stall: the viewer could not
repaint or react to the mouse for that long.  The script measures the gaps
while idle (baseline) and during a whole run of the Run dock (segmentation,
adaptation, prediction, then the results overlay), prints the figures and
writes them to ``docs/gui-responsiveness.md``.

Run under a display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_gui_stall.py

Options: ``--model`` (default: the shipped demo model), ``--wells`` and
``--sites`` of the synthetic plate, ``--method``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DOC = Path(__file__).parents[1] / "docs" / "gui-responsiveness.md"
DOC_START = "<!-- bench_gui_stall: start -->"
DOC_END = "<!-- bench_gui_stall: end -->"
TICK_MS = 10


class GapRecorder:
    """Timer on the main thread recording the gaps between its firings (ms)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []
        # The main thread's own CPU time in each gap (ms): work, where the wall gap
        # also counts time the process waited for a core on a loaded machine.
        self.cpu: list[float] = []
        # The whole process's CPU time in each gap (ms): the main thread's plus that of
        # every other thread (the job's worker, Mesa's software rasteriser threads).
        self.process_cpu: list[float] = []
        # When each gap ended (seconds from start) and what the progress bar showed then.
        self.labels: list[str] = []
        self.label = lambda: ""
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)

    def trace_stalls(self, path: Path, threshold_ms: float = 60) -> None:
        """Dump every thread's stack whenever the main thread misses ``threshold_ms``.

        ``faulthandler``'s watchdog is a C thread that needs no GIL: re-armed at
        every tick, it fires only while the main thread is stalled and shows what
        the other threads (the holder of the GIL) are doing at that moment.
        """
        import faulthandler

        self._trace = path.open("w", encoding="utf-8")
        self._trace_s = threshold_ms / 1000
        self._faulthandler = faulthandler

    def profile_turns(self, threshold_ms: float = 50) -> None:
        """From now on, keep a cProfile of the main thread for every gap over ``threshold_ms``.

        A fresh profiler runs between two ticks; a gap over the threshold keeps
        its profile (in :attr:`profiles`, with the gap's wall ms), the others are
        dropped.  cProfile sees only the thread that enabled it: the main thread.
        Its overhead lengthens the profiled gaps, so the figures of a profiled
        run are for diagnosis, not for the doc.
        """
        import cProfile

        self._profile_ms = threshold_ms
        self.profiles: list[tuple[float, str, Any]] = []
        self._profile = cProfile.Profile()
        self._profile.enable()

    def stop_profiling(self) -> None:
        """Stop :meth:`profile_turns` (the kept profiles stay in :attr:`profiles`)."""
        if getattr(self, "_profile", None) is not None:
            self._profile.disable()
            self._profile = None

    def _profile_tick(self, gap_ms: float, label: str) -> None:
        import cProfile

        self._profile.disable()
        if gap_ms > self._profile_ms:
            self.profiles.append((gap_ms, label, self._profile))
        self._profile = cProfile.Profile()
        self._profile.enable()

    def _tick(self) -> None:
        if getattr(self, "_trace", None) is not None:
            self._faulthandler.dump_traceback_later(self._trace_s, file=self._trace)
        now, cpu, process = time.perf_counter(), time.thread_time(), time.process_time()
        self.gaps.append((now - self._last) * 1000)
        self.cpu.append((cpu - self._last_cpu) * 1000)
        self.process_cpu.append((process - self._last_process) * 1000)
        self.labels.append(f"{now - self._start:.1f} s, {self.label() or '-'}")
        self._last, self._last_cpu, self._last_process = now, cpu, process
        if getattr(self, "_profile", None) is not None:
            self._profile_tick(self.gaps[-1], self.labels[-1])

    def start(self) -> None:
        self.gaps = []
        self.cpu = []
        self.process_cpu = []
        self.labels = []
        self._last = self._start = time.perf_counter()
        self._last_cpu = time.thread_time()
        self._last_process = time.process_time()
        self.timer.start()

    def stop(self) -> np.ndarray:
        self.timer.stop()
        if getattr(self, "_trace", None) is not None:
            self._faulthandler.cancel_dump_traceback_later()
        return np.asarray(self.gaps[1:])  # the first gap includes the start-up

    def worst(self, n: int = 3) -> list[tuple[float, float, float, str]]:
        """The ``n`` longest gaps: (wall ms, main-thread CPU ms, process CPU ms, when and what)."""
        rows = zip(self.gaps[1:], self.cpu[1:], self.process_cpu[1:], self.labels[1:], strict=True)
        return sorted(rows, reverse=True)[:n]


def _open_docks(viewer: Any) -> None:
    """The Plate, Plate map and Export docks, as a user with every dock open has them."""
    from phenoadapt.gui.export_dock import ExportWidget
    from phenoadapt.gui.plate_dock import PlateDock
    from phenoadapt.gui.platemap_dock import PlateMapDock

    for name, dock in (
        ("Plate", PlateDock(viewer)),
        ("Plate map", PlateMapDock(viewer)),
        ("Export", ExportWidget(viewer)),
    ):
        viewer.window.add_dock_widget(dock, name=name)


def _profile_after_result(widget: Any, recorder: GapRecorder) -> None:
    """Start profiling the main thread's turns when the run's result reaches the Run dock."""
    on_result = widget._on_run_result

    def profiled(*args: Any) -> Any:
        recorder.profile_turns()
        return on_result(*args)

    widget._on_run_result = profiled


def _time_window_events(record: list[tuple[str, float, float]], min_ms: float = 10) -> None:
    """Record (event type, wall ms, main-thread CPU ms) of each main-window event over ``min_ms``.

    cProfile sees a window's event (a layout, a repaint of every widget) as one
    C++ call; its type says which.
    """
    from napari._qt.qt_main_window import _QtMainWindow

    event = _QtMainWindow.event

    def timed(self: Any, e: Any) -> bool:
        kind = e.type()
        t, cpu = time.perf_counter(), time.thread_time()
        try:
            return event(self, e)
        finally:
            wall = (time.perf_counter() - t) * 1000
            if wall > min_ms:
                name = getattr(kind, "name", str(kind))
                record.append((name, wall, (time.thread_time() - cpu) * 1000))

    _QtMainWindow.event = timed


def _late_gaps(recorder: GapRecorder, n: int = 10, min_ms: float = 30) -> str:
    """The run's last ``n`` gaps over ``min_ms``, in order: the turns after its result."""
    rows = [
        f"  {gap:.0f} ms ({cpu:.0f} ms CPU; {label})"
        for gap, cpu, label in zip(recorder.gaps, recorder.cpu, recorder.labels, strict=True)
        if gap > min_ms
    ]
    return f"last gaps over {min_ms:.0f} ms (wall, main-thread CPU; ended at):\n" + "\n".join(
        rows[-n:]
    )


def _write_profiles(path: Path, profiles: list[tuple[float, str, Any]]) -> None:
    """The kept profiles, longest gap first: top functions by cumulative and own time."""
    import io
    import pstats

    out = io.StringIO()
    for gap, label, profile in sorted(profiles, key=lambda row: -row[0]):
        out.write(f"===== gap {gap:.0f} ms, ended at {label} =====\n")
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
    path.write_text(out.getvalue(), encoding="utf-8")
    print(f"wrote {len(profiles)} profiles to {path}")


def _timed(record: list[tuple[float, float]], function):
    """``function`` wrapped to append (wall s, main-thread CPU s) of each call to ``record``."""

    def timed(*args, **kwargs):
        t, cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            record.append((time.perf_counter() - t, time.thread_time() - cpu))

    return timed


def _total(record: list[tuple[float, float]]) -> str:
    """Wall and CPU seconds of the calls in ``record``, for the doc."""
    wall, cpu = (sum(col) for col in zip(*record, strict=True)) if record else (0.0, 0.0)
    return f"{wall:.2f} s ({cpu:.2f} s of the main thread's own CPU time)"


def summary(gaps: np.ndarray) -> dict[str, float]:
    """Longest, 99th-percentile and median gap, and time spent in gaps over 100 ms."""
    return {
        "ticks": float(len(gaps)),
        "max_ms": float(gaps.max()),
        "p99_ms": float(np.percentile(gaps, 99)),
        "median_ms": float(np.median(gaps)),
        "over_100ms": float((gaps > 100).sum()),
    }


def _row(name: str, figures: dict[str, float]) -> str:
    """One markdown table row of :func:`summary` figures."""
    return (
        f"| {name} | {figures['ticks']:.0f} | {figures['max_ms']:.0f} ms "
        f"| {figures['p99_ms']:.0f} ms | {figures['median_ms']:.1f} ms "
        f"| {figures['over_100ms']:.0f} |"
    )


def _umap_fits(viewer, recorder: GapRecorder, pump) -> dict[str, tuple[float, dict]]:
    """Stalls during the session's first UMAP fit: in the child process, then in the thread."""
    from phenoadapt.gui.umap_dock import UmapWidget

    dock = UmapWidget(viewer)
    fits = {}
    for name in ("child process (default)", "worker thread (before)"):
        recorder.label = lambda: dock.status.text()
        recorder.start()
        t0 = time.perf_counter()
        if dock.maps is None and name.startswith("child"):
            viewer.window.add_dock_widget(dock, name="UMAP")  # shown: the fit starts
        else:
            dock._child = None  # the old way: the fit runs in the worker thread
            dock.compute_button.click()
        pump(1200, until=lambda: dock.worker is None and dock.maps is not None)
        fits[name] = (time.perf_counter() - t0, summary(recorder.stop()))
    return fits


def _fit_rows(fits: dict[str, tuple[float, dict]]) -> str:
    return "\n".join(
        _row(f"first UMAP fit, {name} ({seconds:.1f} s)", figures)
        for name, (seconds, figures) in fits.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the demo model)")
    parser.add_argument("--wells", type=int, default=12, help="imaged wells of the plate")
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--method", default="cs-arm-bn")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP fits")
    parser.add_argument(
        "--docks", action="store_true",
        help="open the Plate, Plate map and Export docks too during the run (their "
        "handlers of the result run in the measured turns)",
    )  # fmt: skip
    parser.add_argument(
        "--trace-stalls", type=Path, default=None,
        help="write every thread's stack at each main-thread stall over 60 ms to this file "
        "(diagnosis only: faulthandler reads frames without the GIL and may crash the run)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, default=None,
        help="write a cProfile of the main thread for each gap over 50 ms after the run's "
        "result arrives (until the overlay is shown and 0.5 s more) to this text file "
        "(diagnosis only: the profiler's overhead lengthens the gaps)",
    )  # fmt: skip
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from phenoadapt.demo import DEMO_SEGMENTATION, demo_model_path
    from phenoadapt.gui import jobs
    from phenoadapt.gui.results import LAYER_NAME, STANDBY_NAME, get_results_overlay
    from phenoadapt.gui.run_dock import RunWidget
    from phenoadapt.gui.session import get_session
    from phenoadapt.plate.synthetic import SyntheticPlateConfig, generate_plate

    # What the Run dock does when it opens, timed alone: import the pipeline (torch).
    t_import = time.perf_counter()
    import phenoadapt.pipeline  # noqa: F401

    import_s = time.perf_counter() - t_import
    from phenoadapt.train import read_checkpoint_metadata

    model = Path(args.model) if args.model else demo_model_path()
    # Treat the plate with MoAs the model knows, so every treated well is scored.
    moas = tuple(c for c in read_checkpoint_metadata(model).classes if c != "DMSO")
    wells = tuple(f"{r}{c:02d}" for r in "AB" for c in range(1, 13))[: args.wells]
    config = SyntheticPlateConfig(
        n_wells=96, sites=args.sites, field_shape=(256, 256), wells=wells, moas=moas
    )
    with tempfile.TemporaryDirectory() as tmp:
        plate_dir = generate_plate(tmp, config, seed=3, plate_id="STALL").path
        viewer = napari.Viewer(show=True)
        app = QApplication.instance()
        session = get_session(viewer)
        plate = session.open_plate(plate_dir)
        session.show_field(plate.plate_id, plate.wells[0])
        # Time the overlay's main-thread work on its own: building its layer ahead of
        # time (once its label kernels are compiled), then filling it with a result.
        overlay = get_results_overlay(viewer)
        standby: list[tuple[float, float]] = []  # (wall s, main-thread CPU s) per call
        applied: list[tuple[float, float]] = []
        shown: list[tuple[float, float]] = []  # a later turn: the filled layer shown
        activated: list[tuple[float, float]] = []  # the turn after: made active
        overlay._stand_by = _timed(standby, overlay._stand_by)
        overlay._apply = _timed(applied, overlay._apply)
        overlay._show_standby = _timed(shown, overlay._show_standby)
        overlay._activate_shown = _timed(activated, overlay._activate_shown)
        t_open = time.perf_counter()
        widget = RunWidget(viewer)  # imports the pipeline (torch)
        open_s = time.perf_counter() - t_open
        viewer.window.add_dock_widget(widget, name="Run")
        if args.docks:
            _open_docks(viewer)
        widget.checkpoint.setText(str(model))
        widget.diameter.setValue(DEMO_SEGMENTATION.nucleus_diameter)
        widget.method.setCurrentIndex(widget.method.findData(args.method))

        def pump(seconds: float, until=None) -> None:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end and not (until and until()):
                app.processEvents()
                time.sleep(0.001)

        recorder = GapRecorder()
        if args.trace_stalls is not None:
            recorder.trace_stalls(args.trace_stalls)
        # The Run dock's own warm-ups: the overlay's standby layer (after its label
        # kernels compiled in a thread) and the window's first progress bar.
        pump(120, until=lambda: STANDBY_NAME in viewer.layers)
        standby_after_s = time.perf_counter() - t_open
        pump(1.0)
        bars: list[tuple[float, float]] = []  # the napari progress bars of the run
        jobs._napari_progress = _timed(bars, jobs._napari_progress)
        recorder.start()
        pump(3.0)
        idle = summary(recorder.stop())

        recorder.label = lambda: widget.run_controls.progress.format()
        window_events: list[tuple[str, float, float]] = []
        if args.profile is not None:
            _profile_after_result(widget, recorder)
            _time_window_events(window_events)
        recorder.start()
        t0 = time.perf_counter()
        widget.run()
        pump(1200, until=lambda: widget.runner is None)
        run_s = time.perf_counter() - t0
        pump(30, until=lambda: LAYER_NAME in viewer.layers)
        pump(0.5)
        recorder.stop_profiling()
        running = summary(recorder.stop())
        if args.profile is not None:
            print(_late_gaps(recorder))
            _write_profiles(args.profile, recorder.profiles)
            print("main-window events over 10 ms (type, wall ms, main-thread CPU ms):")
            print("\n".join(f"  {n} {w:.0f} {c:.0f}" for n, w, c in window_events))
        worst = recorder.worst(3)
        bars = list(bars)  # the run's; the UMAP fits below add their own
        result = session.result
        n_cells = 0 if result is None else len(result.cells)
        fits = _umap_fits(viewer, recorder, pump) if not args.no_umap else {}
        viewer.close()

    lines = [
        f"importing the pipeline (torch): {import_s:.1f} s; opening the Run dock: {open_s:.1f} s",
        f"overlay standby layer built {standby_after_s:.1f} s after the Run dock began to open: "
        f"{_total(standby)}; filling it with the result: {_total(applied)}; "
        f"showing it (a later turn): {_total(shown)}; making it active (the turn after): "
        f"{_total(activated)}; "
        f"the run's napari progress bar: {_total(bars)}",
        f"idle:   {idle['ticks']:.0f} ticks, longest gap {idle['max_ms']:.0f} ms, "
        f"p99 {idle['p99_ms']:.0f} ms, median {idle['median_ms']:.1f} ms",
        f"run:    {running['ticks']:.0f} ticks over {run_s:.1f} s ({n_cells} cells, "
        f"{len(wells) * args.sites} fields), longest gap {running['max_ms']:.0f} ms, "
        f"p99 {running['p99_ms']:.0f} ms, median {running['median_ms']:.1f} ms, "
        f"{running['over_100ms']:.0f} gaps over 100 ms",
    ]
    worst_text = "; ".join(
        f"{gap:.0f} ms ({cpu:.0f} ms CPU, process {process:.0f} ms; {label})"
        for gap, cpu, process, label in worst
    )
    lines.append("longest gaps (wall, main-thread CPU, process CPU; ended at): " + worst_text)
    for name, (seconds, figures) in fits.items():
        lines.append(
            f"first UMAP fit, {name}: {seconds:.1f} s, longest gap {figures['max_ms']:.0f} ms, "
            f"p99 {figures['p99_ms']:.0f} ms, {figures['over_100ms']:.0f} gaps over 100 ms"
        )
    print("\n".join(lines))
    if args.no_doc:
        return
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    try:
        load = f", load average {os.getloadavg()[0]:.1f} at the end"
    except OSError:
        load = ""
    docks_text = "; the Plate, Plate map and Export docks are open too" if args.docks else ""
    section = f"""Run dock: {args.method} on a synthetic plate ({len(wells)} wells x {args.sites}
sites of 256 x 256 pixels, {n_cells} cells) with the model `{model.name}` on the CPU, then the
results overlay outlines the field on screen{docks_text}. Opening the Run dock (torch and its
lazy imports): {open_s:.1f} s. Main-thread work of the overlay's layer: built ahead
(empty and hidden), {standby_after_s:.1f} s after the dock began to open, once napari's label
kernels were compiled in a thread: {_total(standby)}; filled with the first result:
{_total(applied)}, shown in a later event-loop turn: {_total(shown)}, and made active
in the turn after: {_total(activated)} (each step also pays the repaint that follows
it, not counted here). The run's
napari progress bar: {_total(bars)}.

| | timer ticks | longest gap | 99th percentile | median | gaps > 100 ms |
|---|---|---|---|---|---|
{_row("idle", idle)}
{_row(f"during the run ({run_s:.1f} s)", running)}
{_fit_rows(fits)}

Longest gaps of the run: wall time, the main thread's own CPU time in that gap (its
work), the whole process's CPU time in it (the main thread's, the job's worker's and
Mesa's software-rasteriser threads'; the rest of the wall time is waiting for a core,
for the GIL or for the X server), when they ended (seconds after Run was pressed) and
what the progress bar showed ("-": after the run): {worst_text}.

Machine: {machine}{load} (shared with other jobs when measured, so gaps include
time the whole process waited for a core). Xvfb display."""
    try:
        from _common import write_doc_section
    except ImportError:  # run as a module from the repository root
        from benchmarks._common import write_doc_section
    write_doc_section(DOC, section, DOC_START, DOC_END)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
