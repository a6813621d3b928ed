"""Access to preprocessed cases: memory-mapped arrays and cached foreground locations.

One folder ``<root>/preprocessed/<ds>/<data_identifier>/`` holds, per case, ``<case>.npy``
(float32, ``(C, Z, Y, X)``), ``<case>_seg.npy`` (uint8, ``(Z, Y, X)``) and
``<case>_locations.npz`` (one int32 ``(n, 3)`` array of ``(z, y, x)`` voxels per foreground label,
key ``str(label)``). 2D data is stored with ``Z = 1``.

The arrays are opened with ``np.load(mmap_mode="r")``: a 20x128x128 patch out of a 60x320x320
case then reads about 1/15 of the file instead of all of it, and worker processes forked by the
loader share the page cache instead of each holding a copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegError

IMAGE_SUFFIX = ".npy"
SEG_SUFFIX = "_seg.npy"
LOCATIONS_SUFFIX = "_locations.npz"
PROPERTIES_SUFFIX = ".json"
MANIFEST = "manifest.json"

_FIX_PREPROCESS = "run 'autoseg preprocess' for this dataset again (it resumes where it stopped)"


def list_preprocessed_cases(folder: str | os.PathLike) -> list[str]:
    """Case ids in a preprocessed folder: the manifest's list if there is one, else every
    ``<case>.npy`` that has a ``<case>_seg.npy`` next to it (sorted)."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            cases = json.loads(manifest.read_text(encoding="utf-8")).get("cases")
        except (OSError, ValueError) as exc:
            raise AutosegError(
                f"cannot read {MANIFEST}: {exc}", path=manifest, fix=_FIX_PREPROCESS
            ) from None
        if isinstance(cases, list) and cases:
            return [str(c) for c in cases]
    if not folder.is_dir():
        raise AutosegError("preprocessed folder does not exist", path=folder, fix=_FIX_PREPROCESS)
    ids = []
    for p in sorted(folder.glob(f"*{IMAGE_SUFFIX}")):
        if p.name.endswith(SEG_SUFFIX) or p.name.startswith("."):
            continue
        case = p.name[: -len(IMAGE_SUFFIX)]
        if (folder / f"{case}{SEG_SUFFIX}").is_file():
            ids.append(case)
    return ids


