"""Network topology from spacing and patch size: pooling per axis, kernels, stages, features.

The rule (nnU-Net's, re-derived):

- Stage 0 works at full resolution. Going from one stage to the next, an axis is pooled
  (stride 2) only if its current spacing is less than 2x the finest current spacing and its
  feature map is at least 8 voxels (so that it never drops below 4). A thick axis (3 mm slices
  next to 0.75 mm pixels) is therefore not pooled until in-plane pooling has brought the
  in-plane spacing within 2x of it: 0.75 -> 1.5 -> 3.0 mm, then all axes pool together.
- Kernels are 3 along axes whose current spacing is less than 2x the finest, 1 along axes that
  are still too coarse: a 3-wide kernel across 3 mm slices mixes tissue 6 mm apart while the
  in-plane kernel spans 1.5 mm.
- Pooling stops when no axis may be pooled, or at 8 stages (2D 512 x 512 -> 4 x 4).
- The patch must be a multiple of the total stride per axis; it is rounded down (it must fit
  the image), and an axis that would lose more than 10 % to rounding is pooled once less.
- Features: 32 at stage 0, doubling per stage, capped at 320 (3D) / 512 (2D) to bound memory
  and parameters at the coarse stages (nnU-Net's numbers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autoseg.networks.registry import NETWORKS

MIN_FEATURE_MAP = 4
POOL_SPACING_RATIO = 2.0
MAX_STAGES = 8
BASE_FEATURES = 32
MAX_FEATURES = {2: 512, 3: 320}
# Rounding a patch axis down to the total stride may cost at most 10 % of it (else pool less).
MAX_ROUNDING_LOSS = 0.10


@dataclass(frozen=True)
class Topology:
    """Per-stage strides and kernel sizes (stage 0 has stride 1 everywhere)."""

    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Total stride per axis: every patch axis must be a multiple of it."""
        dim = len(self.strides[0])
        return tuple(math.prod(s[a] for s in self.strides) for a in range(dim))

    @property
    def pools_per_axis(self) -> tuple[int, ...]:
        return tuple(int(round(math.log2(d))) for d in self.divisor)


def pooling_topology(
    spacing: Sequence[float], patch: Sequence[int], max_pools: Sequence[int | None] | None = None
) -> Topology:
    """Strides and kernels for a patch at a spacing (see the module docstring for the rule).

    (3.0, 0.75, 0.75) mm, patch (40, 256, 256): stages at (3, .75, .75) kernel [1,3,3] ->
    (3, 1.5, 1.5) kernel [1,3,3] -> (3, 3, 3) kernel [3,3,3] -> ... z is pooled from the third
    pooling on, until its feature map reaches 5 (< 8: no further pooling).
    ``max_pools`` optionally caps the poolings per axis (None = no cap).
    """
    dim = len(spacing)
    caps = list(max_pools) if max_pools is not None else [None] * dim
    pools = [0] * dim
    current = [float(s) for s in spacing]
    size = [float(p) for p in patch]
    strides: list[tuple[int, ...]] = [(1,) * dim]
    kernels: list[tuple[int, ...]] = []
    while True:
        finest = min(current)
        fine = [s / finest < POOL_SPACING_RATIO for s in current]
        kernels.append(tuple(3 if f else 1 for f in fine))
        if len(strides) >= MAX_STAGES:
            break
        pool = [
            fine[a] and size[a] >= 2 * MIN_FEATURE_MAP and (caps[a] is None or pools[a] < caps[a])
            for a in range(dim)
        ]
        if not any(pool):
            break
        strides.append(tuple(2 if p else 1 for p in pool))
        for a in range(dim):
            if pool[a]:
                current[a] *= 2
                size[a] /= 2
                pools[a] += 1
    return Topology(strides=tuple(strides), kernel_sizes=tuple(kernels))


def round_down(patch: Sequence[int], divisor: Sequence[int]) -> list[int]:
    """Each axis rounded down to a multiple of its divisor (never below the divisor)."""
    return [max(d, (p // d) * d) for p, d in zip(patch, divisor)]


def fit_topology(spacing: Sequence[float], patch: Sequence[int]) -> tuple[list[int], Topology]:
    """A patch no larger than ``patch`` that is divisible by its own topology's total stride.

    Each axis is rounded down to its total stride; when that would cut more than 10 % of the
    axis (606 pixels with 7 poolings -> 512), the axis is pooled once less instead (-> 576).
    Rounding down can only remove pooling steps, so this reaches a fixed point in a few rounds.
    """
    current = [int(p) for p in patch]
    caps: list[int | None] = [None] * len(current)
    for _ in range(64):
        topo = pooling_topology(spacing, current, caps)
        rounded = round_down(current, topo.divisor)
        pools = topo.pools_per_axis
        lossy = [
            a
            for a in range(len(current))
            if rounded[a] < (1 - MAX_ROUNDING_LOSS) * current[a] and pools[a] > 0
        ]
        if lossy:
            for a in lossy:
                caps[a] = pools[a] - 1
            continue
        if rounded == current:
            return current, topo
        current = rounded
    raise AssertionError(f"no divisible patch found for {list(patch)} at {list(spacing)}")


def features_per_stage(n_stages: int, dim: int) -> list[int]:
    """32, 64, 128, ... capped at 320 (3D) / 512 (2D)."""
    return [min(BASE_FEATURES * 2**s, MAX_FEATURES[dim]) for s in range(n_stages)]


def total_stride(architecture: dict[str, Any]) -> list[int]:
    """An architecture block's total downsampling per axis (the product of its stage strides):
    what a patch axis must be a multiple of (:attr:`Topology.divisor` of a block)."""
    strides = architecture["strides"]
    return [math.prod(int(s[a]) for s in strides) for a in range(len(strides[0]))]


def architecture_block(
    topology: Topology, *, network: str, in_channels: int, num_classes: int
) -> dict[str, Any]:
    """The plan's architecture block (autoseg.networks.build_network reads it).

    ``unet``: 2 conv blocks per encoder and decoder stage (nnU-Net's plain U-Net).
    ``resenc_unet``: residual encoder with 1, 3, 4, 6, 6, ... blocks per stage and 1 conv
    per decoder stage (nnU-Net ResEnc M). Deep supervision when there are >= 3 stages (with
    fewer there is no coarser decoder output to supervise).
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS.names()}, got {network!r}")
    spec = NETWORKS.get(network)
    n = topology.n_stages
    dim = len(topology.strides[0])
    blocks, decoder = spec.encoder_blocks(n), spec.decoder_convs(n)
    return {
        "network": network,
        "dim": dim,
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "features_per_stage": features_per_stage(n, dim),
        "kernel_sizes": [list(k) for k in topology.kernel_sizes],
        "strides": [list(s) for s in topology.strides],
        "n_blocks_per_stage": blocks,
        "n_conv_per_stage_decoder": decoder,
        "deep_supervision": n >= 3,
        "norm": "instance",
        "nonlin": "leaky_relu",
    }
