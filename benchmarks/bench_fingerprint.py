"""Benchmark: autoseg's fingerprint extraction against nnU-Net v2's, same data, same cores.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_fingerprint.py                 # synthetic, 2 cores
    .venv/bin/python benchmarks/bench_fingerprint.py --dataset PATH  # an existing raw dataset

Without ``--dataset`` it writes a synthetic set shaped like thigh nerve MRI (20 volumes of
24 x 160 x 160 voxels at 3 x 0.75 x 0.75 mm, int16, one tube-shaped "nerve" label, black
padding bands). It times, median of ``--repeats`` runs after one warm-up run each:

* ``autoseg (API)``: :func:`autoseg.fingerprint.extract_fingerprint` in this process;
* ``autoseg (CLI)``: ``python -m autoseg fingerprint --overwrite --workers N``, a fresh
  interpreter as for nnU-Net, so that start-up and imports count on both sides;
* ``nnU-Net (CLI)``: ``nnUNetv2_extract_fingerprint -d ID -np N --clean`` on the dataset
  exported in nnU-Net's layout, if ``.venv-bench/bin/nnUNetv2_extract_fingerprint`` exists
  (``benchmarks/make_bench_venv.sh`` builds it); the ratio nnU-Net / autoseg (CLI) is the
  speed-up. The process is pinned to ``--cores`` CPUs (both systems inherit the pinning).

The two CLI runs are also sampled for peak memory (summed PSS of the process tree, as in
``bench_preprocess.py``). ``--json PATH`` (default ``benchmarks/results/fingerprint.json``)
writes the compared figures in the shape of ``benchmarks/results.py``: wall time (target
autoseg / nnU-Net <= 0.5, the issue's ">= 2x faster") and peak memory (no target).

``make_tube_dataset`` is also used by ``tests/test_fingerprint.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_preprocess import alternate  # noqa: E402
from results import Result, from_runs, write_results  # noqa: E402

from autoseg.io import DatasetJson, Geometry, load_dataset_json, write_image  # noqa: E402
from autoseg.paths import parse_dataset_folder  # noqa: E402

NNUNET_BIN = REPO / ".venv-bench" / "bin" / "nnUNetv2_extract_fingerprint"
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "fingerprint.json"
Runs = list[tuple[float, float, float]]  # (wall s, CPU s, peak MB) per timed run


def make_tube_dataset(
    dest: str | os.PathLike,
    *,
    n_cases: int = 20,
    shape: tuple[int, int, int] = (24, 160, 160),
    spacing: tuple[float, float, float] = (3.0, 0.75, 0.75),
    radius_mm: float = 3.0,
    pad: int = 5,
    seed: int = 0,
    file_ending: str = ".nii.gz",
) -> Path:
    """Write a raw dataset folder of tube-labelled volumes; returns ``dest``.

    Each case: noisy "muscle" (int16, ~300 +- 40) with a brighter tube (~550) of
    ``radius_mm`` that drifts smoothly across the field of view along z, and ``pad`` to
    ``pad + 3`` all-zero rows/columns at the borders (the black bands the crop removes).
    Label 1 = the tube. Deterministic for a given ``seed``.
    """
    dest = Path(dest)
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z = np.arange(nz)[:, None, None]
    yy = np.arange(ny)[None, :, None] * spacing[1]
    xx = np.arange(nx)[None, None, :] * spacing[2]
    geometry = Geometry.default(shape, spacing)
    for i in range(n_cases):
        cid = f"tube_{i:03d}"
        phase = rng.uniform(0, 2 * np.pi)
        cy = (0.5 + 0.15 * np.sin(phase + z * 0.15)) * ny * spacing[1]
        cx = (0.5 + 0.15 * np.cos(phase + z * 0.1)) * nx * spacing[2]
        tube = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius_mm**2
        image = rng.normal(300.0, 40.0, size=shape)
        image[tube] += 250.0
        image = np.clip(image, 1, None).astype(np.int16)
        top, left = (int(x) for x in rng.integers(pad, pad + 4, size=2))
        image[:, :top] = 0
        image[:, ny - pad :] = 0
        image[:, :, :left] = 0
        image[:, :, nx - pad :] = 0
        label = (tube & (image != 0)).astype(np.uint8)
        write_image(dest / "imagesTr" / f"{cid}_0000{file_ending}", image, geometry)
        write_image(dest / "labelsTr" / f"{cid}{file_ending}", label, geometry)
    DatasetJson(
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1},
        num_training=n_cases,
        file_ending=file_ending,
        name=dest.name,
        description="synthetic tube phantom for benchmarks and tests",
    ).save(dest)
    return dest


def time_median(fn: Callable[[], object], repeats: int, warmup: bool = True) -> list[float]:
    """Wall times of ``repeats`` calls after one untimed warm-up call (page cache, imports)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def fingerprint_results(ours: Runs, theirs: Runs, label: str) -> list[Result]:
    """The compared figures of the CLI runs ``(wall s, CPU s, peak MB)``: wall time (target
    ratio 0.5, the issue's ">= 2x faster") and peak memory (the largest of the timed runs, as
    printed; no target). An empty ``theirs`` (nnU-Net absent) leaves nnU-Net's side empty."""
    name = f"fingerprint, {label}"
    walls = ([w for w, _, _ in ours], [w for w, _, _ in theirs])
    peaks = ([m for _, _, m in ours], [m for _, _, m in theirs])
    wall = from_runs(name, "wall time", "s", *walls, "lower", 0.5)
    mem = from_runs(name, "peak memory", "MB", *peaks, "lower")
    mem = dataclasses.replace(
        mem, autoseg=max(peaks[0], default=None), nnunet=max(peaks[1], default=None)
    )
    return [wall, mem]


