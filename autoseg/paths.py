"""Where autoseg keeps its files: one data root, three folders below it.

``AUTOSEG_ROOT`` (default ``./autoseg_data``) is the only environment variable autoseg reads::

    <root>/raw/<NNN>_<Name>/            imagesTr/, labelsTr/, imagesTs/, dataset.json
    <root>/preprocessed/<NNN>_<Name>/   fingerprint.json, plans.json, <config>/...
    <root>/results/<NNN>_<Name>/        <config>/fold_<k>/..., inference.json
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from autoseg.errors import AutosegError
from autoseg.root import DEFAULT_ROOT, ROOT_ENV, data_root

__all__ = ["DEFAULT_ROOT", "ROOT_ENV", "data_root"]  # the root's rule lives in autoseg.root

# Our folder names are "012_Nerves"; nnU-Net v2's are "Dataset012_Nerves". Both are accepted.
_DATASET_DIR = re.compile(r"^(?:Dataset)?(\d{1,4})_(.+)$")


def raw_dir(root: str | os.PathLike | None = None) -> Path:
    return data_root(root) / "raw"


def preprocessed_dir(root: str | os.PathLike | None = None) -> Path:
    return data_root(root) / "preprocessed"


def results_dir(root: str | os.PathLike | None = None) -> Path:
    return data_root(root) / "results"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``012_Nerves``: three-digit id, underscore, name (letters, digits, '-' and '_')."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", name):
        raise AutosegError(
            f"dataset name {name!r} may hold only letters, digits, '-' and '_'",
            fix="choose a name such as SciaticMRI or Median_US",
        )
    if not 0 <= dataset_id <= 9999:
        raise AutosegError(f"dataset id {dataset_id} is out of range", fix="use 0-9999")
    return f"{dataset_id:03d}_{name}"


def parse_dataset_folder(name: str) -> tuple[int, str] | None:
    """(id, name) from ``012_Nerves`` or ``Dataset012_Nerves``; None for other names."""
    m = _DATASET_DIR.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def resolve_dataset(spec: str | int | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Find a raw dataset folder from an id (``12``), a folder name (``012_Nerves``), a bare
    name (``Nerves``) or a path.

    A path wins when it exists and holds a ``dataset.json``; otherwise the spec is looked up
    among the folders of ``<root>/raw``.
    """
    as_path = Path(str(spec))
    if (as_path / "dataset.json").is_file():
        return as_path
    base = raw_dir(root)
    candidates = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    text = str(spec)
    matches: list[Path] = []
    if text.isdigit():
        matches = [p for p in candidates if (parse_dataset_folder(p.name) or (-1,))[0] == int(text)]
    else:
        matches = [p for p in candidates if p.name == text]
        if not matches:
            parsed = parse_dataset_folder(text)
            if parsed is not None:
                matches = [p for p in candidates if parse_dataset_folder(p.name) == parsed]
            else:  # a bare name: "Nerves" -> 012_Nerves
                matches = [p for p in candidates if (parse_dataset_folder(p.name) or ("",))[-1]
                           == text]  # fmt: skip
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(p.name for p in candidates) or "none"
    if len(matches) > 1:
        raise AutosegError(
            f"dataset {text!r} is ambiguous: {', '.join(m.name for m in matches)}",
            fix="name the folder in full or give its path",
        )
    raise AutosegError(
        f"no dataset {text!r} under {base} (datasets there: {known})",
        fix="give a dataset id, a folder name under $AUTOSEG_ROOT/raw, or a path that holds "
        "dataset.json; run 'autoseg convert' first to create one",
    )


def dataset_name(raw_dataset_dir: str | os.PathLike) -> str:
    """The folder name that names a dataset under preprocessed/ and results/."""
    return Path(raw_dataset_dir).name
