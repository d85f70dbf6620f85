"""Small GUI helpers shared by the docks: notifications and yes/no questions.

The docks report user errors as napari notifications and ask before
destructive steps (replace a file, drop unsaved edits).  Both go through these
functions so every dock words and shows them the same way; the notification
functions are looked up when called, so tests can capture them by patching
``napari.utils.notifications``.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QMessageBox, QWidget

# ``ask(title, text) -> bool``: a yes/no question; docks hold one so tests can answer it.
Asker = Callable[[str, str], bool]


def notify(kind: str, message: str) -> None:
    """Show a napari notification (``kind`` is ``"error"``, ``"warning"`` or ``"info"``)."""
    # Imported at call time: napari is heavy, and tests patch these functions.
    from napari.utils import notifications

    getattr(notifications, f"show_{kind}")(message)


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
