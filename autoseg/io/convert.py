"""``autoseg convert``: real-world folders -> the standard dataset layout.

The conversion runs in two passes over the cases:

1. **check** (reads masks fully, images' headers; nothing is written): pairing, grids, label
   values, dimensionality and channel counts are checked for every case, and all problems are
   reported together, so that a user fixes the source in one round. Label values are only
   known globally after this pass (e.g. to find that masks are 0/255).
2. **write**: each case's channel files, then its mask, are written atomically; cases whose
   files all exist are skipped, which makes an interrupted conversion resumable. A small
   ``.convert_state.json`` in the target records the source and options so that a rerun of
   the same command recognises its own unfinished work; ``dataset.json`` is written last and
   the state file removed when done. Finally :func:`autoseg.io.verify.verify_dataset` checks
   the result.

See documentation/dataset_format.md for the rules as users read them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from autoseg.errors import AutosegError
from autoseg.io.atomic import remove_partials, write_json_atomic
from autoseg.io.completeness import file_truncation
from autoseg.io.dataset import DatasetJson
from autoseg.io.image import (
    DEFAULT_2D_SPACING,
    INCOMPLETE_FIX,
    Geometry,
    collapse_grey_rgb,
    read_image,
    split_extension,
    write_image,
)
from autoseg.io.nifti import nifti_stored_non_finite
from autoseg.io.nnunet import export_nnunet, is_nnunet_dataset, read_nnunet
from autoseg.io.pairing import (
    SourceCase,
    SourceLayout,
    apply_metadata,
    apply_subject_pattern,
    compile_subject_pattern,
    frame_names_hint,
    is_kaggle,
    is_msd,
    pair_folder,
    pairs_from_csv,
    raise_problems,
    read_kaggle,
    read_msd,
)
from autoseg.io.parallel import default_workers, forkserver_context, map_cases
from autoseg.io.verify import Problem, value_counts, verify_dataset
from autoseg.paths import (
    dataset_folder_name,
    parse_dataset_folder,
    preprocessed_dir,
    raw_dir,
    results_dir,
)

__all__ = [
    "FORMATS",
    "ConvertResult",
    "convert_folder",
    "declare_labels",
    "detect_format",
    "export_nnunet",
    "load_layout",
    "looks_like_lossy_binary",
    "parse_label_map",
    "parse_names",
    "parse_spacing",
    "parse_threshold",
    "to_grey",
]

FILE_ENDING = ".nii.gz"
STATE_FILE = ".convert_state.json"
STATE_VERSION = 1
FORMATS = ("auto", "folder", "msd", "kaggle-us", "nnunet")
METADATA_FILE = "cases.csv"
# Formats whose header SimpleITK reads without the pixel data: the check pass stays cheap for
# large 3D volumes (a 320x320x60 float NIfTI header is ~350 bytes, its data ~25 MB).
_HEADER_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_OUTPUT_DIRS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


@dataclass
class ConvertResult:
    """What a conversion produced: the dataset folder, its case counts and verify's problems."""

    target: Path
    n_cases: int
    n_test: int = 0
    problems: list[Problem] = field(default_factory=list)  # from verify_dataset
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about the source; nothing failed
    resumed: bool = False
    n_skipped: int = 0  # cases already converted by an interrupted earlier run

    @property
    def ok(self) -> bool:
        return not any(p.is_error for p in self.problems)


# ---------------------------------------------------------------------------------------------
# Option strings (shared with the CLI)
# ---------------------------------------------------------------------------------------------


def parse_label_map(text: str) -> dict[int, int]:
    """``"255:1,128:2"`` -> ``{255: 1, 128: 2}``."""
    out: dict[int, int] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        old, sep, new = item.partition(":")
        try:
            if not sep:
                raise ValueError
            o, n = int(old), int(new)
        except ValueError:
            raise AutosegError(
                f"--labels item {item!r} is not OLD:NEW with integers",
                fix="write e.g. --labels 255:1 or --labels 255:1,128:2",
            ) from None
        if o in out:
            raise AutosegError(f"--labels maps {o} twice", fix="give each old value once")
        if n < 0 or n > 65535:
            raise AutosegError(f"--labels target {n} is out of range", fix="use 0-65535")
        out[o] = n
    if not out:
        raise AutosegError("--labels is empty", fix="write e.g. --labels 255:1")
    return out


def parse_names(text: str, what: str = "--label-names") -> list[str]:
    """``"nerve, vessel"`` -> ``["nerve", "vessel"]``; empty and repeated names are errors."""
    names = [t.strip() for t in text.split(",")]
    if not names or any(not n for n in names):
        raise AutosegError(f"{what} {text!r} has an empty name", fix="write e.g. nerve,vessel")
    if len(set(names)) != len(names):
        raise AutosegError(f"{what} {text!r} repeats a name", fix="give each name once")
    return names


def parse_spacing(text: str) -> tuple[float, ...]:
    """``"0.1,0.1"`` -> ``(0.1, 0.1)`` in array order (y, x) or (z, y, x); all > 0."""
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise AutosegError(
            f"--spacing {text!r} is not a list of numbers",
            fix="write e.g. --spacing 0.1,0.1 (mm, array order y,x)",
        ) from None
    if len(values) not in (2, 3) or not all(np.isfinite(values)) or min(values) <= 0:
        raise AutosegError(
            f"--spacing {text!r} needs 2 or 3 positive numbers",
            fix="write e.g. --spacing 0.1,0.1 for 2D (y,x) or 3.0,0.5,0.5 for 3D (z,y,x)",
        )
    return values


def parse_threshold(text: str) -> float:
    """``"127"`` -> ``127.0``; see :func:`check_threshold`."""
    try:
        value = float(text)
    except ValueError:
        raise AutosegError(
            f"--threshold {text!r} is not a number", fix="write e.g. --threshold 127"
        ) from None
    return check_threshold(value)


def check_threshold(value: float) -> float:
    """A mask threshold T (values >= T become label 1) must be finite and above 0, else every
    voxel, background included, would become foreground."""
    if not np.isfinite(value) or value <= 0:
        raise AutosegError(
            f"--threshold {value:g} must be a number above 0 (mask values >= it become 1)",
            fix="write e.g. --threshold 127 for masks saved as 0/255",
        )
    return float(value)


