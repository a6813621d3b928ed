"""Dataset integrity checks: the engine of ``autoseg verify`` and the last step of ``convert``.

A raw dataset is checked the way a careful user would before spending a day of GPU time on
it: the layout (every mask has all its channel images, every image has a mask, names follow
``<case>_<channel:04d><ending>``, ``numTraining`` is right), the grids (each channel and the
mask share size, spacing, origin and direction), the masks (integer values that
``dataset.json`` declares) and the images (readable, complete, finite, not blank, one grey
value per voxel, all 2D or all 3D).

Nothing here raises for bad data: every finding becomes a :class:`Problem` that names the file,
says what is wrong with the values involved, and how to fix it; all problems are collected in
one pass so that a user fixes a dataset in one round instead of one error at a time.
"""

from __future__ import annotations

import collections
import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.errors import AutosegError
from autoseg.io.atomic import TMP_MARK
from autoseg.io.dataset import (
    Case,
    DatasetJson,
    ignore_value,
    list_cases,
    list_test_cases,
    load_dataset_json,
)
from autoseg.io.image import Geometry, ImageData, read_image, split_extension
from autoseg.io.nifti import nifti_stored_non_finite
from autoseg.io.parallel import map_cases

SEVERITIES = ("error", "warning")
# At most this many values or files are named in one message; the rest are counted.
MAX_LISTED = 8
# A "mask" with more distinct undeclared values than this is almost surely an image saved in
# labelsTr by mistake: real label maps hold a handful of values, scans hundreds to thousands.
IMAGE_LIKE_VALUES = 32
# Voxel-data files that .mhd and .nhdr headers name; they sit next to the header.
DATA_FILES = (".raw", ".zraw", ".raw.gz", ".img", ".dat")
_CHANNEL_NAME = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Problem:
    """One finding: the file (or folder) concerned, what is wrong, and how to fix it.

    ``severity`` is "error" (training would fail or learn from wrong data) or "warning"
    (legal but suspicious, e.g. a mask without foreground); only errors fail ``verify``.
    """

    path: str
    what: str
    fix: str
    severity: str = "error"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{prefix}{self.path}: {self.what.rstrip('. ')}. Fix: {self.fix}"


def problem_from_error(exc: AutosegError, default_path: str | os.PathLike) -> Problem:
    """Turn an AutosegError into a Problem (path, what, fix)."""
    return Problem(exc.path or str(default_path), exc.message, exc.fix or "see the message")


# --------------------------------------------------------------------------------------------
# Entry point


def verify_dataset(
    dataset_dir: str | os.PathLike, *, num_workers: int | None = None, progress: bool = True
) -> list[Problem]:
    """Check a raw dataset folder and return every problem found (empty list: all good).

    Layout problems come first, then per-case problems in case order, then problems that only
    show across cases (mixed 2D/3D, declared labels that no mask uses). Cases are read in
    ``num_workers`` processes (default ``min(4, cpu_count)``; ``<= 1`` reads in this process).
    """
    root = Path(dataset_dir)
    try:
        ds = load_dataset_json(root)
    except AutosegError as exc:
        return [problem_from_error(exc, root / "dataset.json")]
    train = list_cases(root, ds)
    test = list_test_cases(root, ds)
    problems = layout_problems(root, ds, train, test)
    problems += dataset_json_problems(root, ds, train, test)

    results = _check_cases([*train, *test], ds.labels, num_workers, progress)
    for result in results:
        problems.extend(result.problems)
    problems += dimensionality_problems(results)
    problems += unused_label_problems(root, ds, results[: len(train)])
    return problems


