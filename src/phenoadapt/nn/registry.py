"""The allow-list of network families that checkpoints may name.

A checkpoint stores a JSON *spec* of its network (``{"family": "resnet",
"arch": "resnet50", ...}``), never code or pickles.  Loading looks the family up
here and calls its trusted builder, so a checkpoint file can choose among known
architectures but cannot make phenoadapt run anything else.

Another family (PhenoProfiler, ABRA) joins the list with :func:`register_family`
from its own module in :mod:`phenoadapt.nn`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ModelError
from .mlp import FAMILY as MLP_FAMILY
from .mlp import build_mlp_spec
from .phenoprofiler import FAMILY as PHENOPROFILER_FAMILY
from .phenoprofiler import build_phenoprofiler_spec
from .resnet import FAMILY as RESNET_FAMILY
from .resnet import ResNetConfig, build_resnet

NetworkBuilder = Callable[[dict[str, Any]], nn.Module]


def _build_resnet_spec(spec: dict[str, Any]) -> nn.Module:
    return build_resnet(ResNetConfig.from_dict(spec))


_FAMILIES: dict[str, NetworkBuilder] = {
    RESNET_FAMILY: _build_resnet_spec,
    PHENOPROFILER_FAMILY: build_phenoprofiler_spec,
    MLP_FAMILY: build_mlp_spec,
}


def register_family(name: str, builder: NetworkBuilder) -> None:
    """Add a network family to the allow-list.

    Parameters
    ----------
    name
        Value of the spec's ``"family"`` key.
    builder
        Function spec -> module; it must validate the spec and raise
        ``ValueError`` for anything it does not know.  The module it builds should
        have a ``spec()`` method returning that spec.
    """
    _FAMILIES[name] = builder


def known_families() -> tuple[str, ...]:
    """Names of the registered network families."""
    return tuple(sorted(_FAMILIES))


def build_network(spec: dict[str, Any]) -> nn.Module:
    """Build a network from its JSON spec, only from the allow-list.

    Raises
    ------
    ModelError
        For an unknown family or a spec its builder rejects.
    """
    family = spec.get("family") if isinstance(spec, dict) else None
    if family not in _FAMILIES:
        raise ModelError(
            f"Unknown network family {family!r} in the checkpoint: phenoadapt builds only "
            f"{', '.join(known_families())}. The file was written by another program or a "
            "newer phenoadapt."
        )
    try:
        return _FAMILIES[family](spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"Invalid {family} network description in the checkpoint: {exc}") from exc
