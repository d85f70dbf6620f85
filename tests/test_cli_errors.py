"""CLI errors: user errors get a one-line message and status 2; bugs keep their traceback."""

from __future__ import annotations

import pytest

import phenoadapt.cli.evaluate as evaluate_command
from phenoadapt.cli import EXIT_BUG, EXIT_USER_ERROR, main
from phenoadapt.errors import NotOnPlateError, PlateMapError


def _failing(exc: BaseException):
    def run(args):
        raise exc

    return run


def test_a_user_error_is_one_line_and_status_2(monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        evaluate_command, "run_evaluate", _failing(PlateMapError("Bad map: fix it."))
    )
    assert main(["evaluate", "t.csv"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "phenoadapt: error: Bad map: fix it.\n"


def test_a_bug_says_so_and_how_to_see_the_traceback(monkeypatch, capsys) -> None:
    # A ValueError is not a user error any more: it is a bug in phenoadapt.
    monkeypatch.setattr(evaluate_command, "run_evaluate", _failing(ValueError("boom")))
    assert main(["evaluate", "t.csv"]) == EXIT_BUG
    err = capsys.readouterr().err
    assert "bug" in err and "ValueError: boom" in err and "--debug" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_full_traceback(monkeypatch, capsys, where) -> None:
    monkeypatch.setattr(evaluate_command, "run_evaluate", _failing(KeyError("internal")))
    argv = (
        ["--debug", "evaluate", "t.csv"] if where == "before" else ["evaluate", "t.csv", "--debug"]
    )
    assert main(argv) == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'internal'" in err
    assert "run again with --debug" not in err


def test_a_key_error_for_the_user_reads_plainly(monkeypatch, capsys) -> None:
    error = NotOnPlateError("Well 'Z99' was not imaged on plate 'P'.")
    monkeypatch.setattr(evaluate_command, "run_evaluate", _failing(error))
    assert main(["evaluate", "t.csv"]) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "phenoadapt: error: Well 'Z99' was not imaged on plate 'P'.\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["synth", "OUT", "--sites", "0"], "--sites 0: give at least 1."),
        (["embed", "P", "--checkpoint", "c", "--batch-size", "0", "--out", "{tmp}/e.csv"],
         "--batch-size 0: give at least 1."),
        (["embed", "P", "--checkpoint", "c", "--correction", "nope", "--out", "{tmp}/e.csv"],
         "Unknown correction 'nope'"),
        (["evaluate", "{tmp}/missing.csv"], "missing.csv does not exist"),
    ],
)  # fmt: skip
def test_bad_options_are_user_errors_with_their_messages(argv, message, tmp_path, capsys) -> None:
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("phenoadapt: error: ") and message in err and "bug" not in err
