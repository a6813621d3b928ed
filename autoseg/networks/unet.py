"""The architecture block of the plan and the U-Nets built from it.

Two variants share one decoder:

- ``unet``: plain encoder, stage ``i`` = ``n_blocks_per_stage[i]`` conv-norm-nonlin blocks,
  the first with stride ``strides[i]`` (a strided conv downsamples, no pooling).
- ``resenc_unet``: a conv-norm-nonlin stem, then stage ``i`` = ``n_blocks_per_stage[i]``
  basic residual blocks, the first with stride ``strides[i]``.

Decoder stage ``i`` (i = 0 .. stages-2, the index is the resolution it works at, i.e. the
encoder stage whose skip it consumes) upsamples with a transposed conv (kernel = stride =
``strides[i + 1]``), concatenates the skip of encoder stage ``i`` and applies
``n_conv_per_stage_decoder[i]`` conv-norm-nonlin blocks with ``kernel_sizes[i]``; a 1x1 conv
head gives the logits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from autoseg.networks.blocks import (
    ConvNormNonlin,
    ResidualBlock,
    conv_class,
    init_he,
    transposed_conv_class,
)
from autoseg.networks.registry import NETWORKS, NetworkSpec, register_network

# nnU-Net ResEnc M's residual blocks per encoder stage (1, 3, 4, 6, 6, then 6 per stage).
RESENC_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6)
NORMS = ("instance",)
NONLINS = ("leaky_relu",)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: object) -> int:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def _int_list(name: str, value: object, length: int | None = None) -> tuple[int, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{name}: expected a list of positive integers, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name}: expected {length} entries, got {len(value)} ({list(value)})")
    return tuple(_positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))


def _per_stage(name: str, value: object, stages: int, dim: int) -> tuple[tuple[int, ...], ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{name}: expected a list of {stages} per-stage lists, got {value!r}")
    if len(value) != stages:
        raise ValueError(
            f"{name}: expected {stages} entries (one per stage, like features_per_stage), "
            f"got {len(value)}"
        )
    return tuple(_int_list(f"{name}[{i}]", v, dim) for i, v in enumerate(value))


@dataclass(frozen=True)
class ArchitectureConfig:
    """The plan's ``architecture`` block, validated. Per-axis lists are in array order.

    Construct with :meth:`from_dict`, which checks every field and raises ``ValueError``
    naming the bad one; the constructor itself trusts its arguments.
    """

    network: str
    dim: int
    in_channels: int
    num_classes: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    n_blocks_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    deep_supervision: bool = True
    norm: str = "instance"
    nonlin: str = "leaky_relu"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchitectureConfig:
        if isinstance(data, ArchitectureConfig):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"architecture: expected a dict, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown architecture field (known: {names})")
        optional = ("deep_supervision", "norm", "nonlin")  # have nnU-Net's defaults
        missing = [n for n in names if n not in data and n not in optional]
        if missing:
            raise ValueError(f"{missing[0]}: missing from the architecture block")

        network = data["network"]
        if network not in NETWORKS:
            raise ValueError(f"network: expected one of {NETWORKS.names()}, got {network!r}")
        dim = data["dim"]
        if not _is_int(dim) or dim not in (2, 3):
            raise ValueError(f"dim: expected 2 or 3, got {dim!r}")
        in_channels = _positive_int("in_channels", data["in_channels"])
        num_classes = _positive_int("num_classes", data["num_classes"])
        if num_classes < 2:
            raise ValueError(
                f"num_classes: expected at least 2 (background + one label), got {num_classes}"
            )
        features = _int_list("features_per_stage", data["features_per_stage"])
        stages = len(features)
        if stages < 1:
            raise ValueError("features_per_stage: expected at least one stage")
        kernels = _per_stage("kernel_sizes", data["kernel_sizes"], stages, dim)
        for i, kernel in enumerate(kernels):
            if any(k % 2 == 0 for k in kernel):
                raise ValueError(
                    f"kernel_sizes[{i}]: expected odd sizes (same padding), got {list(kernel)}"
                )
        strides = _per_stage("strides", data["strides"], stages, dim)
        if any(s != 1 for s in strides[0]):
            raise ValueError(
                f"strides[0]: the first stage must keep full resolution (all 1), "
                f"got {list(strides[0])}"
            )
        blocks = _int_list("n_blocks_per_stage", data["n_blocks_per_stage"], stages)
        decoder = _int_list(
            "n_conv_per_stage_decoder", data["n_conv_per_stage_decoder"], stages - 1
        )
        deep_supervision = data.get("deep_supervision", True)
        if not isinstance(deep_supervision, bool):
            raise ValueError(f"deep_supervision: expected true or false, got {deep_supervision!r}")
        norm = data.get("norm", "instance")
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
        nonlin = data.get("nonlin", "leaky_relu")
        if nonlin not in NONLINS:
            raise ValueError(f"nonlin: expected one of {NONLINS}, got {nonlin!r}")
        return cls(
            network=network,
            dim=dim,
            in_channels=in_channels,
            num_classes=num_classes,
            features_per_stage=features,
            kernel_sizes=kernels,
            strides=strides,
            n_blocks_per_stage=blocks,
            n_conv_per_stage_decoder=decoder,
            deep_supervision=deep_supervision,
            norm=norm,
            nonlin=nonlin,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists, not tuples) that :meth:`from_dict` reads back unchanged."""
        return {
            "network": self.network,
            "dim": self.dim,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "features_per_stage": list(self.features_per_stage),
            "kernel_sizes": [list(k) for k in self.kernel_sizes],
            "strides": [list(s) for s in self.strides],
            "n_blocks_per_stage": list(self.n_blocks_per_stage),
            "n_conv_per_stage_decoder": list(self.n_conv_per_stage_decoder),
            "deep_supervision": self.deep_supervision,
            "norm": self.norm,
            "nonlin": self.nonlin,
        }

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def stage_scales(self) -> list[tuple[int, ...]]:
        """Downsampling factor of each encoder stage's output relative to the input, per axis
        (cumulative product of the strides)."""
        scales, current = [], [1] * self.dim
        for stride in self.strides:
            current = [c * s for c, s in zip(current, stride)]
            scales.append(tuple(current))
        return scales

    def required_divisor(self) -> tuple[int, ...]:
        """Each patch axis must be a multiple of this (the total stride) so that every skip
        and its upsampled partner have the same size."""
        return self.stage_scales()[-1]

    def decoder_scales(self) -> list[tuple[int, ...]]:
        """Downsampling factor of each output in train mode, full resolution first: one per
        decoder stage with deep supervision, else only ``(1, ...)``."""
        n_outputs = max(self.n_stages - 1, 1) if self.deep_supervision else 1
        return self.stage_scales()[:n_outputs]

    def check_patch_size(self, patch_size: Sequence[int]) -> None:
        """Raise ValueError when a patch cannot pass through the net (wrong rank, or an axis
        not divisible by :meth:`required_divisor`)."""
        divisor = self.required_divisor()
        if len(patch_size) != self.dim:
            raise ValueError(f"patch size {list(patch_size)} has not {self.dim} axes")
        bad = [i for i, (p, d) in enumerate(zip(patch_size, divisor)) if p < 1 or p % d]
        if bad:
            raise ValueError(
                f"patch size {list(patch_size)}: axis {bad[0]} must be a positive multiple of "
                f"{divisor[bad[0]]} (the total stride {list(divisor)})"
            )


