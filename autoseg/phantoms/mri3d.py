"""3D thigh-MRI-like sciatic-nerve phantoms.

Each case is a stack of axial slices through a thigh, array order (z, y, x), slice 0 distal
(towards the knee: with an identity direction in LPS, z grows towards the head). y grows
posteriorly, x medially for a right thigh; a subject's second scan is the contralateral thigh
(mirrored in x). Everything is drawn per slice as ellipses whose centres, radii and angles are
smooth functions of z and broadcast against the in-plane grid, so a case costs a few dozen
whole-volume numpy operations and no Python loop over voxels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from autoseg.errors import AutosegError
from autoseg.phantoms.common import (
    KIND_MRI3D,
    PURPOSE_BRANCH,
    PURPOSE_CASE,
    PURPOSE_COHORT,
    PURPOSE_LAYOUT,
    PURPOSE_SUBJECT,
    PhantomCase,
    check_seed,
    ellipse_rho,
    evenly_spread_flag,
    make_rng,
    mean_slice_area_mm2,
    smooth_field,
    soft_inside,
    subject_of_case,
)

DEFAULT_CASES = 20

# Tissue signal before bias, noise and gain (arbitrary units; int16 after a gain of 0.6-1.6).
# Ordered as on T2-weighted TSE without fat suppression: fat > marrow > vessel ~ nerve > muscle
# >> cortical bone ~ air.
FAT = 1000.0
MARROW = 850.0
NERVE = 560.0
MUSCLE = 380.0
CORTEX = 40.0


@dataclass(frozen=True)
class Mri3dConfig:
    """Parameters of the 3D phantom; lengths in mm, ranges are (low, high) of a uniform draw.

    The body (thigh outline, fat, femur) scales with the field of view, as a radiographer sets
    the FOV to the thigh; nerve and vessels have absolute sizes, so their voxel fraction falls
    as the FOV grows, as in real scans.
    """

    shape: tuple[int, int, int] = (24, 160, 160)  # (z, y, x)
    spacing: tuple[float, float, float] = (3.0, 0.75, 0.75)  # mm, array order
    patient_fraction: float = 0.4  # of subjects
    branch_fraction: float = 0.3  # of cases
    second_scan_fraction: float = 0.5  # of subjects scanned twice (other thigh)
    nerve_radius_mm: tuple[float, float] = (3.0, 4.5)  # volunteers, equivalent radius
    patient_enlargement: tuple[float, float] = (1.4, 1.8)  # radius factor in neuropathy
    patient_hyperintensity: tuple[float, float] = (1.3, 1.6)  # T2 signal factor in neuropathy
    n_vessels: tuple[int, int] = (1, 3)
    vessel_radius_mm: tuple[float, float] = (2.5, 4.5)
    vessel_brightness: tuple[float, float] = (1.1, 1.6)  # relative to a volunteer's nerve
    noise_sigma: tuple[float, float] = (0.025, 0.05)  # relative to the fat signal
    bias_strength: float = 0.25  # std of the log of the multiplicative bias field

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or self.shape[0] < 6 or min(self.shape[1:]) < 32:
            raise AutosegError(
                f"mri3d shape {tuple(self.shape)} is too small",
                fix="give (z, y, x) with z >= 6 and y, x >= 32, e.g. 24,160,160",
            )
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise AutosegError(f"mri3d spacing {self.spacing} must be 3 positive numbers")
        for name in ("patient_fraction", "branch_fraction", "second_scan_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise AutosegError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.n_vessels[0] <= self.n_vessels[1]:
            raise AutosegError(f"n_vessels {self.n_vessels} must be (low, high) with low >= 0")


@dataclass(frozen=True)
class _Subject:
    """Anatomy shared by a subject's scans (fractions are of the thigh semi-axes)."""

    patient: bool
    thigh_ax: float  # fraction of the x field of view
    thigh_ay: float
    taper: float  # relative narrowing from proximal to distal end
    fat: float  # subcutaneous fat thickness, fraction of the smaller semi-axis
    femur_x: float
    femur_y: float
    femur_r: float
    cortex: float  # cortical thickness, fraction of the femur radius
    nerve_x: float
    nerve_y: float
    nerve_r_mm: float
    ellipticity: float  # nerve major/minor axis ratio
    nerve_level: float


