"""Dock widget "Plate map and controls": see treatments and roles, mark the controls.

CS-ARM-BN adapts a model with a plate's negative-control wells, so before a
run the user says which wells are controls.  The dock draws the plate map of
an open plate as a grid coloured by role, treatment or MoA and offers several
ways to set roles, all calling :class:`~phenoadapt.plate.platemap.PlateMap`
methods:

- select wells (click, Shift/Ctrl-click, drag a rectangle, click row letters
  or column numbers) and press Control, Treated or Excluded;
- choose a "click marks" brush, so every click or drag sets a role at once;
- mark every well of a treatment (usually DMSO) as a control.

Maps are loaded from CSV/TSV files (JUMP maps with their compound metadata)
and saved atomically; an existing file is replaced only after a question, and
unsaved edits are never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from .. import schema
from ..errors import PhenoadaptError
from ..palette import is_control
from ..plate import Plate
from ..plate.platemap import PlateMap, platemap_for_plate, write_platemap
from ..plate.platemap.canonical import listing
from ..plate.platemap.columns import EMPTY_TREATMENTS
from ..schema import Role
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
from .plate_dock import (
    MOA,
    ROLE,
    TREATMENT,
    color_wells,
    mode_palette,
    well_marks,
    well_tooltips,
)
from .plate_grid import ColorLegend, PlateGrid
from .session import PlateSession, get_session
from .tab_groups import join_tab_group

if TYPE_CHECKING:
    import napari

#: Colourings of the plate-map grid.
MAP_MODES: tuple[str, ...] = (ROLE, TREATMENT, MOA)
#: What a click or drag does: select, or set a role straight away.
BRUSHES: dict[str, Role | None] = {
    "select wells": None,
    "mark control": Role.CONTROL,
    "mark treated": Role.TREATED,
    "mark excluded": Role.EXCLUDED,
}
MAP_FILTER = "Plate maps (*.csv *.tsv *.txt *.tab *.csv.gz *.tsv.gz);;All files (*)"


class PlateMapDock(QWidget):
    """Plate map of an open plate: treatments and roles on a grid, role editing, load and save.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when the dock opens).

    Attributes
    ----------
    ask
        ``ask(title, text) -> bool``: yes/no questions (replace a file, drop
        unsaved edits); a message box, replaced in tests.
    choose_open_file
        ``choose_open_file(title) -> str``: the file dialog for loading ("" cancels).
    choose_save_file
        ``choose_save_file(suggested) -> str``: the file dialog for saving ("" cancels).
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        join_tab_group(self)  # with the other docks of its group once napari docks it
        self.viewer = napari_viewer
        self.session: PlateSession = get_session(napari_viewer)
        self.ask: Asker = lambda title, text: confirm(self, title, text)
        self.choose_open_file: Callable[[str], str] = lambda title: QFileDialog.getOpenFileName(
            self, title, "", MAP_FILTER
        )[0]
        self.choose_save_file: Callable[[str], str] = lambda suggested: QFileDialog.getSaveFileName(
            self,
            "Save the plate map",
            suggested,
            MAP_FILTER,
            # The dock asks itself, so the question can be tested and worded clearly.
            options=QFileDialog.Option.DontConfirmOverwrite,
        )[0]
        self._build()
        self._connect()
        self._refresh_plates()

    # -- layout ---------------------------------------------------------------
    def _build(self) -> None:
        self.plates = QComboBox()
        self.plates.currentIndexChanged.connect(lambda _i: self.refresh())
        self.color_by = QComboBox()
        self.color_by.addItems(MAP_MODES)
        self.color_by.currentTextChanged.connect(lambda _t: self.refresh())
        self.brush = QComboBox()
        self.brush.addItems(list(BRUSHES))
        self.brush.setToolTip(
            "What clicking or dragging over wells does: select them (then press a role button), "
            "or give them a role straight away."
        )
        self.grid = PlateGrid(multi_select=True)
        self.grid.setToolTip("")
        self.grid.selection_changed.connect(self._on_selection)
        self.grid.selection_finished.connect(self._on_gesture)
        self.legend = ColorLegend()
        self.selected = QLabel("No well selected.")
        self.selected.setWordWrap(True)
        self.role_buttons: dict[Role, QPushButton] = {}
        roles = QHBoxLayout()
        roles.addWidget(QLabel("Selected wells:"))
        for role, text in (
            (Role.CONTROL, "Control"),
            (Role.TREATED, "Treated"),
            (Role.EXCLUDED, "Excluded"),
        ):
            button = QPushButton(text)
            button.setToolTip(f"Make the selected wells {role.value}.")
            button.clicked.connect(lambda _c=False, r=role: self.set_role(r))
            roles.addWidget(button)
            self.role_buttons[role] = button
        self.treatments = QComboBox()
        self.treatments.setToolTip("Treatment whose wells are negative controls (usually DMSO).")
        self.only_these = QCheckBox("only these")
        self.only_these.setToolTip(
            "Make these wells the only controls: other control wells become treated "
            "(or excluded when they have no treatment)."
        )
        self.mark_button = QPushButton("Mark as controls")
        self.mark_button.clicked.connect(lambda: self.mark_treatment_controls())
        rule = QHBoxLayout()
        rule.addWidget(self.treatments, 1)
        rule.addWidget(self.only_these)
        rule.addWidget(self.mark_button)
        self.counts = QLabel("")
        self.warning = QLabel("")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #ff9f43; font-weight: bold;")
        self.load_button = QPushButton("Load map...")
        self.load_button.setToolTip(
            "A CSV/TSV plate map: one row per well (well, treatment, MoA, role...)."
        )
        self.load_button.clicked.connect(self.load_dialog)
        self.jump_button = QPushButton("Load JUMP map...")
        self.jump_button.setToolTip(
            "A JUMP plate map (well_position, broad_sample) and then its compound metadata file."
        )
        self.jump_button.clicked.connect(self.load_jump_dialog)
        self.save_button = QPushButton("Save map...")
        self.save_button.clicked.connect(self.save_dialog)
        self.source = QLabel("")
        self.source.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Plate", self.plates)
        form.addRow("Colour by", self.color_by)
        form.addRow("Click / drag", self.brush)
        files = QHBoxLayout()
        files.addWidget(self.load_button)
        files.addWidget(self.jump_button)
        files.addWidget(self.save_button)
        layout = scrolling_layout(self)
        layout.addLayout(form)
        layout.addWidget(self.grid)
        layout.addWidget(self.legend)
        layout.addWidget(self.selected)
        layout.addLayout(roles)
        controls = QFormLayout()
        controls.addRow("Controls by treatment", rule)
        layout.addLayout(controls)
        layout.addWidget(self.counts)
        layout.addWidget(self.warning)
        layout.addLayout(files)
        layout.addWidget(self.source)
        layout.addStretch()

    def _connect(self) -> None:
        observe(self, self.session.plates_changed, self._refresh_plates)
        observe(self, self.session.platemap_changed, self._on_platemap_changed)
        # A new result (its wells' MoAs) is drawn in a later turn, apart from the run's end.
        self._result_timer = later_timer(self, self.refresh)
        observe(self, self.session.result_changed, lambda: self._result_timer.start())
        observe(self, self.session.current_changed, self._on_current_changed)

    # -- state ------------------------------------------------------------------
    @property
    def plate_id(self) -> str | None:
        """Id of the plate whose map the dock shows."""
        text = self.plates.currentText()
        return text if text in self.session.plates else None

    @property
    def platemap(self) -> PlateMap | None:
        """The map shown (the session's object: edits change it in place)."""
        plate_id = self.plate_id
        return None if plate_id is None else self.session.platemaps.get(plate_id)

    def select_plate(self, plate_id: str) -> None:
        """Show the map of an open plate."""
        select_item(self.plates, plate_id)

    def _refresh_plates(self) -> None:
        on_screen = self.session.current.plate_id if self.session.current is not None else None
        fill_plate_combo(self.plates, list(self.session.plates), fallback=on_screen)
        self.refresh()

    # -- editing ----------------------------------------------------------------
    def set_role(self, role: Role | str, wells: list[str] | None = None) -> list[str]:
        """Give wells (the selection by default) a role; returns the wells that changed.

        Wells a loaded map does not list are added to it with that role.
        """
        platemap = self.platemap
        wells = self.grid.selection() if wells is None else list(wells)
        if platemap is None or not wells:
            if platemap is not None:
                notify("info", "Select wells first: click, drag, or click a row or column header.")
            return []
        role = Role(role)
        on_map = [w for w in wells if w in platemap]
        missing = [w for w in wells if w not in platemap]
        compounds = compound_wells(platemap, on_map) if role is Role.CONTROL else {}
        self.grid.clear_selection()
        try:
            # Through the session, so every dock hears of the edit (even a failed one).
            with self.session.edit_platemap(self.plate_id) as platemap:
                changed = platemap.set_role(on_map, role) if on_map else []
                if missing:
                    platemap.assign(missing, role=role)
                    changed += missing
        except PhenoadaptError as exc:
            notify("error", str(exc))
            return []
        self._warn_compound_controls({w: t for w, t in compounds.items() if w in changed})
        return changed

    def mark_treatment_controls(self, treatment: str | None = None) -> list[str]:
        """Make every well of a treatment (the chosen one by default) a control."""
        platemap = self.platemap
        treatment = treatment or self.treatments.currentText()
        if platemap is None or not treatment:
            notify("warning", "The plate map names no treatments: load a plate map first.")
            return []
        before = set(platemap.controls)
        compounds = compound_wells(platemap, platemap.wells_where(treatment=treatment))
        self.grid.clear_selection()
        try:
            with self.session.edit_platemap(self.plate_id) as platemap:
                wells = platemap.mark_controls_where(
                    treatment=treatment, replace=self.only_these.isChecked()
                )
        except PhenoadaptError as exc:
            notify("error", str(exc))
            return []
        self._warn_compound_controls(
            {w: t for w, t in compounds.items() if w in wells and w not in before}
        )
        return wells

    def _warn_compound_controls(self, compounds: dict[str, str]) -> None:
        """Warn when wells of a compound became negative controls (CS-ARM-BN adapts with them)."""
        if not compounds:
            return
        names = sorted(set(compounds.values()), key=str.casefold)
        wells = list(compounds)
        notify(
            "warning",
            f"{len(wells)} well{'s' if len(wells) != 1 else ''} ({listing(wells, 6)}) of "
            f"{listing(names, 4)} marked as negative control{'s' if len(wells) != 1 else ''}: "
            f"{'that is a treated compound' if len(names) == 1 else 'those are treated compounds'}"
            ", not DMSO or a control of the plate map. CS-ARM-BN adapts the model with control "
            "wells, so a compound among them biases every prediction; press Treated to undo.",
        )

    def _on_selection(self, wells: list[str]) -> None:
        if not wells:
            self.selected.setText("No well selected.")
        else:
            self.selected.setText(
                f"{len(wells)} well{'s' if len(wells) != 1 else ''} selected: {listing(wells, 8)}."
            )

    def _on_gesture(self, wells: list[str]) -> None:
        role = BRUSHES.get(self.brush.currentText())
        if role is not None and wells:
            self.set_role(role, wells)

    # -- files ------------------------------------------------------------------
    def _may_discard(self, what: str) -> bool:
        """True when the map has no unsaved edits, or the user agrees to lose them."""
        platemap = self.platemap
        if platemap is None or not platemap.modified:
            return True
        return self.ask(
            "Discard plate map changes?",
            f"The plate map of {self.plate_id} has unsaved changes. {what} and lose them?",
        )

    def load_dialog(self) -> None:
        """Ask for a plate map file and load it."""
        if self.plate_id is None:
            notify("warning", "Open a plate in the Plate dock first.")
            return
        path = self.choose_open_file("Load a plate map")
        if path:
            self.load_map(path)

    def load_jump_dialog(self) -> None:
        """Ask for a JUMP plate map and its compound metadata, and load them."""
        if self.plate_id is None:
            notify("warning", "Open a plate in the Plate dock first.")
            return
        path = self.choose_open_file("Load a JUMP plate map (e.g. JUMP-MOA_compound_platemap.tsv)")
        if not path:
            return
        metadata = self.choose_open_file(
            "Its compound metadata (e.g. JUMP-MOA_compound_metadata.tsv)"
        )
        if metadata:
            self.load_map(path, compound_metadata=metadata)

    def load_map(self, path: str | Path, compound_metadata: str | Path | None = None) -> bool:
        """Load a plate map for the plate shown, replacing its map (after asking, if edited).

        Returns True when the map was loaded; problems become notifications.
        """
        plate_id = self.plate_id
        if plate_id is None:
            notify("warning", "Open a plate in the Plate dock first.")
            return False
        if not self._may_discard(f"Load {Path(path).name}"):
            return False
        plate = self.session.plates[plate_id]
        try:
            platemap, notes = platemap_for_plate(plate, path, compound_metadata=compound_metadata)
        except PhenoadaptError as exc:
            notify("error", f"Plate map not loaded: {exc}")
            return False
        if notes:
            notify("warning", "\n".join(notes))
        self.session.set_platemap(plate_id, platemap)
        return True

    def suggested_path(self) -> str:
        """Where to save by default: the map's file, else next to the plate folder."""
        platemap, plate_id = self.platemap, self.plate_id
        if platemap is not None and platemap.source is not None:
            return str(platemap.source)
        plate = self.session.plates.get(plate_id) if plate_id else None
        folder = Path(plate.path).parent if plate is not None and plate.path else Path.cwd()
        return str(folder / f"{plate_id or 'plate'}_platemap.csv")

    def save_dialog(self) -> None:
        """Ask where to save the map and save it."""
        if self.platemap is None:
            notify("warning", "Open a plate in the Plate dock first.")
            return
        path = self.choose_save_file(self.suggested_path())
        if path:
            self.save_map(path)

    def save_map(self, path: str | Path) -> bool:
        """Save the map shown; an existing file is replaced only when the user agrees."""
        platemap = self.platemap
        if platemap is None:
            return False
        path = Path(path)
        overwrite = False
        if path.is_file():
            if not self.ask("Replace the file?", f"{path} already exists. Replace it?"):
                return False
            overwrite = True
        try:
            write_platemap(platemap, path, overwrite=overwrite)
        except (PhenoadaptError, OSError) as exc:
            notify("error", f"Plate map not saved: {exc}")
            return False
        notify("info", f"Saved the plate map of {self.plate_id} to {path}.")
        self.refresh()
        return True

    # -- drawing ----------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw grid, legend, counts and labels for the map shown."""
        platemap, plate_id = self.platemap, self.plate_id
        enabled = platemap is not None
        for widget in (self.color_by, self.brush, self.mark_button, self.treatments,
                       self.only_these, self.load_button, self.jump_button, self.save_button,
                       *self.role_buttons.values()):  # fmt: skip
            widget.setEnabled(enabled)
        if platemap is None:
            self.grid.set_imaged([])
            self.grid.set_colors({})
            self.grid.set_marks()
            self.legend.clear()
            self.counts.setText("")
            self.warning.setText("Open a plate in the Plate dock to see and edit its plate map.")
            self.source.setText("")
            return
        plate = self.session.plates[plate_id]
        self.grid.set_format(plate.format)
        self.grid.set_imaged(plate.wells)
        mode = self.color_by.currentText()
        colours, legend, title = color_wells(
            mode, platemap, _empty(), mode_palette(self.session, mode)
        )
        self.grid.set_colors(colours)
        self.legend.set_categories(legend, title)
        # Roles stay readable when colours show treatments: controls marked, excluded hatched.
        self.grid.set_marks(*well_marks(platemap, plate))
        self.grid.set_tooltips(well_tooltips(plate, platemap, _empty(), plate.format))
        self._refresh_treatments(platemap)
        self._refresh_counts(platemap, plate)

    def _refresh_treatments(self, platemap: PlateMap) -> None:
        current = self.treatments.currentText()
        names = platemap.treatments()
        self.treatments.blockSignals(True)
        self.treatments.clear()
        self.treatments.addItems(names)
        if current in names:
            self.treatments.setCurrentText(current)
        else:  # DMSO is the usual negative control
            default = next((n for n in names if n.casefold() == "dmso"), None)
            if default is not None:
                self.treatments.setCurrentText(default)
        self.treatments.blockSignals(False)

    def _refresh_counts(self, platemap: PlateMap, plate: Plate) -> None:
        counts = platemap.counts()
        imaged = set(plate.wells)
        imaged_controls = sum(w in imaged for w in platemap.controls)
        self.counts.setText(
            f"{counts[Role.CONTROL]} control · {counts[Role.TREATED]} treated · "
            f"{counts[Role.EXCLUDED]} excluded wells ({imaged_controls} controls imaged)"
        )
        if imaged_controls == 0:
            self.warning.setText(
                "No imaged control wells: CS-ARM-BN adapts the model with negative controls "
                "(e.g. DMSO). Mark them: pick their treatment below, or select wells and press "
                "Control."
            )
        else:
            self.warning.setText("")
        if platemap.modified:
            self.source.setText("Unsaved changes: press Save map... to keep them.")
        elif platemap.source is not None:
            self.source.setText(f"Saved as {platemap.source}")
        else:
            self.source.setText("Not saved to a file yet.")

    # -- session signals ----------------------------------------------------------
    def _on_platemap_changed(self, plate_id: str) -> None:
        if plate_id == self.plate_id:
            self.refresh()

    def _on_current_changed(self) -> None:
        current = self.session.current
        if current is not None and current.plate_id != self.plate_id:
            self.select_plate(current.plate_id)


def compound_wells(platemap: PlateMap, wells: list[str]) -> dict[str, str]:
    """Wells (of ``wells``) not yet controls whose treatment is a compound, with its name.

    A treatment is not a compound when it is DMSO or another control name
    (:func:`phenoadapt.palette.is_control`), empty/blank, or one the plate map
    itself gives to control wells other than these.
    """
    frame = platemap.to_frame().set_index(schema.WELL)
    asked = set(wells)
    others = frame[(frame[schema.ROLE] == Role.CONTROL.value) & ~frame.index.isin(asked)]
    map_controls = {str(t) for t in others[schema.TREATMENT].dropna()}
    found = {}
    for well in wells:
        if well not in frame.index or frame.at[well, schema.ROLE] == Role.CONTROL.value:
            continue
        treatment = frame.at[well, schema.TREATMENT]
        if not isinstance(treatment, str) or not treatment.strip():
            continue
        if treatment.strip().casefold() in EMPTY_TREATMENTS:
            continue
        if not is_control(treatment, map_controls):
            found[well] = treatment
    return found


def _empty() -> pd.DataFrame:
    """No run results: the plate-map dock shows the map only."""
    return pd.DataFrame()
