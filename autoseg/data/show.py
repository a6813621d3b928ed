"""A picture of what the network is fed: a PNG grid of (augmented) patches with their masks.

Uses matplotlib's object API with the Agg canvas directly, so it never touches the global
pyplot backend of the caller (notebooks keep theirs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.io.atomic import atomic_path

# Label colours (label 1, 2, ...): colour-blind-safe Okabe-Ito hues, brightest first.
LABEL_COLOURS = (
    ("#E69F00", "orange"),
    ("#56B4E9", "sky blue"),
    ("#009E73", "green"),
    ("#F0E442", "yellow"),
    ("#CC79A7", "pink"),
    ("#D55E00", "vermillion"),
    ("#0072B2", "blue"),
)


def label_colour(value: int) -> tuple[str, str]:
    """(hex, name) of a foreground label's colour."""
    return LABEL_COLOURS[(int(value) - 1) % len(LABEL_COLOURS)]


def panel_arrays(
    data: np.ndarray, target: np.ndarray, index: int, channel: int = 0, slices: int = 1
) -> tuple[np.ndarray, np.ndarray, str]:
    """The 2D image and mask shown for sample ``index`` and a short description.

    3D patches show their middle slice (where a foreground-centred patch has its centre);
    2.5D stacks show the centre slice of input ``channel`` (input channel ``c`` occupies
    ``c * slices ... c * slices + slices - 1``), whose labels are the target.
    """
    img = data[index]
    mask = target[index, 0]
    if img.ndim == 4:  # (C, Z, Y, X)
        z = img.shape[1] // 2
        return img[channel, z], mask[z], f"z={z}/{img.shape[1]}"
    ch = channel * slices + slices // 2
    return img[ch], mask, f"slice {slices // 2 + 1}/{slices}" if slices > 1 else ""


def show_batch(
    batch: dict[str, Any],
    out_png: str | os.PathLike,
    *,
    n: int | None = None,
    channel: int = 0,
    slices: int = 1,
    cols: int = 4,
    title: str | None = None,
) -> Path:
    """Write a grid of the first ``n`` samples of ``batch`` (keys ``data``, ``target``,
    optionally ``keys``) with each foreground label outlined and lightly filled in its colour.

    Each panel is windowed to its own 1st-99th intensity percentile, because augmented
    patches differ in brightness and contrast by design. Returns the PNG path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    data = np.asarray(batch["data"])
    target = np.asarray(batch["target"])
    keys = list(batch.get("keys") or [])
    count = data.shape[0] if n is None else max(1, min(int(n), data.shape[0]))
    cols = max(1, min(cols, count))
    rows = (count + cols - 1) // cols
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows + (0.4 if title else 0)), dpi=100)
    FigureCanvasAgg(fig)
    labels_seen: set[int] = set()
    for i in range(count):
        ax = fig.add_subplot(rows, cols, i + 1)
        image, mask, where = panel_arrays(data, target, i, channel=channel, slices=slices)
        lo, hi = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        for value in np.unique(mask):
            if value == 0:
                continue
            labels_seen.add(int(value))
            colour = label_colour(int(value))[0]
            region = mask == value
            fill = np.ma.masked_where(~region, np.ones_like(image))
            ax.imshow(
                fill,
                cmap=ListedColormap([colour]),
                alpha=0.3,
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            if region.any() and not region.all():
                ax.contour(region.astype(float), levels=[0.5], colors=[colour], linewidths=1.0)
        name = str(keys[i]) if i < len(keys) else f"#{i}"
        fg = "fg" if mask.any() else "bg"
        ax.set_title(" ".join(t for t in (name, where, fg) if t), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        legend = ", ".join(f"{v} {label_colour(v)[1]}" for v in sorted(labels_seen))
        fig.suptitle(f"{title}" + (f"  (labels {legend})" if legend else ""), fontsize=9)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
