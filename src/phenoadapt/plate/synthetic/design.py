"""Plate maps of synthetic plates: where the controls go and which compound each well gets.

Controls sit on a fixed staggered lattice (every ``1/control_fraction``-th
well, shifted by two columns per row), so every plate has controls in its edge
and inner wells, in every row and spread over the columns, as screening plate
layouts do.  Treated wells get the MoAs in equal numbers, or, under label
shift, in proportions drawn per plate from a Dirichlet distribution; within a
MoA, wells cycle through its compounds and concentrations; finally the treated
wells are shuffled over the free positions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ... import schema
from ...schema import Role
from ..wells import PlateFormat, well_position
from .config import SyntheticPlateConfig
from .phenotypes import CONTROL, compounds_of


def control_wells(fmt: PlateFormat, fraction: float) -> list[str]:
    """Wells holding DMSO controls: a staggered lattice covering about ``fraction`` of the plate.

    Parameters
    ----------
    fmt
        Plate format.
    fraction
        Wanted fraction of control wells (the lattice has period ``round(1/fraction)``).
    """
    period = max(2, round(1 / fraction))
    stagger = 2 if period > 2 else 1
    return [
        well
        for well in fmt.wells()
        if ((well_position(well)[1] - 1) + stagger * (well_position(well)[0] - 1)) % period == 0
    ]


def allocate(proportions: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` items by ``proportions`` with the largest-remainder rule (sums to total)."""
    proportions = np.asarray(proportions, float)
    exact = proportions / proportions.sum() * total
    counts = np.floor(exact).astype(int)
    # Stable sort: ties go to the earlier class, so the result is deterministic.
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def moa_proportions(config: SyntheticPlateConfig, rng: np.random.Generator) -> dict[str, float]:
    """Share of treated wells per MoA: equal, or drawn from Dirichlet(alpha) under label shift."""
    k = len(config.moas)
    if config.label_shift_alpha is None:
        p = np.full(k, 1.0 / k)
    else:
        p = rng.dirichlet(np.full(k, config.label_shift_alpha))
        if not np.all(np.isfinite(p)) or p.sum() <= 0:  # tiny alpha can underflow to 0/0
            p = np.eye(k)[rng.integers(k)]
    return {m: float(v) for m, v in zip(config.moas, p, strict=True)}


def design_plate(
    config: SyntheticPlateConfig, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The plate map of one synthetic plate.

    Parameters
    ----------
    config
        Plate settings (format, control fraction, MoAs, concentrations, label shift).
    rng
        Random generator of the plate (label-shift proportions and well shuffling).

    Returns
    -------
    platemap : DataFrame
        One row per imaged well in row-major order with ``Metadata_Well``,
        ``Metadata_Treatment``, ``Metadata_MoA``, ``Metadata_Concentration``
        (micromolar; 0 for DMSO) and ``Metadata_Role``.
    proportions : dict
        MoA -> share of treated wells it was drawn with.
    """
    fmt = config.format
    imaged = config.imaged_wells()
    controls = set(control_wells(fmt, config.control_fraction)) & set(imaged)
    if not controls:
        lattice = control_wells(fmt, config.control_fraction)
        raise ValueError(
            f"None of the {len(imaged)} chosen wells is a control well: include at least one of "
            f"{', '.join(lattice[:8])}... so the plate has DMSO controls."
        )
    free = [w for w in imaged if w not in controls]
    proportions = moa_proportions(config, rng)
    counts = allocate(np.array(list(proportions.values())), len(free))

    treatments: list[tuple[str, str, float]] = []
    for moa, count in zip(config.moas, counts, strict=True):
        combos = [(c.name, moa, conc) for c in compounds_of(moa) for conc in config.concentrations]
        treatments.extend(combos[i % len(combos)] for i in range(count))
    order = rng.permutation(len(free))
    by_well = {free[j]: treatments[i] for i, j in enumerate(order)}

    rows = []
    for well in imaged:
        if well in controls:
            rows.append((well, CONTROL, CONTROL, 0.0, Role.CONTROL.value))
        else:
            name, moa, conc = by_well[well]
            rows.append((well, name, moa, float(conc), Role.TREATED.value))
    columns = [schema.WELL, schema.TREATMENT, schema.MOA, schema.CONCENTRATION, schema.ROLE]
    return pd.DataFrame(rows, columns=columns), proportions
