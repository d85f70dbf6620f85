"""Synthetic plates: determinism, ground truth, plate maps, effects, label shift, CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenoadapt import export, schema
from phenoadapt.cli import main
from phenoadapt.errors import Cancelled, PlateReadError
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.synthetic import (
    MOAS,
    BatchEffects,
    EffectStrengths,
    LabEffects,
    OutputExistsError,
    PlateEffects,
    SyntheticPlateConfig,
    control_wells,
    design_plate,
    generate_experiment,
    generate_plate,
    plane_name,
    read_cells,
    read_effects,
    read_masks,
    render_field,
)
from phenoadapt.plate.synthetic.design import allocate
from phenoadapt.plate.synthetic.effects import (
    edge_weight,
    illumination,
    read_order,
    well_conditions,
)
from phenoadapt.plate.synthetic.optics import FieldJitter
from phenoadapt.plate.synthetic.phenotypes import COMPOUNDS, cell_responses
from phenoadapt.plate.wells import PLATE_96, PLATE_384, PLATE_1536

# Small cells in small fields of two rows of wells keep every test fast (about 10
# cells per field, 24 fields per plate; A01, A07, B05 and B11 are the controls).
SMALL = SyntheticPlateConfig(
    n_wells=96,
    sites=1,
    field_shape=(64, 64),
    nucleus_radius=4.0,
    cell_radius=10.0,
    cell_density=2.4e-3,
    wells=tuple(PLATE_96.wells()[:24]),
)
ROW_A = replace(SMALL, wells=tuple(PLATE_96.wells()[:12]))
FIELD = replace(SMALL, field_shape=(96, 96), wells=None)
IDEAL = LabEffects.ideal()


def digest(folder: Path) -> dict[str, str]:
    """sha1 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    return generate_plate(tmp_path_factory.mktemp("synth"), SMALL, seed=3, plate_id="P1")


# -- one field -----------------------------------------------------------------------------
def test_render_field_shapes_and_table():
    field = render_field(FIELD, moa="tubulin_inhibitor", seed=1)
    assert field.image.shape == (5, 96, 96) and field.image.dtype == np.uint16
    assert field.nuclei.shape == field.cells.shape == (96, 96)
    assert field.nuclei.dtype == field.cells.dtype == np.uint16
    assert field.channel_names == ("DNA", "ER", "RNA", "AGP", "Mito")
    table = field.table
    assert len(table) > 3
    assert set(table[schema.MOA]) == {"tubulin_inhibitor"}
    assert set(table[schema.TREATMENT]) == {"nocodazole"}
    assert (table[schema.CONCENTRATION] == 10.0).all()
    assert (table[schema.ROLE] == "treated").all()
    assert table["responder"].any() and (table.loc[~table["responder"], "response"] == 0).all()


def test_render_field_is_deterministic():
    a, b = render_field(FIELD, seed=5), render_field(FIELD, seed=5)
    c = render_field(FIELD, seed=6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.cells, b.cells)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("moa", ["DMSO", "aurora_kinase_inhibitor"])
def test_masks_agree_with_the_cell_table(moa):
    field = render_field(FIELD, moa=moa, seed=2)
    nuclei, cells, table = field.nuclei, field.cells, field.table
    labels = np.unique(cells[cells > 0])
    assert list(labels) == list(table[schema.CELL_ID]) == list(range(1, len(table) + 1))
    # Every nucleus pixel lies in its own cell, and every cell has a nucleus.
    assert np.array_equal(cells[nuclei > 0], nuclei[nuclei > 0])
    assert set(np.unique(nuclei[nuclei > 0])) == set(labels)
    assert np.array_equal(np.bincount(cells.ravel(), minlength=len(table) + 1)[1:], table["area"])
    assert np.array_equal(
        np.bincount(nuclei.ravel(), minlength=len(table) + 1)[1:], table["nucleus_area"]
    )
    y, x = table[schema.CENTROID_Y].to_numpy(), table[schema.CENTROID_X].to_numpy()
    assert np.all((y >= 0) & (y < 96) & (x >= 0) & (x < 96))


