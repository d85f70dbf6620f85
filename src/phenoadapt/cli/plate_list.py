"""``--scheduler`` and ``--plates``: how ``segment``, ``predict`` and ``embed`` scale out.

- ``--scheduler ADDRESS`` runs the fields (and ``predict``'s plate contexts,
  :mod:`phenoadapt.pipeline.context_tasks`) as dask tasks (``local``, ``local:N``
  or the address of a running scheduler, ``tcp://host:8786``); the command
  connects once, prints the scheduler and its dashboard on stderr, and every
  plate uses the same client.
- ``--plates LIST`` (a text file, one plate path per line, ``#`` comments,
  relative paths from the file's folder) or ``--plates 'GLOB'`` runs the
  command once per plate, each into its own folder named after the plate
  folder: plates whose outputs exist are skipped unless ``--overwrite``, a
  plate that fails is reported and the others still run; the command exits
  non-zero at the end when one failed.

A command opts in with :func:`add_scale_out_arguments` in its ``register`` and
the :func:`scaled` decorator on its run function, which then receives
``args.scheduler`` as a connected client (or None) and one plate at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Cancelled, InputNotFoundError, OptionError

RunFn = Callable[[argparse.Namespace], int]

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class PlateOutputs:
    """Where a command writes, so a plate list can give each plate its own folder.

    Attributes
    ----------
    files
        Options (``args`` attributes) naming output files: with ``--plates``,
        each becomes ``ROOT/PLATE/<its file name>``, ROOT being the folder of
        the first of them (``--out screen/cells.csv`` -> ``screen/PLATE/cells.csv``).
    folder
        An option naming an output folder (``predict --out``): ``OUT/PLATE``.
    done
        The files that, all present, mean a plate is finished (given the
        plate's own arguments).
    """

    done: Callable[[argparse.Namespace], list[Path]]
    files: tuple[str, ...] = ()
    folder: str | None = None


def add_scale_out_arguments(parser: argparse.ArgumentParser, plate_dest: str = "plate") -> None:
    """Add ``--scheduler`` and ``--plates``; the plate argument becomes optional.

    Parameters
    ----------
    parser
        The command's parser, its plate argument already added.
    plate_dest
        Destination of that argument (positional ``PLATE`` or ``--plate``).
    """
    action = next(a for a in parser._actions if a.dest == plate_dest)
    many = action.nargs in ("+", "*")
    if not action.option_strings:  # a positional: `?` / `*` make it optional
        action.nargs = "*" if many else "?"
        action.default = None
    action.required = False
    parser.set_defaults(_plate_dest=plate_dest, _plate_many=many)
    group = parser.add_argument_group("scale out (docs/scale-out.md)")
    group.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="run fields (and, for predict, each plate's contexts: on the workers started "
        "with --resources GPU=1 when there are some) as dask tasks: 'local' (a cluster of one "
        "worker process per core here), 'local:N' (N workers), or a running scheduler's "
        "address (tcp://host:8786); default: this machine, without dask",
    )  # fmt: skip
    group.add_argument(
        "--plates", metavar="LIST|GLOB",
        help="run every plate of a list (a text file, one plate path per line, # comments) "
        "or of a quoted glob ('screen/*/'), each into its own folder named after the plate; "
        "plates whose outputs exist are skipped unless --overwrite; a failed plate does not "
        "stop the others",
    )  # fmt: skip


def scaled(outputs: PlateOutputs) -> Callable[[RunFn], RunFn]:
    """Decorate a run function with ``--scheduler`` and ``--plates`` (see the module)."""

    def wrap(run: RunFn) -> RunFn:
        @functools.wraps(run)
        def runner(args: argparse.Namespace) -> int:
            return run_scaled(args, run, outputs)

        return runner

    return wrap


def run_scaled(args: argparse.Namespace, run: RunFn, outputs: PlateOutputs) -> int:
    """Connect to the scheduler once, then run one plate or every plate of the list."""
    dest = getattr(args, "_plate_dest", "plate")
    given = getattr(args, dest, None)
    plate_list = getattr(args, "plates", None)
    if plate_list is None and not given:
        raise OptionError(f"Give a plate ({dest.upper()}) or a list of plates (--plates LIST).")
    if plate_list is not None and given:
        raise OptionError(
            f"Give either a plate ({dest.upper()}) or --plates {plate_list}, not both."
        )
    with connected(getattr(args, "scheduler", None)) as client:
        one = argparse.Namespace(**vars(args))
        one.scheduler = client
        if plate_list is None:
            return run(one)
        return run_plate_list(one, run, outputs, read_plate_list(plate_list))


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any | None]:
    """The client of ``--scheduler`` (None without one), announced on stderr."""
    from ..scale import describe_client, open_scheduler

    with open_scheduler(address) as client:
        if client is not None:
            print(f"phenoadapt: {describe_client(client)}", file=sys.stderr)
        yield client


def read_plate_list(spec: str) -> list[Path]:
    """Plate paths of ``--plates``: a list file's lines, or a glob's matches (sorted).

    Raises
    ------
    InputNotFoundError
        No such file, or a glob matching nothing.
    OptionError
        A list without any plate.
    """
    path = Path(spec)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        # Relative to the list's folder: the list works from any working directory.
        plates = [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]
        if not plates:
            raise OptionError(f"--plates {spec}: the list names no plate (one path per line).")
        return plates
    if _GLOB_CHARS & set(spec):
        plates = [Path(p) for p in sorted(glob.glob(spec))]
        if not plates:
            raise InputNotFoundError(f"--plates {spec!r}: the pattern matches no plate.")
        return plates
    raise InputNotFoundError(
        f"--plates {spec}: no such list file. Give a text file with one plate path per line, "
        "or a quoted glob such as 'screen/*/'."
    )


def plate_names(plates: list[Path]) -> list[str]:
    """Output folder name of each plate (its folder's name); they must differ."""
    names = [p.name for p in plates]
    seen: dict[str, Path] = {}
    for name, plate in zip(names, plates, strict=True):
        if name in seen:
            raise OptionError(
                f"--plates: {seen[name]} and {plate} would both write into a folder {name!r}; "
                "list plate folders with different names (e.g. the plate folder, not its Images "
                "subfolder)."
            )
        seen[name] = plate
    return names


def plate_args(
    args: argparse.Namespace, plate: Path, name: str, outputs: PlateOutputs
) -> argparse.Namespace:
    """The arguments of one plate of a list: its path, and outputs in its own folder."""
    one = argparse.Namespace(**vars(args))
    setattr(one, args._plate_dest, [str(plate)] if args._plate_many else str(plate))
    one.plates = None
    if outputs.folder is not None:
        setattr(one, outputs.folder, str(Path(getattr(args, outputs.folder)) / name))
    if outputs.files:
        root = Path(getattr(args, outputs.files[0])).parent / name
        for option in outputs.files:
            value = getattr(args, option)
            if value:
                setattr(one, option, str(root / Path(value).name))
    return one


def _refuse_per_plate_options(args: argparse.Namespace) -> None:
    """Options that name one plate's inputs make no sense for a list."""
    if getattr(args, "plate_id", None):
        raise OptionError(
            "--plate-id names one plate: drop it with --plates (ids come from files)."
        )
    if isinstance(getattr(args, "cells", None), list) and args.cells:
        raise OptionError(
            "--cells gives one table per plate: drop it with --plates (each plate is segmented)."
        )
    maps = getattr(args, "platemap", None)
    if isinstance(maps, list) and len(maps) > 1:
        raise OptionError(
            "With --plates give at most one --platemap (used for every plate), or none (each "
            "plate's own map)."
        )


def run_plate_list(
    args: argparse.Namespace, run: RunFn, outputs: PlateOutputs, plates: list[Path]
) -> int:
    """Run ``run`` per plate: skip finished ones, report failures, go on; a summary at the end.

    Returns
    -------
    int
        0 when every plate was done or skipped; otherwise the exit status of
        the worst failure (1 for a bug, 2 for a user error).
    """
    from . import report_error

    _refuse_per_plate_options(args)
    names = plate_names(plates)
    done: list[str] = []
    skipped: list[str] = []
    failed: list[tuple[str, int]] = []
    try:
        for i, (plate, name) in enumerate(zip(plates, names, strict=True), start=1):
            one = plate_args(args, plate, name, outputs)
            targets = outputs.done(one)
            present = [t for t in targets if t.exists()]
            if not args.overwrite and len(present) == len(targets):
                print(f"phenoadapt: [{i}/{len(plates)}] {name}: skipped, its outputs exist "
                      f"({targets[0].parent}; --overwrite redoes it)", file=sys.stderr)  # fmt: skip
                skipped.append(name)
                continue
            print(f"phenoadapt: [{i}/{len(plates)}] {name} ({plate})", file=sys.stderr)
            if present and not args.overwrite:
                # A run stopped part-way through this plate: its files are no finished
                # result, so resuming redoes the plate over them.
                print(f"phenoadapt: {name}: outputs incomplete "
                      f"({', '.join(t.name for t in targets if not t.exists())} missing): "
                      "redoing the plate", file=sys.stderr)  # fmt: skip
                one.overwrite = True
            try:
                status = run(one)
            except (KeyboardInterrupt, Cancelled):
                raise
            except Exception as exc:  # noqa: BLE001  (one plate's failure must not stop the screen)
                status = report_error(exc, getattr(args, "debug", False))
            if status:
                failed.append((name, status))
            else:
                done.append(name)
    finally:
        _summary(len(plates), done, skipped, failed)
    if not failed:
        return 0
    return min(status for _, status in failed)


def _summary(n: int, done: list[str], skipped: list[str], failed: list[tuple[str, int]]) -> None:
    line = f"phenoadapt: {n} plate(s): {len(done)} done, {len(skipped)} skipped, "
    line += f"{len(failed)} failed"
    if failed:
        line += ": " + ", ".join(name for name, _ in failed)
    left = n - len(done) - len(skipped) - len(failed)
    if left:
        line += f"; {left} not run (interrupted)"
    print(line, file=sys.stderr)
