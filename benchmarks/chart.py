"""Bar chart of every compared figure as "how many times better autoseg is than nnU-Net".

    .venv/bin/python -m benchmarks.chart benchmarks/results/*.json -o ratios.png

Each bar is one figure of a result file (shape: ``benchmarks/results.py``). Its length on a
log axis is the ratio autoseg / nnU-Net for rates and scores (higher is better) and its inverse
nnU-Net / autoseg for times and memory (lower is better), so that right of the line at 1 always
means autoseg is better and a bar of 2 means twice as good either way. A black diamond marks
each figure's target in the same units; a missed target turns the bar red and says so in its
label. ``benchmarks/run_all.py`` draws ``benchmarks/results/ratios.png`` with
:func:`plot_ratios`; the file readers here are shared with it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

MET, MISSED, NO_TARGET = "#2e7d32", "#c62828", "#78909c"


# --------------------------------------------------------------------------- figures
def times_better(ratio: float | None, better: str) -> float | None:
    """How many times better autoseg is, from the ratio autoseg / nnU-Net: the ratio itself
    when higher is better, its inverse when lower is better (a time ratio of 0.25 is 4x
    better). ``None`` when there is no positive ratio to show."""
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return None
    return ratio if better == "higher" else 1.0 / ratio


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` (JSON null, strings, NaN, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def figure_ratio(fig: dict[str, Any]) -> float | None:
    """autoseg / nnU-Net of one figure: from the medians when both are there (the file's own
    ``ratio`` could be stale after a hand edit), else the stored ``ratio``."""
    a, n = _number(fig.get("autoseg")), _number(fig.get("nnunet"))
    if a is not None and n is not None:
        return a / n if n != 0 else None
    return _number(fig.get("ratio"))


def figure_met(fig: dict[str, Any]) -> bool | None:
    """Whether the ratio reached the target in the figure's direction; ``None`` without a
    ratio or a target (nothing to judge)."""
    ratio, target = figure_ratio(fig), _number(fig.get("target"))
    if ratio is None or target is None:
        return None
    return ratio >= target if fig.get("better") == "higher" else ratio <= target


def flatten(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Figures of result files (``{"benchmark", "results": [...]}``) as one list, each with its
    ``benchmark``; a dict without ``results`` is taken as a figure already."""
    out: list[dict[str, Any]] = []
    for item in results:
        if isinstance(item.get("results"), list):
            bench = item.get("benchmark", "")
            out.extend({"benchmark": bench, **fig} for fig in item["results"])
        else:
            out.append(dict(item))
    return out


# --------------------------------------------------------------------------- reading
def check_result_file(data: Any) -> str | None:
    """Why ``data`` is not a usable result file, or ``None``: the harness skips such a file by
    name instead of failing on one half-written or hand-broken JSON."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("benchmark"), str) or not data["benchmark"]:
        return "no 'benchmark' name"
    figs = data.get("results")
    if not isinstance(figs, list):
        return "no 'results' list"
    for i, fig in enumerate(figs):
        if not isinstance(fig, dict) or not isinstance(fig.get("name"), str):
            return f"results[{i}] has no 'name'"
        if fig.get("better") not in ("higher", "lower"):
            return f"results[{i}] ({fig['name']}): 'better' must be 'higher' or 'lower'"
        for key in ("autoseg", "nnunet", "target"):
            value = fig.get(key)
            if value is not None and _number(value) is None:
                return f"results[{i}] ({fig['name']}): {key!r} is not a number"
    return None


def load_results(paths: Iterable[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Read result files: ``(files, problems)``. Each file's dict gets ``_path``; unreadable or
    malformed files are left out and named in ``problems``."""
    files, problems = [], []
    for path in sorted(Path(p) for p in paths):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            problems.append(f"{path.name}: unreadable ({err})")
            continue
        why = check_result_file(data)
        if why is not None:
            problems.append(f"{path.name}: {why}")
            continue
        data["_path"] = str(path)
        files.append(data)
    return files, problems


