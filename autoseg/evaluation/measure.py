"""Nerve biomarkers from a segmentation: CSA, diameters, volume, length, signal per slice.

Method (documentation/measurements.md has the details and error sources):

1. Slices are taken along one array axis (default: the axis of the mask's longest extent in
   mm, the z axis for a sciatic nerve in an axial thigh stack). In each
   slice the label's 8-connected components are the nerve's cross-sections.
2. Components of consecutive slices are linked when they overlap in the slice plane (or, when
   none overlaps, to the nearest cross-section of the previous slice within reach, see
   :data:`MAX_LINK_TILT_DEG`). A one-to-one link continues a **branch**; a split or a merge
   starts new branches, so a sciatic nerve dividing into tibial and peroneal parts gives one
   branch above and two below the division.
3. The **centreline** of a branch is its cross-sections' centroids (mm), smoothed by a local
   straight-line fit over +-2 slices; the fit's slope is the local nerve direction ``d``.
4. **CSA** in the slice plane is pixel count x pixel area. A nerve crossing the slice at angle
   theta to the slice normal cuts an ellipse stretched by 1/cos(theta), so the
   **perpendicular CSA** is the slice CSA x cos(theta).
5. **Diameters** come from the ellipse with the same second moments as the cross-section
   (pixel-size corrected): a filled ellipse with semi-axes a >= b has moment eigenvalues a²/4
   and b²/4, so diameters are 4*sqrt(eigenvalue). The perpendicular diameters use the same
   moments projected along ``d`` onto the plane normal to the nerve.
6. **Volume** is voxel count x voxel volume; **length** is the centreline polyline through the
   branches (plus the link from a parent branch's last centroid and half a slice at free
   ends, so a straight nerve through N slices of thickness s measures N*s).

Physical coordinates are index x spacing; the image's direction cosines are a rotation and
change neither lengths nor areas.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError
from autoseg.evaluation.metrics import list_segmentations, map_cases, read_label_map
from autoseg.evaluation.summary import load_cohorts, write_csv
from autoseg.io import atomic_path, collapse_grey_rgb, read_image, write_json_atomic
from autoseg.io.atomic import json_safe
from autoseg.io.components import label_components
from autoseg.io.image import EXTENSIONS_WITHOUT_SPACING, split_extension

CENTRELINE_HALF_WINDOW = 2
"""Slices either side in the local line fit: 5 slices (15-20 mm at 3-4 mm slices) average out
the +-1 pixel centroid jitter of a segmentation while following a nerve's gentle bends."""

MAX_LINK_TILT_DEG = 60.0
"""Cross-sections in adjacent slices that do not overlap are still linked when their centres
are at most one equivalent diameter or ``slice spacing x tan(60°)`` plus one pixel (centroid
jitter) apart: a nerve tilted by 60° from the slice normal moves its centre 1.7 slice spacings
(7 mm at 4 mm slices) per slice, and beyond 60° slice-wise measurement is unreliable anyway."""

SLICE_COLUMNS = (
    "slice",
    "branch",
    "position_mm",
    "area_px",
    "csa_mm2",
    "csa_perpendicular_mm2",
    "min_diameter_mm",
    "max_diameter_mm",
    "min_diameter_perpendicular_mm",
    "max_diameter_perpendicular_mm",
    "tilt_deg",
    "centroid_z_mm",
    "centroid_y_mm",
    "centroid_x_mm",
    "mean_intensity",
)


@dataclass(frozen=True)
class SliceMeasurement:
    """One cross-section: one branch in one slice. Slice-plane and perpendicular values."""

    slice: int
    branch: int
    position_mm: float
    area_px: int
    csa_mm2: float
    csa_perpendicular_mm2: float
    min_diameter_mm: float
    max_diameter_mm: float
    min_diameter_perpendicular_mm: float
    max_diameter_perpendicular_mm: float
    tilt_deg: float
    centroid_z_mm: float
    centroid_y_mm: float
    centroid_x_mm: float
    mean_intensity: float


