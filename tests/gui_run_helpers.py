"""Shared pieces of the Run, results and Export dock tests: a tiny plate, a model, a viewer.

The plate is a synthetic 96-well plate imaging six wells (two of them DMSO
controls on the control lattice) with two 256-pixel fields each, so a whole
run takes seconds.  The model is the shipped demo model; set
``PHENOADAPT_TEST_MODEL`` to a checkpoint to test another one (it must know the
plate's MoAs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phenoadapt.demo import DEMO_SEGMENTATION, demo_model_path
from phenoadapt.plate.synthetic import SyntheticPlateConfig, generate_plate

#: A01 and A07 are controls (lattice of period 6); the others are treated.
TINY_WELLS = ("A01", "A02", "A03", "A04", "A07", "A08")
TINY_CONFIG = SyntheticPlateConfig(n_wells=96, sites=2, field_shape=(256, 256), wells=TINY_WELLS)


def make_tiny_plate(folder: Path, plate_id: str = "TINY1", seed: int = 1) -> Path:
    """Write the tiny synthetic plate (with its plate map) and return its folder."""
    return generate_plate(folder, TINY_CONFIG, seed=seed, plate_id=plate_id).path


def model_path() -> Path:
    """The shipped demo model (or the checkpoint named by ``PHENOADAPT_TEST_MODEL``)."""
    return Path(os.environ.get("PHENOADAPT_TEST_MODEL") or demo_model_path())


def checkpoint_text() -> str:
    """What the Run dock's Model field gets: empty (the demo model) unless overridden."""
    return os.environ.get("PHENOADAPT_TEST_MODEL", "")


# Each test module imports the fixtures below, which makes pytest treat them as
# separate fixtures per module; this cache makes them computed once per session.
_SHARED: dict[str, object] = {}


@pytest.fixture(scope="session")
def tiny_plate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny plate shared by the GUI tests (never written to by them)."""
    if "plate" not in _SHARED:
        _SHARED["plate"] = make_tiny_plate(tmp_path_factory.mktemp("plates"))
    return _SHARED["plate"]


@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Napari notifications shown during a test: ``{"error": [...], "info": [...]}``."""
    import napari.utils.notifications as notifications

    shown: dict[str, list[str]] = {"error": [], "info": []}
    monkeypatch.setattr(notifications, "show_error", lambda m: shown["error"].append(str(m)))
    monkeypatch.setattr(notifications, "show_info", lambda m: shown["info"].append(str(m)))
    return shown


def open_in_viewer(viewer, plate_dir: Path):
    """Open a plate in the viewer's session and show its first field."""
    from phenoadapt.gui.session import get_session

    session = get_session(viewer)
    plate = session.open_plate(plate_dir)
    session.show_field(plate.plate_id, plate.wells[0])
    return session


SEGMENTATION = DEMO_SEGMENTATION


@pytest.fixture(scope="session")
def tiny_result(tiny_plate: Path):
    """A run result of the tiny plate (ERM: the quickest method), computed without the GUI."""
    if "result" in _SHARED:
        return _SHARED["result"]
    from phenoadapt.pipeline import RunConfig, run_plates
    from phenoadapt.plate import open_plate
    from phenoadapt.plate.platemap import read_platemap

    plate = open_plate(tiny_plate)
    platemap = read_platemap(tiny_plate / "platemap.csv", plate_format=plate.format)
    config = RunConfig(
        checkpoint=model_path(), method="erm", segmentation=SEGMENTATION, compare_unadapted=False
    )
    _SHARED["result"] = run_plates([plate], [platemap], config)
    return _SHARED["result"]
