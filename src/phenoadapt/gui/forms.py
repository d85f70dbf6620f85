"""Dock forms generated from the API's config dataclasses with magicgui.

A dock that sets fields of :class:`phenoadapt.pipeline.RunConfig` or
:class:`phenoadapt.pipeline.TrainRunConfig` does not type their defaults
again: :func:`config_form` builds one magicgui widget per field, whose initial
value *is* the dataclass default (read from the dataclass, never copied), with
the field's type choosing the widget (a spin box for an ``int``, a check box
for a ``bool``...).  The command line reads the same dataclasses, so the GUI,
the CLI and the API start from the same settings (issue 12.4).

Each :class:`FormField` adds only what the dataclass cannot say: the label,
the range of a number, the choices of a string and a tooltip.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..adapt.methods import ContextChoice

#: (value, label) of the device choices.
DEVICE_CHOICES: tuple[tuple[str, str], ...] = (
    ("auto", "auto (CUDA when present)"),
    ("cpu", "cpu"),
    ("cuda", "cuda"),
)
#: (value, label) of the context choices; None: the method's own default.
CONTEXT_CHOICES: tuple[tuple[str | None, str], ...] = (
    (None, "method's default"),
    *((c.value, c.value) for c in ContextChoice),
)


@dataclass(frozen=True)
class FormField:
    """How one dataclass field appears in a generated form.

    Attributes
    ----------
    name
        The dataclass field.
    label
        Shown left of the widget.
    tooltip
        Shown on hover.
    choices
        ``(value, label)`` pairs: a combo box of these values.
    options
        Further magicgui widget options (``min``, ``max``, ``step``...).
    """

    name: str
    label: str
    tooltip: str = ""
    choices: tuple[tuple[Any, str], ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)


#: The Run tab's advanced settings (RunConfig fields).
RUN_FIELDS: tuple[FormField, ...] = (
    FormField("device", "Device", "Where the network runs.", choices=DEVICE_CHOICES),
    FormField(
        "batch_size", "Batch size",
        "Cells per forward pass; lower it when the GPU runs out of memory.",
        options={"min": 1, "max": 65536},
    ),
    FormField(
        "context", "Context",
        "Which cells give each plate's statistics: the paper's chunks (64 treated + 128 "
        "controls), every cell of the plate, or a random sample of 'Context size' cells.",
        choices=CONTEXT_CHOICES,
    ),
    FormField(
        "context_size", "Context size", "Cells in a 'sample' context.",
        options={"min": 1, "max": 1_000_000},
    ),
    FormField(
        "controls_per_context", "Controls per context",
        "Control cells in each context (CS-ARM-BN).", options={"min": 1, "max": 100_000},
    ),
    FormField(
        "min_controls", "Min. controls",
        "A plate with fewer control cells stops the run, or falls back when allowed.",
        options={"min": 1, "max": 100_000},
    ),
    FormField("seed", "Seed", "Seed of the contexts' random draws.",
              options={"min": 0, "max": 2**31 - 1}),
    FormField("compare_unadapted", "Also unadapted (ERM) features",
              "Features with the training statistics, for the UMAP's 'before' map."),
)  # fmt: skip

#: The Train tab's settings (TrainRunConfig fields), and those under "Advanced".
TRAIN_FIELDS: tuple[FormField, ...] = (
    FormField("max_epochs", "Epochs", "Training length.", options={"min": 1, "max": 1000}),
)
#: (value, label) of the input scalings (phenoadapt.nn.INPUT_SCALINGS).
INPUT_SCALING_CHOICES: tuple[tuple[str, str], ...] = (
    ("log1p", "clip + log1p (default)"),
    ("image", "per image, 99.99th percentile (official CS-ARM-BN)"),
)
TRAIN_ADVANCED_FIELDS: tuple[FormField, ...] = (
    FormField(
        "input_scaling", "Input scaling",
        "How raw intensities are scaled before the network; saved in the model, so "
        "prediction uses the same. Per image divides each crop's channel by its own "
        "brightest pixels (loses the cell's own brightness).",
        choices=INPUT_SCALING_CHOICES,
    ),
    FormField("patience", "Patience", "Epochs without improvement before stopping early.",
              options={"min": 1, "max": 1000}),
    FormField("lr", "Learning rate", "Adam learning rate.",
              options={"min": 1e-6, "max": 1.0, "step": 1e-4}),
    FormField("device", "Device", "Where the network trains.", choices=DEVICE_CHOICES),
    FormField("seed", "Seed", "Seed of everything random.", options={"min": 0, "max": 2**31 - 1}),
    FormField("batch_size", "Batch size", "Crops gathered per step.",
              options={"min": 1, "max": 65536}),
)  # fmt: skip


def dataclass_default(cls: type, name: str) -> Any:
    """The default of a dataclass field (``default`` or ``default_factory()``)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise ValueError(f"{cls.__name__}.{name} has no default.")
    raise ValueError(f"{cls.__name__} has no field {name!r}.")


def _annotation(cls: type, name: str) -> Any:
    """The field's type, without ``None`` (the widget says "none" through its choices)."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def config_form(cls: type, fields: Sequence[FormField]) -> Any:
    """A magicgui ``Container`` with one widget per field, at the dataclass defaults.

    Parameters
    ----------
    cls
        A dataclass whose fields all have defaults (``RunConfig``...).
    fields
        Which fields, in order, and how they look.

    Returns
    -------
    magicgui.widgets.Container
        Widgets named as the fields; ``form_values(form)`` reads them back.
    """
    from magicgui.widgets import ComboBox, Container, create_widget

    widgets = []
    for spec in fields:
        default = dataclass_default(cls, spec.name)
        if spec.choices is not None:
            widget = ComboBox(
                name=spec.name, label=spec.label, choices=list(_choices(spec.choices)),
                value=default, tooltip=spec.tooltip or None,
            )  # fmt: skip
        else:
            widget = create_widget(
                value=default, annotation=_annotation(cls, spec.name), name=spec.name,
                label=spec.label, options={"tooltip": spec.tooltip or None, **spec.options},
            )  # fmt: skip
        widgets.append(widget)
    return Container(widgets=widgets, labels=True)


def _choices(choices: Sequence[tuple[Any, str]]) -> list[tuple[str, Any]]:
    """magicgui's ``(label, value)`` order from ours."""
    return [(label, value) for value, label in choices]


def advanced_section(form: Any, title: str = "Advanced") -> Any:
    """A form in a collapsed section (a click shows it), so the dock stays short."""
    from superqt import QCollapsible

    section = QCollapsible(title)
    section.addWidget(form.native)
    section.collapse(animate=False)
    return section


def form_values(form: Any) -> dict[str, Any]:
    """The values of a :func:`config_form`, by field name."""
    return {widget.name: widget.value for widget in form}
