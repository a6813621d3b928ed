"""``autoseg convert DATASET --sparse-every K``: a sparsely labelled copy of a dataset.

For experiments on how many slices a lab can leave unlabelled (issue 17): every K-th slice
along each case's slice axis keeps its labels, every other slice becomes the ``ignore`` label
(nnU-Net v2's sparse annotation), which ``dataset.json`` then declares. Images are copied
unchanged. The slice axis of a 3D case is its thickest one (largest spacing; on a tie the
first in array order, i.e. z): that is the axis a human labels slice by slice. 2D data has no
slices to skip and is refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoseg.errors import AutosegError
from autoseg.io.atomic import atomic_path
from autoseg.io.dataset import IGNORE_NAME, DatasetJson, list_cases, list_test_cases
from autoseg.io.image import write_image
from autoseg.io.labels import read_label_map

SPARSE_KEY = "sparse_annotation"  # dataset.json: {"every": K, "source": "<dataset folder>"}


def slice_axis(spacing_zyx: Sequence[float]) -> int:
    """The axis a 3D volume is labelled slice by slice along: the largest spacing (the first
    such axis on a tie, so z for isotropic volumes)."""
    spacing = [float(s) for s in spacing_zyx]
    return spacing.index(max(spacing))


def sparsify(seg: np.ndarray, axis: int, every: int, ignore: int) -> np.ndarray:
    """Copy of a label map keeping slices 0, K, 2K, ... along ``axis``; the rest set to
    ``ignore``."""
    out = np.array(seg, copy=True)
    unlabelled = np.ones(seg.shape[axis], bool)
    unlabelled[::every] = False
    index = [slice(None)] * seg.ndim
    index[axis] = unlabelled
    out[tuple(index)] = ignore
    return out


def check_every(every: int) -> int:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise AutosegError(
            f"--sparse-every {every!r} must be a whole number >= 1",
            fix="e.g. --sparse-every 4 keeps every 4th slice labelled (1 keeps all)",
        )
    return every


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def make_sparse_dataset(
    source: str | os.PathLike,
    target: str | os.PathLike,
    every: int,
    *,
    overwrite: bool = False,
) -> tuple[Path, int]:
    """Write the sparse copy of the dataset folder ``source`` into the folder ``target``.

    Returns ``(target, ignore value)``. The ignore value is the source's own ``ignore`` label
    when it has one (its unlabelled voxels stay unlabelled), else the highest class value + 1.
    A non-empty ``target`` is refused unless ``overwrite``.
    """
    from autoseg.io.dataset import load_dataset_json

    every = check_every(every)
    src, dst = Path(source), Path(target)
    ds = load_dataset_json(src)
    cases = list_cases(src, ds)
    if not cases:
        raise AutosegError("the dataset has no training cases", path=src / "labelsTr")
    if src.resolve() == dst.resolve():
        raise AutosegError(
            "the sparse copy would overwrite its source", path=dst, fix="choose another --name"
        )
    first, geometry = read_label_map(cases[0].label)  # type: ignore[arg-type]
    if geometry.ndim == 2:
        raise AutosegError(
            "--sparse-every needs 3D volumes: 2D images have no slices to leave unlabelled",
            path=cases[0].label,
            fix="use a 3D dataset (the slice axis is each volume's thickest axis)",
        )
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise AutosegError(
                "dataset folder already exists",
                path=dst,
                fix="pass --overwrite to replace it, or choose another --name or --id",
            )
        shutil.rmtree(dst)
    ignore = ds.ignore_label
    if ignore is None:
        ignore = max(ds.class_labels.values()) + 1
    for case in cases:
        assert case.label is not None
        seg, geom = read_label_map(case.label)
        if geom.ndim != 3:
            raise AutosegError(
                "--sparse-every needs 3D volumes; this mask is 2D",
                path=case.label,
                fix="run 'autoseg verify' on the source: a dataset must be all 2D or all 3D",
            )
        axis = slice_axis(geom.spacing_zyx)
        dtype = np.uint8 if ignore <= 255 else np.uint16
        sparse = sparsify(seg.astype(dtype), axis, every, ignore)
        write_image(dst / "labelsTr" / case.label.name, sparse, geom)
        for image in case.images:
            _copy(image, dst / "imagesTr" / image.name)
    for case in list_test_cases(src, ds):
        for image in case.images:
            _copy(image, dst / "imagesTs" / image.name)
    labels = dict(ds.class_labels)
    labels[IGNORE_NAME] = ignore
    out = DatasetJson(
        channel_names=dict(ds.channel_names),
        labels=labels,
        num_training=len(cases),
        file_ending=ds.file_ending,
        name=ds.name,
        description=(f"{ds.description} " if ds.description else "")
        + f"Sparse copy of {src.name}: one slice in {every} labelled, the rest '{IGNORE_NAME}'.",
        licence=ds.licence,
        reference=ds.reference,
        cases=dict(ds.cases),
        extra={**ds.extra, SPARSE_KEY: {"every": every, "source": src.name}},
    )
    out.save(dst)
    return dst, ignore