# ---------------------------------------------------------------------------------------------
# Reading the source
# ---------------------------------------------------------------------------------------------


def detect_format(src: Path) -> str:
    """nnU-Net if dataset.json has channel_names + file_ending, MSD if it has modality/training,
    Kaggle if ``train/`` holds only ``N_M.tif`` + ``N_M_mask.tif``; else folder.
    """
    if is_nnunet_dataset(src):
        return "nnunet"
    if is_msd(src):
        return "msd"
    if is_kaggle(src):
        return "kaggle-us"
    return "folder"


def load_layout(src: Path, fmt: str = "auto", pairs_csv: Path | None = None) -> SourceLayout:
    """Find the cases of ``src`` by the rules of its layout (see :mod:`autoseg.io.pairing`)."""
    if fmt not in FORMATS:
        raise AutosegError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    if pairs_csv is not None:
        if fmt not in ("auto", "folder"):
            raise AutosegError(
                f"--pairs cannot be combined with --format {fmt}",
                fix="drop --format (the CSV defines the pairs)",
            )
        return SourceLayout(pairs_from_csv(Path(pairs_csv)), "folder")
    if not src.exists():
        raise AutosegError("source folder not found", path=src, fix="check the path")
    if not src.is_dir():
        raise AutosegError(
            "source must be a folder (or a pairs CSV)",
            path=src,
            fix="point to the folder that holds the images and masks",
        )
    if fmt == "auto":
        fmt = detect_format(src)
    readers: dict[str, Callable[[Path], SourceLayout]] = {
        "folder": pair_folder,
        "msd": read_msd,
        "kaggle-us": read_kaggle,
        "nnunet": read_nnunet,
    }
    return readers[fmt](src)


# ---------------------------------------------------------------------------------------------
# Per-case reading and checking (runs in worker processes)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """What a worker needs besides the case; small and picklable."""

    label_map: tuple[tuple[int, int], ...] = ()
    spacing: tuple[float, ...] | None = None
    declared: tuple[int, ...] | None = None  # None in the check pass
    n_channels: int | None = None
    threshold: float | None = None  # --threshold: mask values >= it become 1, the rest 0


@dataclass
class _Channel:
    array: np.ndarray | None  # None when only the header was read
    geometry: Geometry
    path: Path
    has_spacing: bool
    tinted: bool = False  # a tinted-grey RGB image turned into its luminance


@dataclass
class _CaseCheck:
    """Result of the check pass for one case."""

    case_id: str
    ndim: int | None = None
    n_channels: int | None = None
    values: frozenset[int] = frozenset()
    # Voxels per mask value as stored (before --labels); None when --threshold is given or the
    # mask holds more than MAX_COUNTED_VALUES values (then it is no lossy 8-bit mask either).
    raw_counts: dict[int, int] | None = None
    lacks_spacing: bool = False
    tinted: bool = False
    problems: list[str] = field(default_factory=list)


def _drop_last_axis(geo: Geometry) -> Geometry:
    """A 4D geometry (x, y, z, t) -> the 3D geometry of each volume along t."""
    n = geo.ndim
    d = np.array(geo.direction).reshape(n, n)[: n - 1, : n - 1]
    return Geometry(geo.spacing[:-1], geo.origin[:-1], tuple(d.ravel().tolist()), geo.size[:-1])


def _with_spacing(geo: Geometry, has_spacing: bool, spacing: tuple[float, ...] | None, path: Path):
    """Images from formats without a pixel size get ``--spacing`` or 1.0 per axis."""
    if has_spacing:
        return geo
    if spacing is None:
        return geo.with_spacing((DEFAULT_2D_SPACING,) * geo.ndim)
    if len(spacing) != geo.ndim:
        raise AutosegError(
            f"--spacing has {len(spacing)} values but the image is {geo.ndim}D",
            path=path,
            fix=f"give {geo.ndim} values in array order ({'z,y,x' if geo.ndim == 3 else 'y,x'})",
        )
    return geo.with_spacing(spacing)


_FLOAT_PIXELS = (
    sitk.sitkFloat32,
    sitk.sitkFloat64,
    sitk.sitkVectorFloat32,
    sitk.sitkVectorFloat64,
)


def _read_header(path: Path) -> tuple[Geometry, int, bool]:
    """Geometry, components per voxel and whether voxels are floating point, without reading
    pixel data (the file's length is checked against its header, cheaply: see
    :func:`autoseg.io.completeness.file_truncation`)."""
    truncated = file_truncation(path)
    if truncated:
        raise AutosegError(truncated, path=path, fix=INCOMPLETE_FIX)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception as exc:  # SimpleITK raises RuntimeError with C++ context
        lines = [t.strip() for t in str(exc).splitlines() if t.strip()]
        raise AutosegError(
            f"cannot read image header ({(lines[-1] if lines else type(exc).__name__)[:200]})",
            path=path,
            fix="re-export the file, or remove it from the folder",
        ) from exc
    geo = Geometry(
        tuple(float(s) for s in reader.GetSpacing()),
        tuple(float(o) for o in reader.GetOrigin()),
        tuple(float(d) for d in reader.GetDirection()),
        tuple(int(s) for s in reader.GetSize()),
    )
    return geo, int(reader.GetNumberOfComponents()), reader.GetPixelID() in _FLOAT_PIXELS