def summary_line(dataset_dir: str | os.PathLike, problems: Sequence[Problem]) -> str:
    """``012_Nerves: 20 training cases, 0 test cases, 2 channels, labels background/nerve: OK``."""
    root = Path(dataset_dir)
    name = root.resolve().name
    try:
        ds = load_dataset_json(root)
        n_train, n_test = len(list_cases(root, ds)), len(list_test_cases(root, ds))
        labels = "/".join(sorted(ds.labels, key=lambda k: ds.labels[k]))
        head = (
            f"{name}: {_plural(n_train, 'training case')}, {_plural(n_test, 'test case')}, "
            f"{_plural(ds.n_channels, 'channel')}, labels {labels}"
        )
    except AutosegError:
        head = f"{name}: dataset.json unreadable"
    n_err = sum(p.is_error for p in problems)
    n_warn = len(problems) - n_err
    if n_err == 0:
        verdict = "OK" + (f", {_plural(n_warn, 'warning')}" if n_warn else "")
    else:
        verdict = _plural(n_err, "error") + (f", {_plural(n_warn, 'warning')}" if n_warn else "")
    return f"{head}: {verdict}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --------------------------------------------------------------------------------------------
# Layout and dataset.json (cheap, in this process)


def layout_problems(
    root: Path, ds: DatasetJson, train: Sequence[Case], test: Sequence[Case]
) -> list[Problem]:
    """Folders, file names and endings, missing channels, images without a mask."""
    problems: list[Problem] = []
    images_tr, labels_tr, images_ts = root / "imagesTr", root / "labelsTr", root / "imagesTs"
    for folder in (images_tr, labels_tr):
        if not folder.is_dir():
            problems.append(
                Problem(
                    str(folder),
                    "folder is missing",
                    f"put the training images in imagesTr/<case>_0000{ds.file_ending} and their "
                    f"masks in labelsTr/<case>{ds.file_ending}, or run 'autoseg convert'",
                )
            )

    train_ids = {c.case_id for c in train}
    for folder in (images_tr, images_ts):
        first_file: dict[str, Path] = {}
        for entry in _entries(folder):
            problem = entry_problem(entry, ds, with_channel=True)
            if problem is not None:
                problems.append(problem)
                continue
            stem, ext = split_extension(entry.name)
            match = _CHANNEL_NAME.match(stem)
            if match and ext == ds.file_ending and not entry.name.startswith("."):
                first_file.setdefault(match["case"], entry)
        if folder == images_tr:
            for case_id, entry in first_file.items():
                if case_id not in train_ids:
                    problems.append(
                        Problem(
                            str(entry),
                            f"image of case {case_id!r} has no mask "
                            f"(labelsTr/{case_id}{ds.file_ending} is missing)",
                            f"add the mask as labelsTr/{case_id}{ds.file_ending}, or move the "
                            "case's images to imagesTs if it is not labelled",
                        )
                    )
    for entry in _entries(labels_tr):
        problem = entry_problem(entry, ds, with_channel=False)
        if problem is not None:
            problems.append(problem)

    for cases, where in ((train, "imagesTr"), (test, "imagesTs")):
        for case in cases:
            for k, image in enumerate(case.images):
                if not image.is_file():
                    problems.append(
                        Problem(
                            str(image),
                            f"channel {k} ({ds.channel_names[str(k)]}) of case "
                            f"{case.case_id!r} is missing from {where}",
                            f"add {image.name}, or remove the case's other files"
                            + (" and its mask" if case.label is not None else ""),
                        )
                    )
    return problems


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def entry_problem(entry: Path, ds: DatasetJson, *, with_channel: bool) -> Problem | None:
    """What is wrong with one folder entry's name (None if nothing; hidden files are ignored).

    ``with_channel``: image folders need ``<case>_<channel:04d><ending>``; labelsTr needs
    ``<case><ending>``.
    """
    name, ending = entry.name, ds.file_ending
    if name.startswith(TMP_MARK):
        return Problem(
            str(entry),
            "leftover temporary file from an interrupted write",
            "delete it (autoseg writes under such names and renames when complete)",
            severity="warning",
        )
    if name.startswith("."):
        return None
    if entry.is_dir():
        return Problem(
            str(entry),
            "unexpected folder: the dataset holds one image file per channel",
            "convert DICOM series folders with 'autoseg convert', or move the folder out",
        )
    stem, ext = split_extension(name)
    if ext == "" and ending.lower() in (".mhd", ".nhdr") and name.lower().endswith(DATA_FILES):
        return None  # the voxel data that a .mhd/.nhdr header points to
    if ext == "":
        return Problem(
            str(entry),
            "not an image file; autoseg ignores it",
            "move it out of the dataset folder",
            severity="warning",
        )
    if ext != ending:
        return Problem(
            str(entry),
            f"file ending {ext!r} but dataset.json declares file_ending {ending!r}; "
            "the file is not used",
            f"convert it to {ending} ('autoseg convert' does this) or remove it",
        )
    if not with_channel:
        return None
    match = _CHANNEL_NAME.match(stem)
    if match is None:
        return Problem(
            str(entry),
            f"name does not follow <case>_<channel:04d>{ending} (e.g. {stem}_0000{ending})",
            "rename it; the 4-digit suffix is the channel's index in channel_names",
        )
    channel = int(match["channel"])
    if channel >= ds.n_channels:
        declared = ", ".join(f"{int(k):04d} {v}" for k, v in ds.channel_names.items())
        return Problem(
            str(entry),
            f"channel {channel:04d} is not declared (dataset.json has "
            f"{_plural(ds.n_channels, 'channel')}: {declared})",
            "add the channel to channel_names in dataset.json, or remove the file",
        )
    return None