class UNet(nn.Module):
    """U-Net (plain or residual encoder) built from an :class:`ArchitectureConfig`.

    ``forward`` returns, in train mode with deep supervision, a list of logits
    ``[full resolution, next coarser, ...]`` (one per decoder stage, scales given by
    :meth:`decoder_scales`); otherwise a single full-resolution logits tensor.
    """

    def __init__(self, arch: ArchitectureConfig):
        super().__init__()
        self.arch = arch
        a = arch
        feats, kernels, strides = a.features_per_stage, a.kernel_sizes, a.strides
        conv = conv_class(a.dim)

        self.stem: nn.Module = nn.Identity()
        in_ch = a.in_channels
        if a.network == "resenc_unet":
            # A stem lifts the input to stage-0 width, so the first residual block's identity
            # shortcut is meaningful instead of a projection of one raw image channel.
            self.stem = ConvNormNonlin(
                a.dim, in_ch, feats[0], kernels[0], [1] * a.dim, a.norm, a.nonlin
            )
            in_ch = feats[0]

        self.encoder = nn.ModuleList()
        for i in range(a.n_stages):
            blocks: list[nn.Module] = []
            for b in range(a.n_blocks_per_stage[i]):
                stride = strides[i] if b == 0 else [1] * a.dim
                block_cls = ResidualBlock if a.network == "resenc_unet" else ConvNormNonlin
                blocks.append(
                    block_cls(a.dim, in_ch, feats[i], kernels[i], stride, a.norm, a.nonlin)
                )
                in_ch = feats[i]
            self.encoder.append(nn.Sequential(*blocks))

        # Decoder modules indexed by resolution i (0 = full); the forward pass runs i downwards.
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(a.n_stages - 1):
            self.upsample.append(
                transposed_conv_class(a.dim)(
                    feats[i + 1], feats[i], strides[i + 1], stride=strides[i + 1], bias=True
                )
            )
            width, ones = feats[i], [1] * a.dim
            in_widths = [2 * width] + [width] * (a.n_conv_per_stage_decoder[i] - 1)
            convs = [
                ConvNormNonlin(a.dim, w, width, kernels[i], ones, a.norm, a.nonlin)
                for w in in_widths
            ]
            self.decoder.append(nn.Sequential(*convs))
        n_heads = len(a.decoder_scales())
        self.heads = nn.ModuleList(
            conv(feats[i], a.num_classes, 1, bias=True) for i in range(n_heads)
        )
        self.apply(init_he)

    def decoder_scales(self) -> list[tuple[int, ...]]:
        """Per-axis downsampling factor of each train-mode output (see ArchitectureConfig)."""
        return self.arch.decoder_scales()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        a = self.arch
        if x.ndim != a.dim + 2 or x.shape[1] != a.in_channels:
            raise ValueError(
                f"input shape {tuple(x.shape)}: expected (batch, {a.in_channels}, "
                f"{', '.join(['size'] * a.dim)})"
            )
        a.check_patch_size(tuple(x.shape[2:]))
        skips = []
        h = self.stem(x)
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)
        all_outputs = self.training and a.deep_supervision
        outputs: list[torch.Tensor] = []
        for i in reversed(range(a.n_stages - 1)):
            h = self.upsample[i](h)
            h = self.decoder[i](torch.cat((h, skips[i]), dim=1))
            if i == 0 or (all_outputs and i < len(self.heads)):
                outputs.append(self.heads[i](h))
        if a.n_stages == 1:
            outputs.append(self.heads[0](h))
        outputs.reverse()
        return outputs if all_outputs else outputs[0]


def build_network(arch: Mapping[str, Any] | ArchitectureConfig) -> nn.Module:
    """The network described by the plan's architecture block (dict or validated config),
    built by the registered network it names (:mod:`autoseg.networks.registry`)."""
    config = arch if isinstance(arch, ArchitectureConfig) else ArchitectureConfig.from_dict(arch)
    return NETWORKS.get(config.network).build(config)


register_network("unet")(NetworkSpec(UNet, lambda n: [2] * n, lambda n: [2] * (n - 1), "U-Net"))
register_network("resenc_unet")(
    NetworkSpec(
        UNet,
        lambda n: [RESENC_BLOCKS[min(i, len(RESENC_BLOCKS) - 1)] for i in range(n)],
        lambda n: [1] * (n - 1),
        "residual-encoder U-Net",
    )
)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (works on meta-device models too)."""
    return sum(math.prod(p.shape) for p in model.parameters())
