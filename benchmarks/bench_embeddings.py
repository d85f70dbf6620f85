"""PhenoProfiler embeddings on synthetic plates with a held-out lab; writes docs/embeddings.md.

What it does
------------
1. Writes a synthetic experiment (:func:`phenoadapt.plate.synthetic.generate_experiment`):
   3 labs x 2 plates, rows A-D of a 96-well plate (48 wells), 1 field per well, 5 MoAs
   x 3 compounds at one dose, 8 DMSO control wells per plate.
2. For every field, measures every ground-truth cell (:func:`phenoadapt.cells.measure_cells`
   on the synthetic masks) and cuts a 32-pixel crop at half resolution around it.
3. Trains a small PhenoProfiler (ResNet-10 at width 8, 32-d embeddings) on the plates of
   the training labs: stepwise (MSE onto the site's morphology profile, then MSE +
   contrastive + treatment cross-entropy), mixed batches as published.
4. Embeds every cell of every plate, the held-out lab included, and averages per well,
   under each correction: none, phenotype correction (0.7 x the plate's control mean),
   TVN (fitted on control wells), plate-context batch-norm statistics (CS-ARM-BN:
   64 treated + 128 control cells of the plate per context).  The same network is
   also trained with plate episodes (``plate_context=True``, the ARM-BN way of
   training), once with the published targets and once with targets z-scored
   against each plate's controls, and embedded with CS-ARM-BN statistics.
5. A hand-crafted baseline: the well medians of the cell measurements, z-scored per
   plate against the plate's control wells.
6. Scores every well-level table: batch mixing without control wells (leave-one-out
   5-NN accuracy of the lab and of the plate, silhouette by lab, mean LISI by lab),
   MoA mAP (copairs; positives = treated wells of the same MoA and another compound)
   on all wells and on the held-out lab's wells only, and mAP of phenotypic activity
   (replicates against the same plate's controls).  Several training seeds.
7. Draws UMAPs (by lab/plate and by MoA, side by side, fixed seed) of the first seed
   and a summary of mixing against MoA retrieval.

Run ``python benchmarks/bench_embeddings.py [--quick] [--seeds 0 1 2]`` (CPU, one torch
thread; 3 seeds take about 12 minutes, ``--quick`` about 6, mostly writing and measuring
the plates).  It prints the tables, writes ``docs/embeddings.md`` between the benchmark
markers and draws ``docs/images/embeddings_umap.png`` and ``docs/images/embeddings_scores.png``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from phenoadapt import schema  # noqa: E402
from phenoadapt.adapt import ContextSpec  # noqa: E402
from phenoadapt.adapt.embedding import control_zscore  # noqa: E402
from phenoadapt.cells import (  # noqa: E402
    CropParams,
    MeasureParams,
    Segmentation,
    aggregate_profiles,
    cell_table,
    extract_crops,
    measure_cells,
)
from phenoadapt.cells.crops import crop_channels  # noqa: E402
from phenoadapt.embed import (  # noqa: E402
    aggregate_embeddings,
    cell_embedding_table,
    correct_embeddings,
    embed_images,
    image_embeddings,
)
from phenoadapt.evaluate import (  # noqa: E402
    batch_mixing,
    map_activity,
    map_consistency,
    umap_coordinates,
)
from phenoadapt.nn import fit_normalization, phenoprofiler  # noqa: E402
from phenoadapt.plate import open_plate, read_platemap  # noqa: E402
from phenoadapt.plate.synthetic import (  # noqa: E402
    CHANNEL_NAMES,
    SyntheticExperiment,
    SyntheticPlateConfig,
    generate_experiment,
    read_masks,
)
from phenoadapt.profiles import clean_features, feature_columns  # noqa: E402
from phenoadapt.train import (  # noqa: E402
    EmbedderData,
    EmbedderTrainConfig,
    ProfileTargets,
    train_phenoprofiler,
)

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "embeddings.md"
IMAGES = ROOT / "docs" / "images"
BEGIN, END = "<!-- benchmark:begin -->", "<!-- benchmark:end -->"

#: Five MoAs, from obvious (tubulin, actin) to subtle (ER stress); 3 compounds each.
MOAS = (
    "tubulin_inhibitor",
    "aurora_kinase_inhibitor",
    "mitochondrial_uncoupler",
    "actin_disruptor",
    "er_stress_inducer",
)
#: Rows A-D of a 96-well plate: 8 DMSO wells of the control lattice, 40 treated wells.
HALF_PLATE = tuple(f"{row}{col:02d}" for row in "ABCD" for col in range(1, 13))
HANDCRAFTED = "hand-crafted (control z-score)"
#: Embedding variants: (row name, training with plate episodes, normalization of the
#: regression targets, correction name).  One network is trained per distinct
#: (plate episodes, target normalization) pair and seed.
VARIANTS = (
    ("raw (running BN statistics)", False, "global", "none"),
    ("phenotype correction (0.7)", False, "global", "phenotype"),
    ("TVN (control PCA whitening)", False, "global", "tvn"),
    ("plate-context BN (CS-ARM-BN)", False, "global", "cs-arm-bn"),
    ("plate-episode training + CS-ARM-BN", True, "global", "cs-arm-bn"),
    ("plate episodes, control-z targets + CS-ARM-BN", True, "plate-controls", "cs-arm-bn"),
)


@dataclass(frozen=True)
class Settings:
    """Size of the experiment, the network, its training and the scores.

    The defaults are the full benchmark; :func:`quick_settings` and the smoke
    test shrink them.
    """

    labs: int = 3
    held_out_labs: int = 1
    plates_per_lab: int = 2
    wells: tuple[str, ...] | None = HALF_PLATE
    field_size: int = 256
    moas: tuple[str, ...] = MOAS
    experiment_seed: int = 0
    crop_size: int = 32
    crop_scale: float = 0.5
    texture: bool = False
    width: int = 8
    embedding_dim: int = 32
    mse_epochs: int = 3
    epochs: int = 6
    batch_size: int = 128
    controls_per_batch: int = 32
    max_steps_per_epoch: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    knn_neighbors: int = 5
    perplexity: float = 30.0
    umap_neighbors: int = 15
    null_size: int = 2000
    variants: tuple[tuple[str, bool, str, str], ...] = field(default=VARIANTS)

    @property
    def training_labs(self) -> list[str]:
        """Names of the labs trained on (the first ones)."""
        return [f"lab{i}" for i in range(1, self.labs - self.held_out_labs + 1)]

    @property
    def held_out(self) -> list[str]:
        """Names of the held-out labs (the last ones)."""
        return [f"lab{i}" for i in range(self.labs - self.held_out_labs + 1, self.labs + 1)]


def quick_settings() -> Settings:
    """A few-minute run: fewer epochs and one seed, same experiment."""
    return Settings(mse_epochs=1, epochs=1, seeds=(0,), max_steps_per_epoch=20)


# --------------------------------------------------------------------------- data


@dataclass
class Cells:
    """Crops of every cell of the experiment and their per-cell table (with measurements)."""

    crops: np.ndarray
    table: pd.DataFrame


def make_experiment(root: Path, settings: Settings) -> SyntheticExperiment:
    """Write the synthetic plates (``labs`` x 1 batch x ``plates_per_lab``)."""
    config = SyntheticPlateConfig(
        sites=1, field_shape=(settings.field_size, settings.field_size),
        concentrations=(10.0,), moas=settings.moas, wells=settings.wells,
    )  # fmt: skip
    return generate_experiment(
        root, labs=settings.labs, plates_per_batch=settings.plates_per_lab, config=config,
        seed=settings.experiment_seed, workers=1,
    )  # fmt: skip


def experiment_cells(experiment: SyntheticExperiment, settings: Settings) -> Cells:
    """Measure every ground-truth cell and cut its crop, plate by plate, field by field.

    The synthetic masks stand in for a segmentation, so the comparison of
    embeddings is not confounded by segmentation errors.
    """
    crop = CropParams(settings.crop_size, settings.crop_scale)
    measure = MeasureParams(texture=settings.texture)
    crops, tables = [], []
    for synthetic in experiment.plates:
        plate = open_plate(synthetic.path)
        platemap = read_platemap(synthetic.platemap_path)
        picked = crop_channels(plate.channels, crop)  # DNA, ER, RNA, AGP, Mito
        for well, site in plate.fields():
            image = plate.read_field(well, site)
            nuclei, cells = read_masks(synthetic.path, well, site)
            seg = Segmentation(nuclei.astype(np.int32), cells.astype(np.int32))
            if seg.n_cells == 0:
                continue
            values = measure_cells(image, plate.channels, seg, measure)
            rows = cell_table(values, plate.plate_id, well, site, platemap)
            centres = rows[[schema.CENTROID_Y, schema.CENTROID_X]].to_numpy()
            field_crops, kept = extract_crops(image[picked], centres, crop)
            rows = rows[kept].reset_index(drop=True)
            rows.insert(1, schema.LAB, synthetic.lab_id)
            crops.append(field_crops)
            tables.append(rows)
    table = pd.concat(tables, ignore_index=True)
    return Cells(np.concatenate(crops).astype(np.float32), table)


def _metadata(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("Metadata_")]


def handcrafted_wells(cells: pd.DataFrame) -> pd.DataFrame:
    """Well medians of the cell measurements, cleaned and z-scored against each plate's controls."""
    wells = aggregate_profiles(cells, level="well")
    wells, _ = clean_features(wells)
    features = feature_columns(wells)
    plates = wells[schema.PLATE].astype(str).to_numpy()
    controls = (wells[schema.ROLE] == schema.Role.CONTROL.value).to_numpy()
    wells[features] = control_zscore(wells[features].to_numpy(np.float64), plates, controls)
    # A feature constant among every plate's controls stays unscaled; drop what is unusable.
    cleaned, _ = clean_features(wells)
    return cleaned


