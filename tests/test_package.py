"""The package installs, imports without a display and ships a valid napari manifest."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import phenoadapt
from phenoadapt.cli import main


def test_version_is_pep440():
    parts = phenoadapt.__version__.split(".")
    assert len(parts) >= 2 and all(p.isdigit() for p in parts[:2])


def test_cli_version_and_help(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert phenoadapt.__version__ in capsys.readouterr().out
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "usage: phenoadapt" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "phenoadapt", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "phenoadapt" in out.stdout


def test_core_imports_without_qt():
    # A fresh interpreter: importing every core module must not pull in Qt or napari.
    code = (
        "import sys, pkgutil, importlib, phenoadapt\n"
        "for m in pkgutil.walk_packages(phenoadapt.__path__, 'phenoadapt.'):\n"
        "    if '.gui' not in m.name and m.name != 'phenoadapt.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "bad = [n for n in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'magicgui', 'superqt')"
        " if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_manifest_ships_in_package_and_validates():
    manifest = resources.files("phenoadapt").joinpath("napari.yaml")
    assert manifest.is_file()
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "phenoadapt", "--imports"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
