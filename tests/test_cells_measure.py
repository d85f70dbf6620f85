"""Per-cell measurements, the per-cell table and per-site / per-well profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenoadapt import schema
from phenoadapt.cells import (
    CELL_COUNT,
    MeasureParams,
    Segmentation,
    aggregate_profiles,
    cell_table,
    feature_columns,
    measure_cells,
)
from phenoadapt.errors import CellsError
from phenoadapt.plate import PlateMap
from phenoadapt.plate.channels import Channel, ChannelRole, make_channels

CHANNELS = make_channels(["1", "2", "3"], ["brightfield", "DNA", "ER"])


def _two_cells() -> tuple[np.ndarray, Segmentation]:
    """Two square cells with square nuclei, known intensities."""
    cells = np.zeros((40, 60), np.int32)
    nuclei = np.zeros_like(cells)
    cells[5:25, 5:25] = 1
    nuclei[10:20, 10:20] = 1
    cells[5:35, 30:55] = 2
    nuclei[8:18, 32:42] = 2  # off-centre
    rng = np.random.default_rng(0)
    dna = np.where(nuclei > 0, 1000.0, 50.0)
    er = rng.uniform(100, 200, cells.shape)
    bright = np.full(cells.shape, 7.0)
    return np.stack([bright, dna, er]).astype(np.float32), Segmentation(nuclei, cells)


def test_columns_follow_cellprofiler_names():
    image, seg = _two_cells()
    table = measure_cells(image, CHANNELS, seg)
    assert list(table.columns[:3]) == [schema.CELL_ID, schema.CENTROID_Y, schema.CENTROID_X]
    for column in (
        "Nuclei_AreaShape_Area",
        "Cells_AreaShape_FormFactor",
        "Cytoplasm_AreaShape_Area",
        "Cells_Intensity_MeanIntensity_DNA",
        "Nuclei_Intensity_MedianIntensity_ER",
        "Cytoplasm_Intensity_IntegratedIntensity_DNA",
        "Cytoplasm_Texture_Contrast_ER",
        "Nuclei_Texture_AngularSecondMoment_DNA",
    ):
        assert column in table.columns, column
    assert not any("brightfield" in c for c in table.columns)  # not measured by default
    assert feature_columns(table) == list(table.columns[3:])


def test_values_are_right():
    image, seg = _two_cells()
    table = measure_cells(image, CHANNELS, seg).set_index(schema.CELL_ID)
    assert table.loc[1, "Cells_AreaShape_Area"] == 400
    assert table.loc[1, "Nuclei_AreaShape_Area"] == 100
    assert table.loc[1, "Cytoplasm_AreaShape_Area"] == 300
    assert table.loc[2, "Cells_AreaShape_Area"] == 30 * 25
    assert (table.loc[1, schema.CENTROID_Y], table.loc[1, schema.CENTROID_X]) == (14.5, 14.5)
    assert table.loc[1, "Nuclei_Intensity_MeanIntensity_DNA"] == 1000
    assert table.loc[1, "Cytoplasm_Intensity_MaxIntensity_DNA"] == 50
    assert table.loc[1, "Cells_Intensity_IntegratedIntensity_DNA"] == 100 * 1000 + 300 * 50
    er = image[2][seg.cells == 2]
    assert table.loc[2, "Cells_Intensity_MedianIntensity_ER"] == pytest.approx(np.median(er))
    assert table.loc[2, "Cells_Intensity_UpperQuartileIntensity_ER"] == pytest.approx(
        np.quantile(er, 0.75)
    )
    assert table.loc[2, "Cells_Intensity_StdIntensity_ER"] == pytest.approx(er.std(), rel=1e-4)
    # A uniform nucleus has no texture contrast and a perfectly ordered co-occurrence matrix.
    assert table.loc[1, "Nuclei_Texture_Contrast_DNA"] == 0
    assert table.loc[1, "Nuclei_Texture_AngularSecondMoment_DNA"] == 1
    # A nucleus centred in its cell: the DNA mass is centred too.
    assert table.loc[1, "Cells_Intensity_MassDisplacement_DNA"] == pytest.approx(0, abs=1e-6)
    assert table.loc[2, "Cells_Intensity_MassDisplacement_DNA"] > 1


def test_random_texture_has_contrast_and_thin_objects_have_none():
    image, seg = _two_cells()
    seg.cells[36:38, 2:20] = 3  # two pixels thick: no pixel pairs 3 apart vertically
    seg.nuclei[36:38, 2:20] = 3
    table = measure_cells(image, CHANNELS, seg).set_index(schema.CELL_ID)
    assert table.loc[2, "Cytoplasm_Texture_Contrast_ER"] > 1
    assert np.isfinite(table.loc[3, "Nuclei_Texture_Contrast_ER"])  # horizontal pairs exist
    seg.cells[36:38, 2:20] = 0
    seg.nuclei[36:38, 2:20] = 0
    seg.cells[36, 2:4] = 3  # a 2-pixel cell: no pair at distance 3 in any direction
    seg.nuclei[36, 2:4] = 3
    table = measure_cells(image, CHANNELS, seg).set_index(schema.CELL_ID)
    assert np.isnan(table.loc[3, "Nuclei_Texture_Contrast_ER"])
    # Cell 3 is all nucleus: its cytoplasm is empty and measured as missing.
    assert np.isnan(table.loc[3, "Cytoplasm_AreaShape_Area"])


def test_channel_choice_names_and_options():
    image, seg = _two_cells()
    channels = [
        Channel("1", "Phase", ChannelRole.BRIGHTFIELD),
        Channel("2", "Hoechst 33342", ChannelRole.DNA),
        Channel("3", "GFP-tubulin", ChannelRole.OTHER),
    ]
    params = MeasureParams(channels=("GFP-tubulin",), texture=False, compartments=("Cells",))
    table = measure_cells(image, channels, seg, params)
    assert "Cells_Intensity_MeanIntensity_GFP_tubulin" in table.columns
    assert not any(c.startswith(("Nuclei_", "Cytoplasm_")) for c in table.columns)
    assert not any("Texture" in c for c in table.columns)
    default = measure_cells(image, channels, seg, MeasureParams(texture=False))
    assert "Cells_Intensity_MeanIntensity_DNA" in default.columns  # named by role


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texture_levels": 1}, "texture_levels"),
        ({"texture_distance": 0}, "texture_distance"),
        ({"compartments": ("Membrane",)}, "Unknown compartments"),
    ],
)
def test_bad_measure_parameters(kwargs, message):
    with pytest.raises(CellsError, match=message):
        MeasureParams(**kwargs)


def test_cell_table_has_schema_columns_and_platemap_values():
    image, seg = _two_cells()
    values = measure_cells(image, CHANNELS, seg, MeasureParams(texture=False))
    platemap = _platemap()
    table = cell_table(values, "P1", "B02", 3, platemap)
    lead = [
        schema.PLATE,
        schema.WELL,
        schema.SITE,
        schema.CELL_ID,
        schema.CENTROID_Y,
        schema.CENTROID_X,
        schema.ROLE,
        schema.TREATMENT,
        schema.MOA,
        schema.CONCENTRATION,
    ]
    assert list(table.columns[: len(lead)]) == lead
    assert table[schema.TREATMENT].tolist() == ["taxol", "taxol"]
    assert table[schema.ROLE].tolist() == ["treated", "treated"]
    assert table[schema.SITE].tolist() == [3, 3]
    unmapped = cell_table(values, "P1", "H12", 1, platemap)
    assert unmapped[schema.TREATMENT].isna().all()
    bare = cell_table(values, "P1", "B02", 1)
    assert bare[schema.MOA].isna().all()


def _platemap():
    frame = pd.DataFrame(
        {
            "well": ["B02", "B03"],
            "treatment": ["taxol", "DMSO"],
            "moa": ["tubulin", None],
            "concentration": [1.0, None],
        }
    )
    return PlateMap.from_frame(frame, plate_format=96)


def test_profiles_are_medians_per_site_and_well():
    image, seg = _two_cells()
    values = measure_cells(image, CHANNELS, seg, MeasureParams(texture=False))
    platemap = _platemap()
    cells = pd.concat(
        [
            cell_table(values, "P1", "B02", 1, platemap),
            cell_table(values.assign(Cells_AreaShape_Area=[10.0, 20.0]), "P1", "B02", 2, platemap),
            cell_table(values, "P1", "B03", 1, platemap),
        ],
        ignore_index=True,
    )
    wells = aggregate_profiles(cells, "well")
    assert wells[schema.WELL].tolist() == ["B02", "B03"]
    assert wells[CELL_COUNT].tolist() == [4, 2]
    b02 = wells.set_index(schema.WELL).loc["B02"]
    assert b02["Cells_AreaShape_Area"] == np.median([400, 750, 10, 20])
    assert b02[schema.TREATMENT] == "taxol" and schema.SITE not in wells.columns
    assert schema.CELL_ID not in wells.columns and schema.CENTROID_X not in wells.columns
    sites = aggregate_profiles(cells, "site", "mean")
    assert len(sites) == 3 and sites[CELL_COUNT].tolist() == [2, 2, 2]
    assert sites["Cells_AreaShape_Area"].tolist()[1] == 15
    with pytest.raises(CellsError, match="level"):
        aggregate_profiles(cells, "plate")
    with pytest.raises(CellsError, match="lacks Metadata_Well"):
        aggregate_profiles(cells.drop(columns=[schema.WELL]))
