from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from autoseg.inference.sliding_window import (
    WindowSpec,
    gaussian_importance,
    predict_sliding_window,
    window_starts,
)
from autoseg.networks import precision as sw
from autoseg.networks.precision import autocast_dtype


@given(st.integers(1, 300), st.integers(1, 128), st.sampled_from([0.0, 0.25, 0.5, 0.75]))
def test_window_starts_cover_everything_inside_the_image(size, patch, overlap):
    starts = window_starts(size, patch, overlap)
    assert starts[0] == 0
    if patch >= size:
        assert starts == [0]
        return
    assert starts[-1] + patch == size
    steps = np.diff(starts)
    assert (steps > 0).all() and (steps <= max(1, int(patch * (1 - overlap)))).all()


def test_gaussian_is_peaked_and_never_zero():
    g = gaussian_importance((9, 9))
    assert g.max() == 1.0 and g[4, 4] == 1.0 and g.min() >= 1e-3
    assert g[0, 0] < g[2, 2] < g[4, 4]


def _pointwise(in_ch: int, n_classes: int, dim: int) -> nn.Module:
    torch.manual_seed(0)
    conv = (nn.Conv3d if dim == 3 else nn.Conv2d)(in_ch, n_classes, 1)
    return conv.eval()


@pytest.mark.parametrize("mirror", [False, True])
def test_3d_stitching_equals_whole_image_for_a_pointwise_net(mirror):
    image = torch.randn(2, 7, 19, 23)
    net = _pointwise(2, 3, 3)
    spec = WindowSpec(patch_size=(4, 8, 8), num_classes=3, mirror=mirror)
    probs = predict_sliding_window(net, image, spec, batch_size=3, amp=False)
    expected = torch.softmax(net(image[None]), 1)[0]
    assert probs.shape == (3, 7, 19, 23)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)


def test_image_smaller_than_patch_is_padded_and_cropped_back():
    image = torch.randn(1, 3, 5, 6)
    net = _pointwise(1, 2, 3)
    probs = predict_sliding_window(net, image, WindowSpec((4, 8, 8), 2, mirror=False), amp=False)
    torch.testing.assert_close(probs, torch.softmax(net(image[None]), 1)[0], atol=1e-5, rtol=0)


def test_2d_network_predicts_every_slice():
    image = torch.randn(1, 4, 20, 17)
    net = _pointwise(1, 2, 2)
    probs = predict_sliding_window(net, image, WindowSpec((8, 8), 2), amp=False)
    expected = torch.softmax(net(image[0][:, None]), 1).permute(1, 0, 2, 3)  # slices as batch
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)


def test_25d_stacks_neighbouring_slices_channel_major_with_edge_replication():
    # A 1x1 conv whose output 1 copies input channel j reveals which slice sits at channel j.
    n_z, k = 5, 3
    image = torch.arange(n_z, dtype=torch.float32)[None, :, None, None].expand(1, n_z, 6, 6)
    for j, offset in enumerate((-1, 0, 1)):
        conv = nn.Conv2d(k, 2, 1, bias=False)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[1, j] = 50.0  # class 1 wins where the copied slice index is > 0
        probs = predict_sliding_window(
            conv, image, WindowSpec((4, 4), 2, slices=k, mirror=False), amp=False
        )
        for z in range(n_z):
            src = min(max(z + offset, 0), n_z - 1)
            assert (probs[1, z] > 0.5).all() == (src > 0), (j, z)


def test_2d_network_along_another_slice_axis():
    image = torch.randn(1, 6, 5, 7)  # slices along x (axis 2): each (z, y) = (6, 5)
    net = _pointwise(1, 2, 2)
    probs = predict_sliding_window(net, image, WindowSpec((4, 4), 2, slice_axis=2), amp=False)
    per_slice = net(image.permute(3, 0, 1, 2))  # x slices as the batch: (X, K, Z, Y)
    expected = torch.softmax(per_slice, 1).permute(1, 2, 3, 0)
    assert probs.shape == (2, 6, 5, 7)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)


