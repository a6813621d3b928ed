"""Deterministic synthetic nerve datasets: 3D thigh-MRI-like volumes and 2D ultrasound frames.

They are written as a *source folder like a user's own*, which ``autoseg convert`` ingests:

- ``mri3d``: ``OUT/thigh_000.nii.gz`` (int16) + ``OUT/thigh_000_mask.nii.gz`` (uint8 0/1)
- ``us2d``:  ``OUT/images/wrist_000.png`` (uint8 grey) + ``OUT/masks/wrist_000.png`` (0/1)
- both:     ``OUT/cases.csv`` with ``case,subject,cohort``

The same (kind, seed, config) always gives byte-identical files, and the first N cases of a
larger phantom equal an N-case phantom (see :mod:`autoseg.phantoms.common`). Background and
the meaning of every feature: documentation/phantoms.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from autoseg.errors import AutosegError
from autoseg.io import write_image
from autoseg.phantoms.common import (
    CASES_CSV,
    COHORTS,
    PhantomCase,
    check_seed,
    prepare_out_dir,
    write_cases_csv,
)
from autoseg.phantoms.mri3d import DEFAULT_CASES as MRI3D_DEFAULT_CASES
from autoseg.phantoms.mri3d import Mri3dConfig, make_mri3d_case
from autoseg.phantoms.us2d import DEFAULT_CASES as US2D_DEFAULT_CASES
from autoseg.phantoms.us2d import Us2dConfig, make_us2d_case
from autoseg.progress import progress_bar

KINDS = ("mri3d", "us2d")
DEFAULT_CASES = {"mri3d": MRI3D_DEFAULT_CASES, "us2d": US2D_DEFAULT_CASES}

__all__ = [
    "write_held_out",
    "CASES_CSV",
    "COHORTS",
    "DEFAULT_CASES",
    "KINDS",
    "Mri3dConfig",
    "PhantomCase",
    "Us2dConfig",
    "case_files",
    "default_config",
    "generate_phantom",
    "make_case",
    "make_mri3d_case",
    "make_us2d_case",
    "write_case",
]


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise AutosegError(f"unknown phantom kind {kind!r}", fix=f"use one of {', '.join(KINDS)}")
    return kind


def default_config(kind: str) -> Mri3dConfig | Us2dConfig:
    return Mri3dConfig() if _check_kind(kind) == "mri3d" else Us2dConfig()


def make_case(
    kind: str, index: int, seed: int = 0, config: Mri3dConfig | Us2dConfig | None = None
) -> PhantomCase:
    """Case ``index`` of a phantom of this kind (arrays only, nothing written)."""
    cfg = config or default_config(kind)
    if kind == "mri3d":
        if not isinstance(cfg, Mri3dConfig):
            raise TypeError("mri3d needs an Mri3dConfig")
        return make_mri3d_case(index, seed, cfg)
    _check_kind(kind)
    if not isinstance(cfg, Us2dConfig):
        raise TypeError("us2d needs a Us2dConfig")
    return make_us2d_case(index, seed, cfg)


def case_files(kind: str, out_dir: str | os.PathLike, case_id: str) -> tuple[Path, Path]:
    """(image, mask) paths of a case in a phantom folder, following convert's pairing rules."""
    out = Path(out_dir)
    if _check_kind(kind) == "mri3d":
        return out / f"{case_id}.nii.gz", out / f"{case_id}_mask.nii.gz"
    return out / "images" / f"{case_id}.png", out / "masks" / f"{case_id}.png"


def write_case(kind: str, case: PhantomCase, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write one case's image and mask atomically; returns their paths."""
    image_path, mask_path = case_files(kind, out_dir, case.case_id)
    geometry = case.geometry
    write_image(image_path, case.image, geometry)
    write_image(mask_path, case.mask, geometry)
    return image_path, mask_path


def write_held_out(
    kind: str,
    out_dir: str | os.PathLike,
    n_cases: int,
    seed: int,
    config: Mri3dConfig | Us2dConfig | None = None,
) -> tuple[Path, Path]:
    """Held-back test cases (use a seed other than the training phantom's: other subjects)
    as ``out_dir/images`` and ``out_dir/masks``, one file of the same name in each — what
    ``autoseg predict`` reads and ``autoseg evaluate`` scores. Nothing is rewritten when the
    images are already there; returns the two folders."""
    _check_kind(kind)
    images, masks = Path(out_dir) / "images", Path(out_dir) / "masks"
    if images.is_dir() and any(images.iterdir()):
        return images, masks
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    cfg = config or default_config(kind)
    ext = ".nii.gz" if kind == "mri3d" else ".png"
    for index in range(n_cases):
        case = make_case(kind, index, check_seed(seed), cfg)
        write_image(masks / f"{case.case_id}{ext}", case.mask, case.geometry)
        write_image(images / f"{case.case_id}{ext}", case.image, case.geometry)
    return images, masks


def generate_phantom(
    kind: str,
    out_dir: str | os.PathLike,
    n_cases: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    config: Mri3dConfig | Us2dConfig | None = None,
) -> list[PhantomCase]:
    """Generate and write a phantom source folder; returns the cases (arrays included).

    ``n_cases`` defaults to 20 (mri3d) or 30 (us2d). A non-empty ``out_dir`` is refused unless
    ``overwrite``; then files of an earlier phantom are replaced and other files left alone.
    """
    _check_kind(kind)
    seed = check_seed(seed)
    n = DEFAULT_CASES[kind] if n_cases is None else n_cases
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise AutosegError(f"number of cases must be a positive integer, got {n!r}")
    cfg = config or default_config(kind)
    out = prepare_out_dir(out_dir, overwrite)
    cases: list[PhantomCase] = []
    for index in progress_bar(range(n), desc=f"phantom {kind}", unit="case", disable=not progress):
        case = make_case(kind, index, seed, cfg)
        write_case(kind, case, out)
        cases.append(case)
    write_cases_csv(out, cases)
    return cases
