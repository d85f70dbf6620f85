"""The BBBC021 per-well profiles joined with their treatments and mechanisms of action.

BBBC021 (Caie et al. 2010; Ljosa et al. 2012, 2013): MCF-7 cells, 55 plates imaged in
10 weeks; each compound was imaged in one week only, so compound and week (the
experimental batch) are confounded.  Three tables, as kept in cytominergallery:

- per-well mean CellProfiler profiles, keyed by ``Image_Metadata_Plate`` and
  ``Image_Metadata_Well``;
- the image table, one row per field: plate, well, compound, concentration;
- the MoA table: (compound, concentration) -> mechanism of action.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema
from ..errors import TableError
from .table import feature_columns, read_table, require_columns

PROFILES_FILE = "ljosa_jbiomolscreen_2013_per_well_mean.csv.gz"
IMAGE_FILE = "BBBC021_v1_image.csv.gz"
MOA_FILE = "BBBC021_v1_moa.csv"

#: Compound name (without concentration); BBBC021's NSC/NSCB exclude the query's compound.
COMPOUND = "Metadata_Compound"
#: Replicate number of the well, from the image table.
REPLICATE = "Metadata_Replicate"
#: The negative-control compound of BBBC021.
CONTROL_COMPOUND = "DMSO"

_IMAGE_COLUMNS = {
    "Image_Metadata_Plate_DAPI": schema.PLATE,
    "Image_Metadata_Well_DAPI": schema.WELL,
    "Image_Metadata_Compound": COMPOUND,
    "Image_Metadata_Concentration": schema.CONCENTRATION,
    "Replicate": REPLICATE,
}


def treatment_name(compound: str, concentration: float) -> str:
    """``compound@concentration`` with the concentration in shortest form (``taxol@0.3``)."""
    return f"{compound}@{concentration:g}"


def _wells_from_images(images: pd.DataFrame) -> pd.DataFrame:
    """One row per (plate, well) with its compound, concentration and replicate."""
    require_columns(images, _IMAGE_COLUMNS, f"the BBBC021 image table ({IMAGE_FILE})")
    images = images[list(_IMAGE_COLUMNS)].rename(columns=_IMAGE_COLUMNS)
    keys = [schema.PLATE, schema.WELL]
    conflicting = images.groupby(keys)[[COMPOUND, schema.CONCENTRATION]].nunique().max(axis=1) > 1
    if conflicting.any():
        plate, well = conflicting[conflicting].index[0]
        raise TableError(f"{IMAGE_FILE}: well {well} of plate {plate} lists several treatments")
    return images.drop_duplicates(keys).reset_index(drop=True)


def load_bbbc021(folder: str | Path) -> pd.DataFrame:
    """Load the BBBC021 per-well profiles with treatment, MoA, batch and role.

    Parameters
    ----------
    folder
        Folder holding :data:`PROFILES_FILE`, :data:`IMAGE_FILE` and :data:`MOA_FILE`.

    Returns
    -------
    pandas.DataFrame
        One row per well (632), metadata first: ``Metadata_Plate``, ``Metadata_Well``,
        ``Metadata_Batch`` (the week, e.g. ``Week4``), ``Metadata_Compound``,
        ``Metadata_Concentration``, ``Metadata_Treatment`` (``compound@concentration``),
        ``Metadata_MoA`` (``DMSO`` for the controls), ``Metadata_Role`` (``control`` for
        DMSO, else ``treated``), ``Metadata_Replicate``; then the 516 features.

    Raises
    ------
    FileNotFoundError
        When one of the three files is missing from ``folder``.
    phenoadapt.errors.TableError
        When a well has no treatment in the image table or a treatment has no MoA.
    """
    folder = Path(folder)
    for name in (PROFILES_FILE, IMAGE_FILE, MOA_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} is missing; the BBBC021 folder needs {PROFILES_FILE}, "
                f"{IMAGE_FILE} and {MOA_FILE}"
            )
    profiles = read_table(folder / PROFILES_FILE).rename(
        columns={"Image_Metadata_Plate": schema.PLATE, "Image_Metadata_Well": schema.WELL}
    )
    require_columns(
        profiles, [schema.PLATE, schema.WELL], f"the BBBC021 profiles ({PROFILES_FILE})"
    )
    wells = _wells_from_images(read_table(folder / IMAGE_FILE))
    moa = read_table(folder / MOA_FILE).rename(
        columns={"compound": COMPOUND, "concentration": schema.CONCENTRATION, "moa": schema.MOA}
    )
    require_columns(
        moa, [COMPOUND, schema.CONCENTRATION, schema.MOA], f"the MoA table ({MOA_FILE})"
    )

    # Join on the two key columns only; the 516 features are attached at the end.
    table = profiles[[schema.PLATE, schema.WELL]].merge(
        wells, on=[schema.PLATE, schema.WELL], how="left", validate="one_to_one"
    )
    missing = table[COMPOUND].isna()
    if missing.any():
        row = table[missing].iloc[0]
        raise TableError(
            f"{missing.sum()} well(s) of {PROFILES_FILE} are not in {IMAGE_FILE}, e.g. plate "
            f"{row[schema.PLATE]} well {row[schema.WELL]}"
        )
    # Concentrations are floats in both tables; round so 0.3 matches 0.30000000001.
    table["_conc_key"] = np.round(table[schema.CONCENTRATION].astype(float), 9)
    moa["_conc_key"] = np.round(moa[schema.CONCENTRATION].astype(float), 9)
    table = table.merge(
        moa[[COMPOUND, "_conc_key", schema.MOA]],
        on=[COMPOUND, "_conc_key"],
        how="left",
        validate="many_to_one",
    )
    unannotated = table[schema.MOA].isna()
    if unannotated.any():
        row = table[unannotated].iloc[0]
        raise TableError(
            f"{unannotated.sum()} well(s) have no MoA in {MOA_FILE}, e.g. "
            f"{row[COMPOUND]} at {row[schema.CONCENTRATION]}"
        )

    is_control = table[COMPOUND] == CONTROL_COMPOUND
    meta = pd.DataFrame(
        {
            schema.PLATE: table[schema.PLATE],
            schema.WELL: table[schema.WELL],
            schema.BATCH: table[schema.PLATE].str.split("_").str[0],
            COMPOUND: table[COMPOUND],
            schema.CONCENTRATION: table[schema.CONCENTRATION].astype(float),
            schema.TREATMENT: [
                treatment_name(c, x)
                for c, x in zip(table[COMPOUND], table[schema.CONCENTRATION], strict=True)
            ],
            schema.MOA: table[schema.MOA],
            schema.ROLE: np.where(is_control, schema.Role.CONTROL.value, schema.Role.TREATED.value),
            REPLICATE: table[REPLICATE],
        }
    )
    features = feature_columns(profiles)
    return pd.concat([meta, profiles[features].reset_index(drop=True)], axis=1)
