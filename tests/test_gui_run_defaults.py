"""The Run dock's choices and defaults come from the method list and the API's dataclasses.

Run under a display (``xvfb-run -a python -m pytest``).
"""

from __future__ import annotations

from phenoadapt.adapt.methods import METHODS, Method, method_choices
from phenoadapt.gui.run_dock import RunWidget
from phenoadapt.pipeline import RunConfig, TrainRunConfig


def _items(combo) -> list[tuple[str, str]]:
    return [(combo.itemData(i), combo.itemText(i)) for i in range(combo.count())]


def test_method_combos_are_the_method_list(make_napari_viewer) -> None:
    widget = RunWidget(make_napari_viewer())
    labels = {m.value: METHODS[m].label for m in Method}
    assert _items(widget.method) == [(v, labels[v]) for v in method_choices()]
    assert _items(widget.train_method) == [(v, labels[v]) for v in method_choices(True)]
    widget.method.setCurrentIndex(widget.method.findData("ben"))
    assert widget.method_help.text() == METHODS[Method.BEN].description


def test_defaults_are_the_api_dataclasses(make_napari_viewer) -> None:
    widget = RunWidget(make_napari_viewer())
    train, run = TrainRunConfig(), RunConfig()
    assert widget.train_epochs.value() == train.max_epochs  # was 20 where CLI and API train 30
    assert widget.train_seed.value() == train.seed
    assert widget.train_method.currentData() == train.method
    assert widget.method.currentData() == run.method
    assert widget.batch_size.value() == run.batch_size
