"""The models shipped with phenoadapt, and the default model of a run that names none.

The files live next to this module (``*.safetensors`` weights with a ``.json``
sidecar; see ``README.md`` here).  The pipeline, the demo and the GUI find the
default model through :func:`default_model_path`, so none of them needs another.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import PhenoadaptError

#: File name of the default model: the demo MoA classifier (CS-ARM-BN, synthetic plates).
DEFAULT_MODEL_FILE = "demo_cs_arm_bn.safetensors"


def default_model_path() -> Path:
    """Path of the shipped default checkpoint (a ``.safetensors`` file with JSON metadata).

    Raises
    ------
    PhenoadaptError
        When the package was installed without its model files.
    """
    path = Path(str(resources.files(__name__) / DEFAULT_MODEL_FILE))
    if not path.is_file():
        raise PhenoadaptError(
            f"The default model {path} is missing from this installation: reinstall "
            "phenoadapt (the wheel ships it), or pass a checkpoint of your own."
        )
    return path


__all__ = ["DEFAULT_MODEL_FILE", "default_model_path"]