def _refuse_non_finite(
    path: Path, array: np.ndarray | None, n_voxels: int, what: str = "image"
) -> None:
    """NaN/Inf voxels stop the conversion: nothing downstream can use them, and SimpleITK's
    NIfTI reader silently turns them into 0 (a real intensity: water in CT, the noise floor in
    MR), so they are counted in the array or, for NIfTI, in the stored voxels."""
    n_nan = n_inf = 0
    if array is not None and np.issubdtype(array.dtype, np.floating):
        n_nan = int(np.count_nonzero(np.isnan(array)))
        n_inf = int(np.count_nonzero(np.isinf(array)))
    hidden = n_nan + n_inf == 0 and split_extension(path.name)[1].lower().startswith(".nii")
    if hidden:
        n_nan, n_inf = nifti_stored_non_finite(path)
    if n_nan + n_inf == 0:
        return
    kinds = " and ".join(f"{n:,} {k}" for n, k in ((n_nan, "NaN"), (n_inf, "Inf")) if n)
    raise AutosegError(
        f"{what} holds {kinds} voxels of {n_voxels:,}"
        + (" (SimpleITK reads them as 0, which would pass for a measurement)" if hidden else ""),
        path=path,
        fix="replace them in the source file (e.g. with the image minimum where NaN marks "
        "voxels outside the field of view) and convert again"
        if what == "image"
        else "replace them by 0 (background) or a label in the source file and convert again",
    )


def _split_channels(
    array: np.ndarray | None, geo: Geometry, n_components: int, path: Path, has_spacing: bool
) -> list[_Channel]:
    """One source file -> its channels.

    A 4D file holds channels along its 4th axis (Decathlon); a 2D file with 3 or 4 components
    is RGB(A) and collapses to grey (refused if really in colour); any other multi-component
    file holds one channel per component.
    """
    if geo.ndim == 4:
        g3 = _drop_last_axis(geo)
        n = geo.size[3]
        return [
            _Channel(None if array is None else array[t], g3, path, has_spacing) for t in range(n)
        ]
    if geo.ndim not in (2, 3):
        raise AutosegError(
            f"image is {geo.ndim}D; autoseg takes 2D or 3D images (or 4D with channels last)",
            path=path,
            fix="save it as a 2D or 3D image",
        )
    if n_components > 1 and not (geo.ndim == 2 and n_components in (3, 4)):
        return [
            _Channel(None if array is None else array[..., c], geo, path, has_spacing)
            for c in range(n_components)
        ]
    tinted = False
    if n_components > 1 and array is not None:
        array, tinted = to_grey(array, path)
    return [_Channel(array, geo, path, has_spacing, tinted)]


# Channels of a tinted grey image differ by a little everywhere: usgra-seg's RGB ultrasound
# frames have a channel spread of at most 17-33 levels of 255 on nearly all pixels (up to 92 on
# <0.2 % UI pixels), whereas colour Doppler overlays differ by 100+. A pixel counts as coloured
# when its spread exceeds 12.5 % of the range (32 of 255).
TINT_TOLERANCE = 0.125  # as in collapse_grey_rgb (used in the note to the user)


def to_grey(array: np.ndarray, path: Path | None = None) -> tuple[np.ndarray, bool]:
    """RGB(A) that is grey in substance -> one channel; returns (array, was_tinted).

    See :func:`autoseg.io.collapse_grey_rgb`: exactly grey and slightly tinted frames become
    their luminance; real colour images are refused.
    """
    if array.ndim < 3 or array.shape[-1] not in (3, 4):
        return array, False
    tinted = bool(np.any(array[..., :3] != array[..., :1]))
    return collapse_grey_rgb(array, path), tinted


def _load_channels(paths: Sequence[Path], header_only: bool) -> list[_Channel]:
    out: list[_Channel] = []
    for p in paths:
        ext = split_extension(p.name)[1].lower()
        if header_only and p.is_file() and ext in _HEADER_EXTENSIONS:
            geo, n_comp, is_float = _read_header(p)
            if is_float:  # the voxels must be read to find NaN (~0.1 s per 25 MB)
                data = None if ext.startswith(".nii") else read_image(p).array
                _refuse_non_finite(p, data, int(np.prod(geo.size)) * n_comp)
            out += _split_channels(None, geo, n_comp, p, True)
        else:
            img = read_image(p)
            if header_only:
                _refuse_non_finite(p, img.array, img.array.size)
            n_comp = img.n_components
            out += _split_channels(img.array, img.geometry, n_comp, p, img.has_spacing)
    return out


def _case_grid(channels: list[_Channel], spacing: tuple[float, ...] | None) -> Geometry:
    """The case's grid: the first channel's; the others must match it (within header rounding)."""
    ref = channels[0]
    ref_geo = _with_spacing(ref.geometry, ref.has_spacing, spacing, ref.path)
    for ch in channels[1:]:
        geo = _with_spacing(ch.geometry, ch.has_spacing, spacing, ch.path)
        detail = _grid_mismatch(ref_geo, geo, ref.has_spacing and ch.has_spacing)
        if detail:
            raise AutosegError(
                f"channel does not match {ref.path.name}: {detail}",
                path=ch.path,
                fix="resample all channels of a case onto one grid before converting",
            )
    return ref_geo


def _grid_mismatch(ref: Geometry, other: Geometry, both_have_spacing: bool) -> str | None:
    """Only sizes can be compared when a file stores no geometry (PNG/TIF)."""
    if not both_have_spacing:
        return None if ref.size == other.size else f"size {ref.size} != {other.size}"
    return ref.mismatch(other)


