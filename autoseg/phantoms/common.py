"""Shared pieces of the phantoms: seeding, subject layout, smooth fields, output folder.

Determinism rule: every random number of case ``i`` comes from a generator seeded with
``(seed, kind, purpose, i)`` (subject-level numbers with the subject's index instead), never
from a generator shared across cases. So the same seed gives the same arrays, a different seed
different ones, and the first N cases of an N+1-case phantom equal the N-case phantom.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from autoseg.errors import AutosegError
from autoseg.io import Geometry, atomic_path
from autoseg.io.atomic import TMP_MARK

# Stream ids for SeedSequence: kind first, then the purpose of the numbers.
KIND_MRI3D = 3
KIND_US2D = 2
PURPOSE_LAYOUT = 1  # how many scans a subject has
PURPOSE_SUBJECT = 2  # anatomy shared by a subject's scans
PURPOSE_CASE = 3  # everything that differs between scans
PURPOSE_COHORT = 4  # offset of the cohort sequence
PURPOSE_BRANCH = 5  # offset of the branching sequence

COHORTS = ("volunteer", "patient")
CASES_CSV = "cases.csv"
CASES_CSV_HEADER = ("case", "subject", "cohort")
# 1/golden ratio: the additive recurrence frac(u + k*g) spreads any prefix evenly over [0, 1).
_GOLDEN = 0.6180339887498949


@dataclass
class PhantomCase:
    """One generated case: arrays in array order plus what the test and demo need to know.

    ``spacing`` is in array order (z, y, x) / (y, x), ``origin`` in ITK order (x, y[, z]) as
    files store it. ``nerve_area_mm2`` is the mean cross-sectional area of the mask over the
    slices that contain nerve (in-plane pixel area times pixel count). ``vessel_mask`` marks
    the unlabelled vessels, for tests and for counting false positives on them.
    """

    case_id: str
    subject: str
    cohort: str
    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    has_branch: bool = False
    n_vessels: int = 0
    nerve_area_mm2: float = 0.0
    details: dict[str, float] = field(default_factory=dict)
    vessel_mask: np.ndarray | None = None  # where vessels are (never labelled; not written)

    @property
    def geometry(self) -> Geometry:
        nd = self.image.ndim
        eye = tuple(float(i == j) for i in range(nd) for j in range(nd))
        return Geometry(
            spacing=tuple(float(s) for s in reversed(self.spacing)),
            origin=tuple(float(o) for o in self.origin),
            direction=eye,
            size=tuple(int(s) for s in reversed(self.image.shape)),
        )


def make_rng(seed: int, kind: int, purpose: int, index: int) -> np.random.Generator:
    """An independent generator for one (seed, kind, purpose, index) stream."""
    return np.random.default_rng(np.random.SeedSequence([seed, kind, purpose, index]))


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise AutosegError(
            f"seed must be a non-negative integer, got {seed!r}", fix="use 0, 1, ..."
        )
    return int(seed)


def evenly_spread_flag(seed: int, kind: int, purpose: int, index: int, fraction: float) -> bool:
    """True for about ``fraction`` of the indices, spread evenly over every prefix.

    Independent coin flips leave a 40 % cohort absent from 3 subjects with probability
    0.6^3 = 22 %, so small test phantoms would often lack patients. The golden-ratio sequence
    frac(u + k*0.618) with a seed-dependent offset u keeps the count in every prefix of n
    indices within 2.5 of ``fraction * n`` (checked for n <= 200 over all offsets; within 1.6
    for n <= 10): for fraction 0.4 any 3 consecutive-from-zero subjects include a patient.
    """
    offset = make_rng(seed, kind, purpose, 0).random()
    return bool((offset + index * _GOLDEN) % 1.0 < fraction)


def subject_of_case(index: int, scans_of_subject: Callable[[int], int]) -> tuple[int, int]:
    """(subject index, scan index within the subject) of case ``index``.

    Subjects are laid out one after the other, subject ``s`` holding ``scans_of_subject(s)``
    consecutive cases. The count depends only on ``s``, so the layout of the first N cases
    never depends on N (the last subject of a short phantom may simply have fewer scans).
    """
    start = 0
    subject = 0
    while True:
        n = max(1, int(scans_of_subject(subject)))
        if index < start + n:
            return subject, index - start
        start += n
        subject += 1


def smooth_field(
    rng: np.random.Generator, shape: Sequence[int], corr_vox: float | Sequence[float]
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field, float32, correlated over ``corr_vox``.

    Tissue texture, bias fields and fat septa all need smooth noise at scales of 5-60 voxels.
    Filtering full-resolution noise with such wide Gaussians costs about 8*sigma operations
    per voxel and axis; instead the noise is drawn on a grid coarser by corr/2 (so the Gaussian
    there has sigma 2 cells) and linearly upsampled, which is ~10x cheaper and looks the same.
    """
    shape = tuple(int(s) for s in shape)
    corr = np.broadcast_to(np.asarray(corr_vox, dtype=float), (len(shape),))
    factor = np.maximum(1.0, np.floor(corr / 2.0))
    coarse = tuple(max(2, int(np.ceil(s / f))) for s, f in zip(shape, factor))
    noise = rng.standard_normal(coarse, dtype=np.float32)
    sigma = [c / f for c, f in zip(corr, factor)]
    smooth = ndimage.gaussian_filter(noise, sigma=sigma, mode="wrap")
    for axis, n in enumerate(shape):
        smooth = upsample_linear(smooth, axis, n)
    smooth -= smooth.mean()
    std = float(smooth.std())
    return smooth / std if std > 0 else smooth


