"""``phenoadapt predict``: adapted MoA predictions of every cell and well of some plates.

Segments each plate (or crops the cells of ``--cells`` tables), predicts every
cell (every field, for a checkpoint trained with ``--unit site``) with a
classifier checkpoint and a test-time method (CS-ARM-BN by default:
batch-norm statistics of the plate's own treated cells and negative controls),
and writes ``cells.csv``, ``wells.csv`` and, where the plate map gives MoAs the
model knows, ``accuracy.csv`` into ``--out``, with ``run.json`` (model file and
hash, method, seed, contexts, segmentation, version) beside them; every table
carries the run id (``Metadata_RunID``).  Every output is checked before any
work and written atomically at the end: an error or Ctrl-C leaves nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from .. import schema
from ..adapt.methods import (
    CONTEXT_CHOICES,
    DEFAULT_CONTEXT,
    DEFAULT_CONTEXT_SIZE,
    DEFAULT_CONTROLS_PER_CONTEXT,
    MIN_CONTROLS,
    ContextChoice,
    method_choices,
)
from ..errors import PhenoadaptError
from ..export import (
    RESULT_FILES,
    RUN_FILE,
    check_writable,
    result_tables,
    run_json,
    with_run_id,
    write_tables,
    write_text,
)
from ..pipeline.embed import cell_embedding_table
from ..pipeline.trust import needs_unadapted, run_trust, trust_lines
from ..plate import open_plate
from .cells import parse_wells
from .open_args import add_open_options, open_options, open_platemap, warn_guessed_channels
from .plate_list import PlateOutputs, add_scale_out_arguments, scaled
from .progress import progress_bar
from .segmentation_args import add_channel_arguments, channel_params

METHOD_CHOICES = method_choices()


@contextlib.contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """Print warnings raised inside the block as ``phenoadapt: warning: ...`` lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for warning in caught:
                text = str(warning.message)
                if text not in seen:
                    seen.add(text)
                    print(f"phenoadapt: warning: {text}", file=sys.stderr)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` CPU threads for torch inside the block (None: leave torch's default)."""
    import torch

    if n is None:
        yield
        return
    if n < 1:
        raise PhenoadaptError(f"--threads {n}: give at least 1.")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def add_threads_option(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """``--threads``: torch CPU threads (small models on a busy CPU run faster with one)."""
    parser.add_argument(
        "--threads", type=int, default=default, metavar="N",
        help="CPU threads for the network (default: "
        + ("torch's default" if default is None else str(default))
        + "); small models on a busy CPU are fastest with 1",
    )  # fmt: skip


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``predict`` and ``run``: method, contexts, device, segmentation."""
    parser.add_argument(
        "--method", choices=METHOD_CHOICES, default="cs-arm-bn", help="default: %(default)s"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (default: CUDA if present), cpu, cuda"
    )
    parser.add_argument("--batch-size", type=int, default=256, metavar="N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the plate contexts")
    add_threads_option(parser, default=None)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="adapted MoA predictions per cell and per well (CSV) with a trained checkpoint",
        description=(
            "Predict the mechanism of action of every cell and well of one or more plates with "
            "a classifier checkpoint, normalizing the network with the plate's own cells "
            "(CS-ARM-BN: 64 treated + 128 negative-control cells per context, by default). "
            "Writes cells.csv, wells.csv, accuracy.csv (when the plate map gives known MoAs) "
            "and run.json (the settings, model hash and run id the tables carry)."
        ),
    )
    parser.add_argument(
        "--plate", nargs="+", required=True, metavar="DIR", help="plate folder(s) or OME-Zarr"
    )
    parser.add_argument(
        "--platemap", nargs="+", metavar="CSV",
        help="plate map per plate (roles mark the negative controls; MoAs give accuracy); "
        "default: the map shipped with each plate (PLATE/platemap.csv)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint", nargs="+", required=True, metavar="PATH",
        help="classifier .safetensors file(s); several are averaged as an ensemble",
    )  # fmt: skip
    parser.add_argument(
        "--cells", nargs="+", metavar="CSV",
        help="per-cell table per plate (phenoadapt segment) to crop instead of segmenting",
    )  # fmt: skip
    parser.add_argument(
        "--out",
        default="phenoadapt-output",
        metavar="DIR",
        help="output folder (default: %(default)s)",
    )
    parser.add_argument(
        "--wells", nargs="+", metavar="WELL", help="wells to predict; all by default"
    )
    add_run_options(parser)
    parser.add_argument(
        "--treated-per-context", metavar="N|plate",
        help="treated cells per context (default: 64 for ARM-BN and CS-ARM-BN, the whole plate "
        "for AdaBN and BEN); 'plate' = one context per plate",
    )  # fmt: skip
    parser.add_argument(
        "--controls-per-context", type=int, default=DEFAULT_CONTROLS_PER_CONTEXT, metavar="N"
    )
    parser.add_argument(
        "--context", choices=[c.value for c in ContextChoice],
        help="which cells give each plate's statistics: "
        + "; ".join(f"{c.value} = {text}" for c, text in CONTEXT_CHOICES.items())
        + f" (default: {DEFAULT_CONTEXT.value} for ARM-BN and CS-ARM-BN, plate for AdaBN "
        "and BEN)",
    )  # fmt: skip
    parser.add_argument(
        "--context-size", type=int, default=DEFAULT_CONTEXT_SIZE, metavar="N",
        help=f"cells in a sampled context (--context sample; default {DEFAULT_CONTEXT_SIZE})",
    )  # fmt: skip
    parser.add_argument(
        "--min-controls", type=int, metavar="N",
        help="fewest control cells a plate needs for BEN and CS-ARM-BN (default: "
        f"{MIN_CONTROLS['cell']}; control fields for a site checkpoint: "
        f"{MIN_CONTROLS['site']})",
    )  # fmt: skip
    parser.add_argument(
        "--allow-fallback", action="store_true",
        help="on a plate with too few controls use ARM-BN (CS-ARM-BN) or AdaBN (BEN) instead",
    )  # fmt: skip
    parser.add_argument(
        "--nucleus-diameter", type=float, metavar="D",
        help="nucleus diameter in pixels (default: what the checkpoint was trained with)",
    )  # fmt: skip
    add_channel_arguments(parser, from_checkpoint=True)
    parser.add_argument(
        "--embeddings", action="store_true",
        help="also write embeddings.csv (adapted features) and embeddings_unadapted.csv",
    )  # fmt: skip
    parser.add_argument(
        "--plate-id", nargs="+", help="plate id per plate (default: from the files)"
    )
    add_open_options(parser, many=True)
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_scale_out_arguments(parser, plate_dest="plate")
    parser.set_defaults(func=run_predict)


def _per_plate(values: list[str] | None, n: int, option: str) -> list[str | None]:
    if not values:
        return [None] * n
    if len(values) != n:
        raise PhenoadaptError(
            f"{len(values)} values for {option} but {n} plate(s): give one per plate."
        )
    return list(values)


def _treated_per_context(value: str | None) -> int | str | None:
    if value is None or value == "plate":
        return value
    try:
        return int(value)
    except ValueError:
        raise PhenoadaptError(
            f"--treated-per-context {value!r}: give a number of cells or 'plate'."
        ) from None


def open_inputs(args: argparse.Namespace) -> tuple[list, list, list | None]:
    """Plates, plate maps and optional cell tables named on the command line."""
    n = len(args.plate)
    ids = _per_plate(getattr(args, "plate_id", None), n, "--plate-id")
    maps = _per_plate(args.platemap, n, "--platemap")
    tables = _per_plate(getattr(args, "cells", None), n, "--cells")
    plates, platemaps = [], []
    for path, plate_id, map_path in zip(args.plate, ids, maps, strict=True):
        plate = open_plate(path, plate_id=plate_id, **open_options(args))
        warn_guessed_channels(plate)
        plates.append(plate)
        platemaps.append(open_platemap(plate, map_path))
    cells = None
    if any(t is not None for t in tables):
        from ..profiles import read_table

        cells = [None if t is None else read_table(t) for t in tables]
    return plates, platemaps, cells


def _targets(args: argparse.Namespace) -> dict[str, Path]:
    """Every table ``predict`` may write (accuracy only when the plate map gives MoAs)."""
    names = ["cells", "wells", "accuracy"] + (
        ["embeddings", "embeddings_unadapted"] if args.embeddings else []
    )
    targets = {n: Path(args.out) / RESULT_FILES.get(n, f"{n}.csv") for n in names}
    targets["run"] = Path(args.out) / RUN_FILE
    return targets


def _finished(args: argparse.Namespace) -> list[Path]:
    """The tables written whatever the plate map: all present means the plate is done."""
    return [p for n, p in _targets(args).items() if n != "accuracy"]


@scaled(PlateOutputs(done=_finished, folder="out"))
def run_predict(args: argparse.Namespace) -> int:
    """Run ``phenoadapt predict``."""
    from ..pipeline import RunConfig, run_plates

    targets = _targets(args)
    check_writable(list(targets.values()), args.overwrite)
    overrides = channel_params(args)
    if args.nucleus_diameter:
        overrides["nucleus_diameter"] = args.nucleus_diameter
    config = RunConfig(
        checkpoint=args.checkpoint if len(args.checkpoint) > 1 else args.checkpoint[0],
        method=args.method, device=args.device, batch_size=args.batch_size,
        treated_per_context=_treated_per_context(args.treated_per_context),
        controls_per_context=args.controls_per_context, context=args.context,
        context_size=args.context_size, min_controls=args.min_controls or MIN_CONTROLS["cell"],
        min_control_sites=args.min_controls or MIN_CONTROLS["site"],
        allow_fallback=args.allow_fallback, seed=args.seed, wells=parse_wells(args.wells),
        segmentation_overrides=overrides,
        compare_unadapted=args.embeddings or needs_unadapted(args.checkpoint),
        return_embeddings=args.embeddings,
    )  # fmt: skip
    plates, platemaps, cells = open_inputs(args)
    with warnings_to_stderr(), torch_threads(args.threads), progress_bar() as progress:
        result = run_plates(
            plates, platemaps, config, cells=cells, progress=progress,
            scheduler=getattr(args, "scheduler", None),
        )  # fmt: skip
    tables = result_tables(result)
    run_id = result.record["run_id"]
    if args.embeddings and result.embeddings is not None:
        # The one per-cell embedding table (embed writes the same columns in the same order).
        tables["embeddings"] = cell_embedding_table(result.cells, result.embeddings)
        if result.embeddings_unadapted is not None:
            tables["embeddings_unadapted"] = cell_embedding_table(
                result.cells, result.embeddings_unadapted
            )
        for name in ("embeddings", "embeddings_unadapted"):
            if name in tables:
                tables[name] = with_run_id(tables[name], run_id)
    written = write_tables({targets[n]: t for n, t in tables.items()}, overwrite=args.overwrite)
    written.append(write_text(run_json(result), targets["run"], overwrite=args.overwrite))
    report_run(result, written)
    return 0


def report_run(result, written: list[Path]) -> None:
    """Methods used, accuracy, failed fields and files written."""
    for failure, plate in zip(result.failures, result.plate_failures, strict=True):
        print(f"phenoadapt: warning: plate {plate} {failure.well} site {failure.site} skipped: "
              f"{failure.message}", file=sys.stderr)  # fmt: skip
    n_cells = int(result.cells[schema.PREDICTION].notna().sum())
    methods = ", ".join(f"{p}: {m}" for p, m in result.methods.items())
    unit = getattr(result, "unit", "cell")
    print(f"{n_cells} {unit}s and {len(result.wells)} wells predicted ({methods})")
    if result.accuracy is not None:
        for row in result.accuracy.itertuples(index=False):
            print(
                f"  {getattr(row, schema.PLATE)}: {unit} accuracy {row.cell_accuracy:.3f} "
                f"({row.n_cells} {unit}s), well accuracy {row.well_accuracy:.3f} "
                f"({row.n_wells} wells)"
            )
    for line in trust_lines(run_trust(result)):
        print(line)
    for path in written:
        print(f"wrote {path}")
