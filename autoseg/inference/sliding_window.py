"""Sliding-window prediction with Gaussian importance weighting and mirroring TTA.

A network trained on patches sees the patch centre with full context and the borders with
little; weighting every window by a Gaussian (sigma = 1/8 of the patch, nnU-Net's value)
makes the stitched result rely on centres and removes seams. Windows overlap by half a patch by
default, so every voxel is predicted 2^dim times before mirroring.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from autoseg.networks import precision


@dataclass(frozen=True)
class WindowSpec:
    """How one configuration predicts: its patch, dimensionality and 2.5D slice stack."""

    patch_size: tuple[int, ...]  # 2 values for 2D/2.5D networks, 3 for 3D
    num_classes: int
    slices: int = 1  # k neighbouring slices stacked as channels (2.5D); 1 otherwise
    slice_axis: int = 0  # 2D/2.5D on 3D data: the array axis (z=0, y=1, x=2) cut into slices
    overlap: float = 0.5
    mirror: bool = True
    # spatial axes of the network input (0-based) mirrored when ``mirror``; None: all of them
    mirror_axes: tuple[int, ...] | None = None

    @property
    def dim(self) -> int:
        return len(self.patch_size)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spaced window starts covering ``size`` with at least ``overlap`` overlap.

    The first window starts at 0 and the last ends exactly at ``size``, so no window leaves the
    image and every voxel is covered; the step is at most ``patch * (1 - overlap)``.
    """
    if patch >= size:
        return [0]
    max_step = max(1, int(patch * (1 - overlap)))
    n = math.ceil((size - patch) / max_step) + 1
    return [int(round(i * (size - patch) / (n - 1))) for i in range(n)]


@lru_cache(maxsize=8)
def _gaussian_np(patch_size: tuple[int, ...], sigma_scale: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(p, dtype=np.float64) for p in patch_size], indexing="ij")
    g = np.ones(patch_size)
    for grid, p in zip(grids, patch_size):
        sigma = max(p * sigma_scale, 1e-3)
        g *= np.exp(-((grid - (p - 1) / 2) ** 2) / (2 * sigma**2))
    g /= g.max()
    # Never exactly zero: a voxel covered only by window borders must still get a prediction.
    return np.maximum(g, 1e-3).astype(np.float32)


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Separable Gaussian window, 1 at the centre, >= 1e-3 at the corners."""
    return torch.from_numpy(_gaussian_np(tuple(int(p) for p in patch_size), sigma_scale))


def tta_mirror_axes(trained_axes: Sequence[int], dim: int) -> tuple[int, ...]:
    """Spatial axes of a ``dim``-D network input to mirror at test time: those the training
    augmentation mirrored. Augmentation flips volume-view axes (z, y, x); a 2D network sees
    (y, x). A flip the network never saw makes TTA worse, not better: usgra-seg's ultrasound
    model (trained with left-right flips only) lost 0.11 Dice when depth was flipped too."""
    shift = 3 - dim
    return tuple(sorted({int(a) - shift for a in trained_axes if int(a) - shift >= 0}))


def _mirror_sets(
    dim: int, enabled: bool, axes: Sequence[int] | None = None
) -> list[tuple[int, ...]]:
    """Every subset of the mirrored axes, as axes of a (B, C, ...) tensor; [()] without TTA."""
    if not enabled:
        return [()]
    spatial = tuple(2 + a for a in (range(dim) if axes is None else axes))
    return [c for r in range(len(spatial) + 1) for c in itertools.combinations(spatial, r)]


def _entropy(prob: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) over the class axis 1 of (B, K, ...) probabilities."""
    return -(prob * torch.log(prob.clamp_min(1e-30))).sum(dim=1)


