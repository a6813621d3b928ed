"""Find image/mask pairs in the folders people actually have.

The rules, tried in this order (documentation/dataset_format.md repeats them for users):

1. ``--pairs CSV``: columns ``image`` (or ``image_0000, image_0001, ...`` for several
   channels) and ``mask``; optional ``case``, ``subject``, ``cohort``. Paths are relative to
   the CSV. An empty ``mask`` cell makes an unlabelled (test) case. Without a ``case``
   column the id is the image's stem, or its folder's name when stems repeat.
2. Parallel folders ``images/`` and ``masks/`` (or ``labels/``, ``imagesTr/``+``labelsTr/``):
   a mask has the image's stem, optionally followed by a mask suffix (rule 3). Files named
   ``<case>_0000, <case>_0001, ...`` next to a mask ``<case>`` are channels of one case.
3. One folder: the mask of ``<stem>.<ext>`` is ``<stem>_mask``, ``_seg``, ``_label``,
   ``_labels`` or ``_gt`` (any case) with any supported extension. Subfolders are searched
   too; their cases get the subfolder path as prefix (``site1/a.png`` -> ``site1_a``), and a
   subfolder that holds ``images/`` + ``masks/`` follows rule 2.
4. A ``test/`` folder (or ``imagesTs/``, with an optional ``labelsTs/`` beside it) holds
   test cases, paired by rules 2-3: they go to ``imagesTs`` and their masks, if any, to
   ``labelsTs`` (kept for evaluation; training never reads them). A training image without a
   mask is also a test case; the conversion lists such images so that a misnamed mask does
   not go unnoticed.

Masks without an image and images with two candidate masks are errors that name the files:
guessing there would silently drop or mislabel training cases.

Besides these generic rules, three layouts with their own conventions are read here or in
:mod:`autoseg.io.nnunet`: the Medical Segmentation Decathlon, the Kaggle ultrasound nerve
challenge, and nnU-Net v2 raw datasets.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegError
from autoseg.io.atomic import TMP_MARK
from autoseg.io.image import split_extension

MASK_SUFFIXES = ("_mask", "_seg", "_label", "_labels", "_gt")
IMAGE_DIR_NAMES = ("images", "imagestr")
MASK_DIR_NAMES = ("masks", "labels", "labelstr")
MAX_LISTED = 10  # problems listed in one error message; the rest are counted

_CHANNEL_SUFFIX = re.compile(r"^(.+)_(\d{4})$")
_KAGGLE_IMAGE = re.compile(r"^(\d+)_(\d+)(_mask)?\.tif$", re.IGNORECASE)


@dataclass(frozen=True)
class SourceCase:
    """One case as found in the source: its channel files and its mask.

    ``images`` holds one path per channel; a single 4D file (or a file with several
    components per voxel) holds all channels and is split when read. ``test`` cases go to
    ``imagesTs`` (their mask, if any, to ``labelsTs``).
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    test: bool = False
    subject: str | None = None
    cohort: str | None = None


@dataclass
class SourceLayout:
    """Everything found in a source folder, plus the defaults its layout implies."""

    cases: list[SourceCase]
    fmt: str
    notes: list[str] = field(default_factory=list)
    label_map: dict[int, int] | None = None  # applied unless the user gives --labels
    label_names: list[str] | None = None  # foreground names for values 1, 2, ...
    labels: dict[str, int] | None = None  # a full declaration (MSD, nnU-Net)
    channel_names: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # description, licence, ... to keep


def sanitise_case_id(stem: str) -> str:
    """Case ids hold only ``[A-Za-z0-9_-]`` so that they are safe in file names everywhere."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem.strip()) or "case"


def raise_problems(title: str, problems: list[str], *, path: object, fix: str) -> None:
    """Raise one AutosegError that lists every problem (up to MAX_LISTED, then a count), one
    per line; a single problem stays on the error's one line."""
    if not problems:
        return
    if len(problems) == 1:
        raise AutosegError(f"{title}: {problems[0]}", path=path, fix=fix)
    shown = problems[:MAX_LISTED]
    more = len(problems) - len(shown)
    body = "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")
    raise AutosegError(f"{title}:\n  {body}\n", path=path, fix=fix)


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and not p.name.startswith(TMP_MARK)


