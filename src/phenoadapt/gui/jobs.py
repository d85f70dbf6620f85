"""One job runner for every dock: the one-job lock, napari progress, cancel and errors.

Every long job of the phenoadapt docks (Run, Train, Segment, the UMAP fit and
the results overlay's outlines) goes through :class:`JobRunner`:

- it runs in a napari ``thread_worker``; layers and widgets only change in the
  worker's signal handlers, on the main thread;
- an ``EXCLUSIVE`` job holds the session's single job slot
  (:meth:`~.state.SessionState.begin_job`): a second exclusive job, from any
  dock, is refused with a message naming the one running.  Run, Train,
  Segment and the UMAP fit are exclusive (each can keep the CPU or GPU busy for
  minutes, and two at once froze the viewer for seconds).  The overlay's
  outlines of the field on screen are a ``BACKGROUND`` job: a second or two of
  work the user asked for by moving to a field, so it never waits for the slot
  and never blocks another job (it runs beside a Run).  The overlay runs one at
  a time and newer fields supersede older requests: while one field is
  outlined, only the newest field on screen waits, fields passed over are never
  outlined, and a result that arrives for a field no longer on screen is only
  cached;
- an exclusive job shows a :class:`napari.utils.progress` bar, so it is listed
  in napari's activity dock (bottom right) with its stage, and the bar is
  closed when the job ends however it ends.  A background job has none: it
  lasts about a second.  The first bar a window shows makes its status bar
  1 px taller (napari's activity indicator), so the whole window is laid out
  again and the canvas redrawn: 0.1-0.4 s when Run was pressed (measured by
  ``benchmarks/bench_gui_stall.py``).  :func:`warm_up_activity_dock` shows
  and closes one bar when a job dock opens, after which a bar costs a few
  milliseconds;
- :meth:`JobRunner.cancel` stops the job: at its next batch for a
  callback-style job, at its next event for a generator;
- the error that ended a job is kept on the runner; :class:`JobControls` (the
  dock's Start/Cancel buttons and bar) shows it in an :class:`ErrorPanel` that
  stays until dismissed, worded for the GUI (:func:`~.common.gui_wording`),
  with a button where the command line has a flag.
"""

from __future__ import annotations

import enum
import functools
import threading
import weakref
from collections.abc import Callable, Generator, Iterator
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..errors import Cancelled, PhenoadaptError
from ..progress import Progress, iterate_progress
from .common import gui_wording, notify
from .state import SessionState

#: How often a cancelled job is checked for having stopped (milliseconds).
_POLL_MS = 50

#: Runners whose job has not ended: Qt keeps no strong reference to a runner's
#: handlers, so a runner nobody else holds would vanish with its callbacks.
_LIVE: set[JobRunner] = set()

#: A fix offered next to an error: (button text, what the button does).
Fix = tuple[str, Callable[[], None]]


class JobKind(enum.Enum):
    """Whether a job holds the session's one-job slot."""

    EXCLUSIVE = "exclusive"  # Run, Train, Segment, UMAP: one at a time, across docks
    BACKGROUND = "background"  # the overlay's outlines: never blocks, superseded instead


class JobStyle(enum.Enum):
    """How a job reports: the shape of the callable handed to :class:`JobRunner`."""

    CALLBACKS = "callbacks"  # job(*args, progress=..., cancel=..., **kwargs) -> result
    EVENTS = "events"  # a generator of events, returning the result
    FUNCTION = "function"  # a plain function: no progress, cannot stop mid-way


class _JobFailed(Exception):
    """Carries a job's exception out of the worker.

    superqt's generator worker takes a ``RuntimeError`` for "the worker was
    deleted" and swallows it, returning None as if the job had succeeded; torch
    reports out-of-memory and many failures as ``RuntimeError``.  Wrapping every
    exception keeps each failure a failure; :meth:`JobRunner._on_errored`
    unwraps it.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _failures_wrapped(body: Callable[..., Generator]) -> Callable[..., Generator]:
    """A worker body whose exceptions reach the worker's ``errored`` signal intact."""

    @functools.wraps(body)
    def wrapped(*args: Any) -> Generator:
        try:
            return (yield from body(*args))
        except (GeneratorExit, StopIteration):
            raise
        except Exception as exc:
            raise _JobFailed(exc) from exc

    return wrapped


def _callback_events(
    job: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    stop: threading.Event,
    launched: threading.Event,
    ended: threading.Event,
) -> Generator[Progress, None, Any]:
    """Worker body of a callback-style job: its Progress events, returning its result.

    ``stop`` is the job's cancel flag, set by the GUI directly: a napari worker's
    ``quit()`` stops consuming the generator without closing it, so closing
    alone would never reach the job.  ``ended`` is set once the job's own thread
    has finished, which is when the job slot may be released.
    """
    launched.set()

    def guarded(*a: Any, **k: Any) -> Any:
        try:
            return job(*a, **k)
        finally:
            ended.set()

    return (yield from iterate_progress(guarded, *args, stop=stop, **kwargs))


