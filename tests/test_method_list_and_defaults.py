"""One list of methods and one set of training defaults, read by the CLI, the demo and the API."""

from __future__ import annotations

import argparse
from pathlib import Path

from phenoadapt.adapt.methods import (
    DEFAULT_METHOD,
    METHODS,
    TRAIN_METHODS,
    Method,
    method_choices,
)
from phenoadapt.cli import build_parser
from phenoadapt.demo import ALL_METHODS
from phenoadapt.pipeline import TrainRunConfig
from phenoadapt.pipeline.tables import TEST_METHOD


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_every_method_has_its_info_and_menus_put_the_default_first() -> None:
    assert set(METHODS) == set(Method)
    assert all(info.label and info.description for info in METHODS.values())
    assert method_choices()[0] == DEFAULT_METHOD.value
    assert set(method_choices()) == {m.value for m in Method}
    assert set(method_choices(trainable=True)) == {m.value for m in TRAIN_METHODS}
    assert TRAIN_METHODS == (Method.ERM, Method.ARM_BN, Method.CS_ARM_BN)


def test_cli_choices_are_the_method_list() -> None:
    assert tuple(_option(_subparser("train"), "--method").choices) == method_choices(True)
    assert tuple(_option(_subparser("predict"), "--method").choices) == method_choices()
    assert set(_option(_subparser("run"), "--method").choices) == {*method_choices(), "all"}


def test_demo_and_tables_read_the_method_list() -> None:
    assert ALL_METHODS == tuple(m.value for m in Method)
    assert set(TEST_METHOD) == {m.value for m in TRAIN_METHODS}


def test_cli_training_defaults_are_the_api_dataclass() -> None:
    defaults, train = TrainRunConfig(), _subparser("train")
    pairs = {"--epochs": "max_epochs", "--patience": "patience", "--lr": "lr",
             "--method": "method", "--seed": "seed", "--device": "device",
             "--controls-per-episode": "controls_per_episode",
             "--input-scaling": "input_scaling"}  # fmt: skip
    for flag, field in pairs.items():
        assert _option(train, flag).default == getattr(defaults, field), flag
    assert defaults.train_config().max_epochs == defaults.max_epochs


def test_the_docs_table_lists_the_methods() -> None:
    page = (Path(__file__).parents[1] / "docs" / "adaptation.md").read_text(encoding="utf-8")
    table = page.split("## Methods and contexts", 1)[1].split("\n\n")[1]
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    names = [row.split("`")[1] for row in rows]
    assert names == [m.value for m in Method]  # every method, in the table's order
    assert [row for row in rows if "(default)" in row] == [f"`{DEFAULT_METHOD.value}` (default)"]
