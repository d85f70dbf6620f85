"""Cluster workers run without a display: the pipeline and CLI must not import Qt or napari."""

import subprocess
import sys

GUI_MODULES = ("qtpy", "napari", "PyQt6", "magicgui", "superqt")


def test_pipeline_and_cli_import_no_gui_packages() -> None:
    """A fresh interpreter importing phenoadapt.pipeline and phenoadapt.cli loads no GUI module."""
    code = (
        "import sys, phenoadapt.pipeline, phenoadapt.cli\n"
        f"print(sorted(m for m in {GUI_MODULES!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