@dataclass
class NerveMeasurement:
    """Measurements of one label in one case. ``volume_mm3``/``length_mm`` are NaN in 2D."""

    slices: list[SliceMeasurement]
    volume_mm3: float
    length_mm: float
    n_branches: int
    ndim: int
    label: int
    spacing: tuple[float, ...]
    slice_axis: int = 0
    mean_intensity: float = math.nan
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.slices

    def summary(self) -> dict[str, Any]:
        """One row of the cohort table."""
        s = self.slices
        csa = np.array([m.csa_mm2 for m in s], dtype=float)
        perp = np.array([m.csa_perpendicular_mm2 for m in s], dtype=float)
        dmin = np.array([m.min_diameter_perpendicular_mm for m in s], dtype=float)
        dmax = np.array([m.max_diameter_perpendicular_mm for m in s], dtype=float)

        def stat(a: np.ndarray, fn) -> float:
            return float(fn(a)) if a.size else math.nan

        return {
            "n_slices": len({m.slice for m in s}),
            "n_branches": self.n_branches,
            "slice_axis": self.slice_axis,
            "volume_mm3": self.volume_mm3,
            "length_mm": self.length_mm,
            "csa_mean_mm2": stat(csa, np.mean),
            "csa_max_mm2": stat(csa, np.max),
            "csa_perpendicular_mean_mm2": stat(perp, np.mean),
            "csa_perpendicular_median_mm2": stat(perp, np.median),
            "csa_perpendicular_min_mm2": stat(perp, np.min),
            "csa_perpendicular_max_mm2": stat(perp, np.max),
            "min_diameter_perpendicular_mean_mm": stat(dmin, np.mean),
            "max_diameter_perpendicular_mean_mm": stat(dmax, np.mean),
            "max_tilt_deg": stat(np.array([m.tilt_deg for m in s]), np.max),
            "mean_intensity": self.mean_intensity,
            "empty": self.empty,
        }

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(m) for m in self.slices]


@dataclass
class _Section:
    """One 2D component: moments in mm, kept while branches are built."""

    slice: int
    index: int  # component label within its slice
    count: int
    centroid: np.ndarray  # (y, x) mm
    cov: np.ndarray  # 2x2, mm², pixel-size corrected
    intensity: float
    branch: int = -1
    parents: list[int] = field(default_factory=list)  # indices into the section list
    children: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Pure measurement


def measure_nerve(
    seg: np.ndarray,
    spacing: Sequence[float],
    *,
    label: int = 1,
    image: np.ndarray | None = None,
    axis: int | None = None,
) -> NerveMeasurement:
    """Measure label ``label`` of a 3D ``(z, y, x)`` or 2D ``(y, x)`` segmentation.

    ``spacing`` is in array order, in mm. ``axis`` (3D only) is the array axis the slices are
    taken along; None (default) picks the nerve's longest extent (:func:`slice_axis`), 0 is
    the acquisition's slice axis. ``image`` (same shape) adds the mean signal per
    cross-section. A 2D image is
    one slice: its CSA and diameters are those of the plane (no direction is known) and volume
    and length are NaN. An absent label gives an empty result, not an error.
    """
    seg = np.asarray(seg)
    if seg.ndim not in (2, 3):
        raise ValueError(f"segmentation must be 2D or 3D, not {seg.ndim}D")
    if len(spacing) != seg.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {seg.ndim}D segmentation")
    if image is not None and np.shape(image) != seg.shape:
        raise ValueError(f"image shape {np.shape(image)} != segmentation shape {seg.shape}")
    spacing = tuple(float(s) for s in spacing)
    mask = seg == label
    is_2d = seg.ndim == 2
    if is_2d:
        axis = 0
        mask3 = mask[None]
        img3 = None if image is None else np.asarray(image, dtype=np.float64)[None]
        sp3 = (1.0, *spacing)
    else:
        axis = slice_axis(mask, spacing) if axis is None else int(axis)
        if not -3 <= axis < 3:
            raise ValueError(f"axis {axis} is not 0, 1 or 2")
        axis %= 3
        mask3 = np.moveaxis(mask, axis, 0)
        img3 = None if image is None else np.moveaxis(np.asarray(image, np.float64), axis, 0)
        sp3 = (spacing[axis], *(s for i, s in enumerate(spacing) if i != axis))
    mean_intensity = (
        float(np.asarray(image, np.float64)[mask].mean())
        if (image is not None and mask.any())
        else math.nan
    )
    sections = _link_sections(_sections(mask3, img3, sp3), mask3, sp3)
    n_branches = _assign_branches(sections)
    slices, length = _measure_branches(sections, sp3, is_2d)
    volume = math.nan if is_2d else float(np.count_nonzero(mask)) * math.prod(spacing)
    notes = [] if slices else [f"label {label} is not present"]
    steep = [m.slice for m in slices if m.tilt_deg > MAX_LINK_TILT_DEG]
    if steep:
        notes.append(
            f"the nerve runs at more than {MAX_LINK_TILT_DEG:.0f} degrees to the slice normal in "
            f"{len(steep)} section(s): CSA there is unreliable; try another slice axis"
        )
    return NerveMeasurement(
        slices=slices,
        volume_mm3=volume,
        length_mm=math.nan if is_2d else length,
        n_branches=n_branches,
        ndim=seg.ndim,
        label=int(label),
        spacing=spacing,
        slice_axis=axis,
        mean_intensity=mean_intensity,
        notes=notes,
    )


