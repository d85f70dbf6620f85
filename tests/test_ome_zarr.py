"""OME-Zarr HCS plates: write_ome_zarr, reading back lazily, plates written by ome-zarr-py."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Plate as OmeZarrPlateSpec
from ome_zarr.reader import Reader
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

from phenoadapt.errors import Cancelled, PhenoadaptError, PlateLayoutError, PlateReadError
from phenoadapt.plate import ChannelRole, open_plate, verify_plate, write_ome_zarr
from phenoadapt.plate.readers import ZarrSource

PHENIX_DATA = Path(__file__).parent / "data" / "phenix_BR00143976"


def _phenix_folder(folder: Path, wells=("A01", "B03"), sites=(1, 2), channels=(1, 2, 3)) -> Path:
    """A tiny Phenix plate whose every plane is different (random, seeded)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for well in wells:
        row, col = ord(well[0]) - 64, int(well[1:])
        for site in sites:
            for ch in channels:
                plane = rng.integers(0, 4000, size=(12, 10), dtype=np.uint16)
                tifffile.imwrite(
                    folder / f"r{row:02d}c{col:02d}f{site:02d}p01-ch{ch}sk1fk1fl1.tiff", plane
                )
    return folder


@pytest.fixture
def tiff_plate(tmp_path):
    folder = _phenix_folder(tmp_path / "P123")
    return open_plate(folder, channel_names=["Hoechst", "ConA", "MitoTracker"])


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_round_trip(tmp_path, tiff_plate, version):
    out = write_ome_zarr(tiff_plate, tmp_path / "out.zarr", ngff_version=version)
    back = open_plate(out)
    assert back.layout == "ome-zarr"
    assert back.plate_id == "P123"
    assert back.wells == tiff_plate.wells and back.sites == tiff_plate.sites
    assert back.channel_names == ["Hoechst", "ConA", "MitoTracker"]
    assert [c.key for c in back.channels] == [c.key for c in tiff_plate.channels]
    assert [c.role for c in back.channels] == [ChannelRole.DNA, ChannelRole.ER, ChannelRole.MITO]
    assert back.field_shape == (12, 10) and back.dtype == np.uint16
    assert back.format == tiff_plate.format
    assert back.metadata["source_layout"] == "phenix"
    for well, site in tiff_plate.fields():
        assert np.array_equal(back.read_field(well, site), tiff_plate.read_field(well, site))
    assert verify_plate(back) == 4
    zarr_format = zarr.open_group(str(out), mode="r").metadata.zarr_format
    assert zarr_format == (3 if version == "0.5" else 2)


def test_real_field_round_trip_with_pyramid(tmp_path):
    plate = open_plate(PHENIX_DATA)
    out = write_ome_zarr(plate, tmp_path / "real.zarr", scale_factors=(2, 4))
    back = open_plate(out)
    assert back.channel_names == plate.channel_names
    assert np.array_equal(back.read_field("C03", 3), plate.read_field("C03", 3))
    image = zarr.open_group(str(out), path="C/3/3", mode="r")
    datasets = image.attrs["ome"]["multiscales"][0]["datasets"]
    assert len(datasets) == 3
    assert image[datasets[2]["path"]].shape == (6, 270, 270)
    # one chunk per plane, so reading a plane reads one chunk
    assert image[datasets[0]["path"]].chunks == (1, 1080, 1080)


def test_written_plate_is_an_ngff_plate_for_ome_zarr_py(tmp_path, tiff_plate):
    out = write_ome_zarr(tiff_plate, tmp_path / "out.zarr")
    nodes = list(Reader(parse_url(str(out)))())
    assert any(isinstance(spec, OmeZarrPlateSpec) for spec in nodes[0].specs)
    attrs = zarr.open_group(str(out), mode="r").attrs["ome"]
    assert [w["path"] for w in attrs["plate"]["wells"]] == ["A/1", "B/3"]
    labels = zarr.open_group(str(out), path="B/3/2", mode="r").attrs["ome"]["omero"]["channels"]
    assert [c["label"] for c in labels] == ["Hoechst", "ConA", "MitoTracker"]
    assert labels[0]["color"] == "0000FF"


def test_write_some_wells_with_progress(tmp_path, tiff_plate):
    seen = []
    out = write_ome_zarr(
        tiff_plate, tmp_path / "b.zarr", wells=["B03"], progress=lambda *a: seen.append(a)
    )
    assert open_plate(out).wells == ["B03"]
    assert seen == [("convert", 1, 2), ("convert", 2, 2)]
    with pytest.raises(PlateLayoutError, match="H12"):
        write_ome_zarr(tiff_plate, tmp_path / "c.zarr", wells=["H12"])


def test_write_cancel(tmp_path, tiff_plate):
    with pytest.raises(Cancelled):
        write_ome_zarr(tiff_plate, tmp_path / "x.zarr", cancel=lambda: True)


def test_overwrite_rules(tmp_path, tiff_plate):
    out = write_ome_zarr(tiff_plate, tmp_path / "out.zarr", wells=["A01"])
    with pytest.raises(PhenoadaptError, match="already exists"):
        write_ome_zarr(tiff_plate, out)
    write_ome_zarr(tiff_plate, out, overwrite=True)
    assert open_plate(out).wells == ["A01", "B03"]
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.docx").write_bytes(b"x")
    with pytest.raises(PhenoadaptError, match="not a Zarr store"):
        write_ome_zarr(tiff_plate, folder, overwrite=True)
    assert (folder / "thesis.docx").exists()
    with pytest.raises(PhenoadaptError, match="own folder"):
        write_ome_zarr(tiff_plate, tiff_plate.path, overwrite=True)


