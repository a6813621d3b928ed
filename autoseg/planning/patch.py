"""Patch size and batch size for a GPU memory budget, measured on the real network.

The memory of a candidate comes from an *estimator* ``(architecture, patch, batch) -> GiB``:
by default :func:`network_memory_gb`, which runs one training step of the actual network on
PyTorch's meta device (``autoseg.networks.memory``). Tests inject cheap fakes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autoseg.errors import AutosegError
from autoseg.planning.topology import MIN_FEATURE_MAP, POOL_SPACING_RATIO, Topology, fit_topology

MemoryEstimator = Callable[[dict[str, Any], tuple[int, ...], int], float]
"""(architecture block, patch size, batch size) -> GiB of GPU memory the training step needs."""

# nnU-Net's starting patch: at most 256^3 voxels (3D) / 2048^2 pixels (2D), isotropic in mm.
PATCH_VOXEL_CAP = {2: 2048**2, 3: 256**3}
MIN_BATCH = 2
# One step sees at most 5 % of the dataset's voxels (nnU-Net): larger batches on a small
# dataset repeat the same voxels within a step and train no better than more steps would.
MAX_DATASET_FRACTION_PER_STEP = 0.05
# The smallest network input along the finest axes: one pooling step down to the 4-voxel
# minimum feature map. Images smaller than this are zero-padded to it by the sampler.
MIN_FINE_AXIS = 2 * MIN_FEATURE_MAP


def network_memory_gb(arch: dict[str, Any], patch: tuple[int, ...], batch: int) -> float:
    """GiB the GPU must hold for one AMP training step of the real network (activations,
    weights, gradients, momentum, transients, plus the ~0.5 GiB CUDA context)."""
    from autoseg.networks.memory import estimate_training_memory  # lazy: imports torch

    return float(estimate_training_memory(arch, list(patch), batch, amp=True).device_total_gb)


def extra_optimizer_state_gb(parameters: int, optimizer: str) -> float:
    """GiB an optimizer (the plan's name) needs on top of the estimates, which count SGD's
    momentum buffer.

    The patch and batch are fitted before the schedule decides the optimizer, so a plan that
    trains with AdamW adds its second moment afterwards: 4 bytes per parameter.
    """
    from autoseg.networks.memory import OPTIMIZER_STATE_COPIES, TRAINER_OPTIMIZERS

    copies = OPTIMIZER_STATE_COPIES[TRAINER_OPTIMIZERS[optimizer]]
    return (copies - OPTIMIZER_STATE_COPIES["sgd_momentum"]) * 4 * int(parameters) / 2**30


def approximate_memory_gb(arch: dict[str, Any], patch: tuple[int, ...], batch: int) -> float:
    """A cheap analytic stand-in for :func:`network_memory_gb` (tests, quick what-ifs).

    Per encoder stage: features x voxels x (encoder + decoder convs) x 3 saved tensors (conv,
    norm, activation) x 2 bytes (fp16); weights x 4 copies (fp32 weights, fp16 copy, gradient,
    momentum); plus 0.5 GiB of CUDA context. Grows monotonically with patch and batch, like the
    real estimate, but is not calibrated against it.
    """
    dim = arch["dim"]
    scale = [1] * dim
    activations = 0.0
    params = 0.0
    in_ch = arch["in_channels"]
    n_stages = len(arch["features_per_stage"])
    for s, (feats, stride, kernel) in enumerate(
        zip(arch["features_per_stage"], arch["strides"], arch["kernel_sizes"])
    ):
        scale = [c * st for c, st in zip(scale, stride)]
        voxels = math.prod(p / c for p, c in zip(patch, scale))
        convs = arch["n_blocks_per_stage"][s]
        if s < n_stages - 1:
            convs += arch["n_conv_per_stage_decoder"][s]
        activations += batch * voxels * feats * convs * 3 * 2
        params += (in_ch + convs * feats) * feats * math.prod(kernel)
        in_ch = feats
    return (activations + 4 * 4 * params) / 2**30 + 0.5


def parameter_count(arch: dict[str, Any]) -> int:
    """Number of network parameters (built on the meta device: no memory, milliseconds)."""
    import torch

    from autoseg.networks import build_network, count_parameters

    with torch.device("meta"):
        return int(count_parameters(build_network(arch)))


class CachedEstimator:
    """Memoises an estimator: the patch, batch and low-resolution searches revisit candidates."""

    def __init__(self, estimator: MemoryEstimator):
        self.estimator = estimator
        self.cache: dict[tuple[str, tuple[int, ...], int], float] = {}

    def __call__(self, arch: dict[str, Any], patch: tuple[int, ...], batch: int) -> float:
        key = (json.dumps(arch, sort_keys=True), tuple(patch), int(batch))
        if key not in self.cache:
            self.cache[key] = float(self.estimator(arch, tuple(patch), int(batch)))
        return self.cache[key]


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def fine_axes(spacing: Sequence[float]) -> list[bool]:
    """Axes whose spacing is within 2x of the finest (pooled from the first stage on)."""
    finest = min(spacing)
    return [s / finest < POOL_SPACING_RATIO for s in spacing]


def minimal_patch(median_shape: Sequence[int], spacing: Sequence[float]) -> list[int]:
    """Smallest patch the search may reach: 8 voxels along the finest axes (one pooling step to
    the 4-voxel minimum; padded when the image is smaller), along coarser axes min(image, 8)."""
    fine = fine_axes(spacing)
    return [MIN_FINE_AXIS if f else min(int(m), MIN_FINE_AXIS) for m, f in zip(median_shape, fine)]


def initial_patch(median_shape: Sequence[int], spacing: Sequence[float]) -> tuple[list[int], str]:
    """The median image shape, capped by nnU-Net's starting patch: a box isotropic in mm holding
    256^3 voxels (3D) / 2048^2 pixels (2D); never below :func:`minimal_patch`.

    0.75 x 0.75 x 3 mm, median (40, 256, 256): the cap is (101, 405, 405) -> start (40, 256, 256).
    """
    dim = len(spacing)
    edge_mm = (PATCH_VOXEL_CAP[dim] * math.prod(spacing)) ** (1.0 / dim)
    cap = [int(edge_mm / s + 1e-6) for s in spacing]  # 255.9999 -> 256
    floor = minimal_patch(median_shape, spacing)
    patch = [max(min(int(m), c), f) for m, c, f in zip(median_shape, cap, floor)]
    why = f"start from the median shape {_fmt(median_shape)} capped at {_fmt(cap)}"
    padded = [a for a in range(dim) if patch[a] > median_shape[a]]
    if padded:
        why += f"; axes {padded} padded to the minimal input {MIN_FINE_AXIS}"
    return patch, why


def axis_to_shrink(
    patch: Sequence[int],
    median_shape: Sequence[int],
    spacing: Sequence[float],
    floor: Sequence[int],
) -> int | None:
    """The axis with the largest patch / median-shape ratio (ties: the longer patch side in
    mm) among those still above their floor; None when none is."""
    best, best_key = None, None
    for a, (p, m, s, f) in enumerate(zip(patch, median_shape, spacing, floor)):
        if p <= f:
            continue
        key = (p / max(m, f), p * s)
        if best_key is None or key > best_key:
            best, best_key = a, key
    return best


@dataclass
class PatchFit:
    patch: list[int]
    topology: Topology
    architecture: dict[str, Any]
    memory_gb: float
    why: str


def fit_patch(
    spacing: Sequence[float],
    median_shape: Sequence[int],
    make_architecture: Callable[[Topology], dict[str, Any]],
    estimator: MemoryEstimator,
    budget_gb: float,
) -> PatchFit:
    """The largest patch (by nnU-Net's shrinking order) whose batch-of-2 training step fits.

    Start with :func:`initial_patch`; while the estimated memory of a batch of 2 exceeds the
    budget, shrink the axis with the largest patch / median-shape ratio by its total stride,
    re-derive the topology (fewer poolings on small axes) and round to the new stride. Fails
    with an AutosegError when even :func:`minimal_patch` does not fit.
    """
    patch, why = initial_patch(median_shape, spacing)
    floor = minimal_patch(median_shape, spacing)
    patch, topo = fit_topology(spacing, patch)
    start = list(patch)
    steps = 0
    while True:
        arch = make_architecture(topo)
        memory = estimator(arch, tuple(patch), MIN_BATCH)
        if memory <= budget_gb:
            break
        axis = axis_to_shrink(patch, median_shape, spacing, floor)
        if axis is None:
            raise AutosegError(
                f"a GPU memory budget of {budget_gb:g} GB cannot hold even the smallest patch "
                f"{_fmt(patch)} with batch {MIN_BATCH} (estimated {memory:.2f} GB)",
                fix="give a larger --gpu-memory (at least 2 GB is typical)",
            )
        patch = list(patch)
        patch[axis] = max(patch[axis] - topo.divisor[axis], floor[axis])
        patch, topo = fit_topology(spacing, patch)
        steps += 1
    if steps:
        why += (
            f"; rounded to {_fmt(start)} (total stride), shrunk {steps} times (largest patch/"
            f"median ratio first) to {_fmt(patch)}: {memory:.2f} GB <= {budget_gb:g} GB "
            f"with batch {MIN_BATCH}"
        )
    else:
        why += f"; {_fmt(patch)} (divisible by the total stride) fits: {memory:.2f} GB"
    return PatchFit(list(patch), topo, arch, memory, why)


def batch_size_rule(
    arch: dict[str, Any],
    patch: Sequence[int],
    estimator: MemoryEstimator,
    budget_gb: float,
    dataset_voxels: int,
) -> tuple[int, float, str]:
    """(batch size, its memory in GiB, why).

    At least 2 (instance norm and batch Dice need more than one sample, and the patch search
    guarantees 2 fits); grown while the estimate stays within the budget, but one step covers
    at most 5 % of the dataset's voxels: batch <= 0.05 x dataset voxels / patch voxels.
    Memory grows monotonically with the batch, so the largest fitting batch is found by
    doubling and bisection.
    """
    patch = tuple(int(p) for p in patch)
    limit = max(MIN_BATCH, int(MAX_DATASET_FRACTION_PER_STEP * dataset_voxels / math.prod(patch)))
    fits, fits_mem = MIN_BATCH, estimator(arch, patch, MIN_BATCH)
    too_big = None  # smallest batch known not to fit
    trial = MIN_BATCH * 2
    while trial <= limit:
        mem = estimator(arch, patch, trial)
        if mem > budget_gb:
            too_big = trial
            break
        fits, fits_mem = trial, mem
        trial *= 2
    upper = min(too_big if too_big is not None else limit + 1, limit + 1)
    while upper - fits > 1:
        mid = (fits + upper) // 2
        mem = estimator(arch, patch, mid)
        if mem <= budget_gb:
            fits, fits_mem = mid, mem
        else:
            upper = mid
    bound = (
        f"5 % of the dataset's {dataset_voxels} voxels allows {limit}"
        if fits == limit
        else f"batch {fits + 1} would exceed {budget_gb:g} GB"
    )
    why = f"batch {fits} ({fits_mem:.2f} GB of {budget_gb:g} GB); {bound}"
    if fits == MIN_BATCH and limit == MIN_BATCH:
        why += f" (minimum {MIN_BATCH})"
    return fits, fits_mem, why
