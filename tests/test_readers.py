"""open_plate: every file-name layout, instrument metadata, laziness and bad input."""

from __future__ import annotations

import io
import pickle
import shutil
import tracemalloc
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pytest
import tifffile

from phenoadapt.errors import PlateLayoutError, PlateReadError
from phenoadapt.plate import ChannelRole, open_plate, verify_plate
from phenoadapt.plate.readers import parse_channel_names, suggest_pattern
from phenoadapt.plate.readers.naming import folder_plate_id
from phenoadapt.plate.wells import PLATE_96, PLATE_384, well_position

PHENIX_DATA = Path(__file__).parent / "data" / "phenix_BR00143976"


# -- helpers that write tiny plates ---------------------------------------------------
def tiff_bytes(value: int, shape: tuple[int, int] = (8, 8), dtype=np.uint16) -> bytes:
    """A tiny single-plane TIFF whose pixels are ``value`` plus a gradient (non-constant)."""
    plane = (np.arange(shape[0] * shape[1]).reshape(shape) % 7 + value).astype(dtype)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, plane)
    return buffer.getvalue()


def plane_value(path: Path) -> int:
    """The ``value`` a tiny plane was written with (its minimum)."""
    return int(tifffile.imread(path).min())


def write_files(folder: Path, names: Iterable[str], shape=(8, 8)) -> dict[str, int]:
    """Write a tiny TIFF for each name (value = its position * 10); returns name -> value."""
    values = {}
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiff_bytes(10 * (i + 1), shape))
        values[name] = 10 * (i + 1)
    return values


def phenix_names(
    wells: Sequence[str], sites: Sequence[int], channels: Sequence[int], planes=(1,)
) -> list[str]:
    names = []
    for well in wells:
        row, col = well_position(well)
        for site in sites:
            for plane in planes:
                for ch in channels:
                    names.append(
                        f"r{row:02d}c{col:02d}f{site:02d}p{plane:02d}-ch{ch}sk1fk1fl1.tiff"
                    )
    return names


def write_copies(folder: Path, names: Iterable[str], data: bytes) -> int:
    """The same bytes under many names (fast for large plates); returns the count."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for name in names:
        (folder / name).write_bytes(data)
        n += 1
    return n


HARMONY_V6 = """\ufeff<?xml version="1.0" encoding="utf-8"?>
<EvaluationInputData Version="1" xmlns="http://www.perkinelmer.com/PEHH/HarmonyV6">
  <User>someone</User>
  <InstrumentType>Phenix</InstrumentType>
  <Plates><Plate>
    <PlateID>BR00999999</PlateID><MeasurementID>m1</MeasurementID><Name>my plate</Name>
    <PlateTypeName>PerkinElmer CellCarrier-384 Ultra</PlateTypeName>
    <PlateRows>16</PlateRows><PlateColumns>24</PlateColumns><Well id="0101" />
  </Plate></Plates>
  <Wells><Well><id>0101</id><Row>1</Row><Col>1</Col><Image id="0101K1F1P1R1" /></Well></Wells>
  <Maps>
    <Map><Entry ChannelID="1"><FlatfieldProfile>{}</FlatfieldProfile></Entry></Map>
    <Map>
      <Entry ChannelID="1"><ChannelName>HOECHST 33342</ChannelName>
        <ImageResolutionX Unit="m">5.98E-07</ImageResolutionX></Entry>
      <Entry ChannelID="2"><ChannelName>Alexa 488</ChannelName></Entry>
      <Entry ChannelID="3"><ChannelName>MitoTracker</ChannelName></Entry>
    </Map>
  </Maps>
  <Images>
    <Image Version="1"><id>0101K1F1P1R1</id><URL>r01c01f01p01-ch1sk1fk1fl1.tiff</URL>
      <Row>1</Row><Col>1</Col><FieldID>1</FieldID><PlaneID>1</PlaneID><ChannelID>1</ChannelID>
    </Image>
  </Images>
</EvaluationInputData>
"""

HARMONY_V5 = """<?xml version="1.0" encoding="utf-8"?>
<EvaluationInputData Version="1" xmlns="http://www.perkinelmer.com/PEHH/HarmonyV5">
  <Plates><Plate><PlateID></PlateID><Name>PLATE_V5</Name>
    <PlateRows>8</PlateRows><PlateColumns>12</PlateColumns></Plate></Plates>
  <Images>
    <Image Version="1"><id>a</id><ChannelID>1</ChannelID><ChannelName>DAPI</ChannelName></Image>
    <Image Version="1"><id>b</id><ChannelID>2</ChannelID>
      <ChannelName>Phalloidin</ChannelName></Image>
  </Images>