def _generator_events(
    job: Callable[..., Iterator[Any]], args: tuple, kwargs: dict, stop: threading.Event
) -> Generator[Any, None, Any]:
    """Worker body of an event generator: stops at the first event after Cancel."""
    events = job(*args, **kwargs)
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as end:
                return end.value
            if stop.is_set():
                return None
            yield event
    finally:
        events.close()  # a generator stopped mid-way releases what it holds now


def _function_events(
    job: Callable[..., Any], args: tuple, kwargs: dict
) -> Generator[Any, None, Any]:
    """Worker body of a plain function (a generator, so every job has one worker kind)."""
    return job(*args, **kwargs)
    yield  # pragma: no cover  (makes this a generator)


def default_progress_of(event: Any) -> Progress | None:
    """The Progress an event carries: the event itself when it is one."""
    return event if isinstance(event, Progress) else None


class JobRunner:
    """One job of a dock, in a napari ``thread_worker``, with progress, cancel and its error.

    Parameters
    ----------
    session
        The viewer's session; an exclusive job claims its job slot in
        :meth:`start` and releases it once the job's thread has really stopped.
    name
        Shown in the activity dock, and to the user when another job is refused.
    job, args, kwargs
        What runs, called as described by ``style``.
    kind
        :attr:`JobKind.EXCLUSIVE` (holds the one-job slot) or
        :attr:`JobKind.BACKGROUND` (never blocks; see the module notes).
    style
        :attr:`JobStyle.CALLBACKS`: ``job(*args, progress=, cancel=, **kwargs)``;
        :attr:`JobStyle.EVENTS`: a generator function whose events go to
        ``on_event`` and whose return value is the result;
        :attr:`JobStyle.FUNCTION`: a plain function.
    on_event, on_result, on_end
        Main-thread callbacks: each event (a Progress for callback jobs); the
        result (not called on error or cancel); the end (``"done"``,
        ``"cancelled"`` or ``"failed"``, after the slot was released).
    progress_of
        Maps an event to the :class:`~phenoadapt.progress.Progress` shown in the
        napari progress bar (None: the event is not progress).
    activity
        Whether the job gets a napari progress bar (the activity dock); by
        default exclusive jobs do and background jobs do not.
    """

    def __init__(
        self,
        session: SessionState,
        name: str,
        job: Callable[..., Any],
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        kind: JobKind = JobKind.EXCLUSIVE,
        style: JobStyle = JobStyle.CALLBACKS,
        on_event: Callable[[Any], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_end: Callable[[str], None] | None = None,
        progress_of: Callable[[Any], Progress | None] = default_progress_of,
        activity: bool | None = None,
    ) -> None:
        self.session = session
        self.name = name
        self.kind = kind
        self.style = style
        self.outcome = "done"
        self.error: BaseException | None = None  # why the job failed, for the dock
        self.worker: Any = None
        self.progress_bar: Any = None  # the napari progress object while running
        self._stop = threading.Event()
        self._launched = threading.Event()
        self._ended = threading.Event()
        self._progress_of = progress_of
        self.activity = kind is JobKind.EXCLUSIVE if activity is None else activity
        self._pending_progress: Progress | None = None
        self._updating = False
        self._callbacks: dict[str, Callable | None] | None = {
            "event": on_event,
            "result": on_result,
            "end": on_end,
        }
        self._job_args = (job, args, kwargs or {})

    # -- control ----------------------------------------------------------------
    def start(self) -> JobRunner:
        """Claim the job slot (exclusive jobs), show the progress bar, start the worker.

        Returns
        -------
        JobRunner
            This runner, for chaining.

        Raises
        ------
        JobRunningError
            Another exclusive job holds the slot (nothing was started).
        """
        from napari.qt.threading import thread_worker

        if self.kind is JobKind.EXCLUSIVE:
            self.session.begin_job(self.name)
        self.worker = worker = thread_worker(self._body(), start_thread=False, ignore_errors=True)(
            *self._body_args()
        )
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.progress_bar = _napari_progress(self.name) if self.activity else None
        _LIVE.add(self)
        worker.start()
        return self

    def _body(self) -> Callable[..., Generator]:
        return _failures_wrapped(
            {
                JobStyle.CALLBACKS: _callback_events,
                JobStyle.EVENTS: _generator_events,
                JobStyle.FUNCTION: _function_events,
            }[self.style]
        )

    def _body_args(self) -> tuple:
        job, args, kwargs = self._job_args
        if self.style is JobStyle.CALLBACKS:
            return job, args, kwargs, self._stop, self._launched, self._ended
        if self.style is JobStyle.EVENTS:
            return job, args, kwargs, self._stop
        return job, args, kwargs

    @property
    def running(self) -> bool:
        """True until the job has stopped (and its slot was released)."""
        return self.worker is not None

    @property
    def cancelled(self) -> bool:
        """Whether Cancel was pressed (or the job was superseded)."""
        return self._stop.is_set()

    def cancel(self) -> None:
        """Stop the job at its next batch (or event); nothing it returns afterwards is kept."""
        self.outcome = "cancelled"
        self._stop.set()
        if self.worker is not None:
            self.worker.quit()

    def abandon(self) -> None:
        """The dock is going away: cancel and call none of its callbacks any more."""
        self._callbacks = None
        self.cancel()

    # -- worker signals (main thread) ---------------------------------------
    def _call(self, which: str, *args: Any) -> None:
        callback = self._callbacks.get(which) if self._callbacks is not None else None
        if callback is not None:
            callback(*args)

    def _on_yielded(self, event: Any) -> None:
        if self._stop.is_set():
            return
        self._call("event", event)  # first: the dock sees the events in their order
        progress = self._progress_of(event)
        if progress is not None:
            self._show_progress(progress)

    def _show_progress(self, progress: Progress) -> None:
        """Update the napari bar with the newest report.

        Updating it can process Qt events, and so deliver the job's next events
        inside this call: a nested call only leaves its report for the outer one,
        which shows the newest, so the bar never goes back to an older count.
        """
        self._pending_progress = progress
        if self._updating:
            return
        self._updating = True
        try:
            while self._pending_progress is not None:
                report, self._pending_progress = self._pending_progress, None
                _update_napari_progress(self.progress_bar, self.name, report)
        finally:
            self._updating = False

    def _on_returned(self, result: Any) -> None:
        if self._stop.is_set():  # finished just as Cancel was pressed: keep nothing
            return
        self._call("result", result)

    def _on_errored(self, exc: BaseException) -> None:
        exc = exc.error if isinstance(exc, _JobFailed) else exc
        if isinstance(exc, Cancelled) or self._stop.is_set():
            self.outcome = "cancelled"
            return
        self.outcome = "failed"
        self.error = exc
        if self._callbacks is not None:
            # The notification is the short form; the dock keeps the whole message.
            notify("error", f"{self.name} failed: {gui_wording(error_text(exc))}")

    def _on_finished(self) -> None:
        # After quit() the worker finishes at once, but a callback job's own thread
        # may still be inside a batch: hold the slot until it noticed the cancel flag.
        if self._launched.is_set() and not self._ended.is_set():
            QTimer.singleShot(_POLL_MS, self._on_finished)
            return
        self.worker = None
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None
        _LIVE.discard(self)
        if self.kind is JobKind.EXCLUSIVE:
            self.session.end_job()
        self._call("end", self.outcome)


def _napari_progress(name: str) -> Any:
    """A napari progress bar for a job (listed in the activity dock), busy until told more."""
    from napari.utils import progress

    # total=0: napari shows a busy bar until the job reports a total.
    return progress(total=0, desc=name, leave=False)


#: Viewers whose window has shown a napari progress bar (see warm_up_activity_dock).
_WARM_VIEWERS: weakref.WeakSet[Any] = weakref.WeakSet()


def warm_up_activity_dock(viewer: Any) -> None:
    """Show and close one napari progress bar in ``viewer``'s window, once per viewer.

    The first bar of a window lays the whole window out again (napari's
    activity indicator makes the status bar taller) and redraws the canvas;
    done when a job dock opens, the first job's bar then costs a few
    milliseconds instead of a 0.1-0.4 s freeze when the job starts.  It runs
    in a later event-loop turn: napari processes events while adding a bar,
    which must not happen inside a dock's constructor.

    Parameters
    ----------
    viewer
        The napari viewer whose docks will run jobs.
    """
    if viewer in _WARM_VIEWERS:
        return
    _WARM_VIEWERS.add(viewer)
    alive = weakref.ref(viewer)

    def show_and_close() -> None:
        if alive() is not None:
            _napari_progress("phenoadapt").close()

    QTimer.singleShot(0, show_and_close)


def _update_napari_progress(bar: Any, name: str, event: Progress) -> None:
    """Show a Progress event on a napari progress bar."""
    if bar is None:
        return
    total = max(int(event.total), 0)
    if bar.total != total:
        bar.total = total
    description = f"{name}: {event.stage}"
    # Only when the stage changes: tqdm stores "desc: " (so comparing with bar.desc
    # never matched), and each call relays the activity dock out on the main
    # thread, which bench_gui_stall.py --trace-stalls caught at every event.
    if getattr(bar, "_phenoadapt_desc", None) != description:
        bar._phenoadapt_desc = description
        bar.set_description(description)
    done = min(int(event.done), total) if total else 0
    if done != bar.n:
        bar.update(done - bar.n)  # napari emits its value event from update()


def abandon_runners(runners: list[JobRunner]) -> None:
    """Slot for a dock's ``destroyed`` signal (must not touch the deleted widget)."""
    for runner in runners:
        if runner.running:
            runner.abandon()


def error_text(error: BaseException) -> str:
    """What a dock says of a failure: the user's error as it is, a bug as a bug."""
    if isinstance(error, PhenoadaptError):
        return str(error)
    return f"{type(error).__name__}: {error} (this is a bug in phenoadapt; please report it)"


# ------------------------------------------------------------------- widgets
class ErrorPanel(QFrame):
    """The last error of a dock, kept until dismissed (a notification fades).

    The message is worded for the GUI (command-line flags removed) and may come
    with one button doing what the flag would (:meth:`show_error`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("QFrame { border: 1px solid #d55e00; border-radius: 3px; }")
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setStyleSheet("border: none;")
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # A long path is one unbreakable word: let it be clipped rather than widen
        # the dock (and every dock tabbed with it) beyond a laptop screen.
        self.text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.text.setMinimumWidth(120)
        self.action = QPushButton("")
        self.action.setVisible(False)
        self.action.clicked.connect(self._on_action)
        self.dismiss = QPushButton("Dismiss")
        self.dismiss.clicked.connect(self.clear)
        row = QHBoxLayout()
        row.addWidget(self.action)
        row.addStretch()
        row.addWidget(self.dismiss)
        box = QVBoxLayout(self)
        box.addWidget(self.text)
        box.addLayout(row)
        self.setVisible(False)
        self._fix: Callable[[], None] | None = None

    @property
    def shown(self) -> bool:
        """Whether an error is on display (not dismissed); true even in a hidden dock."""
        return not self.isHidden()

    def show_error(self, message: str, fix: Fix | None = None) -> None:
        """Keep ``message`` in the dock, with an optional ``(button text, action)`` fix."""
        self.text.setText(gui_wording(message))
        self._fix = fix[1] if fix else None
        self.action.setText(fix[0] if fix else "")
        self.action.setVisible(fix is not None)
        self.setVisible(True)

    def clear(self) -> None:
        """Hide the panel."""
        self.setVisible(False)
        self._fix = None

    def _on_action(self) -> None:
        fix = self._fix
        self.clear()  # first: the fix may fail and show a new error
        if fix is not None:
            fix()


class JobControls(QWidget):
    """A job's Start/Cancel buttons, its progress bar and status line, and its error panel."""

    def __init__(self, start_text: str) -> None:
        super().__init__()
        self.start_button = QPushButton(start_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.progress.setTextVisible(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.errors = ErrorPanel()
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.errors)

    # The error panel, under the names the docks and tests use.
    @property
    def error_box(self) -> ErrorPanel:
        """The error panel."""
        return self.errors

    @property
    def error_text(self) -> QLabel:
        """The error panel's message."""
        return self.errors.text

    @property
    def error_action(self) -> QPushButton:
        """The error panel's fix button."""
        return self.errors.action

    def show_error(self, message: str, action: Fix | None = None) -> None:
        """Keep ``message`` (worded for the GUI) in the dock, with an optional fix button."""
        self.errors.show_error(message, action)

    def clear_error(self) -> None:
        """Hide the error panel."""
        self.errors.clear()

    def busy(self, text: str) -> None:
        """A job started: Cancel enabled, a busy bar until the first progress report."""
        self.clear_error()
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat(text)
        self.status.setText(text)

    def show_progress(self, event: Progress) -> None:
        """Show a progress report on the bar."""
        if event.total > 0:
            self.progress.setRange(0, event.total)
            self.progress.setValue(min(event.done, event.total))
        else:
            self.progress.setRange(0, 0)
        self.progress.setFormat(str(event))

    def idle(self, text: str) -> None:
        """The job ended: Start enabled again, the status says how."""
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.progress.setFormat("")
        self.status.setText(text)

    def ended(self, runner: JobRunner, text: str, fix: Fix | None = None) -> None:
        """The job ended: idle with ``text``, and its error (if it failed) in the panel."""
        self.idle(text)
        if runner.outcome == "failed" and runner.error is not None:
            self.show_error(error_text(runner.error), fix)

    def refused(self, error: PhenoadaptError) -> None:
        """A job could not start (another job runs, a setting is wrong): say so here."""
        self.show_error(str(error))
