"""Shared test helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread while the block runs. The test networks are tiny, and on a shared
    2-core machine two spin-waiting OpenMP threads ran 5-50x slower whenever another process
    held a core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    with one_torch_thread():
        yield


def tiny_us_dataset(root, dataset_id: int, n_cases: int):
    """``root/raw/<id>_TinyUS``: ``n_cases`` 2D frames (48 x 64, 0.1 mm) of noise with a small
    nerve label, written as NIfTI — the smallest dataset the planner accepts."""
    import numpy as np

    from autoseg.io import DatasetJson, Geometry, write_image

    folder = root / "raw" / f"{dataset_id:03d}_TinyUS"
    DatasetJson(
        channel_names={"0": "ultrasound"},
        labels={"background": 0, "nerve": 1},
        num_training=n_cases,
        file_ending=".nii.gz",
    ).save(folder)
    rng = np.random.default_rng(0)
    geom = Geometry.default((48, 64), (0.1, 0.1))
    for i in range(n_cases):
        image = rng.normal(100, 20, (48, 64)).astype(np.float32)
        label = np.zeros((48, 64), np.uint8)
        label[20:26, 30 + i : 38 + i] = 1
        write_image(folder / "imagesTr" / f"case{i}_0000.nii.gz", image, geom)
        write_image(folder / "labelsTr" / f"case{i}.nii.gz", label, geom)
    return folder


def planned_subject_dataset(root, dataset_id: int):
    """``root`` with a planned tiny 2D dataset (:func:`tiny_us_dataset`): 12 frames of 6
    subjects in two cohorts, ``2d`` shrunk to 2 epochs of 2 iterations on a 4-8 network — what
    the learning-curve and suggested-vs-random tests train on subsets of."""
    import pytest

    from autoseg.cli import main
    from autoseg.io import load_dataset_json

    folder = tiny_us_dataset(root, dataset_id, 12)
    ds = load_dataset_json(folder)
    ds.cases = {
        f"case{i}": {"subject": f"s{i // 2}", "cohort": "ab"[i // 2 % 2]} for i in range(12)
    }
    ds.save(folder)
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOSEG_ROOT", str(root))
    try:
        assert main(["plan", str(dataset_id), "--configs", "2d", "--brief"]) == 0
    finally:
        mp.undo()
    shrink_2d_plan(root / "preprocessed" / folder.name / "plans.json", epochs=2)
    return root


def shrink_2d_plan(plan_path, *, epochs: int, iterations_per_epoch: int = 2) -> None:
    """What a user may do by editing plans.json: the ``2d`` configuration as a two-stage
    4-8 network on 32 x 32 patches, batch 2, and a schedule of a few iterations."""
    import json

    plan = json.loads(plan_path.read_text())
    plan["configurations"]["2d"]["architecture"].update(
        features_per_stage=[4, 8],
        kernel_sizes=[[3, 3], [3, 3]],
        strides=[[1, 1], [2, 2]],
        n_blocks_per_stage=[1, 1],
        n_conv_per_stage_decoder=[1],
    )
    plan["configurations"]["2d"].update(patch_size=[32, 32], batch_size=2)
    plan["schedule"].update(epochs=epochs, iterations_per_epoch=iterations_per_epoch)
    plan_path.write_text(json.dumps(plan))


def trained_tiny_2d(root, dataset_id: int, n_cases: int, *, epochs: int):
    """``root`` with a :func:`tiny_us_dataset` planned (``2d`` shrunk by
    :func:`shrink_2d_plan`) and fold 0 trained on the CPU and validated: its raw folder."""
    import pytest

    from autoseg.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSEG_ROOT", str(root))
        raw = tiny_us_dataset(root, dataset_id, n_cases)
        assert main(["plan", str(dataset_id), "--configs", "2d", "--brief"]) == 0
        shrink_2d_plan(root / "preprocessed" / raw.name / "plans.json", epochs=epochs)
        with one_torch_thread():
            args = ["train", str(dataset_id), "2d", "0", "--workers", "0", "--device", "cpu"]
            assert main([*args, "--no-progress"]) == 0
    return raw