def _read_mask(
    path: Path,
    grid: Geometry,
    image_path: Path,
    image_has_spacing: bool,
    settings: _Settings,
    raw_counts: dict[int, int] | None = None,
) -> np.ndarray:
    """The mask as int64 on the image's grid, binarised or remapped; errors name the file and
    the fix. ``raw_counts``, if given, receives the voxels per value before ``--labels``."""
    img = read_image(path)
    arr = img.array
    if img.geometry.ndim not in (2, 3):
        raise AutosegError(
            f"mask is {img.geometry.ndim}D", path=path, fix="save the mask as one 2D or 3D map"
        )
    if np.issubdtype(arr.dtype, np.floating):
        _refuse_non_finite(path, arr, arr.size, "mask")
    if img.n_components > 1:
        if not np.all(arr == arr[..., :1]):
            raise AutosegError(
                "mask is a colour image; label values must be stored as pixel values",
                path=path,
                fix="save the mask as a single-channel (greyscale or palette) image whose pixel "
                "values are the labels 0, 1, 2, ...",
            )
        arr = arr[..., 0]
    geo = _with_spacing(img.geometry, img.has_spacing, settings.spacing, path)
    detail = _grid_mismatch(grid, geo, image_has_spacing and img.has_spacing)
    if detail:
        raise AutosegError(
            f"mask does not match its image {image_path}: {detail} (image first)",
            path=path,
            fix="export the mask from the very image it was drawn on, or resample it onto the "
            "image's grid with nearest-neighbour interpolation",
        )
    if settings.threshold is not None:
        return (arr >= settings.threshold).astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        ok = np.isfinite(arr) & (arr == np.rint(arr))
        if not ok.all():
            examples = ", ".join(f"{v:g}" for v in np.unique(arr[~ok])[:4])
            raise AutosegError(
                f"mask holds non-integer values (e.g. {examples})",
                path=path,
                fix="export integer labels; if the mask was resampled, use nearest-neighbour "
                "interpolation (linear interpolation blends labels); a one-label mask can be "
                "binarised with --threshold",
            )
    if arr.size and arr.min() < 0:
        raise AutosegError(
            f"mask holds negative values (min {arr.min():g})",
            path=path,
            fix="map them to 0 or a positive label, e.g. --labels -1:0",
        )
    out = arr.astype(np.int64)
    if raw_counts is not None and out.size:
        raw_counts.update(value_counts(out))
    if settings.label_map:
        remapped = out.copy()
        for old, new in settings.label_map:
            remapped[out == old] = new
        out = remapped
    return out


# A mask with more values than this is summarised rather than counted value by value: an 8-bit
# lossy mask has at most 256 values, and keeping 65,536 counts per case of a 16-bit image saved
# as a mask would cost gigabytes over a thousand cases.
MAX_COUNTED_VALUES = 256
# Label maps with more values than this get no --labels renumbering suggestion: real label
# maps hold a handful of values (the richest here, spinal rootlets, 8), while a JPEG-saved
# binary mask holds 15-106 and an image saved as a mask hundreds.
MAX_RENUMBERED_VALUES = 20
# Share of voxels that may lie in the middle half of the value range of a lossy binary mask.
LOSSY_MIDDLE_FRACTION = 0.05


def looks_like_lossy_binary(counts: dict[int, int]) -> bool:
    """True when mask values (value -> voxels, over all masks) are a one-label mask stored
    0/255 and then saved lossy (JPEG) or resampled with interpolation.

    Such masks pile up near 0 and near their maximum with a few stragglers between: a 0/255
    ellipse (420 x 580 pixels) saved as JPEG at quality 50/75/90/95/100 holds 106/59/26/15/4
    distinct values, of which 46/29/13/8/2 lie in the lowest and 51/30/13/7/2 in the highest
    quarter of the range, and at most 0.004 % of pixels in the middle half. The rule: more
    than two values, a maximum of at least 128 (masks are saved 0/255, not 0/1, when lossy
    copies happen: viewers show 0/1 as black), at least two distinct values in each outer
    quarter (exact 0/255 has one each and is a plain renumbering, --labels 255:1), and at most
    LOSSY_MIDDLE_FRACTION (5 %) of voxels in the middle half. A label map 0/1/2 ... /10
    fails the maximum; an image saved as a mask fails the middle half.
    """
    if len(counts) <= 2:
        return False
    hi = max(counts)
    if hi < 128 or min(counts) < 0:
        return False
    low = [v for v in counts if v <= hi / 4]
    high = [v for v in counts if v >= 3 * hi / 4]
    total = sum(counts.values())
    middle = total - sum(counts[v] for v in low) - sum(counts[v] for v in high)
    return len(low) >= 2 and len(high) >= 2 and middle <= LOSSY_MIDDLE_FRACTION * total


def _mask_values(arr: np.ndarray) -> frozenset[int]:
    if arr.size and int(arr.max()) < 1 << 16:
        return frozenset(int(v) for v in np.flatnonzero(np.bincount(arr.ravel())))
    return frozenset(int(v) for v in np.unique(arr))


def _check_case(case: SourceCase, settings: _Settings) -> _CaseCheck:
    """Check pass for one case; problems are collected as 'path: what. Fix: ...' lines."""
    result = _CaseCheck(case.case_id)
    try:
        channels = _load_channels(case.images, header_only=True)
        grid = _case_grid(channels, settings.spacing)
        result.ndim = grid.ndim
        result.n_channels = len(channels)
        result.lacks_spacing = not channels[0].has_spacing
        result.tinted = any(ch.tinted for ch in channels)
        if case.label is not None:
            counts: dict[int, int] | None = None if settings.threshold is not None else {}
            mask = _read_mask(
                case.label, grid, channels[0].path, channels[0].has_spacing, settings, counts
            )
            result.values = _mask_values(mask)
            if counts is not None and len(counts) <= MAX_COUNTED_VALUES:
                result.raw_counts = counts
    except AutosegError as exc:
        result.problems.append(str(exc))
    return result


def _case_outputs(
    case: SourceCase, target: Path, n_channels: int
) -> tuple[list[Path], Path | None]:
    images = target / ("imagesTs" if case.test else "imagesTr")
    labels = target / ("labelsTs" if case.test else "labelsTr")
    files = [images / f"{case.case_id}_{c:04d}{FILE_ENDING}" for c in range(n_channels)]
    label = labels / f"{case.case_id}{FILE_ENDING}" if case.label is not None else None
    return files, label


def _write_case(case: SourceCase, target: Path, settings: _Settings) -> None:
    """Read, check and write one case: channel files first, the mask last, each atomically."""
    assert settings.declared is not None and settings.n_channels is not None
    channels = _load_channels(case.images, header_only=False)
    if len(channels) != settings.n_channels:
        raise AutosegError(
            f"case has {len(channels)} channels but the dataset has {settings.n_channels}",
            path=case.images[0],
            fix="give every case the same channels",
        )
    grid = _case_grid(channels, settings.spacing)
    mask = None
    if case.label is not None:
        mask = _read_mask(case.label, grid, channels[0].path, channels[0].has_spacing, settings)
        unexpected = sorted(_mask_values(mask) - set(settings.declared))
        if unexpected:
            raise AutosegError(
                f"mask holds undeclared label values {unexpected}",
                path=case.label,
                fix="map them with --labels OLD:NEW or declare them with --label-names",
            )
        mask = mask.astype(np.uint8 if max(settings.declared) <= 255 else np.uint16)
    files, label_file = _case_outputs(case, target, settings.n_channels)
    try:
        for ch, out in zip(channels, files):
            assert ch.array is not None
            write_image(out, ch.array, grid)
        if mask is not None and label_file is not None:
            write_image(label_file, mask, grid)
    except (OSError, RuntimeError) as exc:
        raise AutosegError(
            f"cannot write case {case.case_id!r} ({exc})",
            path=target,
            fix="check free disk space and write permission, then run the same command again",
        ) from exc


