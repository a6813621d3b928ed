"""Summary statistics, cohort tables and the CSV/JSON writers shared by evaluate/measure/raters.

Statistics per metric: ``n`` (defined values), ``n_undefined`` (NaN values, e.g. a distance
when one mask is empty), mean, sample standard deviation (ddof=1; 0 for a single value),
median, first and third quartile and IQR. NaN values are left out of every statistic and
counted in ``n_undefined`` instead, so a summary never turns silently into NaN.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError
from autoseg.io import atomic_path, load_dataset_json

STAT_KEYS = ("n", "n_undefined", "mean", "sd", "median", "q1", "q3", "iqr")
ALL_GROUP = "all"


def describe(values: Iterable[float]) -> dict[str, float]:
    """n, n_undefined, mean, sd, median, q1, q3, iqr of the finite values (NaN: none defined)."""
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    finite = arr[~np.isnan(arr)]
    out: dict[str, float] = {"n": int(finite.size), "n_undefined": int(arr.size - finite.size)}
    if finite.size == 0:
        out.update({k: math.nan for k in STAT_KEYS[2:]})
        return out
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    out["mean"] = float(finite.mean())
    out["sd"] = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    out["median"] = float(median)
    out["q1"] = float(q1)
    out["q3"] = float(q3)
    out["iqr"] = float(q3 - q1)
    return out


def numeric_keys(rows: Sequence[Mapping[str, Any]], exclude: Iterable[str] = ()) -> list[str]:
    """Keys whose values are numbers in the first row, in the row's order."""
    skip = set(exclude)
    if not rows:
        return []
    return [
        k
        for k, v in rows[0].items()
        if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
    ]


def summarize(
    per_case_rows: Sequence[Mapping[str, Any]],
    group_by: str | None = None,
    *,
    metrics: Sequence[str] | None = None,
    label_key: str = "label",
) -> dict[str, Any]:
    """Statistics per label and metric, overall and (with ``group_by``) per group.

    ``per_case_rows`` are flat dicts such as ``{"case": "c1", "cohort": "A", "label": 1,
    "dice": 0.8, ...}``. Returns ``{"overall": {label: {metric: stats}}}`` plus, when
    ``group_by`` is given, ``"group_by": group_by`` and ``"groups": {value: {label: {metric:
    stats}}}``. Labels are keys as strings (JSON object keys). Rows whose group value is empty
    or missing are only in the overall summary.
    """
    if metrics is None:
        metrics = numeric_keys(per_case_rows, exclude=(label_key,))
    result: dict[str, Any] = {"overall": _by_label(per_case_rows, metrics, label_key)}
    if group_by is not None:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for row in per_case_rows:
            value = row.get(group_by)
            if value is None or value == "":
                continue
            groups.setdefault(str(value), []).append(row)
        result["group_by"] = group_by
        result["groups"] = {
            g: _by_label(rows, metrics, label_key) for g, rows in sorted(groups.items())
        }
    return result


def _by_label(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], label_key: str
) -> dict[str, dict[str, dict[str, float]]]:
    labels = sorted({r[label_key] for r in rows}, key=_label_sort_key)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label in labels:
        subset = [r for r in rows if r[label_key] == label]
        out[str(label)] = {
            m: describe(r.get(m, math.nan) for r in subset)
            for m in metrics
            if any(m in r for r in subset)
        }
    return out


def _label_sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def summary_table(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Flatten :func:`summarize` output into rows: group, label, metric, n, ..., iqr."""
    rows: list[dict[str, Any]] = []
    blocks = [(ALL_GROUP, summary["overall"])]
    blocks += list(summary.get("groups", {}).items())
    for group, per_label in blocks:
        for label, per_metric in per_label.items():
            for metric, stats in per_metric.items():
                rows.append({"group": group, "label": label, "metric": metric, **stats})
    return rows


# --------------------------------------------------------------------------------------------
# Writers


def _cell(value: Any) -> str:
    """CSV text: NaN/None as an empty cell (what R and pandas read as missing)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return repr(value) if value.is_integer() else f"{value:.6g}"
    return str(value)


def write_csv(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> Path:
    """Write rows atomically; columns default to the union of keys in first-seen order."""
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            for k in row:
                seen.setdefault(k, None)
        columns = list(seen)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    return path


# --------------------------------------------------------------------------------------------
# Cohorts


def load_cohorts(spec: str | os.PathLike | Mapping[str, str] | None) -> dict[str, str]:
    """Case -> cohort from a mapping, a CSV (``case,cohort``), a dataset.json or its folder.

    A CSV needs a header naming ``case`` and ``cohort`` columns; any other header is read as
    the first two columns of data. In dataset.json the cohort is ``cases[case]["cohort"]``.
    """
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        return {str(k): str(v) for k, v in spec.items()}
    path = Path(spec)
    if path.is_dir():
        return _cohorts_from_dataset_json(path)
    if not path.is_file():
        raise AutosegError(
            "cohort file not found",
            path=path,
            fix="give a CSV with columns case,cohort, a dataset.json, or its folder",
        )
    if path.name.endswith(".json"):
        return _cohorts_from_dataset_json(path.parent, path)
    return _cohorts_from_csv(path)


def _cohorts_from_dataset_json(folder: Path, file: Path | None = None) -> dict[str, str]:
    if file is not None and file.name != "dataset.json":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise AutosegError(f"cannot parse JSON ({exc})", path=file) from exc
        cases = data.get("cases", {}) if isinstance(data, dict) else {}
    else:
        cases = load_dataset_json(folder).cases
    out = {
        str(case): str(info["cohort"])
        for case, info in cases.items()
        if isinstance(info, dict) and info.get("cohort") is not None
    }
    if not out:
        raise AutosegError(
            "no case has a cohort",
            path=file or folder / "dataset.json",
            fix='add "cases": {"<case>": {"cohort": "<name>"}} or give a CSV case,cohort',
        )
    return out


def _cohorts_from_csv(path: Path) -> dict[str, str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise AutosegError(f"cannot read CSV ({exc})", path=path) from exc
    if not rows:
        raise AutosegError("cohort CSV is empty", path=path, fix="write lines case,cohort")
    header = [c.strip().lower() for c in rows[0]]
    if "case" in header and "cohort" in header:
        ci, gi = header.index("case"), header.index("cohort")
        rows, first_line = rows[1:], 2
    else:
        ci, gi, first_line = 0, 1, 1
    out: dict[str, str] = {}
    for n, row in enumerate(rows, start=first_line):
        if len(row) <= max(ci, gi):
            raise AutosegError(
                f"line {n} has {len(row)} column(s), expected case and cohort",
                path=path,
                fix="write one 'case,cohort' pair per line",
            )
        out[row[ci].strip()] = row[gi].strip()
    return out