def upsample_linear(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Resize one axis to ``size`` by linear interpolation, pixel centres aligned.

    Two gathers and a weighted sum: about 10x faster than ``scipy.ndimage.zoom(order=1)``,
    which dominated the phantom's run time.
    """
    n = array.shape[axis]
    if n == size:
        return array
    src = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0.0, n - 1)
    lo = np.minimum(src.astype(np.intp), n - 2) if n > 1 else np.zeros(size, np.intp)
    w = (src - lo).astype(np.float32)
    w_shape = [1] * array.ndim
    w_shape[axis] = size
    w = w.reshape(w_shape)
    a = np.take(array, lo, axis=axis)
    b = np.take(array, np.minimum(lo + 1, n - 1), axis=axis)
    return a + w * (b - a)


def soft_inside(signed_distance_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """Partial-volume weight in [0, 1]: 1 well inside (negative distance), 0 well outside.

    A logistic ramp about one edge width wide imitates the scanner's point-spread function at
    structure borders, so images are not binary-looking while masks stay crisp at distance 0.
    """
    x = np.clip(signed_distance_mm / max(edge_mm, 1e-6), -30.0, 30.0)
    return (1.0 / (1.0 + np.exp(x))).astype(np.float32)


def ellipse_rho(
    x: np.ndarray,
    y: np.ndarray,
    cx: np.ndarray | float,
    cy: np.ndarray | float,
    a: np.ndarray | float,
    b: np.ndarray | float,
    theta: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside an ellipse with semi-axes a (along theta), b.

    All arguments broadcast, so per-slice centres of shape (z, 1, 1) against in-plane grids of
    shape (1, y, 1) and (1, 1, x) give a whole (z, y, x) volume in a few array operations.
    """
    dx = x - cx
    dy = y - cy
    c, s = np.cos(theta), np.sin(theta)
    u = dx * c + dy * s
    v = -dx * s + dy * c
    return np.sqrt((u / a) ** 2 + (v / b) ** 2).astype(np.float32)


def mean_slice_area_mm2(mask: np.ndarray, pixel_area_mm2: float) -> float:
    """Mean in-plane area of the mask over the slices (last two axes) that contain it."""
    per_slice = mask.reshape(-1, mask.shape[-2] * mask.shape[-1]).sum(axis=1)
    nonzero = per_slice[per_slice > 0]
    return float(nonzero.mean() * pixel_area_mm2) if nonzero.size else 0.0


# Names a phantom may have written; --overwrite removes these (and only these) first.
_OWN_FILES = (
    re.compile(r"^thigh_\d+(_mask)?\.nii\.gz$"),
    re.compile(r"^wrist_\d+\.png$"),
    re.compile(rf"^{re.escape(CASES_CSV)}$"),
)


def prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Create ``out_dir``; refuse a non-empty one unless ``overwrite``.

    With ``overwrite`` the files an earlier phantom wrote there (``thigh_*``, ``images/`` and
    ``masks/`` frames, ``cases.csv``, temporary ``.partial-`` files) are removed first, so a
    smaller phantom leaves no stale cases behind for ``autoseg convert`` to pick up; any other
    file is left alone.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AutosegError("output path is a file", path=out, fix="give a folder path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise AutosegError(
                "output folder is not empty",
                path=out,
                fix="choose a new folder, or pass --overwrite to replace an earlier phantom",
            )
        for folder in (out, out / "images", out / "masks"):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                own = any(rx.match(p.name) for rx in _OWN_FILES) or p.name.startswith(TMP_MARK)
                if p.is_file() and own:
                    p.unlink()
            if folder != out and not any(folder.iterdir()):
                folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)
    return out


def cases_csv_text(cases: Sequence[PhantomCase]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CASES_CSV_HEADER)
    for c in cases:
        writer.writerow((c.case_id, c.subject, c.cohort))
    return buf.getvalue()


def write_cases_csv(out_dir: str | os.PathLike, cases: Sequence[PhantomCase]) -> Path:
    """``cases.csv`` (case, subject, cohort), written atomically."""
    path = Path(out_dir) / CASES_CSV
    with atomic_path(path) as tmp:
        tmp.write_text(cases_csv_text(cases), encoding="utf-8")
    return path