def _check_job(job: tuple[SourceCase, _Settings]) -> _CaseCheck:
    return _check_case(*job)


def _write_job(job: tuple[SourceCase, Path, _Settings]) -> str | None:
    """Write one case; a problem with the case's files comes back as text, not an exception,
    so that the other cases still get converted and a rerun only redoes the failed ones."""
    try:
        _write_case(*job)
    except AutosegError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# Running over cases
# ---------------------------------------------------------------------------------------------


def _run(
    fn: Callable[[Any], Any], jobs: Sequence[Any], num_workers: int, desc: str, progress: bool
) -> list[Any]:
    """``[fn(job) for job in jobs]`` with a progress bar (:func:`autoseg.io.parallel.map_cases`).

    Worker processes come from ``forkserver`` (``spawn`` off Linux), not ``fork``: SimpleITK
    keeps a thread pool, and forking a process with running threads can deadlock. A worker
    that crashes (a corrupt file can crash an image reader) stops the run with one line.
    """

    def crashed(_job: Any, _exc: BaseException) -> Any:
        raise AutosegError(
            "a worker process crashed while reading the source (a corrupt file can "
            "crash an image reader)",
            fix="run the same command with --workers 1 to see which file it is",
        )

    return map_cases(
        fn,
        jobs,
        num_workers=num_workers,
        progress=progress,
        desc=desc,
        context=forkserver_context(["autoseg.io.convert"]) if num_workers > 1 else None,
        on_crash=crashed,
    )


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def declare_labels(
    mask_values: dict[str, frozenset[int]],
    *,
    label_names: Sequence[str] | None = None,
    labels: dict[str, int] | None = None,
    label_map: dict[int, int] | None = None,
    binary: bool = False,
) -> dict[str, int]:
    """The dataset's labels (name -> value), checked against the values found in the masks.

    Declared by, in this order: ``label_names`` (values 0=background, 1, 2, ...), a full
    ``labels`` declaration (MSD, nnU-Net), the targets of ``label_map`` (``label_<v>``),
    ``binary`` (``--threshold``: 0 and ``label_1``), or else discovered from the masks
    (``label_<v>``). Values must be 0, 1, 2, ... without gaps (nnU-Net's rule, and what one-hot
    training needs): masks saved as 0/255 or with values 5, 6, 7 are refused with the
    ``--labels`` that would fix them, never silently changed. More than
    MAX_RENUMBERED_VALUES values are no label map, and get no renumbering suggestion.
    ``mask_values`` maps each mask's path to the values it holds after remapping.
    """
    found = frozenset().union(*mask_values.values()) if mask_values else frozenset()
    if label_names is not None:
        names = list(label_names)
        if names and names[0].lower() == "background":
            names = names[1:]
        declared = {"background": 0, **{n: i + 1 for i, n in enumerate(names)}}
        how = "--label-names"
    elif labels is not None:
        declared = dict(labels)
        how = "dataset.json"
    elif label_map is not None:
        values = sorted({0, *label_map.values()})
        declared = {"background" if v == 0 else f"label_{v}": v for v in values}
        how = "--labels"
    elif binary:
        declared = {"background": 0, "label_1": 1}
        how = "--threshold"
    else:
        values = sorted({0, *found})
        declared = {"background" if v == 0 else f"label_{v}": v for v in values}
        how = None
        if values == [0] and mask_values:
            raise AutosegError(
                f"all {len(mask_values)} masks are empty (background 0 only)",
                fix="check that the masks are the right files; declare the labels you expect "
                "with --label-names",
            )
    values = sorted(declared.values())
    if values != list(range(len(values))):
        fg = [v for v in values if v != 0]
        suggestion = ",".join(f"{v}:{i + 1}" for i, v in enumerate(fg) if v != i + 1)
        if how is None:
            examples = [p for p, v in mask_values.items() if v - set(range(len(values)))][:3]
            if len(values) > MAX_RENUMBERED_VALUES:
                raise AutosegError(
                    f"masks hold {len(values)} distinct values ({_value_range(values)}); a "
                    f"label map holds a few (e.g. {', '.join(examples)})",
                    fix=_NOT_LABELS_FIX,
                )
            raise AutosegError(
                f"masks hold label values {values}; labels must be 0, 1, 2, ... without gaps "
                f"(e.g. {', '.join(examples)})",
                fix=f"renumber them with --labels {suggestion}"
                + (" (a 0/255 mask is one label)" if fg == [255] else ""),
            )
        raise AutosegError(
            f"labels from {how} have values {values}; they must be 0, 1, 2, ... without gaps",
            fix=f"renumber them with --labels (e.g. --labels {suggestion})",
        )
    allowed = set(values)
    problems = [
        f"{p}: values {sorted(v - allowed)}"
        for p, v in sorted(mask_values.items())
        if not v <= allowed
    ]
    if problems:
        extra = sorted(found - allowed)
        fg = [v for v in values if v != 0]
        names = ", ".join(f"{k}={v}" for k, v in sorted(declared.items(), key=lambda kv: kv[1]))
        title = f"{len(problems)} mask(s) hold label values that are not declared ({names})"
        if len(found) > MAX_RENUMBERED_VALUES:
            raise_problems(title, problems, path=None, fix=_NOT_LABELS_FIX)
        if len(extra) == 1 and len(fg) == 1:
            suggestion = f"--labels {extra[0]}:{fg[0]}"
        else:
            suggestion = "--labels " + ",".join(f"{v}:NEW" for v in extra[:4])
        raise_problems(
            title,
            problems,
            path=None,
            fix=f"map them with {suggestion}, declare them with --label-names, "
            "or correct the masks",
        )
    return declared