# --------------------------------------------------------------------------- training


def train_embedder(
    cells: Cells, settings: Settings, seed: int, plate_context: bool, targets: str = "global"
) -> torch.nn.Module:
    """Train a small PhenoProfiler on the training labs' cells (stepwise schedule).

    ``targets`` is the normalization of the profile targets: ``"global"`` (the
    training sites' mean and std, as published: the targets keep each plate's
    technical shift) or ``"plate-controls"`` (z-scored against the plate's controls).
    """
    table = cells.table
    on_train = table[schema.LAB].isin(settings.training_labs).to_numpy()
    images, rows = cells.crops[on_train], table[on_train].reset_index(drop=True)
    profiles = aggregate_profiles(rows, level="site")
    fitted = ProfileTargets(settings.embedding_dim, normalization=targets)
    data = EmbedderData.from_tables(
        images, rows, profiles, fitted, class_by="treatment", channel_names=CHANNEL_NAMES
    )
    model = phenoprofiler(
        len(CHANNEL_NAMES), len(data.classes), settings.embedding_dim, arch="resnet10",
        width=settings.width, stem="small", heads=2,
        normalization=fit_normalization(images, seed=seed), seed=seed,
    )  # fmt: skip
    config = EmbedderTrainConfig(
        schedule="stepwise", mse_epochs=settings.mse_epochs, epochs=settings.epochs,
        batch_size=settings.batch_size, plate_context=plate_context,
        controls_per_batch=settings.controls_per_batch, seed=seed, device="cpu",
        max_steps_per_epoch=settings.max_steps_per_epoch,
    )  # fmt: skip
    result = train_phenoprofiler(model, data, config=config, targets=fitted)
    return result.model.eval()


