"""GPU memory of one training step, computed from the real network on the meta device.

The planner picks batch and patch size against a memory budget, so the number has to follow
the actual architecture (widths, strides, deep supervision, residual blocks), not a constant
fitted to one net. :func:`estimate_training_memory` builds the network on PyTorch's ``meta``
device (shapes and dtypes, no data, no memory) and *runs* one training step on it:

1. forward pass + an nnU-Net-style Dice + cross-entropy loss on every deep-supervision output,
   inside ``torch.autograd.graph.saved_tensors_hooks`` that record each tensor autograd keeps
   for backward (the activations);
2. ``loss.backward()``;
3. throughout both, a ``TorchDispatchMode`` sees every tensor any ATen op creates, adds its
   storage's bytes to a live counter and subtracts them when the storage is freed, so the
   peak of the counter is the step's peak of tensor memory, transients included.

Storage identity on meta. ``data_ptr()`` is 0 for every meta tensor, so it cannot tell
storages apart. Instead the key is the address of the C++ ``StorageImpl``
(``untyped_storage()._cdata``): all views of one tensor share it and distinct live storages
never do. An address can be reused only after its storage is freed, and the tracker drops the
key at that moment (a ``weakref.finalize`` on the storage's Python object, which PyTorch keeps
alive exactly as long as the C++ storage), so a reused address is counted as the new storage
it is. This is cheaper than ``FakeTensorMode`` (no fake-tensor bookkeeping) and exact.

AMP. ``torch.autocast("cuda")`` disables itself without CUDA, and meta tensors do not carry
the CUDA autocast dispatch key anyway, so its policy is emulated with a ``TorchFunctionMode``
that sits above autograd exactly like autocast does: convolutions (and matmul-like ops)
get fp16 copies of their float32 arguments (parameter copies cached as autocast caches them),
every other op runs in the dtype it receives. That reproduces CUDA autocast for this network:
activations are fp16, instance norm runs on fp16 input with fp32 affine weights (it is not on
autocast's fp32 list), the fp16 weight copies are saved for backward, and the loss computes
softmax/log-softmax in fp32 (which autocast enforces, and the reference loss asks for).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from autoseg.networks.unet import ArchitectureConfig, UNet

GIB = 2**30

LossFn = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]
"""``loss_fn(outputs, targets)``: outputs full resolution first, one int64 label map each."""

CUDA_CONTEXT_BYTES = 512 * 2**20
"""CUDA context + cuBLAS/cuDNN handles: ~0.3-0.6 GiB on recent GPUs with lazy module loading
(CUDA 12). It never shows in ``torch.cuda.max_memory_allocated`` but does occupy the card,
so it is reported separately as ``reserved_overhead_bytes`` and not included in ``total``."""

OPTIMIZER_STATE_COPIES = {"sgd": 0, "sgd_momentum": 1, "adam": 2, "adamw": 2}
"""fp32 copies of the parameters each optimizer keeps: SGD momentum buffer = 1, Adam = 2."""

TRAINER_OPTIMIZERS = {"sgd": "sgd_momentum", "adamw": "adamw"}
"""The trainer's (and plan's) optimizer names by this module's: its SGD keeps momentum."""

TARGET_DTYPE = torch.int64
"""Label maps as ``F.cross_entropy`` needs them; one per deep-supervision scale."""

