"""Data augmentation: one spatial transform per sample, applied while the patch is read, then
intensity transforms on the batch — batchgenerators' brightness, contrast and gamma, and our
own noise, blur, simulated low resolution and modality transforms (MRI ghosting, motion and
bias field, ultrasound speckle).

Why each transform exists, and its numbers, is written down in
``documentation/augmentation.md``. In short: the spatial transforms (rotation, scaling,
elastic deformation, mirroring) make a few dozen labelled scans look like many more anatomies
and positions; the intensity transforms make the network robust to scanner, coil, gain and
resolution differences between sites.

Spatial augmentation (:func:`draw_warp`, :func:`sample_offsets`) gives the position every output
voxel samples; :func:`autoseg.data.sampler.read_patch` reads just the box those positions need
and interpolates there, so only the final patch is ever resampled, once, for rotation, zoom,
deformation and mirroring together. Configurations whose third axis is not a real isotropic
axis (2D, 2.5D, anisotropic 3D) get *in-plane* spatial transforms: every slice (and channel) is
warped by the same 2D transform, so nothing is rotated into or scaled along the thick axis.
This is what nnU-Net does for anisotropic data ("dummy 2D" augmentation).

Intensity arrays are batches ``(B, C, Z, Y, X)`` ("volume view"; ``Z = 1`` for 2D, ``Z = k``
for 2.5D stacks) with labels ``(B, 1, Z', Y, X)``. The intensity transforms draw from
``numpy.random`` (batchgenerators' convention); the loader seeds and swaps the global state
(see :class:`autoseg.data.loader.GlobalRandomSlot`) and gives spatial augmentation its own
``numpy.random.Generator``, so results are reproducible and the caller's global random state
is left untouched.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
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
    nnU-Net v2 does (``grid_sample`` bilinear): cubic splines cost 2-3x more per spatial
    transform for a sharpness the blur and low-resolution augmentations then take away again.
    Labels are resampled with nearest neighbour, so they stay labels.
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
    sigma: tuple[float, float]
    elastic_margin: float  # voxels per side
    p_rotation: float = 0.0
    p_zoom: float = 0.0
    p_elastic: float = 0.0
    elastic_max_std: float = 0.0  # displacement std (voxels) at the smallest sigma
    mirror_axes: tuple[int, ...] = ()  # volume axes (z, y, x)

    def read_size(self) -> tuple[int, ...]:
        """Largest region any sample can need (see :func:`augmented_read_size`); each sample
        reads only the box its own parameters need."""
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
        max_std = float(profile.elastic_max_std_vox)
    else:
        margin, max_std = 0.0, 0.0
    return SpatialSettings(
        in_plane=in_plane,
        patch=patch,
        max_angles=angles,
        zoom=(float(zoom[0]), float(zoom[1])),
        sigma=tuple(float(s) for s in profile.elastic_sigma),  # type: ignore[arg-type]
        elastic_margin=float(margin),
        p_rotation=float(profile.p_rotation) if any(a > 0 for a in angles) else 0.0,
        p_zoom=float(profile.p_zoom),
        p_elastic=float(profile.p_elastic) if max_std > 0 else 0.0,
        elastic_max_std=max_std,
        mirror_axes=tuple(int(a) for a in profile.mirror_axes),
    )


# --------------------------------------------------------------------------- spatial transform
@dataclass(frozen=True)
class Warp:
    """The spatial augmentation drawn for one sample.

    A patch voxel at offset ``g`` from the patch centre samples the image at
    ``matrix @ (g + displacement(g))``: elastic deformation first, then rotation, then zoom (the
    order batchgenerators uses). ``flips`` mirrors the output along volume axes ``(z, y, x)``.
    """

    matrix: np.ndarray | None  # (d, d) zoom times rotation; None: neither was drawn
    displacement: np.ndarray | None  # (d, *patch) elastic displacement, voxels; None: none
    flips: tuple[bool, bool, bool] = (False, False, False)

    @property
    def moves(self) -> bool:
        """Whether the sample positions differ from the plain grid (then we interpolate)."""
        return self.matrix is not None or self.displacement is not None


def draw_warp(settings: SpatialSettings, rng: np.random.Generator) -> Warp:
    """Draw one sample's rotation, zoom, elastic deformation and mirroring.

    Each of rotation, zoom and deformation happens with its own probability; mirroring with
    p 0.5 per allowed axis. Zoom picks a zoom-in (``zoom[0]``..1) or a zoom-out (1..``zoom[1]``)
    with equal odds, as batchgenerators does, so the two are equally common although the
    ranges differ in length. The deformation's displacement std is uniform in
    ``0..elastic_max_std`` times ``(sigma_min / sigma) ** (d / 2)``: the distribution of
    batchgenerators' ``alpha`` uniform in ``0..alpha_max`` at the same ``sigma``.
    """
    d = len(settings.patch)
    matrix: np.ndarray | None = None
    if settings.p_rotation > 0 and rng.random() < settings.p_rotation:
        angles = [float(rng.uniform(-a, a)) for a in settings.max_angles]
        matrix = rotation_matrix(angles)
    if settings.p_zoom > 0 and rng.random() < settings.p_zoom:
        lo, hi = settings.zoom
        if rng.random() < 0.5 and lo < 1:
            scale = float(rng.uniform(lo, 1.0))
        else:
            scale = float(rng.uniform(max(lo, 1.0), hi))
        matrix = scale * (np.eye(d) if matrix is None else matrix)
    displacement = None
    if settings.p_elastic > 0 and rng.random() < settings.p_elastic:
        sigma = float(rng.uniform(*settings.sigma))
        std = float(rng.uniform(0.0, settings.elastic_max_std))
        std *= (settings.sigma[0] / sigma) ** (d / 2.0)
        displacement = elastic_field(settings.patch, std, sigma, rng)
    flips = tuple(bool(ax in settings.mirror_axes and rng.random() < 0.5) for ax in range(3))
    return Warp(matrix, displacement, flips)  # type: ignore[arg-type]


def rotation_matrix(angles: Sequence[float]) -> np.ndarray:
    """2x2 rotation (one angle) or 3x3 rotation about volume axes 0, then 1, then 2."""
    if len(angles) == 1:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    m = np.eye(3)
    for axis, t in enumerate(angles):
        c, s = math.cos(t), math.sin(t)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        m = r @ m
    return m


def sample_offsets(patch: Sequence[int], warp: Warp) -> np.ndarray | None:
    """Sample positions ``(d, *patch)`` float32 of a warped patch relative to its centre, or
    None when the warp does not move anything (the patch is then read as it is)."""
    if not warp.moves:
        return None
    pos = centred_grid(tuple(int(p) for p in patch))
    if warp.displacement is not None:
        pos = pos + warp.displacement
    if warp.matrix is not None:  # elementwise: a (d, d) BLAS product would start BLAS threads
        m = warp.matrix.astype(np.float32)
        pos = np.stack([sum(m[i, j] * pos[j] for j in range(len(m))) for i in range(len(m))])
    return pos


@functools.lru_cache(maxsize=8)
def centred_grid(patch: tuple[int, ...]) -> np.ndarray:
    """Voxel offsets ``(d, *patch)`` from the patch centre (read-only, cached per patch)."""
    axes = [np.arange(p, dtype=np.float32) - (p - 1) / 2.0 for p in patch]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    grid.setflags(write=False)
    return grid


def elastic_field(
    patch: Sequence[int], std: float, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Smooth random displacement field ``(d, *patch)`` (voxels) with std ``std`` per component
    and Gaussian correlation ``sigma`` (voxels).

    The field is the textbook one (white noise smoothed by a Gaussian of ``sigma``) but made on
    a control grid ``sigma / 3`` voxels apart and interpolated linearly: a field this smooth
    changes by < 3 % between control points (its autocorrelation at ``sigma / 3`` is
    ``exp(-1/36)`` = 0.97), while the smoothing runs on ``(sigma / 3)^d`` times fewer points —
    smoothing at full resolution (batchgenerators) cost 7 ms per 224x288 patch, half of the
    whole 2D batch. The control grid extends 3 sigma beyond the patch so the edges are as
    random as the middle (batchgenerators' field fades to zero at the patch border). Noise is
    scaled by the exact gain of the discrete kernel, so the std is ``std``, not estimated.
    """
    patch = [int(p) for p in patch]
    d = len(patch)
    step = max(1.0, sigma / 3.0)
    s = sigma / step  # smoothing in control-point units
    margin = int(math.ceil(3.0 * s))
    n = [int(math.ceil((p - 1) / step)) + 1 + 2 * margin for p in patch]
    radius = int(4.0 * s + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / s) ** 2)
    kernel /= kernel.sum()
    gain = float(np.sqrt((kernel**2).sum())) ** d  # std of smoothed unit white noise
    noise = rng.standard_normal((d, *n), dtype=np.float32)
    field = np.empty((d, *patch), np.float32)
    for k in range(d):
        smooth = gaussian_filter(noise[k], s, mode="constant", truncate=4.0)
        smooth *= std / gain
        for ax, p in enumerate(patch):  # linear interpolation at voxel i: control margin + i/step
            smooth = _lerp_axis(smooth, margin + np.arange(p) / step, ax)
        field[k] = smooth
    return field