def slice_axis(mask: np.ndarray, spacing: Sequence[float]) -> int:
    """The axis along which the mask's bounding box is longest in mm (0 if empty).

    A nerve is far longer than wide (sciatic: ~160 mm along z in a thigh stack, 6-10 mm
    across), so its longest extent is the slicing axis most nearly along it.
    """
    extents = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        hit = np.flatnonzero(np.any(mask, axis=other))
        extents.append(0.0 if hit.size == 0 else (hit[-1] - hit[0] + 1) * float(spacing[ax]))
    return int(np.argmax(extents)) if max(extents) > 0 else 0


def _sections(
    mask3: np.ndarray, img3: np.ndarray | None, sp3: tuple[float, float, float]
) -> tuple[list[_Section], list[np.ndarray | None]]:
    """Cross-sections of every slice, with their moments; plus each slice's label image."""
    _, sy, sx = sp3
    sections: list[_Section] = []
    labelled: list[np.ndarray | None] = [None] * mask3.shape[0]
    occupied = np.flatnonzero(mask3.reshape(mask3.shape[0], -1).any(axis=1))
    for k in occupied:
        lab, n = label_components(mask3[k], 8)
        labelled[k] = lab
        ys, xs = np.nonzero(lab)
        ids = lab[ys, xs]
        y = ys * sy
        x = xs * sx
        count = np.bincount(ids, minlength=n + 1)[1:].astype(np.float64)
        my = np.bincount(ids, y, n + 1)[1:] / count
        mx = np.bincount(ids, x, n + 1)[1:] / count
        dy = y - my[ids - 1]
        dx = x - mx[ids - 1]
        vyy = np.bincount(ids, dy * dy, n + 1)[1:] / count + sy * sy / 12.0
        vxx = np.bincount(ids, dx * dx, n + 1)[1:] / count + sx * sx / 12.0
        vxy = np.bincount(ids, dy * dx, n + 1)[1:] / count
        if img3 is not None:
            inten = np.bincount(ids, img3[k][ys, xs], n + 1)[1:] / count
        else:
            inten = np.full(n, math.nan)
        for i in range(n):
            cov = np.array([[vyy[i], vxy[i]], [vxy[i], vxx[i]]])
            centroid = np.array([my[i], mx[i]])
            sections.append(_Section(int(k), i + 1, int(count[i]), centroid, cov, float(inten[i])))
    return sections, labelled