class CaseStore:
    """The preprocessed cases of one folder, opened lazily and cached per process.

    Holds state (open memory maps, loaded locations), hence a class. Picklable: the caches are
    dropped on pickling so that a ``spawn``-started worker reopens its own maps instead of
    receiving copies of the arrays.
    """

    def __init__(self, folder: str | os.PathLike, case_ids: list[str] | None = None):
        self.folder = Path(folder)
        ids = list_preprocessed_cases(self.folder) if case_ids is None else list(case_ids)
        if not ids:
            raise AutosegError(
                "no preprocessed cases to load", path=self.folder, fix=_FIX_PREPROCESS
            )
        missing = [
            c
            for c in ids
            if not (self.folder / f"{c}{IMAGE_SUFFIX}").is_file()
            or not (self.folder / f"{c}{SEG_SUFFIX}").is_file()
        ]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise AutosegError(
                f"{len(missing)} of {len(ids)} cases have no preprocessed arrays ({shown})",
                path=self.folder,
                fix=_FIX_PREPROCESS,
            )
        self.case_ids = ids
        self._images: dict[str, np.ndarray] = {}
        self._segs: dict[str, np.ndarray] = {}
        self._locations: dict[str, dict[int, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_images"], state["_segs"], state["_locations"] = {}, {}, {}
        return state

    def __len__(self) -> int:
        return len(self.case_ids)

    def image(self, case_id: str) -> np.ndarray:
        """``(C, Z, Y, X)`` float32, memory-mapped read-only."""
        arr = self._images.get(case_id)
        if arr is None:
            self._open(case_id)
            arr = self._images[case_id]
        return arr

    def seg(self, case_id: str) -> np.ndarray:
        """``(Z, Y, X)`` integer labels, memory-mapped read-only."""
        arr = self._segs.get(case_id)
        if arr is None:
            self._open(case_id)
            arr = self._segs[case_id]
        return arr

    def _open(self, case_id: str) -> None:
        img_path = self.folder / f"{case_id}{IMAGE_SUFFIX}"
        seg_path = self.folder / f"{case_id}{SEG_SUFFIX}"
        img = _load_mmap(img_path)
        seg = _load_mmap(seg_path)
        if img.ndim != 4:
            raise AutosegError(
                f"image array has shape {img.shape}; expected 4 axes (C, Z, Y, X)",
                path=img_path,
                fix=_FIX_PREPROCESS,
            )
        if seg.ndim != 3 or seg.shape != img.shape[1:]:
            raise AutosegError(
                f"segmentation shape {seg.shape} does not match image shape {img.shape[1:]}",
                path=seg_path,
                fix=_FIX_PREPROCESS,
            )
        if not np.issubdtype(seg.dtype, np.integer):
            raise AutosegError(
                f"segmentation has dtype {seg.dtype}; expected integers",
                path=seg_path,
                fix=_FIX_PREPROCESS,
            )
        self._images[case_id] = img
        self._segs[case_id] = seg

    def locations(self, case_id: str) -> dict[int, np.ndarray]:
        """Foreground voxel samples per label value, ``(n, 3)`` int arrays of ``(z, y, x)``.

        Loaded once per case and cached. Labels with no voxels are left out, so the keys are
        exactly the foreground labels present in the case. A missing file is read from the
        segmentation instead (slower, once), so that hand-made folders still work.
        """
        locs = self._locations.get(case_id)
        if locs is None:
            locs = self._load_locations(case_id)
            self._locations[case_id] = locs
        return locs

    def _load_locations(self, case_id: str) -> dict[int, np.ndarray]:
        path = self.folder / f"{case_id}{LOCATIONS_SUFFIX}"
        if not path.is_file():
            return locations_from_seg(np.asarray(self.seg(case_id)))
        try:
            with np.load(path) as npz:
                raw = {k: np.asarray(npz[k]) for k in npz.files}
        except (OSError, ValueError) as exc:
            raise AutosegError(
                f"cannot read foreground locations: {exc}", path=path, fix=_FIX_PREPROCESS
            ) from None
        out: dict[int, np.ndarray] = {}
        for key, arr in raw.items():
            try:
                label = int(key)
            except ValueError:
                continue  # not a label entry
            if arr.ndim != 2 or arr.shape[1] != 3:
                raise AutosegError(
                    f"locations for label {key} have shape {arr.shape}; expected (n, 3)",
                    path=path,
                    fix=_FIX_PREPROCESS,
                )
            if label != 0 and len(arr):
                out[label] = arr.astype(np.int64, copy=False)
        return out

    def properties(self, case_id: str) -> dict[str, Any]:
        """The case's ``<case>.json`` (empty dict when absent)."""
        path = self.folder / f"{case_id}{PROPERTIES_SUFFIX}"
        if not path.is_file():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))


def locations_from_seg(
    seg: np.ndarray, max_per_label: int = 10_000, seed: int = 1234
) -> dict[int, np.ndarray]:
    """Foreground voxel coordinates per label, at most ``max_per_label`` each (seeded subsample).

    10,000 samples per label are plenty for choosing patch centres (a 5 mm nerve over 40 slices
    has ~20,000 voxels at 0.5 mm in-plane) and keep the per-case file small.
    """
    rng = np.random.default_rng(seed)
    out: dict[int, np.ndarray] = {}
    for label in np.unique(seg):
        if label == 0:
            continue
        coords = np.argwhere(seg == label)
        if len(coords) > max_per_label:
            coords = coords[np.sort(rng.choice(len(coords), max_per_label, replace=False))]
        out[int(label)] = coords.astype(np.int64)
    return out


def _load_mmap(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AutosegError(f"cannot read array: {exc}", path=path, fix=_FIX_PREPROCESS) from None


def write_case_arrays(
    folder: str | os.PathLike, case_id: str, image: np.ndarray, seg: np.ndarray
) -> None:
    """Write one case in the preprocessed format (arrays and locations only, no properties).

    For tests, benchmarks and hand-made folders; ``autoseg preprocess`` writes the full set.
    ``image`` is ``(C, Z, Y, X)`` (or ``(Z, Y, X)`` for one channel), ``seg`` ``(Z, Y, X)``.
    """
    from autoseg.io.atomic import atomic_path

    folder = Path(folder)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[None]
    seg = np.asarray(seg).astype(np.uint8)
    if image.shape[1:] != seg.shape:
        raise ValueError(f"image {image.shape} and seg {seg.shape} differ")
    with atomic_path(folder / f"{case_id}{IMAGE_SUFFIX}") as tmp, open(tmp, "wb") as f:
        np.save(f, image)
    with atomic_path(folder / f"{case_id}{SEG_SUFFIX}") as tmp, open(tmp, "wb") as f:
        np.save(f, seg)
    locs = {str(k): v.astype(np.int32) for k, v in locations_from_seg(seg).items()}
    with atomic_path(folder / f"{case_id}{LOCATIONS_SUFFIX}") as tmp, open(tmp, "wb") as f:
        np.savez(f, **locs)