_LOWER_PRECISION_OPS = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "convolution",
        "linear",
        "matmul",
        "mm",
        "bmm",
        "addmm",
        "baddbmm",
        "einsum",
    }
)
"""Ops that CUDA autocast runs in fp16 (from its lower_precision_fp list) that a U-Net uses."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of GPU memory of one training step at its peak; ``total`` is their sum.

    - ``parameters``: fp32 weights.
    - ``gradients``: fp32 gradients, counted as alive for the whole step (an upper bound:
      with ``zero_grad(set_to_none=True)`` they appear during backward).
    - ``optimizer_state``: momentum / Adam moments, fp32.
    - ``activations``: tensors saved for backward at the end of the forward pass (network
      and loss), deduplicated by storage, excluding parameters and the input batch.
    - ``input_target``: the input batch (fp32), the label map per deep-supervision scale and
      the logits the caller holds until backward.
    - ``peak_transient``: the rest of the simulated peak: gradient tensors in flight during
      backward and each op's output while its inputs are still alive.
    - ``reserved_overhead``: CUDA context, outside ``max_memory_allocated``; NOT in ``total``.
    """

    parameters_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int
    activations_bytes: int
    input_target_bytes: int
    peak_transient_bytes: int
    reserved_overhead_bytes: int = CUDA_CONTEXT_BYTES

    @property
    def total_bytes(self) -> int:
        """What ``torch.cuda.max_memory_allocated`` should read for one training step."""
        return (
            self.parameters_bytes
            + self.gradients_bytes
            + self.optimizer_state_bytes
            + self.activations_bytes
            + self.input_target_bytes
            + self.peak_transient_bytes
        )

    @property
    def total_gb(self) -> float:
        """``total_bytes`` in GiB (2**30 bytes)."""
        return self.total_bytes / GIB

    @property
    def device_total_gb(self) -> float:
        """``total`` plus the CUDA context: what the card must hold, in GiB."""
        return (self.total_bytes + self.reserved_overhead_bytes) / GIB

    def to_dict(self) -> dict[str, int | float]:
        return {**asdict(self), "total_bytes": self.total_bytes, "total_gb": self.total_gb}


def reference_loss(
    outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Soft Dice + cross-entropy per deep-supervision output, weights 1, 1/2, 1/4, ...

    It stands in for the trainer's loss with the same memory behaviour as nnU-Net's: fp32
    log-softmax (saved by cross-entropy) and fp32 softmax (saved by Dice), a boolean one-hot
    target saved by the Dice product, and int64 label maps.
    """
    total = outputs[0].new_zeros((), dtype=torch.float32)
    for i, (logits, target) in enumerate(zip(outputs, targets)):
        axes = tuple(range(2, logits.ndim))
        ce = F.nll_loss(torch.log_softmax(logits, 1, dtype=torch.float32), target)
        probs = torch.softmax(logits, 1, dtype=torch.float32)
        with torch.no_grad():
            onehot = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device)
            onehot.scatter_(1, target.unsqueeze(1), True)
        intersect = (probs * onehot).sum(axes)
        denominator = probs.sum(axes) + onehot.sum(axes)
        dice = ((2 * intersect + 1e-5) / (denominator + 1e-5)).mean()
        total = total + (ce + 1 - dice) / 2**i
    return total


def storage_key(tensor: torch.Tensor) -> int:
    """Identity of the tensor's storage, valid on meta too (address of the StorageImpl)."""
    return tensor.untyped_storage()._cdata


class _StorageTracker(TorchDispatchMode):
    """Live bytes of every storage created by an ATen op while active, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0
        self._finalizers: list[weakref.finalize] = []

    def add(self, tensor: torch.Tensor) -> int:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self.sizes:
            nbytes = storage.nbytes()
            self.sizes[key] = nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            finalizer = weakref.finalize(storage, self._release, key)
            finalizer.atexit = False
            self._finalizers.append(finalizer)
        return key

    def _release(self, key: int) -> None:
        self.live -= self.sizes.pop(key)

    def close(self) -> None:
        for finalizer in self._finalizers:
            finalizer.detach()
        self._finalizers.clear()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.add(leaf)
        return out


class _CudaAutocastEmulation(TorchFunctionMode):
    """CUDA autocast's fp16 policy, usable on meta tensors on a CPU-only machine."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[int, torch.Tensor] = {}

    def _half(self, value: object) -> object:
        if not isinstance(value, torch.Tensor) or value.dtype != torch.float32:
            return value
        if value.is_leaf and value.requires_grad:  # autocast caches parameter casts
            if id(value) not in self._cache:
                self._cache[id(value)] = value.to(torch.float16)
            return self._cache[id(value)]
        return value.to(torch.float16)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in _LOWER_PRECISION_OPS:
            args, kwargs = pytree.tree_map(self._half, (args, kwargs))
        return func(*args, **kwargs)


@functools.lru_cache(maxsize=8)
def _meta_network(arch: ArchitectureConfig) -> UNet:
    """The network on the meta device, built once per architecture (the planner loops over
    patch sizes with one architecture)."""
    from autoseg.networks.registry import NETWORKS

    with torch.device("meta"):
        net = NETWORKS.get(arch.network).build(arch)
    return net.train()


def estimate_training_memory(
    arch: Mapping[str, Any] | ArchitectureConfig,
    patch_size: Sequence[int],
    batch_size: int,
    *,
    amp: bool = True,
    optimizer: str = "sgd_momentum",
    loss_fn: LossFn | None = None,
) -> MemoryEstimate:
    """Peak GPU memory of one training step (forward, loss, backward) in bytes, by category.

    ``patch_size`` is in array order and must be divisible by the architecture's total
    stride; ``loss_fn(outputs, targets)`` defaults to :func:`reference_loss`. Takes ~0.1-0.2 s
    for a 5-stage 3D net, ~0.5 s for a 100M-parameter residual one, plus 1-2 s once per
    process while PyTorch imports its Python meta kernels; repeated questions come from a
    cache. Raises ``ValueError`` for a patch the net cannot take, a bad batch size or an
    unknown optimizer.
    """
    config = ArchitectureConfig.from_dict(arch)
    patch = tuple(int(p) for p in patch_size)
    config.check_patch_size(patch)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if optimizer not in OPTIMIZER_STATE_COPIES:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZER_STATE_COPIES)}")
    if loss_fn is None:  # the planner revisits candidates: answer repeats from a cache
        return _estimate_cached(config, patch, batch_size, amp, optimizer)
    return _estimate(config, patch, batch_size, amp, optimizer, loss_fn)


