"""Small GUI helpers shared by the docks: notifications, yes/no questions, plate choosers.

The docks report user errors as napari notifications and ask before
destructive steps (replace a file, drop unsaved edits).  Both go through these
functions so every dock words and shows them the same way; the notification
functions are looked up when called, so tests can capture them by patching
``napari.utils.notifications``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qtpy.QtCore import QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFrame,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

# ``ask(title, text) -> bool``: a yes/no question; docks hold one so tests can answer it.
Asker = Callable[[str, str], bool]


def notify(kind: str, message: str) -> None:
    """Show a napari notification (``kind`` is ``"error"``, ``"warning"`` or ``"info"``)."""
    # Imported at call time: napari is heavy, and tests patch these functions.
    from napari.utils import notifications

    getattr(notifications, f"show_{kind}")(message)


# "(--allow-fallback; RunConfig(allow_fallback=True))", "(--platemap)": advice for the
# command line and the API, which a dock answers with its own controls instead.
_CLI_ADVICE = re.compile(r"\s*\((?:--|[A-Za-z]+Config\()[^()]*(?:\([^()]*\)[^()]*)*\)")
_PASS_FLAG = re.compile(r",? or pass --[a-z-]+(?:\s*\([^()]*\))?")


def gui_wording(message: str) -> str:
    """An error message as a dock shows it: without command-line flags and API calls.

    >>> gui_wording("Mark the DMSO wells, or allow the fallback (--allow-fallback; "
    ...             "RunConfig(allow_fallback=True)).")
    'Mark the DMSO wells, or allow the fallback.'
    """
    return _PASS_FLAG.sub("", _CLI_ADVICE.sub("", message))


#: Delay (ms) between pieces of work moved out of a busy event-loop turn (a new result's
#: redraws in each dock, the steps of showing it): a zero-delay timer, or several timers
#: due together, run in the same pass of the event loop, before the window repainted,
#: and froze the viewer as one (docs/gui-responsiveness.md).
STEP_MS = 10

_QUEUE: deque[Callable[[], Any]] = deque()
_TIMER: list[QTimer] = []  # the queue's timer, made on first use (it needs the app)


def call_later(function: Callable[[], Any]) -> None:
    """Call ``function`` on the main thread in a later event-loop turn, after the others queued.

    One queued call runs per firing of a timer, :data:`STEP_MS` apart, so each
    gets its own turn and the window repaints (and answers input) between them.
    """
    _QUEUE.append(function)
    if not _TIMER:
        timer = QTimer()
        timer.setSingleShot(True)
        timer.setInterval(STEP_MS)
        timer.timeout.connect(_call_next)
        _TIMER.append(timer)
    if not _TIMER[0].isActive():
        _TIMER[0].start()


def _call_next() -> None:
    try:
        if _QUEUE:
            _QUEUE.popleft()()
    finally:
        if _QUEUE:
            _TIMER[0].start()


class LaterCall:
    """``slot`` called in a later turn (:func:`call_later`), once however often it is started.

    Parameters
    ----------
    owner
        The dock (or other Qt object) the call belongs to: once it is deleted, a
        queued call does nothing, so a closed dock is never called back.
    slot
        What to call.
    """

    def __init__(self, owner: QObject, slot: Callable[[], Any]) -> None:
        self._slot = slot
        self._pending = False
        self._alive = True
        owner.destroyed.connect(self._owner_gone)

    def _owner_gone(self, *_: Any) -> None:
        self._alive = False

    def start(self) -> None:
        """Queue the call, unless it is queued already."""
        if not self._pending:
            self._pending = True
            call_later(self._fire)

    def stop(self) -> None:
        """Cancel the queued call (its turn passes without it)."""
        self._pending = False

    def isActive(self) -> bool:  # noqa: N802 (QTimer's name: it replaced one)
        """Whether the call is queued and not done yet."""
        return self._pending

    def _fire(self) -> None:
        if not self._pending or not self._alive:
            return
        self._pending = False
        self._slot()


def later_timer(owner: QObject, slot: Callable[[], Any]) -> LaterCall:
    """A :class:`LaterCall` of ``slot`` belonging to ``owner``."""
    return LaterCall(owner, slot)


def observe(owner: QObject, signal: Any, slot: Callable[..., Any]) -> None:
    """Connect a session signal (psygnal) to a slot for as long as ``owner`` lives.

    psygnal keeps lambdas alive and calls them synchronously; a dock that was
    closed must not be called back (its widgets are gone), so the connection
    ends when the owner's Qt object is destroyed.
    """
    signal.connect(slot)
    owner.destroyed.connect(lambda *_: signal.disconnect(slot, missing_ok=True))


class _VerticalScrollArea(QScrollArea):
    """A scroll area that scrolls only vertically and is never narrower than its content.

    Without a horizontal scroll bar, a dock squeezed below its content's width
    (a narrow tab group) cut off the right of its rows (Cancel, Dismiss...).
    """

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        hint = super().minimumSizeHint()
        content = self.widget()
        if content is None:
            return hint
        width = (
            content.minimumSizeHint().width()
            + self.verticalScrollBar().sizeHint().width()
            + 2 * self.frameWidth()
        )
        return QSize(max(hint.width(), width), hint.height())


def scrolling_layout(dock: QWidget) -> QVBoxLayout:
    """Give a dock a vertical layout inside a scroll area, and return that layout.

    napari stacks docks in a column; a dock whose content cannot shrink makes
    the whole window taller than a laptop screen (1366x768), pushing buttons and
    notifications off-screen.  Inside a scroll area the dock keeps its natural
    size when there is room and scrolls when there is not.
    """
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = _VerticalScrollArea(dock)
    scroll.setWidgetResizable(True)  # content follows the dock's width and extra height
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    content = QWidget()
    scroll.setWidget(content)
    outer.addWidget(scroll)
    return QVBoxLayout(content)


def confirm(parent: QWidget | None, title: str, text: str) -> bool:
    """Ask a yes/no question in a message box; No is the default answer."""
    answer = QMessageBox.question(
        parent,
        title,
        text,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def select_item(combo: QComboBox, text: str) -> None:
    """Choose the item of a combo box with this text (nothing happens if there is none)."""
    index = combo.findText(text)
    if index >= 0:
        combo.setCurrentIndex(index)


def fill_plate_combo(
    combo: QComboBox,
    plate_ids: Sequence[str],
    fallback: str | None = None,
    tooltips: Mapping[str, str] | None = None,
) -> None:
    """Refill a plate chooser without emitting its signals.

    The plate chosen before stays chosen when it is still open; otherwise
    ``fallback`` when listed, else the newest plate.
    """
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(list(plate_ids))
    for index, plate_id in enumerate(plate_ids):
        if tooltips and plate_id in tooltips:
            combo.setItemData(index, tooltips[plate_id], Qt.ItemDataRole.ToolTipRole)
    if current in plate_ids:
        combo.setCurrentText(current)
    elif fallback is not None and fallback in plate_ids:
        combo.setCurrentText(fallback)
    elif plate_ids:
        combo.setCurrentIndex(len(plate_ids) - 1)
    combo.blockSignals(False)
