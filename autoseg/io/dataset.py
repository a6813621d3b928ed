"""The standard dataset layout and its ``dataset.json``.

A raw dataset folder (ours: ``<root>/raw/012_Nerves``; nnU-Net v2's ``Dataset012_Nerves``
is read as it is)::

    dataset.json
    imagesTr/<case>_<channel:04d><file_ending>     one file per channel
    labelsTr/<case><file_ending>                   integer label map, same grid
    imagesTs/<case>_<channel:04d><file_ending>     optional, unlabelled

``dataset.json`` holds nnU-Net v2's keys (``channel_names``, ``labels``, ``numTraining``,
``file_ending``) plus autoseg's optional ``name``, ``description``, ``licence``,
``reference`` and per-case ``cases: {case: {"subject": ..., "cohort": ...}}``, which later
stages use to keep one subject's images in one fold and to balance cohorts.

Sparse annotation: as in nnU-Net v2, a label named ``ignore`` (:data:`IGNORE_NAME`) whose value
is the highest of all marks voxels that nobody labelled (e.g. the slices between annotated
ones). It is not a class: :attr:`DatasetJson.class_labels` and ``foreground_labels`` leave it
out, and every later stage (fingerprint, loss, sampler, validation, evaluate) masks it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegError
from autoseg.io.atomic import write_json_atomic
from autoseg.io.image import IMAGE_EXTENSIONS, split_extension

NNUNET_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
IGNORE_NAME = "ignore"


def ignore_value(labels: dict[str, int]) -> int | None:
    """The value of the ``ignore`` label in a name -> value mapping (None: no ignore label)."""
    value = labels.get(IGNORE_NAME)
    return None if value is None else int(value)


def check_ignore_label(labels: dict[str, int], path: str | os.PathLike | None = None) -> None:
    """Refuse an ``ignore`` label that is background (0) or not the highest value (nnU-Net v2's
    rule: class values stay 0..n-1, so the network's outputs never include it)."""
    value = ignore_value(labels)
    if value is None:
        return
    if value == 0:
        raise AutosegError(
            "label 'ignore' has value 0, the background's",
            path=path,
            fix="give 'ignore' the highest value, e.g. "
            '{"background": 0, "nerve": 1, "ignore": 2}',
        )
    highest = max(v for k, v in labels.items() if k != IGNORE_NAME)
    if value <= highest:
        raise AutosegError(
            f"label 'ignore' has value {value}, but it must be the highest (another label "
            f"has {highest})",
            path=path,
            fix=f'set "ignore": {highest + 1} (and that value in the masks)',
        )


@dataclass
class DatasetJson:
    """Typed view of ``dataset.json``. ``labels`` maps name -> integer value, background 0."""

    channel_names: dict[str, str]
    labels: dict[str, int]
    num_training: int
    file_ending: str
    name: str = ""
    description: str = ""
    licence: str = ""
    reference: str = ""
    cases: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept on round trip

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def ignore_label(self) -> int | None:
        """Value of the ``ignore`` label (unlabelled voxels), None when there is none."""
        return ignore_value(self.labels)

    @property
    def class_labels(self) -> dict[str, int]:
        """The classes a network predicts: every label but ``ignore``."""
        return {k: v for k, v in self.labels.items() if k != IGNORE_NAME}

    @property
    def foreground_labels(self) -> dict[str, int]:
        return {k: v for k, v in self.class_labels.items() if v != 0}

    def subject_of(self, case_id: str) -> str:
        """Subject id; a case without one is its own subject."""
        return str(self.cases.get(case_id, {}).get("subject", case_id))

    def cohort_of(self, case_id: str) -> str | None:
        c = self.cases.get(case_id, {}).get("cohort")
        return None if c is None else str(c)

    def to_dict(self, nnunet_only: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if not nnunet_only and self.name:
            d["name"] = self.name
        if self.description:
            d["description"] = self.description
        if self.licence:
            d["licence"] = self.licence
        if self.reference:
            d["reference"] = self.reference
        d["channel_names"] = dict(self.channel_names)
        d["labels"] = dict(self.labels)
        d["numTraining"] = int(self.num_training)
        d["file_ending"] = self.file_ending
        if not nnunet_only:
            if self.cases:
                d["cases"] = self.cases
            d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | os.PathLike | None = None) -> DatasetJson:
        missing = [k for k in NNUNET_KEYS if k not in d]
        if missing:
            raise AutosegError(
                f"dataset.json lacks {', '.join(missing)}",
                path=path,
                fix="add the keys (see documentation/dataset_format.md) or re-run autoseg convert",
            )
        labels: dict[str, int] = {}
        for name, value in d["labels"].items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise AutosegError(
                    f"label {name!r} has value {value!r}; region labels (lists) are not supported",
                    path=path,
                    fix="give every label one integer value",
                )
            labels[str(name)] = value
        if 0 not in labels.values():
            raise AutosegError(
                "labels have no background (value 0)",
                path=path,
                fix='add "background": 0 to "labels"',
            )
        check_ignore_label(labels, path)
        ending = str(d["file_ending"])
        if ending.lower() not in IMAGE_EXTENSIONS:
            raise AutosegError(
                f"file_ending {ending!r} is not supported",
                path=path,
                fix=f"use one of {', '.join(IMAGE_EXTENSIONS)}",
            )
        channel_names = {str(k): str(v) for k, v in d["channel_names"].items()}
        if sorted(channel_names, key=int) != [str(i) for i in range(len(channel_names))]:
            raise AutosegError(
                "channel_names keys must be 0, 1, 2, ...",
                path=path,
                fix='write e.g. "channel_names": {"0": "T2"}',
            )
        known = {*NNUNET_KEYS, "name", "description", "licence", "reference", "cases"}
        return cls(
            channel_names=channel_names,
            labels=labels,
            num_training=int(d["numTraining"]),
            file_ending=ending,
            name=str(d.get("name", "")),
            description=str(d.get("description", "")),
            licence=str(d.get("licence", d.get("license", ""))),
            reference=str(d.get("reference", "")),
            cases={str(k): dict(v) for k, v in d.get("cases", {}).items()},
            extra={k: v for k, v in d.items() if k not in known and k != "license"},
        )

    def save(self, dataset_dir: str | os.PathLike, nnunet_only: bool = False) -> Path:
        path = Path(dataset_dir) / "dataset.json"
        write_json_atomic(path, self.to_dict(nnunet_only=nnunet_only))
        return path


def load_dataset_json(dataset_dir: str | os.PathLike) -> DatasetJson:
    path = Path(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise AutosegError(
            "no dataset.json here",
            path=dataset_dir,
            fix="run 'autoseg convert' on your source folder first",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AutosegError(f"cannot parse JSON ({exc})", path=path, fix="repair the JSON") from exc
    if not isinstance(data, dict):
        raise AutosegError("dataset.json must hold a JSON object", path=path)
    return DatasetJson.from_dict(data, path)


@dataclass(frozen=True)
class Case:
    """One case: its channel files in channel order and its label file (None in imagesTs)."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None


def channel_file(folder: Path, case_id: str, channel: int, file_ending: str) -> Path:
    return folder / f"{case_id}_{channel:04d}{file_ending}"


def _cases_in(folder: Path, ds: DatasetJson, labelled: bool) -> list[Case]:
    if not folder.is_dir():
        return []
    ending = ds.file_ending
    ids: set[str] = set()
    if labelled:
        label_dir = folder.parent / "labelsTr"
        if label_dir.is_dir():
            ids = {
                split_extension(p.name)[0]
                for p in label_dir.iterdir()
                if p.name.endswith(ending) and not p.name.startswith(".")
            }
    else:
        for p in folder.iterdir():
            if p.name.startswith("."):  # macOS "._x_0000.nii.gz" resource forks
                continue
            stem, ext = split_extension(p.name)
            if ext == ending and len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
                ids.add(stem[:-5])
    cases = []
    for cid in sorted(ids):
        images = tuple(channel_file(folder, cid, c, ending) for c in range(ds.n_channels))
        label = folder.parent / "labelsTr" / f"{cid}{ending}" if labelled else None
        cases.append(Case(cid, images, label))
    return cases


def list_cases(dataset_dir: str | os.PathLike, ds: DatasetJson | None = None) -> list[Case]:
    """Training cases, one per file in ``labelsTr``, sorted by id.

    Channel files are listed whether or not they exist: ``autoseg verify`` reports missing
    ones by name instead of silently dropping a case.
    """
    dataset_dir = Path(dataset_dir)
    ds = ds or load_dataset_json(dataset_dir)
    return _cases_in(dataset_dir / "imagesTr", ds, labelled=True)


def list_test_cases(dataset_dir: str | os.PathLike, ds: DatasetJson | None = None) -> list[Case]:
    """Unlabelled cases in ``imagesTs`` (grouped by their ``_0000`` channel suffix)."""
    dataset_dir = Path(dataset_dir)
    ds = ds or load_dataset_json(dataset_dir)
    return _cases_in(dataset_dir / "imagesTs", ds, labelled=False)