def _lerp_axis(values: np.ndarray, t: np.ndarray, axis: int) -> np.ndarray:
    """``values`` linearly interpolated at fractional indices ``t`` along ``axis``.

    Gathers and multiply-adds rather than an interpolation matrix: BLAS products would start
    OpenBLAS threads, which on a busy machine spin and made one 160x80 product take 10 ms
    instead of 0.02 ms."""
    i0 = np.minimum(np.floor(t).astype(np.intp), values.shape[axis] - 2)
    shape = [1] * values.ndim
    shape[axis] = len(t)
    w = (t - i0).astype(np.float32).reshape(shape)
    lo = np.take(values, i0, axis=axis)
    hi = np.take(values, i0 + 1, axis=axis)
    hi -= lo
    hi *= w
    hi += lo
    return hi


# --------------------------------------------------------------------------- own transforms
def _uniform(lo_hi: Sequence[float]) -> float:
    return float(np.random.uniform(lo_hi[0], lo_hi[1]))


def _generator() -> np.random.Generator:
    """A generator seeded from numpy's global state, so the loader's private slot still decides
    everything. Legacy ``np.random`` draws normal and gamma noise in float64 only; a Generator
    draws float32 directly, 3-4x faster (gamma noise for a 224x288 frame: 2.0 -> 0.6 ms)."""
    return np.random.default_rng(np.random.randint(0, 2**31 - 1, size=2))


