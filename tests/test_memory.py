"""The meta-device memory estimate against real measurements with real tensors.

On CPU two independent measurements are available: the storages autograd really saves
(``saved_tensors_hooks`` on real tensors, deduplicated by ``data_ptr``) and the CPU
allocator's running total recorded by the profiler. The estimate must match both. The CUDA
comparison (``max_memory_allocated`` with AMP) is the ``gpu`` test at the end.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from autoseg.networks import build_network, estimate_training_memory
from autoseg.networks.memory import (
    CUDA_CONTEXT_BYTES,
    OPTIMIZER_STATE_COPIES,
    MemoryEstimate,
    reference_loss,
    storage_key,
)

pytestmark = pytest.mark.usefixtures("one_thread_module")  # tests/conftest.py


def arch_3d(**changes: object) -> dict:
    arch = {
        "network": "unet",
        "dim": 3,
        "in_channels": 1,
        "num_classes": 2,
        "features_per_stage": [8, 16, 32],
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "n_blocks_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2],
        "deep_supervision": True,
    }
    arch.update(changes)
    return arch


def arch_2d(**changes: object) -> dict:
    arch = {
        "network": "unet",
        "dim": 2,
        "in_channels": 3,
        "num_classes": 3,
        "features_per_stage": [8, 16, 32, 32],
        "kernel_sizes": [[3, 3]] * 4,
        "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
        "n_blocks_per_stage": [2, 2, 2, 2],
        "n_conv_per_stage_decoder": [1, 2, 2],
        "deep_supervision": True,
    }
    arch.update(changes)
    return arch


PATCH_3D = (4, 40, 40)
PATCH_2D = (64, 48)


def _batch(net, arch: dict, patch, batch: int, device: str = "cpu"):
    x = torch.randn(batch, arch["in_channels"], *patch, device=device)
    targets = [
        torch.randint(
            0, arch["num_classes"], (batch, *(p // s for p, s in zip(patch, scale))), device=device
        )
        for scale in net.decoder_scales()
    ]
    return x, targets


def measure_saved_bytes(arch: dict, patch, batch: int, autocast_dtype=None) -> int:
    """Bytes autograd really saves for backward on CPU (network + reference loss), each
    storage once, without parameters, input, targets and logits (counted elsewhere)."""
    torch.manual_seed(0)
    net = build_network(arch).train()
    x, targets = _batch(net, arch, patch, batch)
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    autocast = (
        torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    )
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with autocast:
            outputs = net(x)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        loss = reference_loss(outputs, targets)
    excluded = {p.untyped_storage().data_ptr() for p in net.parameters()}
    excluded |= {t.untyped_storage().data_ptr() for t in (x, *targets, *outputs)}
    del loss
    return sum(n for ptr, n in saved.items() if ptr not in excluded)


CONFIGS = [
    pytest.param(arch_3d(), PATCH_3D, id="3d-unet-ds"),
    pytest.param(arch_3d(deep_supervision=False), PATCH_3D, id="3d-unet-nods"),
    pytest.param(arch_3d(network="resenc_unet"), PATCH_3D, id="3d-resenc-ds"),
    pytest.param(arch_2d(), PATCH_2D, id="2d-unet-ds"),
    pytest.param(arch_2d(network="resenc_unet", deep_supervision=False), PATCH_2D, id="2d-res"),
]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(("arch", "patch"), CONFIGS)
def test_saved_activations_match_real_cpu_fp32(arch, patch, batch):
    estimate = estimate_training_memory(arch, patch, batch, amp=False)
    real = measure_saved_bytes(arch, patch, batch)
    assert estimate.activations_bytes == pytest.approx(real, rel=0.02)


@pytest.mark.parametrize(("arch", "patch"), CONFIGS[:4])
def test_amp_emulation_matches_real_cpu_autocast(arch, patch):
    """CPU autocast in bfloat16 follows the same policy for these ops as CUDA autocast in
    fp16 (convs in 16 bit, norm on 16-bit input with fp32 weights, fp32 softmax) and both
    are 2 bytes wide, so the saved bytes must agree."""
    estimate = estimate_training_memory(arch, patch, 2, amp=True)
    real = measure_saved_bytes(arch, patch, 2, autocast_dtype=torch.bfloat16)
    assert estimate.activations_bytes == pytest.approx(real, rel=0.02)
    fp32 = estimate_training_memory(arch, patch, 2, amp=False)
    assert 0.4 < estimate.activations_bytes / fp32.activations_bytes < 0.65


def _walk(nodes):
    for node in nodes:
        yield node
        yield from _walk(node.children)


def measure_cpu_step_peak(arch: dict, patch, batch: int) -> int:
    """Peak of the CPU allocator's live bytes over forward + loss + backward (profiler),
    plus the batch that exists before; gradients pre-allocated like the estimate assumes."""
    profiler_types = pytest.importorskip("torch._C._profiler")
    torch.manual_seed(0)
    net = build_network(arch).train()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    x, targets = _batch(net, arch, patch, batch)
    before = sum(t.untyped_storage().nbytes() for t in (x, *targets))
    activities = [torch.profiler.ProfilerActivity.CPU]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # multi-threaded CPU kernels add per-thread scratch buffers
    try:
        with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
            outputs = net(x)
            outputs = outputs if isinstance(outputs, list) else [outputs]
            reference_loss(outputs, targets).backward()
            del outputs
    finally:
        torch.set_num_threads(threads)
    events = prof.profiler.kineto_results.experimental_event_tree()
    allocations = [n for n in _walk(events) if n.tag == profiler_types._EventType.Allocation]
    allocations.sort(key=lambda n: n.start_time_ns)
    live = peak = 0
    for node in allocations:
        live += node.extra_fields.alloc_size
        peak = max(peak, live)
    return before + peak


@pytest.mark.parametrize(
    ("arch", "patch", "tolerance"),
    [
        pytest.param(arch_3d(), PATCH_3D, 0.02, id="3d-unet"),
        pytest.param(arch_3d(network="resenc_unet"), PATCH_3D, 0.02, id="3d-resenc"),
        # CPU conv2d (oneDNN) allocates a small workspace the meta kernels do not: ~5 %.
        pytest.param(arch_2d(), PATCH_2D, 0.08, id="2d-unet"),
    ],
)
def test_simulated_step_peak_matches_cpu_allocator_peak(arch, patch, tolerance):
    estimate = estimate_training_memory(arch, patch, 2, amp=False)
    step_peak = (
        estimate.activations_bytes + estimate.input_target_bytes + estimate.peak_transient_bytes
    )
    real = measure_cpu_step_peak(arch, patch, 2)
    assert step_peak == pytest.approx(real, rel=tolerance)
    assert step_peak <= real * 1.02  # what is missed is kernel workspace, never extra


def test_activations_scale_linearly_with_batch_and_patch_volume():
    arch = arch_3d()
    # fp32: no fp16 weight copies, whose fixed size would blur the ratio at this tiny patch.
    one = estimate_training_memory(arch, PATCH_3D, 1, amp=False)
    two = estimate_training_memory(arch, PATCH_3D, 2, amp=False)
    double_patch = estimate_training_memory(arch, (8, 40, 40), 1, amp=False)
    assert two.activations_bytes / one.activations_bytes == pytest.approx(2.0, rel=0.01)
    assert double_patch.activations_bytes / one.activations_bytes == pytest.approx(2.0, rel=0.01)
    assert two.parameters_bytes == one.parameters_bytes


def test_estimate_follows_the_architecture():
    base = estimate_training_memory(arch_3d(), PATCH_3D, 2)
    wider = estimate_training_memory(arch_3d(features_per_stage=[16, 32, 64]), PATCH_3D, 2)
    residual = estimate_training_memory(arch_3d(network="resenc_unet"), PATCH_3D, 2)
    no_ds = estimate_training_memory(arch_3d(deep_supervision=False), PATCH_3D, 2)
    assert wider.activations_bytes == pytest.approx(2 * base.activations_bytes, rel=0.1)
    assert residual.activations_bytes > 1.2 * base.activations_bytes
    assert no_ds.total_bytes < base.total_bytes


def test_breakdown_adds_up_and_overhead_is_separate():
    arch = arch_3d()
    est = estimate_training_memory(arch, PATCH_3D, 2, optimizer="adam")
    net = build_network(arch)
    param_bytes = 4 * sum(p.numel() for p in net.parameters())
    assert est.parameters_bytes == est.gradients_bytes == param_bytes
    assert est.optimizer_state_bytes == 2 * param_bytes
    parts = [
        est.parameters_bytes,
        est.gradients_bytes,
        est.optimizer_state_bytes,
        est.activations_bytes,
        est.input_target_bytes,
        est.peak_transient_bytes,
    ]
    assert all(part > 0 for part in parts)
    assert est.total_bytes == sum(parts)
    assert est.total_gb == pytest.approx(est.total_bytes / 2**30)
    assert est.reserved_overhead_bytes == CUDA_CONTEXT_BYTES
    assert est.device_total_gb == pytest.approx((est.total_bytes + CUDA_CONTEXT_BYTES) / 2**30)
    assert est.to_dict()["total_bytes"] == est.total_bytes
    # input (fp32) + int64 targets at each deep-supervision scale + fp16 logits
    batch_voxels = 2 * math.prod(PATCH_3D)
    targets = sum(
        2 * math.prod(p // s for p, s in zip(PATCH_3D, sc)) for sc in net.decoder_scales()
    )
    logits = sum(
        2 * 2 * math.prod(p // s for p, s in zip(PATCH_3D, sc)) for sc in net.decoder_scales()
    )
    assert est.input_target_bytes == 4 * batch_voxels + 8 * targets + 2 * logits
    sgd = estimate_training_memory(arch, PATCH_3D, 2, optimizer="sgd")
    assert sgd.optimizer_state_bytes == 0
    assert set(OPTIMIZER_STATE_COPIES) >= {"sgd", "sgd_momentum", "adam", "adamw"}


def test_estimate_leaves_no_state_behind():
    arch = arch_3d()
    first = estimate_training_memory(arch, PATCH_3D, 2)
    second = estimate_training_memory(arch, PATCH_3D, 2)
    assert first == second
    assert isinstance(first, MemoryEstimate)


def test_storage_key_identifies_storages_on_meta():
    a = torch.empty(4, 5, device="meta")
    b = torch.empty(4, 5, device="meta")
    assert storage_key(a) == storage_key(a[1:]) == storage_key(a.view(-1))
    assert storage_key(a) != storage_key(b)


@pytest.mark.parametrize(
    ("patch", "batch", "kwargs", "message"),
    [
        ((4, 40, 42), 2, {}, "axis 2 must be a positive multiple of 4"),
        ((48, 48), 2, {}, "3 axes"),
        (PATCH_3D, 0, {}, "batch_size"),
        (PATCH_3D, 2, {"optimizer": "lion"}, "optimizer"),
    ],
)
def test_bad_arguments_raise_value_error(patch, batch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        estimate_training_memory(arch_3d(), patch, batch, **kwargs)


GPU_3D = arch_3d(
    features_per_stage=[32, 64, 128, 256],
    kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
    n_blocks_per_stage=[2, 2, 2, 2],
    n_conv_per_stage_decoder=[2, 2, 2],
)


def _train_step(net, optimizer, scaler, x, targets) -> None:
    optimizer.zero_grad()
    with torch.autocast("cuda", dtype=torch.float16):
        outputs = net(x)
        loss = reference_loss(outputs, targets)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("arch", "patch", "batch"),
    [
        pytest.param(GPU_3D, (32, 128, 128), 2, id="3d"),
        pytest.param(
            arch_2d(features_per_stage=[32, 64, 128, 256], network="resenc_unet"),
            (512, 512),
            8,
            id="2d-resenc",
        ),
    ],
)
def test_estimate_within_15_percent_of_cuda_peak_with_amp(arch, patch, batch):
    torch.manual_seed(0)
    device = torch.device("cuda")
    net = build_network(arch).to(device).train()
    optimizer = torch.optim.SGD(
        net.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5
    )
    scaler = torch.amp.GradScaler("cuda")
    x, targets = _batch(net, arch, patch, batch, device="cuda")
    _train_step(net, optimizer, scaler, x, targets)  # creates the momentum buffers
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    _train_step(net, optimizer, scaler, x, targets)
    torch.cuda.synchronize()
    real = torch.cuda.max_memory_allocated()
    estimate = estimate_training_memory(arch, patch, batch, amp=True)
    assert estimate.total_bytes == pytest.approx(real, rel=0.15), (
        f"estimate {estimate.to_dict()} vs max_memory_allocated {real}"
    )
