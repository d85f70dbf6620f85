"""Embedding API and ``phenoadapt embed``: tables, aggregation, corrections, bad input."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from phenoadapt import schema
from phenoadapt.adapt import ContextSpec, Method, context_statistics, use_statistics
from phenoadapt.cells import CELL_COUNT, SegmentationParams
from phenoadapt.cli import main
from phenoadapt.embed import (
    Correction,
    ProfileOptions,
    aggregate_embeddings,
    cell_embedding_table,
    embed_images,
    embed_plate,
    embedding_columns,
    image_embeddings,
    load_embedder,
    parse_correction,
)
from phenoadapt.errors import ContextError, ModelError
from phenoadapt.nn import Normalization, ResNetConfig, build_resnet, phenoprofiler
from phenoadapt.pipeline.embed import EmbedPass
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.synthetic import SyntheticPlateConfig, generate_plate, read_cells
from phenoadapt.train import CheckpointMetadata, make_toy_plates, save_checkpoint

DIM = 6
CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _model(n_channels: int = 5):
    norm = Normalization("log1p", (5.5,) * n_channels, (1.0,) * n_channels, None)
    model = phenoprofiler(
        n_channels, 3, DIM, arch="resnet10", width=4, stem="small", heads=2,
        normalization=norm, seed=0,
    )  # fmt: skip
    with torch.no_grad():  # running statistics as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.fixture(scope="module")
def toy():
    images, table = make_toy_plates(2, n_channels=5, size=16, treated_per_class=8,
                                    n_controls=8, cells_per_well=4, seed=0)  # fmt: skip
    table[schema.SITE] = np.where(np.arange(len(table)) % 2 == 0, 1, 2)
    table[schema.CELL_ID] = np.arange(len(table))
    return images, table, _model()


#: The toy plates and the synthetic plate have 8-9 control cells, below the 32 a plate
#: needs by default (:data:`phenoadapt.adapt.MIN_CONTROLS`): tests of the statistics
#: themselves lower the minimum.
FEW = ContextSpec(min_controls=1)


def _emb(table: pd.DataFrame) -> np.ndarray:
    return table[[c for c in table.columns if c.startswith("emb_")]].to_numpy()


# --------------------------------------------------------------------------- corrections


def test_parse_correction():
    assert parse_correction("none") == Correction()
    assert parse_correction("TVN").embedding == "tvn"
    assert parse_correction("bn").bn_method.value == "cs-arm-bn"
    both = parse_correction("adabn+phenotype")
    assert (both.bn_method.value, both.embedding) == ("adabn", "phenotype")
    assert both.name == "adabn+phenotype" and both.needs_controls
    assert parse_correction("erm").bn_method is None and not parse_correction("erm").needs_controls
    for bad in ("sphering", "tvn+phenotype", "bn+ben", "", "a+b+c"):
        with pytest.raises(ValueError, match="(?i)correction"):
            parse_correction(bad)


# --------------------------------------------------------------------------- tables


@pytest.mark.parametrize("level", ["cell", "site", "well"])
def test_tables_have_the_schema(toy, level):
    images, table, model = toy
    out = embed_images(model, images, table, level=level)
    columns = list(out.columns)
    emb = [c for c in columns if c.startswith("emb_")]
    assert emb == embedding_columns(DIM) and columns[-DIM:] == emb
    meta = [c for c in columns if c.startswith("Metadata_")]
    assert columns[: len(meta)] == meta and columns[:2] == [schema.PLATE, schema.WELL]
    n_sites = table.groupby([schema.PLATE, schema.WELL, schema.SITE]).ngroups
    n_wells = table.groupby([schema.PLATE, schema.WELL]).ngroups
    assert len(out) == {"cell": len(table), "site": n_sites, "well": n_wells}[level]
    if level == "cell":
        assert schema.CELL_ID in columns
    else:
        assert out[CELL_COUNT].sum() == len(table)
    assert np.isfinite(_emb(out)).all()


def test_cell_embedding_table_pins_the_column_order():
    """Plate, well, site, the other metadata in table order, cell id and centroid, emb_*."""
    table = pd.DataFrame(
        {
            "centroid_x": [1.0, 2.0], schema.ROLE: ["control", "treated"],
            "predicted_moa": ["a", "b"], schema.SITE: [1, 2], schema.CELL_ID: [7, 8],
            schema.WELL: ["A01", "A02"],
            "Metadata_Lab": ["x", "x"], schema.PLATE: ["P", "P"], "centroid_y": [3.0, 4.0],
        },
        index=[5, 9],
    )  # fmt: skip
    values = np.array([[0.5, np.nan], [1.5, 2.5]])
    out = cell_embedding_table(table, values)
    assert list(out.columns) == [
        schema.PLATE, schema.WELL, schema.SITE, schema.ROLE, "Metadata_Lab",
        schema.CELL_ID, schema.CENTROID_Y, schema.CENTROID_X, "emb_0", "emb_1",
    ]  # fmt: skip
    assert list(out.index) == [0, 1] and out["emb_0"].dtype == np.float32
    assert np.isnan(out.loc[0, "emb_1"]) and out.loc[1, schema.CELL_ID] == 8
    with pytest.raises(ValueError, match="3 embeddings for 2 rows"):
        cell_embedding_table(table, np.zeros((3, 2)))


def test_embed_pass_is_image_embeddings_keywords_as_one(toy):
    """embed_plate's helpers get one typed, frozen EmbedPass (not a dict of options)."""
    images, table, model = toy
    keywords = {
        name
        for name, p in inspect.signature(image_embeddings).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "bn_method"
    }
    assert {f.name for f in dataclasses.fields(EmbedPass)} == keywords
    how = EmbedPass(input_size=12, contexts=FEW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        how.unit = "site"  # type: ignore[misc]
    values, rows = how.embeddings(model, images, table, Method.ADABN)
    expected, _ = image_embeddings(
        model, images, table, bn_method="adabn", input_size=12, contexts=FEW
    )
    assert np.array_equal(values, expected) and len(rows) == len(table)


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_aggregation_statistics(toy, statistic):
    images, table, model = toy
    cells = embed_images(model, images, table, level="cell")
    wells = aggregate_embeddings(cells, "well", statistic)
    keys = [schema.PLATE, schema.WELL]
    expected = getattr(cells.groupby(keys, sort=False)[embedding_columns(DIM)], statistic)()
    assert np.allclose(_emb(wells), expected.to_numpy())


def test_excluded_wells_are_left_out(toy):
    images, table, model = toy
    excluded = table.copy()
    excluded.loc[excluded[schema.WELL] == excluded[schema.WELL].iloc[-1], schema.ROLE] = "excluded"
    out = embed_images(model, images, excluded, level="cell")
    assert len(out) == int((excluded[schema.ROLE] != "excluded").sum())


# --------------------------------------------------------------------------- corrections applied


def test_phenotype_correction_subtracts_070_of_the_control_mean(toy):
    images, table, model = toy
    raw = embed_images(model, images, table, level="well")
    corrected = embed_images(model, images, table, level="well", correction="phenotype")
    for plate in ("P1", "P2"):
        on = (raw[schema.PLATE] == plate).to_numpy()
        controls = on & (raw[schema.ROLE] == "control").to_numpy()
        shift = 0.7 * _emb(raw)[controls].mean(axis=0)
        assert np.allclose(_emb(corrected)[on], _emb(raw)[on] - shift, atol=1e-5)


def test_tvn_aligns_each_plates_controls(toy):
    images, table, model = toy
    out = embed_images(model, images, table, level="cell", correction="tvn")
    emb = [c for c in out.columns if c.startswith("emb_")]
    assert emb == embedding_columns(len(emb)) and 0 < len(emb) <= DIM
    for plate in ("P1", "P2"):
        controls = (out[schema.PLATE] == plate) & (out[schema.ROLE] == "control")
        assert np.allclose(_emb(out[controls]).mean(axis=0), 0, atol=1e-4)


def test_plate_context_statistics_are_used(toy):
    images, table, model = toy
    raw = embed_images(model, images, table, level="cell")
    adapted = embed_images(
        model,
        images,
        table,
        level="cell",
        correction="bn",
        contexts=ContextSpec(treated_per_context="plate", min_controls=1),
    )
    assert not np.allclose(_emb(raw), _emb(adapted), atol=1e-3)
    on = (table[schema.PLATE] == "P2").to_numpy()
    x = torch.from_numpy(images[on])
    stats = context_statistics(model, x)  # CS-ARM-BN with the whole plate: all its images
    with use_statistics(model, stats), torch.no_grad():
        expected = model.embed(x).numpy()
    assert np.allclose(_emb(adapted)[on], expected, atol=1e-4)
    # Default contexts (64 treated + 128 controls) are seeded and cover every image.
    seeded = ContextSpec(seed=3, min_controls=1)
    a = embed_images(model, images, table, correction="cs-arm-bn+phenotype", contexts=seeded)
    b = embed_images(model, images, table, correction="cs-arm-bn+phenotype", contexts=seeded)
    assert np.array_equal(_emb(a), _emb(b)) and len(a) == len(table)
    assert model.training is False  # the model is left as it was


# --------------------------------------------------------------------------- bad input


def test_channel_mismatch_is_a_model_error(toy):
    images, table, model = toy
    with pytest.raises(ModelError, match="takes 5 channels but the images have 3"):
        embed_images(model, images[:, :3], table)


def test_corrections_need_controls(toy):
    images, table, model = toy
    no_roles = table.drop(columns=[schema.ROLE])
    with pytest.raises(ContextError, match="no Metadata_Role"):
        embed_images(model, images, no_roles, correction="phenotype")
    no_controls = table.copy()
    no_controls.loc[no_controls[schema.PLATE] == "P2", schema.ROLE] = "treated"
    no_controls.loc[no_controls[schema.MOA].isna(), schema.MOA] = "moa_a"
    for correction in ("phenotype", "tvn", "cs-arm-bn", "ben"):
        with pytest.raises(ContextError, match="P2"):
            embed_images(model, images, no_controls, correction=correction, contexts=FEW)
    assert len(embed_images(model, images, no_controls, correction="adabn")) == len(table)


def test_embeddings_need_as_many_controls_as_predictions(toy):
    """One rule for the fewest controls (32 cells, 8 sites) for embed as for predict."""
    images, table, model = toy
    with pytest.raises(ContextError, match="at least 32"):
        embed_images(model, images, table, correction="bn")
    # Field tiles pool many cells: a plate of 8 control sites suffices.
    sites = embed_images(model, images, table, correction="bn", unit="site")
    assert len(sites) == len(table)
    with pytest.raises(ContextError, match="at least 32"):
        embed_images(model, images, table, correction="bn", unit="site",
                     contexts=ContextSpec(min_controls=32))  # fmt: skip
    assert FEW.min_controls_for("cell") == 1 and ContextSpec().min_controls_for("site") == 8


# --------------------------------------------------------------------------- plates and CLI


@pytest.fixture(scope="module")
def plate_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    config = SyntheticPlateConfig(
        sites=2, field_shape=(128, 128), wells=("A01", "A02", "A03", "B01", "B02", "B03")
    )
    synthetic = generate_plate(root, config, seed=1, plate_id="P1", workers=1)
    cells = root / "cells.csv"
    read_cells(synthetic.path).to_csv(cells, index=False)
    model = _model()
    meta = CheckpointMetadata(
        network={}, classes=("DMSO", "a", "b"), channel_names=CHANNELS, method="erm",
        crop_size=16, extra={"kind": "embedder", "unit": "cell", "crop_scale": 0.5},
    )  # fmt: skip
    ckpt = save_checkpoint(root / "pp.safetensors", model, meta)
    classifier = build_resnet(ResNetConfig("resnet10", 5, 3, width=4, stem="small"), seed=0)
    clf = save_checkpoint(
        root / "clf.safetensors",
        classifier,
        CheckpointMetadata(network={}, classes=("a", "b", "c"), channel_names=CHANNELS),
    )
    return synthetic, cells, ckpt, clf


def test_embed_plate_at_well_level(plate_files):
    synthetic, cells_csv, ckpt, _ = plate_files
    plate = open_plate(synthetic.path)
    platemap = read_platemap(synthetic.platemap_path)
    cells = pd.read_csv(cells_csv, dtype={schema.WELL: str, schema.PLATE: str})
    checkpoint = load_embedder(ckpt)
    stages = []
    wells = embed_plate(
        plate, checkpoint, platemap, cells=cells,
        profile=ProfileOptions("well", correction="phenotype"),
        progress=lambda stage, done, total: stages.append(stage),
    )  # fmt: skip
    assert list(wells[schema.WELL]) == ["A01", "A02", "A03", "B01", "B02", "B03"]
    assert wells[CELL_COUNT].sum() == len(cells)
    assert (wells[schema.ROLE] == "control").sum() == 1 and "crops" in stages
    control = wells[schema.ROLE] == "control"
    raw = embed_plate(plate, checkpoint, platemap, cells=cells)  # default: well means
    # One control well: the corrected control is 0.3 of the raw one.
    assert np.allclose(_emb(wells[control]), 0.3 * _emb(raw[control]), atol=1e-5)
    adapted = embed_plate(
        plate, checkpoint, platemap, cells=cells, profile=ProfileOptions("site", correction="bn"),
        contexts=FEW,
    )  # fmt: skip
    assert len(adapted) == 12 and not np.allclose(_emb(adapted)[:2], _emb(raw)[:1], atol=1e-3)
    # Without a cell table the plate is segmented on the fly.
    segmented = embed_plate(plate, checkpoint, platemap, segmentation=SegmentationParams(16))
    assert set(segmented[schema.WELL]) <= set(raw[schema.WELL]) and len(segmented) >= 5


def test_embed_plate_refuses_corrections_without_a_platemap(plate_files):
    synthetic, _, ckpt, _ = plate_files
    with pytest.raises(ContextError, match="--platemap"):
        embed_plate(
            open_plate(synthetic.path), ckpt, None, profile=ProfileOptions(correction="tvn")
        )


def _embed(synthetic, ckpt: Path, out: Path, *extra: str) -> int:
    return main(
        ["embed", str(synthetic.path), "--checkpoint", str(ckpt), "--out", str(out), *extra]
    )


def test_cli_writes_embeddings_and_exits_2_on_bad_input(plate_files, tmp_path, capsys):
    synthetic, cells, ckpt, clf = plate_files
    out = tmp_path / "emb.csv"
    common = ["--platemap", str(synthetic.platemap_path), "--cells", str(cells)]
    assert _embed(synthetic, ckpt, out, *common, "--level", "site", "--correction", "tvn") == 0
    table = pd.read_csv(out)
    assert len(table) == 12 and table.columns[0] == schema.PLATE
    assert "site embeddings" in capsys.readouterr().out
    # No silent overwrite; a classifier checkpoint; too few rows for the UMAP neighbours.
    assert _embed(synthetic, ckpt, out, *common) == 2
    assert "already exists" in capsys.readouterr().err
    assert _embed(synthetic, clf, tmp_path / "b.csv", *common) == 2
    assert "not a PhenoProfiler embedder" in capsys.readouterr().err
    assert _embed(synthetic, ckpt, tmp_path / "c.csv", *common, "--umap") == 2
    assert "n_neighbors" in capsys.readouterr().err
    assert _embed(synthetic, ckpt, tmp_path / "d.csv", *common, "--correction", "magic") == 2
    assert not (tmp_path / "d.csv").exists()


def test_plate_episode_checkpoints_warn_without_context_statistics(plate_files):
    synthetic, cells_csv, ckpt, _ = plate_files
    plate = open_plate(synthetic.path)
    platemap = read_platemap(synthetic.platemap_path)
    cells = pd.read_csv(cells_csv, dtype={schema.WELL: str, schema.PLATE: str})
    checkpoint = load_embedder(ckpt)
    checkpoint.metadata.method = "cs-arm-bn"  # as if trained on plate episodes
    with pytest.warns(UserWarning, match="correction 'bn'"):
        embed_plate(plate, checkpoint, platemap, cells=cells)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embed_plate(
            plate, checkpoint, platemap, cells=cells, profile=ProfileOptions(correction="bn"),
            contexts=FEW,
        )  # fmt: skip


def test_cli_writes_anndata_for_scanpy(plate_files, tmp_path, capsys):
    import anndata

    synthetic, cells, ckpt, _ = plate_files
    common = ["--platemap", str(synthetic.platemap_path), "--cells", str(cells)]
    out = tmp_path / "emb.h5ad"
    assert _embed(synthetic, ckpt, out, *common, "--level", "cell", "--umap") == 0
    csv = tmp_path / "emb.csv"
    assert _embed(synthetic, ckpt, csv, *common, "--level", "cell", "--umap") == 0
    table = pd.read_csv(csv)
    adata = anndata.read_h5ad(out)
    emb = [c for c in table.columns if c.startswith(schema.EMBEDDING_PREFIX)]
    assert adata.shape == (len(table), len(emb)) and list(adata.var_names) == emb
    np.testing.assert_allclose(adata.X, table[emb].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(adata.obsm["X_umap"], table[[schema.UMAP_1, schema.UMAP_2]])
    assert list(adata.obs[schema.WELL].astype(str)) == list(table[schema.WELL].astype(str))
    assert _embed(synthetic, ckpt, out, *common, "--level", "cell") == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err


def test_embedding_columns_are_spelled_in_schema_only():
    """One spelling of emb_0.. (schema.embedding_columns), re-exported by phenoadapt.embed."""
    import phenoadapt.embed

    assert phenoadapt.embed.embedding_columns is schema.embedding_columns
    assert schema.embedding_columns(3) == ["emb_0", "emb_1", "emb_2"]
    # No module builds the names itself (f"emb_{i}"): a new spelling would split the tables.
    root = Path(phenoadapt.__file__).parent
    spelt = [p.name for p in root.rglob("*.py") if 'f"emb_{' in p.read_text(encoding="utf-8")]
    assert spelt == []