_NOT_LABELS_FIX = (
    "check that these files are the masks (an image saved in a mask's place has hundreds of "
    "values); binarise one-label masks saved lossy (JPEG) or resampled with --threshold 127; "
    "or save the masks as PNG/NIfTI with the label values 0, 1, 2, ..."
)


def _value_range(values: Sequence[int]) -> str:
    return f"{values[0]}..{values[-1]}"


# ---------------------------------------------------------------------------------------------
# Target folder and resume state
# ---------------------------------------------------------------------------------------------


def _used_ids(root: str | os.PathLike | None) -> set[int]:
    used = set()
    for base in (raw_dir(root), preprocessed_dir(root), results_dir(root)):
        if base.is_dir():
            for p in base.iterdir():
                parsed = parse_dataset_folder(p.name)
                if parsed:
                    used.add(parsed[0])
    return used


def choose_target(name: str, dataset_id: int | None, root: str | os.PathLike | None) -> Path:
    """``<root>/raw/<NNN>_<Name>``.

    Without an id, an existing dataset of the same name is the target (so that a rerun
    resumes or is refused, rather than silently making a second copy); else the smallest id
    >= 1 that no folder under raw/, preprocessed/ or results/ uses, so that a new dataset
    never inherits an old one's stale results.
    """
    dataset_folder_name(0, name)  # validates the name
    base = raw_dir(root)
    existing = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    parsed = {p: parse_dataset_folder(p.name) for p in existing}
    if dataset_id is not None:
        folder = base / dataset_folder_name(dataset_id, name)
        clash = [p.name for p, v in parsed.items() if v and v[0] == dataset_id and p != folder]
        if clash:
            raise AutosegError(
                f"dataset id {dataset_id} is already used by {', '.join(clash)}",
                path=base,
                fix="choose another --id, or leave it out to take the next free one",
            )
        return folder
    same = [p for p, v in parsed.items() if v and v[1] == name]
    if len(same) > 1:
        raise AutosegError(
            f"several datasets are named {name!r}: {', '.join(p.name for p in same)}",
            path=base,
            fix="say which with --id",
        )
    if same:
        return same[0]
    used = _used_ids(root)
    new_id = next(i for i in range(1, 10000) if i not in used)
    return base / dataset_folder_name(new_id, name)


def _target_status(target: Path, state: dict[str, Any]) -> str:
    """'fresh' (absent or empty), 'resume' (our own unfinished run), 'other' or 'exists'."""
    if not target.exists():
        return "fresh"
    if not target.is_dir():
        raise AutosegError("target exists and is not a folder", path=target, fix="remove it")
    if not any(target.iterdir()):
        return "fresh"
    state_file = target / STATE_FILE
    if state_file.is_file():
        try:
            previous = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return "other"
        return "resume" if previous == state else "other"
    return "exists"


def _refuse(target: Path, status: str) -> None:
    if status == "exists":
        raise AutosegError(
            "dataset folder already exists",
            path=target,
            fix="pass --overwrite to replace it, or choose another --name or --id",
        )
    if status == "other":
        raise AutosegError(
            "folder holds an unfinished conversion of another source or with other options",
            path=target,
            fix="run that command again to finish it, or pass --overwrite to start afresh",
        )


def _state(src: Path, layout: SourceLayout, options: dict[str, Any]) -> dict[str, Any]:
    """What identifies a conversion: the source folder, its format and the options."""
    return {
        "version": STATE_VERSION,
        "source": str(src.resolve()),
        "format": layout.fmt,
        "options": json.loads(json.dumps(options)),  # tuples -> lists, as read back from disk
    }


def _check_not_nested(src: Path | None, target: Path, images: Sequence[Path]) -> None:
    """Refuse a target inside the source folder (a rerun would find the converted files as new
    cases) or a source inside the target (--overwrite would delete the data being converted)."""
    t = target.resolve()
    nested = [p.resolve() for p in images if t == p.resolve() or t in p.resolve().parents]
    if src is not None:
        q = src.resolve()
        if q == t or t in q.parents or q in t.parents:
            nested.append(q)
    if nested:
        raise AutosegError(
            f"source {nested[0]} and target overlap (one lies inside the other)",
            path=target,
            fix="set AUTOSEG_ROOT outside the source folder, or move the source out of "
            "$AUTOSEG_ROOT/raw",
        )


def _is_done(files: list[Path], label: Path | None) -> bool:
    return all(p.is_file() for p in files) and (label is None or label.is_file())