def is_dicom_dir(path: Path) -> bool:
    """A folder of DICOM slices: ``*.dcm`` files, or files with the ``DICM`` magic number."""
    if not path.is_dir():
        return False
    checked = 0
    for p in path.iterdir():
        if not p.is_file() or not _visible(p):
            continue
        if p.suffix.lower() == ".dcm":
            return True
        if split_extension(p.name)[1] == "" and checked < 3:
            checked += 1
            try:
                with open(p, "rb") as fh:
                    fh.seek(128)
                    if fh.read(4) == b"DICM":
                        return True
            except OSError:
                continue
    return False


def image_entries(folder: Path) -> list[Path]:
    """Image files (supported extensions) and DICOM series folders directly in ``folder``."""
    out = []
    for p in sorted(folder.iterdir()):
        if not _visible(p):
            continue
        if (p.is_file() and split_extension(p.name)[1]) or is_dicom_dir(p):
            out.append(p)
    return out


def entry_stem(p: Path) -> str:
    return split_extension(p.name)[0]


def mask_base(stem: str) -> str | None:
    """``a_mask`` -> ``a`` (any suffix in MASK_SUFFIXES, case-insensitive); else None."""
    low = stem.lower()
    for suffix in MASK_SUFFIXES:
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return None


def _subdir(folder: Path, names: tuple[str, ...]) -> list[Path]:
    return [
        p
        for p in sorted(folder.iterdir())
        if p.is_dir() and _visible(p) and p.name.lower() in names
    ]


# ---------------------------------------------------------------------------------------------
# Rule 1: a CSV of pairs
# ---------------------------------------------------------------------------------------------


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV with stripped, lower-case column names; errors name the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise AutosegError("CSV file is empty", path=path, fix="add a header row")
            rows = []
            for row in reader:
                rows.append(
                    {
                        (k or "").strip().lower(): (v or "").strip()
                        for k, v in row.items()
                        if k is not None
                    }
                )
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AutosegError(
            f"cannot read CSV ({exc})", path=path, fix="save it as UTF-8 CSV"
        ) from exc
    return rows