@functools.lru_cache(maxsize=1024)
def _estimate_cached(
    config: ArchitectureConfig, patch: tuple[int, ...], batch: int, amp: bool, optimizer: str
) -> MemoryEstimate:
    return _estimate(config, patch, batch, amp, optimizer, None)


def _estimate(
    config: ArchitectureConfig,
    patch: tuple[int, ...],
    batch_size: int,
    amp: bool,
    optimizer: str,
    loss_fn: LossFn | None,
) -> MemoryEstimate:
    net = _meta_network(config)
    params = list(net.parameters())
    param_bytes = sum(math.prod(p.shape) * p.element_size() for p in params)
    try:
        for p in params:  # pre-existing gradients: allocated outside the tracked step
            p.grad = torch.zeros_like(p)
        activations, held, peak = _simulate_step(net, config, patch, batch_size, amp, loss_fn)
    finally:
        for p in params:
            p.grad = None
    return MemoryEstimate(
        parameters_bytes=param_bytes,
        gradients_bytes=param_bytes,
        optimizer_state_bytes=OPTIMIZER_STATE_COPIES[optimizer] * param_bytes,
        activations_bytes=activations,
        input_target_bytes=held,
        peak_transient_bytes=max(peak - activations - held, 0),
    )


def _simulate_step(
    net: nn.Module,
    config: ArchitectureConfig,
    patch: tuple[int, ...],
    batch: int,
    amp: bool,
    loss_fn: LossFn | None,
) -> tuple[int, int, int]:
    """Run forward + loss + backward on meta; return (activations, held, peak) bytes."""
    param_keys = {storage_key(p) for p in net.parameters()}
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    tracker = _StorageTracker()
    try:
        with tracker:
            x = torch.empty((batch, config.in_channels, *patch), device="meta")
            targets = [
                torch.empty(
                    (batch, *(p // s for p, s in zip(patch, scale))),
                    dtype=TARGET_DTYPE,
                    device="meta",
                )
                for scale in config.decoder_scales()
            ]
            amp_mode = _CudaAutocastEmulation() if amp else None
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                if amp_mode is not None:
                    with amp_mode:
                        outputs = net(x)
                else:
                    outputs = net(x)
                if isinstance(outputs, torch.Tensor):
                    outputs = [outputs]
                loss = (loss_fn or reference_loss)(outputs, targets)
            held_keys = {storage_key(t) for t in (x, *targets, *outputs)}
            saved_keys = {storage_key(t) for t in saved} - param_keys - held_keys
            activations = sum(tracker.sizes.get(k, 0) for k in saved_keys)
            held = sum(tracker.sizes.get(k, 0) for k in held_keys)
            saved.clear()  # the graph alone keeps them now, as in real training
            del amp_mode
            loss.backward()
            peak = tracker.peak
    finally:
        tracker.close()
    return activations, held, peak
