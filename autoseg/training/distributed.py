"""Multi-GPU / multi-node training through PyTorch DDP, launched by ``torchrun``.

autoseg does not start processes itself: ``torchrun --nproc_per_node=N -m autoseg train ...
--ddp`` starts them and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; we only join the
group. NCCL on GPUs, gloo on CPU (used by the tests).

Leaving the group has to end its worker threads while Python is still whole. A gloo worker
thread drops its reference to a finished collective's tensors a moment after the caller has
been released; should that moment fall into interpreter shutdown (the worker descheduled on a
busy core), freeing a tensor whose Python object Python has already let go needs the GIL,
which a non-main thread cannot take during shutdown: Python ends the thread with
``pthread_exit``, its unwinding meets a ``noexcept`` destructor, and the process aborts with
"terminate called without an active exception" (core dump: ``runLoop`` ->
``~AsyncAllgatherWork`` -> ``TensorImpl::decref_pyobject`` -> ``take_gil`` ->
``PyThread_exit_thread``). ``destroy_process_group`` ends those threads only when nothing else
holds the group: the caller releases its DDP model first, and :func:`init_distributed`
imports ``torch.distributed.nn`` before the group exists, since that module (which DDP
imports) takes the default group as a default argument value in ten functions and so would
hold it for the rest of the process.
"""

from __future__ import annotations

import gc
import importlib
import os
import warnings

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
        importlib.import_module("torch.distributed.nn")  # before the group (module docstring)

        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def gloo_worker_threads() -> int:
    """Threads of this process that run gloo's collectives (``pt_gloo_*``; 0 off Linux)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    count = 0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8") as f:
                count += f.read().startswith("pt_gloo")
        except OSError:  # the thread ended meanwhile
            pass
    return count


def shutdown_distributed() -> None:
    """Leave the process group and end its worker threads. Call it once the DDP model (the
    trainer) is released; a gloo worker still running afterwards is warned about, since it
    can abort the process at exit (module docstring)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()  # a trainer held only by reference cycles would keep the group alive
    dist.destroy_process_group()
    left = gloo_worker_threads()
    if left:
        warnings.warn(
            f"{left} gloo worker thread(s) still run after leaving the process group: something "
            "(a DistributedDataParallel model?) still holds it, and the process may abort at "
            "exit ('terminate called without an active exception')",
            RuntimeWarning,
            stacklevel=2,
        )
