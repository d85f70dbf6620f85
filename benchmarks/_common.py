"""What every benchmark shares: writing its section into a docs page, and timing with a warm-up.

- :func:`write_doc_section`: the measured text between a page's two marker
  comments (``<!-- bench:start -->`` ... ``<!-- bench:end -->``), the rest of the
  page untouched; a page is only created when the benchmark owns it (``title``);
- :func:`timed`: run a function once or more to warm up (first-call allocation,
  kernel selection, caches), then time the repeats.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any


def write_doc_section(
    path: Path, text: str, start: str, end: str, *, title: str | None = None
) -> Path:
    """Put ``text`` between the ``start`` and ``end`` markers of the page at ``path``.

    Parameters
    ----------
    path
        The markdown page.
    text
        The section, without markers (written verbatim: backslashes stay as they are).
    start, end
        The marker lines.
    title
        When the page does not exist, create it with this heading and the
        section; None: a missing page is an error.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    SystemExit
        The page is missing (and no ``title``), or lacks the markers: the
        message says which markers to add, and nothing is overwritten.
    """
    block = f"{start}\n{text}\n{end}"
    if not path.exists():
        if title is None:
            raise SystemExit(f"{path} does not exist: create it with the lines {start} and {end}.")
        path.write_text(f"# {title}\n\n{block}\n", encoding="utf-8")
        return path
    page = path.read_text(encoding="utf-8")
    if start not in page or end not in page.split(start, 1)[1]:
        raise SystemExit(
            f"{path} lacks the markers {start} ... {end}: add them where the results go."
        )
    head, rest = page.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{block}{tail}", encoding="utf-8")
    return path


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of the timed runs and what each returned."""

    seconds: tuple[float, ...]
    results: tuple[Any, ...]

    @property
    def best(self) -> float:
        """The fastest run (the least disturbed on a shared machine)."""
        return min(self.seconds)

    @property
    def median(self) -> float:
        """The median run."""
        return median(self.seconds)

    @property
    def result(self) -> Any:
        """What the last run returned."""
        return self.results[-1]


def timed(fn: Callable[[], Any], warmup: int = 1, repeat: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeat`` times timed.

    Parameters
    ----------
    fn
        The work, without arguments (bind them with a lambda).
    warmup
        Untimed calls first.
    repeat
        Timed calls (at least 1).

    Returns
    -------
    Timing
    """
    if warmup < 0 or repeat < 1:
        raise ValueError(f"warmup must be >= 0 and repeat >= 1, got {warmup} and {repeat}.")
    for _ in range(warmup):
        fn()
    seconds, results = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        results.append(fn())
        seconds.append(time.perf_counter() - started)
    return Timing(tuple(seconds), tuple(results))
