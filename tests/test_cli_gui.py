"""``phenoadapt gui``: napari with the docks, and a clear message without a display."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from phenoadapt.cli import main


def test_without_a_display_says_how_to_get_one(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["gui", "--demo"]) == 2
    assert "xvfb-run" in capsys.readouterr().err


@pytest.mark.gui
def test_opens_a_plate_with_the_docks_and_saves_a_screenshot(tmp_path, data_dir):
    shot = tmp_path / "gui.png"
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "phenoadapt", "gui", str(data_dir / "phenix_BR00143976"),
         "--screenshot", str(shot)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert shot.stat().st_size > 10_000


@pytest.mark.gui
def test_not_a_plate_is_an_error_not_a_traceback(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    out = subprocess.run(
        [sys.executable, "-m", "phenoadapt", "gui", str(tmp_path), "--screenshot",
         str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2
    assert "phenoadapt: error:" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.gui
def test_every_dock_is_added_in_two_tab_groups(make_napari_viewer):
    from phenoadapt.gui.app import DOCKS, add_docks

    viewer = make_napari_viewer()
    widgets = add_docks(viewer)
    assert list(widgets) == [name for name, _ in DOCKS]
    window = viewer.window._qt_window
    frames = {d.name: d for d in viewer.window._dock_widgets.values()}
    plate = next(f for n, f in frames.items() if n.startswith("Plate ("))
    tabbed = {f.name for f in window.tabifiedDockWidgets(plate)}
    assert any(n.startswith("Plate map") for n in tabbed)
