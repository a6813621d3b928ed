"""Field-of-view and intensity robustness of a trained model (``autoseg robustness``).

Desai et al. found that a model trained on one acquisition protocol can lose much of its Dice
on scans with a smaller field of view or a different contrast. This module predicts the same
labelled cases again under controlled changes and reports how Dice moves:

- ``crop``: keep the central 90 / 75 / 60 % of the in-plane extent (in 3D also of the slices);
- ``shift``: the 60 % window moved off-centre by 10 / 20 % of the in-plane extent;
- ``scale``: intensities multiplied by 0.7 / 1.3 (a different gain or coil sensitivity);
- ``gamma``: intensities remapped with gamma 0.7 / 1.5 (a different contrast curve);
- ``noise``: additive Gaussian noise of 2 / 5 / 10 % of the intensity range.

Every perturbation is a small frozen dataclass called as ``p(image, label, geometry)`` that
returns a :class:`Perturbed` (image, label and geometry) and never changes its inputs. A crop
cuts image and label with the same window and moves the origin to the first kept voxel, so
every kept voxel keeps its physical position; the prediction is made on the cropped grid and
compared with the cropped label. Intensity changes leave the label and the geometry alone.
Every perturbation starts from the original image, never from another perturbation's output.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autoseg.errors import AutosegError, failure_context
from autoseg.evaluation.metrics import FAILURE_DICE, dice
from autoseg.io import Geometry, atomic_path, write_json_atomic
from autoseg.io.image import is_image_file, split_extension

ROBUSTNESS_FILE = "robustness.json"
ROBUSTNESS_PLOT = "robustness.png"
ROBUSTNESS_TABLE = "robustness.txt"

SHIFT_WINDOW_KEEP = 0.6
"""Window the ``shift`` perturbation moves: the 60 % crop. With a 20 % shift its far edge
reaches the image border exactly ((1 - 0.6) / 2 = 0.2), so no shift needs padding: every
input the model sees is real image content, as a scan with a displaced field of view is."""

NOISE_RANGE_PERCENTILES = (0.5, 99.5)
"""The intensity range noise is scaled to: robust to a few hot voxels (ultrasound speckle
peaks, MRI flow artefacts), which would inflate a min-max range several times."""


# --------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class Perturbed:
    """A perturbed case: image (C, *spatial), label (*spatial) and the grid they lie on."""

    image: np.ndarray
    label: np.ndarray
    geometry: Geometry


def slice_axis(spacing_zyx: Sequence[float], shape_zyx: Sequence[int] | None = None) -> int | None:
    """The through-plane array axis of a 3D image: an axis one voxel thick (a single frame
    stored as a volume), else the coarsest spacing (first on ties, so z for an isotropic
    volume); None in 2D, where every axis is in-plane."""
    if len(spacing_zyx) < 3:
        return None
    if shape_zyx is not None and 1 in [int(n) for n in shape_zyx]:
        return [int(n) for n in shape_zyx].index(1)
    return int(np.argmax(np.asarray(spacing_zyx, dtype=float)))


def in_plane_axes(
    spacing_zyx: Sequence[float], shape_zyx: Sequence[int] | None = None
) -> tuple[int, ...]:
    through = slice_axis(spacing_zyx, shape_zyx)
    return tuple(a for a in range(len(spacing_zyx)) if a != through)


def crop_window(
    shape_zyx: Sequence[int],
    spacing_zyx: Sequence[float],
    keep: float,
    shift: float = 0.0,
) -> tuple[slice, ...]:
    """The window keeping ``keep`` of every axis's extent (at least one voxel), centred, then
    moved by ``shift`` of the extent towards the end of each in-plane axis and clipped to lie
    inside the image. The slice axis of a 3D image is cropped (centred) but never shifted."""
    if not 0.0 < keep <= 1.0:
        raise AutosegError(f"crop keeps {keep} of the extent; it must be in (0, 1]")
    moved = set(in_plane_axes(spacing_zyx, shape_zyx))
    window = []
    for axis, n in enumerate(shape_zyx):
        n = int(n)
        size = max(1, min(n, int(round(keep * n))))
        start = (n - size) // 2
        if axis in moved:
            start += int(round(shift * n))
        start = min(max(start, 0), n - size)
        window.append(slice(start, start + size))
    return tuple(window)


def crop_geometry(geometry: Geometry, window: Sequence[slice]) -> Geometry:
    """The grid of ``array[window]``: same spacing and direction, the origin at the physical
    position of the first kept voxel, so every kept voxel stays where it was."""
    nd = geometry.ndim
    start_xyz = np.array([s.start for s in reversed(window)], dtype=float)
    size_xyz = tuple(int(s.stop - s.start) for s in reversed(window))
    direction = np.asarray(geometry.direction, dtype=float).reshape(nd, nd)
    origin = np.asarray(geometry.origin, dtype=float) + direction @ (
        start_xyz * np.asarray(geometry.spacing, dtype=float)
    )
    return Geometry(geometry.spacing, tuple(float(o) for o in origin), geometry.direction, size_xyz)


def index_to_physical(geometry: Geometry, index_zyx: Sequence[float]) -> np.ndarray:
    """Physical position (mm, ITK's x, y, z order) of a voxel index given in array order."""
    nd = geometry.ndim
    direction = np.asarray(geometry.direction, dtype=float).reshape(nd, nd)
    index_xyz = np.asarray(list(reversed(index_zyx)), dtype=float)
    return np.asarray(geometry.origin) + direction @ (index_xyz * np.asarray(geometry.spacing))


def _crop(image: np.ndarray, label: np.ndarray, geometry: Geometry, window) -> Perturbed:
    return Perturbed(
        np.ascontiguousarray(image[(slice(None), *window)]),
        np.ascontiguousarray(label[window]),
        crop_geometry(geometry, window),
    )


# --------------------------------------------------------------------------------------------
# Perturbations


@dataclass(frozen=True)
class Perturbation:
    """No change: the unperturbed prediction every other row is compared with."""

    kind: ClassVar[str] = "none"
    identity_strength: ClassVar[float] = 0.0  # the strength at which a kind changes nothing

    @property
    def strength(self) -> float:
        return 0.0

    @property
    def key(self) -> str:
        return f"{self.kind}@{self.strength:g}"

    def describe(self) -> str:
        return "unperturbed"

    def __call__(self, image: np.ndarray, label: np.ndarray, geometry: Geometry) -> Perturbed:
        return Perturbed(image, label, geometry)


@dataclass(frozen=True)
class FovCrop(Perturbation):
    """Keep the central ``keep`` fraction of the in-plane extent (3D: and of the slices)."""

    keep: float = 1.0
    kind: ClassVar[str] = "crop"
    identity_strength: ClassVar[float] = 1.0

    @property
    def strength(self) -> float:
        return self.keep

    def describe(self) -> str:
        return f"central {self.keep:.0%} of the field of view"

    def __call__(self, image, label, geometry):
        return _crop(
            image, label, geometry, crop_window(label.shape, geometry.spacing_zyx, self.keep)
        )


@dataclass(frozen=True)
class Shift(Perturbation):
    """The ``keep`` window (default the 60 % crop) moved off-centre by ``fraction`` of the
    in-plane extent along every in-plane axis (towards higher indices)."""

    fraction: float = 0.0
    keep: float = SHIFT_WINDOW_KEEP
    kind: ClassVar[str] = "shift"

    @property
    def strength(self) -> float:
        return self.fraction

    def describe(self) -> str:
        return f"{self.keep:.0%} window moved {self.fraction:.0%} off-centre"

    def __call__(self, image, label, geometry):
        window = crop_window(label.shape, geometry.spacing_zyx, self.keep, self.fraction)
        return _crop(image, label, geometry, window)


@dataclass(frozen=True)
class IntensityScale(Perturbation):
    """Every intensity multiplied by ``factor`` (no clipping)."""

    factor: float = 1.0
    kind: ClassVar[str] = "scale"
    identity_strength: ClassVar[float] = 1.0

    @property
    def strength(self) -> float:
        return self.factor

    def describe(self) -> str:
        return f"intensities x{self.factor:g}"

    def __call__(self, image, label, geometry):
        return Perturbed((image * np.float32(self.factor)).astype(np.float32), label, geometry)


@dataclass(frozen=True)
class Gamma(Perturbation):
    """Per channel: min-max range mapped to [0, 1], raised to ``gamma``, mapped back (the
    range is kept; < 1 brightens mid-tones, > 1 darkens them)."""

    gamma: float = 1.0
    kind: ClassVar[str] = "gamma"
    identity_strength: ClassVar[float] = 1.0

    @property
    def strength(self) -> float:
        return self.gamma

    def describe(self) -> str:
        return f"gamma {self.gamma:g}"

    def __call__(self, image, label, geometry):
        out = np.empty_like(image, dtype=np.float32)
        for c in range(image.shape[0]):
            ch = image[c].astype(np.float64)
            lo, hi = float(ch.min()), float(ch.max())
            if hi <= lo:
                out[c] = ch
                continue
            out[c] = lo + (hi - lo) * ((ch - lo) / (hi - lo)) ** self.gamma
        return Perturbed(out, label, geometry)


@dataclass(frozen=True)
class GaussianNoise(Perturbation):
    """Additive Gaussian noise with sd ``fraction`` of each channel's 0.5-99.5 percentile
    range; ``seed`` makes it the same noise every run."""

    fraction: float = 0.0
    seed: int = 0
    kind: ClassVar[str] = "noise"

    @property
    def strength(self) -> float:
        return self.fraction

    def describe(self) -> str:
        return f"Gaussian noise, sd {self.fraction:.0%} of the range"

    def __call__(self, image, label, geometry):
        rng = np.random.default_rng(self.seed)
        out = np.empty_like(image, dtype=np.float32)
        for c in range(image.shape[0]):
            lo, hi = np.percentile(image[c], NOISE_RANGE_PERCENTILES)
            sd = self.fraction * float(hi - lo)
            out[c] = image[c] + rng.normal(0.0, sd, image[c].shape).astype(np.float32)
        return Perturbed(out, label, geometry)


DEFAULT_PERTURBATIONS: dict[str, tuple[Perturbation, ...]] = {
    "crop": (FovCrop(0.9), FovCrop(0.75), FovCrop(0.6)),
    "shift": (Shift(0.1), Shift(0.2)),
    "scale": (IntensityScale(0.7), IntensityScale(1.3)),
    "gamma": (Gamma(0.7), Gamma(1.5)),
    "noise": (GaussianNoise(0.02), GaussianNoise(0.05), GaussianNoise(0.1)),
}
"""The default strengths (documentation/evaluation.md says why each)."""


def select_perturbations(names: str | Sequence[str] | None = None) -> list[Perturbation]:
    """The unperturbed baseline, then the named kinds' default strengths (all when None)."""
    if names is None:
        chosen = list(DEFAULT_PERTURBATIONS)
    else:
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        chosen = list(dict.fromkeys(names))
        unknown = [n for n in chosen if n not in DEFAULT_PERTURBATIONS]
        if unknown or not chosen:
            raise AutosegError(
                f"unknown perturbation {unknown[0]!r}" if unknown else "no perturbation named",
                fix=f"choose from {','.join(DEFAULT_PERTURBATIONS)}",
            )
    return [Perturbation(), *(p for n in chosen for p in DEFAULT_PERTURBATIONS[n])]


# --------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class LabelledCase:
    case_id: str
    images: tuple[Path, ...]
    label: Path


LAYOUTS = (("imagesTs", "labelsTs"), ("imagesTr", "labelsTr"))
"""Accepted folder pairs under ``--cases DIR``, in order of preference: a labelled test set
first (the honest measurement), then a dataset's own training folder."""


def cases_layout(folder: str | os.PathLike) -> tuple[Path, Path]:
    """(images folder, labels folder) of ``folder``: ``DIR/imagesTs`` + ``DIR/labelsTs``,
    else ``DIR/imagesTr`` + ``DIR/labelsTr``, or ``DIR`` itself when it is one of those
    images folders and its labels sibling exists."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AutosegError(
            "cases folder not found", path=folder, fix="give a folder with imagesTs and labelsTs"
        )
    for images, labels in LAYOUTS:
        if (folder / images).is_dir() and (folder / labels).is_dir():
            return folder / images, folder / labels
        if folder.name == images and (folder.parent / labels).is_dir():
            return folder, folder.parent / labels
    raise AutosegError(
        "no imagesTs + labelsTs or imagesTr + labelsTr folders here",
        path=folder,
        fix="give a folder holding imagesTs/<case>_0000.ext and labelsTs/<case>.ext, or a "
        "dataset folder (imagesTr + labelsTr)",
    )


def find_labelled_cases(folder: str | os.PathLike, n_channels: int) -> list[LabelledCase]:
    """Every case with a label file, its channel files ``<case>_0000.ext`` ... in order."""
    images_dir, labels_dir = cases_layout(folder)
    by_stem = {
        split_extension(p.name)[0]: p
        for p in images_dir.iterdir()
        if not p.name.startswith(".") and is_image_file(p)
    }
    cases = []
    for lab in sorted(labels_dir.iterdir()):
        if lab.name.startswith(".") or not is_image_file(lab):
            continue
        case_id = split_extension(lab.name)[0]
        channels = [by_stem.get(f"{case_id}_{c:04d}") for c in range(n_channels)]
        if any(ch is None for ch in channels):
            missing = next(c for c, ch in enumerate(channels) if ch is None)
            raise AutosegError(
                f"case {case_id!r} has a label but no image {case_id}_{missing:04d}.*",
                path=images_dir,
                fix=f"name its channel files {case_id}_0000.ext ... (the model needs {n_channels})",
            )
        cases.append(LabelledCase(case_id, tuple(channels), lab))  # type: ignore[arg-type]
    if not cases:
        raise AutosegError(
            "no label files", path=labels_dir, fix="put one <case>.ext label map per image"
        )
    return cases


# --------------------------------------------------------------------------------------------
# Measuring


def case_dice(
    predictor: Any,
    image: np.ndarray,
    label: np.ndarray,
    geometry: Geometry,
    perturbations: Sequence[Perturbation],
    labels: Sequence[int],
) -> dict[str, dict[str, Any]]:
    """``{key: {"dice": {label: d}, "ref_voxels": {label: n}}}`` for one case: every
    perturbation applied to the original image, predicted on its own grid."""
    out = {}
    for p in perturbations:
        moved = p(image, label, geometry)
        seg, _, _ = predictor.predict(moved.image, moved.geometry)
        if seg.shape != moved.label.shape:  # the predictor keeps the input's grid
            raise ValueError(f"{p.key}: prediction {seg.shape} != label {moved.label.shape}")
        out[p.key] = {
            "dice": {str(lab): dice(seg, moved.label, lab) for lab in labels},
            "ref_voxels": {str(lab): int(np.count_nonzero(moved.label == lab)) for lab in labels},
        }
    return out


def summarize_robustness(
    per_case: Mapping[str, Mapping[str, Mapping[str, Any]]],
    perturbations: Sequence[Perturbation],
    labels: Mapping[int, str],
) -> list[dict[str, Any]]:
    """One row per perturbation and label: mean and sd Dice, mean change vs the unperturbed
    prediction of the same case, cases below :data:`FAILURE_DICE` and cases that fell below
    it (at or above unperturbed)."""
    base_key = Perturbation().key
    rows = []
    for p in perturbations:
        for lab, name in labels.items():
            d = np.array([c[p.key]["dice"][str(lab)] for c in per_case.values()], dtype=float)
            b = np.array([c[base_key]["dice"][str(lab)] for c in per_case.values()], dtype=float)
            rows.append(
                {
                    "perturbation": p.kind,
                    "strength": p.strength,
                    "key": p.key,
                    "description": p.describe(),
                    "label": int(lab),
                    "label_name": name,
                    "n": int(d.size),
                    "mean_dice": float(d.mean()) if d.size else math.nan,
                    "sd_dice": float(d.std(ddof=1)) if d.size > 1 else 0.0,
                    "delta_dice": float((d - b).mean()) if d.size else math.nan,
                    "n_below": int(np.count_nonzero(d < FAILURE_DICE)),
                    "n_dropped_below": int(
                        np.count_nonzero((d < FAILURE_DICE) & (b >= FAILURE_DICE))
                    ),
                }
            )
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The summary as fixed-width text (terminal and ``robustness.txt``)."""
    head = ("perturbation", "strength", "label", "mean Dice", "Δ vs none", "< 0.5 (new)")
    body = []
    for r in rows:
        body.append(
            (
                r["perturbation"],
                f"{r['strength']:g}",
                str(r["label_name"]),
                f"{r['mean_dice']:.3f} ± {r['sd_dice']:.3f}",
                "" if r["perturbation"] == "none" else f"{r['delta_dice']:+.3f}",
                f"{r['n_below']}/{r['n']}"
                + ("" if r["perturbation"] == "none" else f" ({r['n_dropped_below']})"),
            )
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def plot_robustness(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """PNG: mean Dice per severity step, one line per perturbation and one panel per label.

    Step 0 is the unperturbed prediction; steps 1, 2, ... are the kind's strengths in the
    order they were run, which the legend lists (crop: keep 0.9, 0.75, 0.6)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys((r["label"], r["label_name"]) for r in rows))
    fig = Figure(figsize=(4.6 * max(1, len(labels)), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for i, (lab, name) in enumerate(labels):
        ax = fig.add_subplot(1, max(1, len(labels)), i + 1)
        mine = [r for r in rows if r["label"] == lab]
        base = next((r["mean_dice"] for r in mine if r["perturbation"] == "none"), math.nan)
        kinds = list(dict.fromkeys(r["perturbation"] for r in mine if r["perturbation"] != "none"))
        steps = 1
        for kind in kinds:
            points = [r for r in mine if r["perturbation"] == kind]
            steps = max(steps, len(points))
            strengths = ", ".join(f"{r['strength']:g}" for r in points)
            ax.plot(
                range(len(points) + 1),
                [base, *(r["mean_dice"] for r in points)],
                marker="o",
                lw=1.4,
                label=f"{kind}: {strengths}",
            )
        ax.axhline(FAILURE_DICE, color="#b42318", lw=0.8, ls="--")
        ax.set_xticks(range(steps + 1))
        ax.set_xticklabels(["none", *(str(s) for s in range(1, steps + 1))], fontsize=8)
        ax.set_xlabel("strength step (legend: the strengths in order)", fontsize=8)
        ax.set_ylabel(f"{name} mean Dice", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@dataclass
class RobustnessResult:
    summary: list[dict[str, Any]]
    cases: dict[str, dict[str, dict[str, Any]]]
    data: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def mean_dice(self, key: str, label: int = 1) -> float:
        return next(r["mean_dice"] for r in self.summary if r["key"] == key and r["label"] == label)


def measure_robustness(
    predictor: Any,
    cases: Sequence[LabelledCase],
    perturbations: Sequence[Perturbation],
    labels: Mapping[int, str],
    *,
    progress: bool = True,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per case, every perturbation's Dice per label (see :func:`case_dice`)."""
    from autoseg.preprocessing.preprocess import read_case
    from autoseg.progress import progress_bar

    per_case = {}
    for case in progress_bar(cases, desc="robustness", unit="case", disable=not progress):
        with failure_context("robustness", case.case_id):
            image, geometry, label = read_case(case.images, case.label)
            assert label is not None
            per_case[case.case_id] = case_dice(
                predictor, image, label, geometry, perturbations, list(labels)
            )
    return per_case


def write_outputs(data: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """robustness.json, robustness.txt and robustness.png under ``out_dir`` (atomic)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out_dir / ROBUSTNESS_FILE,
        "table": out_dir / ROBUSTNESS_TABLE,
        "plot": out_dir / ROBUSTNESS_PLOT,
    }
    write_json_atomic(files["json"], data)
    with atomic_path(files["table"]) as tmp:
        tmp.write_text(format_table(data["summary"]) + "\n", encoding="utf-8")
    png = plot_robustness(data["summary"])
    with atomic_path(files["plot"]) as tmp:
        tmp.write_bytes(png)
    return files


def run_robustness(
    dataset: str | int | os.PathLike,
    cases_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    perturbations: str | Sequence[str] | None = None,
    max_cases: int | None = None,
    configs: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    checkpoint: str = "final",
    device: str = "auto",
    tta: bool = True,
    postprocess: bool = True,
    amp: bool = True,
    progress: bool = True,
    predictor: Any = None,
) -> RobustnessResult:
    """What ``autoseg robustness`` runs: load the model (or use ``predictor``), predict every
    case of ``cases_dir`` unperturbed and perturbed, write robustness.json/.txt/.png to
    ``out_dir`` (default ``<root>/results/<dataset>``)."""
    from autoseg.paths import resolve_dataset, results_dir

    chosen = select_perturbations(perturbations)  # mistakes fail before the model loads
    if max_cases is not None and max_cases < 1:
        raise AutosegError(f"--max-cases {max_cases} must be 1 or more")
    name = resolve_dataset(dataset, root).name
    images_dir, labels_dir = cases_layout(cases_dir)  # before the model loads, too
    if predictor is None:
        from autoseg.inference.predict import load_predictor

        predictor = load_predictor(
            dataset,
            root,
            configs=configs,
            folds=folds,
            checkpoint=checkpoint,
            device=device,
            tta=tta,
            postprocess=postprocess,
            amp=amp,
        )
    plan = predictor.plan
    labels = {int(v): k for k, v in sorted(plan.labels.items(), key=lambda kv: kv[1]) if v}
    cases = find_labelled_cases(cases_dir, plan.n_channels)
    n_found = len(cases)
    if max_cases is not None:
        cases = cases[:max_cases]
    per_case = measure_robustness(predictor, cases, chosen, labels, progress=progress)
    summary = summarize_robustness(per_case, chosen, labels)
    data = {
        "dataset": name,
        "cases_dir": str(Path(cases_dir).resolve()),
        "layout": f"{images_dir.name} + {labels_dir.name}",
        "n_cases": len(cases),
        "n_cases_found": n_found,
        "model": {
            "configurations": list(predictor.models),
            "folds": {c: [m.fold for m in ms] for c, ms in predictor.models.items()},
            "tta": bool(predictor.tta),
            "postprocessing": bool(predictor.postprocessing),
        },
        "labels": {str(k): v for k, v in labels.items()},
        "failure_dice": FAILURE_DICE,
        "perturbations": [
            {"key": p.key, "kind": p.kind, "strength": p.strength, "description": p.describe()}
            for p in chosen
        ],
        "summary": summary,
        "cases": per_case,
    }
    out = Path(out_dir) if out_dir is not None else results_dir(root) / name
    files = write_outputs(data, out)
    return RobustnessResult(summary, per_case, data, files)