def embedding_tables(
    model: torch.nn.Module, cells: Cells, corrections: Sequence[str], seed: int
) -> dict[str, pd.DataFrame]:
    """Well-level embeddings of every plate under each correction.

    The cells are embedded once with the running statistics for the output-level
    corrections (none, phenotype, TVN); a batch-norm correction embeds them again
    with plate-context statistics.
    """
    table = cells.table[_metadata(cells.table) + [schema.CELL_ID]]
    out: dict[str, pd.DataFrame] = {}
    raw_wells: pd.DataFrame | None = None
    for name in corrections:
        if name in ("none", "phenotype", "tvn"):
            if raw_wells is None:
                values, rows = image_embeddings(model, cells.crops, table)
                raw_wells = aggregate_embeddings(
                    cell_embedding_table(table.iloc[rows], values), "well"
                )
            out[name] = correct_embeddings(raw_wells, name)
        else:
            out[name] = embed_images(
                model,
                cells.crops,
                table,
                level="well",
                correction=name,
                # One control cell per plate suffices here, as when these figures were
                # made (the --quick plates have 9; embed's default asks for 32).
                contexts=ContextSpec(seed=seed, min_controls=1),
            )
    return out


# --------------------------------------------------------------------------- scores


def usable_features(rows: pd.DataFrame) -> list[str]:
    """Feature columns that are finite and not constant among ``rows``.

    Scores refuse constant columns; a measurement can be constant on a subset
    (e.g. the held-out lab's treated wells) without being constant overall.
    """
    return feature_columns(clean_features(rows)[0])


