"""Bad training options are user errors (exit 2), refused before any plate is read."""

from __future__ import annotations

import pytest

from phenoadapt.cli import EXIT_USER_ERROR, main
from phenoadapt.errors import OptionError
from phenoadapt.pipeline.training import TrainRunConfig
from phenoadapt.train import TrainConfig
from phenoadapt.train.abra import AbraConfig


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"max_epochs": 0}, "max_epochs"),
        ({"lr": 0.0}, "lr > 0"),
        ({"method": "adabn"}, "Cannot train with"),
        ({"width": 0}, "width 0"),
        ({"crop_size": 4}, "crop_size 4"),
        ({"controls_per_episode": -1}, "controls_per_episode -1"),
        ({"crop_scale": 0.0}, "crop_scale"),
        ({"input_scaling": "p99"}, "input_scaling 'p99'"),
    ],
)
def test_the_run_config_refuses_bad_options(kwargs, words) -> None:
    with pytest.raises(OptionError, match=words):
        TrainRunConfig(**kwargs)


def test_trainer_and_abra_configs_raise_option_errors() -> None:
    with pytest.raises(OptionError):
        TrainConfig(patience=0)
    with pytest.raises(OptionError):
        AbraConfig(step_size=0.0)


def test_cli_train_with_zero_epochs_exits_2_before_reading(tmp_path, capsys) -> None:
    # The plate folder does not even exist: the options are checked first.
    argv = ["train", "--plate", str(tmp_path / "nowhere"), "--platemap", str(tmp_path / "m.csv")]
    code = main([*argv, "--epochs", "0", "--out", str(tmp_path / "m")])
    assert code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "max_epochs" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
