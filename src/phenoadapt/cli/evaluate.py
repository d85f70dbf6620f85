"""``phenoadapt evaluate``: metrics of a feature table (profiles or embeddings).

Examples
--------
::

    phenoadapt evaluate wells.csv --correction tvn --out metrics.json
    phenoadapt evaluate embeddings.parquet --batch-column Metadata_Batch \\
        --compound-column Metadata_Compound --clean
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import schema
from ..evaluate import evaluate_table
from ..export import check_writable, write_text
from ..profiles import METHODS, clean_features, feature_columns, read_table

_DEFAULT_COMPOUND = "Metadata_Compound"


def run_evaluate(args: argparse.Namespace) -> int:
    """Read the table, optionally clean it, compute the metrics, print and save them."""
    if args.out:
        check_writable([Path(args.out)], args.overwrite)  # before any work
    table = read_table(args.table)
    features = feature_columns(table)
    if args.clean:
        table, cleaning = clean_features(table, features)
        features = cleaning.kept
        print(f"cleaning: {cleaning.summary()}", file=sys.stderr)
    compound = args.compound_column
    if compound is None and _DEFAULT_COMPOUND in table.columns:
        compound = _DEFAULT_COMPOUND
    report = evaluate_table(
        table,
        features=features,
        correction=args.correction,
        plate_column=args.plate_column,
        batch_column=args.batch_column,
        role_column=args.role_column,
        treatment_column=args.treatment_column,
        moa_column=args.moa_column,
        compound_column=compound,
        aggregate=args.aggregate,
        n_neighbors=args.neighbors,
        perplexity=args.perplexity,
        null_size=args.null_size,
        seed=args.seed,
    )
    print(report.format())
    if args.out:
        out = write_text(report.to_json() + "\n", args.out, overwrite=args.overwrite)
        print(f"metrics written to {out}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="mAP, folds of enrichment, NSC/NSCB and batch mixing of a feature table",
        description=(
            "Correct a feature table (profiles or embeddings, one row per well) and print "
            "the metrics its metadata allows: mAP of phenotypic activity and MoA "
            "consistency, folds of enrichment, NSC/NSCB, kNN batch accuracy, silhouette "
            "and LISI by batch (computed without control wells)."
        ),
    )
    parser.add_argument("table", metavar="TABLE", help="CSV, CSV.gz, TSV or Parquet table")
    parser.add_argument(
        "--correction",
        choices=METHODS,
        default="none",
        help="correction applied before the metrics (per plate where it applies)",
    )
    parser.add_argument(
        "--batch-column",
        default=None,
        help=f"batch for NSCB and mixing scores (default: {schema.BATCH} if present, "
        "else the plate column)",
    )
    parser.add_argument("--plate-column", default=schema.PLATE, help="plate column")
    parser.add_argument("--moa-column", default=schema.MOA, help="mechanism-of-action column")
    parser.add_argument("--treatment-column", default=schema.TREATMENT, help="treatment column")
    parser.add_argument(
        "--compound-column",
        default=None,
        help=f"compound column for NSC/NSCB (default: {_DEFAULT_COMPOUND} if present)",
    )
    parser.add_argument(
        "--role-column", default=schema.ROLE, help="role column ('control' marks controls)"
    )
    parser.add_argument(
        "--aggregate",
        choices=("mean", "median"),
        default="mean",
        help="how treatment-level profiles are formed",
    )
    parser.add_argument(
        "--neighbors", type=int, default=5, help="neighbours of the kNN batch prediction"
    )
    parser.add_argument(
        "--perplexity", type=float, default=30.0, help="LISI perplexity (uses 3x neighbours)"
    )
    parser.add_argument(
        "--null-size", type=int, default=10_000, help="permutations of the mAP null"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the mAP null")
    parser.add_argument(
        "--clean", action="store_true", help="drop NaN and constant feature columns first"
    )
    parser.add_argument("--out", metavar="JSON", default=None, help="write the metrics here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=run_evaluate)
