"""Multi-GPU / multi-node training through PyTorch DDP, launched by ``torchrun``.

autoseg does not start processes itself: ``torchrun --nproc_per_node=N -m autoseg train ...
--ddp`` starts them and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; we only join the
group. NCCL on GPUs, gloo on CPU (used by the tests).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from autoseg.errors import AutosegError


def init_distributed(device_type: str = "auto") -> tuple[int, int]:
    """Join the process group started by torchrun; return (rank, world_size)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise AutosegError(
            "--ddp needs to be started by torchrun (RANK/WORLD_SIZE are not set)",
            fix="run: torchrun --nproc_per_node=<GPUs> -m autoseg train ... --ddp",
        )
    if device_type == "auto":
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
