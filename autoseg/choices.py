"""The user's lists on the command line and in the Python API, read by one rule everywhere.

``--configs 2d,3d_fullres``, ``--folds 0,2`` / ``"0 2"`` / ``[0, 2]`` / ``3`` / ``all``: train,
find-best, export and predict all accept the same spellings and refuse the same mistakes
(before, three modules had three fold rules). Imports nothing of autoseg but the error type.
"""

from __future__ import annotations

from collections.abc import Sequence

from autoseg.errors import AutosegError

ALL = "all"


def parse_list(values: str | int | Sequence[str] | Sequence[int] | None) -> list[str] | None:
    """``"a,b"`` / ``"a b"`` / ``["a", "b"]`` / ``[0, 1]`` / ``3`` -> list of strings; None
    stays None (the caller's default)."""
    if values is None:
        return None
    if isinstance(values, (str, int)):
        values = [values]  # type: ignore[assignment]
    out: list[str] = []
    for v in values:  # type: ignore[union-attr]
        out.extend(t for t in str(v).replace(" ", ",").split(",") if t)
    return out


def parse_folds(
    folds: str | int | Sequence[int] | Sequence[str] | None, n_folds: int | None = None
) -> list[int] | None:
    """Fold numbers, sorted and unique; None stays None. ``all`` means ``0..n_folds-1`` (None
    when ``n_folds`` is not known: every fold there is). With ``n_folds`` each fold must exist."""
    items = parse_list(folds)
    if items is None or items == [ALL]:
        return None if n_folds is None or items is None else list(range(n_folds))
    try:
        out = sorted({int(t) for t in items})
    except ValueError:
        raise AutosegError(
            f"folds {folds!r} are not fold numbers", fix="write e.g. 0, 0,2 or all"
        ) from None
    if not out:
        raise AutosegError(f"folds {folds!r} name no fold", fix="write e.g. 0, 0,2 or all")
    bad = [f for f in out if f < 0 or (n_folds is not None and f >= n_folds)]
    if bad:
        known = f" (folds 0..{n_folds - 1})" if n_folds is not None else ""
        raise AutosegError(f"fold {bad[0]} does not exist{known}", fix="write e.g. 0, 0,2 or all")
    return out
