"""The Plate dock's channel table: each channel's key, name, role and colour, editable.

A plate from an instrument phenoadapt has never seen opens with its channels
named from its metadata, or with their keys (``ch2``) and role "other" when
nothing names them.  Here the user names each channel and picks its Cell
Painting role; the layers are renamed and recoloured at once, and Segment, Run
and Train use the new channels.  "Save channel map" writes them next to the
plate (or to a per-user folder when the plate is read-only), so every later
opening, in napari or on the command line, finds them.
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import PhenoadaptError
from ..plate import Channel, ChannelRole
from ..plate.channel_map import save_channel_map
from ..plate.channels import USER, parse_name_role
from .common import notify, observe
from .session import PlateSession

# Qt colours of napari's colormap names, for the colour column.
_SWATCH = {
    "blue": "#3b6cff",
    "green": "#2fd12f",
    "cyan": "#22d3d3",
    "yellow": "#e3d22c",
    "magenta": "#e03ce0",
    "gray": "#9a9a9a",
}
COLUMNS = ("Key", "Name", "Role", "Colour", "From")
_ROLES = [role.value for role in ChannelRole]


class ChannelTable(QWidget):
    """Key, name, role drop-down, colour and source of each channel of the plate shown.

    Parameters
    ----------
    session
        The viewer's :class:`~phenoadapt.gui.session.PlateSession`.

    Signals
    -------
    saved(str)
        The path a channel map was written to.
    """

    saved = Signal(str)

    def __init__(self, session: PlateSession) -> None:
        super().__init__()
        self.session = session
        self.plate_id: str | None = None
        self._filling = False
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.itemChanged.connect(self._on_item_changed)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.save_button = QPushButton("Save channel map")
        self.save_button.setToolTip(
            "Write these names and roles next to the plate (phenoadapt-channels.csv), so the "
            "plate opens with them from now on, here and on the command line"
        )
        self.save_button.clicked.connect(self.save)
        buttons = QHBoxLayout()
        buttons.addStretch()
        buttons.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.note)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        observe(self, session.channels_changed, self._on_channels_changed)
        self.show_plate(None)

    # -- filling -----------------------------------------------------------
    def show_plate(self, plate_id: str | None) -> None:
        """Fill the table with the channels of a plate (empty for None)."""
        self.plate_id = plate_id if plate_id in self.session.plates else None
        channels = self.session.plates[self.plate_id].channels if self.plate_id else []
        self._filling = True
        try:
            self.table.setRowCount(len(channels))
            for row, channel in enumerate(channels):
                self._fill_row(row, channel)
        finally:
            self._filling = False
        rows = max(len(channels), 1)
        # The table shows every channel without its own scroll bar (the dock scrolls).
        height = self.table.horizontalHeader().height() + rows * self.table.rowHeight(0) + 4
        self.table.setFixedHeight(height if channels else 0)
        self.save_button.setEnabled(bool(channels))
        self.note.setText(self._note(channels))

    def _fill_row(self, row: int, channel: Channel) -> None:
        key = QTableWidgetItem(channel.key)
        key.setFlags(key.flags() & ~Qt.ItemFlag.ItemIsEditable)
        name = QTableWidgetItem(channel.name)
        name.setToolTip("Type the channel's stain or name (e.g. Hoechst, Phalloidin)")
        source = QTableWidgetItem(channel.source)
        source.setFlags(source.flags() & ~Qt.ItemFlag.ItemIsEditable)
        colour = QTableWidgetItem("")
        colour.setFlags(Qt.ItemFlag.ItemIsEnabled)
        colour.setBackground(QColor(_SWATCH.get(channel.colormap, "#9a9a9a")))
        colour.setToolTip(channel.colormap)
        for column, item in ((0, key), (1, name), (3, colour), (4, source)):
            self.table.setItem(row, column, item)
        combo = self.table.cellWidget(row, 2)
        if combo is None:
            # Created once per row and then updated: replacing a drop-down from inside its
            # own signal would delete it while Qt still uses it.
            combo = QComboBox()
            combo.addItems(_ROLES)
            combo.setToolTip("What the channel shows: Segment, Run and Train find stains by role")
            combo.currentTextChanged.connect(lambda _text, r=row: self._on_role_changed(r))
            self.table.setCellWidget(row, 2, combo)
        combo.setCurrentText(channel.role.value)

    @staticmethod
    def _note(channels: list[Channel]) -> str:
        if not channels:
            return ""
        if any(c.is_guess for c in channels):
            return (
                "Names guessed from the usual channel order: check them against the images, "
                "then save the channel map."
            )
        unnamed = [c.name for c in channels if c.role is ChannelRole.OTHER]
        if unnamed:
            return (
                f"{', '.join(unnamed)}: no stain role. Name each channel and pick its role "
                "(DNA is needed to find nuclei), then save the channel map."
            )
        return ""

    # -- editing -----------------------------------------------------------
    def role_combo(self, row: int) -> QComboBox:
        """The role drop-down of a row."""
        return self.table.cellWidget(row, 2)

    def channels(self) -> list[Channel]:
        """The channels as the table shows them now."""
        if self.plate_id is None:
            return []
        old = self.session.plates[self.plate_id].channels
        out = []
        for row, channel in enumerate(old):
            name = self.table.item(row, 1).text().strip() or channel.name
            role = ChannelRole(self.role_combo(row).currentText())
            changed = name != channel.name or role is not channel.role
            out.append(Channel(channel.key, name, role, USER if changed else channel.source))
        return out

    def set_channel(self, row: int, name: str | None = None, role: str | None = None) -> None:
        """Rename a channel and/or change its role, as typing in the table does."""
        if name is not None:
            self.table.item(row, 1).setText(name)
        if role is not None:
            self.role_combo(row).setCurrentText(ChannelRole(role).value)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 1:
            return
        # A stain name sets the role too ("Hoechst" -> DNA), unless the role was chosen.
        name, role = parse_name_role(item.text())
        combo = self.role_combo(item.row())
        if role is not ChannelRole.OTHER and combo.currentText() == ChannelRole.OTHER.value:
            self._filling = True
            try:
                item.setText(name)
                combo.setCurrentText(role.value)
            finally:
                self._filling = False
        self._apply()

    def _on_role_changed(self, _row: int) -> None:
        if not self._filling:
            self._apply()

    def _apply(self) -> None:
        if self.plate_id is None:
            return
        try:
            self.session.set_channels(self.plate_id, self.channels())
        except PhenoadaptError as exc:
            notify("error", str(exc))

    def _on_channels_changed(self, plate_id: str) -> None:
        if plate_id == self.plate_id:
            self.show_plate(plate_id)

    # -- saving ------------------------------------------------------------
    def save(self) -> str | None:
        """Save the plate's channel map; tells the user where it went. Returns the path."""
        if self.plate_id is None:
            return None
        plate = self.session.plates[self.plate_id]
        if plate.path is None:
            notify("error", f"Plate {plate.plate_id} has no folder to save a channel map for.")
            return None
        try:
            path = save_channel_map(plate.path, plate.channels)
        except PhenoadaptError as exc:
            notify("error", str(exc))
            return None
        where = (
            "next to the plate"
            if path.parent == plate.path.resolve()
            else "in your phenoadapt folder, because the plate folder is read-only"
        )
        notify("info", f"Channel map of {plate.plate_id} saved {where}: {path}")
        self.saved.emit(str(path))
        return str(path)
