"""Interchange with nnU-Net v2: import its raw datasets, export ours to its layout.

Both layouts are the same on disk (``imagesTr/<case>_<channel:04d><ending>``, ``labelsTr``,
``imagesTs``); only ``dataset.json`` differs, ours holding a few more keys (``name``,
``cases``, ...). Export therefore hard-links (or copies) files and writes a ``dataset.json``
with nnU-Net's keys only; import reads the case list and declarations that conversion then
carries over unchanged.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

from autoseg.errors import AutosegError
from autoseg.io.atomic import TMP_MARK, atomic_path
from autoseg.io.dataset import (
    DatasetJson,
    channel_file,
    list_cases,
    list_test_cases,
    load_dataset_json,
)
from autoseg.io.image import split_extension
from autoseg.io.pairing import (
    SourceCase,
    SourceLayout,
    check_unique_ids,
    raise_problems,
    read_json,
    sanitise_case_id,
)
from autoseg.paths import parse_dataset_folder
from autoseg.progress import progress_bar

# dataset.json keys that only describe how nnU-Net reads the *source* files, or that belong
# to older formats: they would be wrong after conversion to NIfTI, so import drops them.
_DROPPED_KEYS = (
    "overwrite_image_reader_writer",
    "dataset",
    "numTest",
    "training",
    "test",
    "modality",
    "tensorImageSize",
)


def is_nnunet_dataset(src: Path) -> bool:
    """A folder with a ``dataset.json`` that has nnU-Net v2's ``channel_names``/``file_ending``."""
    p = src / "dataset.json"
    if not p.is_file():
        return False
    try:
        data = read_json(p)
    except AutosegError:
        return False
    return "channel_names" in data and "file_ending" in data


def read_nnunet(src: Path) -> SourceLayout:
    """The cases and declarations of an nnU-Net v2 raw dataset (or an autoseg one).

    Cases come from ``labelsTr`` + ``imagesTr`` (or from the optional explicit ``dataset``
    mapping of nnU-Net v2), test cases from ``imagesTs``. Channel names, labels, description,
    licence, reference and any per-case metadata are kept as they are.
    """
    ds = load_dataset_json(src)
    raw = read_json(src / "dataset.json")
    problems: list[str] = []
    cases: list[SourceCase] = []
    mapping = raw.get("dataset")
    if isinstance(mapping, dict):
        for cid, entry in sorted(mapping.items()):
            if not isinstance(entry, dict) or not isinstance(entry.get("images"), list):
                problems.append(f"'dataset' entry {cid!r} needs a list 'images'")
                continue
            images = tuple(_in(src, str(p)) for p in entry["images"])
            label = _in(src, str(entry["label"])) if entry.get("label") else None
            cases.append(SourceCase(sanitise_case_id(cid), images, label, test=label is None))
    else:
        for case in list_cases(src, ds):
            cases.append(SourceCase(case.case_id, case.images, case.label))
        labelled = {c.case_id for c in cases}
        for p in sorted((src / "imagesTr").glob(f"*{ds.file_ending}")):
            stem = split_extension(p.name)[0]
            if not p.name.startswith(".") and stem[:-5] not in labelled:
                problems.append(f"image without a mask: {p}")
    for case in list_test_cases(src, ds):
        cases.append(SourceCase(case.case_id, case.images, None, test=True))
    for c in cases:
        for p in (*c.images, *([c.label] if c.label else [])):
            if not p.is_file():
                problems.append(f"case {c.case_id!r}: {p} is missing")
    raise_problems(
        "nnU-Net dataset is incomplete",
        problems,
        path=src,
        fix="restore the missing files, or move unlabelled images to imagesTs",
    )
    if not any(not c.test for c in cases):
        raise AutosegError(
            "nnU-Net dataset has no training cases",
            path=src / "labelsTr",
            fix=f"put the masks in labelsTr/<case>{ds.file_ending}",
        )
    check_unique_ids(cases, path=src)
    cases = [
        replace(c, subject=_meta(ds, c.case_id, "subject"), cohort=_meta(ds, c.case_id, "cohort"))
        for c in cases
    ]
    info = {
        k: v
        for k, v in (
            ("description", ds.description),
            ("licence", ds.licence),
            ("reference", ds.reference),
        )
        if v
    }
    extra = {k: v for k, v in ds.extra.items() if k not in _DROPPED_KEYS}
    if extra:
        info["extra"] = extra
    return SourceLayout(
        cases,
        "nnunet",
        labels=dict(ds.labels),
        channel_names=[ds.channel_names[str(i)] for i in range(ds.n_channels)],
        info=info,
    )


