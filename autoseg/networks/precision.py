"""Reduced precision for the networks: which dtype ``torch.autocast`` runs in, per device.

Training and inference share one rule so that a model is validated in the precision it was
trained in, and so that the budget planner times the step the trainer will run.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX-BF16)."""
    try:
        caps = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # older torch, or a CPU torch cannot read
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def autocast_dtype(device_type: str, amp: bool = True) -> torch.dtype | None:
    """The reduced precision the networks run in: float16 on a GPU (nnU-Net's AMP, with a
    gradient scaler in training); bfloat16 on a CPU that has it in hardware, where a 2D
    U-Net's forward pass is ~2.4x faster than in float32 (documentation/prediction.md,
    "Precision") and a training step 1.4-1.9x (documentation/training.md, "Precision");
    None (float32) elsewhere — emulated bfloat16 is no faster — or when ``amp`` is off
    (``--fp32``)."""
    if not amp:
        return None
    if device_type == "cuda":
        return torch.float16
    if device_type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def memory_format(spatial_dims: int, channels_last: bool) -> torch.memory_format:
    """The tensor layout a network runs in: channels last (NHWC / NDHWC) or PyTorch's default.

    Channels last lets oneDNN run convolutions without reordering; on this CPU it made the
    bfloat16 step of a narrow 2D U-Net (8-128 features, 192 x 256, batch 2) 1.19x faster but a
    16-256 one 1.2x slower, so the budget planner times both and the plan records the faster
    (``schedule.channels_last``)."""
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
