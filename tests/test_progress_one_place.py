"""One progress/cancel type (phenoadapt.progress) and one CLI progress bar (cli/progress.py)."""

from __future__ import annotations

import re
from pathlib import Path

import phenoadapt
from phenoadapt.cli.progress import ProgressBar, progress_bar

ROOT = Path(phenoadapt.__file__).parent
SOURCES = {
    p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in ROOT.rglob("*.py")
}


def test_the_hook_types_are_written_once() -> None:
    # A spelled-out hook type anywhere else is a second definition of the same decision.
    spelled = re.compile(r"Callable\[\[str, int, int\], None\]|Callable\[\[\], bool\]")
    assert [name for name, text in SOURCES.items() if spelled.search(text)] == ["progress.py"]


def test_only_the_cli_progress_module_draws_bars() -> None:
    users = [n for n, text in SOURCES.items() if n.startswith("cli/") and "tqdm" in text]
    assert users == ["cli/progress.py"]


def test_progress_bar_follows_stages() -> None:
    with progress_bar("segment", unit="field", enabled=False) as progress:
        assert isinstance(progress, ProgressBar)
        progress("illumination", 2, 5)
        assert (progress.stage, progress.total, progress._bar.n) == ("illumination", 5, 2)
        progress("segment", 1, 9)  # a new stage restarts the count
        assert (progress.stage, progress.total, progress._bar.n) == ("segment", 9, 1)
        progress("segment", 9, 9)
        assert progress._bar.n == 9
