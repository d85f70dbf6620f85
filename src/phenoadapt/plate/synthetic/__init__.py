"""Synthetic Cell Painting plates with known truth and a hierarchy of batch effects.

Plates are written as Opera Phenix folders (one uint16 TIFF per plane,
channels ch1..ch5 = DNA, ER, RNA, AGP, Mito) with a plate map and ground truth
(nucleus and cell masks, a per-cell table with treatment, MoA and responder
flag, and the technical effects used).  See ``docs/synthetic-plates.md``.

Entry points
------------
- :func:`render_field`: one field in memory (image, masks, per-cell table).
- :func:`generate_plate`: one plate folder.
- :func:`generate_experiment`: labs x batches x plates and an ``experiment.csv``.
"""

from .config import CHANNEL_NAMES, SyntheticPlateConfig
from .design import control_wells, design_plate
from .effects import BatchEffects, EffectStrengths, LabEffects, PlateEffects
from .field import FieldSpec, SyntheticField, render_field, render_spec
from .files import (
    is_synthetic_plate,
    mask_path,
    plane_name,
    read_cells,
    read_effects,
    read_masks,
)
from .generate import (
    OutputExistsError,
    SyntheticExperiment,
    SyntheticPlate,
    generate_experiment,
    generate_plate,
    plate_name,
)
from .phenotypes import COMPOUNDS, MOAS, PHENOTYPES, Compound, Phenotype

__all__ = [
    "BatchEffects",
    "CHANNEL_NAMES",
    "COMPOUNDS",
    "Compound",
    "EffectStrengths",
    "FieldSpec",
    "LabEffects",
    "MOAS",
    "OutputExistsError",
    "PHENOTYPES",
    "Phenotype",
    "PlateEffects",
    "SyntheticExperiment",
    "SyntheticField",
    "SyntheticPlate",
    "SyntheticPlateConfig",
    "control_wells",
    "design_plate",
    "generate_experiment",
    "generate_plate",
    "is_synthetic_plate",
    "mask_path",
    "plane_name",
    "plate_name",
    "read_cells",
    "read_effects",
    "read_masks",
    "render_field",
    "render_spec",
]
