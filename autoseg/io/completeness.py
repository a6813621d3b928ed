"""Is an image file complete? Cheap checks from its header, before any reader runs.

SimpleITK reads some incomplete files without an error (a truncated NIfTI is zero-filled, a
cut multi-page TIFF loses pages) and fails on others only when the pixel data is read, which
``autoseg convert`` does after its check pass has read headers only: a MetaImage header
(``.mhd``) copied without its ``.raw`` file, or a cut NRRD, then stopped the conversion half
way. :func:`file_truncation` says what is missing, from the header and the file sizes:

- NIfTI: :func:`autoseg.io.nifti.nifti_truncation`;
- TIFF: :func:`autoseg.io.tiff.tiff_truncation`;
- MetaImage (``.mha``/``.mhd``) and NRRD (``.nrrd``/``.nhdr``): the data file exists and
  holds the bytes that the header's sizes and type promise (raw data), the compressed size
  the header records (MetaImage), or a complete gzip stream of the right length (NRRD; the
  gzip trailer decides without decompressing when it matches).

Encodings these checks cannot size cheaply (ASCII, bzip2, file lists) are left to the reader.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from autoseg.io.nifti import gzip_length, nifti_truncation
from autoseg.io.tiff import tiff_truncation

_HEADER_LIMIT = 1 << 16  # text headers are a few hundred bytes; stop looking after 64 KiB

_MET_SIZES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}

_NRRD_SIZES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t",
        "ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32",
        "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int",
        "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int",
        "uint64", "uint64_t", "double"),
}  # fmt: skip
_NRRD_TYPE_SIZE = {name: size for size, names in _NRRD_SIZES.items() for name in names}


def file_truncation(path: str | os.PathLike) -> str | None:
    """Say how an image file is incomplete; None when complete, or when its format or
    encoding cannot be checked cheaply (the reader then has the last word)."""
    path = Path(path)
    low = path.name.lower()
    if not path.is_file():
        return None
    if low.endswith((".nii", ".nii.gz")):
        return nifti_truncation(path)
    if low.endswith((".tif", ".tiff")):
        return tiff_truncation(path)
    try:
        if low.endswith((".mha", ".mhd")):
            return _metaimage(path)
        if low.endswith((".nrrd", ".nhdr")):
            return _nrrd(path)
    except (OSError, ValueError):
        return None
    return None


def _metaimage(path: Path) -> str | None:
    """``Key = Value`` lines up to ``ElementDataFile``; the data follows it (LOCAL) or lies in
    the file it names."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_LIMIT)
    fields: dict[str, str] = {}
    data_offset = None
    pos = 0
    for raw_line in head.splitlines(keepends=True):
        pos += len(raw_line)
        key, sep, value = raw_line.decode("latin-1").partition("=")
        if not sep:
            continue
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            data_offset = pos
            break
    if data_offset is None or "headersize" in fields:
        return None
    if fields.get("binarydata", "true").lower() != "true":
        return None
    name = fields["elementdatafile"]
    if name.upper() == "LOCAL":
        available = path.stat().st_size - data_offset
        where = "its pixel data"
    elif name.upper() == "LIST" or "%" in name or " " in name:
        return None
    else:
        data = path.parent / name
        if not data.is_file():
            return f"file is incomplete: its data file {name} is missing (beside {path.name})"
        available = data.stat().st_size
        where = f"its data file {name}"
    if fields.get("compresseddata", "false").lower() == "true":
        expected = int(fields["compresseddatasize"]) if "compresseddatasize" in fields else None
    else:
        size = _MET_SIZES.get(fields.get("elementtype", "").upper().removesuffix("_ARRAY"))
        dims = [int(v) for v in fields.get("dimsize", "").split()]
        channels = int(fields.get("elementnumberofchannels", "1"))
        expected = None if size is None or not dims else math.prod(dims) * channels * size
    if expected is not None and available < expected:
        return _cut(where, available, expected)
    return None


def _nrrd(path: Path) -> str | None:
    """``field: value`` lines up to a blank line; the data follows it (.nrrd) or lies in the
    ``data file`` (.nhdr)."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_LIMIT)
    if not head.startswith(b"NRRD"):
        return None
    fields: dict[str, str] = {}
    data_offset = None
    pos = 0
    for raw_line in head.splitlines(keepends=True):
        pos += len(raw_line)
        line = raw_line.decode("latin-1").rstrip("\r\n")
        if not line:
            data_offset = pos
            break
        if line.startswith("#") or ":=" in line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    if any(int(fields.get(k, "0") or 0) != 0 for k in ("line skip", "lineskip", "byte skip")):
        return None
    if "byteskip" in fields and int(fields["byteskip"] or 0) != 0:
        return None
    detached = fields.get("data file", fields.get("datafile"))
    if detached is not None:
        if detached.upper().startswith("LIST") or "%" in detached or " " in detached:
            return None
        data = path.parent / detached
        if not data.is_file():
            return f"file is incomplete: its data file {detached} is missing (beside {path.name})"
        offset, where = 0, f"its data file {detached}"
    elif data_offset is None:
        return "file is truncated: its header ends before the pixel data starts"
    else:
        data, offset, where = path, data_offset, "its pixel data"
    size = _NRRD_TYPE_SIZE.get(fields.get("type", "").lower())
    sizes = [int(v) for v in re.split(r"\s+", fields.get("sizes", "").strip()) if v]
    if size is None or not sizes:
        return None
    expected = math.prod(sizes) * size
    encoding = fields.get("encoding", "").lower()
    if encoding == "raw":
        available = data.stat().st_size - offset
    elif encoding in ("gzip", "gz"):
        available, cut = gzip_length(data, expected, offset)
        if cut:
            return (
                f"file is truncated: {where} (a compressed stream) ends early after "
                f"{available:,} of {expected:,} bytes"
            )
    else:
        return None
    if available < expected:
        return _cut(where, available, expected)
    return None


def _cut(where: str, available: int, expected: int) -> str:
    return (
        f"file is truncated: {where} holds {available:,} of the {expected:,} bytes that its "
        f"header promises ({available / expected:.0%})"
    )
