"""Typed view of ``fingerprint.json`` (schema version 1).

The JSON file is the contract between ``autoseg fingerprint`` and the planner; these
dataclasses mirror it field by field so that ``Fingerprint.from_dict(d).to_dict() == d``.
Spacings, shapes and extents are in array order, ``(z, y, x)`` for 3D and ``(y, x)`` for 2D.
Label values are JSON object keys, hence strings (``"1"``); so are channel indices (``"0"``).
Every field is described in ``documentation/fingerprint.md``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegError

SCHEMA_VERSION = 1
FINGERPRINT_FILE = "fingerprint.json"

Vector = tuple[float, ...]
BBox = tuple[tuple[int, int], ...]


def _vec(v: Any) -> Vector | None:
    return None if v is None else tuple(float(x) for x in v)


def _ivec(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


def _list(v: tuple | None) -> list | None:
    return None if v is None else list(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _coarsening(v: Any) -> dict[str, dict[str, Any]] | None:
    if v is None:
        return None
    return {str(k): {str(f): d for f, d in per.items()} for k, per in v.items()}


@dataclass(frozen=True)
class IntensityStats:
    """Foreground intensity statistics of one channel (all None when there is no foreground)."""

    mean: float | None
    std: float | None
    p00_5: float | None
    p99_5: float | None
    min: float | None
    max: float | None

    _KEYS = ("mean", "std", "p00_5", "p99_5", "min", "max")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensityStats:
        return cls(*(_opt_float(d[k]) for k in cls._KEYS))

    def to_dict(self) -> dict[str, float | None]:
        return {k: getattr(self, k) for k in self._KEYS}


@dataclass(frozen=True)
class PooledIntensityStats(IntensityStats):
    """Dataset-wide foreground intensities of one channel; adds the median."""

    median: float | None = None

    _KEYS = ("mean", "std", "p00_5", "p99_5", "min", "max", "median")


@dataclass(frozen=True)
class CaseFingerprint:
    """Statistics of one training case."""

    case_id: str
    spacing: Vector
    shape: tuple[int, ...]
    shape_after_crop: tuple[int, ...]
    crop_bbox: BBox
    class_voxel_fraction: dict[str, float]
    foreground_extent_mm: dict[str, Vector | None]
    foreground_extent_all_mm: Vector | None
    n_components: dict[str, int]
    intensity: dict[str, IntensityStats]
    # label -> coarsening factor ("2") -> round-trip Dice (extract.coarsening_dice); None in
    # fingerprints written before it existed
    coarsening_dice: dict[str, dict[str, float]] | None = None
    # share of the voxels that are labelled (not 'ignore'); only with an ignore label
    labelled_fraction: float | None = None

    @property
    def has_foreground(self) -> bool:
        return self.foreground_extent_all_mm is not None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseFingerprint:
        return cls(
            case_id=str(d["case_id"]),
            spacing=_vec(d["spacing"]),
            shape=_ivec(d["shape"]),
            shape_after_crop=_ivec(d["shape_after_crop"]),
            crop_bbox=tuple((int(a), int(b)) for a, b in d["crop_bbox"]),
            class_voxel_fraction={k: float(v) for k, v in d["class_voxel_fraction"].items()},
            foreground_extent_mm={k: _vec(v) for k, v in d["foreground_extent_mm"].items()},
            foreground_extent_all_mm=_vec(d["foreground_extent_all_mm"]),
            n_components={k: int(v) for k, v in d["n_components"].items()},
            intensity={k: IntensityStats.from_dict(v) for k, v in d["intensity"].items()},
            coarsening_dice=_coarsening(d.get("coarsening_dice")),
            labelled_fraction=_opt_float(d.get("labelled_fraction")),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "case_id": self.case_id,
            "spacing": list(self.spacing),
            "shape": list(self.shape),
            "shape_after_crop": list(self.shape_after_crop),
            "crop_bbox": [[a, b] for a, b in self.crop_bbox],
            "class_voxel_fraction": dict(self.class_voxel_fraction),
            "foreground_extent_mm": {k: _list(v) for k, v in self.foreground_extent_mm.items()},
            "foreground_extent_all_mm": _list(self.foreground_extent_all_mm),
            "n_components": dict(self.n_components),
            "intensity": {k: v.to_dict() for k, v in self.intensity.items()},
        }
        if self.coarsening_dice is not None:
            out["coarsening_dice"] = {k: dict(v) for k, v in self.coarsening_dice.items()}
        if self.labelled_fraction is not None:
            out["labelled_fraction"] = self.labelled_fraction
        return out


@dataclass(frozen=True)
class ExtentStats:
    """Per-axis bounding-box size (mm) of one label over the cases that contain it."""

    median: Vector
    p95: Vector
    max: Vector

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtentStats:
        return cls(_vec(d["median"]), _vec(d["p95"]), _vec(d["max"]))

    def to_dict(self) -> dict[str, list[float]]:
        return {"median": list(self.median), "p95": list(self.p95), "max": list(self.max)}


@dataclass(frozen=True)
class ComponentStats:
    """Connected components of one label over the cases that contain it."""

    median: float
    max: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ComponentStats:
        return cls(float(d["median"]), int(d["max"]))

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "max": self.max}


@dataclass(frozen=True)
class Aggregate:
    """Dataset-wide summaries the planner reads."""

    spacing_median: Vector
    spacing_min: Vector
    spacing_max: Vector
    shape_median: Vector
    shape_after_crop_median: Vector
    shape_after_crop_max: tuple[int, ...]
    anisotropy_ratio: float
    class_voxel_fraction_mean: dict[str, float]
    class_voxel_fraction_median: dict[str, float]
    foreground_extent_mm: dict[str, ExtentStats | None]
    n_components: dict[str, ComponentStats | None]
    cases_without_foreground: int
    intensity: dict[str, PooledIntensityStats]
    # label -> factor -> {"mean", "p10"} of the cases' round-trip Dice (None: older file)
    coarsening_dice: dict[str, dict[str, dict[str, float]]] | None = None

    def coarsening(self, label: str, factor: float) -> dict[str, float] | None:
        """``{"mean", "p10"}`` round-trip Dice of ``label`` at ``factor`` (None: unknown)."""
        per = (self.coarsening_dice or {}).get(label) or {}
        return per.get(f"{factor:g}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Aggregate:
        return cls(
            spacing_median=_vec(d["spacing_median"]),
            spacing_min=_vec(d["spacing_min"]),
            spacing_max=_vec(d["spacing_max"]),
            shape_median=_vec(d["shape_median"]),
            shape_after_crop_median=_vec(d["shape_after_crop_median"]),
            shape_after_crop_max=_ivec(d["shape_after_crop_max"]),
            anisotropy_ratio=float(d["anisotropy_ratio"]),
            class_voxel_fraction_mean={
                k: float(v) for k, v in d["class_voxel_fraction_mean"].items()
            },
            class_voxel_fraction_median={
                k: float(v) for k, v in d["class_voxel_fraction_median"].items()
            },
            foreground_extent_mm={
                k: None if v is None else ExtentStats.from_dict(v)
                for k, v in d["foreground_extent_mm"].items()
            },
            n_components={
                k: None if v is None else ComponentStats.from_dict(v)
                for k, v in d["n_components"].items()
            },
            cases_without_foreground=int(d["cases_without_foreground"]),
            intensity={k: PooledIntensityStats.from_dict(v) for k, v in d["intensity"].items()},
            coarsening_dice=_coarsening(d.get("coarsening_dice")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "spacing_median": list(self.spacing_median),
            "spacing_min": list(self.spacing_min),
            "spacing_max": list(self.spacing_max),
            "shape_median": list(self.shape_median),
            "shape_after_crop_median": list(self.shape_after_crop_median),
            "shape_after_crop_max": list(self.shape_after_crop_max),
            "anisotropy_ratio": self.anisotropy_ratio,
            "class_voxel_fraction_mean": dict(self.class_voxel_fraction_mean),
            "class_voxel_fraction_median": dict(self.class_voxel_fraction_median),
            "foreground_extent_mm": {
                k: None if v is None else v.to_dict() for k, v in self.foreground_extent_mm.items()
            },
            "n_components": {
                k: None if v is None else v.to_dict() for k, v in self.n_components.items()
            },
            "cases_without_foreground": self.cases_without_foreground,
            "intensity": {k: v.to_dict() for k, v in self.intensity.items()},
            **(
                {}
                if self.coarsening_dice is None
                else {"coarsening_dice": {k: dict(v) for k, v in self.coarsening_dice.items()}}
            ),
        }


@dataclass(frozen=True)
class Fingerprint:
    """The whole fingerprint: dataset identity, one entry per case, and the aggregate."""

    schema_version: int
    dataset: str
    dim: int
    n_cases: int
    channel_names: dict[str, str]
    modality: dict[str, str]
    labels: dict[str, int]
    cases: tuple[CaseFingerprint, ...]
    aggregate: Aggregate
    # value of dataset.json's 'ignore' label (sparse annotation), not in ``labels``; None: none
    ignore_label: int | None = None

    @property
    def foreground_labels(self) -> dict[str, int]:
        """Label name -> value, background left out."""
        return {k: v for k, v in self.labels.items() if v != 0}

    def case(self, case_id: str) -> CaseFingerprint:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | os.PathLike | None = None) -> Fingerprint:
        version = d.get("schema_version") if isinstance(d, dict) else None
        if version != SCHEMA_VERSION:
            raise AutosegError(
                f"fingerprint schema version {version!r}, expected {SCHEMA_VERSION}",
                path=path,
                fix="recompute it with 'autoseg fingerprint DATASET --overwrite'",
            )
        try:
            return cls(
                schema_version=int(d["schema_version"]),
                dataset=str(d["dataset"]),
                dim=int(d["dim"]),
                n_cases=int(d["n_cases"]),
                channel_names={str(k): str(v) for k, v in d["channel_names"].items()},
                modality={str(k): str(v) for k, v in d["modality"].items()},
                labels={str(k): int(v) for k, v in d["labels"].items()},
                cases=tuple(CaseFingerprint.from_dict(c) for c in d["cases"]),
                aggregate=Aggregate.from_dict(d["aggregate"]),
                ignore_label=None if d.get("ignore_label") is None else int(d["ignore_label"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AutosegError(
                f"fingerprint is incomplete or malformed ({type(exc).__name__}: {exc})",
                path=path,
                fix="recompute it with 'autoseg fingerprint DATASET --overwrite'",
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "dataset": self.dataset,
            "dim": self.dim,
            "n_cases": self.n_cases,
            "channel_names": dict(self.channel_names),
            "modality": dict(self.modality),
            "labels": dict(self.labels),
            **({} if self.ignore_label is None else {"ignore_label": self.ignore_label}),
            "cases": [c.to_dict() for c in self.cases],
            "aggregate": self.aggregate.to_dict(),
        }


def load_fingerprint(path: str | os.PathLike) -> Fingerprint:
    """Read ``fingerprint.json`` (a file, or a folder holding one) into a :class:`Fingerprint`."""
    path = Path(path)
    if path.is_dir():
        path = path / FINGERPRINT_FILE
    if not path.is_file():
        raise AutosegError(
            "no fingerprint here",
            path=path,
            fix="run 'autoseg fingerprint DATASET' first",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AutosegError(
            f"cannot parse fingerprint ({exc})",
            path=path,
            fix="recompute it with 'autoseg fingerprint DATASET --overwrite'",
        ) from exc
    return Fingerprint.from_dict(data, path)