def test_render_field_rejects_unknown_moa_and_compound():
    with pytest.raises(ValueError, match="Unknown MoA"):
        render_field(FIELD, moa="magic")
    with pytest.raises(ValueError, match="Unknown compound"):
        render_field(FIELD, moa="hdac_inhibitor", treatment="nocodazole")


# -- plates on disk ------------------------------------------------------------------------
def test_plate_folder_layout(plate):
    folder = plate.path
    assert folder.name == "P1" and plate.n_fields == 24
    tiffs = sorted(p.name for p in folder.glob("*.tiff"))
    assert len(tiffs) == 24 * 5
    assert plane_name("B12", 1, 5) in tiffs and plane_name("C01", 1, 1) not in tiffs
    assert plane_name("C05", 1, 3) == "r03c05f01p01-ch3sk1fk1fl1.tiff"
    assert "r02c05f01p01-ch3sk1fk1fl1.tiff" in tiffs
    plane = tifffile.imread(folder / "r01c01f01p01-ch1sk1fk1fl1.tiff")
    assert plane.shape == (64, 64) and plane.dtype == np.uint16
    assert not list(folder.parent.glob("*.partial"))
    effects = read_effects(folder)
    assert effects["plate_id"] == "P1" and effects["channels"][0] == "DNA"
    assert (
        LabEffects(**{k: tuple(v) if isinstance(v, list) else v for k, v in effects["lab"].items()})
        == plate.lab
    )


def test_same_seed_same_bytes_and_worker_count_does_not_matter(tmp_path):
    a = generate_plate(tmp_path / "a", ROW_A, seed=11, plate_id="P", workers=1)
    b = generate_plate(tmp_path / "b", ROW_A, seed=11, plate_id="P", workers=2)
    c = generate_plate(tmp_path / "c", ROW_A, seed=12, plate_id="P", workers=1)
    da, db, dc = digest(a.path), digest(b.path), digest(c.path)
    assert da == db
    assert da.keys() == dc.keys()
    assert sum(da[k] != dc[k] for k in da) > 0.9 * len(da)


def test_ground_truth_files_are_consistent(plate):
    cells = read_cells(plate.path)
    assert len(cells) == plate.n_cells > 0
    expected = {
        schema.PLATE,
        schema.WELL,
        schema.SITE,
        schema.CELL_ID,
        schema.CENTROID_Y,
        schema.CENTROID_X,
        schema.TREATMENT,
        schema.MOA,
        schema.CONCENTRATION,
        schema.ROLE,
        schema.LAB,
        schema.BATCH,
        "responder",
        "response",
        "n_nuclei",
        "area",
    }
    assert expected <= set(cells.columns)
    assert (cells[schema.PLATE] == "P1").all()
    for (well, site), group in list(cells.groupby([schema.WELL, schema.SITE]))[:12]:
        nuclei, masks = read_masks(plate.path, well, site)
        assert sorted(np.unique(masks[masks > 0])) == sorted(group[schema.CELL_ID])
        assert np.array_equal(masks[nuclei > 0], nuclei[nuclei > 0])
    # Per-cell truth agrees with the plate map.
    platemap = pd.read_csv(plate.platemap_path)
    merged = cells.merge(platemap, on=schema.WELL, suffixes=("", "_map"))
    assert (merged[schema.TREATMENT] == merged[f"{schema.TREATMENT}_map"]).all()
    assert (merged[schema.MOA] == merged[f"{schema.MOA}_map"]).all()
    with pytest.raises(PlateReadError, match="was not generated"):
        read_masks(plate.path, "A01", 9)


def test_platemap_of_a_plate_subset(plate):
    platemap = pd.read_csv(plate.platemap_path)
    assert list(platemap[schema.WELL]) == PLATE_96.wells()[:24]
    controls = platemap.loc[platemap[schema.ROLE] == "control", schema.WELL]
    assert list(controls) == ["A01", "A07", "B05", "B11"]
    with pytest.raises(ValueError, match="control well"):
        design_plate(replace(SMALL, wells=("A02", "A03")), np.random.default_rng(0))