def pairs_from_csv(csv_path: Path) -> list[SourceCase]:
    """Rule 1: cases listed in a CSV (see the module docstring for the columns)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise AutosegError("pairs CSV not found", path=csv_path, fix="check the --pairs path")
    rows = read_csv_rows(csv_path)
    if not rows:
        raise AutosegError("pairs CSV has no rows", path=csv_path, fix="add one row per case")
    columns = set(rows[0])
    channel_cols = sorted(c for c in columns if re.fullmatch(r"image_\d{4}", c))
    if "image" in columns and channel_cols:
        raise AutosegError(
            "pairs CSV has both 'image' and 'image_0000...' columns",
            path=csv_path,
            fix="use 'image' for one channel or image_0000, image_0001, ... for several",
        )
    image_cols = ["image"] if "image" in columns else channel_cols
    if channel_cols and channel_cols != [f"image_{i:04d}" for i in range(len(channel_cols))]:
        raise AutosegError(
            f"channel columns {', '.join(channel_cols)} are not numbered 0000, 0001, ...",
            path=csv_path,
            fix="number the columns image_0000, image_0001, ... without gaps",
        )
    mask_col = "mask" if "mask" in columns else ("label" if "label" in columns else None)
    if not image_cols or mask_col is None:
        raise AutosegError(
            f"pairs CSV needs columns 'image' and 'mask' (found: {', '.join(sorted(columns))})",
            path=csv_path,
            fix="write a header line 'image,mask' (optional: case,subject,cohort)",
        )
    base = csv_path.parent
    cases, problems = [], []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        paths = []
        for col in image_cols:
            if not row.get(col):
                problems.append(f"line {i}: column {col!r} is empty")
                continue
            paths.append(_resolve(base, row[col]))
        mask = _resolve(base, row[mask_col]) if row.get(mask_col) else None
        for p in [*paths, *([mask] if mask else [])]:
            if not p.exists():
                problems.append(f"line {i}: {p} does not exist")
        if len(paths) != len(image_cols):
            continue
        cid = sanitise_case_id(row.get("case") or entry_stem(paths[0]))
        cases.append(
            SourceCase(
                cid,
                tuple(paths),
                mask,
                test=mask is None,
                subject=row.get("subject") or None,
                cohort=row.get("cohort") or None,
            )
        )
    raise_problems(
        "pairs CSV lists missing files", problems, path=csv_path, fix="correct the paths"
    )
    if "case" not in columns:
        cases = _ids_from_folders_if_stems_repeat(cases)
    check_unique_ids(cases, path=csv_path)
    return cases


def _ids_from_folders_if_stems_repeat(cases: list[SourceCase]) -> list[SourceCase]:
    """One folder per case with the same file names inside (``pat5/flair.nii.gz``,
    ``pat6/flair.nii.gz``) is common: then the folder names are the case ids."""
    if len({c.case_id for c in cases}) == len(cases):
        return cases
    folders = [sanitise_case_id(c.images[0].parent.name) for c in cases]
    if len(set(folders)) != len(cases):
        return cases  # still ambiguous: check_unique_ids names the files
    return [replace(c, case_id=f) for c, f in zip(cases, folders)]


def _resolve(base: Path, text: str) -> Path:
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


# ---------------------------------------------------------------------------------------------
# Rules 2 and 3: folders
# ---------------------------------------------------------------------------------------------


@dataclass
class _Found:
    cases: list[SourceCase] = field(default_factory=list)
    unlabelled: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    grouped_channels: bool = False


def _by_stem(entries: list[Path], what: str, problems: list[str]) -> dict[str, Path]:
    """Index entries by stem; two files with one stem (a.png, a.nii.gz) are ambiguous."""
    out: dict[str, Path] = {}
    for p in entries:
        stem = entry_stem(p)
        if stem in out:
            problems.append(f"two {what} files with the name {stem!r}: {out[stem]} and {p}")
        else:
            out[stem] = p
    return out


def pair_parallel(
    image_dir: Path,
    mask_dir: Path | None,
    *,
    prefix: str = "",
    test: bool = False,
    group_channels: bool | None = None,
) -> _Found:
    """Rule 2: ``images/<stem>`` pairs with ``masks/<stem>`` (or ``masks/<stem>_mask``...).

    ``group_channels`` None means detect: when no image stem equals a mask's but every image
    stem ends in ``_NNNN`` and some of them lead to a mask, the files are channels of a case
    (nnU-Net's naming); True/False forces the choice (used for unlabelled test folders).
    """
    found = _Found()
    images = _by_stem(image_entries(image_dir), "image", found.problems)
    masks: dict[str, Path] = {}
    if mask_dir is not None:
        for p in image_entries(mask_dir):
            stem = entry_stem(p)
            key = stem if stem in images else (mask_base(stem) or stem)
            if key in masks:
                found.problems.append(f"two masks for {key!r}: {masks[key]} and {p}")
            else:
                masks[key] = p
    if group_channels is None:
        split = {s: _CHANNEL_SUFFIX.match(s) for s in images}
        group_channels = (
            bool(images)
            and not any(s in masks for s in images)
            and all(split.values())
            and any(m.group(1) in masks for m in split.values() if m)
        )
    found.grouped_channels = group_channels
    groups: dict[str, dict[int, Path]] = {}
    for stem, p in images.items():
        m = _CHANNEL_SUFFIX.match(stem) if group_channels else None
        key, channel = (m.group(1), int(m.group(2))) if m else (stem, 0)
        groups.setdefault(key, {})[channel] = p
    for key, channels in sorted(groups.items()):
        if sorted(channels) != list(range(len(channels))):
            found.problems.append(
                f"case {key!r} has channels {sorted(channels)} in {image_dir}; "
                "expected 0, 1, ... without gaps"
            )
            continue
        files = tuple(channels[c] for c in sorted(channels))
        mask = masks.pop(key, None)
        cid = sanitise_case_id(prefix + key)
        if mask is None and not test:
            found.unlabelled.extend(files)
        found.cases.append(SourceCase(cid, files, mask, test=test or mask is None))
    for key, p in sorted(masks.items()):
        found.problems.append(f"mask without an image: {p} (no {key}.* in {image_dir})")
    return found


def pair_same_folder(folder: Path, *, prefix: str = "", test: bool = False) -> _Found:
    """Rule 3 for one folder (not its subfolders): ``<stem>`` pairs with ``<stem>_mask``..."""
    found = _Found()
    entries = image_entries(folder)
    plain = [p for p in entries if mask_base(entry_stem(p)) is None]
    images = _by_stem(plain, "image", found.problems)
    masks: dict[str, Path] = {}
    for p in entries:
        base = mask_base(entry_stem(p))
        if base is None:
            continue
        if base not in images:
            # A file such as "scan_seg" with no "scan" beside it: an image whose name merely
            # ends like a mask would be mistaken here, so say how to be explicit.
            found.problems.append(
                f"mask without an image: {p} (no {base}.* in {folder}); "
                "rename it or list pairs in a --pairs CSV"
            )
        elif base in masks:
            found.problems.append(f"two masks for {images[base]}: {masks[base]} and {p}")
        else:
            masks[base] = p
    for stem, p in sorted(images.items()):
        mask = masks.get(stem)
        if mask is None and not test:
            found.unlabelled.append(p)
        cid = sanitise_case_id(prefix + stem)
        found.cases.append(SourceCase(cid, (p,), mask, test=test or mask is None))
    return found


def pair_tree(folder: Path, *, prefix: str = "", test: bool = False) -> _Found:
    """Rules 2-4 over a folder tree.

    Cases in subfolders get the subfolder path as prefix; ``test/`` folders (rule 4, at any
    depth) add no prefix but mark their cases as test cases.
    """
    found = _Found()
    image_dirs = _subdir(folder, IMAGE_DIR_NAMES)
    mask_dirs = _subdir(folder, MASK_DIR_NAMES)
    handled: set[Path] = set()
    if image_dirs and (mask_dirs or test):
        if len(image_dirs) > 1 or len(mask_dirs) > 1:
            found.problems.append(
                f"{folder} has several image or mask folders "
                f"({', '.join(p.name for p in image_dirs + mask_dirs)}); keep one of each"
            )
            return found
        mask_dir = mask_dirs[0] if mask_dirs else None
        _merge(found, pair_parallel(image_dirs[0], mask_dir, prefix=prefix, test=test))
        handled = {image_dirs[0], *mask_dirs}
    elif mask_dirs and not image_dirs:
        found.problems.append(
            f"{mask_dirs[0]} has no 'images' folder beside it; name the image folder 'images'"
        )
        handled = set(mask_dirs)
    else:
        _merge(found, pair_same_folder(folder, prefix=prefix, test=test))
    test_labels = _subdir(folder, ("labelsts",))
    for sub in _subdir(folder, ("imagests",)):
        grouped = None if test_labels else found.grouped_channels
        label_dir = test_labels[0] if test_labels else None
        _merge(
            found,
            pair_parallel(sub, label_dir, prefix=prefix, test=True, group_channels=grouped),
        )
        handled |= {sub, *test_labels}
    for sub in sorted(folder.iterdir()):
        if not sub.is_dir() or not _visible(sub) or sub in handled or is_dicom_dir(sub):
            continue
        if sub.name.lower() == "test":
            _merge(found, pair_tree(sub, prefix=prefix, test=True))
        else:
            _merge(found, pair_tree(sub, prefix=f"{prefix}{sub.name}_", test=test))
    return found


def _merge(into: _Found, other: _Found) -> None:
    into.cases += other.cases
    into.unlabelled += other.unlabelled
    into.problems += other.problems
    into.grouped_channels = into.grouped_channels or other.grouped_channels


def pair_folder(src: Path) -> SourceLayout:
    """Rules 2-4 applied to a source folder; errors list every unpaired or ambiguous file."""
    train = pair_tree(src)
    raise_problems(
        "cannot pair images and masks",
        train.problems,
        path=src,
        fix="rename the files so that each mask is '<image stem>_mask' (or sits in masks/ "
        "with the image's name), or list the pairs in a CSV and pass --pairs",
    )
    cases = train.cases
    if not cases:
        raise AutosegError(
            "no images found (supported: NIfTI, NRRD, MHA/MHD, DICOM folders, PNG, TIF, JPG)",
            path=src,
            fix="point to the folder that holds the images and masks",
        )
    if not any(c.label is not None and not c.test for c in cases):
        raise AutosegError(
            f"none of the {len(cases)} images has a mask",
            path=src,
            fix="name masks '<image stem>_mask.<ext>', put them in a masks/ folder beside "
            "images/, or list the pairs in a CSV and pass --pairs",
        )
    notes = []
    if train.unlabelled:
        names = ", ".join(p.name for p in train.unlabelled[:5])
        more = f" and {len(train.unlabelled) - 5} more" if len(train.unlabelled) > 5 else ""
        notes.append(
            f"{len(train.unlabelled)} image(s) have no mask and go to imagesTs: {names}{more}"
        )
    check_unique_ids(cases, path=src)
    return SourceLayout(cases, "folder", notes)


def check_unique_ids(cases: list[SourceCase], *, path: object) -> None:
    """Two sources must not map to one case id (``a b.png`` and ``a_b.png`` would)."""
    seen: dict[str, SourceCase] = {}
    problems = []
    for c in cases:
        if c.case_id in seen:
            problems.append(
                f"case id {c.case_id!r} from both {seen[c.case_id].images[0]} and {c.images[0]}"
            )
        else:
            seen[c.case_id] = c
    raise_problems(
        "case ids are not unique",
        problems,
        path=path,
        fix="rename one of the files (ids keep only letters, digits, '-' and '_'), "
        "or give a 'case' column in a --pairs CSV",
    )


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------


def apply_metadata(cases: list[SourceCase], meta_csv: Path) -> tuple[list[SourceCase], list[str]]:
    """Fill subject/cohort from a CSV ``case,subject,cohort`` (case = case id, or the first
    image's stem or file name).

    Values already set (from a --pairs CSV or the layout) are replaced by the CSV's non-empty
    cells. Rows that match no case are reported as a note, not an error: metadata tables
    often list more subjects than were segmented.
    """
    rows = read_csv_rows(meta_csv)
    if rows and "case" not in rows[0]:
        raise AutosegError(
            f"metadata CSV needs a 'case' column (found: {', '.join(rows[0])})",
            path=meta_csv,
            fix="write a header line 'case,subject,cohort'",
        )
    index: dict[str, int] = {}
    for i, c in enumerate(cases):
        index[c.case_id] = i
        index.setdefault(entry_stem(c.images[0]), i)
        index.setdefault(c.images[0].name, i)
    out = list(cases)
    unmatched = []
    for row in rows:
        key = row.get("case", "")
        i = index.get(key, index.get(sanitise_case_id(key)))
        if i is None:
            unmatched.append(key)
            continue
        out[i] = replace(
            out[i],
            subject=row.get("subject") or out[i].subject,
            cohort=row.get("cohort") or out[i].cohort,
        )
    notes = []
    if unmatched:
        notes.append(
            f"{meta_csv.name}: {len(unmatched)} row(s) match no case: {', '.join(unmatched[:5])}"
        )
    return out, notes


def compile_subject_pattern(text: str | re.Pattern[str]) -> re.Pattern[str]:
    """``--subject-pattern``: a regular expression whose first group (or whole match) is the
    subject id within a case id."""
    if isinstance(text, re.Pattern):
        return text
    try:
        return re.compile(text)
    except re.error as exc:
        raise AutosegError(
            f"--subject-pattern {text!r} is not a regular expression ({exc})",
            fix=r"write e.g. --subject-pattern '^(\d+)_' (subject 12 of frame 12_7.jpg)",
        ) from None


def subject_from_pattern(pattern: re.Pattern[str], case_id: str) -> str | None:
    """The first group of the pattern's first match in ``case_id`` (the whole match if the
    pattern has no group); None when it does not match or captures nothing."""
    m = pattern.search(case_id)
    if m is None:
        return None
    found = m.group(1) if pattern.groups else m.group(0)
    return found or None


def apply_subject_pattern(cases: list[SourceCase], pattern: re.Pattern[str]) -> list[SourceCase]:
    """Subjects from ``--subject-pattern`` for cases that no CSV gave one.

    Every training case must match: a frame that silently became its own subject would leak
    into another fold than its siblings. Test cases get a subject where the pattern matches.
    """
    out, missed = [], []
    for c in cases:
        if c.subject is not None:
            out.append(c)
            continue
        subject = subject_from_pattern(pattern, c.case_id)
        if subject is None and not c.test:
            missed.append(c)
        out.append(replace(c, subject=subject))
    if missed:
        first = missed[0]
        more = f" and {len(missed) - 1} more case(s)" if len(missed) > 1 else ""
        raise AutosegError(
            f"--subject-pattern '{pattern.pattern}' finds no subject in case "
            f"{first.case_id!r}{more}",
            path=first.images[0],
            fix="change the pattern so that its first group captures the subject in every case "
            r"name (e.g. '^(\d+)_' for 12_7), rename the file, or give its subject in "
            "cases.csv (case,subject)",
        )
    return out


# At least this share of training case names must look like <prefix>_<number> for the
# "frames without subjects" warning; the rest may be stray names.
FRAME_NAME_SHARE = 0.8
_FRAME_NAME = re.compile(r"^(.+)_(\d+)$")


def frame_names_hint(case_ids: list[str]) -> str | None:
    """A suggested ``--subject-pattern`` when the case names look like video frames of several
    subjects (``<subject>_<frame>``) and no subject ids were given; else None.

    Frames of one subject are near-duplicates; as separate subjects they land in different
    folds and inflate the validation Dice. The rule: at least FRAME_NAME_SHARE (80 %) of the
    names are ``<prefix>_<number>``, with at least 2 distinct prefixes and on average at
    least 2 names per prefix (brachial-plexus ultrasound: 1,130 frames of 30 subjects, 38
    each; the Kaggle nerve set 5,635 of 47; median-nerve ultrasound 151 of 53, 2.8 each).
    ``case_001 ... case_100`` (one prefix) and ``p01 ... p30`` (no frame number) get no hint.
    """
    matches = [m for m in (_FRAME_NAME.match(c) for c in case_ids) if m]
    if not case_ids or len(matches) < FRAME_NAME_SHARE * len(case_ids):
        return None
    prefixes = {m.group(1) for m in matches}
    if len(prefixes) < 2 or 2 * len(prefixes) > len(matches):
        return None
    return r"^(\d+)_" if all(p.isdigit() for p in prefixes) else r"^(.+)_\d+$"


# ---------------------------------------------------------------------------------------------
# Special layouts: Medical Segmentation Decathlon, Kaggle ultrasound nerve
# ---------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AutosegError(f"cannot parse JSON ({exc})", path=path, fix="repair the JSON") from exc
    if not isinstance(data, dict):
        raise AutosegError("expected a JSON object", path=path, fix="repair the JSON")
    return data


def is_msd(src: Path) -> bool:
    p = src / "dataset.json"
    if not p.is_file():
        return False
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and ("modality" in data or "training" in data)


def read_msd(src: Path) -> SourceLayout:
    """A Decathlon task: ``dataset.json`` (``modality``, ``labels`` {"0": "background"},
    ``training`` [{image, label}], ``test``), 3D or 4D ``imagesTr``, ``labelsTr``, ``imagesTs``.

    4D images (channels in the 4th dimension) are split into channel files when converted.
    """
    meta_path = src / "dataset.json"
    meta = read_json(meta_path)
    problems: list[str] = []
    cases: list[SourceCase] = []
    if isinstance(meta.get("training"), list):
        for entry in meta["training"]:
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) for k in ("image", "label")
            ):
                problems.append(f"training entry {entry!r} lacks 'image' or 'label'")
                continue
            image, label = src / entry["image"], src / entry["label"]
            for p in (image, label):
                if not p.is_file():
                    problems.append(f"{p} is listed in 'training' but does not exist")
            cases.append(SourceCase(sanitise_case_id(entry_stem(image)), (image,), label))
    else:
        found = pair_parallel(src / "imagesTr", src / "labelsTr")
        problems += found.problems
        cases += found.cases
    test_list = meta.get("test")
    if isinstance(test_list, list):
        for entry in test_list:
            image = src / str(entry.get("image", "") if isinstance(entry, dict) else entry)
            if not image.is_file():
                problems.append(f"{image} is listed in 'test' but does not exist")
            cases.append(SourceCase(sanitise_case_id(entry_stem(image)), (image,), test=True))
    elif (src / "imagesTs").is_dir():
        cases += pair_parallel(src / "imagesTs", None, test=True, group_channels=False).cases
    raise_problems(
        "Decathlon dataset is incomplete",
        problems,
        path=meta_path,
        fix="restore the missing files or correct dataset.json",
    )
    if not any(not c.test for c in cases):
        raise AutosegError(
            "Decathlon dataset has no training cases", path=meta_path, fix="check 'training'"
        )
    check_unique_ids(cases, path=meta_path)
    layout = SourceLayout(cases, "msd", info=_kept_info(meta))
    if isinstance(meta.get("modality"), dict):
        modality = meta["modality"]
        layout.channel_names = [str(modality[k]) for k in sorted(modality, key=_int_key)]
    if isinstance(meta.get("labels"), dict):
        layout.labels = _labels_from_value_names(meta["labels"], meta_path)
    return layout


def _int_key(k: str) -> int:
    try:
        return int(k)
    except ValueError:
        return 1 << 30


def _labels_from_value_names(labels: dict[str, Any], path: Path) -> dict[str, int]:
    """MSD's ``{"0": "background", "1": "edema"}`` -> ``{"background": 0, "edema": 1}``."""
    out: dict[str, int] = {}
    for value, name in sorted(labels.items(), key=lambda kv: _int_key(kv[0])):
        try:
            v = int(value)
        except ValueError:
            raise AutosegError(
                f"label key {value!r} is not an integer", path=path, fix="use keys '0', '1', ..."
            ) from None
        name = "background" if v == 0 else str(name)
        if name in out:  # two values with one name: keep both, distinguishable
            name = f"{name}_{v}"
        out[name] = v
    return out


def _kept_info(meta: dict[str, Any]) -> dict[str, Any]:
    info = {k: str(meta[k]) for k in ("description", "reference") if meta.get(k)}
    licence = meta.get("licence", meta.get("license"))
    if licence:
        info["licence"] = str(licence)
    return info


def kaggle_folder(src: Path) -> Path | None:
    """The folder with Kaggle's ``N_M.tif`` + ``N_M_mask.tif`` files (src or src/train)."""
    for folder in (src / "train", src):
        if not folder.is_dir():
            continue
        names = [p.name for p in folder.iterdir() if p.is_file() and _visible(p)]
        images = [n for n in names if split_extension(n)[1]]
        matches = [_KAGGLE_IMAGE.match(n) for n in images]
        if images and all(matches) and any(m.group(3) for m in matches if m):
            return folder
    return None


def is_kaggle(src: Path) -> bool:
    """Auto-detection wants the challenge's own ``train/`` folder (or its train_masks.csv):
    a user's folder that merely names files ``1_1.tif`` should not get Kaggle's defaults."""
    folder = kaggle_folder(src)
    return folder is not None and (folder.name == "train" or (src / "train_masks.csv").is_file())


def read_kaggle(src: Path) -> SourceLayout:
    """Kaggle ultrasound nerve segmentation: subject ``N`` of ``N_M.tif``, masks 0/255.

    Masks become 0/1 (label ``nerve``); the ``test/`` folder's unlabelled images go to
    imagesTs. Two thirds of Kaggle's masks are empty by design (no nerve visible), which is
    kept: empty masks are valid training cases.
    """
    folder = kaggle_folder(src)
    if folder is None:
        raise AutosegError(
            "not a Kaggle ultrasound nerve folder (expected N_M.tif and N_M_mask.tif)",
            path=src,
            fix="use --format folder, or point to the folder that holds train/",
        )
    found = pair_same_folder(folder)
    if folder != src and (src / "test").is_dir():
        _merge(found, pair_same_folder(src / "test", test=True))
    raise_problems(
        "cannot pair Kaggle images and masks",
        found.problems,
        path=folder,
        fix="restore the missing image or mask",
    )
    cases = []
    for c in found.cases:
        m = _KAGGLE_IMAGE.match(c.images[0].name)
        cases.append(replace(c, subject=m.group(1)) if m and not c.test else c)
    check_unique_ids(cases, path=src)
    return SourceLayout(
        cases,
        "kaggle-us",
        label_map={255: 1},
        label_names=["nerve"],
        channel_names=["US"],
        info={"reference": "Kaggle Ultrasound Nerve Segmentation challenge (2016)"},
    )


def normalise_dir(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()