def dataset_json_problems(
    root: Path, ds: DatasetJson, train: Sequence[Case], test: Sequence[Case]
) -> list[Problem]:
    """numTraining, an empty training set, label values used twice, stray per-case metadata."""
    path = str(root / "dataset.json")
    problems: list[Problem] = []
    labels_tr = root / "labelsTr"
    # Counted here, not taken from `train`: list_cases finds no case at all without imagesTr.
    n_masks = sum(
        1
        for p in _entries(labels_tr)
        if p.name.endswith(ds.file_ending) and not p.name.startswith(".")
    )
    if labels_tr.is_dir() and n_masks == 0:
        problems.append(
            Problem(
                str(labels_tr),
                f"no training cases: no mask ending in {ds.file_ending} in labelsTr",
                "add masks to labelsTr (or check file_ending in dataset.json)",
            )
        )
    if ds.num_training != n_masks:
        problems.append(
            Problem(
                path,
                f"numTraining is {ds.num_training} but labelsTr holds {_plural(n_masks, 'case')}",
                f'set "numTraining": {n_masks}',
            )
        )
    by_value: dict[int, list[str]] = collections.defaultdict(list)
    for name, value in ds.labels.items():
        by_value[value].append(name)
    for value, names in sorted(by_value.items()):
        if len(names) > 1:
            problems.append(
                Problem(
                    path,
                    f"labels {', '.join(map(repr, names))} share the value {value}",
                    "give every label its own value",
                )
            )
    known = {c.case_id for c in (*train, *test)}
    stray = sorted(set(ds.cases) - known)
    if stray:
        problems.append(
            Problem(
                path,
                f'"cases" describes {_plural(len(stray), "case")} that do not exist: '
                f"{_listed(stray)}",
                'remove them from "cases" or add their files',
                severity="warning",
            )
        )
    return problems


def _listed(items: Sequence[object]) -> str:
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


# --------------------------------------------------------------------------------------------
# Per case (runs in worker processes)


@dataclass(frozen=True)
class CaseResult:
    """What one case's check found, plus what the cross-case checks need (small to pickle)."""

    case_id: str
    problems: tuple[Problem, ...]
    ndim: int | None = None  # spatial dimensionality of the first readable channel
    reference: str | None = None  # that channel's path
    label_values: frozenset[int] = frozenset()