def score_table(wells: pd.DataFrame, settings: Settings) -> dict[str, float]:
    """Batch mixing (treated wells) and MoA / activity mAP of one well-level table."""
    treated = wells[wells[schema.ROLE] != schema.Role.CONTROL.value]
    features = usable_features(treated)
    scores: dict[str, float] = {}
    for batch, key in ((schema.LAB, "lab"), (schema.PLATE, "plate")):
        mixing = batch_mixing(
            treated, features, batch_column=batch, n_neighbors=settings.knn_neighbors,
            perplexity=settings.perplexity,
        )  # fmt: skip
        scores[f"{key}_knn"] = mixing.knn_accuracy
        scores[f"{key}_chance"] = mixing.chance
        if key == "lab":
            scores["lab_silhouette"] = mixing.silhouette
            scores["lab_lisi"] = mixing.lisi
            scores["n_labs"] = mixing.n_batches
    options = {"null_size": settings.null_size, "seed": 0}
    moa = map_consistency(treated, features, **options)
    scores["moa_map"] = moa.mean_map
    scores["moa_retrieved"] = moa.fraction_significant
    held = treated[treated[schema.LAB].isin(settings.held_out)]
    scores["moa_map_held_out"] = map_consistency(held, usable_features(held), **options).mean_map
    activity = map_activity(
        wells, usable_features(wells), same_plate_column=schema.PLATE, **options
    )
    scores["activity_map"] = activity.mean_map
    scores["activity_retrieved"] = activity.fraction_significant
    return scores


@dataclass
class Outcome:
    """Scores of every method and seed, the tables of the first seed and timings."""

    scores: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    seconds: dict[str, float]
    n_cells: int
    n_wells: int


def _log(text: str) -> None:
    print(text, flush=True)


