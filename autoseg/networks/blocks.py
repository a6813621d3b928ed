"""Building blocks of the U-Nets: conv-norm-nonlin, residual blocks, He initialisation.

Everything is written for both 2D and 3D: ``dim`` selects ``Conv2d``/``Conv3d`` and the
matching norm; kernel sizes and strides are per-axis tuples in array order ``(z, y, x)`` /
``(y, x)`` so anisotropic kernels such as ``(1, 3, 3)`` work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LEAKY_SLOPE = 0.01
"""LeakyReLU negative slope: nnU-Net's default, also the ``a`` used for He initialisation."""

NORM_EPS = 1e-5


def conv_class(dim: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dim]


def transposed_conv_class(dim: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dim]


def same_padding(kernel_size: Sequence[int]) -> tuple[int, ...]:
    """Padding that keeps the size for odd kernels, so only strides change resolution."""
    return tuple(k // 2 for k in kernel_size)


def make_norm(kind: str, dim: int, channels: int) -> nn.Module:
    """Instance norm with affine parameters.

    Why instance norm: batches are 2 patches, far too few for batch statistics; nnU-Net's
    default (InstanceNorm, affine, eps 1e-5) is used unchanged.
    """
    if kind != "instance":
        raise ValueError(f"norm: unsupported value {kind!r}; expected 'instance'")
    cls = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dim]
    return cls(channels, eps=NORM_EPS, affine=True)


def make_nonlin(kind: str) -> nn.Module:
    """In-place LeakyReLU: in-place saves one activation tensor per block (the norm's backward
    needs its input, not its output, so overwriting the output is safe)."""
    if kind != "leaky_relu":
        raise ValueError(f"nonlin: unsupported value {kind!r}; expected 'leaky_relu'")
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


class ConvNormNonlin(nn.Sequential):
    """conv -> instance norm -> LeakyReLU.

    The conv has no bias: instance norm subtracts the per-channel mean right after, which
    cancels any per-channel constant exactly, so a bias would be a dead parameter.
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        norm: str = "instance",
        nonlin: str = "leaky_relu",
    ):
        conv = conv_class(dim)(
            in_channels,
            out_channels,
            tuple(kernel_size),
            stride=tuple(stride),
            padding=same_padding(kernel_size),
            bias=False,
        )
        super().__init__(conv, make_norm(norm, dim, out_channels), make_nonlin(nonlin))


class ResidualBlock(nn.Module):
    """Basic residual block (He et al. 2016): two convs, identity or projection shortcut.

    ``out = nonlin(norm(conv(nonlin(norm(conv(x))))) + shortcut(x))``. The shortcut is the
    identity when shape is kept, otherwise a 1x1 conv with the block's stride plus norm, so
    the addition sees matching channels and resolution.
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        norm: str = "instance",
        nonlin: str = "leaky_relu",
    ):
        super().__init__()
        conv = conv_class(dim)
        pad = same_padding(kernel_size)
        self.conv1 = ConvNormNonlin(
            dim, in_channels, out_channels, kernel_size, stride, norm, nonlin
        )
        self.conv2 = conv(out_channels, out_channels, tuple(kernel_size), padding=pad, bias=False)
        self.norm2 = make_norm(norm, dim, out_channels)
        self.shortcut: nn.Module
        if in_channels == out_channels and all(s == 1 for s in stride):
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=tuple(stride), bias=False),
                make_norm(norm, dim, out_channels),
            )
        self.nonlin = make_nonlin(nonlin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.norm2(self.conv2(self.conv1(x)))
        return self.nonlin(residual + self.shortcut(x))


def init_he(module: nn.Module) -> None:
    """He (kaiming) normal init for every conv, bias zero.

    ``a = 0.01`` matches the LeakyReLU slope, so the gain is sqrt(2 / (1 + 0.01**2)) and
    activations keep unit variance through the depth of the net at initialisation.
    """
    convs = nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d
    if isinstance(module, convs) and not module.weight.is_meta:  # meta: nothing to fill
        nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
