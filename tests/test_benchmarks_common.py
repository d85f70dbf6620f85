"""The benchmarks' one doc writer and one timer (benchmarks/_common.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _common import timed, write_doc_section  # noqa: E402

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def test_only_the_section_between_the_markers_changes(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nintro\n{START}\nold\n{END}\n\noutro\n")
    write_doc_section(page, "| a \\ b |\n|---|", START, END)  # a backslash stays verbatim
    assert page.read_text() == f"# Title\n\nintro\n{START}\n| a \\ b |\n|---|\n{END}\n\noutro\n"


def test_a_page_is_created_only_when_the_benchmark_owns_it(tmp_path) -> None:
    owned = write_doc_section(tmp_path / "new.md", "text", START, END, title="Numbers")
    assert owned.read_text() == f"# Numbers\n\n{START}\ntext\n{END}\n"
    with pytest.raises(SystemExit, match="does not exist"):
        write_doc_section(tmp_path / "missing.md", "text", START, END)
    page = tmp_path / "plain.md"
    page.write_text("# A page without markers\n")
    with pytest.raises(SystemExit, match="lacks the markers"):
        write_doc_section(page, "text", START, END, title="Numbers")
    assert page.read_text() == "# A page without markers\n"  # never overwritten


def test_timed_warms_up_then_times_the_repeats() -> None:
    calls: list[int] = []
    timing = timed(lambda: calls.append(len(calls)) or len(calls), warmup=2, repeat=3)
    assert len(calls) == 5 and timing.results == (3, 4, 5) and timing.result == 5
    assert len(timing.seconds) == 3 and timing.best <= timing.median
    with pytest.raises(ValueError):
        timed(lambda: None, repeat=0)


def test_no_benchmark_writes_doc_sections_itself() -> None:
    own = re.compile(r"split\((START|BEGIN)|re\.escape\((START|BEGIN)\)")
    copies = [p.name for p in BENCHMARKS.glob("*.py") if own.search(p.read_text())]
    assert copies == []  # they call _common.write_doc_section


def test_no_benchmark_overwrites_a_whole_docs_page() -> None:
    """Pages are written through write_doc_section, never with write_text (prose kept)."""
    whole = re.compile(r"\b(OUT|[A-Z_]*DOC|args\.out)\.(write_text|open)\(")
    found = [p.name for p in BENCHMARKS.glob("*.py") if whole.search(p.read_text())]
    assert found == []
