"""2D ultrasound-like median-nerve phantoms (transverse wrist frames, linear probe).

A frame is built the way a scanner forms one: an echogenicity map (how strongly each tissue
scatters) times complex Gaussian scatterers, blurred by the point-spread function, attenuated
along each beam (column) by what lies above, amplified by the frame's gain, log-compressed to
grey values and framed by black side bands. Rows are depth (y, top = transducer), columns are
lateral position (x); everything is specified in mm and drawn on the pixel grid given by the
shape and the imaging depth, so a larger shape gives the same anatomy at a finer pixel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from autoseg.errors import AutosegError
from autoseg.phantoms.common import (
    KIND_US2D,
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

DEFAULT_CASES = 30

# Echogenicity (scattering amplitude relative to muscle/connective tissue = 1).
TISSUE = 1.0
SUBCUTIS = 0.55
EPINEURIUM = 2.5  # hyperechoic connective tissue between fascicles
RIM = 4.0  # bright epineurial rim outlining the nerve
FASCICLE = 0.3  # hypoechoic fascicles: the "honeycomb"
TENDON = 2.6
VESSEL = 0.1  # anechoic lumen: only faint noise inside
BONE = 15.0


@dataclass(frozen=True)
class Us2dConfig:
    """Parameters of the 2D phantom; lengths in mm, ranges are (low, high) of a uniform draw."""

    shape: tuple[int, int] = (256, 320)  # (y = depth, x = lateral) pixels
    depth_mm: float = 25.0  # imaging depth covered by the rows; pixel size = depth / rows
    patient_fraction: float = 0.4  # of subjects
    frames_per_subject: tuple[int, int] = (3, 5)
    nerve_area_mm2: tuple[float, float] = (7.0, 11.0)  # volunteers' median-nerve CSA
    patient_enlargement: tuple[float, float] = (1.4, 1.8)  # CSA factor (carpal tunnel syndrome)
    n_vessels: tuple[int, int] = (1, 2)
    vessel_radius_mm: tuple[float, float] = (1.0, 2.0)
    n_tendons: tuple[int, int] = (1, 3)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    dynamic_range_db: float = 40.0

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 48:
            raise AutosegError(
                f"us2d shape {tuple(self.shape)} is too small",
                fix="give (y, x) with both >= 48, e.g. 256,320 (the real frames are ~470,600)",
            )
        if self.depth_mm <= 0 or self.dynamic_range_db <= 0:
            raise AutosegError("depth_mm and dynamic_range_db must be positive")
        if not 0.0 <= self.patient_fraction <= 1.0:
            raise AutosegError(f"patient_fraction must lie in [0, 1], got {self.patient_fraction}")
        if not 1 <= self.frames_per_subject[0] <= self.frames_per_subject[1]:
            raise AutosegError(
                f"frames_per_subject {self.frames_per_subject} must be (lo >= 1, hi)"
            )
        if not 0 <= self.n_vessels[0] <= self.n_vessels[1]:
            raise AutosegError(f"n_vessels {self.n_vessels} must be (low, high) with low >= 0")

    @property
    def pixel_mm(self) -> float:
        return self.depth_mm / self.shape[0]


@dataclass(frozen=True)
class _Subject:
    patient: bool
    area_mm2: float
    flattening: float  # major/minor axis ratio; the median nerve at the wrist is oval
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) of outline harmonics 2..4
    fascicle_r_mm: tuple[float, float]
    epineurium: float
    subcutis_mm: float
    tissue_level: float


def _frames_of_subject(seed: int, subject: int, cfg: Us2dConfig) -> int:
    rng = make_rng(seed, KIND_US2D, PURPOSE_LAYOUT, subject)
    return int(rng.integers(cfg.frames_per_subject[0], cfg.frames_per_subject[1] + 1))


def _draw_subject(rng: np.random.Generator, cfg: Us2dConfig, patient: bool) -> _Subject:
    area = rng.uniform(*cfg.nerve_area_mm2)
    enlarge = rng.uniform(*cfg.patient_enlargement)
    harmonics = tuple((rng.uniform(0.0, 0.05), rng.uniform(0, 2 * math.pi)) for _ in range(3))
    # Neuropathy: swollen, hypoechoic fascicles and a less echogenic epineurium.
    fascicle = (0.2, 0.35) if not patient else (0.28, 0.45)
    return _Subject(
        patient=patient,
        area_mm2=area * (enlarge if patient else 1.0),
        flattening=rng.uniform(1.6, 2.6),
        harmonics=harmonics,
        fascicle_r_mm=fascicle,
        epineurium=EPINEURIUM * (rng.uniform(0.6, 0.8) if patient else rng.uniform(0.9, 1.1)),
        subcutis_mm=rng.uniform(1.5, 3.5),
        tissue_level=rng.uniform(0.8, 1.2),
    )


def make_us2d_case(index: int, seed: int = 0, config: Us2dConfig | None = None) -> PhantomCase:
    """Frame ``index`` of the 2D phantom with this seed: image (uint8) and mask (uint8, 0/1)."""
    cfg = config or Us2dConfig()
    seed = check_seed(seed)
    if index < 0:
        raise ValueError(f"case index must be >= 0, got {index}")
    subject, _ = subject_of_case(index, lambda s: _frames_of_subject(seed, s, cfg))
    patient = evenly_spread_flag(seed, KIND_US2D, PURPOSE_COHORT, subject, cfg.patient_fraction)
    anatomy = _draw_subject(make_rng(seed, KIND_US2D, PURPOSE_SUBJECT, subject), cfg, patient)
    rng = make_rng(seed, KIND_US2D, PURPOSE_CASE, index)
    image, mask, vessel_mask, details = _render(rng, cfg, anatomy)
    px = cfg.pixel_mm
    return PhantomCase(
        case_id=f"wrist_{index:03d}",
        subject=f"sub_{subject:03d}",
        cohort="patient" if patient else "volunteer",
        image=image,
        mask=mask,
        spacing=(px, px),
        origin=(0.0, 0.0),
        has_branch=False,
        n_vessels=int(details["n_vessels"]),
        nerve_area_mm2=mean_slice_area_mm2(mask, px * px),
        details={k: float(v) for k, v in details.items()},
        vessel_mask=vessel_mask,
    )


def _place_fascicles(
    rng: np.random.Generator, n_target: int, radius_mm: tuple[float, float], a: float, b: float
) -> list[tuple[float, float, float]]:
    """Non-overlapping fascicles (u, v, r) in the nerve's own frame, by dart throwing.

    At most 12 * n_target darts (a loop over darts, not pixels); each is kept if it lies inside
    the ellipse shrunk by its radius plus a 0.1 mm epineurial wall and clears the kept ones.
    """
    kept: list[tuple[float, float, float]] = []
    for _ in range(12 * n_target):
        if len(kept) >= n_target:
            break
        r = rng.uniform(*radius_mm)
        ang = rng.uniform(0, 2 * math.pi)
        rad = math.sqrt(rng.random())
        u, v = rad * a * math.cos(ang), rad * b * math.sin(ang)
        inner_a, inner_b = a - r - 0.1, b - r - 0.1
        if inner_a <= 0 or inner_b <= 0 or (u / inner_a) ** 2 + (v / inner_b) ** 2 > 1:
            continue
        if all(math.hypot(u - ku, v - kv) > r + kr + 0.06 for ku, kv, kr in kept):
            kept.append((u, v, r))
    return kept


def _render(
    rng: np.random.Generator, cfg: Us2dConfig, subj: _Subject
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    ny, nx = cfg.shape
    px = cfg.pixel_mm
    width_mm = nx * px
    y = ((np.arange(ny, dtype=np.float32) + 0.5) * px)[:, None]  # depth below the probe, mm
    x = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * px)[None, :]

    # Scanner framing: black bands left and right (3-9 % of the width each), sometimes below.
    pad_l = int(round(rng.uniform(0.03, 0.09) * nx))
    pad_r = int(round(rng.uniform(0.03, 0.09) * nx))
    pad_b = int(round(rng.uniform(0.0, 0.06) * ny)) if rng.random() < 0.5 else 0
    x_lo = (pad_l - (nx - 1) / 2) * px
    x_hi = (nx - 1 - pad_r - (nx - 1) / 2) * px

    # Median nerve: flattened oval, 15-35 % of the depth down, anywhere laterally with a margin.
    area = subj.area_mm2 * rng.uniform(0.92, 1.08)  # probe pressure flattens it a little
    b = math.sqrt(area / (math.pi * subj.flattening))
    a = b * subj.flattening
    margin = a + 1.0
    ncx = rng.uniform(x_lo + margin, x_hi - margin) if x_hi - x_lo > 2 * margin else 0.0
    ncy = rng.uniform(0.15, 0.35) * cfg.depth_mm + b
    tilt = rng.uniform(-0.25, 0.25)
    du, dv = x - ncx, y - ncy
    u = du * math.cos(tilt) + dv * math.sin(tilt)
    v = -du * math.sin(tilt) + dv * math.cos(tilt)
    ang = np.arctan2(v / b, u / a)
    wobble = 1.0 + sum(amp * np.cos(k * ang + ph) for k, (amp, ph) in enumerate(subj.harmonics, 2))
    nerve_rho = np.sqrt((u / a) ** 2 + (v / b) ** 2) / wobble
    mask = (nerve_rho < 1.0).astype(np.uint8)
    nerve_sd = (nerve_rho - 1.0) * b

    # Background: tissue with horizontal fibre streaks, subcutis, skin line, fascial lines.
    streaks = smooth_field(rng, cfg.shape, (0.25 / px, 2.5 / px))
    regional = smooth_field(rng, cfg.shape, (4.0 / px, 6.0 / px))
    echo = subj.tissue_level * TISSUE * np.exp(0.35 * streaks + 0.5 * regional)
    sub_w = soft_inside(y - subj.subcutis_mm * (1 + 0.15 * regional), 0.2)
    echo = echo + sub_w * (SUBCUTIS * np.exp(0.2 * regional) - echo)
    skin_depth = rng.uniform(0.3, 0.6)
    echo = echo + 3.0 * np.exp(-(((y - skin_depth) / 0.12) ** 2))
    for _ in range(int(rng.integers(3, 7))):
        y0 = rng.uniform(0.05, 0.95) * cfg.depth_mm
        amp = rng.uniform(0.1, 1.5)
        period = rng.uniform(10.0, 40.0)
        ph = rng.uniform(0, 2 * math.pi)
        centre, half = rng.uniform(-0.5, 0.5) * width_mm, rng.uniform(0.15, 0.6) * width_mm
        line = np.exp(-(((y - y0 - amp * np.sin(2 * math.pi * x / period + ph)) / 0.1) ** 2))
        extent = soft_inside(np.abs(x - centre) - half, 1.0)
        echo = echo + rng.uniform(2.0, 5.0) * line * extent
    alpha = np.zeros(cfg.shape, dtype=np.float32)  # extra attenuation, dB per mm

    # Flexor tendons: bright fibrillar ovals below and beside the nerve (unlabelled).
    n_tendons = int(rng.integers(cfg.n_tendons[0], cfg.n_tendons[1] + 1))
    for k in range(n_tendons):
        ta, tb = rng.uniform(1.5, 2.5), rng.uniform(1.0, 1.6)
        side = -1.0 if k % 2 else 1.0
        tcx = ncx + side * rng.uniform(0.0, a + ta + 2.0) * (k > 0)
        tcy = ncy + b + tb + rng.uniform(0.5, 3.0)
        trho = ellipse_rho(x, y, tcx, tcy, ta, tb, rng.uniform(-0.3, 0.3))
        tw = soft_inside((trho - 1.0) * tb, 0.08)
        fibres = 1.0 + 0.5 * np.cos(2 * math.pi * (y - tcy) / rng.uniform(0.25, 0.4))
        echo = echo + tw * (TENDON * fibres - echo)
        alpha = alpha + tw * 1.2

    # Vessels: anechoic round lumens with a thin bright wall beside the nerve (unlabelled),
    # alternating sides; a second vessel on the same side sits beyond the first. Fluid
    # attenuates less than tissue, so the region below them is brighter.
    n_vessels = int(rng.integers(cfg.n_vessels[0], cfg.n_vessels[1] + 1))
    first_side = 1.0 if rng.random() < 0.5 else -1.0
    taken = {1.0: a, -1.0: a}  # lateral distance from the nerve centre already occupied
    vessel_sd = np.full(cfg.shape, np.inf, dtype=np.float32)
    for k in range(n_vessels):
        rv = rng.uniform(*cfg.vessel_radius_mm)
        squash = rng.uniform(1.0, 1.5)  # veins are compressed by the probe
        half_width = rv * math.sqrt(squash)
        gap = rng.uniform(0.5, 4.0)
        side = first_side * (1.0 if k % 2 == 0 else -1.0)
        if not x_lo < ncx + side * (taken[side] + gap + 2 * half_width) < x_hi:
            side = -side  # keep it in view: the sonographer centres the bundle, not the edge
        reach = taken[side] + gap + half_width
        taken[side] = reach + half_width
        vcx = ncx + side * reach
        vcy = ncy + rng.uniform(-1.5, 2.0)
        vrho = ellipse_rho(x, y, vcx, vcy, half_width, rv / math.sqrt(squash), 0.0)
        vessel_sd = np.minimum(vessel_sd, (vrho - 1.0) * rv)
    if n_vessels:
        lumen = soft_inside(vessel_sd, 0.05)
        echo = echo + lumen * (VESSEL - echo) + 1.5 * np.exp(-((vessel_sd / 0.1) ** 2))
        alpha = alpha - 0.8 * lumen
    vessel_mask = vessel_sd < 0

    # Nerve: honeycomb of hypoechoic fascicles in bright epineurium, bright rim around it.
    # Anisotropy: a nerve's echoes depend on the beam's angle to it, so rim and epineurium
    # brightness change between frames of one subject (factor 0.5-1).
    anisotropy = rng.uniform(0.5, 1.0)
    n_fascicles = int(np.clip(round(area / rng.uniform(0.4, 0.7)), 6, 40))
    fascicles = _place_fascicles(rng, n_fascicles, subj.fascicle_r_mm, a, b)
    nearest = np.full(cfg.shape, np.inf, dtype=np.float32)
    for fu, fv, fr in fascicles:
        nearest = np.minimum(nearest, (np.hypot(u - fu, v - fv) - fr).astype(np.float32))
    epineurium = subj.epineurium * (0.6 + 0.4 * anisotropy)
    inside = epineurium + soft_inside(nearest, 0.06) * (FASCICLE - epineurium)
    rim = anisotropy * RIM * np.exp(-(((nerve_rho - 0.94) / 0.06) ** 2))
    nerve_w = soft_inside(nerve_sd, 0.05)
    echo = echo + nerve_w * (inside - echo) + rim
    alpha = alpha + 0.6 * rim / RIM  # a little shadow below the rim

    # Bone surface deep in the frame: very bright, and it casts a full acoustic shadow.
    bone_y = rng.uniform(0.7, 0.95) * cfg.depth_mm - rng.uniform(0.0, 3.0) * np.cos(
        2 * math.pi * x / rng.uniform(20.0, 60.0) + rng.uniform(0, 2 * math.pi)
    )
    bone_band = np.exp(-(((y - bone_y) / 0.15) ** 2))
    echo = echo + BONE * bone_band
    alpha = alpha + 60.0 * soft_inside(bone_y - y, 0.1)

    # Beam formation: attenuation accumulated above each pixel (blurred laterally by the beam
    # width), residual depth attenuation after time-gain compensation, speckle, gain.
    above = np.cumsum(alpha, axis=0) * px - alpha * px
    above = ndimage.gaussian_filter1d(above, sigma=0.3 / px, axis=1, mode="nearest")
    slope = rng.uniform(0.2, 0.8)  # dB/mm left after TGC: deeper is darker
    loss_db = above + slope * y
    gain = rng.uniform(*cfg.gain_db)
    envelope = _speckle(rng, echo, px) * (10.0 ** ((gain - loss_db) / 20.0))
    db = 20.0 * np.log10(envelope + 1e-6)
    # 20 dB maps to white. Speckle (log-Rayleigh median -2.5 dB) and depth loss put the median
    # tissue pixel near -10 dB, i.e. grey ~50 with a 40 dB range, as in the real frames (mostly
    # dark, median grey ~25-60, with bright streaks and rims).
    floor = 20.0 - cfg.dynamic_range_db
    grey = np.clip((db - floor) / cfg.dynamic_range_db, 0.0, 1.0) * 255.0
    image = np.rint(grey).astype(np.uint8)

    # Bands: black in the image; the mask is cut to what the scanner shows.
    vessel_mask &= mask == 0
    for arr in (image, mask, vessel_mask):
        arr[:, :pad_l] = 0
        arr[:, nx - pad_r :] = 0
        if pad_b:
            arr[ny - pad_b :, :] = 0
    details = {
        "n_vessels": n_vessels,
        "n_tendons": n_tendons,
        "n_fascicles": len(fascicles),
        "gain_db": gain,
        "design_area_mm2": area,
    }
    return image, mask, vessel_mask, details


def _speckle(
    rng: np.random.Generator, echo: np.ndarray, px: float, compounding: int = 3
) -> np.ndarray:
    """Envelope of echo-weighted complex Gaussian scatterers seen through the PSF.

    The point-spread function of a 10-15 MHz linear probe is ~0.25 mm axially and ~0.6 mm
    laterally (FWHM), Gaussian sigmas 0.1 and 0.25 mm. One look's magnitude is Rayleigh
    distributed (fully developed speckle), whose deep nulls log compression turns into a black
    crackle; scanners average 3-9 looks from different steering angles (spatial compounding),
    so ``compounding`` independent looks are averaged here. Dividing by the kernel's root sum
    of squares keeps the mean intensity equal to echo^2 whatever the pixel size.
    """
    sigma = (max(0.1 / px, 0.5), max(0.25 / px, 0.5))
    delta = np.zeros((41, 41), dtype=np.float32)
    delta[20, 20] = 1.0
    norm = float(np.sqrt((ndimage.gaussian_filter(delta, sigma) ** 2).sum())) * math.sqrt(2.0)
    total = np.zeros(echo.shape, dtype=np.float32)
    for _ in range(compounding):
        re = ndimage.gaussian_filter(
            echo * rng.standard_normal(echo.shape, dtype=np.float32), sigma
        )
        im = ndimage.gaussian_filter(
            echo * rng.standard_normal(echo.shape, dtype=np.float32), sigma
        )
        total += np.sqrt(re * re + im * im)
    return total / (compounding * norm)
