"""Read and write medical and 2D images with their geometry.

SimpleITK handles NIfTI, NRRD, MHA/MHD, TIFF and DICOM series. PNG/JPG/BMP go through Pillow
because SimpleITK expands palette PNGs to RGB, which would turn a mask's label indices
(0 = background, 1 = nerve, 2 = vessel) into colours.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from autoseg.errors import AutosegError
from autoseg.io.atomic import TMP_MARK, atomic_path
from autoseg.io.completeness import file_truncation

# Longest first so that ".nii.gz" wins over ".gz".
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".tiff",
    ".tif",
    ".png",
    ".jpeg",
    ".jpg",
    ".bmp",
)
PILLOW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
# Formats without a physical pixel size: spacing defaults to 1 (documented in
# documentation/dataset_format.md) unless the user passes --spacing.
EXTENSIONS_WITHOUT_SPACING = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_2D_SPACING = 1.0
INCOMPLETE_FIX = (
    "copy or export the file again (an interrupted copy or download truncates it; a .mhd or "
    ".nhdr header needs the data file it names beside it)"
)


def split_extension(name: str | os.PathLike) -> tuple[str, str]:
    """``("case_0000", ".nii.gz")`` from ``case_0000.nii.gz``; extension is '' if unknown."""
    base = Path(name).name
    low = base.lower()
    for ext in IMAGE_EXTENSIONS:
        if low.endswith(ext):
            return base[: -len(ext)], base[-len(ext) :]
    return base, ""


def is_image_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_file() and split_extension(p.name)[1] != "" and not p.name.startswith(TMP_MARK)


@dataclass(frozen=True)
class Geometry:
    """Physical placement of an image, in ITK order (x, y[, z]) as files store it."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]  # row-major ndim x ndim matrix, flattened
    size: tuple[int, ...]  # ITK order; the numpy array's shape is this reversed

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        """Spacing in array order, the order every later stage uses."""
        return tuple(reversed(self.spacing))

    @property
    def shape_zyx(self) -> tuple[int, ...]:
        return tuple(reversed(self.size))

    @classmethod
    def from_sitk(cls, img: sitk.Image) -> Geometry:
        return cls(
            spacing=tuple(float(s) for s in img.GetSpacing()),
            origin=tuple(float(o) for o in img.GetOrigin()),
            direction=tuple(float(d) for d in img.GetDirection()),
            size=tuple(int(s) for s in img.GetSize()),
        )

    @classmethod
    def default(cls, shape_zyx: tuple[int, ...], spacing_zyx: tuple[float, ...] | None = None):
        """Identity direction, zero origin; spacing 1 unless given (array order)."""
        nd = len(shape_zyx)
        spacing = tuple(reversed(spacing_zyx)) if spacing_zyx else (DEFAULT_2D_SPACING,) * nd
        eye = tuple(float(i == j) for i in range(nd) for j in range(nd))
        return cls(tuple(map(float, spacing)), (0.0,) * nd, eye, tuple(reversed(shape_zyx)))

    def with_spacing(self, spacing_zyx: tuple[float, ...]) -> Geometry:
        return Geometry(tuple(reversed(spacing_zyx)), self.origin, self.direction, self.size)

    def apply_to(self, img: sitk.Image) -> sitk.Image:
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    def mismatch(self, other: Geometry, rtol: float = 1e-3, atol_mm: float = 1e-2) -> str | None:
        """Describe how two grids differ (None if they match within tolerance).

        Spacing may differ by 0.1 % (rounding in headers); origin by 0.01 mm plus 0.1 % of a
        voxel; direction cosines by 1e-3.
        """
        if self.size != other.size:
            return f"size {self.size} != {other.size}"
        if not np.allclose(self.spacing, other.spacing, rtol=rtol, atol=1e-6):
            return f"spacing {_fmt(self.spacing)} != {_fmt(other.spacing)}"
        tol = atol_mm + rtol * max(self.spacing)
        if not np.allclose(self.origin, other.origin, rtol=0, atol=tol):
            return f"origin {_fmt(self.origin)} != {_fmt(other.origin)}"
        if not np.allclose(self.direction, other.direction, rtol=0, atol=1e-3):
            return f"direction {_fmt(self.direction)} != {_fmt(other.direction)}"
        return None

    def to_dict(self) -> dict:
        return {
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
            "size": list(self.size),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(
            tuple(map(float, d["spacing"])),
            tuple(map(float, d["origin"])),
            tuple(map(float, d["direction"])),
            tuple(map(int, d["size"])),
        )


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


@dataclass
class ImageData:
    """An image as a numpy array in (z, y, x) / (y, x) order, plus its geometry.

    ``array`` has a trailing component axis only for multi-component pixels (RGB); see
    :func:`collapse_grey_rgb`. ``has_spacing`` is False for formats that store no pixel size.
    """

    array: np.ndarray
    geometry: Geometry
    has_spacing: bool = True

    @property
    def n_components(self) -> int:
        return self.array.shape[-1] if self.array.ndim > self.geometry.ndim else 1


def read_image(path: str | os.PathLike) -> ImageData:
    """Read an image file or a DICOM series folder; raise AutosegError on any failure."""
    path = Path(path)
    if path.is_dir():
        return _read_dicom_series(path)
    if not path.is_file():
        raise AutosegError("file not found", path=path, fix="check the path")
    ext = split_extension(path.name)[1].lower()
    if ext == "" and not _looks_like_dicom(path):
        raise AutosegError(
            "unsupported file type",
            path=path,
            fix=f"convert it to one of {', '.join(IMAGE_EXTENSIONS)} or a DICOM series",
        )
    # SimpleITK would zero-fill the missing part of a truncated NIfTI and read the surviving
    # pages of a cut TIFF stack without an error; other formats get a clearer message here.
    truncated = file_truncation(path)
    if truncated:
        raise AutosegError(truncated, path=path, fix=INCOMPLETE_FIX)
    try:
        if ext in PILLOW_EXTENSIONS:
            return _read_pillow(path)
        img = sitk.ReadImage(str(path))
    except AutosegError:
        raise
    except Exception as exc:  # SimpleITK raises RuntimeError; Pillow OSError/ValueError
        raise AutosegError(
            f"cannot read image ({_first_line(exc)}); the file is unreadable or truncated",
            path=path,
            fix="re-export the file from the scanner or viewer, or remove it from the folder",
        ) from exc
    return _from_sitk(img, has_spacing=ext not in EXTENSIONS_WITHOUT_SPACING)


def _first_line(exc: Exception) -> str:
    """The informative line of an exception; SimpleITK puts C++ source locations first."""
    lines = [t.strip() for t in str(exc).splitlines() if t.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _from_sitk(img: sitk.Image, has_spacing: bool = True) -> ImageData:
    return ImageData(sitk.GetArrayFromImage(img), Geometry.from_sitk(img), has_spacing)


def _read_pillow(path: Path) -> ImageData:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("P", "L", "1", "I", "I;16", "I;16B", "F"):
            arr = np.array(im)
            if arr.dtype == bool:
                arr = arr.astype(np.uint8)
        elif im.mode in ("LA", "PA"):
            arr = np.array(im.convert("L"))
        else:
            arr = np.array(im.convert("RGB"))
    shape = arr.shape[:2]
    return ImageData(arr, Geometry.default(shape), has_spacing=False)


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_dicom_series(folder: Path) -> ImageData:
    reader = sitk.ImageSeriesReader()
    try:
        series = reader.GetGDCMSeriesIDs(str(folder))
    except Exception as exc:
        raise AutosegError(f"cannot scan for DICOM series ({exc})", path=folder) from exc
    if not series:
        raise AutosegError(
            "folder holds no DICOM series",
            path=folder,
            fix="point to a folder of .dcm slices of one series, or to an image file",
        )
    if len(series) > 1:
        raise AutosegError(
            f"folder holds {len(series)} DICOM series ({', '.join(series[:4])}...)",
            path=folder,
            fix="move each series into its own folder",
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        img = reader.Execute()
    except Exception as exc:
        raise AutosegError(
            f"cannot read DICOM series ({_first_line(exc)})",
            path=folder,
            fix="check that no slice is missing or truncated",
        ) from exc
    positions = []
    for i in range(len(files)):
        text = reader.GetMetaData(i, "0020|0032") if reader.HasMetaDataKey(i, "0020|0032") else ""
        try:
            positions.append([float(v) for v in text.split("\\")])
        except ValueError:
            break
    if len(positions) == len(files) and img.GetDimension() == 3:
        normal = np.array(img.GetDirection()).reshape(3, 3)[:, 2]
        gap = slice_gap([float(np.dot(p, normal)) for p in positions])
        if gap is not None:
            i, step, usual = gap
            raise AutosegError(
                f"DICOM series has a gap: slices {Path(files[i]).name} and "
                f"{Path(files[i + 1]).name} lie {step:.3g} mm apart, the others {usual:.3g} mm "
                "(a missing or repeated slice)",
                path=folder,
                fix="copy the complete series again (every slice file), or export it again",
            )
    return _from_sitk(img)


# Slice steps may differ by this fraction of the usual step (positions are written with a few
# decimals, e.g. 4.4 mm stored as 4.39999) before the series counts as having a gap.
SLICE_STEP_TOLERANCE = 0.1


def slice_gap(positions: list[float]) -> tuple[int, float, float] | None:
    """(index, step, usual step) of the first irregular step between sorted slice positions
    along the slice normal, or None when every step is the usual one (the median) within
    SLICE_STEP_TOLERANCE. A missing slice doubles one step; a repeated slice makes one 0.

    SimpleITK reads such a series with a printed warning only, assuming even spacing: the
    slices past the gap then sit one step too close to the first, and a mask drawn on the
    complete series no longer lines up.
    """
    if len(positions) < 3:
        return None
    steps = np.diff(np.asarray(positions, dtype=np.float64))
    usual = float(np.median(np.abs(steps)))
    if usual == 0:
        return None
    for i, step in enumerate(steps):
        if abs(abs(step) - usual) > SLICE_STEP_TOLERANCE * usual:
            return i, float(abs(step)), usual
    return None


def collapse_grey_rgb(
    array: np.ndarray,
    path: str | os.PathLike | None = None,
    max_colour_fraction: float = 0.25,
    tint_tolerance: float = 0.125,
) -> np.ndarray:
    """Turn an RGB(A) image whose content is grey into one channel.

    Ultrasound frames are often saved as RGB: a few coloured scanner-UI pixels, and often a
    slight tint over the whole frame (usgra-seg: channels differ by up to 17-33 of 255 in 188
    of 204 frames, but by more than 32 in under 0.2 % of pixels). A pixel counts as coloured
    when its channels spread by more than ``tint_tolerance`` (12.5 %) of the value range; if
    at most ``max_colour_fraction`` of the pixels are coloured, the image is grey in substance
    and becomes its luminance (ITU-R BT.601 weights). A truly colour image (e.g. Doppler) is
    refused rather than silently mangled.
    """
    if array.ndim < 3 or array.shape[-1] not in (3, 4):
        return array
    rgb = array[..., :3].astype(np.float32)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    if not spread.any():
        return array[..., 0].copy()
    if np.issubdtype(array.dtype, np.integer):
        full = float(np.iinfo(array.dtype).max)
    else:
        full = float(rgb.max() - rgb.min()) or 1.0
    fraction = float(np.mean(spread > tint_tolerance * full))
    if fraction > max_colour_fraction:
        raise AutosegError(
            f"image is in colour ({fraction:.0%} of pixels are not grey)",
            path=path,
            fix="export a greyscale image; for real colour data, save R, G and B as channel "
            "files <case>_0000, _0001, _0002 (with a --pairs CSV)",
        )
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if np.issubdtype(array.dtype, np.integer):
        lum = np.clip(np.rint(lum), np.iinfo(array.dtype).min, np.iinfo(array.dtype).max)
    return lum.astype(array.dtype)


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """Array in (z, y, x) order plus geometry -> SimpleITK image (components last if any)."""
    is_vector = array.ndim == geometry.ndim + 1
    if array.dtype == bool:
        array = array.astype(np.uint8)
    img = sitk.GetImageFromArray(array, isVector=is_vector)
    if tuple(img.GetSize()) != tuple(geometry.size):
        raise ValueError(f"array shape {array.shape} does not match geometry size {geometry.size}")
    return geometry.apply_to(img)


def write_image(
    path: str | os.PathLike, array: np.ndarray, geometry: Geometry, *, compress: bool = True
) -> Path:
    """Write atomically in the format named by the extension, geometry preserved.

    PNG/JPG/BMP store no geometry; they need an 8- or 16-bit integer array. ``.mhd`` and
    ``.nhdr`` write a header plus a data file (``.zraw``/``.raw``/``.raw.gz``), both moved into
    place together.
    """
    path = Path(path)
    ext = split_extension(path.name)[1].lower()
    if not ext:
        raise AutosegError("unknown output image type", path=path, fix="use e.g. .nii.gz")
    if ext in PILLOW_EXTENSIONS + (".tif", ".tiff") and array.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(array.dtype, np.integer) and array.min() >= 0 and array.max() < 65536:
            array = array.astype(np.uint8 if array.max() < 256 else np.uint16)
        elif array.dtype == bool:
            array = array.astype(np.uint8)
    img = to_sitk(array, geometry)
    if ext in (".mhd", ".nhdr"):
        return _write_with_data_file(path, img, compress)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=compress and ext not in PILLOW_EXTENSIONS)
    return path


def _write_with_data_file(path: Path, img: sitk.Image, compress: bool) -> Path:
    # The header names its data file, so write both under their final names in a private
    # folder, then move the data file first and the header last. (Written under a temporary
    # name, a .nhdr would name a data file that keeps that temporary name.)
    header = path.name.lower()
    tmp_dir = path.parent / f"{TMP_MARK}{uuid.uuid4().hex[:8]}"
    tmp_dir.mkdir(parents=True)
    try:
        sitk.WriteImage(img, str(tmp_dir / path.name), useCompression=compress)
        files = sorted(tmp_dir.iterdir(), key=lambda p: p.name.lower() == header)
        for f in files:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def voxel_volume(geometry: Geometry) -> float:
    return float(math.prod(geometry.spacing))
