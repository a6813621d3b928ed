"""Data augmentation: batchgenerators transforms chosen per configuration and imaging profile,
plus three small modality transforms of our own (MRI ghosting/motion, MRI bias field,
ultrasound speckle).

Why each transform exists, and its numbers, is written down in
``documentation/augmentation.md``. In short: the spatial transforms (rotation, scaling,
elastic deformation, mirroring) make a few dozen labelled scans look like many more anatomies
and positions; the intensity transforms make the network robust to scanner, coil, gain and
resolution differences between sites.

Arrays here are batches ``(B, C, Z, Y, X)`` ("volume view"; ``Z = 1`` for 2D, ``Z = k`` for
2.5D stacks) and labels ``(B, 1, Z', Y, X)``. Configurations whose third axis is not a real
isotropic axis (2D, 2.5D, anisotropic 3D) get *in-plane* spatial transforms: every slice (and
channel) is warped by the same 2D transform, so nothing is rotated into or scaled along the
thick axis. This is what nnU-Net does for anisotropic data ("dummy 2D" augmentation).

batchgenerators draws its random numbers from ``numpy.random`` and Python's ``random``; the
loader seeds and swaps both (see :class:`autoseg.data.loader.GlobalRandomSlot`), so results
are reproducible and the caller's global random state is left untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import (
    GaussianBlurTransform,
    GaussianNoiseTransform,
)
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from scipy.ndimage import gaussian_filter

from autoseg.data.sampler import augmented_read_size, elastic_displacement_bound
from autoseg.errors import AutosegError


# --------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class AugmentationProfile:
    """All augmentation parameters of one imaging profile; probabilities are per sample.

    Defaults are nnU-Net's published 3D defaults (rotation and scaling each with p = 0.2,
    zoom 0.7-1.4, noise variance 0-0.1, blur sigma 0.5-1, brightness and contrast x0.75-1.25,
    simulated low resolution x0.5-1, gamma 0.7-1.5, mirroring on all axes) plus elastic
    deformation, which nnU-Net v2 leaves off but which the sciatic-nerve study found the most
    useful augmentation for thin, variably shaped nerves. Images are resampled linearly, as
    nnU-Net v2 does: cubic splines cost 2-3x more per spatial transform (their prefilter runs
    over the whole enlarged region) for a sharpness the blur and low-resolution augmentations
    then take away again.
    """

    name: str = "default"
    # spatial
    rotation_deg_in_plane: float = 180.0  # 2D, 2.5D and anisotropic 3D (rotation about z)
    rotation_deg_3d: float = 30.0  # isotropic 3D, each axis
    p_rotation: float = 0.2
    zoom: tuple[float, float] = (0.7, 1.4)  # coordinate scale: > 1 shows a larger area
    p_zoom: float = 0.2
    p_elastic: float = 0.2
    elastic_max_std_vox: float = 3.0  # displacement std at the smoothest setting, voxels
    elastic_sigma: tuple[float, float] = (9.0, 13.0)  # smoothness of the field, voxels
    mirror_axes: tuple[int, ...] = (0, 1, 2)  # volume axes (z, y, x)
    interpolation_order: int = 1  # image resampling in spatial transforms (labels: nearest)
    # intensity
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_low_resolution: float = 0.25
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    # modality-specific
    p_ghosting: float = 0.0
    p_motion: float = 0.0
    p_bias_field: float = 0.0
    p_speckle: float = 0.0


DEFAULT_PROFILE = AugmentationProfile()

MRI_PROFILE = replace(
    DEFAULT_PROFILE,
    name="mri",
    p_elastic=0.3,
    p_ghosting=0.15,
    p_motion=0.1,
    p_bias_field=0.2,
)

ULTRASOUND_PROFILE = replace(
    DEFAULT_PROFILE,
    name="ultrasound",
    rotation_deg_in_plane=30.0,  # the probe is always at the top: depth runs downwards
    rotation_deg_3d=15.0,
    p_elastic=0.3,
    mirror_axes=(2,),  # left-right only; flipping depth would put acoustic shadows above objects
    p_speckle=0.25,
    p_low_resolution=0.15,
)

NO_AUGMENTATION = replace(
    DEFAULT_PROFILE,
    name="none",
    p_rotation=0.0,
    p_zoom=0.0,
    p_elastic=0.0,
    mirror_axes=(),
    p_noise=0.0,
    p_blur=0.0,
    p_brightness=0.0,
    p_contrast=0.0,
    p_low_resolution=0.0,
    p_gamma_inverted=0.0,
    p_gamma=0.0,
)

PROFILES: dict[str, AugmentationProfile] = {
    "default": DEFAULT_PROFILE,
    "mri": MRI_PROFILE,
    "ultrasound": ULTRASOUND_PROFILE,
    "none": NO_AUGMENTATION,
}
_ALIASES = {
    "": "default",
    "generic": "default",
    "ct": "default",
    "other": "default",
    "nnunet": "default",
    "mr": "mri",
    "us": "ultrasound",
    "off": "none",
}


def get_profile(name: str | AugmentationProfile | None) -> AugmentationProfile:
    """The profile for a name (case-insensitive; the planner's modality names ``ct``, ``mri``,
    ``ultrasound``, ``other`` and the short forms ``mr``, ``us`` work too)."""
    if isinstance(name, AugmentationProfile):
        return name
    key = (name or "default").strip().lower()
    key = _ALIASES.get(key, key)
    if key not in PROFILES:
        raise AutosegError(
            f"unknown augmentation profile {name!r}",
            fix=f"use one of: {', '.join(PROFILES)}",
        )
    return PROFILES[key]


# --------------------------------------------------------------------------- derived numbers
def elastic_alpha(max_std_vox: float, sigma: float, dim: int) -> float:
    """batchgenerators' ``alpha`` that gives a displacement std of ``max_std_vox`` at ``sigma``.

    Inverts :func:`autoseg.data.sampler.elastic_displacement_bound` (without its headroom), so
    a profile states the deformation in voxels for 2D and 3D alike: 3 voxels std at sigma 9 is
    alpha ~ 200 in 2D and ~ 930 in 3D, close to the values nnU-Net v1 used (200 and 900).
    """
    return max_std_vox * math.sqrt(3.0) * (2.0 * math.sqrt(math.pi) * sigma) ** (dim / 2.0)


@dataclass(frozen=True)
class SpatialSettings:
    """The spatial transform of one configuration, derived from a profile."""

    in_plane: bool  # 2D transform applied identically to every slice
    patch: tuple[int, ...]  # 2 values in-plane, 3 otherwise
    max_angles: tuple[float, ...]  # radians; one value in-plane, three otherwise
    zoom: tuple[float, float]
    alpha: tuple[float, float]
    sigma: tuple[float, float]
    elastic_margin: float  # voxels per side

    def read_size(self) -> tuple[int, ...]:
        """Region to read before the transform (see :func:`augmented_read_size`)."""
        return augmented_read_size(self.patch, self.max_angles, self.zoom[1], self.elastic_margin)


def spatial_settings(
    profile: AugmentationProfile, patch: Sequence[int], in_plane: bool
) -> SpatialSettings:
    """Spatial parameters for a patch: ``patch`` has 2 values (in-plane) or 3."""
    patch = tuple(int(p) for p in patch)
    dim = len(patch)
    if in_plane and dim != 2:
        raise ValueError("in-plane spatial settings take a 2-value patch")
    if dim == 2:
        angles: tuple[float, ...] = (math.radians(profile.rotation_deg_in_plane),)
    else:
        angles = (math.radians(profile.rotation_deg_3d),) * 3
    if profile.p_rotation <= 0:
        angles = (0.0,) * len(angles)
    zoom = profile.zoom if profile.p_zoom > 0 else (1.0, 1.0)
    if profile.p_elastic > 0 and profile.elastic_max_std_vox > 0:
        alpha_max = elastic_alpha(profile.elastic_max_std_vox, profile.elastic_sigma[0], dim)
        margin = elastic_displacement_bound(alpha_max, profile.elastic_sigma[0], dim)
    else:
        alpha_max, margin = 0.0, 0.0
    return SpatialSettings(
        in_plane=in_plane,
        patch=patch,
        max_angles=angles,
        zoom=(float(zoom[0]), float(zoom[1])),
        alpha=(0.0, float(alpha_max)),
        sigma=tuple(float(s) for s in profile.elastic_sigma),  # type: ignore[arg-type]
        elastic_margin=float(margin),
    )


# --------------------------------------------------------------------------- own transforms
def _uniform(lo_hi: Sequence[float]) -> float:
    return float(np.random.uniform(lo_hi[0], lo_hi[1]))


class GhostingTransform(AbstractTransform):
    """MRI ghosting: periodic copies of the image along a phase-encoding direction.

    Motion that repeats during the acquisition (arterial pulsation — the femoral artery next to
    the sciatic nerve — breathing) modulates every n-th k-space line; the image then shows
    faint copies shifted by ``N / n`` along the phase-encoding axis. We boost every n-th line
    (``k % n == 0``, ``k > 0``) of the 1D Fourier transform along a random in-plane axis by
    ``1 + strength``, which adds copies of amplitude ~``strength / n``. Labels do not move.
    """

    def __init__(
        self,
        n_ghosts: tuple[int, int] = (2, 8),
        strength: tuple[float, float] = (0.2, 0.8),
        axes: tuple[int, ...] = (-1, -2),
        p_per_sample: float = 0.15,
        data_key: str = "data",
    ):
        self.n_ghosts = n_ghosts
        self.strength = strength
        self.axes = axes
        self.p_per_sample = p_per_sample
        self.data_key = data_key

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        for b in range(data.shape[0]):
            if np.random.uniform() < self.p_per_sample:
                n = int(np.random.randint(self.n_ghosts[0], self.n_ghosts[1] + 1))
                s = _uniform(self.strength)
                axis = int(self.axes[np.random.randint(len(self.axes))])
                data[b] = add_ghosts(data[b], n, s, axis)
        return data_dict


def add_ghosts(x: np.ndarray, period: int, strength: float, axis: int) -> np.ndarray:
    """Multiply every ``period``-th non-zero frequency along ``axis`` by ``1 + strength``."""
    spec = np.fft.rfft(x, axis=axis)
    k = np.arange(spec.shape[axis])
    boost = np.where((k % period == 0) & (k > 0), 1.0 + strength, 1.0)
    shape = [1] * x.ndim
    shape[axis] = len(k)
    spec *= boost.reshape(shape)
    return np.fft.irfft(spec, n=x.shape[axis], axis=axis).astype(x.dtype, copy=False)


class MotionTransform(AbstractTransform):
    """MRI rigid motion: part of k-space acquired after the leg moved by a few voxels.

    A translation ``d`` multiplies k-space by ``exp(-2 pi i k d / N)``. Applying it only to the
    lines acquired after the motion (a random block of 10-40 % of the phase-encoding lines at
    one end of k-space) gives the ringing and blurred copies seen in moved scans. In-plane,
    same shift for every slice and channel of a sample.
    """

    def __init__(
        self,
        max_shift_vox: float = 4.0,
        fraction: tuple[float, float] = (0.1, 0.4),
        p_per_sample: float = 0.1,
        data_key: str = "data",
    ):
        self.max_shift_vox = max_shift_vox
        self.fraction = fraction
        self.p_per_sample = p_per_sample
        self.data_key = data_key

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        for b in range(data.shape[0]):
            if np.random.uniform() < self.p_per_sample:
                shift = np.random.uniform(-self.max_shift_vox, self.max_shift_vox, size=2)
                pe_axis = int(np.random.randint(2))  # 0: y, 1: x
                frac = _uniform(self.fraction)
                from_start = bool(np.random.uniform() < 0.5)
                data[b] = shift_kspace_lines(
                    data[b], (shift[0], shift[1]), pe_axis, frac, from_start
                )
        return data_dict


def shift_kspace_lines(
    x: np.ndarray,
    shift_yx: tuple[float, float],
    pe_axis: int,
    fraction: float,
    from_start: bool = True,
) -> np.ndarray:
    """Translate the part of k-space made of a block of phase-encoding lines (last two axes).

    ``pe_axis`` 0 or 1 selects y or x as phase-encoding axis; ``fraction`` of its lines, from
    the first (most negative frequency) or the last, get the phase ramp of ``shift_yx``.
    ``fraction = 1`` translates the whole image (shift theorem; circular)."""
    ny, nx = x.shape[-2], x.shape[-1]
    spec = np.fft.fft2(x, axes=(-2, -1))
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    ramp = np.exp(-2j * np.pi * (ky * shift_yx[0] + kx * shift_yx[1]))
    n_lines = (ny, nx)[pe_axis]
    order = np.argsort(np.fft.fftfreq(n_lines))  # acquisition order: -k ... +k
    count = int(round(fraction * n_lines))
    chosen = order[:count] if from_start else order[n_lines - count :]
    mask = np.zeros(n_lines, dtype=bool)
    mask[chosen] = True
    mask2 = mask[:, None] if pe_axis == 0 else mask[None, :]
    spec = np.where(mask2, spec * ramp, spec)
    return np.fft.ifft2(spec, axes=(-2, -1)).real.astype(x.dtype, copy=False)


def bias_field(shape: Sequence[int], coefficients: np.ndarray, order: int) -> np.ndarray:
    """Smooth multiplicative field ``exp(sum c_ijk x^i y^j z^k)`` with ``0 < i+j+k <= order``
    over ``shape``; coordinates run over [-1, 1] along the longest axis (shorter axes cover
    proportionally less, so a 3-slice stack does not get the field of a whole volume)."""
    grids = _bias_coordinates(shape)
    terms = _bias_terms(len(shape), order)
    if len(coefficients) != len(terms):
        raise ValueError(f"need {len(terms)} coefficients for order {order}")
    log_field = np.zeros(tuple(shape), dtype=np.float64)
    for c, powers in zip(coefficients, terms):
        term = np.ones((1,) * len(shape))
        for g, p in zip(grids, powers):
            if p:
                term = term * g**p
        log_field = log_field + c * term
    return np.exp(log_field)


def _bias_coordinates(shape: Sequence[int]) -> list[np.ndarray]:
    half = max(max(shape) - 1, 1) / 2.0
    grids = []
    for ax, n in enumerate(shape):
        v = (np.arange(n) - (n - 1) / 2.0) / half
        s = [1] * len(shape)
        s[ax] = n
        grids.append(v.reshape(s))
    return grids


def _bias_terms(ndim: int, order: int) -> list[tuple[int, ...]]:
    def rec(prefix: tuple[int, ...], left: int) -> list[tuple[int, ...]]:
        if len(prefix) == ndim:
            return [prefix] if sum(prefix) > 0 else []
        return [t for p in range(left + 1) for t in rec(prefix + (p,), left - p)]

    return rec((), order)


class BiasFieldTransform(AbstractTransform):
    """MRI coil-sensitivity bias: a smooth multiplicative field (polynomial of order 3 in the
    log domain, coefficients uniform in +-0.3 — brightness varies by roughly +-30 % across a
    patch, as between the near and far side of a thigh in a surface coil).

    The data is normalised, so the field multiplies the distance from each channel's minimum
    (the darkest tissue/background level) rather than the value itself: ``m + (x - m) * field``.
    """

    def __init__(
        self,
        order: int = 3,
        max_coefficient: float = 0.3,
        p_per_sample: float = 0.2,
        data_key: str = "data",
    ):
        self.order = order
        self.max_coefficient = max_coefficient
        self.p_per_sample = p_per_sample
        self.data_key = data_key

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        spatial = data.shape[2:]
        n_terms = len(_bias_terms(len(spatial), self.order))
        for b in range(data.shape[0]):
            if np.random.uniform() < self.p_per_sample:
                coeffs = np.random.uniform(-self.max_coefficient, self.max_coefficient, n_terms)
                field = bias_field(spatial, coeffs, self.order).astype(np.float32)
                for c in range(data.shape[1]):
                    m = data[b, c].min()
                    data[b, c] = m + (data[b, c] - m) * field
        return data_dict


class SpeckleTransform(AbstractTransform):
    """Ultrasound speckle: multiplicative, spatially correlated noise.

    Fully developed speckle has Rayleigh-distributed amplitude, i.e. gamma-distributed
    intensity with mean 1; averaging ``L`` looks gives shape ``L`` (variance ``1/L``). We draw
    gamma noise with ``L`` in 3-12 (clinical scanners' speckle reduction leaves a few looks),
    smooth it in-plane with sigma 0.5-1 pixel (speckle grains are one resolution cell, a few
    pixels wide) and renormalise to mean 1; like the bias field it multiplies ``x - min``.
    """

    def __init__(
        self,
        looks: tuple[float, float] = (3.0, 12.0),
        grain_sigma: tuple[float, float] = (0.5, 1.0),
        p_per_sample: float = 0.25,
        data_key: str = "data",
    ):
        self.looks = looks
        self.grain_sigma = grain_sigma
        self.p_per_sample = p_per_sample
        self.data_key = data_key

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        for b in range(data.shape[0]):
            if np.random.uniform() < self.p_per_sample:
                looks = _uniform(self.looks)
                grain = _uniform(self.grain_sigma)
                noise = np.random.gamma(looks, 1.0 / looks, size=data.shape[2:])
                sig = [0.0] * (noise.ndim - 2) + [grain, grain]
                noise = gaussian_filter(noise, sig)
                noise = (noise / max(noise.mean(), 1e-6)).astype(np.float32)
                for c in range(data.shape[1]):
                    m = data[b, c].min()
                    data[b, c] = m + (data[b, c] - m) * noise
        return data_dict


# --------------------------------------------------------------------------- pipeline
class Augmenter:
    """Spatial + intensity augmentation of one configuration; call with a batch.

    ``data`` ``(B, C, Z, Y, X)`` and ``seg`` ``(B, 1, Z', Y, X)`` of the *read* size in; out
    the final patch, labels rounded back to integers (uint8). In-plane settings keep ``Z``.
    Holds the built transforms, hence a class.
    """

    def __init__(self, profile: AugmentationProfile, spatial: SpatialSettings):
        self.profile = profile
        self.spatial = spatial
        p = profile
        sp = spatial
        dim = len(sp.patch)
        angle = tuple((-a, a) for a in sp.max_angles)
        self.spatial_transform = SpatialTransform(
            patch_size=sp.patch,
            patch_center_dist_from_border=None,
            do_elastic_deform=p.p_elastic > 0 and sp.alpha[1] > 0,
            alpha=sp.alpha,
            sigma=sp.sigma,
            do_rotation=p.p_rotation > 0 and any(a > 0 for a in sp.max_angles),
            angle_x=angle[0],
            angle_y=angle[1] if dim == 3 else (0.0, 0.0),
            angle_z=angle[2] if dim == 3 else (0.0, 0.0),
            do_scale=p.p_zoom > 0,
            scale=sp.zoom,
            border_mode_data="constant",
            border_cval_data=0,
            order_data=p.interpolation_order,
            border_mode_seg="constant",
            border_cval_seg=0,
            order_seg=0,
            random_crop=False,
            p_el_per_sample=p.p_elastic,
            p_scale_per_sample=p.p_zoom,
            p_rot_per_sample=p.p_rotation,
        )
        in_plane_only = (0,) if sp.in_plane else None
        before_blur: list[AbstractTransform] = []
        if p.p_bias_field > 0:
            before_blur.append(BiasFieldTransform(p_per_sample=p.p_bias_field))
        if p.p_ghosting > 0:
            before_blur.append(GhostingTransform(p_per_sample=p.p_ghosting))
        if p.p_motion > 0:
            before_blur.append(MotionTransform(p_per_sample=p.p_motion))
        if p.p_speckle > 0:
            before_blur.append(SpeckleTransform(p_per_sample=p.p_speckle))
        if p.p_noise > 0:
            before_blur.append(GaussianNoiseTransform(p.noise_variance, p_per_sample=p.p_noise))
        self.pre_blur = Compose(before_blur) if before_blur else None
        self.blur = (
            GaussianBlurTransform(
                p.blur_sigma,
                different_sigma_per_channel=not sp.in_plane,
                p_per_channel=1.0 if sp.in_plane else 0.5,
                p_per_sample=p.p_blur,
            )
            if p.p_blur > 0
            else None
        )
        after: list[AbstractTransform] = []
        if p.p_brightness > 0:
            after.append(
                BrightnessMultiplicativeTransform(p.brightness, p_per_sample=p.p_brightness)
            )
        if p.p_contrast > 0:
            after.append(ContrastAugmentationTransform(p.contrast, p_per_sample=p.p_contrast))
        if p.p_low_resolution > 0:
            after.append(
                SimulateLowResolutionTransform(
                    zoom_range=p.low_resolution_zoom,
                    per_channel=True,
                    p_per_channel=0.5,
                    order_downsample=0,
                    order_upsample=1,
                    p_per_sample=p.p_low_resolution,
                    ignore_axes=in_plane_only,
                )
            )
        if p.p_gamma_inverted > 0:
            after.append(
                GammaTransform(
                    p.gamma,
                    invert_image=True,
                    per_channel=True,
                    retain_stats=True,
                    p_per_sample=p.p_gamma_inverted,
                )
            )
        if p.p_gamma > 0:
            after.append(
                GammaTransform(
                    p.gamma,
                    invert_image=False,
                    per_channel=True,
                    retain_stats=True,
                    p_per_sample=p.p_gamma,
                )
            )
        if p.mirror_axes:
            after.append(MirrorTransform(tuple(p.mirror_axes)))
        self.post_blur = Compose(after) if after else None

    def __call__(self, data: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, c, z = data.shape[:3]
        zs = seg.shape[2]
        if self.spatial.in_plane:
            d2 = data.reshape(b, c * z, *data.shape[3:])
            s2 = seg.reshape(b, zs, *seg.shape[3:]).astype(np.float32)
            out = self.spatial_transform(data=d2, seg=s2)
            ph, pw = self.spatial.patch
            data = out["data"].reshape(b, c, z, ph, pw)
            seg = out["seg"].reshape(b, 1, zs, ph, pw)
        else:
            out = self.spatial_transform(data=data, seg=seg.astype(np.float32))
            data, seg = out["data"], out["seg"]
        data = np.ascontiguousarray(data, dtype=np.float32)
        if self.pre_blur is not None:
            data = self.pre_blur(data=data)["data"]
        if self.blur is not None:
            if self.spatial.in_plane:
                view = data.reshape(b, c * z, *data.shape[3:])
                data = self.blur(data=view)["data"].reshape(data.shape)
            else:
                data = self.blur(data=data)["data"]
        if self.post_blur is not None:
            out = self.post_blur(data=data, seg=seg)
            data, seg = out["data"], out["seg"]
        seg = np.rint(seg).astype(np.uint8)
        return np.ascontiguousarray(data, dtype=np.float32), np.ascontiguousarray(seg)
