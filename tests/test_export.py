"""Export: atomic CSV writes, no silent overwrite, clear errors for unwritable folders."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pandas as pd
import pytest

from phenoadapt.errors import PhenoadaptError
from phenoadapt.export import (
    OutputExistsError,
    OutputNotWritableError,
    export_results,
    write_table,
    write_tables,
)

TABLE = pd.DataFrame({"Metadata_Well": ["A01", "B02"], "prob_x": [0.25, 0.75]})


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_table_round_trip_and_creates_folders(tmp_path) -> None:
    path = write_table(TABLE, tmp_path / "new" / "deeper" / "t.csv")
    assert path.is_file()
    pd.testing.assert_frame_equal(pd.read_csv(path), TABLE)
    assert _leftovers(path.parent) == []


def test_existing_file_is_not_replaced_unless_asked(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("precious\n")
    with pytest.raises(OutputExistsError, match="already exists") as info:
        write_table(TABLE, path)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, PhenoadaptError)
    assert path.read_text() == "precious\n"
    write_table(TABLE, path, overwrite=True)
    pd.testing.assert_frame_equal(pd.read_csv(path), TABLE)


def test_folder_under_a_file_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError, match="is a file, not a folder"):
        write_table(TABLE, blocker / "out" / "t.csv")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions"
)
def test_read_only_folder_is_a_clear_error(tmp_path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputNotWritableError, match="read-only"):
            write_table(TABLE, folder / "t.csv")
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_error_mid_write_leaves_no_file(tmp_path) -> None:
    class Exploding(pd.DataFrame):
        def to_csv(self, *args, **kwargs):  # a Cancel or a full disk half-way through
            args[0].write("Metadata_Well,prob_x\nA01,")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_table(Exploding(TABLE), tmp_path / "t.csv")
    assert list(tmp_path.iterdir()) == []


def test_write_tables_is_all_or_nothing(tmp_path) -> None:
    (tmp_path / "b.csv").write_text("old\n")
    with pytest.raises(OutputExistsError):
        write_tables({tmp_path / "a.csv": TABLE, tmp_path / "b.csv": TABLE})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv"]  # a.csv never written

    class Failing(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_tables({tmp_path / "c.csv": TABLE, tmp_path / "d.csv": Failing(TABLE)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv"]  # c.csv removed again


def test_export_results_writes_the_three_tables(tmp_path) -> None:
    result = SimpleNamespace(cells=TABLE, wells=TABLE.head(1), accuracy=TABLE.tail(1))
    files = export_results(result, tmp_path / "out")
    assert {k: p.name for k, p in files.items()} == {
        "cells": "cells.csv", "wells": "wells.csv", "accuracy": "accuracy.csv"
    }  # fmt: skip
    with pytest.raises(OutputExistsError):
        export_results(result, tmp_path / "out")
    no_accuracy = SimpleNamespace(cells=TABLE, wells=TABLE, accuracy=None)
    assert set(export_results(no_accuracy, tmp_path / "other")) == {"cells", "wells"}


def test_written_files_get_normal_permissions(tmp_path) -> None:
    mask = os.umask(0o022)
    try:
        path = write_table(TABLE, tmp_path / "t.csv")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's owner-only 0o600


def test_formula_like_names_are_neutralised_and_read_back(tmp_path) -> None:
    """A treatment named '=HYPERLINK(...)' must not run in a spreadsheet, yet round-trips."""
    from phenoadapt.profiles import read_table

    table = pd.DataFrame(
        {
            "Metadata_Treatment": ['=HYPERLINK("http://x")', "+cmd", "@SUM(A1)", "DMSO"],
            "Cells_AreaShape_Area": [-1.5, 2.0, 3.0, 4.0],
        }
    )
    path = tmp_path / "t.csv"
    write_table(table, path)
    raw = path.read_text().splitlines()
    assert all(not line.startswith(("=", "+", "@")) for line in raw)
    assert "'=HYPERLINK" in path.read_text()
    assert ",-1.5" in path.read_text()  # numbers are left alone
    back = read_table(path)
    pd.testing.assert_frame_equal(back, table)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_permissions_follow_the_umask(tmp_path, umask, mode) -> None:
    from phenoadapt.export import write_text

    before = os.umask(umask)
    try:
        table = write_table(TABLE, tmp_path / "t.csv.gz")
        text = write_text("{}\n", tmp_path / "m.json")
    finally:
        os.umask(before)
    assert table.stat().st_mode & 0o777 == mode and text.stat().st_mode & 0o777 == mode


def test_refusal_names_the_file_and_the_overwrite_option(tmp_path) -> None:
    from phenoadapt.export import write_text

    path = tmp_path / "m.json"
    path.write_text("keep\n")
    with pytest.raises(OutputExistsError) as info:
        write_text("new\n", path)
    assert str(path) in str(info.value) and "--overwrite" in str(info.value)
    assert path.read_text() == "keep\n"
    with pytest.raises(OutputNotWritableError, match="two outputs"):
        write_tables({str(tmp_path / "a.csv"): TABLE, f"{tmp_path}/./a.csv": TABLE})


def test_an_exception_leaves_no_partial_file_and_keeps_the_old_one(tmp_path) -> None:
    from phenoadapt.export import write_atomic

    def half(tmp):
        tmp.write_text("half a tab")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "new.csv", half)
    old = tmp_path / "old.csv"
    old.write_text("complete\n")
    with pytest.raises(RuntimeError):
        write_atomic(old, half, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.csv"]
    assert old.read_text() == "complete\n"


def test_tab_and_gzip_names_choose_the_format(tmp_path) -> None:
    tsv = write_table(TABLE, tmp_path / "t.tsv")
    assert tsv.read_text().splitlines()[0] == "Metadata_Well\tprob_x"
    gz = write_table(TABLE, tmp_path / "t.csv.gz")
    pd.testing.assert_frame_equal(pd.read_csv(gz), TABLE)


def test_check_writable_creates_nothing_and_write_tables_cleans_up(tmp_path) -> None:
    from phenoadapt.export import check_writable, write_tables

    target = tmp_path / "a" / "b" / "t.csv"
    check_writable([target])
    assert not (tmp_path / "a").exists()  # folders appear only with the first file

    class Exploding(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_tables({target: TABLE, target.with_name("u.csv"): Exploding(TABLE)})
    assert list(tmp_path.iterdir()) == []  # the file and both folders it made are gone


def test_a_carriage_return_in_a_name_does_not_split_its_row(tmp_path) -> None:
    from phenoadapt.profiles import read_table

    table = pd.DataFrame({"Metadata_Treatment": ["a\rb", "\rcmd", "DMSO"], "x": [1.0, -2.0, 3.0]})
    path = write_table(table, tmp_path / "t.csv")
    pd.testing.assert_frame_equal(read_table(path), table)
    plain = write_table(TABLE, tmp_path / "plain.csv")
    assert b"\r" not in plain.read_bytes()  # ordinary tables keep their "\n" line ends