def test_precision_float16_on_gpu_bfloat16_only_on_cpus_that_have_it(monkeypatch):
    assert autocast_dtype("cuda") == torch.float16
    assert autocast_dtype("cuda", amp=False) is None
    monkeypatch.setattr(sw, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype("cpu") == torch.bfloat16 and autocast_dtype("cpu", amp=False) is None
    monkeypatch.setattr(sw, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype("cpu") is None


def test_bfloat16_prediction_stays_close_to_float32(monkeypatch):
    """The reduced-precision path really runs (it differs from float32) and stays within
    bfloat16's ~3 significant digits on the probabilities."""
    monkeypatch.setattr(sw, "cpu_has_native_bf16", lambda: True)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    image = torch.randn(1, 3, 24, 20)
    spec = WindowSpec((16, 16), 2)
    full = predict_sliding_window(net, image, spec, amp=False)
    half = predict_sliding_window(net, image, spec, amp=True)
    assert not torch.equal(full, half)
    torch.testing.assert_close(half, full, atol=0.03, rtol=0)


def test_tta_mirrors_only_the_axes_training_mirrored():
    from autoseg.inference.sliding_window import _mirror_sets, tta_mirror_axes

    assert tta_mirror_axes((0, 1, 2), 3) == (0, 1, 2)
    assert tta_mirror_axes((0, 1, 2), 2) == (0, 1)  # a 2D network sees the view's (y, x)
    assert tta_mirror_axes((2,), 2) == (1,)  # ultrasound: left-right only
    assert tta_mirror_axes((), 2) == ()
    assert _mirror_sets(2, True) == [(), (2,), (3,), (2, 3)]
    assert _mirror_sets(2, True, (1,)) == [(), (3,)]
    assert _mirror_sets(2, False, (1,)) == [()]


def test_a_depth_flip_the_network_never_saw_is_not_averaged_in():
    """A net that is not mirror-symmetric along y: with only x mirrored, TTA of a pointwise
    (flip-equivariant) net still equals the plain prediction, and the y flip is never run."""
    calls = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)

        def forward(self, x):
            calls.append(x.clone())
            return self.conv(x)

    net = Recorder().eval()
    image = torch.randn(1, 1, 8, 8)
    image[..., :4, :] += 3.0  # top half bright: a y flip would show a different image
    spec = WindowSpec((8, 8), 2, mirror=True, mirror_axes=(1,))
    probs = predict_sliding_window(net, image, spec, amp=False)
    plain = predict_sliding_window(net, image, WindowSpec((8, 8), 2, mirror=False), amp=False)
    torch.testing.assert_close(probs, plain, atol=1e-5, rtol=1e-5)
    seen = [c[0, 0] for c in calls[: len(calls) - 1]]
    assert any(torch.allclose(s, image[0, 0].flip(-1)) for s in seen)  # the x flip ran
    assert not any(torch.allclose(s, image[0, 0].flip(-2)) for s in seen)  # no y flip


def test_window_spec_follows_the_plans_modality():
    from autoseg.inference.predictor import window_spec
    from autoseg.planning import plan_dataset
    from autoseg.planning.patch import approximate_memory_gb
    from autoseg.planning.synthetic import synthetic_fingerprint

    def plan(modality, shape, spacing):
        fp = synthetic_fingerprint("903_T", shape, spacing, modality=modality)
        return plan_dataset(fp, gpu_memory_gb=8, device="cpu", estimator=approximate_memory_gb)

    us = plan("ultrasound", [256, 320], [1.0, 1.0])
    assert window_spec(us, "2d", tta=True).mirror_axes == (1,)  # left-right only
    mri = plan("mri", [24, 160, 160], [3.0, 0.75, 0.75])
    assert window_spec(mri, "3d_fullres", tta=True).mirror_axes == (0, 1, 2)
    assert window_spec(mri, "2d", tta=True).mirror_axes == (0, 1)