def _in(src: Path, text: str) -> Path:
    p = Path(text)
    return p if p.is_absolute() else src / p


def _meta(ds: DatasetJson, case_id: str, key: str) -> str | None:
    value = ds.cases.get(case_id, {}).get(key)
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def nnunet_folder_name(dataset_dir: Path) -> str:
    """``Dataset012_Nerves`` from our ``012_Nerves`` (nnU-Net needs a 3-digit id, 1-999)."""
    parsed = parse_dataset_folder(dataset_dir.name)
    if parsed is None:
        raise AutosegError(
            "folder name does not follow <NNN>_<Name>, so the nnU-Net dataset id is unknown",
            path=dataset_dir,
            fix="rename the folder, e.g. 012_Nerves",
        )
    dataset_id, name = parsed
    if not 1 <= dataset_id <= 999:
        raise AutosegError(
            f"dataset id {dataset_id} is outside nnU-Net's range 1-999",
            path=dataset_dir,
            fix="re-convert with --id between 1 and 999",
        )
    return f"Dataset{dataset_id:03d}_{name}"


def check_nnunet_labels(labels: dict[str, int], path: Path) -> None:
    """nnU-Net v2 refuses label values that are not 0, 1, 2, ... without gaps."""
    values = sorted(labels.values())
    if values != list(range(len(values))):
        renumber = ",".join(f"{v}:{i}" for i, v in enumerate(values) if v != i)
        raise AutosegError(
            f"label values {values} are not consecutive 0, 1, 2, ...; nnU-Net v2 refuses them",
            path=path,
            fix=f"re-convert the source with --labels {renumber} (and --overwrite)",
        )


def export_nnunet(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    link: bool = True,
    progress: bool = True,
) -> Path:
    """Write ``out_dir/DatasetNNN_Name`` in nnU-Net v2's raw format; returns that folder.

    Files are hard-linked when ``link`` and the file system allows (no extra disk space; the
    files are never modified in place by either tool), copied otherwise. The folder is built
    under a temporary name and renamed when complete, so an interrupted export leaves no
    half-made dataset under the final name.
    """
    dataset_dir = Path(dataset_dir).expanduser()
    out_dir = Path(out_dir).expanduser()
    ds = load_dataset_json(dataset_dir)
    check_nnunet_labels(ds.labels, dataset_dir / "dataset.json")
    target = out_dir / nnunet_folder_name(dataset_dir)
    if target.exists() and not overwrite:
        raise AutosegError(
            "nnU-Net dataset folder already exists",
            path=target,
            fix="pass --overwrite to replace it, or choose another --out",
        )
    train = list_cases(dataset_dir, ds)
    test = list_test_cases(dataset_dir, ds)
    files: list[tuple[Path, Path]] = []
    for case in train:
        for c, src in enumerate(case.images):
            files.append((src, channel_file(Path("imagesTr"), case.case_id, c, ds.file_ending)))
        assert case.label is not None
        files.append((case.label, Path("labelsTr") / case.label.name))
    for case in test:
        for c, src in enumerate(case.images):
            files.append((src, channel_file(Path("imagesTs"), case.case_id, c, ds.file_ending)))
    labels_ts = dataset_dir / "labelsTs"
    if labels_ts.is_dir():  # kept for evaluation; nnU-Net ignores the folder
        for p in sorted(labels_ts.iterdir()):
            if p.is_file() and p.name.endswith(ds.file_ending) and not p.name.startswith("."):
                files.append((p, Path("labelsTs") / p.name))
    missing = [str(src) for src, _ in files if not src.is_file()]
    raise_problems(
        "dataset is incomplete",
        missing,
        path=dataset_dir,
        fix="run 'autoseg verify' on the dataset and repair it first",
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"{TMP_MARK}{uuid.uuid4().hex[:8]}.{target.name}"
    try:
        for src, rel in progress_bar(files, desc="export", unit="file", disable=not progress):
            _link_or_copy(src, tmp / rel, link)
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        exported = replace(ds, num_training=len(train))
        exported.save(tmp, nnunet_only=True)
        _swap_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _link_or_copy(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy instead
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished folder to its final name, replacing an old one if there is one."""
    old = None
    if target.exists():
        old = target.with_name(f"{TMP_MARK}old-{uuid.uuid4().hex[:8]}.{target.name}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