</EvaluationInputData>
"""


# -- the real Opera Phenix field --------------------------------------------------------
def test_real_phenix_field():
    plate = open_plate(PHENIX_DATA)
    assert plate.layout == "phenix"
    assert plate.wells == ["C03"] and plate.sites == {"C03": [3]}
    assert plate.channel_names == ["brightfield", "ER", "AGP", "Mito", "DNA", "RNA"]
    assert [c.key for c in plate.channels] == ["1", "2", "3", "4", "5", "6"]
    assert plate.channel("DNA").key == "5"
    assert plate.channel(ChannelRole.BRIGHTFIELD).key == "1"
    assert plate.field_shape == (1080, 1080) and plate.dtype == np.uint16
    # README, licence and the two outline TIFFs match no Phenix name: ignored, not read.
    assert plate.metadata["ignored_files"] == 4
    field = plate.read_field("C03", 3)
    assert field.shape == (6, 1080, 1080) and field.dtype == np.uint16
    assert all(np.std(plane) > 50 for plane in field)  # real images, not constant
    assert not np.array_equal(field[4], field[5])
    dna = plate.read_plane("C03", 3, "DNA")
    assert np.array_equal(dna, tifffile.imread(PHENIX_DATA / "r03c03f03p01-ch5sk1fk1fl1.tiff"))
    assert verify_plate(plate) == 6


def test_real_phenix_field_roles_for_model_order():
    plate = open_plate(PHENIX_DATA, plate_id="BR00143976")
    assert plate.plate_id == "BR00143976"
    # Models take DNA, ER, RNA, AGP, Mito: the file channels 5, 2, 6, 3, 4.
    idx = plate.channel_index(["DNA", "ER", "RNA", "AGP", "Mito"])
    assert [plate.channels[i].key for i in idx] == ["5", "2", "6", "3", "4"]


def test_real_phenix_lazy_dask_field():
    plate = open_plate(PHENIX_DATA)
    lazy = plate.lazy_field("C03", 3)
    assert lazy.shape == (6, 1080, 1080)
    assert np.array_equal(lazy[4].compute(), plate.read_plane("C03", 3, 4))


# -- Opera Phenix (generated) ---------------------------------------------------------
def test_phenix_index_v6_names_id_format(tmp_path):
    images = tmp_path / "BR00999999__2024-01-01T10_00_00-Measurement 1" / "Images"
    write_files(images, phenix_names(["A01", "B02"], [1, 2], [1, 2, 3]))
    (images / "Index.xml").write_text(HARMONY_V6, encoding="utf-8")
    plate = open_plate(images)
    assert plate.plate_id == "BR00999999"
    assert plate.channel_names == ["HOECHST 33342", "Alexa 488", "MitoTracker"]
    assert [c.role for c in plate.channels] == [ChannelRole.DNA, ChannelRole.ER, ChannelRole.MITO]
    assert plate.format == PLATE_384  # from PlateRows/PlateColumns, not from A01..B02
    assert plate.metadata["pixel_size_um"] == pytest.approx(0.598)
    assert plate.sites == {"A01": [1, 2], "B02": [1, 2]}
    # User names win over the instrument's.
    renamed = open_plate(images, channel_names={"2": "ConA"})
    assert renamed.channel_names == ["HOECHST 33342", "ConA", "MitoTracker"]


def test_phenix_index_v5_names_from_images(tmp_path):
    write_files(tmp_path / "Images", phenix_names(["A01"], [1], [1, 2]))
    (tmp_path / "Index.idx.xml").write_text(HARMONY_V5, encoding="utf-8")
    plate = open_plate(tmp_path)
    assert plate.channel_names == ["DAPI", "Phalloidin"]
    assert [c.role for c in plate.channels] == [ChannelRole.DNA, ChannelRole.AGP]
    assert plate.plate_id == "PLATE_V5" and plate.format == PLATE_96


def test_phenix_broken_index_is_named(tmp_path):
    write_files(tmp_path, phenix_names(["A01"], [1], [1, 2]))
    (tmp_path / "Index.xml").write_text("<EvaluationInputData><Plates>", encoding="utf-8")
    with pytest.raises(PlateReadError, match="Index.xml"):
        open_plate(tmp_path)


def test_phenix_folder_name_gives_plate_id(tmp_path):
    folder = tmp_path / "BR00117035__2021-05-01T18_57_51-Measurement1" / "Images"
    write_files(folder, phenix_names(["A01"], [1], [1, 2, 3, 4, 5]))
    plate = open_plate(folder)
    assert plate.plate_id == "BR00117035"
    assert plate.channel_names == ["DNA", "ER", "RNA", "AGP", "Mito"]  # 5-channel default
    assert folder_plate_id(tmp_path / "P7.zarr") == "P7"


def test_phenix_planes_default_choice_and_projection(tmp_path):
    names = phenix_names(["A01"], [1], [1, 2], planes=(1, 2, 3))
    values = write_files(tmp_path, names)
    first = open_plate(tmp_path)
    assert first.metadata["planes"] == [1, 2, 3] and first.metadata["plane"] == 1
    assert int(first.read_plane("A01", 1, 0).min()) == values["r01c01f01p01-ch1sk1fk1fl1.tiff"]
    second = open_plate(tmp_path, plane=2)
    assert int(second.read_plane("A01", 1, 1).min()) == values["r01c01f01p02-ch2sk1fk1fl1.tiff"]
    projected = open_plate(tmp_path, plane="max")
    expected = np.max(
        [tifffile.imread(tmp_path / f"r01c01f01p0{p}-ch1sk1fk1fl1.tiff") for p in (1, 2, 3)], axis=0
    )
    assert np.array_equal(projected.read_plane("A01", 1, 0), expected)
    assert "max of 3 planes" in projected.source.describe("A01", 1, projected.channels[0])
    with pytest.raises(PlateLayoutError, match="planes 1, 2, 3"):
        open_plate(tmp_path, plane=7)
    with pytest.raises(PlateLayoutError, match="'max'"):
        open_plate(tmp_path, plane="top")


def test_phenix_first_timepoint(tmp_path):
    write_files(tmp_path, phenix_names(["A01"], [1], [1, 2]))
    write_files(tmp_path, [n.replace("sk1", "sk2") for n in phenix_names(["A01"], [1], [1, 2])])
    plate = open_plate(tmp_path)
    assert plate.metadata["timepoints"] == [1, 2]
    assert plate.metadata["n_files"] == 2 and plate.metadata["ignored_files"] == 0
    assert "sk1" in plate.source.describe("A01", 1, plate.channels[0])


# -- ImageXpress --------------------------------------------------------------------------
def test_imagexpress_with_uuid_timepoint_folder_and_thumbnails(tmp_path):
    uuids = ["A8E3B2C4-0D36-4B60-8E63-8A0F8E3D1E1F", "0F2A9C11-1111-4B60-8E63-8A0F8E3D1E20"]
    names = []
    for well in ("A01", "B03"):
        for site in (1, 2):
            for ch in (1, 2):
                names.append(f"TimePoint_1/EXP42_{well}_s{site}_w{ch}{uuids[ch - 1]}.tif")
    values = write_files(tmp_path / "2024-01-01" / "1234", names)
    write_files(tmp_path / "2024-01-01" / "1234", ["TimePoint_1/EXP42_A01_s1_w1_thumbABCD.tif"])
    plate = open_plate(tmp_path, channel_names={1: "Hoechst", 2: "MitoTracker"})
    assert plate.layout == "imagexpress" and plate.plate_id == "EXP42"
    assert [c.key for c in plate.channels] == ["w1", "w2"]
    assert plate.channel_names == ["Hoechst", "MitoTracker"]
    assert plate.sites == {"A01": [1, 2], "B03": [1, 2]}
    assert plate.metadata["ignored_files"] == 1  # the thumbnail
    name = f"TimePoint_1/EXP42_B03_s2_w2{uuids[1]}.tif"
    assert int(plate.read_plane("B03", 2, "MitoTracker").min()) == values[name]


def test_imagexpress_single_site(tmp_path):
    write_files(tmp_path, [f"PL1_{w}_w{c}.TIF" for w in ("C05", "D06") for c in (1, 2, 3)])
    plate = open_plate(tmp_path)
    assert plate.layout == "imagexpress"
    assert plate.sites == {"C05": [1], "D06": [1]}
    assert plate.channel_names == ["w1", "w2", "w3"]  # unnamed channels keep their keys


# -- Cellomics ------------------------------------------------------------------------------
def test_cellomics_zero_based_fields_and_channels(tmp_path):
    names = [
        f"MFGTMP_140206_{w}f{f:02d}d{d}.tif"
        for w in ("D03", "P24")
        for f in (0, 1)
        for d in range(5)
    ]
    values = write_files(tmp_path, names)
    plate = open_plate(tmp_path)
    assert plate.layout == "cellomics" and plate.plate_id == "MFGTMP_140206"
    assert plate.sites == {"D03": [0, 1], "P24": [0, 1]}
    assert [c.key for c in plate.channels] == ["d0", "d1", "d2", "d3", "d4"]
    assert plate.channel_names == ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert plate.format == PLATE_384  # P24 needs 384 wells
    assert int(plate.read_plane("P24", 1, "Mito").min()) == values["MFGTMP_140206_P24f01d4.tif"]
    assert [c.key for c in open_plate(tmp_path, channel_names={0: "Hoechst"}).channels][0] == "d0"


# -- per-site stacks -----------------------------------------------------------------------
def _stack(values: Sequence[int], shape=(6, 7)) -> np.ndarray:
    return np.stack([np.full(shape, v, np.uint16) for v in values])


def test_stacks_written_as_samples(tmp_path):
    # One page holding the channels as samples: what tifffile.imwrite of (C, Y, X) long wrote.
    for i, well in enumerate(("A01", "A02")):
        for site in (1, 2):
            stack = _stack([100 * i + site, 7, 8])
            tifffile.imwrite(
                tmp_path / f"PLT_{well}_s{site}.tif",
                stack,
                photometric="minisblack",
                planarconfig="separate",
            )
    plate = open_plate(tmp_path)
    assert plate.layout == "stack" and plate.plate_id == "PLT"
    assert [c.key for c in plate.channels] == ["0", "1", "2"]
    assert plate.field_shape == (6, 7)
    field = plate.read_field("A02", 2)
    assert field.shape == (3, 6, 7)
    assert [int(p[0, 0]) for p in field] == [102, 7, 8]
    field[0] += 1  # callers may modify planes without corrupting the kept page
    assert int(plate.read_plane("A02", 2, 0)[0, 0]) == 102
    restored = pickle.loads(pickle.dumps(plate.source))  # sent to worker processes
    assert int(restored.read_plane("A01", 1, plate.channels[0])[0, 0]) == 1


def test_stacks_as_samples_read_from_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    for site in range(1, 5):
        stack = _stack([site, 10 + site, 20 + site])
        tifffile.imwrite(
            tmp_path / f"A01_s{site}.tif", stack, photometric="minisblack", planarconfig="separate"
        )
    plate = open_plate(tmp_path)
    jobs = [("A01", s, c) for s in range(1, 5) for c in range(3)] * 5
    with ThreadPoolExecutor(4) as pool:
        values = list(pool.map(lambda j: int(plate.read_plane(*j)[0, 0]), jobs))
    assert values == [10 * c + s for _, s, c in jobs]


def test_stacks_rgb_contiguous_samples(tmp_path):
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[..., 1] = 9
    tifffile.imwrite(tmp_path / "A01_s1.tif", rgb, photometric="rgb")
    plate = open_plate(tmp_path, channel_names=["DNA", "ER", "AGP"])
    assert plate.field_shape == (6, 7)
    assert [int(p.max()) for p in plate.read_field("A01", 1)] == [0, 9, 0]


def test_stacks_one_page_per_channel(tmp_path):
    tifffile.imwrite(tmp_path / "A01_s1.tif", _stack([1, 2, 3]), photometric="minisblack")
    plate = open_plate(tmp_path)
    assert [c.key for c in plate.channels] == ["0", "1", "2"]
    assert [int(p[0, 0]) for p in plate.read_field("A01", 1)] == [1, 2, 3]


def test_stacks_ome_tiff_channel_names(tmp_path):
    for well in ("B01", "B02"):
        tifffile.imwrite(
            tmp_path / f"{well}_f1.ome.tiff",
            _stack([1, 2, 3, 4]),
            ome=True,
            metadata={"axes": "CYX", "Channel": {"Name": ["Hoechst", "ConA", "SYTO14", "WGA"]}},
        )
    plate = open_plate(tmp_path)
    assert plate.layout == "stack"
    assert plate.channel_names == ["Hoechst", "ConA", "SYTO14", "WGA"]
    assert [c.role for c in plate.channels] == [
        ChannelRole.DNA,
        ChannelRole.ER,
        ChannelRole.RNA,
        ChannelRole.AGP,
    ]
    assert int(plate.read_plane("B02", 1, "WGA")[0, 0]) == 4
    assert "page 3" in plate.source.describe("B02", 1, plate.channel("WGA"))


def test_stacks_imagej_hyperstack_reads_first_z(tmp_path):
    data = np.stack([_stack([1, 2]), _stack([11, 12])])  # (Z=2, C=2, Y, X)
    tifffile.imwrite(tmp_path / "A01_s1.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    plate = open_plate(tmp_path, channel_names=["DNA", "Mito"])
    assert [int(p[0, 0]) for p in plate.read_field("A01", 1)] == [1, 2]


# -- user patterns ---------------------------------------------------------------------------
def test_pattern_with_well_site_channel(tmp_path):
    names = [
        f"exp/{w}--pos{s}--{ch}.tif"
        for w in ("a1", "b12")
        for s in (1, 2)
        for ch in ("DAPI", "Mito")
    ]
    values = write_files(tmp_path, names)
    plate = open_plate(
        tmp_path, pattern=r"(?P<well>[a-h]\d+)--pos(?P<site>\d)--(?P<channel>\w+)\.tif"
    )
    assert plate.layout == "pattern"
    assert plate.wells == ["A01", "B12"]
    # Channels captured as stain names name themselves, and so get roles.
    assert plate.channel_names == ["DAPI", "Mito"]
    assert [c.role for c in plate.channels] == [ChannelRole.DNA, ChannelRole.MITO]
    assert int(plate.read_plane("B12", 2, "Mito").min()) == values["exp/b12--pos2--Mito.tif"]


def test_pattern_with_numeric_row_and_column(tmp_path):
    names = [
        f"plate7/{r}-{c}-{s}-{ch}.tiff"
        for r in (1, 16)
        for c in (2, 24)
        for s in (1,)
        for ch in (1, 2)
    ]
    values = write_files(tmp_path, names)
    pattern = r"(?P<plate>\w+)/(?P<row>\d+)-(?P<column>\d+)-(?P<site>\d+)-(?P<channel>\d)\.tiff"
    plate = open_plate(tmp_path, pattern=pattern, channel_names=["DNA", "AGP"])
    assert plate.plate_id == "plate7"
    assert plate.wells == ["A02", "A24", "P02", "P24"] and plate.format == PLATE_384
    assert int(plate.read_plane("P02", 1, "AGP").min()) == values["plate7/16-2-1-2.tiff"]


def test_pattern_with_row_letters_and_no_site(tmp_path):
    write_files(
        tmp_path, [f"row{r}_col{c}_ch{k}.tif" for r in "CD" for c in (3, 4) for k in (0, 1)]
    )
    plate = open_plate(
        tmp_path, pattern=r"row(?P<row>[A-Z])_col(?P<column>\d+)_ch(?P<channel>\d)\.tif"
    )
    assert plate.wells == ["C03", "C04", "D03", "D04"]
    assert plate.sites["C03"] == [1]


def test_pattern_without_channel_group_reads_stacks(tmp_path):
    for well in ("A01", "H12"):
        tifffile.imwrite(tmp_path / f"site_{well}.tif", _stack([5, 6, 7, 8, 9]))
    plate = open_plate(tmp_path, pattern=r"site_(?P<well>[A-H]\d\d)\.tif")
    assert plate.channel_names == ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert int(plate.read_plane("H12", 1, "Mito")[0, 0]) == 9


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"(?P<well>[A-P]\d{2}", "not a valid regular expression"),
        (r"(?P<site>\d+)\.tif", "does not say where the well is"),
        (r"(?P<well>[A-P]\d{2})_(?P<field>\d+)\.tif", "field"),
        (r"(?P<well>[A-P]\d{2})_nothing\.tif", "matches none of the 2 files"),
    ],
)
def test_pattern_errors(tmp_path, pattern, message):
    write_files(tmp_path, ["A01_s1_x.tif", "A02_s1_x.tif"])
    with pytest.raises(PlateLayoutError, match=message):
        open_plate(tmp_path, pattern=pattern)


def test_pattern_capturing_a_non_number_site_is_named(tmp_path):
    write_files(tmp_path, ["A01_sX.tif"])
    with pytest.raises(PlateLayoutError, match=r"A01_sX.tif.*site"):
        open_plate(tmp_path, pattern=r"(?P<well>A01)_s(?P<site>\w)\.tif")


# -- channel names ---------------------------------------------------------------------------
def test_channel_names_list_and_errors(tmp_path):
    write_files(tmp_path, phenix_names(["A01"], [1], [1, 2, 3]))
    plate = open_plate(tmp_path, channel_names=["Hoechst", "Phalloidin", "MitoTracker"])
    assert [c.role for c in plate.channels] == [ChannelRole.DNA, ChannelRole.AGP, ChannelRole.MITO]
    with pytest.raises(PlateLayoutError, match="2 channel names given"):
        open_plate(tmp_path, channel_names=["DNA", "ER"])
    with pytest.raises(PlateLayoutError, match="'9'.*1, 2, 3"):
        open_plate(tmp_path, channel_names={9: "DNA"})


def test_parse_channel_names():
    assert parse_channel_names("DNA, ER,RNA") == ["DNA", "ER", "RNA"]
    assert parse_channel_names("1=DNA,w2=ER") == {"1": "DNA", "w2": "ER"}
    with pytest.raises(PlateLayoutError, match="mixes"):
        parse_channel_names("DNA,2=ER")


def test_plate_format_given_and_checked(tmp_path):
    write_files(tmp_path, phenix_names(["A01", "B02"], [1], [1]))
    assert open_plate(tmp_path, plate_format=1536).format.n_wells == 1536
    write_files(tmp_path, phenix_names(["P24"], [1], [1]))
    with pytest.raises(PlateLayoutError, match="P24 lie outside a 96-well"):
        open_plate(tmp_path, plate_format=96)
    with pytest.raises(PlateLayoutError, match="Unknown plate format"):
        open_plate(tmp_path, plate_format=100)


def test_forced_layout(tmp_path):
    write_files(tmp_path, phenix_names(["A01"], [1], [1]))
    assert open_plate(tmp_path, layout="phenix").layout == "phenix"
    with pytest.raises(PlateLayoutError, match="imagexpress layout"):
        open_plate(tmp_path, layout="imagexpress")
    with pytest.raises(PlateLayoutError, match="Unknown layout"):
        open_plate(tmp_path, layout="opera")
    with pytest.raises(PlateLayoutError, match="either a layout"):
        open_plate(tmp_path, layout="phenix", pattern=r"(?P<well>A01)")


# -- laziness and memory ----------------------------------------------------------------------
def _count_reads(monkeypatch) -> list:
    """Count pixel decodes (page.asarray), which every plane read goes through."""
    calls = []
    real = tifffile.TiffPage.asarray

    def counting(self, *args, **kwargs):
        calls.append(self.parent.filename)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffPage, "asarray", counting)
    return calls


def test_opening_384_wells_reads_no_pixels(tmp_path, monkeypatch):
    names = phenix_names(PLATE_384.wells(), [1], [1, 2, 3, 4, 5])
    write_copies(tmp_path, names, tiff_bytes(3))
    calls = _count_reads(monkeypatch)
    plate = open_plate(tmp_path)
    assert plate.n_fields == 384 and len(plate.channels) == 5
    assert calls == []  # opening read the header of one file, never pixel data
    plate.read_field("P24", 1)
    assert len(calls) == 5  # one read per channel, only when asked


def _open_peak(folder: Path) -> int:
    tracemalloc.start()
    try:
        open_plate(folder)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_open_memory_grows_with_file_count_only(tmp_path):
    """Peak memory of opening: about 1 kB per file, whatever the image size.

    Measured (tracemalloc peak while opening; see docs/benchmarks/open_plate.md):
    96 wells x 5 channels (480 files) ~0.45 MB, 384 wells (1,920 files) ~1.8 MB.
    """
    small_96 = write_copies(
        tmp_path / "p96", phenix_names(PLATE_96.wells(), [1], range(1, 6)), tiff_bytes(1)
    )
    write_copies(
        tmp_path / "p384", phenix_names(PLATE_384.wells(), [1], range(1, 6)), tiff_bytes(1)
    )
    write_copies(
        tmp_path / "big96",
        phenix_names(PLATE_96.wells(), [1], range(1, 6)),
        tiff_bytes(1, (128, 128)),
    )
    _open_peak(tmp_path / "p96")  # warm imports and caches
    peak_96, peak_384 = _open_peak(tmp_path / "p96"), _open_peak(tmp_path / "p384")
    peak_big = _open_peak(tmp_path / "big96")
    assert peak_384 / small_96 / 4 < 4_000  # bytes per file
    assert peak_384 < 6 * peak_96  # 4x the files: at most ~4x the memory
    assert peak_big < 1.3 * peak_96 + 100_000  # 256x larger images: same memory


# -- bad input ------------------------------------------------------------------------------------
def test_missing_path_and_file_path(tmp_path):
    with pytest.raises(PlateReadError, match="does not exist"):
        open_plate(tmp_path / "nope")
    write_files(tmp_path, ["A01_s1_w1.tif"])
    with pytest.raises(PlateLayoutError, match="is a file, not a folder"):
        open_plate(tmp_path / "A01_s1_w1.tif")


def test_empty_folder(tmp_path):
    (tmp_path / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    (tmp_path / "sub").mkdir()
    with pytest.raises(PlateLayoutError, match="holds no files"):
        open_plate(tmp_path)


def test_unrelated_files_suggest_a_working_pattern(tmp_path):
    names = [
        f"scan_{w}_pos{s}_c{c}.tif" for w in ("B03", "B04", "C03") for s in (1, 2) for c in (1, 2)
    ]
    write_files(tmp_path, ["notes.txt", *names])
    with pytest.raises(PlateLayoutError) as info:
        open_plate(tmp_path)
    message = str(info.value)
    assert "No plate layout recognised" in message and "(13 files)" in message
    shown = [line.strip() for line in message.splitlines() if line.startswith("  ") and "." in line]
    assert "notes.txt" in shown[0] and "... and 8 more" in message  # five names shown
    assert "--pattern" in message and "For the 12 image files here" in message
    suggested = message.split("--pattern '")[1].split("'")[0]
    plate = open_plate(tmp_path, pattern=suggested)  # the suggestion works
    assert plate.wells == ["B03", "B04", "C03"] and plate.sites["B03"] == [1, 2]
    assert len(plate.channels) == 2


def test_suggest_pattern():
    assert suggest_pattern("notes.txt") is None
    pattern = suggest_pattern("exp-1_P24_s03_w2.tif")
    assert pattern == r"exp-1_(?P<well>[A-Za-z]{1,2}\d{1,3})_s(?P<site>\d+)_w(?P<channel>\d+)\.tif"


def test_corrupt_header_file_is_named(tmp_path):
    write_files(tmp_path, phenix_names(["A01"], [1], [1, 2]))
    (tmp_path / "r01c01f01p01-ch1sk1fk1fl1.tiff").write_bytes(b"this is not a tiff" * 10)
    # The other sampled headers set the plate's pixels: opening works, reading names the file.
    plate = open_plate(tmp_path)
    with pytest.raises(PlateReadError, match=r"r01c01f01p01-ch1sk1fk1fl1\.tiff.*corrupt"):
        plate.read_field("A01", 1)


def test_a_plate_of_corrupt_headers_is_refused_at_opening(tmp_path):
    write_files(tmp_path, phenix_names(["A01"], [1], [1, 2]))
    for path in tmp_path.glob("*.tiff"):
        path.write_bytes(b"this is not a tiff" * 10)
    with pytest.raises(PlateReadError, match=r"r01c01f01p01-ch1sk1fk1fl1\.tiff.*corrupt"):
        open_plate(tmp_path)


def test_truncated_real_file_is_named_when_read(tmp_path):
    for path in PHENIX_DATA.glob("*.tiff"):
        shutil.copy(path, tmp_path / path.name)
    bad = tmp_path / "r03c03f03p01-ch4sk1fk1fl1.tiff"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])
    plate = open_plate(tmp_path)  # header of ch1 only: opening works
    with pytest.raises(PlateReadError, match="r03c03f03p01-ch4sk1fk1fl1.tiff"):
        plate.read_field("C03", 3)
    with pytest.raises(PlateReadError, match="r03c03f03p01-ch4sk1fk1fl1.tiff"):
        verify_plate(plate)


def test_junk_file_other_than_the_first_is_named_when_read(tmp_path):
    write_files(tmp_path, phenix_names(["A01", "A02"], [1], [1, 2]))
    (tmp_path / "r01c02f01p01-ch2sk1fk1fl1.tiff").write_bytes(b"\x00" * 50)
    plate = open_plate(tmp_path)
    with pytest.raises(PlateReadError, match="r01c02f01p01-ch2sk1fk1fl1.tiff"):
        plate.read_plane("A02", 1, 1)


def test_sites_with_different_shapes(tmp_path):
    write_files(tmp_path, phenix_names(["A01"], [1, 2], [1, 2]))
    (tmp_path / "r01c01f02p01-ch2sk1fk1fl1.tiff").write_bytes(tiff_bytes(5, (8, 9)))
    plate = open_plate(tmp_path)
    assert plate.field_shape == (8, 8)
    with pytest.raises(PlateReadError, match=r"r01c01f02p01-ch2sk1fk1fl1.tiff is 8x9 pixels"):
        plate.read_field("A01", 2)
    with pytest.raises(PlateReadError, match=r"r01c01f02p01-ch2sk1fk1fl1.tiff is 8x9 pixels"):
        verify_plate(plate)


def test_stack_with_other_channel_count(tmp_path):
    tifffile.imwrite(tmp_path / "A01_s1.tif", _stack([1, 2, 3]), photometric="minisblack")
    tifffile.imwrite(tmp_path / "A01_s2.tif", _stack([1, 2]), photometric="minisblack")
    plate = open_plate(tmp_path)
    with pytest.raises(PlateReadError, match="A01_s2.tif holds 2 channels"):
        verify_plate(plate)
    with pytest.raises(PlateReadError, match="A01_s2.tif"):
        plate.read_plane("A01", 2, 2)


def test_missing_channel_file_names_expected_file(tmp_path):
    names = phenix_names(["A01", "B01"], [1, 2], [1, 2, 3])
    names.remove("r02c01f02p01-ch3sk1fk1fl1.tiff")
    write_files(tmp_path, names)
    with pytest.raises(PlateLayoutError) as info:
        open_plate(tmp_path)
    message = str(info.value)
    assert "well B01 site 2: no file for channel 3" in message
    assert "expected r02c01f02p01-ch3sk1fk1fl1.tiff" in message


def test_missing_imagexpress_channel_uses_wildcard_for_uuid(tmp_path):
    names = [f"P_A01_s1_w{c}0A1B2C3D-0000-4B60-8E63-8A0F8E3D1E1F.tif" for c in (1, 2)]
    write_files(tmp_path, [*names, "P_A02_s1_w1FFFF0000-0000-4B60-8E63-8A0F8E3D1E1F.tif"])
    with pytest.raises(PlateLayoutError, match=r"expected P_A02_s1_w2\*\.tif"):
        open_plate(tmp_path)


def test_several_plates_in_one_folder(tmp_path):
    write_files(tmp_path, ["PA_A01_s1_w1.tif", "PB_A01_s1_w1.tif"])
    with pytest.raises(PlateLayoutError, match=r"2 plates: PA \(1 files\), PB"):
        open_plate(tmp_path)


def test_duplicate_files(tmp_path):
    write_files(tmp_path, ["a/r01c01f01p01-ch1sk1fk1fl1.tiff", "b/r01c01f01p01-ch1sk1fk1fl1.tiff"])
    with pytest.raises(PlateLayoutError, match="Two files hold the same image"):
        open_plate(tmp_path)


def test_rgb_file_in_a_plane_layout(tmp_path):
    tifffile.imwrite(tmp_path / "r01c01f01p01-ch1sk1fk1fl1.tiff", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(PlateReadError, match="RGB"):
        open_plate(tmp_path)


def test_missing_field_of_an_open_plate_is_named(tmp_path):
    write_files(tmp_path, phenix_names(["A01"], [1], [1]))
    plate = open_plate(tmp_path)
    (tmp_path / "r01c01f01p01-ch1sk1fk1fl1.tiff").unlink()
    with pytest.raises(PlateReadError, match="r01c01f01p01-ch1sk1fk1fl1.tiff"):
        plate.read_field("A01", 1)