def test_platemap_content():
    platemap, _ = design_plate(SyntheticPlateConfig(n_wells=96), np.random.default_rng(1))
    assert list(platemap[schema.WELL]) == PLATE_96.wells()
    controls = platemap[platemap[schema.ROLE] == "control"]
    treated = platemap[platemap[schema.ROLE] == "treated"]
    assert len(controls) == 16 and len(treated) == 80  # 1/6 of 96 wells
    assert (
        set(controls[schema.TREATMENT]) == {"DMSO"} and (controls[schema.CONCENTRATION] == 0).all()
    )
    assert set(treated[schema.MOA]) == set(MOAS)
    assert treated[schema.MOA].value_counts().nunique() == 1  # balanced without label shift
    for _, row in treated.iterrows():
        assert COMPOUNDS[row[schema.TREATMENT]].moa == row[schema.MOA]
        assert row[schema.CONCENTRATION] in SMALL.concentrations
    # Controls sit in edge and inner wells, in every row.
    wells = list(controls[schema.WELL])
    assert {w[0] for w in wells} == set("ABCDEFGH")
    assert any(PLATE_96.is_edge(w) for w in wells) and not all(PLATE_96.is_edge(w) for w in wells)


def test_open_plate_and_read_platemap_read_the_output(plate):
    opened = open_plate(plate.path)
    assert opened.layout == "phenix"
    assert opened.channel_names == ["DNA", "ER", "RNA", "AGP", "Mito"]
    assert opened.field_shape == (64, 64) and opened.n_fields == 24
    field = opened.read_field("B03", 1)
    on_disk = np.stack([tifffile.imread(plate.path / plane_name("B03", 1, c)) for c in range(1, 6)])
    assert np.array_equal(field, on_disk)
    platemap = read_platemap(plate.platemap_path, plate_format=96)
    frame = platemap.to_frame()
    assert (frame[schema.ROLE] == "control").sum() == 4
    assert set(frame.index if schema.WELL not in frame else frame[schema.WELL]) == set(opened.wells)


def test_control_wells_for_every_format():
    for fmt in (PLATE_96, PLATE_384, PLATE_1536):
        wells = control_wells(fmt, 1 / 6)
        assert abs(len(wells) / fmt.n_wells - 1 / 6) < 0.01
        rows = {w.rstrip("0123456789") for w in wells}
        assert len(rows) == fmt.n_rows  # every row has controls
    assert abs(len(control_wells(PLATE_384, 0.2)) / 384 - 0.2) < 0.01


def test_experiment_labs_batches_and_manifest(tmp_path):
    exp = generate_experiment(
        tmp_path, labs=2, batches_per_lab=1, plates_per_batch=2, config=ROW_A, seed=4
    )
    manifest = pd.read_csv(tmp_path / "experiment.csv")
    assert list(manifest[schema.PLATE]) == [
        "lab1_batch1_plate1",
        "lab1_batch1_plate2",
        "lab2_batch1_plate1",
        "lab2_batch1_plate2",
    ]
    assert list(manifest[schema.LAB]) == ["lab1", "lab1", "lab2", "lab2"]
    assert all((tmp_path / p).is_dir() for p in manifest["path"])
    p = exp.plates
    assert p[0].lab == p[1].lab and p[0].batch == p[1].batch and p[0].effects != p[1].effects
    assert p[0].lab != p[2].lab
    for pl in p:  # controls on every plate, in the map and among the cells
        cells = read_cells(pl.path)
        assert (cells[schema.ROLE] == "control").sum() > 0
        assert set(cells[schema.LAB]) == {pl.lab_id}
    # Labs are drawn from the experiment seed: more labs leave the first ones unchanged.
    more = generate_experiment(tmp_path / "more", labs=3, config=ROW_A, seed=4)
    assert more.plates[0].lab == p[0].lab and more.plates[1].lab == p[2].lab