def _link_sections(
    found: tuple[list[_Section], list[np.ndarray | None]],
    mask3: np.ndarray,
    sp3: tuple[float, float, float],
) -> list[_Section]:
    """Fill parents/children between cross-sections of adjacent slices."""
    sections, labelled = found
    by_slice: dict[int, dict[int, int]] = {}
    for idx, s in enumerate(sections):
        by_slice.setdefault(s.slice, {})[s.index] = idx
    area_px = sp3[1] * sp3[2]
    for k, current in by_slice.items():
        previous = by_slice.get(k - 1)
        if not previous:
            continue
        lab_prev, lab_cur = labelled[k - 1], labelled[k]
        both = (lab_prev > 0) & (lab_cur > 0)
        pairs = {(int(a), int(b)) for a, b in zip(lab_prev[both], lab_cur[both])}
        linked_cur = {b for _, b in pairs}
        for b_index, b in current.items():
            if b_index in linked_cur:
                continue
            # No overlap (oblique nerve, thick slices): nearest previous section, if close.
            sb = sections[b]
            best, best_d = None, math.inf
            for a_index, a in previous.items():
                sa = sections[a]
                d = float(np.linalg.norm(sa.centroid - sb.centroid))
                reach = max(
                    2.0 * math.sqrt(max(sa.count, sb.count) * area_px / math.pi),
                    sp3[0] * math.tan(math.radians(MAX_LINK_TILT_DEG)) + max(sp3[1], sp3[2]),
                )
                if d <= reach and d < best_d:
                    best, best_d = a_index, d
            if best is not None:
                pairs.add((best, b_index))
        for a_index, b_index in sorted(pairs):
            a, b = previous[a_index], current[b_index]
            sections[a].children.append(b)
            sections[b].parents.append(a)
    return sections


def _assign_branches(sections: list[_Section]) -> int:
    """A section continues its parent's branch only on a one-to-one link; else a new branch."""
    n = 0
    for s in sorted(sections, key=lambda s: (s.slice, s.centroid[1], s.centroid[0])):
        if len(s.parents) == 1 and len(sections[s.parents[0]].children) == 1:
            s.branch = sections[s.parents[0]].branch
        else:
            s.branch = n
            n += 1
    return n


def _measure_branches(
    sections: list[_Section], sp3: tuple[float, float, float], is_2d: bool
) -> tuple[list[SliceMeasurement], float]:
    sz, sy, sx = sp3
    branches: dict[int, list[int]] = {}
    for idx, s in enumerate(sections):
        branches.setdefault(s.branch, []).append(idx)
    out: list[SliceMeasurement] = []
    smoothed: dict[int, np.ndarray] = {}  # section index -> smoothed (z, y, x) mm
    cos_of: dict[int, float] = {}
    length = 0.0
    for branch in sorted(branches):
        members = sorted(branches[branch], key=lambda i: sections[i].slice)
        z = np.array([sections[i].slice * sz for i in members], dtype=np.float64)
        c = np.array([sections[i].centroid for i in members], dtype=np.float64)
        points, slopes = _local_line_fit(z, c, CENTRELINE_HALF_WINDOW)
        if is_2d:
            slopes[:] = 0.0
        for j, i in enumerate(members):
            s = sections[i]
            d = np.array([1.0, slopes[j, 0], slopes[j, 1]])
            d /= np.linalg.norm(d)
            cos_t = float(d[0])
            smoothed[i] = points[j]
            cos_of[i] = cos_t
            csa = s.count * sy * sx
            dmin, dmax = _ellipse_diameters(s.cov)
            pmin, pmax = _perpendicular_diameters(s.cov, d)
            out.append(
                SliceMeasurement(
                    slice=s.slice,
                    branch=branch,
                    position_mm=float(s.slice * sz) if not is_2d else 0.0,
                    area_px=s.count,
                    csa_mm2=csa,
                    csa_perpendicular_mm2=csa * cos_t,
                    min_diameter_mm=dmin,
                    max_diameter_mm=dmax,
                    min_diameter_perpendicular_mm=pmin,
                    max_diameter_perpendicular_mm=pmax,
                    tilt_deg=math.degrees(math.acos(min(1.0, cos_t))),
                    centroid_z_mm=float(s.slice * sz) if not is_2d else 0.0,
                    centroid_y_mm=float(s.centroid[0]),
                    centroid_x_mm=float(s.centroid[1]),
                    mean_intensity=s.intensity,
                )
            )
        if not is_2d:
            length += float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
    if not is_2d:
        for members in branches.values():
            members = sorted(members, key=lambda i: sections[i].slice)
            first, last = sections[members[0]], sections[members[-1]]
            if first.parents:
                length += min(
                    float(np.linalg.norm(smoothed[members[0]] - smoothed[p])) for p in first.parents
                )
            else:
                length += 0.5 * sz / cos_of[members[0]]
            if not last.children:
                length += 0.5 * sz / cos_of[members[-1]]
    out.sort(key=lambda m: (m.slice, m.branch))
    return out, length


