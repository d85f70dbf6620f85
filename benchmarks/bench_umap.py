"""UMAP fit time by cell count, first fit of a session against the second, map quality.

What it measures (stand-in embeddings: MoA centres plus a plate offset, see
``bench_umap_dock.stand_in_result``, ``--dim`` features):

- *fit time by cell count* of :func:`phenoadapt.evaluate.umap_coordinates`
  as it is now (seeded PCA to 50 dimensions, exact blockwise neighbours, numba
  cache warm), wall and CPU seconds, and the CPU seconds of each stage (PCA,
  neighbours, the rest: fuzzy graph and layout); on the smallest count, the map
  without the PCA (umap-learn on every feature);
- *first vs second fit of a session*: two fresh Python processes, one after
  the other, each fitting twice; the first process starts with an empty numba
  cache (the first fit ever on a machine), the second with the cache the first
  left (every later session);
- *trustworthiness* (``sklearn.manifold.trustworthiness``, 15 neighbours, on a
  2,000-cell subsample) of the fast map and of the old one, against the
  original features.

Run ``python benchmarks/bench_umap.py`` (writes ``docs/umap-speed.md``) or
``--quick`` (5,000 and 10,000 cells, prints only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.manifold import trustworthiness

from phenoadapt.evaluate import projection, umap_coordinates

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
    from bench_umap_dock import stand_in_result
except ImportError:  # pragma: no cover - imported as benchmarks.bench_umap
    from benchmarks._common import write_doc_section
    from benchmarks.bench_umap_dock import stand_in_result

DOC = Path(__file__).parents[1] / "docs" / "umap-speed.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
SRC = Path(__file__).parents[1] / "src"

#: Runs in a fresh interpreter: fits twice and prints the two times as JSON.
SESSION = """
import json, sys, time
sys.path.insert(0, {bench!r})
from bench_umap_dock import stand_in_result
from phenoadapt.evaluate import projection, umap_coordinates
X = stand_in_result({n}, dim={dim}).embeddings_unadapted
times = []
for _ in range(2):
    started = time.perf_counter()
    umap_coordinates(X, seed=0)
    times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def features(n_cells: int, dim: int) -> np.ndarray:
    """The stand-in embeddings (before adaptation: plates apart) of ``n_cells`` cells."""
    return stand_in_result(n_cells, dim=dim).embeddings_unadapted


def fit_seconds(X: np.ndarray, **options: object) -> tuple[float, np.ndarray]:
    """Seconds of one seeded fit, and the map (CPU seconds in :data:`LAST_CPU`).

    :data:`LAST_STAGES` gets the CPU seconds of the PCA and of the neighbour search.
    """
    LAST_STAGES.clear()
    started, cpu = time.perf_counter(), time.process_time()
    with _timed("pca", "reduce_dimensions"), _timed("neighbours", "blockwise_neighbours"):
        coordinates = umap_coordinates(X, seed=0, **options)
    LAST_CPU[0] = time.process_time() - cpu  # all threads: the stable figure on a busy machine
    return time.perf_counter() - started, coordinates


LAST_CPU = [0.0]
LAST_STAGES: dict[str, float] = {}


@contextlib.contextmanager
def _timed(stage: str, name: str):
    """Wrap ``projection.<name>`` so that its CPU seconds land in ``LAST_STAGES[stage]``."""
    original = getattr(projection, name)

    def timed(*args, **kwargs):
        cpu = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            LAST_STAGES[stage] = LAST_STAGES.get(stage, 0.0) + time.process_time() - cpu

    setattr(projection, name, timed)
    try:
        yield
    finally:
        setattr(projection, name, original)


def session_times(n_cells: int, dim: int, cache: Path) -> list[float]:
    """First and second fit seconds of a fresh interpreter using the numba cache ``cache``."""
    code = SESSION.format(bench=str(Path(__file__).parent), n=n_cells, dim=dim)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(SRC))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def trust(X: np.ndarray, coordinates: np.ndarray, n: int = 2000) -> float:
    """Trustworthiness of the map on a seeded subsample of ``n`` cells."""
    rows = np.random.default_rng(0).choice(len(X), size=min(n, len(X)), replace=False)
    return float(trustworthiness(X[rows], coordinates[rows], n_neighbors=15))


