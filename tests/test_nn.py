"""Networks: ResNet shapes for any channel count and size, input normalization, runtime helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phenoadapt.errors import Cancelled, ModelError
from phenoadapt.nn import (
    ARCHITECTURES,
    ChannelNormalizer,
    Normalization,
    ResNetConfig,
    build_network,
    build_resnet,
    fit_normalization,
    forward_in_batches,
    resnet18,
    resnet50,
    retry_on_oom,
    select_device,
)
from phenoadapt.nn.resnet import BasicBlock, Bottleneck

# Tiny networks gain nothing from threads (conftest.py one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("channels", [3, 5, 6])
def test_resnet_shapes_any_channels_and_sizes(arch: str, channels: int) -> None:
    model = build_resnet(ResNetConfig(arch, channels, 7, width=4, stem="small"), seed=0).eval()
    expansion = 4 if arch == "resnet50" else 1
    for h, w in [(12, 12), (17, 17), (20, 28)]:  # crops and a non-square tile
        x = torch.rand(2, channels, h, w) * 1000
        assert model(x).shape == (2, 7)
        assert model.embed(x).shape == (2, 8 * 4 * expansion)
    assert model.feature_dim == 8 * 4 * expansion


def test_imagenet_stem_accepts_tiles_and_tiny_crops() -> None:
    model = resnet18(5, 8, width=8, seed=0).eval()
    assert model(torch.rand(1, 5, 128, 160)).shape == (1, 8)  # a field tile
    assert model(torch.rand(2, 5, 16, 16)).shape == (2, 8)  # pooled down to 1x1


def test_resnet50_matches_the_standard_size() -> None:
    # torchvision's ResNet-50 has 23.5 M parameters without its 1000-class head.
    model = resnet50(3, 8)
    n = sum(p.numel() for p in model.parameters())
    assert 23.4e6 < n < 23.6e6
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and not any(isinstance(m, BasicBlock) for m in model.modules())


def test_seed_makes_initial_weights_reproducible_without_touching_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_resnet(ResNetConfig("resnet10", 3, 2, width=4), seed=7)
    assert torch.equal(torch.rand(1), before)  # the global RNG did not move
    b = build_resnet(ResNetConfig("resnet10", 3, 2, width=4), seed=7)
    c = build_resnet(ResNetConfig("resnet10", 3, 2, width=4), seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["head.weight"], sc["head.weight"])


def test_config_validation_and_round_trip() -> None:
    norm = Normalization("log1p", (1.0, 2.0, 3.0), (0.5, 0.5, 0.5), (900.0, 800.0, 700.0))
    config = ResNetConfig("resnet34", 3, 4, width=16, stem="small", normalization=norm)
    assert ResNetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown ResNet architecture"):
        ResNetConfig("resnet101", 3, 4)
    with pytest.raises(ValueError, match="channels"):
        ResNetConfig("resnet10", 5, 4, normalization=norm)
    with pytest.raises(ValueError, match="Unknown ResNet configuration keys"):
        ResNetConfig.from_dict({**config.to_dict(), "evil": 1})


def test_build_network_uses_the_allow_list_only() -> None:
    spec = ResNetConfig("resnet10", 3, 2, width=4).to_dict()
    assert build_network(spec).num_classes == 2
    with pytest.raises(ModelError, match="Unknown network family"):
        build_network({"family": "os.system", "arch": "rm"})
    with pytest.raises(ModelError, match="Invalid resnet"):
        build_network({**spec, "arch": "resnet1000"})


def test_fit_normalization_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    crops = rng.gamma(2.0, 200.0, size=(50, 3, 8, 8)).astype(np.float32)
    crops[0, 0, 0, 0] = 1e6  # a hot pixel, clipped away
    norm = fit_normalization(crops, transform="log1p", clip_percentile=99.0, chunk=7)
    clip = np.percentile(crops.transpose(1, 0, 2, 3).reshape(3, -1), 99.0, axis=1)
    np.testing.assert_allclose(norm.clip, clip, rtol=1e-6)
    ref = np.log1p(np.minimum(crops.astype(np.float64), clip[None, :, None, None]))
    np.testing.assert_allclose(norm.mean, ref.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(norm.std, ref.std(axis=(0, 2, 3)), rtol=1e-9)

    module = ChannelNormalizer(norm)
    out = module(torch.from_numpy(crops)).double().numpy()
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)


def test_linear_normalization_and_constant_channel() -> None:
    crops = np.ones((4, 2, 5, 5), dtype=np.float32)
    crops[:, 1] = np.arange(25, dtype=np.float32).reshape(5, 5)
    norm = fit_normalization(crops, transform="linear", clip_percentile=None)
    assert norm.clip is None and norm.std[0] == 1.0  # constant channel: only centred
    out = ChannelNormalizer(norm)(torch.from_numpy(crops))
    assert torch.allclose(out[:, 0], torch.zeros(1))
    with pytest.raises(ValueError, match="transform"):
        fit_normalization(crops, transform="sqrt")


def test_normalization_is_stored_in_the_model_and_restored() -> None:
    norm = Normalization("log1p", (5.0, 4.0, 3.0), (0.5, 0.6, 0.7), (1000.0, 2000.0, 3000.0))
    model = build_resnet(ResNetConfig("resnet10", 3, 2, width=4, normalization=norm), seed=0)
    state = model.state_dict()
    assert torch.allclose(state["normalizer.mean"], torch.tensor([5.0, 4.0, 3.0]))
    assert torch.allclose(state["normalizer.clip"], torch.tensor([1000.0, 2000.0, 3000.0]))
    stored = model.config.normalization  # read back from the float32 buffers
    assert stored.transform == "log1p" and stored.std == pytest.approx(norm.std)
    assert model.spec()["normalization"]["transform"] == "log1p"
    # A model built with another normalization takes the stored one from the weights.
    other = build_resnet(ResNetConfig("resnet10", 3, 2, width=4), seed=1)
    other.load_state_dict(state)
    restored = other.normalizer.normalization()
    assert restored.mean == pytest.approx(norm.mean) and restored.clip == pytest.approx(norm.clip)
    x = torch.rand(2, 3, 16, 16) * 3000
    model.eval(), other.eval()
    assert torch.allclose(model(x), other(x))


def test_wrong_channel_count_is_a_clear_error() -> None:
    model = build_resnet(ResNetConfig("resnet10", 5, 2, width=4), seed=0)
    with pytest.raises(ValueError, match="expects 5 channels, got an input with 3"):
        model(torch.rand(1, 3, 16, 16))


def test_select_device() -> None:
    assert select_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device(None).type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no usable CUDA"):
            select_device("cuda")


def test_retry_on_oom_halves_the_batch() -> None:
    tried = []

    def work(size: int) -> int:
        tried.append(size)
        if size > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return size

    with pytest.warns(UserWarning, match="retrying with batch size"):
        assert retry_on_oom(work, 100) == 12
    assert tried == [100, 50, 25, 12]

    def never(size: int) -> int:
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError), pytest.warns(UserWarning):
        retry_on_oom(never, 4)

    def bug(size: int) -> int:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        retry_on_oom(bug, 4)  # other errors are not retried


def test_forward_in_batches_survives_an_injected_oom() -> None:
    model = build_resnet(ResNetConfig("resnet10", 3, 4, width=4, stem="small"), seed=0).eval()
    images = np.random.default_rng(0).uniform(0, 500, (37, 3, 12, 12)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images))
    calls = []

    def flaky(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        if len(x) > 10:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return model(x)

    with pytest.warns(UserWarning, match="Out of memory"):
        (out,) = forward_in_batches(flaky, images, batch_size=32)
    assert calls == [32, 16, 8, 8, 8, 8, 5]  # 32 and 16 fail, then batches of 8
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(Cancelled):
        forward_in_batches(model, images, batch_size=8, cancel=lambda: True)
