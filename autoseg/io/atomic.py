"""Atomic writes: a crash never leaves a half-written file under the final name.

Everything is written to a temporary name in the same folder (same file system, so the final
``os.replace`` is atomic) and renamed once complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

TMP_MARK = ".partial-"


def _tmp_name(path: Path) -> Path:
    # Keep the real extension(s) at the end so that writers which pick a format from the
    # file name (SimpleITK, numpy) still work: "case.nii.gz" -> ".partial-1a2b.case.nii.gz".
    return path.with_name(f"{TMP_MARK}{uuid.uuid4().hex[:8]}.{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def json_safe(obj: Any) -> Any:
    """Copy of ``obj`` that JSON can hold strictly (:func:`write_json_atomic` refuses NaN):
    NaN/inf floats as None (a Dice of two empty masks, a distance to nothing), numpy scalars
    as Python numbers, paths as strings, mapping keys as strings. The one copy of this rule
    (training logs, validation scores, metrics, measurements and raters use it)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 2) -> None:
    """Write JSON atomically, keys in insertion order, with a trailing newline."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent, allow_nan=False) + "\n", encoding="utf-8")


def remove_partials(folder: str | os.PathLike) -> int:
    """Delete temporary files left by a killed process; returns how many were removed."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.rglob(f"{TMP_MARK}*"):
            if p.is_file():
                p.unlink()
                n += 1
    return n
