"""``autoseg predict``: files and folders in, segmentations in the same format and geometry out.

Inputs: one image file, a folder of image files (multi-channel cases named
``<case>_0000.ext``, ``<case>_0001.ext``...), a DICOM series folder, or a folder whose
subfolders are DICOM series. Outputs: ``<case><ext>`` in the input's format (DICOM and JPEG
inputs are written as NIfTI and PNG: a segmentation is not a DICOM image, and JPEG would blur
label values), on the input's exact grid, plus ``predictions.json`` with per-case quality flags.
With ``uncertainty``, also ``<case>_uncertainty<ext>`` and ``<case>_disagreement<ext>`` (float
maps, 0..1, on the same grid; NIfTI where the prediction is PNG) and ``uncertainty.json`` /
``uncertainty.csv`` with one score per case (:mod:`autoseg.inference.uncertainty`).
A corrupt input is reported by name and skipped; the others complete, and the exit is non-zero.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError, failure_context
from autoseg.io import write_image, write_json_atomic
from autoseg.io.image import is_image_file, split_extension
from autoseg.layout import ResultsLayout

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
# Output extension per input extension (lower case).
OUTPUT_EXT = {".jpg": ".png", ".jpeg": ".png", ".bmp": ".png", ".nhdr": ".nrrd", "": ".nii.gz"}


@dataclass(frozen=True)
class InputCase:
    case_id: str
    paths: tuple[Path, ...]  # one per channel (a DICOM series is one folder)
    out_ext: str


def _is_dicom_dir(folder: Path) -> bool:
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found" is an answer
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return False
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def find_inputs(path: str | os.PathLike, n_channels: int) -> list[InputCase]:
    """The cases to predict under ``path`` (see the module docstring for the rules)."""
    path = Path(path)
    if path.is_file():
        if n_channels != 1:
            raise AutosegError(
                f"the model needs {n_channels} channels but one file was given",
                path=path,
                fix="give a folder with <case>_0000.ext ... <case>_000N.ext files",
            )
        stem, ext = split_extension(path.name)
        return [InputCase(_strip_channel(stem), (path,), OUTPUT_EXT.get(ext.lower(), ext))]
    if not path.is_dir():
        raise AutosegError("input not found", path=path, fix="check the path")
    if _is_dicom_dir(path):
        return [InputCase(path.name, (path,), ".nii.gz")]
    files = sorted(p for p in path.iterdir() if is_image_file(p) and not p.name.startswith("."))
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    cases = [InputCase(d.name, (d,), ".nii.gz") for d in subdirs if _is_dicom_dir(d)]
    grouped: dict[str, dict[int, Path]] = {}
    singles: list[Path] = []
    for f in files:
        stem, _ = split_extension(f.name)
        m = _CHANNEL.match(stem)
        if m:
            grouped.setdefault(m.group("case"), {})[int(m.group("ch"))] = f
        else:
            singles.append(f)
    for case_id, channels in sorted(grouped.items()):
        if sorted(channels) != list(range(n_channels)):
            raise AutosegError(
                f"case {case_id!r} has channels {sorted(channels)}, the model needs "
                f"0..{n_channels - 1}",
                path=path,
                fix="provide every channel file <case>_0000 ... of each case",
            )
        ext = split_extension(channels[0].name)[1]
        cases.append(
            InputCase(
                case_id,
                tuple(channels[c] for c in range(n_channels)),
                OUTPUT_EXT.get(ext.lower(), ext),
            )
        )
    if singles:
        if n_channels != 1:
            raise AutosegError(
                f"{singles[0].name} has no _0000 channel suffix but the model needs "
                f"{n_channels} channels",
                path=singles[0],
                fix="name channel files <case>_0000.ext, <case>_0001.ext, ...",
            )
        for f in singles:
            stem, ext = split_extension(f.name)
            cases.append(InputCase(stem, (f,), OUTPUT_EXT.get(ext.lower(), ext)))
    if not cases:
        raise AutosegError("no images found", path=path, fix="point -i at images or a folder")
    ids = [c.case_id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise AutosegError(
            f"several inputs are named {dupes[0]!r}", path=path, fix="give each case a unique name"
        )
    return sorted(cases, key=lambda c: c.case_id)


def _strip_channel(stem: str) -> str:
    m = _CHANNEL.match(stem)
    return m.group("case") if m else stem


def _read(case: InputCase):
    from autoseg.preprocessing.preprocess import read_case

    return read_case(case.paths)


@dataclass
class PredictionSummary:
    written: list[Path]
    failed: dict[str, str]
    flags: dict[str, dict[str, Any]]
    uncertainty: dict[str, dict[str, Any]] = field(default_factory=dict)  # case -> summary

    @property
    def ok(self) -> bool:
        return not self.failed


def predict_cases(
    predictor: Any,
    inputs: Sequence[InputCase],
    out_dir: str | os.PathLike,
    *,
    save_probabilities: bool = False,
    uncertainty: bool = False,
    progress: bool = True,
) -> PredictionSummary:
    """Predict every case, reading the next one while the network runs. ``uncertainty``
    writes the uncertainty maps and scores too (see the module docstring)."""
    from autoseg.progress import progress_bar

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    input_files = {p.resolve() for c in inputs for p in c.paths}
    written, failed, flags, scores = [], {}, {}, {}
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_read, inputs[0]) if inputs else None
        for i, case in enumerate(
            progress_bar(inputs, desc="predict", unit="case", disable=not progress)
        ):
            try:
                image, geometry, _ = future.result()
            except AutosegError as exc:
                failed[case.case_id] = str(exc)
                image = None
            nxt = i + 1
            future = pool.submit(_read, inputs[nxt]) if nxt < len(inputs) else None
            if image is None:
                continue
            target = out_dir / f"{case.case_id}{case.out_ext}"
            if target.resolve() in input_files:
                failed[case.case_id] = f"{target}: output would overwrite an input; choose -o"
                continue
            with failure_context("predict", case.case_id):
                if uncertainty:
                    seg, probs, case_flags, unc = predictor.predict_with_uncertainty(
                        image, geometry
                    )
                else:
                    seg, probs, case_flags = predictor.predict(image, geometry)
                write_image(target, seg, geometry)
                if save_probabilities:
                    _save_probabilities(out_dir / f"{case.case_id}_probabilities.npz", probs)
                if uncertainty:
                    scores[case.case_id] = _save_uncertainty(out_dir, case, unc, geometry)
            written.append(target)
            flags[case.case_id] = case_flags.to_dict()
    report = {
        "cases": flags,
        "failed": failed,
        "n_flagged": sum(1 for f in flags.values() if f["check"]),
    }
    write_json_atomic(out_dir / "predictions.json", report)
    if uncertainty:
        write_uncertainty_summary(out_dir, scores)
    return PredictionSummary(written, failed, flags, scores)


UNCERTAINTY_COLUMNS = (
    "case",
    "score",
    "disagreement",
    "region_voxels",
    "region_fraction",
    "members",
    "member_kind",
    "uncertainty_map",
    "disagreement_map",
)


def _save_uncertainty(out_dir: Path, case: InputCase, unc: Any, geometry: Any) -> dict[str, Any]:
    from autoseg.inference.uncertainty import map_extension

    ext = map_extension(case.out_ext)
    maps = {
        "uncertainty_map": f"{case.case_id}_uncertainty{ext}",
        "disagreement_map": f"{case.case_id}_disagreement{ext}",
    }
    write_image(out_dir / maps["uncertainty_map"], unc.entropy, geometry)
    write_image(out_dir / maps["disagreement_map"], unc.disagreement, geometry)
    return {**unc.summary(), **maps}


def write_uncertainty_summary(out_dir: Path, scores: dict[str, dict[str, Any]]) -> None:
    """``uncertainty.json`` (cases, most uncertain first, and what the numbers mean) and
    ``uncertainty.csv`` (one row per case), both written atomically."""
    import csv

    from autoseg.io.atomic import atomic_path

    order = sorted(scores, key=lambda c: (-scores[c]["score"], c))
    write_json_atomic(
        out_dir / "uncertainty.json",
        {
            "score": "mean normalised entropy (0..1) over the voxels with >= 10 % foreground "
            "probability, grown by one voxel (whole image when there are none)",
            "disagreement": "mean normalised mutual information between the ensemble members "
            "over the same voxels",
            "labels": "per label: score = mean normalised entropy over the voxels with >= 10 % "
            "probability of that label, grown by one voxel (whole image when there are none)",
            "cases": {c: scores[c] for c in order},
        },
    )
    names = list(dict.fromkeys(n for c in order for n in scores[c].get("labels", {})))
    per_label = [f"score_{n}" for n in names]
    columns = [*UNCERTAINTY_COLUMNS[:3], *per_label, *UNCERTAINTY_COLUMNS[3:]]
    with atomic_path(out_dir / "uncertainty.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for c in order:
            labels = scores[c].get("labels", {})
            row = {k: scores[c][k] for k in UNCERTAINTY_COLUMNS[1:]}
            row.update({f"score_{n}": labels[n]["score"] for n in names if n in labels})
            writer.writerow({"case": c, **row})


def _save_probabilities(path: Path, probs: np.ndarray) -> None:
    from autoseg.io.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, probabilities=probs.astype(np.float16))


def load_predictor(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    configs: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    checkpoint: str = "final",
    device: str = "auto",
    tta: bool = True,
    postprocess: bool = True,
    amp: bool = True,
):
    """A :class:`Predictor` for a trained dataset: ``inference.json``'s choice by default.
    ``amp=False`` predicts in float32 (see ``networks.precision.autocast_dtype``)."""
    from autoseg.inference.predictor import Predictor, load_fold_models
    from autoseg.networks.device import pick_device
    from autoseg.paths import preprocessed_dir, resolve_dataset, results_dir
    from autoseg.planning.plan import load_plan

    raw = resolve_dataset(dataset, root)
    name = raw.name
    plan = load_plan(preprocessed_dir(root) / name)
    res = results_dir(root) / name
    inference_path = res / "inference.json"
    postprocessing: dict[str, Any] = {}
    volumes = None
    scales: list[float] = [1.0]
    if configs is None:
        if not inference_path.is_file():
            raise AutosegError(
                "no inference.json: the best configuration has not been chosen yet",
                path=res,
                fix="run 'autoseg find-best DATASET', or name --config and --folds",
            )
        info = json.loads(inference_path.read_text(encoding="utf-8"))
        configs = list(info["configurations"])
        folds = folds if folds is not None else list(info["folds"])
        if postprocess:
            postprocessing = info.get("postprocessing", {})
        volumes = info.get("training_foreground_mm3")
        if tta:  # find-best's scale views are test-time augmentation: --no-tta drops them
            scales = _scales_from(info, inference_path)
    dev = pick_device(device)
    models, localisers = {}, {}
    for config in configs:
        fold_list = list(folds) if folds is not None else _trained_folds(res / config)
        models[config] = load_fold_models(
            res / config, config, fold_list, checkpoint=checkpoint, device=dev
        )
        crop = plan.configurations[config].crop if config in plan.configurations else None
        if crop is not None and crop.localiser not in configs:
            localisers[crop.localiser] = load_fold_models(
                res / crop.localiser,
                crop.localiser,
                _trained_folds(res / crop.localiser),
                checkpoint=checkpoint,
                device=dev,
            )
    return Predictor(
        plan,
        models,
        device=dev,
        tta=tta,
        amp=amp,
        postprocessing=postprocessing,
        localisers=localisers,
        tta_scales=scales,
        training_volumes_mm3=volumes
        or training_volumes_from_fingerprint(preprocessed_dir(root) / name),
    )


def _scales_from(info: dict[str, Any], path: Path) -> list[float]:
    """inference.json's ``tta_scales``, or a one-line error naming the file."""
    from autoseg.inference.predictor import check_scales

    try:
        return list(check_scales(info.get("tta_scales", [1.0])))
    except (TypeError, ValueError):
        raise AutosegError(
            f"tta_scales {info.get('tta_scales')!r} must be positive numbers that include 1.0",
            path=path,
            fix="run 'autoseg find-best DATASET' again, or predict with --no-tta",
        ) from None


def _trained_folds(config_dir: Path) -> list[int]:
    folds = ResultsLayout(config_dir.parent).trained_folds(config_dir.name)
    if not folds:
        raise AutosegError(
            "no trained fold (checkpoint_final.pt) found",
            path=config_dir,
            fix="train it first: autoseg train DATASET CONFIG all",
        )
    return folds


def training_volumes_from_fingerprint(preprocessed: Path) -> list[float]:
    """Foreground volume (mm³) of each training case, from the fingerprint, for the
    out-of-distribution flag; empty when no fingerprint is at hand (e.g. an imported model)."""
    path = preprocessed / "fingerprint.json"
    if not path.is_file():
        return []
    fp = json.loads(path.read_text(encoding="utf-8"))
    volumes = []
    for case in fp.get("cases", []):
        fraction = sum(v for v in case.get("class_voxel_fraction", {}).values() if v)
        if fraction > 0:
            volumes.append(
                fraction * float(np.prod(case["shape"])) * float(np.prod(case["spacing"]))
            )
    return volumes
