"""The plate end-to-end benchmark's well choice and report (issue 14.5), without running it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import bench_plate_end_to_end as e2e  # noqa: E402

from phenoadapt import schema  # noqa: E402
from phenoadapt.plate.synthetic import design_plate  # noqa: E402


def test_subset_keeps_controls_and_plate_order():
    platemap, _ = design_plate(e2e.FIELD, np.random.default_rng(0))
    picked = e2e._subset(platemap, 48, seed=0)
    assert len(picked) == 48 and picked[schema.WELL].is_unique
    assert (picked[schema.ROLE] == "control").sum() >= 2
    order = [e2e.PLATE_384.wells().index(w) for w in picked[schema.WELL]]
    assert order == sorted(order)
    with pytest.raises(SystemExit, match="at least 3"):
        e2e._subset(platemap, 2, seed=0)


def test_report_extrapolates_cpu_seconds_to_the_plate():
    out = {
        "fields": 432, "workers": 2, "threads": 2, "cells": 30_000, "table_mb": 40.0,
        "cpu_per_field": (0.6, 0.5),
        "segmentation": (150.0, 259.2), "measurement": (120.0, 216.0), "crops": (30.0, 20.0),
        "adaptation": (1.0, 2.0), "prediction": (20.0, 40.0), "tables": (10.0, 9.0),
    }  # fmt: skip
    text = "\n".join(e2e.render(out, load=1.0))
    scale = e2e.FULL_FIELDS / 432
    # Segmentation: 259.2 CPU s over 2 processes, x 8 to the plate: 17.3 min.
    assert f"| {259.2 / 2 * scale / 60:.1f} min |" in text
    idle = sum(e2e.idle_seconds(out, stage) for stage in e2e.STAGES)
    assert f"**{idle * scale / 60:.1f} min**" in text
    assert "48 wells x 9 sites = 432 fields measured" in text
