"""NIfTI header checks that SimpleITK does not make.

SimpleITK 2.5 reads a truncated ``.nii``/``.nii.gz`` without complaint (the missing voxels
become zeros) and turns stored NaN/Inf into 0. Both would pass silently into training, so
:func:`autoseg.io.read_image` and ``autoseg verify`` check the header's promised size here.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class NiftiHeader:
    """The few NIfTI-1 header fields that say how many bytes the voxels take and as what."""

    byte_order: str  # "<" or ">"
    datatype: int  # 16 = float32, 64 = float64, ...
    bitpix: int
    vox_offset: int
    n_voxels: int

    @property
    def expected_bytes(self) -> int:
        return self.vox_offset + self.n_voxels * self.bitpix // 8

    @property
    def float_dtype(self) -> np.dtype | None:
        code = {16: "f4", 64: "f8"}.get(self.datatype)
        return None if code is None else np.dtype(self.byte_order + code)


def _is_nifti(path: Path) -> bool:
    low = path.name.lower()
    return (low.endswith(".nii") or low.endswith(".nii.gz")) and path.is_file()


def read_nifti_header(path: str | os.PathLike) -> NiftiHeader | None:
    """The NIfTI-1 header of a .nii/.nii.gz file; None for other files, NIfTI-2 (which ITK 5.4
    cannot read) or a header too damaged to parse (read_image then reports the file)."""
    path = Path(path)
    if not _is_nifti(path):
        return None
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:
            raw = fh.read(348)
    except (OSError, EOFError, zlib.error):
        return None
    if len(raw) < 348:
        return None
    for order in "<>":
        if struct.unpack_from(f"{order}i", raw, 0)[0] == 348:
            break
    else:
        return None
    dims = struct.unpack_from(f"{order}8h", raw, 40)
    datatype, bitpix = struct.unpack_from(f"{order}hh", raw, 70)
    offset = max(int(struct.unpack_from(f"{order}f", raw, 108)[0]), 352)
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    n_voxels = 1
    for d in dims[1 : dims[0] + 1]:
        n_voxels *= max(int(d), 1)
    return NiftiHeader(order, int(datatype), int(bitpix), offset, n_voxels)


def nifti_truncation(path: str | os.PathLike) -> str | None:
    """Say how a NIfTI file is truncated; None when complete or not NIfTI.

    SimpleITK 2.5 reads a truncated .nii/.nii.gz without complaint and fills the missing voxels
    with zeros, so completeness is checked here from the header: the file must hold
    ``vox_offset + prod(dim) * bitpix / 8`` bytes (uncompressed). For .nii.gz the gzip trailer
    (uncompressed size mod 2**32) is compared first; only when it disagrees is the stream
    decompressed (about 0.1 s per 25 MB) to find the true length or a cut-off stream.
    """
    path = Path(path)
    header = read_nifti_header(path)
    if header is None:
        return None
    expected = header.expected_bytes
    if path.name.lower().endswith(".gz"):
        actual, cut = gzip_length(path, expected)
    else:
        actual, cut = path.stat().st_size, False
    if cut:
        return (
            f"file is truncated: its compressed stream ends early after {actual:,} of the "
            f"{expected:,} bytes that its header promises"
        )
    if actual < expected:
        return (
            f"file is truncated: it holds {actual:,} of the {expected:,} bytes that its header "
            f"promises ({actual / expected:.0%})"
        )
    return None


def nifti_stored_non_finite(path: str | os.PathLike) -> tuple[int, int]:
    """(NaN, Inf) voxel counts as stored in a float NIfTI file; (0, 0) for anything else.

    ITK's NIfTI reader silently turns NaN and Inf into 0, so the array that read_image returns
    cannot show them; the stored voxels are read again here (one more decompression, ~0.1 s
    per 25 MB) so that the user learns that part of the image is not a measurement.
    """
    path = Path(path)
    header = read_nifti_header(path)
    if header is None or header.float_dtype is None:
        return 0, 0
    dtype = header.float_dtype
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                buf = fh.read(header.expected_bytes)
            data = np.frombuffer(buf, dtype, header.n_voxels, header.vox_offset)
        else:
            data = np.fromfile(path, dtype, header.n_voxels, offset=header.vox_offset)
    except (OSError, EOFError, ValueError, zlib.error):
        return 0, 0  # damaged files are reported by the truncation check or read_image
    n_nan = int(np.count_nonzero(np.isnan(data)))
    n_inf = int(np.count_nonzero(np.isinf(data)))
    return n_nan, n_inf


def gzip_length(path: Path, expected: int, offset: int = 0) -> tuple[int, bool]:
    """(uncompressed length, stream cut off early) of the gzip data that starts at ``offset``
    and runs to the end of the file; the trailer short-cuts complete files."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() - offset >= 18:
            fh.seek(-4, os.SEEK_END)
            if struct.unpack("<I", fh.read(4))[0] == expected % 2**32:
                return expected, False
    total, members = 0, 0
    inflate = zlib.decompressobj(wbits=31)
    with open(path, "rb") as fh:
        fh.seek(offset)
        while data := fh.read(1 << 20):
            while data:
                if inflate.eof:  # a further gzip member follows a complete one
                    members += 1
                    inflate = zlib.decompressobj(wbits=31)
                try:
                    total += len(inflate.decompress(data))
                except zlib.error:
                    # Padding after a complete member is not a cut; the length check decides.
                    return total, members == 0
                data = inflate.unused_data
    return total, members == 0 and not inflate.eof
