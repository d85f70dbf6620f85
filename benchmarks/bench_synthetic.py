"""Benchmark of synthetic plates: speed, and whether the batch effects do what they should.

What it measures
----------------
1. Speed: seconds to write one 384-well plate (1 site, 256 x 256, 5 channels
   plus masks) and fields per second, with 1 worker and with one per CPU.
2. Batch effects: per-cell features (area, shape, mean and std of intensity
   per channel, of the cell and of its nucleus) from the ground-truth masks of
   an experiment of several labs x 2 plates; a logistic-regression MoA
   classifier trained on one plate of one lab is tested on the lab's other plate
   (held-out plate, same lab) and on the plates of the other labs (new lab),
   with three feature normalisations:

   - ``raw``: features standardised with the training plate's statistics;
   - ``plate z-score (all cells)``: each plate standardised with all its cells;
   - ``plate z-score (DMSO)``: each plate standardised with its own DMSO cells,
     the control-based correction the project's adaptation methods build on.

   The same is repeated under label shift (each plate's MoA proportions drawn
   from Dirichlet(0.3)), where standardising with all of a plate's cells is
   biased by its class mix but standardising with its controls is not, and on
   an experiment with all effect strengths at 0 (no batch effects), the ceiling.
3. Figures for the docs (``--figures``): control fields from two labs side by
   side, and one field per MoA, as Cell Painting RGB composites.

Run ``python benchmarks/bench_synthetic.py`` (a few minutes on 2 cores); it
prints the figures and writes them between the benchmark markers of
``docs/synthetic-plates.md``.  ``--quick`` runs a smaller version.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from skimage.measure import regionprops_table
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from phenoadapt import schema
from phenoadapt.plate.synthetic import (
    CHANNEL_NAMES,
    EffectStrengths,
    LabEffects,
    SyntheticPlateConfig,
    generate_experiment,
    generate_plate,
    plane_name,
    read_cells,
    read_masks,
    render_field,
)
from phenoadapt.plate.synthetic.field import child_seed
from phenoadapt.plate.synthetic.phenotypes import MOAS, PHENOTYPES

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "synthetic-plates.md"
IMAGES = ROOT / "docs" / "images"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

# Cell Painting display colours (as napari's additive colormaps): DNA blue, ER
# green, RNA cyan, AGP yellow (orange-ish here, to tell it from ER), Mito magenta.
COLOURS = np.array(
    [(0.15, 0.35, 1.0), (0.1, 0.9, 0.1), (0.0, 0.55, 0.55), (1.0, 0.7, 0.0), (0.9, 0.0, 0.9)]
)


# -- speed ---------------------------------------------------------------------------------
def time_generation(tmp: Path, workers: int) -> tuple[float, int]:
    config = SyntheticPlateConfig(n_wells=384, sites=1, field_shape=(256, 256))
    start = time.perf_counter()
    plate = generate_plate(tmp, config, seed=0, plate_id=f"speed_w{workers}", workers=workers)
    return time.perf_counter() - start, plate.n_fields


# -- features ------------------------------------------------------------------------------
def field_features(image: np.ndarray, nuclei: np.ndarray, cells: np.ndarray) -> pd.DataFrame:
    """Per-cell shape and intensity features of one field (CellProfiler-like, minimal)."""
    pixels = np.moveaxis(image, 0, -1).astype(np.float32)
    props = ("label", "area", "eccentricity", "solidity", "intensity_mean", "intensity_std")
    cell = pd.DataFrame(regionprops_table(cells, pixels, properties=props))
    nuc = pd.DataFrame(regionprops_table(nuclei, pixels, properties=props))
    rename = {f"intensity_mean-{i}": f"mean_{n}" for i, n in enumerate(CHANNEL_NAMES)}
    rename |= {f"intensity_std-{i}": f"std_{n}" for i, n in enumerate(CHANNEL_NAMES)}
    cell = cell.rename(columns=rename).add_prefix("Cells_").rename(columns={"Cells_label": "label"})
    nuc = nuc.rename(columns=rename).add_prefix("Nuclei_").rename(columns={"Nuclei_label": "label"})
    return cell.merge(nuc, on="label")


def plate_features(plate_dir: Path) -> pd.DataFrame:
    """Features of every labelled cell of a plate, joined to its ground truth."""
    truth = read_cells(plate_dir)
    rows = []
    for (well, site), _ in truth.groupby([schema.WELL, schema.SITE], sort=False):
        image = np.stack(
            [tifffile.imread(plate_dir / plane_name(well, site, c + 1)) for c in range(5)]
        )
        nuclei, cells = read_masks(plate_dir, well, site)
        feats = field_features(image, nuclei, cells)
        feats[schema.WELL], feats[schema.SITE] = well, site
        rows.append(feats)
    feats = pd.concat(rows, ignore_index=True).rename(columns={"label": schema.CELL_ID})
    return truth.merge(feats, on=[schema.WELL, schema.SITE, schema.CELL_ID])


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(("Cells_", "Nuclei_"))]


# -- normalisation and classification ----------------------------------------------------
def normalise(df: pd.DataFrame, how: str, reference: pd.DataFrame | None = None) -> np.ndarray:
    """Feature matrix of one plate under a normalisation (see module docstring)."""
    cols = feature_columns(df)
    x = df[cols].to_numpy(float)
    if how == "raw":
        base = reference[cols].to_numpy(float)
    elif how == "plate":
        base = x
    elif how == "dmso":
        base = x[df[schema.ROLE].to_numpy() == "control"]
    else:
        raise ValueError(how)
    mu, sd = base.mean(0), base.std(0) + 1e-9
    return (x - mu) / sd


def classify(train: pd.DataFrame, tests: dict[str, pd.DataFrame], how: str) -> dict[str, float]:
    """Train on the treated cells of one plate, return the accuracy on each test plate."""
    treated = lambda d: d[schema.ROLE].to_numpy() == "treated"  # noqa: E731
    x_train = normalise(train, how, reference=train)[treated(train)]
    y_train = train[schema.MOA].to_numpy()[treated(train)]
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(max_iter=2000, C=0.5).fit(scaler.transform(x_train), y_train)
    out = {}
    for name, test in tests.items():
        x = normalise(test, how, reference=train)[treated(test)]
        out[name] = float(
            model.score(scaler.transform(x), test[schema.MOA].to_numpy()[treated(test)])
        )
    return out


def lab_transfer(
    train_features: dict[str, pd.DataFrame],
    test_features: dict[str, pd.DataFrame],
    manifest: pd.DataFrame,
) -> pd.DataFrame:
    """Train on plate 1 of each lab; test on the lab's plate 2 and on the other labs' plates.

    ``train_features`` and ``test_features`` map plate ids to feature tables; they
    differ when the test plates come from another experiment with the same seed
    (same labs, batches and plate effects, other plate maps).
    """
    rows = []
    labs = sorted(manifest[schema.LAB].unique())
    for how in ("raw", "plate", "dmso"):
        for lab in labs:
            plates = manifest[manifest[schema.LAB] == lab][schema.PLATE].tolist()
            train, held = plates[0], plates[1]
            others = manifest[manifest[schema.LAB] != lab][schema.PLATE].tolist()
            tests = {p: test_features[p] for p in [held, *others]}
            acc = classify(train_features[train], tests, how)
            rows.append(
                {
                    "normalisation": how,
                    "train_lab": lab,
                    "same_lab_heldout_plate": acc[held],
                    "other_labs": float(np.mean([acc[p] for p in others])),
                }
            )
    return pd.DataFrame(rows)


def run_experiment(tmp: Path, name: str, config: SyntheticPlateConfig, labs: int, seed: int):
    """Generate an experiment of ``labs`` x 1 batch x 2 plates; return it, its features, seconds."""
    start = time.perf_counter()
    exp = generate_experiment(
        tmp / name, labs=labs, batches_per_lab=1, plates_per_batch=2, config=config, seed=seed
    )
    seconds = time.perf_counter() - start
    return exp, {p.plate_id: plate_features(p.path) for p in exp.plates}, seconds


# -- figures -------------------------------------------------------------------------------
def composite(image: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """RGB composite of a (5, y, x) field with per-channel display limits (lo, hi)."""
    rgb = np.zeros((*image.shape[1:], 3))
    for c in range(5):
        lo, hi = limits[c]
        plane = np.clip((image[c].astype(float) - lo) / (hi - lo), 0, 1)
        rgb += plane[..., None] * COLOURS[c]
    return np.clip(rgb, 0, 1)


def auto_limits(image: np.ndarray) -> np.ndarray:
    return np.array([np.percentile(image[c], [1, 99.8]) for c in range(image.shape[0])])


def make_figures(seed: int = 0) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = SyntheticPlateConfig(field_shape=(256, 256))
    strengths = config.strengths
    paths = []
    # Two labs of `phenoadapt synth --seed 0 --labs 3` (labs 1 and 3), same biology
    # (DMSO, same field seed), each shown with its own display range, as a scientist
    # would look at it, and with a shared range, which shows the effects.
    labs = [
        LabEffects.sample(np.random.default_rng(child_seed(seed, 1, k)), strengths) for k in (1, 3)
    ]
    fields = [render_field(config, moa="DMSO", lab=lab, seed=seed + 11) for lab in labs]
    shared = auto_limits(np.concatenate([f.image for f in fields], axis=2))
    fig, axes = plt.subplots(2, 2, figsize=(10, 10.4))
    for j, (lab, f) in enumerate(zip(labs, fields, strict=True)):
        axes[0, j].imshow(composite(f.image, auto_limits(f.image)))
        axes[0, j].set_title(
            f"Lab {2 * j + 1}: DMSO, own display range\n"
            f"magnification {lab.magnification:.2f}, PSF {lab.psf_sigma:.2f} px",
            fontsize=10,
        )
        axes[1, j].imshow(composite(f.image, shared))
        gains = ", ".join(f"{g:.2f}" for g in lab.gain)
        axes[1, j].set_title(
            f"Lab {2 * j + 1}: shared display range\n"
            f"gains {gains}, vignetting {lab.vignetting:.2f}",
            fontsize=10,
        )
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(
        "Synthetic DMSO control fields from two labs (DNA blue, ER green, RNA cyan, "
        "AGP orange, Mito magenta)",
        fontsize=10,
    )
    fig.tight_layout()
    path = IMAGES / "synthetic_labs.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    paths.append(path)

    # One field per MoA, reference instrument, shared display range.
    moas = list(PHENOTYPES)
    images = {m: render_field(config, moa=m, seed=seed + 3).image for m in moas}
    limits = auto_limits(images["DMSO"])
    fig, axes = plt.subplots(3, 3, figsize=(12, 12.6))
    for ax, m in zip(axes.ravel(), moas, strict=False):
        ax.imshow(composite(images[m], limits))
        ax.set_title(m.replace("_", " "), fontsize=11)
        ax.axis("off")
    fig.suptitle("One synthetic field per MoA (strongest compound, 10 uM; same display range)")
    fig.tight_layout()
    path = IMAGES / "synthetic_moas.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    paths.append(path)

    # The five channels of one DMSO field in grey, for the docs.
    image = fields[0].image
    fig, axes = plt.subplots(1, 5, figsize=(17, 3.8))
    for c, ax in enumerate(axes):
        lo, hi = auto_limits(image)[c]
        ax.imshow(image[c, :160, :160], cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(CHANNEL_NAMES[c])
        ax.axis("off")
    fig.tight_layout()
    path = IMAGES / "synthetic_channels.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    paths.append(path)
    return paths


# -- report --------------------------------------------------------------------------------
def summary_table(results: dict[str, pd.DataFrame]) -> str:
    names = {
        "raw": "raw (training plate's scaling)",
        "plate": "plate z-score, all cells",
        "dmso": "plate z-score, DMSO cells",
    }
    lines = [
        "| experiment | normalisation | held-out plate, same lab | new lab | gap |",
        "|---|---|---|---|---|",
    ]
    for exp_name, df in results.items():
        for how, group in df.groupby("normalisation", sort=False):
            same = group["same_lab_heldout_plate"]
            other = group["other_labs"]
            lines.append(
                f"| {exp_name} | {names[how]} | {same.mean():.3f} +- {same.std():.3f} | "
                f"{other.mean():.3f} +- {other.std():.3f} | {same.mean() - other.mean():+.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller experiment, no 1-worker timing"
    )
    parser.add_argument("--figures", action="store_true", help="only make the docs figures")
    parser.add_argument("--no-doc", action="store_true", help="do not update the docs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.figures:
        for p in make_figures(args.seed):
            print("wrote", p)
        return

    cpus = os.cpu_count() or 1
    report = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        speed = []
        for workers in [cpus] if args.quick else [1, cpus]:
            seconds, n = time_generation(tmp, workers)
            speed.append((workers, seconds, n))
            print(
                f"384-well plate, {n} fields of 256x256x5, {workers} worker(s): "
                f"{seconds:.1f} s, {n / seconds:.1f} fields/s"
            )

        labs = 3
        config = SyntheticPlateConfig(n_wells=96, sites=1)
        results = {}
        timings = {}
        # (name, settings, train on the plates of this experiment or of the defaults one)
        experiments = [("batch effects (defaults)", config, False)]
        if not args.quick:
            shifted = replace(config, label_shift_alpha=0.3)
            experiments.append(("label shift (alpha 0.3)", shifted, True))
            no_effects = replace(config, strengths=EffectStrengths().scaled(0.0))
            experiments.append(("no batch effects", no_effects, False))
        features = {}
        for name, cfg, train_on_defaults in experiments:
            folder = re.sub(r"\W+", "_", name)
            exp, features[name], seconds = run_experiment(tmp, folder, cfg, labs, args.seed)
            train = features[experiments[0][0]] if train_on_defaults else features[name]
            results[name] = lab_transfer(train, features[name], exp.manifest)
            timings[name] = seconds
            print(
                f"\n== {name}: {len(exp.plates)} plates, "
                f"{int(exp.manifest['n_cells'].sum())} cells, generated in {seconds:.0f} s"
            )
            print(results[name].to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    table = summary_table(results)
    print("\n" + table)
    cfg_line = (
        f"{labs} labs x 1 batch x 2 plates, 96 wells, "
        f"{config.sites} site(s) of 256 x 256 per well; "
        f"{len(MOAS)} MoAs; chance = {1 / len(MOAS):.3f}."
    )
    speed_lines = "\n".join(f"| {w} | {n} | {s:.1f} s | {n / s:.1f} |" for w, s, n in speed)
    exp_seconds = timings[experiments[0][0]]
    command = "python benchmarks/bench_synthetic.py" + (" --quick" if args.quick else "")
    report = f"""Measured by `{command}` on this machine ({cpus} CPUs, shared with
other jobs, so timings are indicative).

**Speed** (384-well plate, 1 site of 256 x 256 x 5 channels per well, masks and tables included):

| workers | fields | time | fields/s |
|---|---|---|---|
{speed_lines}

The MoA experiment ({cfg_line.split(";")[0]}) was written in {exp_seconds:.0f} s.

**Accuracy of a per-cell MoA classifier moved between labs** ({cfg_line}
Logistic regression on 26 CellProfiler-like features per cell from the
ground-truth masks; trained on plate 1 of one lab, tested on plate 2 of the same
lab and on every plate of the other labs; mean +- sd over the training labs.
Under label shift the classifier is trained on the balanced plate 1 of the defaults
experiment and tested on plates with the same seeds, hence the same labs, batches and
plate effects, whose MoA proportions were drawn from Dirichlet(0.3)):

{table}
"""
    if not args.no_doc:
        write_doc_section(DOC, report, START, END)
        print(f"\nwrote the figures into {DOC}")


if __name__ == "__main__":
    main()