# --------------------------------------------------------------------------- drawing
def _label(fig: dict[str, Any], width: int = 48) -> str:
    """Two short lines: the figure's name, then metric and benchmark."""
    name = str(fig.get("name", ""))
    bench = str(fig.get("benchmark", ""))
    if bench and name.lower().startswith(bench.lower() + ","):
        name = name[len(bench) + 1 :].strip()
    first = textwrap.shorten(name, width=width, placeholder="...")
    return f"{first}\n{fig.get('metric', '')} [{bench}]" if bench else first


def _x_limits(values: Sequence[float]) -> tuple[float, float]:
    """Log-axis limits around 1, the bars and the targets, with room on the right for labels."""
    lo = min([1.0, *values])
    hi = max([1.0, *values])
    return lo / 1.8, hi * 4.0


def plot_ratios(results: list[dict[str, Any]], out: Path, *, title: str | None = None) -> Path:
    """Draw one horizontal bar per figure of ``results`` (result files or figures) into the PNG
    ``out`` (written atomically) and return its path.

    Bars start at 1 and end at :func:`times_better`, on a log axis so that 2x better and 2x
    worse are the same length; green met, red missed (also written next to the bar), grey with
    no target; figures without a comparison are listed with "no comparison"."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator

    figs = flatten(results)
    n = max(len(figs), 1)
    fig = Figure(figsize=(11, 1.4 + 0.62 * n))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    values: list[float] = []
    for f in figs:
        better = str(f.get("better"))
        candidates = (figure_ratio(f), _number(f.get("target")))
        values += [v for v in (times_better(c, better) for c in candidates) if v is not None]
    lo, hi = _x_limits(values)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.axvline(1.0, color="black", linewidth=1.2, zorder=3)
    target_drawn = False
    for y, f in enumerate(figs):
        better = str(f.get("better"))
        value = times_better(figure_ratio(f), better)
        target = times_better(_number(f.get("target")), better)
        met = figure_met(f)
        color = NO_TARGET if met is None else (MET if met else MISSED)
        if value is None:
            ax.text(1.15, y, "no comparison", va="center", fontsize=9, color="#555555")
        else:
            ax.barh(y, value - 1.0, left=1.0, height=0.6, color=color, zorder=2)
            text = f"{value:.2f}x"
            if met is False:
                text += f"  MISSED (target {target:.2g}x)"
            x = max(value, target or 0.0, 1.0) * 1.12
            weight = "bold" if met is False else "normal"
            ax.text(x, y, text, va="center", fontsize=9, color=color, fontweight=weight)
        if target is not None:
            ax.plot([target], [y], "D", markersize=7, color="black", zorder=4)
            target_drawn = True
    ax.set_yticks(range(len(figs)))
    ax.set_yticklabels([_label(f) for f in figs], fontsize=8.5)
    ax.set_ylim(n - 0.5, -0.5)  # first figure on top
    times = FuncFormatter(lambda v, _: f"{v:g}x")
    ax.xaxis.set_major_formatter(times)
    ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(times)
    ax.tick_params(axis="x", which="minor", labelsize=8)
    ax.grid(axis="x", which="major", color="#dddddd", zorder=0)
    ax.set_xlabel(
        "times better than nnU-Net v2 (log scale; right of 1 = autoseg better)\n"
        "rates: autoseg / nnU-Net; times and memory: nnU-Net / autoseg"
    )
    ax.set_title(title or "autoseg vs nnU-Net v2, same run, same machine")
    if not figs:
        ax.text(1.0, 0.0, "no results", ha="center", va="center")
    handles = [Patch(color=MET, label="target met"), Patch(color=MISSED, label="target missed")]
    handles.append(Patch(color=NO_TARGET, label="no target"))
    if target_drawn:
        handles.append(Line2D([], [], marker="D", color="black", linestyle="none", label="target"))
    ax.legend(handles=handles, loc="best", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    tmp.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="result JSON files")
    parser.add_argument("-o", "--out", type=Path, default=Path("ratios.png"), help="PNG to write")
    args = parser.parse_args(argv)
    files, problems = load_results(p for p in args.files if p.suffix == ".json")
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    print(plot_ratios(files, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