class _LazyGenerator:
    """One call's Generator, made (seeded from numpy's global state) at its first use, so a call
    that draws no noise consumes no global random numbers."""

    def __init__(self) -> None:
        self._rng: np.random.Generator | None = None

    def __call__(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = _generator()
        return self._rng


class PerSampleTransform(AbstractTransform):
    """A transform applied to each sample of the batch with probability ``p_per_sample``.

    Subclasses set ``p_per_sample`` and ``data_key`` and implement :meth:`apply`, which draws
    its own parameters (from ``numpy.random``, or from ``rng()`` for bulk noise) and changes
    the sample ``(C, ...)`` in place (returning None) or returns its replacement.
    """

    p_per_sample: float
    data_key: str = "data"

    def apply(
        self, sample: np.ndarray, rng: Callable[[], np.random.Generator]
    ) -> np.ndarray | None:
        raise NotImplementedError

    def __call__(self, **data_dict):
        data = data_dict[self.data_key]
        rng = _LazyGenerator()
        for b in range(data.shape[0]):
            if np.random.uniform() < self.p_per_sample:
                out = self.apply(data[b], rng)
                if out is not None:
                    data[b] = out
        return data_dict


class GhostingTransform(PerSampleTransform):
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

    def apply(self, sample, rng):
        n = int(np.random.randint(self.n_ghosts[0], self.n_ghosts[1] + 1))
        s = _uniform(self.strength)
        axis = int(self.axes[np.random.randint(len(self.axes))])
        return add_ghosts(sample, n, s, axis)


def add_ghosts(x: np.ndarray, period: int, strength: float, axis: int) -> np.ndarray:
    """Multiply every ``period``-th non-zero frequency along ``axis`` by ``1 + strength``.

    A real FFT along that axis only (half the spectrum, single precision for float32 input)."""
    spec = np.fft.rfft(x, axis=axis)
    k = np.arange(spec.shape[axis])
    boost = np.where((k % period == 0) & (k > 0), 1.0 + strength, 1.0).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = len(k)
    spec *= boost.reshape(shape)
    return np.fft.irfft(spec, n=x.shape[axis], axis=axis).astype(x.dtype, copy=False)


class MotionTransform(PerSampleTransform):
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

    def apply(self, sample, rng):
        shift = np.random.uniform(-self.max_shift_vox, self.max_shift_vox, size=2)
        pe_axis = int(np.random.randint(2))  # 0: y, 1: x
        frac = _uniform(self.fraction)
        from_start = bool(np.random.uniform() < 0.5)
        return shift_kspace_lines(sample, (shift[0], shift[1]), pe_axis, frac, from_start)


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
    ``fraction = 1`` translates the whole image (shift theorem; circular).

    The read-out axis is transformed with a real FFT (half the spectrum; the image is real, so
    the other half is the mirrored conjugate and carries the same motion), and only the chosen
    lines are touched: 4x less work than a full complex 2D FFT with a whole-plane ramp.
    """
    pe = -2 if pe_axis == 0 else -1
    ro = -1 if pe_axis == 0 else -2
    n_pe, n_ro = x.shape[pe], x.shape[ro]
    count = int(round(fraction * n_pe))
    if count == 0:
        return x.copy()
    order = np.argsort(np.fft.fftfreq(n_pe))  # acquisition order: -k ... +k
    chosen = np.sort(order[:count] if from_start else order[n_pe - count :])
    d_pe = shift_yx[0] if pe_axis == 0 else shift_yx[1]
    d_ro = shift_yx[1] if pe_axis == 0 else shift_yx[0]
    spec = np.fft.fft(np.fft.rfft(x, axis=ro), axis=pe)
    k_pe = np.fft.fftfreq(n_pe)[chosen]
    k_ro = np.fft.rfftfreq(n_ro)
    ramp = np.exp(-2j * np.pi * (k_pe[:, None] * d_pe + k_ro[None, :] * d_ro))
    if pe_axis == 1:  # spectrum axes are (..., k_ro, k_pe)
        ramp = ramp.T
    ramp = ramp.astype(spec.dtype)
    lines = np.take(spec, chosen, axis=pe)
    lines *= ramp
    if pe_axis == 0:
        spec[..., chosen, :] = lines
    else:
        spec[..., chosen] = lines
    out = np.fft.irfft(np.fft.ifft(spec, axis=pe), n=n_ro, axis=ro)
    return out.astype(x.dtype, copy=False)


def bias_field(shape: Sequence[int], coefficients: np.ndarray, order: int) -> np.ndarray:
    """Smooth multiplicative field ``exp(sum c_ijk x^i y^j z^k)`` with ``0 < i+j+k <= order``
    over ``shape`` (float32); coordinates run over [-1, 1] along the longest axis (shorter axes
    cover proportionally less, so a 3-slice stack does not get the field of a whole volume).

    The polynomial is summed per power of the first axis over the remaining (small) axes and
    only then broadcast: 4 full-size multiply-adds instead of 19 full-size float64 terms."""
    grids = [g.astype(np.float32) for g in _bias_coordinates(shape)]
    terms = _bias_terms(len(shape), order)
    if len(coefficients) != len(terms):
        raise ValueError(f"need {len(terms)} coefficients for order {order}")
    log_field = np.zeros(tuple(shape), dtype=np.float32)
    for p0 in range(order + 1):
        rest: np.ndarray | float = 0.0
        for c, powers in zip(coefficients, terms):
            if powers[0] != p0:
                continue
            term: np.ndarray | float = float(c)
            for g, p in zip(grids[1:], powers[1:]):
                if p:
                    term = term * g**p
            rest = rest + term
        if isinstance(rest, float) and rest == 0.0:
            continue
        log_field += rest * grids[0] ** p0 if p0 else rest
    return np.exp(log_field, out=log_field)


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


def _scale_above_minimum(sample: np.ndarray, factor: np.ndarray) -> None:
    """``x <- m + (x - m) * factor`` per channel of ``sample`` ``(C, ...)``, in place; ``m`` is
    the channel's minimum (the normalised level of zero signal)."""
    for c in range(sample.shape[0]):
        x = sample[c]
        m = x.min()
        x -= m
        x *= factor
        x += m


class BiasFieldTransform(PerSampleTransform):
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

    def apply(self, sample, rng):
        spatial = sample.shape[1:]
        n_terms = len(_bias_terms(len(spatial), self.order))
        coeffs = np.random.uniform(-self.max_coefficient, self.max_coefficient, n_terms)
        _scale_above_minimum(sample, bias_field(spatial, coeffs, self.order))


class SpeckleTransform(PerSampleTransform):
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

    def apply(self, sample, rng):
        looks = _uniform(self.looks)
        grain = _uniform(self.grain_sigma)
        noise = rng().standard_gamma(looks, size=sample.shape[1:], dtype=np.float32)
        sig = [0.0] * (noise.ndim - 2) + [grain, grain]
        noise = gaussian_filter(noise, sig, output=noise)
        noise *= 1.0 / max(float(noise.mean()), 1e-6)
        _scale_above_minimum(sample, noise)


class NoiseTransform(PerSampleTransform):
    """Additive Gaussian noise, std drawn uniformly from ``noise_std`` per sample (what
    batchgenerators and nnU-Net call ``noise_variance`` is used as the std; same numbers), drawn
    in float32 (batchgenerators draws float64: 3x slower for the same noise)."""

    def __init__(
        self,
        noise_std: tuple[float, float] = (0.0, 0.1),
        p_per_sample: float = 0.1,
        data_key: str = "data",
    ):
        self.noise_std = noise_std
        self.p_per_sample = p_per_sample
        self.data_key = data_key

    def apply(self, sample, rng):
        std = _uniform(self.noise_std)
        noise = rng().standard_normal(size=sample.shape, dtype=np.float32)
        noise *= std
        sample += noise


class BlurTransform(PerSampleTransform):
    """Gaussian blur, sigma uniform in ``sigma`` (voxels).

    ``in_plane``: one sigma per sample for every channel and slice, nothing along axis 0 (as
    batchgenerators blurring each slice as a channel, but one filter call per channel instead of
    one per slice). Otherwise each channel is blurred with p ``p_per_channel`` and its own
    sigma, isotropically."""

    def __init__(
        self,
        sigma: tuple[float, float] = (0.5, 1.0),
        in_plane: bool = False,
        p_per_channel: float = 0.5,
        p_per_sample: float = 0.2,
        data_key: str = "data",
    ):
        self.sigma = sigma
        self.in_plane = in_plane
        self.p_per_channel = p_per_channel
        self.p_per_sample = p_per_sample
        self.data_key = data_key

    def apply(self, sample, rng):
        shared = _uniform(self.sigma)
        for x in sample:
            if self.in_plane:
                sig = [0.0] * (x.ndim - 2) + [shared, shared]
            elif np.random.uniform() < self.p_per_channel:
                sig = _uniform(self.sigma)  # type: ignore[assignment]
            else:
                continue
            gaussian_filter(x, sig, output=x)


class LowResolutionTransform(PerSampleTransform):
    """Simulated low resolution: per channel (p ``p_per_channel``) down by a factor drawn from
    ``zoom`` with nearest neighbour, back up linearly, leaving ``ignore_axes`` (axes of one
    channel, e.g. 0 = the thick axis) alone. Separable gathers instead of two
    ``scipy.ndimage.zoom`` calls: 8 ms -> ~1 ms per 24x160x160 channel."""

    def __init__(
        self,
        zoom: tuple[float, float] = (0.5, 1.0),
        p_per_channel: float = 0.5,
        p_per_sample: float = 0.25,
        ignore_axes: tuple[int, ...] = (),
        data_key: str = "data",
    ):
        self.zoom = zoom
        self.p_per_channel = p_per_channel
        self.p_per_sample = p_per_sample
        self.ignore_axes = ignore_axes
        self.data_key = data_key

    def apply(self, sample, rng):
        for c in range(sample.shape[0]):
            if np.random.uniform() < self.p_per_channel:
                zoom = _uniform(self.zoom)
                sample[c] = simulate_low_resolution(sample[c], zoom, self.ignore_axes)


def simulate_low_resolution(
    x: np.ndarray, zoom: float, ignore_axes: Sequence[int] = ()
) -> np.ndarray:
    """``x`` sampled down to ``round(n * zoom)`` voxels per axis (nearest, at the centres of
    the coarse voxels) and interpolated back up linearly (float32)."""
    out = x.astype(np.float32, copy=False)
    for ax, n in enumerate(x.shape):
        m = max(1, int(round(n * zoom)))
        if ax in ignore_axes or m >= n:
            continue
        down = np.minimum(((np.arange(m) + 0.5) * n / m).astype(np.intp), n - 1)
        out = np.take(out, down, axis=ax)
        if m == 1:
            out = np.repeat(out, n, axis=ax)
            continue
        t = np.clip((np.arange(n) + 0.5) * m / n - 0.5, 0.0, m - 1.0)
        out = _lerp_axis(out, t, ax)
    return out


# --------------------------------------------------------------------------- pipeline
class Augmenter:
    """Spatial + intensity augmentation of one configuration. Holds the built transforms,
    hence a class.

    Spatial augmentation is per sample and happens while reading (:meth:`draw_warp` gives the
    parameters, :func:`sample_offsets` the sample positions that
    :func:`autoseg.data.sampler.read_patch` interpolates at), so only the final patch is ever
    resampled. :meth:`intensity` then works on the batch ``(B, C, Z, Y, X)`` of final patches
    with labels ``(B, 1, Z', Y, X)``; in-plane settings keep ``Z``.
    """

    def __init__(self, profile: AugmentationProfile, spatial: SpatialSettings):
        self.profile = profile
        self.spatial = spatial
        p = profile
        sp = spatial
        chain: list[AbstractTransform] = []  # the order of augmentation.md
        if p.p_bias_field > 0:
            chain.append(BiasFieldTransform(p_per_sample=p.p_bias_field))
        if p.p_ghosting > 0:
            chain.append(GhostingTransform(p_per_sample=p.p_ghosting))
        if p.p_motion > 0:
            chain.append(MotionTransform(p_per_sample=p.p_motion))
        if p.p_speckle > 0:
            chain.append(SpeckleTransform(p_per_sample=p.p_speckle))
        if p.p_noise > 0:
            chain.append(NoiseTransform(p.noise_variance, p_per_sample=p.p_noise))
        if p.p_blur > 0:
            chain.append(BlurTransform(p.blur_sigma, in_plane=sp.in_plane, p_per_sample=p.p_blur))
        if p.p_brightness > 0:
            chain.append(
                BrightnessMultiplicativeTransform(p.brightness, p_per_sample=p.p_brightness)
            )
        if p.p_contrast > 0:
            chain.append(ContrastAugmentationTransform(p.contrast, p_per_sample=p.p_contrast))
        if p.p_low_resolution > 0:
            chain.append(
                LowResolutionTransform(
                    p.low_resolution_zoom,
                    p_per_sample=p.p_low_resolution,
                    ignore_axes=(0,) if sp.in_plane else (),
                )
            )
        if p.p_gamma_inverted > 0:
            chain.append(
                GammaTransform(
                    p.gamma,
                    invert_image=True,
                    per_channel=True,
                    retain_stats=True,
                    p_per_sample=p.p_gamma_inverted,
                )
            )
        if p.p_gamma > 0:
            chain.append(
                GammaTransform(
                    p.gamma,
                    invert_image=False,
                    per_channel=True,
                    retain_stats=True,
                    p_per_sample=p.p_gamma,
                )
            )
        self.transforms = Compose(chain) if chain else None

    def draw_warp(self, rng: np.random.Generator) -> Warp:
        """One sample's spatial augmentation (see :func:`draw_warp`)."""
        return draw_warp(self.spatial, rng)

    def offsets(self, warp: Warp) -> np.ndarray | None:
        """Sample positions of ``warp`` over this configuration's patch (None: unmoved)."""
        return sample_offsets(self.spatial.patch, warp)

    def intensity(self, data: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Intensity augmentation of a batch of final patches (float32, in place where it can);
        draws from numpy's global generator (the loader swaps in its own state)."""
        if self.transforms is not None:
            out = self.transforms(data=data, seg=seg)
            data, seg = out["data"], out["seg"]
        return np.ascontiguousarray(data, dtype=np.float32), seg
