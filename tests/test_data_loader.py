"""Loader: shapes and dtypes per configuration, seeding, plan mapping, case access errors and
clean shutdown of worker processes (no orphans after errors, Ctrl-C or a killed parent)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from autoseg.data import CaseStore, LoaderConfig, build_loader, list_preprocessed_cases
from autoseg.data.dataset import write_case_arrays
from autoseg.errors import AutosegError

REPO = Path(__file__).resolve().parents[1]


def _cases(folder: Path, n: int = 3, shape=(12, 48, 48), channels: int = 1) -> list[str]:
    rng = np.random.default_rng(0)
    ids = []
    for i in range(n):
        img = rng.normal(size=(channels, *shape)).astype(np.float32)
        seg = np.zeros(shape, np.uint8)
        z, y, x = shape
        seg[:, y // 3 : y // 3 + 6, x // 3 : x // 3 + 6] = 1
        seg[: max(1, z // 3), 1:4, -5:-2] = 2
        write_case_arrays(folder, f"case_{i:02d}", img, seg)
        ids.append(f"case_{i:02d}")
    return ids


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pre")
    _cases(folder, channels=2)
    return folder


CONFIGS = {
    "3d_fullres": (LoaderConfig(3, (8, 32, 32), 2, augmentation="mri"), (2, 2, 8, 32, 32)),
    "3d_aniso": (LoaderConfig(3, (8, 32, 32), 2, anisotropic=True), (2, 2, 8, 32, 32)),
    "2d": (LoaderConfig(2, (32, 40), 5, augmentation="ultrasound"), (5, 2, 32, 40)),
    "2.5d": (LoaderConfig(2, (32, 32), 3, slices=5), (3, 10, 32, 32)),
    "crop": (LoaderConfig(3, (8, 24, 24), 2, crop_window=(8, 24, 24)), (2, 2, 8, 24, 24)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shapes_and_dtypes(cases_dir, name):
    cfg, shape = CONFIGS[name]
    with build_loader(cases_dir, None, cfg, seed=0) as loader:
        b = next(loader)
    assert b["data"].shape == shape and b["data"].dtype == np.float32
    assert b["target"].shape == (shape[0], 1, *shape[2:]) and b["target"].dtype == np.uint8
    assert b["data"].flags["C_CONTIGUOUS"] and b["target"].flags["C_CONTIGUOUS"]
    assert len(b["keys"]) == shape[0] and set(b["keys"]) <= set(list_preprocessed_cases(cases_dir))
    assert set(np.unique(b["target"])) <= {0, 1, 2}
    assert np.isfinite(b["data"]).all()


def test_same_seed_same_batches_with_workers(cases_dir):
    cfg = LoaderConfig(2, (32, 32), 4, augmentation="mri")

    def first(n_workers, seed, count=3):
        with build_loader(cases_dir, None, cfg, num_workers=n_workers, seed=seed) as loader:
            return [next(loader) for _ in range(count)]

    single = first(0, 5)
    one_worker = first(1, 5)
    two_a, two_b = first(2, 5, 4), first(2, 5, 4)
    for a, b in zip(single, one_worker):  # worker 0 is seeded like the single process
        np.testing.assert_array_equal(a["data"], b["data"])
    for a, b in zip(two_a, two_b):
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["target"], b["target"])
        assert a["keys"] == b["keys"]
    np.testing.assert_array_equal(two_a[0]["data"], single[0]["data"])  # worker 0 first
    assert not np.array_equal(two_a[1]["data"], single[1]["data"])  # worker 1: own stream
    assert not np.array_equal(first(0, 6, 1)[0]["data"], single[0]["data"])
    assert multiprocessing.active_children() == []


def test_case_subset_and_missing_cases(tmp_path):
    ids = _cases(tmp_path, n=3, shape=(4, 16, 16))
    cfg = LoaderConfig(2, (16, 16), 16)
    with build_loader(tmp_path, ids[:1], cfg, seed=0) as loader:
        assert set(next(loader)["keys"]) == {ids[0]}
    with pytest.raises(AutosegError, match="no preprocessed arrays"):
        build_loader(tmp_path, ["nope"], cfg)
    with pytest.raises(AutosegError, match="does not exist"):
        build_loader(tmp_path / "missing", None, cfg)
    (tmp_path / "manifest.json").write_text(json.dumps({"cases": ids[1:]}))
    assert list_preprocessed_cases(tmp_path) == ids[1:]


def test_case_store_checks_and_caches(tmp_path):
    _cases(tmp_path, n=1, shape=(4, 16, 16))
    store = CaseStore(tmp_path)
    locs = store.locations("case_00")
    assert sorted(locs) == [1, 2] and locs[1].shape[1] == 3
    assert store.locations("case_00") is locs  # loaded once
    assert isinstance(store.image("case_00"), np.memmap)
    (tmp_path / "case_00_locations.npz").unlink()  # falls back to the segmentation
    fresh = CaseStore(tmp_path)
    assert sorted(fresh.locations("case_00")) == [1, 2]
    np.save(tmp_path / "case_00_seg.npy", np.zeros((4, 16, 15), np.uint8))
    with pytest.raises(AutosegError, match="does not match"):
        CaseStore(tmp_path).image("case_00")


def test_from_plan_reads_planner_fields():
    block = {
        "dim": 3,
        "spacing": [4.0, 0.5, 0.5],
        "median_shape": [40, 256, 256],
        "patch_size": [20, 128, 128],
        "batch_size": 2,
        "context_slices": 1,
        "augmentation": "3d_anisotropic",
        "oversample_foreground": 0.4,
        "architecture": {},
    }
    plan = {"fingerprint": {"modality": {"0": "mri"}}, "resampling": {"thick_axis": 0}}
    cfg = LoaderConfig.from_plan(block, plan=plan, name="3d_fullres", seed=3)
    assert cfg.dim == 3 and cfg.patch_size == (20, 128, 128) and cfg.batch_size == 2
    assert cfg.anisotropic and cfg.thick_axis == 0 and cfg.augmentation == "mri"
    assert cfg.oversample_foreground == 0.4 and cfg.seed == 3 and cfg.spacing == (4.0, 0.5, 0.5)
    two5 = {
        "dim": 2,
        "patch_size": [224, 288],
        "batch_size": 12,
        "context_slices": 3,
        "slice_axis": 0,
        "augmentation": "2.5d",
    }
    cfg2 = LoaderConfig.from_plan(two5, batch_size=4)
    assert cfg2.slices == 3 and cfg2.batch_size == 4 and cfg2.augmentation == "default"
    assert not cfg2.anisotropic
    crop = {
        "dim": 2,
        "patch_size": [128, 128],
        "batch_size": 8,
        "augmentation": "2d",
        "spacing": [0.1, 0.1],
        "crop": {"window_mm": [12.8, 12.8], "window_voxels": [128, 128]},
    }
    us = {"fingerprint": {"modality": {"0": "ultrasound"}}}
    cfg3 = LoaderConfig.from_plan(crop, plan=us)
    assert cfg3.crop_window == (128, 128) and cfg3.augmentation == "ultrasound"
    assert LoaderConfig.from_plan({**crop, "modality": "other"}).augmentation == "other"
    assert LoaderConfig.from_plan({**crop, "modality": {"0": "mri"}}).augmentation == "mri"
    with pytest.raises(TypeError):
        LoaderConfig.from_plan(block, batchsize=3)
    with pytest.raises(AutosegError, match="odd"):
        LoaderConfig.from_plan({**two5, "context_slices": 2})
    with pytest.raises(AutosegError, match="patch_size"):
        LoaderConfig(3, (8, 8), 2)
    with pytest.raises(AutosegError, match="fraction"):
        LoaderConfig(2, (8, 8), 2, oversample_foreground=1.5)


# --------------------------------------------------------------------------- shutdown
def _wait_no_children(timeout: float = 10.0) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = multiprocessing.active_children()
        if not alive:
            return []
        time.sleep(0.1)
    return multiprocessing.active_children()


def _alive(pid: int) -> bool:
    """Running and not a zombie (a reparented zombie may wait for a busy init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_exception_in_with_block_stops_workers(cases_dir):
    cfg = LoaderConfig(2, (32, 32), 2)
    with (
        pytest.raises(ValueError, match="boom"),
        build_loader(cases_dir, None, cfg, num_workers=2, seed=0) as loader,
    ):
        next(loader)
        assert len(multiprocessing.active_children()) == 2
        raise ValueError("boom")
    assert _wait_no_children() == []
    with pytest.raises(StopIteration):
        next(loader)  # closed for good
    loader.close()  # idempotent


def test_error_in_worker_is_raised_in_main_and_workers_stop(tmp_path):
    _cases(tmp_path, n=1, shape=(4, 16, 16))
    np.save(tmp_path / "case_00_seg.npy", np.zeros((4, 16, 15), np.uint8))  # corrupt
    cfg = LoaderConfig(2, (16, 16), 2)
    loader = build_loader(tmp_path, None, cfg, num_workers=2, seed=0)
    with pytest.raises(AutosegError, match="does not match"):
        next(loader)
    assert _wait_no_children() == []


_SCRIPT = textwrap.dedent(
    """
    import json, sys, multiprocessing, signal
    # a terminal job handles Ctrl-C; a job started in the background by a non-interactive
    # shell (e.g. `make test &`) inherits SIGINT ignored, which would test the shell, not us
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from autoseg.data import LoaderConfig, build_loader
    cfg = LoaderConfig(2, (32, 32), 2)
    loader = build_loader(sys.argv[1], None, cfg, num_workers=2, seed=0)
    next(loader)
    print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
    try:
        with loader:
            while True:
                next(loader)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    """
)


def _start_script(cases_dir: Path) -> tuple[subprocess.Popen, list[int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(cases_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        start_new_session=True,  # own process group, like a terminal job
    )
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    pids = json.loads(line)
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    return proc, pids


def test_ctrl_c_stops_workers(cases_dir):
    proc, pids = _start_script(cases_dir)
    try:
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the job
        out, err = proc.communicate(timeout=30)
    finally:  # a failed run leaves no loader running behind the suite
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130 and "interrupted" in out, err
    assert _wait_dead(pids) == []


def test_killed_parent_leaves_no_orphans(cases_dir):
    proc, pids = _start_script(cases_dir)
    proc.kill()  # SIGKILL: no chance to clean up; the kernel signals the workers
    proc.communicate(timeout=30)
    assert _wait_dead(pids) == []


# --------------------------------------------------------------------------- shared memory
def _batches(folder, cfg, n_workers, count, seed=3):
    with build_loader(folder, None, cfg, num_workers=n_workers, seed=seed) as loader:
        if n_workers and multiprocessing.get_start_method() == "fork":
            assert loader._shared is not None  # batches travel through shared memory
        return [next(loader) for _ in range(count)]


@pytest.mark.parametrize(
    "cfg",
    [
        LoaderConfig(2, (32, 32), 3, slices=3, augmentation="ultrasound"),
        LoaderConfig(3, (16, 16, 6), 2, anisotropic=True, thick_axis=2, augmentation="mri"),
    ],
    ids=["2.5d", "3d-thick-last"],
)
def test_worker_batches_survive_buffer_reuse(cases_dir, cfg):
    """Batches come through a few reused shared buffers; the ones the caller keeps must stay
    what they were (12 batches > the 4 buffers a worker has), equal to the in-process ones."""
    single = _batches(cases_dir, cfg, 0, 12)
    worker = _batches(cases_dir, cfg, 1, 12)
    for a, b in zip(single, worker):
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["target"], b["target"])
        assert a["keys"] == b["keys"]
        assert b["data"].flags["C_CONTIGUOUS"] and b["data"].flags["OWNDATA"]
    assert _wait_no_children() == []


def test_close_is_quick_while_workers_wait_for_buffers(cases_dir):
    cfg = LoaderConfig(2, (32, 32), 2)
    loader = build_loader(cases_dir, None, cfg, num_workers=2, seed=0)
    next(loader)
    time.sleep(1.0)  # the workers fill every free buffer and wait for the main process
    t0 = time.perf_counter()
    loader.close()
    assert time.perf_counter() - t0 < 3.0
    assert _wait_no_children() == []


def test_pickled_batches_without_fork(cases_dir, monkeypatch):
    """With another start method, workers cannot inherit the buffers: batches are pickled."""
    from autoseg.data import loader as loader_module

    monkeypatch.setattr(loader_module.multiprocessing, "get_start_method", lambda **_: "spawn")
    cfg = LoaderConfig(2, (32, 32), 2)
    with build_loader(cases_dir, None, cfg, num_workers=1, seed=0) as loader:
        assert loader._shared is None
        batch = next(loader)
    np.testing.assert_array_equal(batch["data"], _batches(cases_dir, cfg, 0, 1, seed=0)[0]["data"])


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "plans").glob("*.plans.json")),
    ids=lambda p: p.name.split(".")[0],
)
def test_the_typed_plan_gives_the_loader_what_the_plan_file_says(path):
    """Training reads the typed plan (from_configuration); a hand-written block of the same
    file read as a dict (from_plan) gives the same loader, for every golden configuration."""
    from autoseg.planning.plan import Plan

    data = json.loads(path.read_text())
    plan = Plan.from_dict(data)
    for name, block in data["configurations"].items():
        typed = LoaderConfig.from_configuration(plan, name, seed=4)
        as_dict = LoaderConfig.from_plan(
            {
                **block,
                "modality": data["fingerprint"]["modality"],
                "thick_axis": data["resampling"]["thick_axis"],
            },
            name=name,
            seed=4,
        )
        assert typed == as_dict, name
        assert typed.patch_size == tuple(block["patch_size"])
        assert typed.slices == block["context_slices"]