def check_case(case: Case, labels: dict[str, int]) -> CaseResult:
    """Read every existing file of one case and check content and grids.

    Missing files are not reported here (the layout check does). The first readable channel
    is the reference grid for the other channels and for the mask.
    """
    problems: list[Problem] = []
    ref: tuple[Path, Geometry] | None = None
    for path in case.images:
        img = _read(path, problems) if path.is_file() else None
        if img is None:
            continue
        unusable = shape_problems(path, img, is_label=False)
        if unusable:  # RGB or 4D: one error says it all; it is no reference grid either
            problems += unusable
            continue
        is_float = np.issubdtype(img.array.dtype, np.floating)
        stored = nifti_stored_non_finite(path) if is_float else (0, 0)
        problems += content_problems(path, img.array, stored)
        if ref is None:
            ref = (path, img.geometry)
        else:
            problems += grid_problems(path, img.geometry, *ref, is_label=False)
    values: frozenset[int] = frozenset()
    lab = _read(case.label, problems) if case.label is not None and case.label.is_file() else None
    if lab is not None:
        unusable = shape_problems(case.label, lab, is_label=True)
        problems += unusable
        if not unusable:
            found, values = label_problems(case.label, lab.array, labels)
            problems += found
            if ref is not None:
                problems += grid_problems(case.label, lab.geometry, *ref, is_label=True)
    return CaseResult(
        case.case_id,
        tuple(problems),
        ndim=None if ref is None else ref[1].ndim,
        reference=None if ref is None else str(ref[0]),
        label_values=values,
    )


def _read(path: Path, problems: list[Problem]) -> ImageData | None:
    """Read a file, adding a Problem instead of raising when it is unreadable or truncated."""
    try:
        return read_image(path)
    except AutosegError as exc:
        problems.append(problem_from_error(exc, path))
    except MemoryError:
        problems.append(
            Problem(str(path), "too large to read into memory", "run verify on a larger machine")
        )
    return None


def shape_problems(path: Path, img: ImageData, *, is_label: bool) -> list[Problem]:
    """A file autoseg cannot use as it is: several values per voxel (RGB) or not 2D/3D."""
    what = "mask" if is_label else "image"
    if img.n_components > 1:
        fix = (
            "save the mask as a single-channel (greyscale or palette) image whose pixel values "
            "are the label values"
            if is_label
            else "re-export it in greyscale ('autoseg convert' turns grey-looking RGB into one "
            "channel); for real colour data, save R, G and B as channel files _0000, _0001, _0002"
        )
        return [
            Problem(
                str(path),
                f"{what} has {img.n_components} components per voxel (RGB/vector); autoseg "
                "needs one value per voxel",
                fix,
            )
        ]
    if img.geometry.ndim not in (2, 3):
        return [
            Problem(
                str(path),
                f"{what} is {img.geometry.ndim}D (size {img.geometry.size}); autoseg takes 2D or "
                "3D images",
                "save the mask as one 2D or 3D label map"
                if is_label
                else "split the extra axis into channel files <case>_0000, <case>_0001, ... and "
                "declare them in channel_names",
            )
        ]
    return []


def content_problems(
    path: Path, array: np.ndarray, stored_non_finite: tuple[int, int] = (0, 0)
) -> list[Problem]:
    """NaN/Inf voxels and blank (constant) images.

    ``stored_non_finite``: (NaN, Inf) counts in the file that the reader hid by turning them
    into 0 (see :func:`nifti_stored_non_finite`); used when the array itself is all finite.
    """
    problems: list[Problem] = []
    n_nan = n_inf = 0
    values = array
    if np.issubdtype(array.dtype, np.inexact):
        finite = np.isfinite(array)
        n_nan = int(np.count_nonzero(np.isnan(array)))
        n_inf = array.size - int(np.count_nonzero(finite)) - n_nan
        if n_nan + n_inf:
            values = array[finite]
    note = ""
    if n_nan + n_inf == 0 and sum(stored_non_finite):
        n_nan, n_inf = stored_non_finite
        note = "; SimpleITK reads them as 0"
    if n_nan + n_inf:
        problems.append(
            Problem(
                str(path),
                f"image holds {n_nan + n_inf:,} non-finite voxels ({n_nan:,} NaN, {n_inf:,} Inf) "
                f"of {array.size:,}{note}",
                "replace them (e.g. with the image minimum) when exporting; NaN usually marks "
                "voxels outside the scanned field of view",
            )
        )
    if values.size == 0:
        return problems
    lo, hi = values.min(), values.max()
    if lo == hi:
        problems.append(
            Problem(
                str(path),
                f"image is blank: every {'finite ' if values is not array else ''}voxel is "
                f"{float(lo):g}",
                "export it again; a blank file usually means a failed export or the wrong series",
            )
        )
    return problems


