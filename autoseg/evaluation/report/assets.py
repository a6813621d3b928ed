"""Static pieces of ``report.html``: its style sheet, the table-sorting script, and the figures.

Every figure is drawn with matplotlib's object API on an Agg canvas (no pyplot: no global
figure state, safe in worker processes and without a display) and returned as PNG bytes,
which the report embeds as base64 so that the page is one self-contained file.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

REFERENCE_COLOUR = "#00c000"  # green: the papers' usual colour for the manual reference
PREDICTION_COLOUR = "#ff2020"  # red: the model
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CSS = """
:root { --fg: #1d232a; --muted: #5b6570; --line: #d8dde3; --accent: #1f6feb;
        --bad: #fde2e1; --good: #e6f4ea; --chosen: #fff4c2; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0 auto; max-width: 1180px; padding: 0 24px 48px; }
header.top { border-bottom: 3px solid var(--accent); padding: 18px 0 10px; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 8px; }
p.sub { color: var(--muted); margin: 0; }
nav.toc { font-size: 13px; margin: 8px 0 0; }
nav.toc a { margin-right: 14px; color: var(--accent); text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 14px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 9px; text-align: left;
         vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #9aa4ae; font-size: 11px; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; color: var(--fg); }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; color: var(--fg); }
tr.fail td { background: var(--bad); }
tr.chosen td { background: var(--chosen); font-weight: 600; }
table.kv th { text-align: right; background: none; color: var(--muted); font-weight: 500; }
.missing { background: #fff8e6; border-left: 4px solid #e3a008; padding: 6px 10px;
           margin: 8px 0; }
.error { background: var(--bad); border-left: 4px solid #d1242f; padding: 6px 10px; }
.note { color: var(--muted); font-size: 13px; }
.fail-flag { color: #b42318; font-weight: 600; }
pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
            font-size: 12.5px; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: 8px 10px;
      overflow-x: auto; }
details { margin: 4px 0 10px; }
details summary { cursor: pointer; color: var(--accent); }
details ul { margin: 4px 0; }
figure { margin: 10px 0 18px; break-inside: avoid; page-break-inside: avoid; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 3px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.grid figure { flex: 0 1 370px; margin: 0; }
.scroll { overflow-x: auto; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  nav.toc, table.sortable th::after { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  tr, .card { break-inside: avoid; page-break-inside: avoid; }
  .scroll { overflow: visible; }
  a { color: inherit; text-decoration: none; }
}
"""

SORT_JS = """
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-v");
    if (v === null) { v = cell.textContent.trim(); }
    if (v === "") { return null; }
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th) {
      th.addEventListener("click", function () {
        var col = th.cellIndex, body = table.tBodies[0];
        var asc = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("thead th").forEach(function (h) {
          h.removeAttribute("aria-sort");
        });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === y) { return 0; }
          if (x === null) { return 1; }   /* missing values stay last */
          if (y === null) { return -1; }
          var c = (typeof x === typeof y) ? (x < y ? -1 : 1) : (typeof x === "number" ? -1 : 1);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


# --------------------------------------------------------------------------------------------
# Encoding


def new_figure(width_in: float, height_in: float, dpi: int = 100):
    """A matplotlib Figure on an Agg canvas (no pyplot state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_SIGNATURE


# --------------------------------------------------------------------------------------------
# Training curves (used only when training_curves.png is missing)


def plot_training_log(log: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Losses and pseudo Dice per epoch from ``training_log.json``."""
    fig = new_figure(6.4, 3.6, dpi=80)
    ax = fig.add_subplot()
    epochs = [e.get("epoch", i + 1) for i, e in enumerate(log)]

    def series(key: str) -> list[float]:
        return [math.nan if e.get(key) is None else float(e[key]) for e in log]

    ax.plot(epochs, series("train_loss"), color="tab:blue", label="train loss")
    ax.plot(epochs, series("val_loss"), color="tab:red", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    twin = ax.twinx()
    twin.plot(epochs, series("pseudo_dice"), ".", color="tab:green", alpha=0.5)
    twin.plot(epochs, series("pseudo_dice_ema"), color="tab:green", label="pseudo Dice (EMA)")
    twin.set_ylim(0, 1)
    twin.set_ylabel("pseudo Dice")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


# --------------------------------------------------------------------------------------------
# Overlays


@dataclass
class OverlayPanel:
    """One 2D slice: image, reference and prediction (foreground as booleans), and a title."""

    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    title: str


def display_window(image: np.ndarray) -> tuple[float, float]:
    """Grey-level window: 1st to 99th percentile, which keeps a few bright voxels (fat, vessel
    flow artefacts in MRI, speckle in ultrasound) from washing out the nerve."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    return float(lo), float(hi if hi > lo else lo + 1.0)


def crop_box(
    masks: Sequence[np.ndarray], shape: tuple[int, int], spacing_yx: Sequence[float]
) -> tuple[slice, slice]:
    """Square (in mm) window around all masks: 1.6 x their extent, at least 30 mm across.

    A nerve fills ~0.1-0.2 % of an image: shown whole, a 10 mm sciatic nerve in a 160 mm
    field of view is a few pixels on screen. 30 mm shows it with its neighbours (vessels,
    muscle borders) and 1.6 x keeps stray predicted islands inside the window.
    """
    union = np.zeros(shape, dtype=bool)
    for m in masks:
        union |= m
    if not union.any():
        return slice(0, shape[0]), slice(0, shape[1])
    sy, sx = (float(s) for s in spacing_yx)
    ys, xs = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    cy, cx = (ys[0] + ys[-1]) / 2.0, (xs[0] + xs[-1]) / 2.0
    extent_mm = max((ys[-1] - ys[0] + 1) * sy, (xs[-1] - xs[0] + 1) * sx)
    half_mm = max(0.8 * extent_mm, 15.0)
    hy, hx = half_mm / sy, half_mm / sx
    y0, y1 = max(0, int(math.floor(cy - hy))), min(shape[0], int(math.ceil(cy + hy)) + 1)
    x0, x1 = max(0, int(math.floor(cx - hx))), min(shape[1], int(math.ceil(cx + hx)) + 1)
    return slice(y0, y1), slice(x0, x1)


def plot_overlays(panels: Sequence[OverlayPanel], spacing_yx: Sequence[float], title: str) -> bytes:
    """Image in grey, reference contour green, prediction contour red; one panel per slice,
    all cropped to the same window around reference and prediction."""
    from matplotlib.lines import Line2D

    n = max(1, len(panels))
    shape = panels[0].image.shape
    box = crop_box([m for p in panels for m in (p.reference, p.prediction)], shape, spacing_yx)
    aspect = float(spacing_yx[0]) / float(spacing_yx[1])
    if n > 1:
        fig = new_figure(3.3 * n, 3.75, dpi=100)
    else:  # one 2D frame: 5 inches wide, as tall as the window's shape asks (within reason)
        rows, cols = box[0].stop - box[0].start, box[1].stop - box[1].start
        height = min(max(5.0 * rows * aspect / max(cols, 1), 2.5), 7.0)
        fig = new_figure(5.0, height + 0.9, dpi=100)
    for i, p in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        img = p.image[box]
        lo, hi = display_window(img)
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        # the reference last, so that it stays visible under a prediction full of islands
        for mask, colour in ((p.prediction[box], PREDICTION_COLOUR), (p.reference[box], None)):
            if mask.any() and min(mask.shape) > 1:
                ax.contour(
                    mask.astype(np.float32),
                    levels=[0.5],
                    colors=[colour or REFERENCE_COLOUR],
                    linewidths=1.4,
                )
        if p.title:
            ax.set_title(p.title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Line2D([], [], color=REFERENCE_COLOUR, lw=2, label="reference"),
        Line2D([], [], color=PREDICTION_COLOUR, lw=2, label="prediction"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    return figure_png(fig)


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class CsaProfile:
    """Total perpendicular CSA per slice along the nerve, for reference and prediction."""

    case: str
    dice: float
    ref_mm: list[float]
    ref_csa: list[float]
    pred_mm: list[float]
    pred_csa: list[float]


def plot_csa_profiles(profiles: Sequence[CsaProfile], label_name: str) -> bytes:
    """One panel per case: CSA along the nerve, reference (green) vs prediction (red)."""
    n = max(1, len(profiles))
    fig = new_figure(min(4.0 * n, 12.0), 3.2, dpi=100)
    for i, p in enumerate(profiles):
        ax = fig.add_subplot(1, n, i + 1)
        ax.plot(p.ref_mm, p.ref_csa, "o-", ms=3, color=REFERENCE_COLOUR, label="reference")
        ax.plot(p.pred_mm, p.pred_csa, "s--", ms=3, color=PREDICTION_COLOUR, label="prediction")
        ax.set_title(f"{p.case} (Dice {p.dice:.2f})", fontsize=9)
        ax.set_xlabel("position along the slice axis (mm)", fontsize=8)
        if i == 0:
            ax.set_ylabel(f"{label_name} CSA (mm²)", fontsize=8)
            ax.legend(fontsize=7)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_png(fig)


def plot_agreement(
    quantities: Sequence[tuple[str, Sequence[float], Sequence[float]]], label_name: str
) -> bytes:
    """Prediction vs reference scatter per quantity (one dot per case) with the identity line."""
    n = max(1, len(quantities))
    fig = new_figure(3.6 * n, 3.4, dpi=100)
    for i, (name, ref, pred) in enumerate(quantities):
        ax = fig.add_subplot(1, n, i + 1)
        r = np.asarray(ref, dtype=float)
        p = np.asarray(pred, dtype=float)
        ok = np.isfinite(r) & np.isfinite(p)
        ax.scatter(r[ok], p[ok], s=16, color="tab:blue", alpha=0.8)
        top = float(max(r[ok].max(initial=0.0), p[ok].max(initial=0.0))) * 1.08 or 1.0
        ax.plot([0, top], [0, top], color="grey", lw=1, ls=":")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal")
        ax.set_xlabel(f"reference {name}", fontsize=8)
        ax.set_ylabel(f"predicted {name}", fontsize=8)
        ax.set_title(f"{label_name}: {name}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_png(fig)


def plot_dice_by_group(groups: Mapping[str, Sequence[float]], label_name: str) -> bytes:
    """Dice per case as dots, one column per cohort, with the median as a bar."""
    fig = new_figure(max(3.2, 1.4 * len(groups) + 1.5), 3.2, dpi=100)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # fixed jitter: the same report twice is the same picture
    for i, values in enumerate(groups.values()):
        v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
        if v.size == 0:
            continue
        ax.scatter(i + rng.uniform(-0.12, 0.12, v.size), v, s=14, alpha=0.75)
        ax.plot([i - 0.25, i + 0.25], [np.median(v)] * 2, color="black", lw=2)
    ax.axhline(0.5, color="#b42318", lw=0.8, ls="--")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups), fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"{label_name} Dice", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)
