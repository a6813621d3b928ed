"""HTML building blocks of the report: escaping, number formats, tables, figures."""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from autoseg.evaluation.report import assets
from autoseg.evaluation.report.constants import (
    _DASH,
)


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell; None/NaN as a dash."""
    if is_missing(value):
        return _DASH
    if isinstance(value, int | np.integer):
        return str(int(value))
    v = float(value)
    return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3g}"


def size_digits(value: Any) -> int:
    """Decimals for a volume, area or CSA: 0 from 100 up, 1 from 10, else 2 (a median nerve
    in ultrasound is 7-11 mm², a sciatic nerve's volume thousands of mm³)."""
    if is_missing(value):
        return 0
    v = abs(float(value))
    return 0 if v >= 100 else 1 if v >= 10 else 2


def td_size(value: Any) -> str:
    return td_num(value, size_digits(value))


def fmt_dims(values: Sequence[float]) -> str:
    """``24x160x160`` / ``3x0.75x0.75``: integers without decimals, others to 3 significant."""
    return "x".join(f"{v:g}" if float(v).is_integer() else f"{v:.3g}" for v in values)


def fmt_duration(seconds: float | None) -> str:
    if is_missing(seconds):
        return _DASH
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def fmt_time(value: str | float | None) -> str:
    """ISO string or POSIX time -> ``2026-05-01 14:03 UTC``."""
    if value is None:
        return _DASH
    try:
        if isinstance(value, int | float):
            t = _dt.datetime.fromtimestamp(float(value), _dt.UTC)
        else:
            t = _dt.datetime.fromisoformat(str(value))
            if t.tzinfo is None:
                t = t.replace(tzinfo=_dt.UTC)
            t = t.astimezone(_dt.UTC)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def td_num(value: Any, digits: int = 3, cls: str = "n") -> str:
    """A numeric cell whose ``data-v`` holds the raw value for sorting (empty when missing)."""
    raw = "" if is_missing(value) else repr(float(value))
    return f'<td class="{cls}" data-v="{raw}">{fmt(value, digits)}</td>'


def table(
    headers: Sequence[str | tuple[str, bool]],
    rows: Sequence[str],
    *,
    sortable: bool = False,
    cls: str = "",
    table_id: str = "",
) -> str:
    """``rows`` are ready ``<tr>...</tr>`` strings; a header ``(text, True)`` is right-aligned."""
    ths = []
    for h in headers:
        text, right = (h, False) if isinstance(h, str) else h
        ths.append(f'<th class="n">{esc(text)}</th>' if right else f"<th>{esc(text)}</th>")
    classes = " ".join(c for c in (cls, "sortable" if sortable else "") if c)
    attrs = (f' class="{classes}"' if classes else "") + (f' id="{table_id}"' if table_id else "")
    return (
        f'<div class="scroll"><table{attrs}><thead><tr>{"".join(ths)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def kv_table(pairs: Sequence[tuple[str, str]]) -> str:
    """Key-value table; values are HTML already."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def figure(png: bytes, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{assets.data_uri(png)}" alt="{esc(alt)}">{cap}</figure>'


def details(summary: str, items: Sequence[str]) -> str:
    lis = "".join(f"<li>{esc(i)}</li>" for i in items)
    return f"<details><summary>{esc(summary)}</summary><ul>{lis}</ul></details>"