def label_problems(
    path: Path, array: np.ndarray, labels: dict[str, int]
) -> tuple[list[Problem], frozenset[int]]:
    """Integer values, only declared ones, some foreground; also returns the values present."""
    problems: list[Problem] = []
    values = array
    if np.issubdtype(array.dtype, np.inexact):
        integral = np.isfinite(array) & (array == np.rint(array))
        n_bad = array.size - int(np.count_nonzero(integral))
        if n_bad:
            examples = np.unique(array[~integral])[:4]
            problems.append(
                Problem(
                    str(path),
                    f"mask holds {n_bad:,} non-integral values (e.g. "
                    f"{', '.join(f'{v:g}' for v in examples)}); label values must be integers",
                    "export the mask with integer values; if it was resampled, use "
                    "nearest-neighbour interpolation (linear interpolation blends labels)",
                )
            )
            values = array[integral]
        if values.size == 0:
            return problems, frozenset()
        values = np.clip(values, -(2**62), 2**62).astype(np.int64)
    counts = value_counts(values)
    present = frozenset(counts)
    declared = set(labels.values())
    undeclared = sorted(v for v in present if v not in declared)
    if undeclared:
        shown = ", ".join(f"{v} ({counts[v]:,} voxels)" for v in undeclared[:MAX_LISTED])
        if len(undeclared) > MAX_LISTED:
            shown += f" and {len(undeclared) - MAX_LISTED} more"
        names = ", ".join(f"{k}={v}" for k, v in sorted(labels.items(), key=lambda kv: kv[1]))
        if len(undeclared) > IMAGE_LIKE_VALUES:
            fix = (
                f"this looks like an image, not a mask ({len(present)} distinct values): check "
                "that the mask was saved in labelsTr"
            )
        else:
            target = min((v for v in declared if v != 0), default=1)
            fix = (
                f"map them to declared labels when converting (e.g. 'autoseg convert SOURCE ... "
                f'--labels {undeclared[-1]}:{target}\'), or declare them under "labels" in '
                "dataset.json"
            )
        problems.append(
            Problem(str(path), f"mask holds undeclared values {shown}; declared: {names}", fix)
        )
    ignore = ignore_value(labels)
    if ignore is not None and present == {ignore}:
        problems.append(
            Problem(
                str(path),
                f"mask has no labelled voxel (every voxel is 'ignore', {ignore})",
                "label at least some voxels of the case, or leave the case out: it teaches "
                "the network nothing",
                severity="warning",
            )
        )
    elif not any(v not in (0, ignore) for v in present):
        problems.append(
            Problem(
                str(path),
                "mask has no foreground (every voxel is background 0); legal, but often a "
                "mis-saved or empty annotation",
                "check the mask; keep it if the case truly shows no structure (such cases "
                "teach the network what is not a nerve)",
                severity="warning",
            )
        )
    return problems, present


def value_counts(values: np.ndarray) -> dict[int, int]:
    """Voxel count per integer value; bincount (one pass) when the range is small, else unique."""
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 1 << 16:
        counts = np.bincount((values.ravel().astype(np.int64) - lo), minlength=hi - lo + 1)
        nz = np.flatnonzero(counts)
        return {int(v) + lo: int(counts[v]) for v in nz}
    uniq, counts = np.unique(values, return_counts=True)
    return {int(v): int(c) for v, c in zip(uniq, counts)}


