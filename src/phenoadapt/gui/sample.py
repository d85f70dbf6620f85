"""napari sample-data contribution: a small synthetic Cell Painting plate.

File > Open Sample > phenoadapt > "Synthetic Cell Painting plate" writes a real
plate folder (Phenix layout, uint16 TIFFs, plate map, ground truth) into a new
temporary folder, and shows one treated field with its ground-truth cells.
Because the layers carry the plate folder in their metadata, the Plate dock
can open the whole plate from them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..plate import open_plate
from ..plate.synthetic import SyntheticPlateConfig, generate_plate, read_cells, read_masks
from .layers import LayerData, field_layer_data, field_metadata

#: Wells of the sample plate: two DMSO control wells and a treated well of each MoA row.
SAMPLE_WELLS: tuple[str, ...] = ("A01", "A07", "B02", "B03", "C04", "C05", "D02", "D03", "E04",
                                 "E05", "F02", "F03", "G04", "G05", "H06", "H07")  # fmt: skip
SAMPLE_SEED = 0


def sample_config() -> SyntheticPlateConfig:
    """Settings of the sample plate: 16 wells, 2 sites of 256 x 256 pixels."""
    return SyntheticPlateConfig(n_wells=96, sites=2, field_shape=(256, 256), wells=SAMPLE_WELLS)


def make_sample_plate(out_dir: str | Path | None = None, seed: int = SAMPLE_SEED) -> Path:
    """Write the sample plate and return its folder.

    Parameters
    ----------
    out_dir
        Parent folder; a new temporary folder when None (never overwrites anything).
    seed
        Seed of the plate (same seed, same pixels).
    """
    parent = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="phenoadapt-"))
    plate = generate_plate(parent, sample_config(), seed=seed, plate_id="sample_plate", workers=1)
    return plate.path


def synthetic_plate_sample() -> list[LayerData]:
    """Layers of one treated field of a freshly generated synthetic plate.

    Returns one image layer per channel (Cell Painting colours) and a Labels
    layer of the generator's ground-truth cells, whose ``features`` hold the
    true treatment and MoA of each cell.
    """
    folder = make_sample_plate()
    plate = open_plate(folder)
    cells = read_cells(folder)
    treated = cells[cells["Metadata_Role"] == "treated"]
    well = str(treated["Metadata_Well"].iloc[0]) if len(treated) else plate.wells[0]
    site = plate.sites_of(well)[0]
    layers = field_layer_data(plate, well, site)
    _nuclei, labels = read_masks(folder, well, site)
    here = cells[(cells["Metadata_Well"] == well) & (cells["Metadata_Site"] == site)]
    keep = [c for c in ("cell_id", "Metadata_Treatment", "Metadata_MoA", "responder") if c in here]
    features = here[keep].rename(columns={"cell_id": "index"}).reset_index(drop=True)
    layers.append(
        (
            labels,
            {
                "name": f"true cells [{plate.plate_id} {well} s{site}]",
                "features": features,
                "opacity": 0.35,
                "visible": False,
                "metadata": field_metadata(plate, well, site, kind="ground_truth_cells"),
            },
            "labels",
        )
    )
    return layers