def run(settings: Settings, workdir: Path, log: Callable[[str], None] = _log) -> Outcome:
    """Generate, measure, train, embed and score; the benchmark without its outputs."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    experiment = make_experiment(workdir / "plates", settings)
    seconds["generate plates"] = time.perf_counter() - start
    start = time.perf_counter()
    cells = experiment_cells(experiment, settings)
    seconds["measure and crop"] = time.perf_counter() - start
    log(
        f"{len(cells.table)} cells, {len(experiment.plates)} plates "
        f"({seconds['generate plates']:.0f} s to write, {seconds['measure and crop']:.0f} s to "
        "measure and crop)"
    )
    base = handcrafted_wells(cells.table)
    records = [{"method": HANDCRAFTED, "seed": -1, **score_table(base, settings)}]
    tables = {HANDCRAFTED: base}
    seconds["train"] = seconds["embed"] = seconds["score"] = 0.0
    for seed in settings.seeds:
        for plate_context, targets in dict.fromkeys(v[1:3] for v in settings.variants):
            variants = [v for v in settings.variants if v[1:3] == (plate_context, targets)]
            start = time.perf_counter()
            model = train_embedder(cells, settings, seed, plate_context, targets)
            seconds["train"] += time.perf_counter() - start
            log(f"seed {seed}, plate_context={plate_context}, targets={targets}: trained in "
                f"{time.perf_counter() - start:.0f} s")  # fmt: skip
            start = time.perf_counter()
            embedded = embedding_tables(model, cells, [v[3] for v in variants], seed)
            seconds["embed"] += time.perf_counter() - start
            start = time.perf_counter()
            for name, _, _, correction in variants:
                records.append({"method": name, "seed": seed,
                                **score_table(embedded[correction], settings)})  # fmt: skip
                log(f"seed {seed} {name}: " + _brief(records[-1]))
                if seed == settings.seeds[0]:
                    tables[name] = embedded[correction]
            seconds["score"] += time.perf_counter() - start
    return Outcome(pd.DataFrame(records), tables, seconds, len(cells.table), len(base))


def _brief(record: dict) -> str:
    keys = ("lab_knn", "lab_lisi", "moa_map", "moa_map_held_out", "activity_map")
    return ", ".join(f"{k} {record[k]:.3f}" for k in keys)


# --------------------------------------------------------------------------- report

#: Columns of the summary table: (score key, header, better direction).
COLUMNS = (
    ("lab_knn", "lab kNN acc.", "low"),
    ("plate_knn", "plate kNN acc.", "low"),
    ("lab_silhouette", "silhouette (lab)", "low"),
    ("lab_lisi", "LISI (lab)", "high"),
    ("moa_map", "MoA mAP", "high"),
    ("moa_map_held_out", "MoA mAP held-out lab", "high"),
    ("activity_map", "activity mAP", "high"),
    ("activity_retrieved", "active (p<0.05)", "high"),
)


def method_order(scores: pd.DataFrame) -> list[str]:
    """Methods in the order they were run."""
    return list(dict.fromkeys(scores["method"]))


def summary_table(scores: pd.DataFrame) -> list[str]:
    """Markdown rows: mean +- std over seeds of every score."""
    header = "| method | " + " | ".join(f"{h} ({d})" for _, h, d in COLUMNS) + " |"
    rows = [header, "|---" * (len(COLUMNS) + 1) + "|"]
    for method in method_order(scores):
        part = scores[scores["method"] == method]
        cells = []
        for key, _, _ in COLUMNS:
            values = part[key].to_numpy(dtype=float)
            cells.append(
                f"{values.mean():.3f}"
                if len(values) == 1
                else f"{values.mean():.3f} +- {values.std():.3f}"
            )
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return rows


def _umap_rows(tables: dict[str, pd.DataFrame], neighbors: int) -> dict[str, np.ndarray]:
    return {
        name: umap_coordinates(
            table[feature_columns(table)].to_numpy(np.float64), n_neighbors=neighbors, seed=0
        )
        for name, table in tables.items()
    }


def umap_figure(
    tables: dict[str, pd.DataFrame],
    coordinates: dict[str, np.ndarray],
    scores: pd.DataFrame,
    path: Path,
    held_out: Sequence[str] = (),
) -> None:
    """One row per method: UMAP coloured by lab (marker = plate) and by MoA."""
    names = list(tables)
    fig, axes = plt.subplots(len(names), 2, figsize=(12, 4.6 * len(names)), squeeze=False)
    first = tables[names[0]]
    labs = sorted(first[schema.LAB].astype(str).unique())
    moas = sorted(first.loc[first[schema.ROLE] != "control", schema.MOA].astype(str).unique())
    lab_colours = dict(zip(labs, plt.get_cmap("Set1").colors, strict=False))
    moa_colours = dict(zip(moas, plt.get_cmap("tab10").colors, strict=False))
    markers = "os^Dv<>p"
    for row, name in enumerate(names):
        table, xy = tables[name], coordinates[name]
        left, right = axes[row]
        plates = table[schema.PLATE].astype(str).to_numpy()
        for lab in labs:
            lab_plates = sorted(set(plates[table[schema.LAB].astype(str) == lab]))
            for k, plate in enumerate(lab_plates):
                on = plates == plate
                label = f"{plate} (held out)" if lab in held_out else plate
                left.scatter(*xy[on].T, s=14, c=[lab_colours[lab]], marker=markers[k % 8],
                             alpha=0.75, label=label, linewidths=0)  # fmt: skip
        control = (table[schema.ROLE] == "control").to_numpy()
        right.scatter(*xy[control].T, s=10, c="lightgrey", label="DMSO control", linewidths=0)
        moa_values = table[schema.MOA].astype(str).to_numpy()
        for moa in moas:
            on = (moa_values == moa) & ~control
            right.scatter(*xy[on].T, s=14, c=[moa_colours[moa]], alpha=0.85,
                          label=moa.replace("_", " "), linewidths=0)  # fmt: skip
        part = scores[scores["method"] == name]
        note = (
            f"lab kNN {part['lab_knn'].mean():.2f}, LISI {part['lab_lisi'].mean():.2f}"
            if len(part)
            else ""
        )
        moa_note = f"MoA mAP {part['moa_map'].mean():.2f}" if len(part) else ""
        left.set_title(f"{name}\ncoloured by lab, marker = plate ({note})", fontsize=10)
        right.set_title(f"{name}\ncoloured by MoA ({moa_note})", fontsize=10)
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("UMAP 1")
            ax.set_ylabel("UMAP 2")
        if row == 0:
            left.legend(fontsize=8, loc="best", markerscale=1.4, title="plate (lab colour)")
            right.legend(fontsize=8, loc="best", markerscale=1.4, title="MoA")
    fig.suptitle(
        "Well-level profiles of all plates (held-out lab included), UMAP seed 0", fontsize=13
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=85)
    plt.close(fig)


def scores_figure(scores: pd.DataFrame, path: Path) -> None:
    """MoA mAP against lab predictability, one point per method (mean +- std over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = plt.get_cmap("tab10").colors
    chance = float(scores["lab_chance"].mean())
    for i, method in enumerate(method_order(scores)):
        part = scores[scores["method"] == method]
        for ax, ykey in zip(axes, ("moa_map", "moa_map_held_out"), strict=True):
            ax.errorbar(
                part["lab_knn"].mean(), part[ykey].mean(), xerr=part["lab_knn"].std(ddof=0),
                yerr=part[ykey].std(ddof=0), fmt="o", ms=8, capsize=3, color=colours[i],
                label=method,
            )  # fmt: skip
    for ax, title in zip(
        axes, ("MoA mAP, all plates", "MoA mAP, held-out lab's plates only"), strict=True
    ):
        ax.axvline(chance, color="grey", ls="--", lw=1)
        ax.text(chance, ax.get_ylim()[0], " chance", color="grey", va="bottom", fontsize=9)
        ax.set_xlabel("lab predictability: 5-NN accuracy on treated wells (lower = mixed)")
        ax.set_ylabel("MoA mAP (higher = biology kept)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle("Batch mixing vs MoA retrieval (mean +- std over training seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(outcome: Outcome, settings: Settings, wall: float, threads: int = 1) -> str:
    """The markdown block of results."""
    machine = f"{platform.machine()}, {threads} torch thread(s), torch {torch.__version__}"
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in outcome.seconds.items())
    lines = [
        f"Written by `benchmarks/bench_embeddings.py` on CPU ({machine}); wall time "
        f"{wall / 60:.1f} min ({timing}).",
        "",
        f"{settings.labs} labs x {settings.plates_per_lab} plates, {outcome.n_wells} wells, "
        f"{outcome.n_cells} cells; trained on {', '.join(settings.training_labs)}, held out "
        f"{', '.join(settings.held_out)}; seeds {list(settings.seeds)}; stepwise training "
        f"{settings.mse_epochs} MSE + {settings.epochs} all-loss epochs, batch "
        f"{settings.batch_size}"
        + (
            f", at most {settings.max_steps_per_epoch} steps per epoch"
            if settings.max_steps_per_epoch
            else ""
        )  # fmt: skip
        + ".",
        "",
        f"Chance level of the lab kNN accuracy: {outcome.scores['lab_chance'].mean():.3f}; "
        f"of the plate kNN accuracy: {outcome.scores['plate_chance'].mean():.3f}; LISI ranges "
        f"from 1 (one lab per neighbourhood) to {int(outcome.scores['n_labs'].max())}.",
        "",
        *summary_table(outcome.scores),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, short training")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds")
    parser.add_argument("--no-doc", action="store_true", help="print only; write no files")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a shared CPU: threads only contend on these small networks
    settings = quick_settings() if args.quick else Settings()
    if args.seeds:
        settings = replace(settings, seeds=tuple(args.seeds))
    threads = torch.get_num_threads()  # read now: umap-learn's numba resets it
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_embeddings_") as tmp:
        outcome = run(settings, Path(tmp))
    start = time.perf_counter()
    coordinates = _umap_rows(outcome.tables, settings.umap_neighbors)
    outcome.seconds["umap"] = time.perf_counter() - start
    wall = time.perf_counter() - started
    text = report(outcome, settings, wall, threads)
    print(text)
    if args.no_doc:
        return
    IMAGES.mkdir(parents=True, exist_ok=True)
    umap_figure(
        outcome.tables, coordinates, outcome.scores, IMAGES / "embeddings_umap.png",
        held_out=settings.held_out,
    )  # fmt: skip
    scores_figure(outcome.scores, IMAGES / "embeddings_scores.png")
    write_doc_section(DOC, text, BEGIN, END, title="PhenoProfiler embeddings on synthetic plates")
    print(f"wrote {DOC} and docs/images/embeddings_*.png")


if __name__ == "__main__":
    main()