def grid_problems(
    path: Path, geom: Geometry, ref_path: Path, ref_geom: Geometry, *, is_label: bool
) -> list[Problem]:
    """A channel or mask whose grid differs from the case's first channel."""
    if geom.ndim != ref_geom.ndim:
        return [
            Problem(
                str(path),
                f"{'mask' if is_label else 'channel'} is {geom.ndim}D (size {geom.size}) but "
                f"{ref_path.name} is {ref_geom.ndim}D (size {ref_geom.size})",
                "save all files of a case with the same dimensionality (a single slice saved "
                "as 3D has size 1 along z)",
            )
        ]
    detail = geom.mismatch(ref_geom)
    if detail is None:
        return []
    if detail.startswith("size"):
        fix = (
            "export the mask from the very image it was drawn on"
            if is_label
            else "resample the channels onto one grid before converting (e.g. register them)"
        )
        fix += "; a mask and all channels of a case must share one voxel grid"
    else:
        fix = (
            f"if the voxels do line up, copy the header geometry from {ref_path.name} "
            "(SimpleITK: img.CopyInformation(reference)); otherwise resample onto its grid"
            + (" with nearest-neighbour interpolation" if is_label else "")
        )
    return [
        Problem(
            str(path),
            f"grid does not match {ref_path.name}: {detail} (this file first)",
            fix,
        )
    ]


# --------------------------------------------------------------------------------------------
# Across cases


def dimensionality_problems(results: Sequence[CaseResult]) -> list[Problem]:
    """Mixed 2D and 3D cases: name the minority's files (ties count 3D as the majority)."""
    dims = collections.Counter(r.ndim for r in results if r.ndim is not None)
    if len(dims) < 2:
        return []
    total = sum(dims.values())
    majority = max(dims, key=lambda d: (dims[d], d))
    return [
        Problem(
            r.reference or r.case_id,
            f"case {r.case_id!r} is {r.ndim}D but {dims[majority]} of {total} cases are "
            f"{majority}D; a dataset must be all 2D or all 3D",
            f"export it as {majority}D (a single slice saved as 3D has size 1 along z), or "
            "keep it in a separate dataset",
        )
        for r in results
        if r.ndim is not None and r.ndim != majority
    ]


def unused_label_problems(
    root: Path, ds: DatasetJson, train_results: Sequence[CaseResult]
) -> list[Problem]:
    """Declared foreground labels that no readable training mask contains."""
    if not any(r.label_values for r in train_results):
        return []
    seen = frozenset().union(*(r.label_values for r in train_results))
    return [
        Problem(
            str(root / "dataset.json"),
            f"label {name!r} ({value}) occurs in no training mask",
            'remove it from "labels" or check the masks\' values (see the other problems)',
            severity="warning",
        )
        for name, value in sorted(ds.foreground_labels.items(), key=lambda kv: kv[1])
        if value not in seen
    ]


# --------------------------------------------------------------------------------------------
# Running the per-case checks


def _check_cases(
    cases: Sequence[Case],
    labels: dict[str, int],
    num_workers: int | None,
    progress: bool,
) -> list[CaseResult]:
    """Check cases in order; in worker processes when there are several cases and workers.

    Through :func:`autoseg.io.parallel.map_cases`: forked processes (no
    ``if __name__ == "__main__"`` guard needed in users' scripts), safe after the caller used
    SimpleITK — its default "Platform" threader keeps no thread pool that a fork could copy in
    a locked state. A case whose reader process crashes is reported as a problem of that case
    (the others are still checked).
    """
    return map_cases(
        functools.partial(check_case, labels=labels),
        list(cases),
        num_workers=num_workers,
        progress=progress,
        desc="verify",
        on_crash=lambda case, _exc: _crashed(case),
    )


def _crashed(case: Case) -> CaseResult:
    files = [p for p in (*case.images, case.label) if p is not None]
    return CaseResult(
        case.case_id,
        (
            Problem(
                str(files[0]),
                f"case {case.case_id!r} could not be checked: a reader process crashed "
                "(one of this run's files is probably corrupt)",
                "run 'autoseg verify --workers 1' to find the file that crashes the reader",
            ),
        ),
    )
