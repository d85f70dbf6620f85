"""Benchmark of open_plate: time and memory of opening plate folders, and of reading fields.

What it measures
----------------
1. Opening Opera Phenix folders of tiny TIFFs (96, 384 and 1536 wells, 5
   channels, 1 or 9 sites): wall time (best of 3) and the ``tracemalloc`` peak
   while opening, and what the open plate keeps, per file.  Opening lists names
   and reads one header, so memory should grow with the number of files only.
2. The same 96-well folder with 8 x 8 and 512 x 512 images: memory must not
   depend on the image size (no pixels are read).
3. Opening an OME-Zarr copy of the 96-well plate (metadata of every well read).
4. Reading the real Phenix field of ``tests/data`` (6 x 1080 x 1080, LZW).

Run ``python benchmarks/bench_open_plate.py`` (about a minute on 2 cores); it
prints the figures and writes them between the benchmark markers of
``docs/plate-readers.md``.
"""

from __future__ import annotations

import io
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import tifffile

from phenoadapt.plate import open_plate, write_ome_zarr
from phenoadapt.plate.wells import PLATE_96, PLATE_384, PLATE_1536, PlateFormat, well_position

try:  # run as a script: benchmarks/ is on sys.path
    from _common import write_doc_section
except ImportError:  # pragma: no cover - imported as benchmarks._common
    from benchmarks._common import write_doc_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plate-readers.md"
REAL_FIELD = ROOT / "tests" / "data" / "phenix_BR00143976"
START, END = "<!-- benchmark:open_plate:start -->", "<!-- benchmark:open_plate:end -->"


def tiff_bytes(shape: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros(shape, np.uint16))
    return buffer.getvalue()


def write_phenix(folder: Path, fmt: PlateFormat, sites: int, shape=(8, 8), channels=5) -> int:
    """A Phenix folder with the same tiny TIFF under every name; returns the file count."""
    folder.mkdir(parents=True)
    data = tiff_bytes(shape)
    n = 0
    for well in fmt.wells():
        row, col = well_position(well)
        for site in range(1, sites + 1):
            for ch in range(1, channels + 1):
                name = f"r{row:02d}c{col:02d}f{site:02d}p01-ch{ch}sk1fk1fl1.tiff"
                (folder / name).write_bytes(data)
                n += 1
    return n


def measure_open(folder: Path) -> tuple[float, int, int]:
    """(best time of 3 in s, tracemalloc peak in bytes, bytes the open plate keeps)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        open_plate(folder)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    plate = open_plate(folder)
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del plate
    return min(times), peak, kept


def main() -> None:
    lines = [
        "| plate | files | open (s) | peak memory (MB) | peak per file (kB) | kept per file (kB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        open_plate(REAL_FIELD)  # imports and caches warmed before measuring
        cases = [
            ("96 wells x 1 site", PLATE_96, 1),
            ("384 wells x 1 site", PLATE_384, 1),
            ("384 wells x 9 sites", PLATE_384, 9),
            ("1536 wells x 1 site", PLATE_1536, 1),
        ]
        for label, fmt, sites in cases:
            folder = tmp_path / label.replace(" ", "_")
            n = write_phenix(folder, fmt, sites)
            seconds, peak, kept = measure_open(folder)
            lines.append(
                f"| {label}, 5 channels | {n:,} | {seconds:.3f} | {peak / 1e6:.2f} | "
                f"{peak / n / 1e3:.2f} | {kept / n / 1e3:.2f} |"
            )
            print(lines[-1], flush=True)

        small = tmp_path / "size_8"
        large = tmp_path / "size_512"
        write_phenix(small, PLATE_96, 1, (8, 8))
        write_phenix(large, PLATE_96, 1, (512, 512))
        _, peak_small, _ = measure_open(small)
        _, peak_large, _ = measure_open(large)
        size_line = (
            f"Image size does not matter: opening 96 wells x 5 channels of 8 x 8 images peaks at "
            f"{peak_small / 1e6:.2f} MB, of 512 x 512 images at {peak_large / 1e6:.2f} MB."
        )
        print(size_line)

        plate = open_plate(small)
        zarr_path = write_ome_zarr(plate, tmp_path / "p96.zarr")
        zarr_seconds, zarr_peak, _ = measure_open(zarr_path)
        zarr_line = (
            f"OME-Zarr: opening the 96-well plate (96 fields) as OME-Zarr takes "
            f"{zarr_seconds:.3f} s (peak {zarr_peak / 1e6:.2f} MB): one metadata read per well."
        )
        print(zarr_line)

    real = open_plate(REAL_FIELD)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        real.read_field("C03", 3)
        times.append(time.perf_counter() - start)
    read_line = (
        f"Reading the real Phenix field (6 x 1080 x 1080 uint16, LZW): {min(times):.3f} s "
        "(best of 3)."
    )
    print(read_line)

    table = "\n".join(
        [
            "Measured by `python benchmarks/bench_open_plate.py` (tracemalloc; tiny TIFFs, Opera "
            "Phenix names).",
            "",
            *lines,
            "",
            f"- {size_line}",
            f"- {zarr_line}",
            f"- {read_line}",
        ]
    )
    write_doc_section(DOC, table, START, END)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
