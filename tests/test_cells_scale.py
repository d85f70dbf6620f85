"""Nucleus size estimated from the DNA channel, and the nuclear-stain channel fallback."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from phenoadapt.cells.scale import estimate_nucleus_diameter
from phenoadapt.cells.segment import find_channel
from phenoadapt.errors import CellsError
from phenoadapt.plate.channels import Channel, ChannelRole, make_channels


def _field(diameter: float, n: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Bright elliptical nuclei of known diameter (some touching), blurred, with noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(n):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = diameter / 2 * rng.uniform(0.9, 1.1)
        image[((yy - cy) / r) ** 2 + ((xx - cx) / (r * rng.uniform(0.85, 1.15))) ** 2 < 1] = (
            rng.uniform(0.6, 1.0)
        )
    image = ndi.gaussian_filter(image, 1.0) + rng.normal(0.05, 0.02, shape)
    return (image * 3000 + 200).astype(np.uint16)


@pytest.mark.parametrize(("diameter", "n"), [(15, 300), (40, 60)])
def test_estimate_within_25_percent_at_two_magnifications(diameter, n):
    estimate = estimate_nucleus_diameter(_field(diameter, n, (512, 512)))
    assert abs(estimate - diameter) / diameter < 0.25


def test_estimate_refuses_empty_field():
    with pytest.raises(CellsError, match="--nucleus-diameter"):
        estimate_nucleus_diameter(np.full((256, 256), 100, np.uint16))


def test_nuclear_stain_name_stands_in_for_dna():
    # Named by the user, with no role guessed from the name: only the fallback finds it.
    channels = [Channel("1", "GFP"), Channel("2", "nuc-405"), Channel("3", "RFP")]
    assert all(c.role is ChannelRole.OTHER for c in channels)
    assert find_channel(channels, "DNA") == 1


def test_missing_nucleus_channel_names_channels_and_flag():
    channels = make_channels(["1", "2"], ["GFP", "RFP"])
    with pytest.raises(CellsError, match="GFP, RFP.*--nucleus-channel"):
        find_channel(channels, "DNA")


def test_known_pixel_size_keeps_debris_out_of_the_estimate():
    """Spots far smaller than any nucleus (2.4 um at 0.3 um/px) are not taken for nuclei."""
    from phenoadapt.cells.scale import DIAMETER_RANGE, search_range

    nuclei = _field(40, 50, (512, 512), seed=1).astype(np.float32)
    debris = _field(8, 400, (512, 512), seed=2).astype(np.float32)
    image = np.maximum(nuclei, debris).astype(np.uint16)
    assert search_range(None) == DIAMETER_RANGE
    assert search_range(0.3) == pytest.approx((4 / 0.3, 40 / 0.3))
    with_size = estimate_nucleus_diameter(image, pixel_size_um=0.3)
    assert abs(with_size - 40) / 40 < 0.25
    without = estimate_nucleus_diameter(image)
    assert abs(without - 40) / 40 > abs(with_size - 40) / 40