def _scans_of_subject(seed: int, subject: int, cfg: Mri3dConfig) -> int:
    rng = make_rng(seed, KIND_MRI3D, PURPOSE_LAYOUT, subject)
    return 2 if rng.random() < cfg.second_scan_fraction else 1


def _draw_subject(rng: np.random.Generator, cfg: Mri3dConfig, patient: bool) -> _Subject:
    radius = rng.uniform(*cfg.nerve_radius_mm)
    enlarge = rng.uniform(*cfg.patient_enlargement)
    bright = rng.uniform(*cfg.patient_hyperintensity)
    return _Subject(
        patient=patient,
        thigh_ax=rng.uniform(0.40, 0.46),
        thigh_ay=rng.uniform(0.34, 0.40),
        taper=rng.uniform(0.04, 0.12),
        fat=rng.uniform(0.08, 0.18),
        femur_x=rng.uniform(0.0, 0.15),
        femur_y=rng.uniform(0.08, 0.20),
        femur_r=rng.uniform(0.22, 0.27),
        cortex=rng.uniform(0.35, 0.45),
        nerve_x=rng.uniform(-0.15, 0.15),
        nerve_y=rng.uniform(0.36, 0.48),
        nerve_r_mm=radius * (enlarge if patient else 1.0),
        ellipticity=rng.uniform(1.15, 1.6),
        nerve_level=NERVE * (bright if patient else 1.0),
    )


def make_mri3d_case(index: int, seed: int = 0, config: Mri3dConfig | None = None) -> PhantomCase:
    """Case ``index`` of the 3D phantom with this seed: image (int16) and mask (uint8, 0/1).

    Depends only on (seed, index, config): case ``i`` is the same in every phantom that has it.
    """
    cfg = config or Mri3dConfig()
    seed = check_seed(seed)
    if index < 0:
        raise ValueError(f"case index must be >= 0, got {index}")
    subject, scan = subject_of_case(index, lambda s: _scans_of_subject(seed, s, cfg))
    patient = evenly_spread_flag(seed, KIND_MRI3D, PURPOSE_COHORT, subject, cfg.patient_fraction)
    branch = evenly_spread_flag(seed, KIND_MRI3D, PURPOSE_BRANCH, index, cfg.branch_fraction)
    anatomy = _draw_subject(make_rng(seed, KIND_MRI3D, PURPOSE_SUBJECT, subject), cfg, patient)
    rng = make_rng(seed, KIND_MRI3D, PURPOSE_CASE, index)
    image, mask, vessel_mask, details = _render(rng, cfg, anatomy, branch)
    if scan % 2 == 1:  # the other thigh: mirror medial/lateral
        image, mask, vessel_mask = image[:, :, ::-1], mask[:, :, ::-1], vessel_mask[:, :, ::-1]
    origin = details.pop("origin")
    sz, sy, sx = cfg.spacing
    return PhantomCase(
        case_id=f"thigh_{index:03d}",
        subject=f"sub_{subject:03d}",
        cohort="patient" if patient else "volunteer",
        image=np.ascontiguousarray(image),
        mask=np.ascontiguousarray(mask),
        spacing=tuple(float(s) for s in cfg.spacing),
        origin=origin,
        has_branch=branch,
        n_vessels=int(details["n_vessels"]),
        nerve_area_mm2=mean_slice_area_mm2(mask, sy * sx),
        details={k: float(v) for k, v in details.items()},
        vessel_mask=np.ascontiguousarray(vessel_mask),
    )


def _wave(
    rng: np.random.Generator,
    t: np.ndarray,
    amp: tuple[float, float],
    cycles: tuple[float, float] = (0.3, 0.9),
) -> np.ndarray:
    """A smooth per-slice curve a*sin(2*pi*f*t + phase): one random wave over the stack.

    0.3-0.9 cycles over 24 slices of 3 mm is a period of 80-240 mm, the scale over which the
    sciatic nerve meanders in the thigh.
    """
    a = rng.uniform(*amp)
    f = rng.uniform(*cycles)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    return (a * np.sin(2.0 * math.pi * f * t + phase)).astype(np.float32)


