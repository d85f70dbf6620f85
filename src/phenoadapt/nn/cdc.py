r"""Central-difference convolutions and PhenoProfiler's gradient encoder.

A central-difference convolution (CDC; Yu et al., CVPR 2020) convolves the
*differences* between each pixel of the window and the window's centre, mixed
with a plain convolution by a factor :math:`\theta`:

.. math::

    y(p_0) = \sum_{k} w_k\, x(p_0 + p_k) \;-\; \theta\, x(p_0) \sum_k w_k
           = \sum_k w_k \,\big(x(p_0 + p_k) - \theta\, x(p_0)\big).

With :math:`\theta = 1` the filter only sees local gradients (a flat region gives
zero whatever its brightness); with :math:`\theta = 0` it is an ordinary
convolution.  The second term is a 1 x 1 convolution with the summed kernel,
so a CDC costs one extra cheap convolution.

PhenoProfiler puts a *gradient encoder* in front of its ResNet: two CDC
branches (3 x 3, stride 2, :math:`\theta` = 0.7 and 0.3) from the image
channels to 3 channels, each followed by batch norm and ReLU6, concatenated and
fused by a 1 x 1 convolution + batch norm + ReLU6 to 3 channels.  It halves the
resolution and stresses edges (membranes, nuclear envelopes, fibres) before the
backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CentralDifferenceConv2d(nn.Module):
    r"""2-D central-difference convolution ``y = conv(x, W) - theta * x * sum(W)``.

    Parameters
    ----------
    in_channels, out_channels
        Channels of input and output.
    kernel_size
        Odd side of the square kernel; the padding is ``kernel_size // 2`` so that
        the window's centre is the pixel the difference is taken against.
    stride
        Stride of both terms.
    theta
        Weight of the central-difference term, in [0, 1].
    bias
        Add a learnable bias (once, after both terms).  Off by default: a batch
        norm follows in the gradient encoder.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        theta: float = 0.7,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must lie in [0, 1], got {theta}.")
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride,
            padding=kernel_size // 2, bias=False,
        )  # fmt: skip
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.theta = float(theta)

    @property
    def weight(self) -> torch.Tensor:
        """The kernel ``W`` of shape ``(out, in, k, k)``."""
        return self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.theta:
            # x(p0) * sum_k w_k is a 1x1 convolution with the summed kernel, taken
            # at the window centres: same stride, no padding.
            summed = self.conv.weight.sum(dim=(2, 3), keepdim=True)
            out = out - self.theta * F.conv2d(x, summed, stride=self.conv.stride)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return f"theta={self.theta}"


def _cdc_bn_relu6(in_channels: int, out_channels: int, theta: float) -> nn.Sequential:
    return nn.Sequential(
        CentralDifferenceConv2d(in_channels, out_channels, 3, stride=2, theta=theta),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class GradientEncoder(nn.Module):
    """PhenoProfiler's gradient encoder: parallel CDC branches fused to a few channels.

    ``(n, in_channels, h, w)`` -> ``(n, out_channels, ceil(h / 2), ceil(w / 2))``.

    Parameters
    ----------
    in_channels
        Image channels (5 for Cell Painting; any number works).
    out_channels
        Channels of every branch and of the output (3 in the paper, the input of
        an ImageNet ResNet).
    thetas
        One CDC branch per value (0.7 and 0.3 in the paper).
    """

    def __init__(
        self, in_channels: int, out_channels: int = 3, thetas: Sequence[float] = (0.7, 0.3)
    ) -> None:
        super().__init__()
        if not thetas:
            raise ValueError("The gradient encoder needs at least one theta (one branch).")
        self.branches = nn.ModuleList(_cdc_bn_relu6(in_channels, out_channels, t) for t in thetas)
        self.fuse = nn.Sequential(
            nn.Conv2d(out_channels * len(thetas), out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))
