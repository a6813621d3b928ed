"""U-Nets built from the plan's architecture block: shapes, deep supervision, validation."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from autoseg.networks import ArchitectureConfig, UNet, build_network, count_parameters
from autoseg.networks.blocks import LEAKY_SLOPE, ResidualBlock

pytestmark = pytest.mark.usefixtures("one_thread_module")  # tests/conftest.py


def arch_3d(**changes: object) -> dict:
    """Tiny anisotropic 3D net: (1,3,3) kernels and (1,2,2) strides like thigh MRI plans."""
    arch = {
        "network": "unet",
        "dim": 3,
        "in_channels": 1,
        "num_classes": 2,
        "features_per_stage": [4, 8, 16, 16],
        "kernel_sizes": [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [1, 2, 2]],
        "n_blocks_per_stage": [2, 2, 2, 1],
        "n_conv_per_stage_decoder": [2, 1, 1],
        "deep_supervision": True,
        "norm": "instance",
        "nonlin": "leaky_relu",
    }
    arch.update(changes)
    return arch


def arch_2d(**changes: object) -> dict:
    """Tiny 2D net; in_channels 3 stands for 2.5D (three neighbouring slices)."""
    arch = {
        "network": "unet",
        "dim": 2,
        "in_channels": 3,
        "num_classes": 3,
        "features_per_stage": [4, 8, 8],
        "kernel_sizes": [[3, 3], [3, 3], [3, 3]],
        "strides": [[1, 1], [2, 2], [2, 2]],
        "n_blocks_per_stage": [1, 2, 2],
        "n_conv_per_stage_decoder": [1, 2],
        "deep_supervision": True,
    }
    arch.update(changes)
    return arch


CASES = [
    pytest.param(arch_3d(), (4, 32, 24), id="3d-aniso"),
    pytest.param(arch_3d(network="resenc_unet"), (4, 32, 24), id="3d-resenc"),
    pytest.param(arch_2d(), (32, 40), id="2.5d"),
    pytest.param(arch_2d(network="resenc_unet"), (32, 40), id="2d-resenc"),
]


@pytest.mark.parametrize(("arch", "patch"), CASES)
def test_train_mode_returns_deep_supervision_outputs_at_the_stated_scales(arch, patch):
    net = build_network(arch).train()
    x = torch.randn(2, arch["in_channels"], *patch)
    outputs = net(x)
    scales = net.decoder_scales()
    assert isinstance(outputs, list)
    assert len(outputs) == len(arch["features_per_stage"]) - 1 == len(scales)
    assert scales[0] == (1,) * arch["dim"]
    for out, scale in zip(outputs, scales):
        expected = tuple(p // s for p, s in zip(patch, scale))
        assert out.shape == (2, arch["num_classes"], *expected)
    # Each scale is the cumulative product of the strides up to that stage.
    cumulative = [math.prod(s[a] for s in arch["strides"][:2]) for a in range(arch["dim"])]
    assert scales[1] == tuple(cumulative)


@pytest.mark.parametrize(("arch", "patch"), CASES)
def test_eval_mode_returns_one_full_resolution_tensor(arch, patch):
    net = build_network(arch).eval()
    with torch.no_grad():
        out = net(torch.randn(1, arch["in_channels"], *patch))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, arch["num_classes"], *patch)


def test_without_deep_supervision_train_mode_returns_one_tensor_and_has_one_head():
    arch = arch_3d(deep_supervision=False)
    net = build_network(arch).train()
    out = net(torch.randn(1, 1, 4, 32, 24))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 4, 32, 24)
    assert len(net.heads) == 1
    assert net.decoder_scales() == [(1, 1, 1)]
    with_ds = build_network(arch_3d())
    assert count_parameters(with_ds) > count_parameters(net)


def test_eval_output_equals_full_resolution_train_output():
    """Eval mode must return the same full-resolution logits as element 0 in train mode
    (instance norm has no running statistics, so modes only differ in what is returned)."""
    torch.manual_seed(0)
    net = build_network(arch_3d())
    x = torch.randn(1, 1, 4, 32, 24)
    with torch.no_grad():
        train_out = net.train()(x)[0]
        eval_out = net.eval()(x)
    torch.testing.assert_close(train_out, eval_out)


@pytest.mark.parametrize(("arch", "patch"), CASES)
def test_backward_reaches_every_parameter(arch, patch):
    torch.manual_seed(0)
    net = build_network(arch).train()
    outputs = net(torch.randn(2, arch["in_channels"], *patch))
    loss = sum(out.float().square().mean() for out in outputs)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_single_stage_network_is_a_plain_conv_net():
    arch = arch_2d(
        features_per_stage=[4],
        kernel_sizes=[[3, 3]],
        strides=[[1, 1]],
        n_blocks_per_stage=[2],
        n_conv_per_stage_decoder=[],
    )
    net = build_network(arch).train()
    out = net(torch.randn(1, 3, 10, 7))
    assert out[0].shape == (1, 3, 10, 7)


def test_input_not_divisible_by_total_stride_is_rejected_clearly():
    net = build_network(arch_3d())
    with pytest.raises(ValueError, match="axis 0 must be a positive multiple of 2"):
        net(torch.randn(1, 1, 5, 32, 24))  # total stride along z: 1*1*2*1 = 2
    with pytest.raises(ValueError, match="axis 1 must be a positive multiple of 8"):
        net(torch.randn(1, 1, 4, 36, 24))
    with pytest.raises(ValueError, match="expected \\(batch, 1"):
        net(torch.randn(1, 2, 4, 32, 24))


def test_residual_blocks_project_only_when_shape_changes():
    net = build_network(arch_3d(network="resenc_unet"))
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == sum(arch_3d()["n_blocks_per_stage"])
    identity = [b for b in blocks if isinstance(b.shortcut, torch.nn.Identity)]
    projected = [b for b in blocks if not isinstance(b.shortcut, torch.nn.Identity)]
    # The stem lifts the input to stage-0 width; stage 0 keeps it (identity); stages 1-3
    # downsample in their first block (projection), later blocks keep shape.
    assert len(projected) == 3
    assert len(identity) == len(blocks) - 3
    strides = {tuple(b.shortcut[0].stride) for b in projected}
    assert strides == {(1, 2, 2), (2, 2, 2)}


def tiny_2d(network: str) -> dict:
    return {
        "network": network,
        "dim": 2,
        "in_channels": 1,
        "num_classes": 2,
        "features_per_stage": [2, 4],
        "kernel_sizes": [[3, 3], [3, 3]],
        "strides": [[1, 1], [2, 2]],
        "n_blocks_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1],
        "deep_supervision": True,
    }


def test_parameter_count_matches_hand_calculation_plain():
    # encoder 0: conv 1->2 3x3 (no bias: instance norm follows) 18 + norm 2*2 = 22
    # encoder 1: conv 2->4 3x3 72 + norm 8                                   = 80
    # upsample: transposed conv 4->2 kernel 2x2 = 32 + bias 2                 = 34
    # decoder 0: conv (2+2)->2 3x3 72 + norm 4                               = 76
    # head: 1x1 conv 2->2 = 4 + bias 2                                        =  6
    assert count_parameters(build_network(tiny_2d("unet"))) == 22 + 80 + 34 + 76 + 6


def test_parameter_count_matches_hand_calculation_residual():
    stem = 18 + 4  # conv 1->2 + norm
    stage0 = (36 + 4) + (36 + 4)  # block 2->2: conv1+norm, conv2+norm, identity shortcut
    stage1 = (72 + 8) + (144 + 8) + (8 + 8)  # block 2->4 stride 2 + 1x1 projection + norm
    decoder = 34 + 76 + 6
    net = build_network(tiny_2d("resenc_unet"))
    assert count_parameters(net) == stem + stage0 + stage1 + decoder
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())


def test_convs_get_he_initialisation_for_leaky_relu():
    torch.manual_seed(0)
    net = build_network(arch_3d(features_per_stage=[32, 64, 64, 64]))
    conv = net.encoder[2][1][0]  # 64 -> 64, kernel 3x3x3: fan_in 1728, 110592 weights
    fan_in = conv.weight.shape[1] * math.prod(conv.weight.shape[2:])
    expected_std = math.sqrt(2.0 / (1 + LEAKY_SLOPE**2)) / math.sqrt(fan_in)
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.03)
    assert all(m.bias is None or (m.bias == 0).all() for m in net.heads)


def test_anisotropic_kernels_are_used_per_stage():
    net = build_network(arch_3d())
    assert net.encoder[0][0][0].kernel_size == (1, 3, 3)
    assert net.encoder[0][0][0].padding == (0, 1, 1)
    assert net.encoder[1][0][0].stride == (1, 2, 2)
    assert net.upsample[0].kernel_size == (1, 2, 2) == net.upsample[0].stride
    assert net.upsample[2].kernel_size == (1, 2, 2)
    assert net.upsample[1].kernel_size == (2, 2, 2)


def test_network_exposes_its_config_and_builds_on_meta_without_memory():
    arch = arch_3d()
    with torch.device("meta"):
        net = build_network(arch)
    assert isinstance(net, UNet)
    assert net.arch == ArchitectureConfig.from_dict(arch)
    assert all(p.is_meta for p in net.parameters())
    out = net(torch.empty(2, 1, 4, 32, 24, device="meta"))
    assert [o.shape[2:] for o in out] == [(4, 32, 24), (4, 16, 12), (2, 8, 6)]


def test_config_round_trips_through_json():
    config = ArchitectureConfig.from_dict(arch_3d())
    again = ArchitectureConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.to_dict() == arch_3d()
    assert ArchitectureConfig.from_dict(config) is config
    assert config.required_divisor() == (2, 8, 8)


def test_defaults_for_optional_fields():
    arch = arch_3d()
    for key in ("deep_supervision", "norm", "nonlin"):
        del arch[key]
    config = ArchitectureConfig.from_dict(arch)
    assert config.deep_supervision is True
    assert (config.norm, config.nonlin) == ("instance", "leaky_relu")


def _mutate(path: tuple, value: object) -> dict:
    arch = copy.deepcopy(arch_3d())
    target = arch
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return arch


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("network",), "vnet", "network"),
        (("dim",), 4, "dim"),
        (("dim",), True, "dim"),
        (("in_channels",), 0, "in_channels"),
        (("num_classes",), 1, "num_classes"),
        (("num_classes",), 2.0, "num_classes"),
        (("features_per_stage",), [], "features_per_stage"),
        (("features_per_stage", 1), -8, "features_per_stage\\[1\\]"),
        (("kernel_sizes",), [[1, 3, 3]] * 3, "kernel_sizes"),
        (("kernel_sizes", 2), [3, 3], "kernel_sizes\\[2\\]"),
        (("kernel_sizes", 2), [3, 2, 3], "kernel_sizes\\[2\\]"),
        (("strides", 0), [1, 2, 2], "strides\\[0\\]"),
        (("strides", 3), [1, 0, 2], "strides\\[3\\]\\[1\\]"),
        (("strides",), "222", "strides"),
        (("n_blocks_per_stage",), [2, 2, 2], "n_blocks_per_stage"),
        (("n_conv_per_stage_decoder",), [2, 2, 2, 2], "n_conv_per_stage_decoder"),
        (("deep_supervision",), "yes", "deep_supervision"),
        (("norm",), "batch", "norm"),
        (("nonlin",), "relu", "nonlin"),
        (("in_channels",), _DELETE, "in_channels"),
        (("pool",), "max", "pool"),
    ],
)
def test_invalid_architecture_names_the_bad_field(path, value, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        ArchitectureConfig.from_dict(_mutate(path, value))
    with pytest.raises(ValueError, match=f"^{field}"):
        build_network(_mutate(path, value))


def test_non_dict_architecture_is_rejected():
    with pytest.raises(ValueError, match="architecture"):
        ArchitectureConfig.from_dict(["unet"])  # type: ignore[arg-type]