def _render(
    rng: np.random.Generator, cfg: Mri3dConfig, subj: _Subject, branch: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    nz, ny, nx = cfg.shape
    sz, sy, sx = cfg.spacing
    shape = (nz, ny, nx)
    t = np.linspace(0.0, 1.0, nz, dtype=np.float32)[:, None, None]  # 0 distal, 1 proximal
    y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * sy)[None, :, None]
    x = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * sx)[None, None, :]
    fov_y, fov_x = ny * sy, nx * sx

    # Thigh outline and subcutaneous fat: an ellipse narrowing distally, muscle inside it.
    cx = rng.uniform(-0.03, 0.03) * fov_x
    cy = rng.uniform(-0.03, 0.03) * fov_y
    narrowing = 1.0 - subj.taper * (1.0 - t)
    ax = subj.thigh_ax * fov_x * narrowing
    ay = subj.thigh_ay * fov_y * narrowing
    body_rho = ellipse_rho(x, y, cx, cy, ax, ay, rng.uniform(-0.15, 0.15))
    body_sd = (body_rho - 1.0) * np.sqrt(ax * ay)
    fat_mm = subj.fat * np.minimum(ax, ay)
    edge_field = smooth_field(rng, shape, (2.0, 12.0 / sy, 12.0 / sx))
    body_w = soft_inside(body_sd, 0.4)
    muscle_w = soft_inside(body_sd + fat_mm * (1.0 + 0.3 * edge_field), 0.6)

    # Sciatic nerve: a meandering elliptic tube, optionally splitting distally.
    ncx = cx + subj.nerve_x * ax + _wave(rng, t, (1.5, 4.0)) + rng.uniform(-3, 3) * (t - 0.5)
    ncy = cy + subj.nerve_y * ay + _wave(rng, t, (1.5, 4.0)) + rng.uniform(-3, 3) * (t - 0.5)
    r = subj.nerve_r_mm * rng.uniform(0.93, 1.07) * (1.0 + _wave(rng, t, (0.04, 0.10)))
    ell = subj.ellipticity
    theta = rng.uniform(-0.5, 0.5) + _wave(rng, t, (0.05, 0.25))
    details: dict = {"radius_mm": float(r.mean()), "branch_slices": 0.0}
    if branch:
        nerve_sd, offset_max, n_branched = _branched_nerve(rng, x, y, t, ncx, ncy, r, ell, theta)
        details["branch_slices"] = float(n_branched)
    else:
        rho = ellipse_rho(x, y, ncx, ncy, r * math.sqrt(ell), r / math.sqrt(ell), theta)
        nerve_sd = (rho - 1.0) * r
        offset_max = 0.0
    mask = (nerve_sd < 0).astype(np.uint8)

    # Vessels: bright round tubes beside the nerve, never labelled, on alternating sides
    # (medial/lateral, up to 35 degrees off; anteriorly lies the femur). The first on a side
    # clears the nerve and a branch's offset by a 1-8 mm gap, a third one the first by 0.5-3 mm.
    n_vessels = int(rng.integers(cfg.n_vessels[0], cfg.n_vessels[1] + 1))
    taken = [float(r.max()) * math.sqrt(ell) + offset_max] * 2
    first_side = int(rng.integers(0, 2))
    vessels = []
    for k in range(n_vessels):
        side = (first_side + k) % 2
        rv = rng.uniform(*cfg.vessel_radius_mm)
        gap = rng.uniform(1.0, 8.0) if k < 2 else rng.uniform(0.5, 3.0)  # veins hug arteries
        dist = taken[side] + gap + rv * 1.1
        taken[side] = dist + rv * 1.1
        phi = side * math.pi + rng.uniform(-0.6, 0.6) + _wave(rng, t, (0.05, 0.2))
        rvz = rv * (1.0 + _wave(rng, t, (0.02, 0.06)))
        # Stay inside the muscle: at most up to its border (inside the fat, 1.3x its mean
        # thickness to allow for the irregular edge) minus the vessel's radius and 1 mm.
        room = _ray_to_ellipse(
            ncx, ncy, np.cos(phi), np.sin(phi), cx, cy, ax - 1.3 * fat_mm, ay - 1.3 * fat_mm
        )
        dist = np.minimum(dist, room - 1.1 * rvz - 1.0)
        vrho = ellipse_rho(
            x,
            y,
            ncx + dist * np.cos(phi),
            ncy + dist * np.sin(phi),
            rvz * 1.05,
            rvz / 1.05,
            rng.uniform(0.0, math.pi),
        )
        level = NERVE * rng.uniform(*cfg.vessel_brightness)
        level = level * (1.0 + _wave(rng, t, (0.03, 0.10), (0.5, 1.5)))  # inflow varies
        vessels.append(((vrho - 1.0) * rvz, level))

    # Femur: dark cortical ring around bright fatty marrow, anterior-medial.
    fcx = cx + subj.femur_x * ax + rng.uniform(-4, 4) * (t - 0.5)
    fcy = cy - subj.femur_y * ay
    fr = subj.femur_r * np.minimum(ax, ay)
    femur_sd = (ellipse_rho(x, y, fcx, fcy, fr * 1.06, fr / 1.06, rng.uniform(0, math.pi)) - 1) * fr

    # Textures: muscle grain (6 mm), fat (10 mm), fat septa as zero-crossings of a 15 mm field,
    # fascicles elongated along the nerve (1 mm in-plane, 6 mm along z), perineural fat halo.
    muscle_tex = smooth_field(rng, shape, (2.0, 6.0 / sy, 6.0 / sx))
    fat_tex = smooth_field(rng, shape, (2.0, 10.0 / sy, 10.0 / sx))
    septa = np.exp(-((smooth_field(rng, shape, (3.0, 15.0 / sy, 15.0 / sx)) / 0.08) ** 2))
    fascicles = smooth_field(rng, shape, (6.0 / sz, 1.0 / sy, 1.0 / sx))
    halo_tex = smooth_field(rng, shape, (2.0, 4.0 / sy, 4.0 / sx))
    bias_tex = smooth_field(rng, shape, (max(2.0, 40.0 / sz), 50.0 / sy, 50.0 / sx))

    fat = FAT * (1.0 + 0.04 * fat_tex)
    signal = body_w * fat
    muscle = MUSCLE * (1.0 + 0.08 * muscle_tex)
    muscle += septa * 0.7 * (fat - muscle)
    signal += muscle_w * (muscle - signal)
    bundle_sd = nerve_sd
    for vessel_sd, _ in vessels:
        bundle_sd = np.minimum(bundle_sd, vessel_sd)
    halo_mm = rng.uniform(1.2, 2.5) * (1.0 + 0.4 * halo_tex)
    signal += muscle_w * soft_inside(bundle_sd - halo_mm, 0.5) * (fat - signal)
    vessel_mask = np.zeros(shape, dtype=bool)
    for vessel_sd, level in vessels:
        signal += soft_inside(vessel_sd, 0.35) * (level - signal)
        vessel_mask |= vessel_sd < 0
    vessel_mask &= (mask == 0) & (femur_sd > 0)  # what is visible of them
    signal += soft_inside(femur_sd, 0.3) * (CORTEX - signal)
    marrow = MARROW * (1.0 + 0.05 * fat_tex)
    signal += soft_inside(femur_sd + subj.cortex * fr, 0.4) * (marrow - signal)
    nerve = subj.nerve_level * (1.0 + 0.15 * np.tanh(1.5 * fascicles))
    signal += soft_inside(nerve_sd, 0.35) * (nerve - signal)

    # Acquisition: smooth bias (coil sensitivity falls off across the thigh), point-spread
    # blur of half a voxel in-plane, Rician noise (magnitude of complex Gaussian), scanner gain.
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ramp = (x * math.cos(angle) + y * math.sin(angle)) / (0.5 * max(fov_x, fov_y))
    signal *= np.exp(cfg.bias_strength * bias_tex + rng.uniform(0.1, 0.3) * ramp)
    signal = ndimage.gaussian_filter(signal, sigma=(0.0, 0.5, 0.5), mode="nearest")
    sigma = rng.uniform(*cfg.noise_sigma) * FAT
    real = signal + sigma * rng.standard_normal(shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(shape, dtype=np.float32)
    gain = rng.uniform(0.6, 1.6)
    magnitude = np.sqrt(real * real + imag * imag) * gain
    image = np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)

    # Non-zero origin so that geometry must round-trip; multiples of 1/16 mm are exact in
    # the float32 fields of a NIfTI header.
    origin = tuple(
        round(v * 16) / 16
        for v in (
            -fov_x / 2 + rng.uniform(-20, 20),
            -fov_y / 2 + rng.uniform(-20, 20),
            rng.uniform(-450, -150),
        )
    )
    details.update(n_vessels=n_vessels, noise_sigma=sigma * gain, gain=gain, origin=origin)
    return image, mask, vessel_mask, details


