"""Dock widget "Plate": open plates, see their wells, step through fields.

The dock opens plate folders (optionally described by a file-name pattern),
keeps a list of open plates (a training plate and a new batch side by side),
and draws the chosen plate as a grid of wells: imaged wells filled, wells that
were not imaged hollow.  Wells are coloured by role, treatment or MoA from the
plate map, and, once a run has finished, by predicted MoA or confidence from
``session.result.wells``.  Clicking a well shows its first field; buttons (and
the keys N/P for wells, S/Shift+S for sites while the dock has focus) step
through wells and sites.

Everything the dock knows lives in the viewer's
:class:`~phenoadapt.gui.session.PlateSession`; errors are napari
notifications, never tracebacks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QSignalBlocker, Qt, QTimer
from qtpy.QtGui import QColor, QKeySequence, QShortcut
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)
from superqt import QCollapsible

from .. import schema
from ..errors import PhenoadaptError
from ..palette import ClassPalette, class_colours, role_colours
from ..pipeline.trust import PlateTrust, run_trust
from ..plate import ChannelRole, Plate
from ..plate.platemap import PlateMap
from .channel_table import ChannelTable
from .colours import session_class_palette, session_treatment_palette
from .common import (
    Asker,
    confirm,
    fill_plate_combo,
    later_timer,
    notify,
    observe,
    scrolling_layout,
    select_item,
)
from .jobs import ErrorPanel
from .layers import META_KEY
from .plate_grid import ColorBar, ColorLegend, PlateGrid, category_colors, value_colors
from .profile_maps import activity_key, cells_layers, well_activity
from .session import FieldKey, PlateSession, get_session, load_plate
from .tab_groups import join_tab_group

if TYPE_CHECKING:
    import napari

ROLE = "Role"
TREATMENT = "Treatment"
MOA = "MoA"
PREDICTED = "Predicted MoA"
CONFIDENCE = "Confidence"
PROFILE = "Profile: distance from controls"
#: Colourings offered by the plate dock; two need a run result, the last segmented cells.
COLOR_MODES: tuple[str, ...] = (ROLE, TREATMENT, MOA, PREDICTED, CONFIDENCE, PROFILE)
RESULT_MODES: tuple[str, ...] = (PREDICTED, CONFIDENCE)
FORMAT_CHOICES: tuple[str, ...] = ("Automatic", "96-well", "384-well", "1536-well")


# ----------------------------------------------------------------- helpers
def result_wells(result: Any, plate_id: str) -> pd.DataFrame:
    """The per-well rows of a run result for one plate, indexed by well name.

    Empty when there is no result, it has no ``wells`` table, or the plate
    was not part of the run.
    """
    table = getattr(result, "wells", None)
    if not isinstance(table, pd.DataFrame) or schema.WELL not in table.columns:
        return pd.DataFrame()
    if schema.PLATE in table.columns:
        table = table[table[schema.PLATE].astype(str) == str(plate_id)]
    return table.drop_duplicates(schema.WELL).set_index(schema.WELL)


def mode_palette(session: PlateSession, mode: str) -> ClassPalette | None:
    """The session's palette for a colouring mode (None for confidence, a colour bar).

    MoA and predicted MoA share one palette, the overlay's and the UMAP's, so a
    class has one colour in every view; roles have fixed colours.
    """
    if mode == ROLE:
        return role_colours()
    if mode == TREATMENT:
        return session_treatment_palette(session)
    if mode in (MOA, PREDICTED):
        return session_class_palette(session)
    return None


def well_marks(platemap: PlateMap | None, plate: Plate | None) -> tuple[list[str], list[str]]:
    """Imaged control wells and imaged excluded wells, marked over every colouring."""
    if platemap is None:
        return [], []
    imaged = set(plate.wells) if plate is not None else set(platemap.wells)
    controls = [w for w in platemap.controls if w in imaged]
    return controls, [w for w in platemap.excluded if w in imaged]


def map_values(platemap: PlateMap, column: str) -> dict[str, Any]:
    """Well -> value of one plate-map column."""
    frame = platemap.to_frame()
    return dict(zip(frame[schema.WELL], frame[column], strict=True))


def color_wells(
    mode: str,
    platemap: PlateMap | None,
    wells: pd.DataFrame,
    palette: ClassPalette | None = None,
) -> tuple[dict[str, QColor], list[tuple[str, QColor]] | Any, str]:
    """Colours of wells for a colouring mode.

    Parameters
    ----------
    mode
        One of :data:`COLOR_MODES`.
    platemap
        The plate's map (role, treatment, MoA).
    wells
        Per-well run results indexed by well (see :func:`result_wells`).
    palette
        Colours of the mode's categories (:func:`mode_palette`); the sorted
        values of this plate alone when None.

    Returns
    -------
    (colours, legend, title)
        Well -> colour; a list of (label, colour) or a
        :class:`~phenoadapt.gui.plate_grid.ColorBar`; the legend title.
    """
    if mode == CONFIDENCE:
        values = {}
        if schema.CONFIDENCE in wells.columns:
            values = dict(pd.to_numeric(wells[schema.CONFIDENCE], errors="coerce").items())
        colours, bar = value_colors(values, 0.0, 1.0, "viridis", "Confidence of the prediction")
        return colours, bar, bar.title
    if mode == PREDICTED:
        values = {}
        if schema.PREDICTION in wells.columns:
            values = dict(wells[schema.PREDICTION].items())
    elif platemap is None:
        return {}, [], ""
    else:
        column = {ROLE: schema.ROLE, TREATMENT: schema.TREATMENT, MOA: schema.MOA}[mode]
        values = map_values(platemap, column)
    if palette is None:
        palette = role_colours() if mode == ROLE else class_colours(values.values())
    colours, legend = category_colors(values, palette)
    # Role names say "control" already; other legends flag their control categories.
    return colours, _counted(legend, values, None if mode == ROLE else palette), mode


def _counted(
    legend: list[tuple[str, QColor]], values: dict[str, Any], palette: ClassPalette | None
) -> list[tuple[str, QColor]]:
    """Legend labels with the number of wells of each category: ``DMSO (16, control)``."""
    counts = pd.Series([str(v) for v in values.values() if isinstance(v, str) or pd.notna(v)])
    counts = counts.value_counts()

    def text(name: str) -> str:
        flag = ", control" if palette is not None and palette.is_control(name) else ""
        return f"{name} ({int(counts.get(name, 0))}{flag})"

    return [(text(name), colour) for name, colour in legend]


def well_tooltips(
    plate: Plate | None,
    platemap: PlateMap | None,
    wells: pd.DataFrame,
    plate_format: Any,
) -> dict[str, str]:
    """One tooltip per well: imaging, treatment, MoA, role and the prediction if any."""
    # Plain dicts: a .loc lookup per well is slow on 1536-well plates.
    records: dict[str, dict] = {}
    if platemap is not None:
        records = platemap.to_frame().set_index(schema.WELL).to_dict("index")
    predictions = wells.to_dict("index") if not wells.empty else {}
    tips = {}
    for well in plate_format.wells():
        if plate is not None and well in plate.sites:
            n_sites = len(plate.sites[well])
            lines = [f"{well}: imaged, {n_sites} site{'s' if n_sites != 1 else ''}"]
        else:
            lines = [f"{well}: not imaged"]
        if well in records:
            lines += _map_lines(records[well])
        elif platemap is not None:
            lines.append("Not on the plate map")
        if well in predictions:
            lines.append(_prediction_line(predictions[well]))
        tips[well] = "\n".join(lines)
    return tips


def _map_lines(record: dict[str, Any]) -> list[str]:
    lines = []
    treatment = record.get(schema.TREATMENT)
    if pd.notna(treatment):
        dose = record.get(schema.CONCENTRATION)
        lines.append(f"Treatment: {treatment}" + (f" ({dose:g} µM)" if pd.notna(dose) else ""))
    if pd.notna(record.get(schema.MOA)):
        lines.append(f"MoA: {record[schema.MOA]}")
    lines.append(f"Role: {record[schema.ROLE]}")
    return lines


def _prediction_line(row: dict[str, Any]) -> str:
    text = f"Predicted: {row.get(schema.PREDICTION, '?')}"
    extra = []
    if pd.notna(row.get(schema.CONFIDENCE, np.nan)):
        extra.append(f"confidence {float(row[schema.CONFIDENCE]):.2f}")
    if pd.notna(row.get("n_cells", np.nan)):
        extra.append(f"{int(row['n_cells'])} cells")
    return text + (f" ({', '.join(extra)})" if extra else "")


# -------------------------------------------------------------------- dock
class PlateDock(QWidget):
    """Open plates, see them as well grids coloured by plate map or results, browse fields.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when the dock opens).

    Attributes
    ----------
    ask
        ``ask(title, text) -> bool``: the yes/no question before closing a plate
        whose map has unsaved changes (a message box; tests replace it).
    choose_folder
        ``choose_folder() -> str``: the folder dialog of the Open button ("" to cancel).
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        join_tab_group(self)  # with the other docks of its group once napari docks it
        self.viewer = napari_viewer
        self.session: PlateSession = get_session(napari_viewer)
        self.ask: Asker = lambda title, text: confirm(self, title, text)
        self.choose_folder: Callable[[], str] = lambda: QFileDialog.getExistingDirectory(
            self, "Open a plate folder"
        )
        self._not_adoptable: set[str] = set()  # layer folders that did not open as plates
        self._build()
        self._connect()
        self._adopt_layers()
        self._refresh_plates()

    # -- layout ---------------------------------------------------------------
    def _build(self) -> None:
        self.open_button = QPushButton("Open plate folder...")
        self.open_button.setToolTip(
            "A folder of plate images (Opera Phenix, ImageXpress, Cellomics, a stack per site) "
            "or an OME-Zarr plate."
        )
        self.open_button.clicked.connect(self.open_dialog)
        self.pattern = QLineEdit()
        self.pattern.setPlaceholderText(
            "optional, e.g. (?P<well>[A-P]\\d\\d)_s(?P<site>\\d)_w(?P<channel>\\d)"
        )
        self.pattern.setToolTip(
            "A regular expression describing file names, for layouts phenoadapt does not know: "
            "named groups well (or row and column), site, channel, plane."
        )
        self.plate_format = QComboBox()
        self.plate_format.addItems(FORMAT_CHOICES)
        self.plate_format.setToolTip(
            "Automatic: the smallest format that holds the imaged wells. Choose the format when "
            "only part of a larger plate was imaged."
        )
        self.plates = QComboBox()
        self.plates.setToolTip("Open plates: the one shown below.")
        self.plates.currentIndexChanged.connect(lambda _i: self.refresh())
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("Forget this plate (its layers stay in the viewer).")
        self.close_button.clicked.connect(lambda: self.close_plate())
        self.info = QLabel("No plate open: open a plate folder, or drop one onto napari.")
        self.info.setWordWrap(True)
        # Plate trust (after a run): how far this plate's controls are from the training data.
        self.trust = QLabel("")
        self.trust.setWordWrap(True)
        self.trust.setToolTip(
            "Distance of this plate's negative controls to the training plates' controls "
            "(network features with the training statistics), against the training plates' range."
        )
        self._trust: tuple[Any, dict[str, PlateTrust]] = (None, {})  # (result, per plate)
        self.channel_table = ChannelTable(self.session)
        self.channels_box = QCollapsible("Channels")
        self.channels_box.addWidget(self.channel_table)
        self.color_by = QComboBox()
        self.color_by.addItems(COLOR_MODES)
        self.color_by.setToolTip(
            "What the well colours show. Predicted MoA and confidence need a run."
        )
        self.color_by.currentTextChanged.connect(lambda _t: self.refresh())
        self.grid = PlateGrid(multi_select=False)
        self.grid.well_clicked.connect(self.on_well_clicked)
        self._profile_error = ""  # the last profile problem notified, not repeated
        self._activity: tuple[tuple | None, dict] = (None, {})  # (activity_key, wells)
        self.legend = ColorLegend()
        self.prev_well = QPushButton("◀ Well")
        self.next_well = QPushButton("Well ▶")
        self.prev_site = QPushButton("◀ Site")
        self.next_site = QPushButton("Site ▶")
        for button, step, tip in (
            (self.prev_well, lambda: self.step_well(-1), "Previous imaged well (P)"),
            (self.next_well, lambda: self.step_well(1), "Next imaged well (N)"),
            (self.prev_site, lambda: self.step_site(-1), "Previous site (Shift+S)"),
            (self.next_site, lambda: self.step_site(1), "Next site (S)"),
        ):
            button.clicked.connect(step)
            button.setToolTip(tip)
        self.where = QLabel("")

        open_row = QHBoxLayout()
        open_row.addWidget(self.open_button)
        form = QFormLayout()
        form.addRow("File pattern", self.pattern)
        form.addRow("Plate format", self.plate_format)
        plate_row = QHBoxLayout()
        plate_row.addWidget(self.plates, 1)
        plate_row.addWidget(self.close_button)
        form.addRow("Plate", plate_row)
        form.addRow("Colour by", self.color_by)
        nav = QHBoxLayout()
        for button in (self.prev_well, self.next_well, self.prev_site, self.next_site):
            nav.addWidget(button)
        # The last error of opening a plate, until dismissed (with the suggested pattern).
        self.errors = ErrorPanel()
        layout = scrolling_layout(self)
        layout.addLayout(open_row)
        layout.addLayout(form)
        layout.addWidget(self.errors)  # under the pattern field it may fill
        layout.addWidget(self.info)
        layout.addWidget(self.trust)
        layout.addWidget(self.channels_box)
        layout.addWidget(self.grid)
        layout.addWidget(self.legend)
        layout.addLayout(nav)
        layout.addWidget(self.where)
        layout.addStretch()
        for keys, action in (
            ("N", lambda: self.step_well(1)),
            ("P", lambda: self.step_well(-1)),
            ("S", lambda: self.step_site(1)),
            ("Shift+S", lambda: self.step_site(-1)),
        ):
            shortcut = QShortcut(QKeySequence(keys), self)
            # Only while the dock has focus: napari's canvas keeps its own keys.
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(action)

    def _connect(self) -> None:
        observe(self, self.session.plates_changed, self._refresh_plates)
        observe(self, self.session.current_changed, self._on_current_changed)
        observe(self, self.session.platemap_changed, self._on_platemap_changed)
        # A new result is drawn in a later turn: with the run's end, the overlay and the
        # other docks it made one freeze of the viewer (docs/gui-responsiveness.md).
        self._result_timer = later_timer(self, self._show_result)
        observe(self, self.session.result_changed, self._on_result_changed)
        observe(self, self.session.channels_changed, lambda _plate_id: self.refresh())
        self.viewer.layers.events.inserted.connect(lambda event: self._adopt_layers([event.value]))
        # Segmented fields come and go in bursts: redraw the profile colouring once after.
        self._cells_timer = QTimer(self)
        self._cells_timer.setSingleShot(True)
        self._cells_timer.setInterval(300)
        self._cells_timer.timeout.connect(self._on_cells_layers)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(lambda _event: self._cells_timer.start())

    def _on_cells_layers(self) -> None:
        if self.plate_id is None:
            return
        if self.color_by.currentText() == PROFILE:
            self.refresh()
        else:
            self._enable_profile_mode(bool(cells_layers(self.viewer)))

    # -- plates -----------------------------------------------------------------
    @property
    def plate_id(self) -> str | None:
        """Id of the plate shown in the dock."""
        text = self.plates.currentText()
        return text if text in self.session.plates else None

    def open_dialog(self) -> None:
        """Ask for a plate folder and open it."""
        folder = self.choose_folder()
        if folder:
            self.open_folder(folder)

    def open_folder(self, path: str | Path, *, show: bool = True) -> Plate | None:
        """Open a plate folder (with the pattern field), add it and show its first field.

        Errors (not a plate, a bad pattern) become notifications; returns None then.
        """
        try:
            plate, platemap, warnings = load_plate(
                path, self.pattern.text().strip() or None, self.chosen_format()
            )
        except PhenoadaptError as exc:
            self._open_failed(path, exc, show)
            return None
        self.errors.clear()
        if not self._may_replace(plate):
            return None
        for warning in warnings:
            notify("warning", warning)
        self.session.add_plate(plate, platemap)
        self.select_plate(plate.plate_id)
        notify(
            "info",
            f"Opened plate {plate.plate_id} ({plate.format}, "
            f"{_count(len(plate.wells), 'well')} imaged, "
            f"{plate.n_fields} fields, channels {', '.join(plate.channel_names)}).",
        )
        if show and plate.wells and self.show_well(plate.plate_id, plate.wells[0]):
            self.viewer.reset_view()  # fit the new field in the canvas
        return plate

    def _open_failed(self, path: str | Path, exc: PhenoadaptError, show: bool) -> None:
        """Say why a folder did not open, in the dock; offer a suggested file-name pattern.

        A folder whose names no layout knows comes with a pattern for them
        (``NoLayoutError.suggestion``): the button puts it in the pattern field
        and opens the folder again, as ``--pattern`` would on the command line.
        """
        message = f"phenoadapt could not open {path}: {exc}"
        notify("error", message)
        suggestion = getattr(exc, "suggestion", None)
        fix = None
        if suggestion and suggestion != self.pattern.text().strip():

            def use_suggestion() -> None:
                self.pattern.setText(suggestion)
                self.open_folder(path, show=show)

            fix = ("Use the suggested pattern and open", use_suggestion)
        self.errors.show_error(message, fix)

    def chosen_format(self) -> int | None:
        """The plate format chosen for opening (None: automatic)."""
        text = self.plate_format.currentText().split("-")[0]
        return int(text) if text.isdigit() else None

    def _may_replace(self, plate: Plate) -> bool:
        """Whether a newly opened plate may take the place of an open one of the same id."""
        old = self.session.plates.get(plate.plate_id)
        if old is None:
            return True
        platemap = self.session.platemaps.get(plate.plate_id)
        if platemap is not None and platemap.modified:
            return self.ask(
                "Replace the open plate?",
                f"Plate {plate.plate_id} is open already and its plate map has unsaved changes. "
                "Open it again and lose those changes?",
            )
        return True

    def close_plate(self, plate_id: str | None = None) -> bool:
        """Close a plate (the one shown by default); asks first when its map has unsaved edits."""
        plate_id = plate_id or self.plate_id
        if plate_id is None:
            return False
        platemap = self.session.platemaps.get(plate_id)
        if (
            platemap is not None
            and platemap.modified
            and not self.ask(
                "Discard plate map changes?",
                f"The plate map of {plate_id} has unsaved changes (save them in the Plate map "
                "dock). Close the plate and lose them?",
            )
        ):
            return False
        self.session.close_plate(plate_id)
        return True

    def select_plate(self, plate_id: str) -> None:
        """Show a plate in the dock."""
        select_item(self.plates, plate_id)

    def _refresh_plates(self) -> None:
        paths = {pid: str(p.path or "") for pid, p in self.session.plates.items()}
        fill_plate_combo(self.plates, list(paths), tooltips=paths)
        self.refresh()

    def _adopt_layers(self, layers: list | None = None) -> None:
        """Add plates whose fields the reader or the sample put on screen (newest layers first)."""
        known = {str(p.path) for p in self.session.plates.values() if p.path is not None}
        for layer in reversed(list(self.viewer.layers)) if layers is None else layers:
            info = layer.metadata.get(META_KEY)
            if not isinstance(info, dict) or "channel" not in info:
                continue
            path = str(info.get("plate_path") or "")
            if not path or path in known:
                continue
            known.add(path)
            if path in self._not_adoptable:
                continue
            try:
                plate, platemap, _warnings = load_plate(path)
            except PhenoadaptError:
                # E.g. layers of a plate that needs a pattern: open it with the button.
                self._not_adoptable.add(path)
                continue
            if plate.plate_id in self.session.plates:
                continue
            self.session.add_plate(plate, platemap)
            well, site = str(info.get("well")), int(info.get("site", 1))
            if well in plate.sites:
                self.session.set_current(FieldKey(plate.plate_id, well, site))

    # -- fields -----------------------------------------------------------------
    def show_well(self, plate_id: str, well: str, site: int | None = None) -> bool:
        """Show a field through the session; errors become notifications."""
        try:
            self.session.show_field(plate_id, well, site)
        except (PhenoadaptError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            notify("error", f"Cannot show well {well} of plate {plate_id}: {message}")
            return False
        return True

    def on_well_clicked(self, well: str) -> None:
        """Show the first field of a clicked well (a note when it was not imaged)."""
        plate_id = self.plate_id
        if plate_id is None:
            return
        if well not in self.session.plates[plate_id].sites:
            self.where.setText(f"Well {well} was not imaged.")
            return
        self.show_well(plate_id, well)

    def _position(self) -> tuple[Plate, str, int] | None:
        """The plate shown, and the well and site on screen (its first field when elsewhere)."""
        plate_id = self.plate_id
        if plate_id is None:
            return None
        plate = self.session.plates[plate_id]
        current = self.session.current
        if current is not None and current.plate_id == plate_id and current.well in plate.sites:
            return plate, current.well, current.site
        if not plate.wells:
            return None
        return plate, plate.wells[0], plate.sites_of(plate.wells[0])[0]

    def step_well(self, step: int) -> None:
        """Show the next (+1) or previous (-1) imaged well, first site."""
        position = self._position()
        if position is None:
            return
        plate, well, _site = position
        wells = plate.wells
        index = min(max(wells.index(well) + step, 0), len(wells) - 1)
        if wells[index] != well or self.session.current is None:
            self.show_well(plate.plate_id, wells[index])

    def step_site(self, step: int) -> None:
        """Show the next (+1) or previous (-1) site of the well on screen."""
        position = self._position()
        if position is None:
            return
        plate, well, site = position
        sites = plate.sites_of(well)
        index = sites.index(site) if site in sites else 0
        index = min(max(index + step, 0), len(sites) - 1)
        if sites[index] != site or self.session.current is None:
            self.show_well(plate.plate_id, well, sites[index])

    # -- drawing ----------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw the grid, legend, labels and buttons for the plate shown."""
        plate_id = self.plate_id
        has_plate = plate_id is not None
        for widget in (self.close_button, self.color_by, self.prev_well, self.next_well,
                       self.prev_site, self.next_site):  # fmt: skip
            widget.setEnabled(has_plate)
        if not has_plate:
            self.grid.set_imaged([])
            self.grid.set_colors({})
            self.grid.set_marks()
            self.grid.set_current(None)
            self.legend.clear()
            self.info.setText("No plate open: open a plate folder, or drop one onto napari.")
            self.where.setText("")
            self.trust.setText("")
            self._show_channels(None)
            return
        plate = self.session.plates[plate_id]
        platemap = self.session.platemaps.get(plate_id)
        wells = result_wells(self.session.result, plate_id)
        self._enable_result_modes(not wells.empty)
        self.grid.set_format(plate.format)
        self.grid.set_imaged(plate.wells)
        self._enable_profile_mode(bool(cells_layers(self.viewer)))
        mode = self.color_by.currentText()
        if mode == PROFILE:
            colours, legend = self._profile_colours(plate_id)
            title = legend.title
        else:
            colours, legend, title = color_wells(
                mode, platemap, wells, mode_palette(self.session, mode)
            )
        self.grid.set_colors(colours)
        self.grid.set_marks(*well_marks(platemap, plate))
        if isinstance(legend, list):
            self.legend.set_categories(legend, title)
        else:
            self.legend.set_colorbar(legend)
        self.grid.set_tooltips(well_tooltips(plate, platemap, wells, plate.format))
        sites = sorted({len(s) for s in plate.sites.values()})
        self.info.setText(
            f"{plate.plate_id}: {plate.format} plate, {_count(len(plate.wells), 'well')} imaged "
            f"({'/'.join(map(str, sites))} site{'s' if sites != [1] else ''} each), "
            f"{len(plate.channels)} channels ({', '.join(plate.channel_names)})."
        )
        self.trust.setText(self._trust_text(plate_id))
        self._show_channels(plate_id)
        self._update_position()

    def _trust_text(self, plate_id: str) -> str:
        """The plate-trust reading of the plate shown ("" without a run or a reference)."""
        result = self.session.result
        if result is None:
            return ""
        if self._trust[0] is not result:  # computed once per result, not per redraw
            self._trust = (result, {t.plate: t for t in run_trust(result)})
        trust = self._trust[1].get(str(plate_id))
        return f"Trust: {trust.reading()}." if trust is not None else ""

    def _show_channels(self, plate_id: str | None) -> None:
        """Fill the channel table; open it when the channels need the user's eye."""
        if plate_id != self.channel_table.plate_id:
            self.channel_table.show_plate(plate_id)
            plate = self.session.plates.get(plate_id) if plate_id else None
            needs_eye = plate is not None and any(
                c.is_guess or c.role is ChannelRole.OTHER for c in plate.channels
            )
            if needs_eye:
                self.channels_box.expand(animate=False)
            else:
                self.channels_box.collapse(animate=False)

    def _profile_colours(self, plate_id: str) -> tuple[dict[str, QColor], ColorBar]:
        """Wells coloured by how far their measurement profile is from the controls."""
        title = "Profile distance from controls (RMS robust z)"
        try:
            key = activity_key(self.viewer, self.session)
            if self._activity[0] != key:  # the grid redraws often; profiles cost seconds
                self._activity = (key, well_activity(self.viewer, self.session))
            values = self._activity[1].get(str(plate_id), {})
        except PhenoadaptError as exc:
            if str(exc) != self._profile_error:  # once per problem, not per redraw
                self._profile_error = str(exc)
                notify("warning", str(exc))
            values = {}
        else:
            self._profile_error = ""
        finite = [v for v in values.values() if np.isfinite(v)]
        # From 0; the top at the 95th percentile so one extreme well does not flatten the rest.
        vmax = max(2.0, float(np.percentile(finite, 95))) if finite else 2.0
        colours, bar = value_colors(values, 0.0, vmax, "magma", title)
        return colours, bar

    def _enable_profile_mode(self, enabled: bool) -> None:
        self._enable_modes((PROFILE,), enabled, "Segment wells (Segment dock, Scope: Wells) first.")

    def _enable_result_modes(self, enabled: bool) -> None:
        self._enable_modes(RESULT_MODES, enabled)

    def _enable_modes(self, modes: tuple[str, ...], enabled: bool, why_not: str = "") -> None:
        """Offer colourings or grey them out; a greyed-out current one falls back to Role."""
        model = self.color_by.model()
        for mode in modes:
            item = model.item(COLOR_MODES.index(mode))
            item.setEnabled(enabled)
            if why_not:
                item.setToolTip("" if enabled else why_not)
        if not enabled and self.color_by.currentText() in modes:
            self.color_by.blockSignals(True)  # refresh() is running already
            self.color_by.setCurrentText(ROLE)
            self.color_by.blockSignals(False)

    def _update_position(self) -> None:
        current = self.session.current
        plate_id = self.plate_id
        if current is None or current.plate_id != plate_id:
            self.grid.set_current(None)
            self.where.setText("Click a well to show its first field.")
            return
        plate = self.session.plates[plate_id]
        sites = plate.sites_of(current.well)
        self.grid.set_current(current.well)
        wells = plate.wells
        index = wells.index(current.well)
        site_index = sites.index(current.site) if current.site in sites else 0
        self.prev_well.setEnabled(index > 0)
        self.next_well.setEnabled(index < len(wells) - 1)
        self.prev_site.setEnabled(site_index > 0)
        self.next_site.setEnabled(site_index < len(sites) - 1)
        self.where.setText(
            f"On screen: well {current.well} ({index + 1} of {len(wells)}), "
            f"site {current.site} ({site_index + 1} of {len(sites)})."
        )

    # -- session signals ----------------------------------------------------------
    def _on_current_changed(self) -> None:
        current = self.session.current
        if current is not None and current.plate_id != self.plate_id:
            self.select_plate(current.plate_id)  # refreshes through the combo
        self.refresh()

    def _on_platemap_changed(self, plate_id: str) -> None:
        if plate_id == self.plate_id:
            self.refresh()

    def _on_result_changed(self) -> None:
        if self.session.result is None:  # at once: no stale predictions on the grid
            self._result_timer.stop()
            self._show_result()
        else:
            self._result_timer.start()

    @property
    def refresh_pending(self) -> bool:
        """Whether a new result is still to be drawn (in a later event-loop turn)."""
        return self._result_timer.isActive()

    def _show_result(self) -> None:
        """Draw the session's result: a fresh one in "Predicted MoA", redrawn once."""
        plate_id = self.plate_id
        has_rows = plate_id is not None and not result_wells(self.session.result, plate_id).empty
        if has_rows:
            self._enable_result_modes(True)
            # A fresh result is what the user wants to see.  Signals blocked: the combo
            # would redraw the grid, then this method again (two redraws per result).
            with QSignalBlocker(self.color_by):
                self.color_by.setCurrentText(PREDICTED)
        self.refresh()


def _count(n: int, noun: str) -> str:
    """``1 well``, ``2 wells``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
