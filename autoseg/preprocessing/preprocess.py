"""Preprocessing: crop, normalize, resample one case; write it; drive a whole dataset.

The core (:func:`preprocess_case`) is pure: arrays and explicit parameters in, arrays and a
properties dict out, so inference can run it on a new image with the same parameters. The
driver (:func:`preprocess_dataset`) reads ``plans.json``, groups the configurations by data
identifier, and writes the format of ``documentation/preprocessing.md`` case by case in
worker processes, atomically and resumably.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from autoseg import __version__
from autoseg.errors import AutosegError
from autoseg.io import Case, Geometry, atomic_path, collapse_grey_rgb, read_image
from autoseg.io.atomic import write_json_atomic
from autoseg.io.parallel import default_workers, map_cases
from autoseg.preprocessing.cropping import crop_to_nonzero, nonzero_mask
from autoseg.preprocessing.normalization import ChannelNormalization, normalize_image
from autoseg.preprocessing.resampling import (
    ANISOTROPY_RATIO,
    compute_new_shape,
    present_labels,
    resample_image,
    resample_labels,
    thick_axis,
)

# nnU-Net keeps up to 10,000 locations per class: enough that oversampling of a nerve
# (~0.1-0.2 % of a 256x256x40 volume = 2,600-5,200 voxels) sees every voxel, and bounded
# (80 KB of int32 per label) for large structures.
MAX_LOCATIONS_PER_LABEL = 10_000
# Placeholder z spacing of 2D data when the plan gives none: the single slice is never
# resampled along z, so the value only has to be positive.
SPACING_2D_Z = 1.0
MANIFEST = "manifest.json"
PROPERTIES_VERSION = 1


@dataclass(frozen=True)
class PreprocessingParams:
    """Everything that decides the arrays of one data identifier (from the plan).

    ``spacing`` is the target spacing in array order; 2D data may give two values (y, x).
    ``image_order``/``image_order_thick``: spline order of the image in general / along the
    thick axis of anisotropic data; ``label_order``/``label_order_thick`` the same for the
    one-hot label maps (1 = linear then argmax, 0 = nearest neighbour). ``thick_axis`` (data
    rank, array order) forces the axis resampled with the ``*_thick`` orders; None lets each
    case decide by nnU-Net's rule (spacing ratio > ``anisotropy_ratio``).
    """

    data_identifier: str
    spacing: tuple[float, ...]
    normalization: tuple[ChannelNormalization, ...]
    image_order: int = 3
    image_order_thick: int = 0
    label_order: int = 1
    label_order_thick: int = 0
    anisotropy_ratio: float = ANISOTROPY_RATIO
    thick_axis: int | None = None
    configurations: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The fields that decide the arrays (stored in each case's properties for resume)."""
        return {
            "data_identifier": self.data_identifier,
            "spacing": [float(s) for s in self.spacing],
            "normalization": [n.to_dict() for n in self.normalization],
            "image_order": self.image_order,
            "image_order_thick": self.image_order_thick,
            "label_order": self.label_order,
            "label_order_thick": self.label_order_thick,
            "anisotropy_ratio": self.anisotropy_ratio,
            "thick_axis": self.thick_axis,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessingParams:
        return cls(
            data_identifier=str(d["data_identifier"]),
            spacing=tuple(float(s) for s in d["spacing"]),
            normalization=tuple(ChannelNormalization.from_dict(n) for n in d["normalization"]),
            image_order=int(d.get("image_order", 3)),
            image_order_thick=int(d.get("image_order_thick", 0)),
            label_order=int(d.get("label_order", 1)),
            label_order_thick=int(d.get("label_order_thick", 0)),
            anisotropy_ratio=float(d.get("anisotropy_ratio", ANISOTROPY_RATIO)),
            thick_axis=None if d.get("thick_axis") is None else int(d["thick_axis"]),
        )


@dataclass
class PreprocessedCase:
    """One preprocessed case in memory: what the four files of the format hold."""

    data: np.ndarray  # float32 (C, Z, Y, X)
    seg: np.ndarray | None  # uint8 (Z, Y, X)
    locations: dict[str, np.ndarray]  # label value -> int32 (n, 3)
    properties: dict[str, Any]


def case_seed(case_id: str) -> int:
    """A seed that depends on the case id only (CRC32), so reruns sample the same locations."""
    return zlib.crc32(case_id.encode("utf-8"))


def sample_class_locations(
    seg: np.ndarray,
    labels: Sequence[int],
    *,
    max_per_label: int = MAX_LOCATIONS_PER_LABEL,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Up to ``max_per_label`` random (z, y, x) voxels of each label, sorted, int32 (n, 3).

    Every label gets an entry, empty ``(0, 3)`` when absent, so a loader can tell "absent in
    this case" from "not sampled".
    """
    rng = np.random.default_rng(seed)
    flat = seg.reshape(-1)
    out: dict[str, np.ndarray] = {}
    for value in sorted({int(v) for v in labels if int(v) != 0}):
        idx = np.flatnonzero(flat == value)
        if idx.size > max_per_label:
            idx = np.sort(rng.choice(idx, size=max_per_label, replace=False))
        coords = np.stack(np.unravel_index(idx, seg.shape), axis=1) if idx.size else None
        out[str(value)] = (
            np.zeros((0, seg.ndim), np.int32) if coords is None else coords.astype(np.int32)
        )
    return out


def _spacing_3d(spacing: Sequence[float], is_2d: bool, z: float) -> tuple[float, float, float]:
    s = tuple(float(v) for v in spacing)
    if is_2d and len(s) == 2:
        s = (z, *s)
    if len(s) != 3:
        raise AutosegError(
            f"spacing {list(s)} has {len(s)} values for {'2D' if is_2d else '3D'} data",
            fix="re-run 'autoseg plan' for this dataset",
        )
    return s  # type: ignore[return-value]


def _case_thick_axis(
    params: PreprocessingParams,
    original: Sequence[float],
    target: Sequence[float],
    is_2d: bool,
) -> int | None:
    """The plan's thick axis if it names one, else nnU-Net's per-case rule (3D grid axes)."""
    if params.thick_axis is not None:
        return params.thick_axis + (1 if is_2d else 0)
    if is_2d:  # the placeholder z spacing must not make a 2D image "anisotropic"
        in_plane = thick_axis(original[1:], target[1:], params.anisotropy_ratio)
        return None if in_plane is None else in_plane + 1
    return thick_axis(original, target, params.anisotropy_ratio)


def preprocess_case(
    image: np.ndarray,
    geometry: Geometry,
    params: PreprocessingParams,
    *,
    seg: np.ndarray | None = None,
    case_id: str = "case",
    labels: Sequence[int] = (),
    seed: int | None = None,
    ignore_label: int | None = None,
) -> PreprocessedCase:
    """Crop, normalize and resample one case (pure).

    ``ignore_label`` (sparse annotation): the value of unlabelled voxels. It is resampled as a
    label of its own (its one-hot channel competes with the classes, nearest-neighbour along a
    thick axis), so unlabelled slices stay unlabelled and labelled ones gain no ignore voxel
    away from their border; it gets no foreground locations (the sampler never centres on it).

    ``image`` is (C, *spatial) in array order with ``geometry``'s spatial shape (2D: (C, Y, X));
    ``seg`` the label map on the same grid, or None at inference. Steps, in nnU-Net's order:
    crop to the non-zero box, normalize on the original voxels (statistics are not smeared
    by interpolation), then resample to ``params.spacing``. 2D data gets Z = 1.
    """
    spatial = tuple(geometry.shape_zyx)
    if image.ndim != len(spatial) + 1 or tuple(image.shape[1:]) != spatial:
        raise ValueError(f"image shape {image.shape} does not match geometry shape {spatial}")
    if seg is not None and tuple(seg.shape) != spatial:
        raise ValueError(f"label shape {seg.shape} does not match image shape {spatial}")
    is_2d = len(spatial) == 2
    if is_2d:
        image = image[:, None]
        seg = None if seg is None else seg[None]
    target = _spacing_3d(params.spacing, is_2d, SPACING_2D_Z)
    original = _spacing_3d(geometry.spacing_zyx, is_2d, target[0])

    cropped, seg_c, bbox = crop_to_nonzero(image, seg)
    mask = nonzero_mask(cropped) if any(n.use_nonzero_mask for n in params.normalization) else None
    normalized, norm_used = normalize_image(cropped, list(params.normalization), mask)
    new_shape = compute_new_shape(cropped.shape[1:], original, target)
    if is_2d:
        new_shape = (1, *new_shape[1:])
    thick = _case_thick_axis(params, original, target, is_2d)
    data = resample_image(
        normalized,
        new_shape,
        original,
        target,
        order=params.image_order,
        order_thick=params.image_order_thick,
        anisotropy_ratio=params.anisotropy_ratio,
        thick=thick,
    )
    seg_out = None
    locations: dict[str, np.ndarray] = {}
    if seg_c is not None:
        seg_out = resample_labels(
            seg_c,
            new_shape,
            original,
            target,
            order=params.label_order,
            order_thick=params.label_order_thick,
            anisotropy_ratio=params.anisotropy_ratio,
            thick=thick,
        )
        locations = sample_class_locations(
            seg_out,
            sorted({*map(int, labels), *present_labels(seg_out)} - {ignore_label}),
            seed=case_seed(case_id) if seed is None else seed,
        )
    box = bbox[1:] if is_2d else bbox
    properties = {
        "version": PROPERTIES_VERSION,
        "case_id": case_id,
        "original_geometry": geometry.to_dict(),
        "original_shape": list(spatial),
        "was_2d": is_2d,
        "crop_bbox": [[a, b] for a, b in box],
        "shape_after_crop": list(cropped.shape[1:]),
        "original_spacing": list(original),
        "target_spacing": list(target),
        "shape_after_resampling": list(data.shape[1:]),
        "thick_axis": thick,
        "normalization": norm_used,
        "preprocessing": params.to_dict(),
    }
    return PreprocessedCase(data, seg_out, locations, properties)


# ---------------------------------------------------------------------------------------------
# Reading a raw case and writing the format


def read_case(
    image_paths: Sequence[str | os.PathLike], label_path: str | os.PathLike | None = None
) -> tuple[np.ndarray, Geometry, np.ndarray | None]:
    """Channel files (+ label file) -> float32 (C, *spatial) image, its geometry, uint8 labels.

    All channels and the labels must share the first channel's grid (within header rounding).
    Grey images stored as RGB become one channel; true colour is refused.
    """
    channels = []
    geometry: Geometry | None = None
    for path in image_paths:
        img = read_image(path)
        arr = img.array
        if arr.ndim > img.geometry.ndim:
            arr = collapse_grey_rgb(arr, path)
            if arr.ndim > img.geometry.ndim:
                raise AutosegError(
                    f"image has {arr.shape[-1]} components per pixel",
                    path=path,
                    fix="store each component as its own channel file (_0000, _0001, ...)",
                )
        if geometry is None:
            geometry = img.geometry
        elif (why := geometry.mismatch(img.geometry)) is not None:
            raise AutosegError(
                f"channel grid differs from channel 0: {why}",
                path=path,
                fix="resample all channels of a case onto one grid (autoseg verify lists them)",
            )
        channels.append(arr.astype(np.float32, copy=False))
    if geometry is None:
        raise ValueError("a case needs at least one image file")
    seg = None
    if label_path is not None:
        lab = read_image(label_path)
        if (why := geometry.mismatch(lab.geometry)) is not None:
            raise AutosegError(
                f"label grid differs from the image: {why}",
                path=label_path,
                fix="run 'autoseg verify' and resample the mask onto the image grid",
            )
        seg = _labels_to_uint8(lab.array, lab.geometry.ndim, label_path)
    return np.stack(channels), geometry, seg


def _labels_to_uint8(array: np.ndarray, ndim: int, path: str | os.PathLike) -> np.ndarray:
    """Integer (or integer-valued float, as some tools write) labels -> uint8, checked."""
    if array.ndim > ndim:  # an RGB-saved mask whose content is grey
        array = collapse_grey_rgb(array, path)
    values = np.rint(array) if np.issubdtype(array.dtype, np.floating) else array
    if values.size and (values.min() < 0 or values.max() > 255):
        raise AutosegError(
            f"label values range {values.min()}..{values.max()}; autoseg stores 0..255",
            path=path,
            fix="remap the labels to 0, 1, 2, ... and run 'autoseg verify' again",
        )
    return values.astype(np.uint8)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Uncompressed ``.npz``; members carry zipfile's fixed 1980 date, so reruns are equal."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def case_files(out_dir: Path, case_id: str) -> dict[str, Path]:
    """The four files of a case; ``properties`` is written last and marks a finished case."""
    return {
        "data": out_dir / f"{case_id}.npy",
        "seg": out_dir / f"{case_id}_seg.npy",
        "locations": out_dir / f"{case_id}_locations.npz",
        "properties": out_dir / f"{case_id}.json",
    }


def write_case(out_dir: str | os.PathLike, case: PreprocessedCase) -> Path:
    """Write the four files, each atomically, properties last; returns the properties path."""
    files = case_files(Path(out_dir), case.properties["case_id"])
    _save_npy(files["data"], case.data.astype(np.float32, copy=False))
    if case.seg is not None:
        _save_npy(files["seg"], case.seg.astype(np.uint8, copy=False))
        _save_npz(files["locations"], case.locations)
    write_json_atomic(files["properties"], case.properties)
    return files["properties"]


def load_properties(path: str | os.PathLike) -> dict[str, Any]:
    """Read a case's ``.json`` properties (the input of :mod:`autoseg.preprocessing.invert`)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AutosegError(
            f"cannot read case properties ({exc})",
            path=path,
            fix="preprocess the dataset again (autoseg preprocess DATASET --overwrite)",
        ) from exc


def case_is_done(out_dir: str | os.PathLike, case_id: str, params: PreprocessingParams) -> bool:
    """All four files exist and the properties were made with these parameters."""
    files = case_files(Path(out_dir), case_id)
    if not all(p.is_file() for p in files.values()):
        return False
    try:
        props = json.loads(files["properties"].read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return (
        props.get("version") == PROPERTIES_VERSION
        and props.get("case_id") == case_id
        and props.get("preprocessing") == params.to_dict()
    )


# ---------------------------------------------------------------------------------------------
# The dataset driver


@dataclass(frozen=True)
class _Task:
    case: Case
    params: tuple[PreprocessingParams, ...]
    out_dirs: tuple[Path, ...]
    labels: tuple[int, ...]
    overwrite: bool = False
    ignore_label: int | None = None


def _run_task(task: _Task) -> str:
    """Preprocess one case for every data identifier that is not finished yet (worker)."""
    todo = [
        (p, d)
        for p, d in zip(task.params, task.out_dirs)
        if task.overwrite or not case_is_done(d, task.case.case_id, p)
    ]
    if not todo:
        return "skipped"
    image, geometry, seg = read_case(task.case.images, task.case.label)
    for params, out_dir in todo:
        result = preprocess_case(
            image,
            geometry,
            params,
            seg=seg,
            case_id=task.case.case_id,
            labels=task.labels,
            ignore_label=task.ignore_label,
        )
        write_case(out_dir, result)
    return "done"


def remove_stale_cases(out_dir: Path, keep: set[str]) -> int:
    """Delete the files of cases no longer in the dataset, so a glob over the folder is true."""
    n = 0
    for props in out_dir.glob("*.json"):
        cid = props.stem
        if props.name == MANIFEST or cid in keep:
            continue
        for f in case_files(out_dir, cid).values():
            if f.is_file():
                f.unlink()
                n += 1
    return n


def run_cases(
    tasks: Sequence[_Task], *, num_workers: int, progress: bool, desc: str = "preprocess"
) -> dict[str, str]:
    """Run tasks serially (``num_workers <= 1``) or in worker processes
    (:func:`autoseg.io.parallel.map_cases`); case id -> status.

    A failing case stops the run (its AutosegError names the file); finished cases stay on
    disk and are skipped next time.
    """
    statuses = map_cases(
        _run_task, list(tasks), num_workers=num_workers, progress=progress, desc=desc
    )
    return {task.case.case_id: status for task, status in zip(tasks, statuses, strict=True)}


# ---------------------------------------------------------------------------------------------
# From the plan to parameters


def data_spacing(plan: Any, config: str) -> tuple[float, ...]:
    """Spacing (array order, data rank) of the arrays a configuration trains on.

    A 2D/2.5D configuration of 3D data cuts slices from the 3D arrays, so its data spacing is
    its in-plane spacing with the plan's target spacing inserted at ``slice_axis``.
    """
    cfg = plan.configurations[config]
    spacing = [float(s) for s in cfg.spacing]
    if cfg.dim == plan.dim:
        return tuple(spacing)
    axis = 0 if cfg.slice_axis is None else int(cfg.slice_axis)
    spacing.insert(axis, float(plan.target_spacing[axis]))
    return tuple(spacing)


def data_identifier(plan: Any, config: str) -> str:
    """Folder name under ``preprocessed/<dataset>/`` holding a configuration's arrays.

    The plan's own ``data_identifier`` when it has one; otherwise derived from the data
    spacing — ``fullres`` at the plan's target spacing (``2d``, ``2.5d``, ``3d_fullres`` and
    ``crop`` usually share it), else ``spacing_3x1.5x1.5`` — so that configurations with the
    same spacing share one copy. The normalization is plan-wide, hence not in the name.
    """
    explicit = getattr(plan.configurations[config], "data_identifier", None)
    if explicit:
        return str(explicit)
    spacing = data_spacing(plan, config)
    if np.allclose(spacing, plan.target_spacing, rtol=1e-6, atol=0):
        return "fullres"
    return "spacing_" + "x".join(f"{s:.4g}" for s in spacing)


def params_from_plan(plan: Any, configs: Sequence[str] | None = None) -> list[PreprocessingParams]:
    """One :class:`PreprocessingParams` per distinct data identifier of ``configs``."""
    names = list(configs) if configs else list(plan.configurations)
    unknown = [n for n in names if n not in plan.configurations]
    if unknown:
        raise AutosegError(
            f"configuration {unknown[0]!r} is not in the plan "
            f"(it has {', '.join(plan.configurations)})",
            fix="pick configurations listed in plans.json, or omit --configs for all",
        )
    channels = sorted(plan.normalization, key=int)
    norms = tuple(
        ChannelNormalization(
            scheme=n.scheme,
            use_nonzero_mask=bool(n.use_nonzero_mask),
            clip=None if n.clip is None else (float(n.clip[0]), float(n.clip[1])),
            mean=n.mean,
            std=n.std,
        )
        for n in (plan.normalization[c] for c in channels)
    )
    rs = plan.resampling
    groups: dict[str, PreprocessingParams] = {}
    for name in names:
        ident = data_identifier(plan, name)
        params = PreprocessingParams(
            data_identifier=ident,
            spacing=data_spacing(plan, name),
            normalization=norms,
            image_order=rs.image_order,
            image_order_thick=rs.image_order_thick_axis,
            label_order=rs.label_order,
            label_order_thick=rs.label_order_thick_axis,
            thick_axis=rs.thick_axis,
            configurations=(name,),
        )
        if ident in groups:
            if groups[ident] != params:
                raise AutosegError(
                    f"configurations {groups[ident].configurations} and {name!r} share data "
                    f"identifier {ident!r} but not the spacing",
                    fix="give them different data identifiers in plans.json",
                )
            old = groups[ident]
            groups[ident] = replace(old, configurations=(*old.configurations, name))
        else:
            groups[ident] = params
    return list(groups.values())


# ---------------------------------------------------------------------------------------------
# The whole dataset


def preprocess_dataset(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    configs: Sequence[str] | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Preprocess every training case for the plan's configurations; returns the folders.

    Reads ``<root>/preprocessed/<ds>/plans.json``, writes ``<root>/preprocessed/<ds>/<data
    identifier>/``. Finished cases (four files, properties made with the same parameters) are
    skipped unless ``overwrite``; temporary files of a killed run are removed first; the
    ``manifest.json`` of a folder is deleted at the start and written after its last case, so
    its presence means "complete".
    """
    from autoseg.io import list_cases, load_dataset_json
    from autoseg.io.atomic import remove_partials
    from autoseg.paths import dataset_name, preprocessed_dir, resolve_dataset
    from autoseg.planning.plan import load_plan

    raw = resolve_dataset(dataset, root)
    ds = load_dataset_json(raw)
    name = dataset_name(raw)
    base = preprocessed_dir(root) / name
    plan = load_plan(base)
    all_params = params_from_plan(plan, configs)
    cases = list_cases(raw, ds)
    if not cases:
        raise AutosegError(
            "the dataset has no training cases (labelsTr is empty)",
            path=raw,
            fix="add labelled cases, then run 'autoseg verify'",
        )
    for case in cases:
        for f in (*case.images, case.label):
            if f is not None and not Path(f).exists():
                raise AutosegError(
                    f"case {case.case_id!r} lacks a file",
                    path=f,
                    fix="run 'autoseg verify' and complete or remove the case",
                )
    out_dirs = tuple(base / p.data_identifier for p in all_params)
    for d in out_dirs:
        d.mkdir(parents=True, exist_ok=True)
        remove_partials(d)
        (d / MANIFEST).unlink(missing_ok=True)
    labels = tuple(sorted(ds.foreground_labels.values()))
    tasks = [
        _Task(c, tuple(all_params), out_dirs, labels, overwrite, ds.ignore_label) for c in cases
    ]
    workers = default_workers() if num_workers is None else max(1, int(num_workers))
    run_cases(tasks, num_workers=workers, progress=progress)
    keep = {c.case_id for c in cases}
    for params, d in zip(all_params, out_dirs):
        remove_stale_cases(d, keep)
        write_json_atomic(
            d / MANIFEST,
            {
                "data_identifier": params.data_identifier,
                "configurations": list(params.configurations),
                "dataset": name,
                "preprocessing": params.to_dict(),
                "channel_names": dict(ds.channel_names),
                "labels": dict(ds.labels),
                "cases": sorted(keep),
                "autoseg_version": __version__,
            },
        )
    return list(out_dirs)