def _ray_to_ellipse(
    px: np.ndarray,
    py: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    cx: float,
    cy: float,
    a: np.ndarray,
    b: np.ndarray,
) -> np.ndarray:
    """Distance from a point inside an axis-aligned ellipse to its border along (dx, dy).

    Solves |((p + s*d) - c) / (a, b)| = 1 for the positive root s; all inputs broadcast.
    """
    qx, qy = (px - cx) / a, (py - cy) / b
    ux, uy = dx / a, dy / b
    qa = ux * ux + uy * uy
    qb = 2.0 * (qx * ux + qy * uy)
    qc = qx * qx + qy * qy - 1.0
    return (-qb + np.sqrt(np.maximum(qb * qb - 4.0 * qa * qc, 0.0))) / (2.0 * qa)


def _branched_nerve(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    r: np.ndarray,
    ell: float,
    theta: np.ndarray,
) -> tuple[np.ndarray, float, int]:
    """Signed distance (mm, approximate) of a nerve that splits into tibial and peroneal parts.

    The distal 30-50 % of the slices are branched. From the split point down, the two branches
    grow from the trunk's size to areas of 55-65 % (tibial) and 35-45 % (peroneal) of it, times
    1.08^2 for their own epineurium, become rounder, and move apart until, at the distal end,
    they are separated by a 2.5-5 mm gap so that at least the last slices hold two components.
    Returns (signed distance, largest branch offset from the centre line, branched slices).
    """
    nz = t.shape[0]
    n_branched = int(np.clip(round(rng.uniform(0.3, 0.5) * nz), 3, nz - 2))
    s = np.clip((n_branched - np.arange(nz, dtype=np.float32)) / n_branched, 0.0, 1.0)
    s = s[:, None, None]  # 0 at and above the split, 1 at the distal end
    tibial = rng.uniform(0.55, 0.65)
    gap = rng.uniform(2.5, 5.0)
    psi = rng.uniform(-0.5, 0.5) + (math.pi if rng.random() < 0.5 else 0.0)
    w = np.minimum(1.0, 1.6 * s)
    r_t = r * (1 - w) + r * math.sqrt(tibial) * 1.08 * w
    r_p = r * (1 - w) + r * math.sqrt(1 - tibial) * 1.08 * w
    e = ell * (1 - w) + 1.1 * w
    apart = float((r_t[0] + r_p[0]).max()) * math.sqrt(1.1) + gap
    d = apart * s**0.8
    ux, uy = math.cos(psi), math.sin(psi)
    # Offsets keep the area-weighted centre on the trunk's path.
    rho_t = ellipse_rho(
        x,
        y,
        cx + (1 - tibial) * d * ux,
        cy + (1 - tibial) * d * uy,
        r_t * np.sqrt(e),
        r_t / np.sqrt(e),
        theta,
    )
    rho_p = ellipse_rho(
        x,
        y,
        cx - tibial * d * ux,
        cy - tibial * d * uy,
        r_p * np.sqrt(e),
        r_p / np.sqrt(e),
        theta,
    )
    sd = np.minimum((rho_t - 1.0) * r_t, (rho_p - 1.0) * r_p)
    return sd, tibial * apart, n_branched