def test_refuses_to_overwrite_unless_asked(tmp_path, plate):
    assert OutputExistsError is export.OutputExistsError  # one class, in export.py
    with pytest.raises(OutputExistsError, match="not empty"):
        generate_plate(plate.path.parent, SMALL, seed=3, plate_id="P1")
    other = tmp_path / "P1"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a synthetic plate"):
        generate_plate(tmp_path, SMALL, seed=3, plate_id="P1", overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_cancel_removes_the_partial_plate_and_progress_is_reported(tmp_path):
    calls = []

    def progress(stage, done, total):
        calls.append((stage, done, total))

    with pytest.raises(Cancelled):
        generate_plate(
            tmp_path,
            SMALL,
            seed=1,
            plate_id="P",
            workers=1,
            progress=progress,
            cancel=lambda: len(calls) >= 3,
        )
    assert calls == [("P", 1, 24), ("P", 2, 24), ("P", 3, 24)]
    assert not any(tmp_path.iterdir())


def test_cancel_with_worker_processes(tmp_path):
    with pytest.raises(Cancelled):
        generate_plate(tmp_path, ROW_A, seed=1, plate_id="P", workers=2, cancel=lambda: True)
    assert not any(tmp_path.iterdir())


# -- technical effects ---------------------------------------------------------------------
def _signal(lab=IDEAL, batch=None, plate=None, moa="DMSO", well="C03", seed=0, config=FIELD):
    return render_field(config, moa=moa, lab=lab, batch=batch, plate=plate, well=well, seed=seed)


def test_lab_gain_doubles_intensity():
    base = _signal().image.astype(float)
    gain = (1.0, 2.0, 1.0, 1.0, 0.5)
    scaled = _signal(lab=replace(IDEAL, gain=gain)).image.astype(float)
    for c, g in enumerate(gain):
        assert np.allclose(scaled[c], g * base[c], atol=1.5)  # rounding to integer counts


def test_lab_background_offset_and_noise():
    base = _signal().image.astype(float)
    shifted = _signal(lab=replace(IDEAL, background=(50.0,) * 5, offset=100.0)).image.astype(float)
    assert np.allclose(shifted - base, 150.0, atol=1)
    noisy = _signal(lab=replace(IDEAL, read_noise=10.0)).image.astype(float)
    assert 8 < np.std(noisy - base) < 12
    shot = _signal(lab=replace(IDEAL, shot_noise=1.0)).image.astype(float)
    bright = base > 1000
    resid = (shot - base)[bright] / np.sqrt(base[bright])
    assert 0.8 < resid.std() < 1.2


def test_psf_blur_and_magnification():
    sharp = _signal().image[0].astype(float)
    blurred = _signal(lab=replace(IDEAL, psf_sigma=2.0)).image[0].astype(float)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.6 * np.abs(np.diff(sharp, axis=1)).mean()
    small = _signal(config=replace(FIELD, field_shape=(160, 160))).table
    big = _signal(
        lab=replace(IDEAL, magnification=1.4), config=replace(FIELD, field_shape=(160, 160))
    ).table
    ratio = big["nucleus_area"].median() / small["nucleus_area"].median()
    assert 1.6 < ratio < 2.4  # lengths x1.4 -> areas about x1.96


def _sharpness(plane):
    return np.abs(np.diff(plane.astype(float), axis=1)).mean()


def test_chromatic_aberration_and_focus_drift_blur():
    lab = replace(IDEAL, psf_sigma=1.0)
    base = _signal(lab=lab).image
    chroma = _signal(lab=replace(lab, chromatic=(1, 1, 1, 1, 2.5))).image
    assert np.array_equal(chroma[0], base[0])
    assert _sharpness(chroma[4]) < 0.7 * _sharpness(base[4])
    drift = PlateEffects(focus_drift=2.0)
    first = _signal(lab=lab, plate=drift, well="A01").image[0]
    last = _signal(lab=lab, plate=drift, well="H01").image[0]
    assert np.array_equal(first, _signal(lab=lab, well="A01").image[0])
    assert _sharpness(last) < 0.7 * _sharpness(_signal(lab=lab, well="H01").image[0])


def test_illumination_vignetting_and_tilt():
    flat = illumination(IDEAL, (65, 65))
    assert np.allclose(flat, 1.0)
    vig = illumination(replace(IDEAL, vignetting=0.4), (65, 65))
    assert vig[32, 32] == pytest.approx(1.0) and vig[0, 0] == pytest.approx(0.6, abs=1e-3)
    tilt = illumination(replace(IDEAL, tilt=0.2, tilt_angle=0.0), (65, 65))
    assert tilt[32, 0] / tilt[32, -1] == pytest.approx(0.8 / 1.0, rel=0.02)
    field = _signal(lab=replace(IDEAL, vignetting=0.6)).image.astype(float)
    base = _signal().image.astype(float)
    assert field[:, :10, :10].sum() < 0.8 * base[:, :10, :10].sum()


def test_batch_stain_density_and_cell_size():
    base = _signal().image.astype(float)
    stained = _signal(batch=BatchEffects(stain=(1.0, 1.0, 2.0, 1.0, 1.0))).image.astype(float)
    assert np.allclose(stained[2], 2 * base[2], atol=2) and np.array_equal(stained[0], base[0])
    config = replace(FIELD, field_shape=(160, 160))
    sparse = _signal(config=config).table
    dense = _signal(config=config, batch=BatchEffects(density=2.0)).table
    assert len(dense) > 1.4 * len(sparse)
    bigger = _signal(config=config, batch=BatchEffects(cell_size=1.3)).table
    assert bigger["nucleus_area"].median() > 1.4 * sparse["nucleus_area"].median()


def test_plate_gain_drift_focus_and_edge_effects():
    plate = PlateEffects(
        gain=(1.5, 1, 1, 1, 1),
        drift=(0.2, 0, 0, 0, 0),
        focus_drift=1.0,
        edge_intensity=0.1,
        edge_density=0.3,
    )
    first, last = well_conditions(plate, PLATE_96, "A01"), well_conditions(plate, PLATE_96, "H01")
    assert read_order(PLATE_96, "A01") == 0 and read_order(PLATE_96, "H01") == 1
    assert first.stain[0] == pytest.approx(1.5 * 0.9 * 1.1) and last.stain[0] == pytest.approx(
        1.5 * 1.1 * 1.1
    )
    assert first.extra_blur == 0 and last.extra_blur == pytest.approx(1.0)
    inner = well_conditions(plate, PLATE_96, "D06")
    assert edge_weight(PLATE_96, "A05") == 1 and edge_weight(PLATE_96, "B05") == 0.5
    assert inner.density == 1 and first.density == pytest.approx(0.7)
    # In pixels: a brighter DNA channel under the plate gain.
    base = _signal().image[0].astype(float)
    gained = _signal(plate=PlateEffects(gain=(1.5, 1, 1, 1, 1))).image[0].astype(float)
    assert np.allclose(gained, 1.5 * base, atol=2)


def test_field_jitter_and_strength_scaling():
    jitters = [FieldJitter.sample(np.random.default_rng(i), 0.1, 0.5, 0.2) for i in range(50)]
    assert np.std([j.gain for j in jitters]) > 0.03 and min(j.defocus for j in jitters) >= 0
    off = EffectStrengths().scaled(0.0)
    lab = LabEffects.sample(np.random.default_rng(0), off)
    assert lab.gain == (1.0,) * 5 and lab.magnification == 1.0 and lab.psf_sigma == 1.0
    assert BatchEffects.sample(np.random.default_rng(0), off) == BatchEffects()
    labs = [LabEffects.sample(np.random.default_rng(i), EffectStrengths()) for i in range(2)]
    assert labs[0] != labs[1]
    with pytest.raises(ValueError):
        EffectStrengths(lab_gain_sd=-1)


# -- biology -------------------------------------------------------------------------------
def _mean_in_cells(field, channel):
    return field.image[channel][field.cells > 0].mean()


def test_each_moa_changes_morphology():
    config = replace(FIELD, field_shape=(160, 160), responder_fraction=1.0)
    fields = {m: _signal(moa=m, config=config, seed=7) for m in ["DMSO", *MOAS]}
    dmso = fields["DMSO"]
    area = {m: f.table["area"].median() for m, f in fields.items()}
    nuc = {m: f.table["nucleus_area"].median() for m, f in fields.items()}
    assert area["tubulin_inhibitor"] < 0.6 * area["DMSO"]
    assert nuc["aurora_kinase_inhibitor"] > 1.6 * nuc["DMSO"]
    assert fields["aurora_kinase_inhibitor"].table["n_nuclei"].mean() > 1.2
    assert _mean_in_cells(fields["mitochondrial_uncoupler"], 4) < 0.8 * _mean_in_cells(dmso, 4)
    assert _mean_in_cells(fields["er_stress_inducer"], 1) > 1.2 * _mean_in_cells(dmso, 1)
    rna = fields["protein_synthesis_inhibitor"]
    assert _mean_in_cells(rna, 2) < 0.85 * _mean_in_cells(dmso, 2)
    for m in MOAS:  # every MoA differs from DMSO somewhere
        assert not np.array_equal(fields[m].image, dmso.image)


def test_responders_and_dose_response():
    assert (
        COMPOUNDS["nocodazole"].response(10.0) > COMPOUNDS["nocodazole"].response(1.0) > 0.9 * 0.95
    )
    assert COMPOUNDS["DMSO"].response(10.0) == 0
    rng = np.random.default_rng(0)
    responder, response = cell_responses(rng, 4000, 0.5, 0.8)
    assert responder.mean() == pytest.approx(0.8, abs=0.03)
    assert (response[~responder] == 0).all() and response[responder].mean() == pytest.approx(
        0.5, rel=0.1
    )


# -- label shift ---------------------------------------------------------------------------
def test_label_shift_proportions():
    k = len(MOAS)
    balanced, props = design_plate(SyntheticPlateConfig(n_wells=384), np.random.default_rng(0))
    counts = balanced[balanced[schema.ROLE] == "treated"][schema.MOA].value_counts()
    assert counts.max() - counts.min() <= 1 and set(props.values()) == {1 / k}
    shifted = [
        design_plate(
            SyntheticPlateConfig(n_wells=384, label_shift_alpha=0.05), np.random.default_rng(s)
        )
        for s in range(20)
    ]
    top_share = [max(p.values()) for _, p in shifted]
    assert np.mean(top_share) > 0.6  # a few MoAs dominate each plate
    for frame, p in shifted:
        treated = frame[frame[schema.ROLE] == "treated"]
        got = treated[schema.MOA].value_counts().reindex(list(p), fill_value=0).to_numpy()
        assert np.array_equal(got, allocate(np.array(list(p.values())), len(treated)))
        assert (frame[schema.ROLE] == "control").sum() == 64  # controls are never shifted away
    mild = [
        max(
            design_plate(
                SyntheticPlateConfig(n_wells=384, label_shift_alpha=100.0), np.random.default_rng(s)
            )[1].values()
        )
        for s in range(20)
    ]
    assert np.mean(mild) < 0.2
    assert allocate(np.array([0.5, 0.3, 0.2]), 7).sum() == 7


def test_config_validation():
    with pytest.raises(ValueError, match="plate format"):
        SyntheticPlateConfig(n_wells=100)
    with pytest.raises(ValueError, match="nucleus_radius"):
        SyntheticPlateConfig(nucleus_radius=30, cell_radius=20)
    with pytest.raises(ValueError, match="MoA"):
        SyntheticPlateConfig(moas=("hdac_inhibitor", "nonsense"))
    with pytest.raises(ValueError, match="label_shift_alpha"):
        SyntheticPlateConfig(label_shift_alpha=0)
    with pytest.raises(PlateReadError, match="not a synthetic plate"):
        read_cells(Path(__file__).parent)


# -- CLI -----------------------------------------------------------------------------------
def test_cli_synth(tmp_path, capsys):
    args = [
        "synth",
        str(tmp_path),
        "--wells",
        "96",
        "--sites",
        "1",
        "--size",
        "48",
        "--labs",
        "2",
        "--seed",
        "3",
        "--label-shift-alpha",
        "0.5",
        "--only-wells",
        "A01,A02",
        "A03",
        "B05",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 plate(s)" in out
    manifest = pd.read_csv(tmp_path / "experiment.csv")
    assert len(manifest) == 2
    plate_dir = tmp_path / manifest["path"][0]
    assert tifffile.imread(plate_dir / plane_name("A01", 1, 1)).shape == (48, 48)
    assert len(list(plate_dir.glob("*.tiff"))) == 4 * 5
    effects = json.loads((plate_dir / "ground_truth" / "effects.json").read_text())
    assert effects["config"]["label_shift_alpha"] == 0.5
    before = digest(tmp_path)
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert digest(tmp_path) == before  # same seed, same bytes
    assert main(["synth", str(tmp_path / "x"), "--sites", "0"]) == 2
