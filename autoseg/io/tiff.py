"""TIFF completeness check that SimpleITK does not make.

A TIFF file is a chain of image file directories (IFDs, one per page; a 3D stack has one per
slice), each pointing at its pixel data (strips or tiles) and at the next directory. When
such a file is cut short (an interrupted copy or download), libtiff, and so SimpleITK 2.5,
reads the pages whose directories survived and drops the rest without an error: a 20-slice
stack cut at 35 % reads as 7 slices, and then fails, if at all, as a size mismatch with its
mask. Files whose only directory sits at their end (as SimpleITK writes them) fail to open
instead, with a message that does not say why. :func:`tiff_truncation` walks the chain and
says which part lies beyond the end of the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

_STRIP_OFFSETS, _STRIP_BYTE_COUNTS = 273, 279
_TILE_OFFSETS, _TILE_BYTE_COUNTS = 324, 325
# TIFF field types -> (struct code, size); only the integer types offsets and counts use.
_INT_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}
# Bytes per value of every TIFF field type, to find where out-of-line values end.
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
               13: 4, 16: 8, 17: 8, 18: 8}  # fmt: skip
MAX_PAGES = 1_000_000  # a loop in the chain of directories stops the walk here


class _Damaged(Exception):
    """The structure cannot be parsed: not a truncation that this check can name."""


class _Cut(Exception):
    """A list of strip/tile offsets or counts reaches past the end of the file."""

    def __init__(self, needed: int):
        super().__init__(needed)
        self.needed = needed


def tiff_truncation(path: str | os.PathLike) -> str | None:
    """Say how a TIFF file is truncated; None when complete, not TIFF, or unparseable (the
    reader then reports the file).

    Checked: every directory lies within the file, and so does every value it stores outside
    itself (tag data such as the strip list or the software name) and every strip or tile it
    points to (``offset + byte count <= file size``).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            return _walk(fh, size)
    except (OSError, _Damaged, struct.error):
        return None


def _walk(fh: BinaryIO, size: int) -> str | None:
    head = fh.read(16)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        return None
    order = "<" if head[:2] == b"II" else ">"
    magic = struct.unpack_from(f"{order}H", head, 2)[0]
    if magic == 42:
        big, offset = False, struct.unpack_from(f"{order}I", head, 4)[0]
    elif magic == 43:
        if len(head) < 16:
            return _cut(size, 16, "the BigTIFF header")
        big, offset = True, struct.unpack_from(f"{order}Q", head, 8)[0]
    else:
        return None
    count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
    seen: set[int] = set()
    page = 0
    while offset:
        if offset in seen or page >= MAX_PAGES:
            raise _Damaged
        seen.add(offset)
        page += 1
        where = f"the directory of page {page}"
        if offset + count_size > size:
            return _cut(size, offset + count_size, where)
        fh.seek(offset)
        (n_entries,) = struct.unpack(f"{order}{count_fmt}", fh.read(count_size))
        end = offset + count_size + n_entries * entry_size + next_size
        if end > size:
            return _cut(size, end, where)
        entries = fh.read(n_entries * entry_size)
        (offset,) = struct.unpack(f"{order}{next_fmt}", fh.read(next_size))
        try:
            tags = _tags(fh, entries, order, big, size)
        except _Cut as cut:
            return _cut(size, cut.needed, f"the tag data of page {page}")
        for offsets_tag, counts_tag in (
            (_STRIP_OFFSETS, _STRIP_BYTE_COUNTS),
            (_TILE_OFFSETS, _TILE_BYTE_COUNTS),
        ):
            starts, lengths = tags.get(offsets_tag), tags.get(counts_tag)
            if starts is None or lengths is None or len(starts) != len(lengths):
                continue
            reach = max((s + n for s, n in zip(starts, lengths)), default=0)
            if reach > size:
                return _cut(size, reach, f"the image data of page {page}")
    return None


def _tags(fh: BinaryIO, entries: bytes, order: str, big: bool, size: int) -> dict[int, list[int]]:
    """Strip/tile offsets and byte counts of one directory; raises _Cut when a tag's value
    stored outside the directory reaches past the end of the file."""
    entry_size, inline = (20, 8) if big else (12, 4)
    head_fmt = f"{order}HH" + ("Q" if big else "I")
    value_at = 12 if big else 8
    wanted = (_STRIP_OFFSETS, _STRIP_BYTE_COUNTS, _TILE_OFFSETS, _TILE_BYTE_COUNTS)
    out: dict[int, list[int]] = {}
    for i in range(len(entries) // entry_size):
        entry = entries[i * entry_size : (i + 1) * entry_size]
        tag, ftype, count = struct.unpack_from(head_fmt, entry, 0)
        n_bytes = count * _TYPE_SIZES.get(ftype, 1)
        where = None
        if n_bytes > inline:
            (where,) = struct.unpack_from(f"{order}{'Q' if big else 'I'}", entry, value_at)
            if where + n_bytes > size:
                raise _Cut(where + n_bytes)
        if tag not in wanted or ftype not in _INT_TYPES:
            continue
        code, _ = _INT_TYPES[ftype]
        if where is None:
            raw = entry[value_at : value_at + n_bytes]
        else:
            fh.seek(where)
            raw = fh.read(n_bytes)
        out[tag] = list(struct.unpack(f"{order}{count}{code}", raw))
    return out


def _cut(size: int, needed: int, what: str) -> str:
    return (
        f"file is truncated: {what} reaches byte {needed:,} but the file holds only {size:,} bytes"
    )