def _local_line_fit(
    z: np.ndarray, c: np.ndarray, half_window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed centreline points (z, y, x) and slopes (dy/dz, dx/dz) per section."""
    n = len(z)
    points = np.empty((n, 3))
    slopes = np.zeros((n, 2))
    for j in range(n):
        lo, hi = max(0, j - half_window), min(n, j + half_window + 1)
        zz, cc = z[lo:hi], c[lo:hi]
        if hi - lo >= 2:
            zc = zz - zz.mean()
            slope = (zc[:, None] * (cc - cc.mean(axis=0))).sum(axis=0) / (zc * zc).sum()
            slopes[j] = slope
            points[j] = (z[j], *(cc.mean(axis=0) + slope * (z[j] - zz.mean())))
        else:
            points[j] = (z[j], *c[j])
    return points, slopes


def _ellipse_diameters(cov: np.ndarray) -> tuple[float, float]:
    """(min, max) diameter of the ellipse with the same second moments as the section."""
    ev = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    return 4.0 * math.sqrt(ev[0]), 4.0 * math.sqrt(ev[1])


def _perpendicular_diameters(cov2: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """Diameters of the section projected along the nerve direction ``d`` (z, y, x)."""
    cov3 = np.zeros((3, 3))
    cov3[1:, 1:] = cov2
    proj = np.eye(3) - np.outer(d, d)
    ev = np.clip(np.linalg.eigvalsh(proj @ cov3 @ proj.T), 0.0, None)
    return 4.0 * math.sqrt(ev[1]), 4.0 * math.sqrt(ev[2])


# --------------------------------------------------------------------------------------------
# Plot


def plot_csa(measurement: NerveMeasurement, path: str | os.PathLike, title: str = "") -> Path:
    """PNG of CSA along the nerve, one line per branch (solid: perpendicular; dashed: slice)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if measurement.empty:
        ax.text(0.5, 0.5, f"label {measurement.label} not present", ha="center", va="center")
        ax.set_axis_off()
    else:
        by_branch: dict[int, list[SliceMeasurement]] = {}
        for m in measurement.slices:
            by_branch.setdefault(m.branch, []).append(m)
        for branch, ms in sorted(by_branch.items()):
            x = [m.position_mm for m in ms]
            (line,) = ax.plot(
                x, [m.csa_perpendicular_mm2 for m in ms], "o-", ms=3, label=f"branch {branch}"
            )
            ax.plot(x, [m.csa_mm2 for m in ms], "--", color=line.get_color(), lw=0.8)
        ax.set_xlabel("slice position (mm)")
        ax.set_ylabel("CSA (mm²)")
        ax.grid(alpha=0.3)
        if len(by_branch) > 1:
            ax.legend(fontsize=8)
        ax.set_ylim(bottom=0)
    ax.set_title(title or f"label {measurement.label}: CSA (solid: perpendicular, dashed: slice)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


# --------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class _MeasureJob:
    case: str
    seg: Path
    image: Path | None
    label: int
    axis: int | None
    spacing: tuple[float, ...] | None
    out_dir: Path | None


def _measure_case(job: _MeasureJob) -> tuple[str, NerveMeasurement, bool]:
    seg, geom = read_label_map(job.seg)
    has_spacing = read_image_spacing_known(job.seg)
    spacing = job.spacing if job.spacing is not None else geom.spacing_zyx
    if len(spacing) != seg.ndim:
        raise AutosegError(
            f"spacing {spacing} has {len(spacing)} values for a {seg.ndim}D segmentation",
            path=job.seg,
            fix=f"give {seg.ndim} values in array order ((z,)y,x)",
        )
    image = None
    if job.image is not None:
        data = read_image(job.image)
        image = collapse_grey_rgb(data.array, job.image)
        if image.shape != seg.shape:
            raise AutosegError(
                f"image shape {image.shape} != segmentation shape {seg.shape}",
                path=job.image,
                fix="give the image the segmentation was made on",
            )
    if seg.ndim == 3 and job.axis is not None and not -3 <= job.axis < 3:
        raise AutosegError(f"axis {job.axis} is not 0, 1 or 2", fix="use --axis 0, 1 or 2")
    m = measure_nerve(seg, spacing, label=job.label, image=image, axis=job.axis)
    if not has_spacing and job.spacing is None:
        m.notes.append("the file stores no pixel spacing: lengths are in pixels, not mm")
    if job.out_dir is not None:
        write_csv(job.out_dir / f"{job.case}_slices.csv", m.rows(), SLICE_COLUMNS)
        plot_csa(m, job.out_dir / f"{job.case}_csa.png", title=f"{job.case}, label {job.label}")
    return job.case, m, bool(has_spacing or job.spacing is not None)


def read_image_spacing_known(path: Path) -> bool:
    """False for PNG/JPG/BMP/TIFF, whose spacing autoseg reads as 1 (no physical size)."""
    return split_extension(path.name)[1].lower() not in EXTENSIONS_WITHOUT_SPACING


def _match_images(
    segs: Mapping[str, Path], image: str | os.PathLike | None
) -> dict[str, Path | None]:
    """Image per case: same name, or nnU-Net's channel-0 name ``<case>_0000``."""
    if image is None:
        return dict.fromkeys(segs)
    image = Path(image)
    if image.is_file():
        if len(segs) != 1:
            raise AutosegError(
                "one image file given for several segmentations",
                path=image,
                fix="give a folder of images named like the segmentations",
            )
        return {next(iter(segs)): image}
    images = list_segmentations(image)
    out: dict[str, Path | None] = {}
    for case in segs:
        found = images.get(case) or images.get(f"{case}_0000")
        if found is None:
            raise AutosegError(
                f"no image for case {case!r}",
                path=image,
                fix=f"name it {case}<ext> or {case}_0000<ext>",
            )
        out[case] = found
    return out


def measure_files(
    seg: str | os.PathLike,
    image: str | os.PathLike | None = None,
    *,
    label: int = 1,
    out_dir: str | os.PathLike | None = None,
    axis: int | None = None,
    spacing: Sequence[float] | None = None,
    cohorts: str | os.PathLike | Mapping[str, str] | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[tuple[str, NerveMeasurement]]:
    """Measure every segmentation in ``seg`` (file or folder); write the tables and plots.

    Per case ``<case>_slices.csv`` and ``<case>_csa.png``; for all cases
    ``measurements.csv`` (one row per case) and ``measurements.json``.
    """
    segs = list_segmentations(seg)
    images = _match_images(segs, image)
    cohort_map = load_cohorts(cohorts)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    jobs = [
        _MeasureJob(
            c,
            segs[c],
            images[c],
            int(label),
            None if axis is None else int(axis),
            None if spacing is None else tuple(float(s) for s in spacing),
            out,
        )
        for c in sorted(segs)
    ]
    results = map_cases(
        _measure_case, jobs, num_workers=num_workers, progress=progress, desc="measure"
    )
    if out is not None:
        table = [
            {
                "case": case,
                "cohort": cohort_map.get(case, ""),
                "label": m.label,
                **m.summary(),
                "spacing_known": known,
                "notes": "; ".join(m.notes),
            }
            for case, m, known in results
        ]
        write_csv(out / "measurements.csv", table)
        payload = {
            "segmentation": str(seg),
            "image": None if image is None else str(image),
            "label": int(label),
            "slice_axis": "auto (longest extent)" if axis is None else int(axis),
            "method": "see documentation/measurements.md",
            "cases": table,
        }
        write_json_atomic(out / "measurements.json", json_safe(payload))
    return [(case, m) for case, m, _ in results]