def test_opening_reads_no_chunks(tmp_path, tiff_plate):
    out = write_ome_zarr(tiff_plate, tmp_path / "out.zarr")
    chunk_dirs = [p for p in out.rglob("c") if p.is_dir()]
    for directory in chunk_dirs:  # delete every chunk: metadata alone must open
        shutil.rmtree(directory)
    plate = open_plate(out)
    assert plate.n_fields == 4 and plate.field_shape == (12, 10)
    # Zarr fills missing chunks with the fill value: the plate still reads (zeros).
    assert plate.read_plane("A01", 1, 0).max() == 0


def test_zarr_source_pickles(tmp_path, tiff_plate):
    out = write_ome_zarr(tiff_plate, tmp_path / "out.zarr")
    plate = open_plate(out)
    plate.read_field("A01", 1)  # fills the array cache
    source = pickle.loads(pickle.dumps(plate.source))
    assert isinstance(source, ZarrSource)
    assert np.array_equal(
        source.read_plane("A01", 1, plate.channels[2]), plate.read_plane("A01", 1, 2)
    )


def _ome_zarr_py_plate(path: Path, z: int = 3) -> np.ndarray:
    """A plate as ome-zarr-py writes it: fields named 0, 1; 5-D (t, c, z, y, x) images."""
    root = zarr.open_group(str(path), mode="w")
    write_plate_metadata(root, ["A", "B"], ["1", "2", "3"], ["A/1", "B/3"], name="EXT-7")
    data = np.arange(1 * 2 * z * 6 * 5, dtype=np.uint16).reshape(1, 2, z, 6, 5)
    for well_path in ("A/1", "B/3"):
        well = root.require_group(well_path)
        write_well_metadata(well, ["0", "1"])
        for field in ("0", "1"):
            write_image(
                data + int(field),
                well.require_group(field),
                scale_factors=(),
                axes="tczyx",
                omero={
                    "channels": [
                        {
                            "label": "DAPI",
                            "color": "0000FF",
                            "window": {"min": 0, "max": 9, "start": 0, "end": 9},
                        },
                        {
                            "label": "Phalloidin",
                            "color": "FFFF00",
                            "window": {"min": 0, "max": 9, "start": 0, "end": 9},
                        },
                    ]
                },
            )
    return data


def test_reads_plate_written_by_ome_zarr_py(tmp_path):
    data = _ome_zarr_py_plate(tmp_path / "ext.zarr")
    plate = open_plate(tmp_path / "ext.zarr")
    assert plate.plate_id == "EXT-7"
    assert plate.sites == {"A01": [0, 1], "B03": [0, 1]}
    assert [c.key for c in plate.channels] == ["0", "1"]
    assert plate.channel_names == ["DAPI", "Phalloidin"]
    assert [c.role for c in plate.channels] == [ChannelRole.DNA, ChannelRole.AGP]
    assert plate.metadata["ngff_axes"] == ["t", "c", "z", "y", "x"]
    assert np.array_equal(plate.read_plane("B03", 1, "Phalloidin"), data[0, 1, 0] + 1)
    second = open_plate(tmp_path / "ext.zarr", plane=2)
    assert np.array_equal(second.read_plane("A01", 0, 0), data[0, 0, 1])
    projected = open_plate(tmp_path / "ext.zarr", plane="max")
    assert np.array_equal(projected.read_plane("A01", 0, 0), data[0, 0].max(axis=0))
    renamed = open_plate(tmp_path / "ext.zarr", channel_names={0: "Hoechst"})
    assert renamed.channel_names == ["Hoechst", "Phalloidin"]


def test_ome_zarr_image_is_not_a_plate(tmp_path):
    write_image(
        np.zeros((2, 8, 8), np.uint16), str(tmp_path / "image.zarr"), axes="cyx", scale_factors=()
    )
    with pytest.raises(PlateLayoutError, match="an OME-Zarr image"):
        open_plate(tmp_path / "image.zarr")


def test_incomplete_plate_names_the_well(tmp_path, tiff_plate):
    out = write_ome_zarr(tiff_plate, tmp_path / "out.zarr")
    shutil.rmtree(out / "B" / "3")
    with pytest.raises(PlateReadError, match="B/3"):
        open_plate(out)


def test_missing_image_is_named_when_read(tmp_path, tiff_plate):
    out = write_ome_zarr(tiff_plate, tmp_path / "out.zarr")
    shutil.rmtree(out / "B" / "3" / "2")
    plate = open_plate(out)  # the first field is probed; B03 site 2 only when read
    with pytest.raises(PlateReadError, match="B/3/2"):
        plate.read_field("B03", 2)


def test_concurrent_reads_match_sequential(tmp_path, tiff_plate):
    from concurrent.futures import ThreadPoolExecutor

    plate = open_plate(write_ome_zarr(tiff_plate, tmp_path / "out.zarr"))
    jobs = [(w, s, c) for w, s in plate.fields() for c in range(3)] * 4
    with ThreadPoolExecutor(4) as pool:
        planes = list(pool.map(lambda j: plate.read_plane(*j), jobs))
    for job, plane in zip(jobs, planes, strict=True):
        assert np.array_equal(plane, tiff_plate.read_plane(*job))