def _remove_stale(target: Path, expected: set[Path]) -> int:
    """Files of cases that left the source since an interrupted run would linger: delete."""
    n = 0
    for sub in _OUTPUT_DIRS:
        folder = target / sub
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_file() and not p.name.startswith(".") and p not in expected:
                    p.unlink()
                    n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def convert_folder(
    src: str | os.PathLike,
    name: str,
    dataset_id: int | None = None,
    *,
    root: str | os.PathLike | None = None,
    pairs_csv: str | os.PathLike | None = None,
    label_map: dict[int, int] | None = None,
    label_names: Sequence[str] | None = None,
    channel_names: Sequence[str] | None = None,
    spacing: Sequence[float] | None = None,
    meta_csv: str | os.PathLike | None = None,
    fmt: str = "auto",
    overwrite: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
    threshold: float | None = None,
    subject_pattern: str | re.Pattern[str] | None = None,
) -> ConvertResult:
    """Convert ``src`` into ``<root>/raw/<NNN>_<name>`` and verify the result.

    ``src`` is a folder (or a pairs CSV). ``label_map`` remaps mask values before they are
    checked against the labels (``label_names`` for values 1, 2, ...); ``threshold`` instead
    binarises masks (values >= it become 1, the rest 0: one-label masks saved lossy or as
    0/255). ``subject_pattern`` is a regular expression whose first group, matched in a case
    id, is that case's subject (``^(\\d+)_`` for video frames ``12_7.jpg``); subjects from
    a CSV take precedence. ``spacing`` is in
    array order and applies to images whose format stores none (PNG, TIF, JPG), which
    otherwise get 1.0 per axis. ``num_workers`` defaults to ``min(4, cpu_count)``; ``<= 1``
    works in this process. See the module docstring for the passes and resume.
    """
    src = Path(src).expanduser()
    if pairs_csv is None and src.is_file() and src.suffix.lower() == ".csv":
        pairs_csv, src = src, src.parent
    pairs_path = Path(pairs_csv).expanduser() if pairs_csv is not None else None
    workers = default_workers() if num_workers is None else int(num_workers)
    spacing_t = tuple(float(s) for s in spacing) if spacing is not None else None
    names_given = list(label_names) if label_names is not None else None
    if threshold is not None:
        threshold = check_threshold(threshold)
        if label_map is not None:
            raise AutosegError(
                "--threshold and --labels cannot be combined (the threshold makes every mask 0/1)",
                fix="use --threshold for one-label masks, --labels to renumber label maps",
            )

    layout = load_layout(src, fmt, pairs_path)
    meta_path = Path(meta_csv).expanduser() if meta_csv is not None else src / METADATA_FILE
    cases, notes = _with_metadata(layout, meta_path, required=meta_csv is not None)
    pattern = compile_subject_pattern(subject_pattern) if subject_pattern is not None else None
    warnings = []
    if pattern is not None:
        cases = apply_subject_pattern(cases, pattern)
    elif all(c.subject is None for c in cases):
        warnings += _frame_name_warning(cases)
    effective_map = label_map if label_map is not None else layout.label_map
    if threshold is not None:
        effective_map = None
    options = {
        "pairs_csv": str(pairs_path.resolve()) if pairs_path else None,
        "meta_csv": str(meta_path.resolve()) if meta_csv is not None else None,
        "label_map": sorted(effective_map.items()) if effective_map else None,
        "label_names": names_given,
        "channel_names": list(channel_names) if channel_names is not None else None,
        "spacing": list(spacing_t) if spacing_t else None,
        "threshold": threshold,
        "subject_pattern": pattern.pattern if pattern is not None else None,
    }
    target = choose_target(name, dataset_id, root)
    _check_not_nested(None if pairs_path else src, target, [p for c in cases for p in c.images])
    state = _state(src, layout, options)
    status = _target_status(target, state)
    if not overwrite:
        _refuse(target, status)

    # Pass 1: check every case, write nothing.
    label_pairs = tuple(sorted(effective_map.items())) if effective_map else ()
    check_settings = _Settings(label_pairs, spacing_t, threshold=threshold)
    checks = _check_all(cases, check_settings, workers, progress, src)
    n_channels = _consistent(checks, cases, "n_channels", "channels")
    _consistent(checks, cases, "ndim", "dimensions (2D and 3D mixed)")
    channels = _channel_names(channel_names, layout, n_channels, cases[0].images[0])
    if threshold is None:
        _refuse_lossy_binary(cases, checks)
    mask_values = {str(c.label): checks[c.case_id].values for c in cases if c.label is not None}
    labels = declare_labels(
        mask_values,
        label_names=names_given if names_given is not None or label_map else layout.label_names,
        labels=layout.labels if label_map is None and threshold is None else None,
        label_map=label_map,
        binary=threshold is not None,
    )
    notes += _check_notes(checks, spacing_t)

    # Pass 2: write what is not written yet; dataset.json last.
    resumed = _prepare_target(target, status, overwrite, state, root, notes)
    settings = _Settings(
        label_pairs, spacing_t, tuple(sorted(labels.values())), n_channels, threshold
    )
    n_skipped = _write_all(cases, target, settings, resumed, workers, progress)
    if resumed:
        notes.append(f"resumed: {n_skipped} of {len(cases)} case(s) were already converted")
    train = [c for c in cases if not c.test]
    DatasetJson(
        channel_names={str(i): str(n) for i, n in enumerate(channels)},
        labels=labels,
        num_training=len(train),
        file_ending=FILE_ENDING,
        name=name,
        description=str(layout.info.get("description", "")),
        licence=str(layout.info.get("licence", "")),
        reference=str(layout.info.get("reference", "")),
        cases=_case_metadata(cases),
        extra=dict(layout.info.get("extra", {})),
    ).save(target)
    (target / STATE_FILE).unlink(missing_ok=True)
    return ConvertResult(
        target=target,
        n_cases=len(train),
        n_test=len(cases) - len(train),
        problems=_verify(target, workers),
        notes=notes,
        warnings=warnings,
        resumed=resumed,
        n_skipped=n_skipped,
    )


def _with_metadata(
    layout: SourceLayout, meta_path: Path, required: bool
) -> tuple[list[SourceCase], list[str]]:
    """The layout's cases with subject/cohort from ``cases.csv`` or --meta, plus notes."""
    if required and not meta_path.is_file():
        raise AutosegError("metadata CSV not found", path=meta_path, fix="check the --meta path")
    if not meta_path.is_file():
        return list(layout.cases), list(layout.notes)
    cases, notes = apply_metadata(layout.cases, meta_path)
    return cases, [*layout.notes, *notes]


def _check_all(
    cases: Sequence[SourceCase], settings: _Settings, workers: int, progress: bool, src: Path
) -> dict[str, _CaseCheck]:
    """Pass 1 over all cases; every problem of every case is reported in one error."""
    checks: dict[str, _CaseCheck] = {}
    for check in _run(_check_job, [(c, settings) for c in cases], workers, "check", progress):
        checks[check.case_id] = check
    problems = [p for c in cases for p in checks[c.case_id].problems]
    if len(problems) == 1:  # "<file>: what is wrong. Fix: ..." says it all, on one line
        raise AutosegError(problems[0])
    raise_problems(
        f"{len(problems)} case(s) cannot be converted",
        problems,
        path=src,
        fix="correct or remove these files, then run the same command again",
    )
    return checks


