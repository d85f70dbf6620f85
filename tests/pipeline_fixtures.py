"""Tiny plates and untrained checkpoints for the pipeline, export and CLI tests.

Plates are 8 wells (A01-A08; A01 and A07 are DMSO controls) of one 128 x 128
field, with three MoAs: a few hundred cells, segmented in about a second.
Checkpoints hold a randomly initialized ResNet-10 of width 4: the tests check
shapes, columns, errors and hooks, not accuracy (the demo test does that).
"""

from __future__ import annotations

from pathlib import Path

from phenoadapt.cells import SegmentationParams
from phenoadapt.nn import ResNetConfig, build_resnet
from phenoadapt.plate import open_plate, read_platemap
from phenoadapt.plate.synthetic import SyntheticPlateConfig, generate_plate
from phenoadapt.train import CheckpointMetadata, save_checkpoint

MOAS = ("tubulin_inhibitor", "actin_disruptor", "er_stress_inducer")
WELLS = tuple(f"A{c:02d}" for c in range(1, 9))
CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
SEGMENTATION = SegmentationParams(nucleus_diameter=16)
CONFIG = SyntheticPlateConfig(sites=1, field_shape=(128, 128), wells=WELLS, moas=MOAS)


def make_plate(folder: Path, plate_id: str = "tiny1", seed: int = 0):
    """Write a tiny synthetic plate; return (plate, plate map, plate folder)."""
    written = generate_plate(folder, CONFIG, seed=seed, plate_id=plate_id, workers=1)
    plate = open_plate(written.path)
    return plate, read_platemap(written.platemap_path, plate_id=plate_id), written.path


def make_checkpoint(
    path: Path,
    *,
    classes: tuple[str, ...] = MOAS,
    channels: tuple[str, ...] = CHANNELS,
    seed: int = 0,
    crop_size: int = 24,
) -> Path:
    """Save an untrained ResNet-10 classifier checkpoint fit for the tiny plates."""
    model = build_resnet(
        ResNetConfig("resnet10", len(channels), len(classes), width=4, stem="small"), seed=seed
    )
    meta = CheckpointMetadata(
        network=model.spec(),
        classes=classes,
        channel_names=channels,
        method="cs-arm-bn",
        crop_size=crop_size,
        extra={"crop_scale": 0.5, "segmentation": {"nucleus_diameter": 16}},
    )
    return save_checkpoint(path, model, meta)


def trained_like_resnet(images):
    """A tiny 3-class ResNet-10 whose batch norms hold non-trivial statistics and affine
    parameters, as after training (the adaptation tests compare statistics against it)."""
    import torch

    from phenoadapt.adapt import batchnorm_layers
    from phenoadapt.nn import fit_normalization

    config = ResNetConfig(
        "resnet10", 3, 3, width=4, stem="small", normalization=fit_normalization(images)
    )
    net = build_resnet(config, seed=0)
    with torch.no_grad():
        for layer in batchnorm_layers(net).values():
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.uniform_(-0.2, 0.2)
    return net.eval()