def run(counts: list[int], dim: int, session_cells: int, log=print, sessions: bool = True) -> dict:
    """Every measurement; ``log`` gets a line per figure."""
    first = second = None
    if sessions:
        first, second = _sessions(session_cells, dim, log)
    fit_seconds(features(5_000, dim))
    fits = []
    for n in counts:
        seconds, coordinates = fit_seconds(features(n, dim))
        pca, neighbours = LAST_STAGES.get("pca", 0.0), LAST_STAGES.get("neighbours", 0.0)
        rest = LAST_CPU[0] - pca - neighbours
        trusted = trust(features(n, dim), coordinates)
        fits.append((n, seconds, LAST_CPU[0], pca, neighbours, rest, trusted))
        log(
            f"fast fit, {n:,} cells: {seconds:.1f} s ({LAST_CPU[0]:.1f} CPU s: PCA {pca:.1f}, "
            f"neighbours {neighbours:.1f}, graph and layout {rest:.1f}), "
            f"trustworthiness {trusted:.4f}"
        )
    n_old = min(counts[0], 10_000)  # the old configuration is slow on large maps
    X = features(n_old, dim)
    old_seconds, old_map = fit_seconds(X, pca_dimensions=None)
    old = (n_old, old_seconds, trust(X, old_map))
    log(
        f"fit without the PCA (all {dim} features), {n_old:,} cells: {old_seconds:.1f} s, "
        f"trustworthiness {old[2]:.4f}"
    )
    return dict(first=first, second=second, session_cells=session_cells, fits=fits, old=old)


def _sessions(session_cells: int, dim: int, log) -> tuple[list, list]:
    """First and second fit of two fresh sessions (empty numba cache, then kept)."""
    with tempfile.TemporaryDirectory() as cache:
        first = session_times(session_cells, dim, Path(cache))
        log(f"session 1 (empty cache), {session_cells:,} cells: {first[0]:.1f} s, {first[1]:.1f} s")
        second = session_times(session_cells, dim, Path(cache))
        log(
            f"session 2 (cache kept), {session_cells:,} cells: {second[0]:.1f} s, {second[1]:.1f} s"
        )
    return first, second


def render(result: dict, dim: int) -> str:
    """The markdown section."""
    first, second = result["first"], result["second"]
    n_old, old_seconds, old_trust = result["old"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Measured by `benchmarks/bench_umap.py` on {platform.machine()} ({os.cpu_count()} CPU "
        f"cores, load average {load:.1f} at the end), umap-learn, 15 neighbours, seed 0; "
        f"stand-in embeddings with {dim} features (4 plates apart, 6 MoAs).",
        "",
        "| cells | fit (wall) | CPU s (all threads) | PCA | neighbours | graph + layout "
        "| layout epochs | trustworthiness |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {n:,} | {s:.1f} s | {c:.1f} | {p:.1f} | {k:.1f} | {r:.1f} | "
        f"{projection.layout_epochs(n)} | {t:.4f} |"
        for n, s, c, p, k, r, t in result["fits"]
    ]
    lines += [
        "",
        "CPU seconds per stage (all threads; the stable figure on a shared machine, where the "
        "wall time depends on the other jobs). Trustworthiness: 2,000-cell subsample, "
        "15 neighbours, against the original features.",
        "",
        f"Without the PCA (umap-learn on all {dim} features) on {n_old:,} cells: "
        f"{old_seconds:.1f} s, trustworthiness {old_trust:.4f}.",
    ]
    if first is None:
        lines += ["", "Session timings not measured in this run (`--no-sessions`)."]
        return "\n".join(lines)
    lines += [
        "",
        f"First and second fit of a session ({result['session_cells']:,} cells, fresh "
        "processes): the first session ever (empty numba cache) "
        f"{first[0]:.1f} s then {first[1]:.1f} s; the next session (cache kept) "
        f"{second[0]:.1f} s then {second[1]:.1f} s (ratio {second[0] / second[1]:.2f}).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts; print only")
    parser.add_argument("--dim", type=int, default=256, help="features per cell (default 256)")
    parser.add_argument("--counts", type=int, nargs="+", help="cell counts (default 10k 30k 100k)")
    parser.add_argument("--no-sessions", action="store_true", help="skip the two fresh sessions")
    args = parser.parse_args()
    counts = [5_000, 10_000] if args.quick else (args.counts or [10_000, 30_000, 100_000])
    # At least 4,096 cells, so the session fits use nn-descent as large maps do.
    result = run(counts, args.dim, session_cells=counts[0], sessions=not args.no_sessions)
    text = render(result, args.dim)
    print(text)
    if not args.quick:
        write_doc_section(DOC, text, START, END, title="UMAP speed")
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