def _predict_patch(
    network: nn.Module,
    x: torch.Tensor,
    mirror_sets: list[tuple[int, ...]],
    amp: bool,
    disagreement: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities for a batch of windows, averaged over the mirror set; with
    ``disagreement`` also the mirror views' mutual information (B, ...) in nats: the entropy
    of their mean minus their mean entropy (autoseg.inference.uncertainty)."""
    total = None
    member_entropy = None
    dtype = precision.autocast_dtype(x.device.type, amp)
    for axes in mirror_sets:
        inp = torch.flip(x, axes) if axes else x
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            out = network(inp)
        if isinstance(out, (list, tuple)):
            out = out[0]
        prob = torch.softmax(out.float(), dim=1)
        prob = torch.flip(prob, axes) if axes else prob
        total = prob if total is None else total + prob
        if disagreement:
            h = _entropy(prob)
            member_entropy = h if member_entropy is None else member_entropy + h
    mean = total / len(mirror_sets)
    if not disagreement:
        return mean
    return mean, (_entropy(mean) - member_entropy / len(mirror_sets)).clamp_min(0.0)


def _pad_to(image: torch.Tensor, min_shape: Sequence[int]) -> tuple[torch.Tensor, list[slice]]:
    """Zero-pad the trailing spatial axes symmetrically up to ``min_shape``."""
    spatial = image.shape[1:]
    pads, crop = [], [slice(None)]
    for s, m in zip(spatial[-len(min_shape) :], min_shape):
        total = max(0, m - s)
        before = total // 2
        pads.append((before, total - before))
        crop.append(slice(before, before + s))
    lead = len(spatial) - len(min_shape)
    crop = [slice(None)] * (1 + lead) + crop[1:]
    flat = [v for pair in reversed(pads) for v in pair]
    if any(flat):
        image = torch.nn.functional.pad(image, flat)
    return image, crop


def _windows(shape: Sequence[int], patch: Sequence[int], overlap: float) -> Iterator[tuple]:
    starts = [window_starts(s, p, overlap) for s, p in zip(shape, patch)]
    for corner in itertools.product(*starts):
        yield tuple(slice(c, c + p) for c, p in zip(corner, patch))


WINDOW_BATCH_VOXELS = 2**18  # windows per forward pass: up to this many voxels (CPU overhead)


def window_batch_size(patch_size: Sequence[int], minimum: int = 1, maximum: int = 32) -> int:
    """Windows predicted together: small patches are batched (a 32x32 window alone leaves a
    CPU forward pass mostly overhead); a 24x160x160 window goes alone."""
    per_window = math.prod(int(p) for p in patch_size)
    return max(minimum, min(maximum, WINDOW_BATCH_VOXELS // max(per_window, 1)))


@torch.inference_mode()
def predict_sliding_window(
    network: nn.Module,
    image: torch.Tensor | np.ndarray,
    spec: WindowSpec,
    *,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    amp: bool = True,
    disagreement: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (K, Z, Y, X) for a preprocessed image (C, Z, Y, X), on the CPU.

    ``batch_size`` windows go through the network together (default:
    :func:`window_batch_size`).

    ``disagreement``: also return (Z, Y, X), the mutual information (nats) between the mirror
    views, averaged over the windows with the same Gaussian weights as the probabilities. It is
    taken within each window, so windows that disagree with each other do not count: the
    members are the mirror views only. The probabilities are the same with or without it.

    3D networks slide a 3D window. 2D and 2.5D networks predict every slice along
    ``spec.slice_axis``: a 2.5D network sees slices s-k//2 .. s+k//2 (edges replicated) stacked
    as channels.
    """
    if len(spec.patch_size) == 2 and spec.slice_axis != 0:
        moved = torch.as_tensor(image).movedim(1 + spec.slice_axis, 1)
        flat = replace(spec, slice_axis=0)
        out = predict_sliding_window(
            network,
            moved,
            flat,
            device=device,
            batch_size=batch_size,
            amp=amp,
            disagreement=disagreement,
        )
        if disagreement:
            probs, dis = out
            return (
                probs.movedim(1, 1 + spec.slice_axis).contiguous(),
                dis.movedim(0, spec.slice_axis).contiguous(),
            )
        return out.movedim(1, 1 + spec.slice_axis).contiguous()
    device = torch.device(device)
    if batch_size is None:
        batch_size = window_batch_size(spec.patch_size)
    network = network.to(device).eval()
    x = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image)
    x = x.float()
    if x.ndim != 4:
        raise ValueError(f"expected an image (C, Z, Y, X), got shape {tuple(x.shape)}")
    x, crop = _pad_to(x, spec.patch_size)
    mirror_sets = _mirror_sets(spec.dim, spec.mirror, spec.mirror_axes)
    gauss = gaussian_importance(spec.patch_size).to(device)
    probs = torch.zeros((spec.num_classes, *x.shape[1:]), dtype=torch.float32)
    weight = torch.zeros(x.shape[1:], dtype=torch.float32)
    dis = torch.zeros(x.shape[1:], dtype=torch.float32) if disagreement else None
    gauss_cpu = gauss.cpu()

    def flush(batch: list[tuple[torch.Tensor, tuple]]) -> None:
        inp = torch.stack([b[0] for b in batch]).to(device, non_blocking=True)
        if disagreement:
            out, mi = _predict_patch(network, inp, mirror_sets, amp, disagreement=True)
            mi = (mi * gauss).cpu()
            for (_, where), d in zip(batch, mi):
                dis[where] += d.reshape(dis[where].shape)
        else:
            out = _predict_patch(network, inp, mirror_sets, amp)
        out = out * gauss
        out = out.cpu()
        for (_, where), o in zip(batch, out):
            probs[(slice(None), *where)] += o.reshape(probs[(slice(None), *where)].shape)
            weight[where] += gauss_cpu.reshape(weight[where].shape)

    pending: list[tuple[torch.Tensor, tuple]] = []
    if spec.dim == 3:
        for win in _windows(x.shape[1:], spec.patch_size, spec.overlap):
            pending.append((x[(slice(None), *win)], win))
            if len(pending) == batch_size:
                flush(pending)
                pending = []
    else:
        n_z = x.shape[1]
        half = spec.slices // 2
        for z in range(n_z):
            idx = [min(max(z + o, 0), n_z - 1) for o in range(-half, half + 1)]
            stack = x[:, idx].reshape(-1, *x.shape[2:])  # (C*k, Y, X), channel-major
            for win in _windows(x.shape[2:], spec.patch_size, spec.overlap):
                pending.append((stack[(slice(None), *win)], (slice(z, z + 1), *win)))
                if len(pending) == batch_size:
                    flush(pending)
                    pending = []
    if pending:
        flush(pending)
    probs /= weight.clamp_min(1e-8)
    if disagreement:
        dis /= weight.clamp_min(1e-8)
        return probs[tuple(crop)], dis[tuple(crop[1:])]
    return probs[tuple(crop)]
