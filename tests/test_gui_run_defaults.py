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


def test_generated_form_widgets_start_at_the_dataclass_defaults(make_napari_viewer) -> None:
    """Every widget generated from RunConfig / TrainRunConfig shows the field's default."""
    from phenoadapt.gui.forms import dataclass_default, form_values

    widget = RunWidget(make_napari_viewer())
    forms = [
        (widget.run_form, RunConfig),
        (widget.train_form, TrainRunConfig),
        (widget.train_advanced, TrainRunConfig),
    ]
    names = set()
    for form, cls in forms:
        assert len(form) > 0
        for item in form:
            assert item.value == dataclass_default(cls, item.name), (cls.__name__, item.name)
            assert item.value == getattr(cls(), item.name)
            names.add(item.name)
    assert {"context", "context_size", "seed", "batch_size", "device", "max_epochs"} <= names
    # What the dock hands to the pipeline is what the form says.
    widget.run_form.context.value = "plate"
    widget.run_form.seed.value = 7
    settings = widget.run_settings()
    assert settings["context"] == "plate" and settings["seed"] == 7
    assert form_values(widget.run_form)["batch_size"] == RunConfig().batch_size
    RunConfig(**settings)  # every key is a RunConfig field


def test_config_form_follows_a_changed_dataclass_default() -> None:
    """The form reads the default from the dataclass; it is never typed again."""
    import dataclasses

    from qtpy.QtWidgets import QApplication

    from phenoadapt.gui.forms import FormField, config_form

    QApplication.instance() or QApplication([])

    @dataclasses.dataclass
    class Settings:
        size: int = 17
        ratio: float = 0.25
        fast: bool = True
        mode: str | None = None

    form = config_form(
        Settings,
        [
            FormField("size", "Size", options={"max": 100}),
            FormField("ratio", "Ratio"),
            FormField("fast", "Fast"),
            FormField("mode", "Mode", choices=((None, "none"), ("a", "a"))),
        ],
    )
    assert [w.value for w in form] == [17, 0.25, True, None]


def test_segment_dock_defaults_are_the_api_dataclasses(make_napari_viewer) -> None:
    from phenoadapt.cells import MeasureParams, SegmentationParams
    from phenoadapt.gui.segmentation import SegmentationWidget

    widget = SegmentationWidget(make_napari_viewer())
    params, defaults = widget.params(), SegmentationParams()
    for name in ("nucleus_diameter", "threshold_method", "threshold_correction", "exclude_border"):
        assert getattr(params, name) == getattr(defaults, name), name
    assert widget.texture.isChecked() == MeasureParams().texture