def export_nnunet(dataset_dir: Path, nnunet_raw: Path, dataset_id: int) -> Path:
    """nnU-Net v2 layout of ``dataset_dir`` under ``nnunet_raw`` (files symlinked)."""
    ds = load_dataset_json(dataset_dir)
    name = (parse_dataset_folder(dataset_dir.name) or (0, dataset_dir.name))[1]
    target = nnunet_raw / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr"):
        (target / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((dataset_dir / sub).iterdir()):
            link = target / sub / f.name
            if not link.exists():
                try:
                    link.symlink_to(f.resolve())
                except OSError:
                    shutil.copy2(f, link)
    ds.save(target, nnunet_only=True)
    return target


def pin_cores(n: int) -> str:
    """Restrict this process (and its children) to ``n`` CPUs; returns a description."""
    if not hasattr(os, "sched_setaffinity"):
        return "no CPU pinning on this OS"
    cpus = sorted(os.sched_getaffinity(0))
    if n < len(cpus):
        os.sched_setaffinity(0, cpus[:n])
    return f"pinned to CPUs {sorted(os.sched_getaffinity(0))}"


def _fmt(times: list[float]) -> str:
    return f"{statistics.median(times):7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)})"


def _write_json(path: Path, results: list[Result], notes: list[str]) -> None:
    """The shared result file (atomic), with nnU-Net's versions read from its venv."""
    out = write_results(path, "fingerprint", results, notes=notes, bench_python=BENCH_PYTHON)
    print(f"results: {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, help="raw dataset folder (default: synthetic)")
    parser.add_argument("--cases", type=int, default=20, help="synthetic cases")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(24, 160, 160), metavar=("Z", "Y", "X")
    )
    parser.add_argument("--workers", type=int, default=2, help="processes for both systems")
    parser.add_argument("--cores", type=int, default=2, help="CPUs to pin the benchmark to")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nnunet-bin", type=Path, default=NNUNET_BIN)
    parser.add_argument("--workdir", type=Path, help="keep synthetic data and outputs here")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help="write the compared figures here"
    )
    args = parser.parse_args(argv)

    from autoseg.fingerprint import extract_fingerprint

    pinned = pin_cores(args.cores)
    print(pinned)
    tmp = tempfile.TemporaryDirectory(prefix="bench_fp_") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.dataset is not None:
            dataset_dir = args.dataset.resolve()
        else:
            dataset_dir = work / "raw" / "900_BenchTube"
            if not (dataset_dir / "dataset.json").is_file():
                make_tube_dataset(dataset_dir, n_cases=args.cases, shape=tuple(args.shape))
        n = len(list((dataset_dir / "labelsTr").iterdir()))
        print(f"dataset: {dataset_dir} ({n} cases), workers={args.workers}")

        api = time_median(
            lambda: extract_fingerprint(dataset_dir, num_workers=args.workers, progress=False),
            args.repeats,
        )
        print(f"autoseg (API)  {_fmt(api)}")

        env = dict(os.environ, AUTOSEG_ROOT=str(work / "autoseg_root"))
        cmd = [sys.executable, "-m", "autoseg", "fingerprint", str(dataset_dir), "--overwrite"]
        cmd += ["--workers", str(args.workers)]
        ours_cmd = (cmd, dict(env, PYTHONPATH=str(REPO)))
        shape = "x".join(str(v) for v in args.shape)
        label = f"{n} x {shape}" if args.dataset is None else f"{dataset_dir.name} ({n} cases)"
        notes = [
            f"workers={args.workers} for both; {pinned}",
            f"autoseg (API, in-process, not compared) median {statistics.median(api):.2f} s",
            "alternating: one untimed warm-up run each, then rounds of one run per system, "
            "the order reversed every other round",
            "peak memory: summed PSS of the process tree sampled every 20 ms, largest of the "
            "timed runs (the warm-up excluded)",
        ]

        if not args.nnunet_bin.exists():
            print(
                f"nnU-Net: absent ({args.nnunet_bin} not found; build it with "
                "benchmarks/make_bench_venv.sh) - no comparison"
            )
            (ours,) = alternate([ours_cmd], args.repeats)
            print(f"autoseg (CLI)  {_fmt([wall for wall, _, _ in ours])}")
            results = fingerprint_results(ours, [], label)
            _write_json(args.json, results, [*notes, "nnU-Net absent: no comparison"])
            return 0
        dataset_id = (parse_dataset_folder(dataset_dir.name) or (900, ""))[0]
        nn_root = work / "nnunet"
        export_nnunet(dataset_dir, nn_root / "raw", dataset_id)
        nn_env = dict(
            os.environ,
            nnUNet_raw=str(nn_root / "raw"),
            nnUNet_preprocessed=str(nn_root / "preprocessed"),
            nnUNet_results=str(nn_root / "results"),
        )
        nn_cmd = [str(args.nnunet_bin), "-d", str(dataset_id), "-np", str(args.workers), "--clean"]
        ours, theirs = alternate([ours_cmd, (nn_cmd, nn_env)], args.repeats)
        cli = [wall for wall, _, _ in ours]
        print(f"autoseg (CLI)  {_fmt(cli)}")
        nn = [wall for wall, _, _ in theirs]
        print(f"nnU-Net (CLI)  {_fmt(nn)}")
        ratio = statistics.median(nn) / statistics.median(cli)
        print(f"speed-up nnU-Net / autoseg (CLI): {ratio:.2f}x (target >= 2x)")
        print(
            f"peak memory: autoseg (CLI) {max(m for _, _, m in ours):.0f} MB, "
            f"nnU-Net (CLI) {max(m for _, _, m in theirs):.0f} MB"
        )
        results = fingerprint_results(ours, theirs, label)
        _write_json(args.json, results, notes)
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
