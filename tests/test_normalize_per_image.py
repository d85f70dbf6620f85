"""Per-image percentile scaling (the official CS-ARM-BN input): per image and channel, recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from phenoadapt.nn import (
    ChannelNormalizer,
    Normalization,
    ResNetConfig,
    build_resnet,
    fit_normalization,
    scale_per_image,
)
from phenoadapt.train import CheckpointMetadata, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_image_and_channel_is_scaled_by_its_own_percentile() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 100.0, size=(3, 2, 10, 10)).astype(np.float32)
    x[1] *= 7.0  # a brighter image: same picture after scaling
    x[1] = x[0] * 7.0
    x[2, 1] = x[0, 1] * 0.2  # one dimmer channel of one image
    out = scale_per_image(torch.from_numpy(x), percentile=100.0, levels=None).numpy()
    np.testing.assert_allclose(out[1], out[0], rtol=1e-6)
    np.testing.assert_allclose(out[2, 1], out[0, 1], rtol=1e-6)
    assert out.max(axis=(2, 3)) == pytest.approx(np.ones((3, 2)))
    # 99th percentile of 100 pixels: the 99th smallest value, brighter pixels saturate at 1.
    p99 = scale_per_image(torch.from_numpy(x), percentile=99.0, levels=None).numpy()
    kth = np.sort(x.reshape(3, 2, -1), axis=2)[:, :, 98]
    np.testing.assert_allclose(p99, np.clip(x / kth[:, :, None, None], 0, 1), rtol=1e-6)


def test_levels_quantize_like_8_bit_and_empty_channels_stay_zero() -> None:
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0] = torch.linspace(0, 1000, 16).reshape(4, 4)
    out = scale_per_image(x, percentile=100.0, levels=255)[0, 0].flatten().numpy()
    steps = out * 255
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)  # 256 levels
    exact = np.linspace(0, 1000, 16) / 1000
    assert np.all(out <= exact + 1e-6) and np.all(exact - out < 1 / 255 + 1e-6)  # truncated
    empty = scale_per_image(x, percentile=100.0, levels=255)[0, 1]
    assert torch.equal(empty, torch.zeros(4, 4))  # no division by zero


def test_fit_and_forward_standardize_the_scaled_pixels() -> None:
    rng = np.random.default_rng(1)
    crops = rng.gamma(2.0, 300.0, size=(40, 3, 8, 8)).astype(np.float32)
    crops[::2] *= 5.0  # half the images five times brighter: no effect after scaling
    norm = fit_normalization(crops, transform="linear", image_percentile=99.99, chunk=7)
    assert norm.per_image and norm.clip is None and norm.image_levels == 255
    ref = scale_per_image(torch.from_numpy(crops), 99.99, 255).double().numpy()
    np.testing.assert_allclose(norm.mean, ref.mean(axis=(0, 2, 3)), rtol=1e-6)
    out = ChannelNormalizer(norm)(torch.from_numpy(crops)).double().numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)
    with pytest.raises(ValueError, match="image_percentile"):
        Normalization("linear", (0.0,), (1.0,), image_percentile=120.0)


def _metadata(network: dict) -> CheckpointMetadata:
    return CheckpointMetadata(
        network=network, classes=("a", "b"), channel_names=("DNA", "ER", "RNA"), method="erm",
        crop_size=16, input_size=None, training_plates=("P1",), validation_plates=(),
        metrics={}, training={},
    )  # fmt: skip


def test_recorded_in_the_spec_and_honoured_on_reload(tmp_path: Path) -> None:
    norm = Normalization("linear", (0.3,) * 3, (0.2,) * 3, None, 99.9, 255)
    model = build_resnet(ResNetConfig("resnet10", 3, 2, width=4, normalization=norm), seed=0)
    spec = model.spec()
    assert spec["normalization"]["image_percentile"] == 99.9
    assert spec["normalization"]["image_levels"] == 255
    path = save_checkpoint(tmp_path / "m", model.eval(), _metadata(spec))
    loaded = load_checkpoint(path).model
    assert loaded.normalizer.image_percentile == 99.9
    x = torch.rand(2, 3, 16, 16) * 3000
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        # Scaling each image by a constant changes nothing for this model.
        torch.testing.assert_close(loaded(x * 4.0), model(x), atol=0.05, rtol=0.05)


def test_old_specs_keep_their_global_normalization(tmp_path: Path) -> None:
    norm = Normalization("log1p", (5.0,) * 3, (0.5,) * 3, (4000.0,) * 3)
    assert "image_percentile" not in norm.to_dict()  # old JSON unchanged
    old = {"transform": "log1p", "mean": [5.0] * 3, "std": [0.5] * 3, "clip": [4000.0] * 3}
    assert Normalization.from_dict(old) == norm and not Normalization.from_dict(old).per_image
    model = build_resnet(ResNetConfig("resnet10", 3, 2, width=4, normalization=norm), seed=0)
    path = save_checkpoint(tmp_path / "old", model.eval(), _metadata(model.spec()))
    loaded = load_checkpoint(path).model
    assert loaded.normalizer.image_percentile is None
    x = torch.rand(2, 3, 16, 16) * 3000
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