def _frame_name_warning(cases: Sequence[SourceCase]) -> list[str]:
    """One line when the names look like frames of a few subjects but no subject is known."""
    train = [c.case_id for c in cases if not c.test]
    suggestion = frame_names_hint(train)
    if suggestion is None:
        return []
    return [
        f"{len(train)} case names look like <subject>_<frame> (e.g. {train[0]}) but no subject "
        "ids are given, so every frame counts as its own subject and cross-validation folds "
        f"will mix near-identical frames of one subject: pass --subject-pattern '{suggestion}' "
        "(or a cases.csv with case,subject)"
    ]


def _refuse_lossy_binary(cases: Sequence[SourceCase], checks: dict[str, _CaseCheck]) -> None:
    """Masks that are one label saved lossy (JPEG) or resampled: say so, suggest --threshold.

    Their dozens of values would otherwise be refused with a renumbering that maps every
    compression artefact to a label of its own."""
    total: dict[int, int] = {}
    example = None
    for c in cases:
        counts = checks[c.case_id].raw_counts
        if c.label is None:
            continue
        if counts is None:
            return  # a mask with more than 256 values is no lossy 8-bit mask
        for v, n in counts.items():
            total[v] = total.get(v, 0) + n
        if example is None and len(counts) > 2:
            example = c.label
    if not looks_like_lossy_binary(total):
        return
    hi = max(total)
    n_voxels = sum(total.values())
    near_low = sum(n for v, n in total.items() if v <= hi / 4) / n_voxels
    near_high = sum(n for v, n in total.items() if v >= 3 * hi / 4) / n_voxels
    raise AutosegError(
        f"masks hold {len(total)} distinct values, {near_low:.1%} of pixels near 0 and "
        f"{near_high:.1%} near {hi}: one-label masks saved lossy (JPEG) or resampled, not "
        f"label maps (e.g. {example})",
        fix=f"binarise them with --threshold {hi // 2} (values >= {hi // 2} become label 1), "
        "or save the masks losslessly (PNG) with the values 0 and 1",
    )


def _channel_names(
    given: Sequence[str] | None, layout: SourceLayout, n_channels: int, example: Path
) -> list[str]:
    names = list(given) if given is not None else layout.channel_names
    names = names or [f"channel_{i}" for i in range(n_channels)]
    if len(names) != n_channels:
        raise AutosegError(
            f"{len(names)} channel name(s) given ({', '.join(names)}) but the images have "
            f"{n_channels} channel(s)",
            path=example,
            fix=f"give {n_channels} names with --channel-names",
        )
    return names


def _check_notes(checks: dict[str, _CaseCheck], spacing: tuple[float, ...] | None) -> list[str]:
    """What the user should know although nothing is wrong: tints and default spacings."""
    notes = []
    tinted = sum(c.tinted for c in checks.values())
    if tinted:
        notes.append(
            f"{tinted} case(s) have RGB images with a slight colour tint; converted to grey "
            f"(luminance), since their channels differ by at most {TINT_TOLERANCE:.1%} of the "
            "range on most pixels"
        )
    lacking = sum(c.lacks_spacing for c in checks.values())
    if lacking and spacing is None:
        notes.append(
            f"{lacking} image(s) store no pixel spacing; used {DEFAULT_2D_SPACING} per axis "
            "(give the real one with --spacing, array order y,x)"
        )
    elif spacing is not None and not lacking:
        notes.append("--spacing was not used: every image stores its own spacing")
    return notes


def _prepare_target(
    target: Path,
    status: str,
    overwrite: bool,
    state: dict[str, Any],
    root: str | os.PathLike | None,
    notes: list[str],
) -> bool:
    """Empty the target (or keep it to resume) and record the state; True when resuming."""
    resumed = status == "resume" and not overwrite
    if resumed:
        remove_partials(target)
        return True
    if target.exists():
        shutil.rmtree(target)
        stale = [d / target.name for d in (preprocessed_dir(root), results_dir(root))]
        if any(p.exists() for p in stale):
            notes.append(
                f"{', '.join(str(p) for p in stale if p.exists())} belong to the replaced "
                "dataset and are now stale"
            )
    target.mkdir(parents=True, exist_ok=True)
    write_json_atomic(target / STATE_FILE, state)
    return False


def _write_all(
    cases: Sequence[SourceCase],
    target: Path,
    settings: _Settings,
    resumed: bool,
    workers: int,
    progress: bool,
) -> int:
    """Pass 2: write every case not yet complete; returns how many were skipped as done."""
    assert settings.n_channels is not None
    expected: set[Path] = set()
    jobs = []
    for c in cases:
        files, label_file = _case_outputs(c, target, settings.n_channels)
        expected.update(files)
        if label_file is not None:
            expected.add(label_file)
        if not (resumed and _is_done(files, label_file)):
            jobs.append((c, target, settings))
    failures = [msg for msg in _run(_write_job, jobs, workers, "convert", progress) if msg]
    raise_problems(
        f"{len(failures)} case(s) failed; the others are converted",
        failures,
        path=target,
        fix="correct these files and run the same command again: it finishes the remaining "
        "cases without redoing the converted ones",
    )
    if resumed:
        _remove_stale(target, expected)
    return len(cases) - len(jobs)


def _consistent(
    checks: dict[str, _CaseCheck], cases: Sequence[SourceCase], attr: str, what: str
) -> Any:
    """All cases must agree on ``attr``; the error names one file of each kind."""
    seen: dict[Any, str] = {}
    for c in cases:
        seen.setdefault(getattr(checks[c.case_id], attr), str(c.images[0]))
    if len(seen) > 1:
        listed = "; ".join(f"{v}: e.g. {p}" for v, p in sorted(seen.items()))
        raise AutosegError(
            f"cases differ in their number of {what}: {listed}",
            fix="convert cases with different channels or dimensions as separate datasets",
        )
    return next(iter(seen))


def _case_metadata(cases: Sequence[SourceCase]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for c in sorted(cases, key=lambda c: c.case_id):
        entry = {k: v for k, v in (("subject", c.subject), ("cohort", c.cohort)) if v}
        if entry:
            out[c.case_id] = entry
    return out


def _verify(target: Path, num_workers: int) -> list[Problem]:
    return verify_dataset(target, num_workers=num_workers, progress=False)
