"""Benchmark: autoseg's fingerprint extraction against nnU-Net v2's, same data, same cores.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_fingerprint                      # all default sets
    .venv/bin/python -m benchmarks.bench_fingerprint --dataset synthetic  # the tube set only
    .venv/bin/python -m benchmarks.bench_fingerprint --dataset PATH       # a raw NNN_Name folder

``--dataset`` (default ``synthetic usgra_seg brats2015_subset``) names the datasets, measured
one after another into one result file: ``synthetic`` is a set written here, shaped like thigh
nerve MRI (20 volumes of 24 x 160 x 160 voxels at 3 x 0.75 x 0.75 mm, int16, one tube-shaped
"nerve" label, black padding bands); ``usgra_seg`` (204 ultrasound frames), ``brats2015_subset``
(6 volumes of 240 x 240 x 155, two channels) and the phantoms ``phantom_mri3d`` /
``phantom_us2d`` are converted once by ``benchmarks/accuracy_cv.py`` (a real one is skipped,
and said so, when ``../shared/data`` lacks it); anything else is a raw dataset folder. For
each it times, median of ``--repeats`` runs after one warm-up run each:

* ``autoseg (API)``: :func:`autoseg.fingerprint.extract_fingerprint` in this process;
* ``autoseg (CLI)``: ``python -m autoseg fingerprint --overwrite --workers N``, a fresh
  interpreter as for nnU-Net, so that start-up and imports count on both sides;
* ``nnU-Net (CLI)``: ``nnUNetv2_extract_fingerprint -d ID -np N --clean`` on autoseg's
  nnU-Net export of the same files (:func:`autoseg.io.nnunet.export_nnunet`), if
  ``.venv-bench/bin/nnUNetv2_extract_fingerprint`` exists (``benchmarks/make_bench_venv.sh``
  builds it); the ratio nnU-Net / autoseg (CLI) is the speed-up. The process is pinned to
  ``--cores`` CPUs (both systems inherit the pinning).

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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from autoseg.io import DatasetJson, Geometry, write_image
from benchmarks.bench_preprocess import alternate, nnunet_absent
from benchmarks.results import REPO, Result, checkout_env, from_runs, write_results

NNUNET_BIN = REPO / ".venv-bench" / "bin" / "nnUNetv2_extract_fingerprint"
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "fingerprint.json"
Runs = list[tuple[float, float, float]]  # (wall s, CPU s, peak MB) per timed run
# "synthetic": the tube set made here; the others: benchmarks/accuracy_cv.py's real datasets.
DEFAULT_DATASETS = ("synthetic", "usgra_seg", "brats2015_subset")


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


def dataset_for(choice: str, args: argparse.Namespace, work: Path) -> Path | None:
    """The raw folder of one ``--dataset`` value (generated or converted once under ``work``);
    ``None`` when a real dataset's shared data is absent."""
    from benchmarks.accuracy_cv import DATASETS, converted

    if choice == "synthetic":
        dataset_dir = work / "raw" / "900_BenchTube"
        if not (dataset_dir / "dataset.json").is_file():
            make_tube_dataset(dataset_dir, n_cases=args.cases, shape=tuple(args.shape))
        return dataset_dir
    if choice in DATASETS:
        return converted(choice, work / choice / "autoseg_root")
    return Path(choice).expanduser().resolve()


def bench_dataset(
    choice: str, dataset_dir: Path, args: argparse.Namespace, work: Path
) -> tuple[list[Result], str]:
    """Both systems' fingerprint CLI on one raw folder, alternating; the compared figures and
    a note with autoseg's in-process (API) time."""
    from autoseg.fingerprint import extract_fingerprint
    from autoseg.io.nnunet import export_nnunet

    n = len(list((dataset_dir / "labelsTr").iterdir()))
    print(f"\ndataset: {dataset_dir} ({n} cases), workers={args.workers}")
    api = time_median(
        lambda: extract_fingerprint(dataset_dir, num_workers=args.workers, progress=False),
        args.repeats,
    )
    print(f"autoseg (API)  {_fmt(api)}")
    label = dataset_dir.name
    if choice == "synthetic":
        label = f"{n} x {'x'.join(str(v) for v in args.shape)}"
    elif choice != str(dataset_dir):
        label = f"{choice} ({n} cases)"
    note = f"{label}: autoseg (API, in-process, not compared) median {statistics.median(api):.2f} s"
    env = checkout_env(dict(os.environ, AUTOSEG_ROOT=str(work / "autoseg_root")))
    cmd = [sys.executable, "-m", "autoseg", "fingerprint", str(dataset_dir), "--overwrite"]
    ours_cmd = ([*cmd, "--workers", str(args.workers)], env)
    if nnunet_absent(args.nnunet_bin):
        (ours,) = alternate([ours_cmd], args.repeats)
        print(f"autoseg (CLI)  {_fmt([wall for wall, _, _ in ours])}")
        return fingerprint_results(ours, [], label), note
    nn_root = work / "nnunet"  # autoseg's nnU-Net export of the same files
    nn_folder = export_nnunet(dataset_dir, nn_root / "raw", overwrite=True, progress=False)
    nn_id = nn_folder.name[len("Dataset") :].split("_")[0]
    nn_env = dict(
        os.environ,
        nnUNet_raw=str(nn_root / "raw"),
        nnUNet_preprocessed=str(nn_root / "preprocessed"),
        nnUNet_results=str(nn_root / "results"),
    )
    nn_cmd = [str(args.nnunet_bin), "-d", nn_id, "-np", str(args.workers), "--clean"]
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
    return fingerprint_results(ours, theirs, label), note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=list(DEFAULT_DATASETS),
        help="synthetic (the tube set, --cases, --shape), an accuracy-benchmark dataset "
        "(phantom_mri3d, phantom_us2d, usgra_seg, brats2015_subset; skipped when its shared "
        "data is absent) or a raw dataset folder named NNN_Name",
    )
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

    pinned = pin_cores(args.cores)
    print(pinned)
    tmp = tempfile.TemporaryDirectory(prefix="bench_fp_") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    notes = [
        f"workers={args.workers} for both; {pinned}",
        "alternating: one untimed warm-up run each, then rounds of one run per system, "
        "the order reversed every other round",
        "peak memory: summed PSS of the process tree sampled every 20 ms, largest of the "
        "timed runs (the warm-up excluded)",
    ]
    try:
        results, skipped = [], []
        for choice in dict.fromkeys(args.dataset):  # each once, in the order given
            dataset_dir = dataset_for(choice, args, work)
            if dataset_dir is None:
                skipped.append(choice)
                continue
            figures, note = bench_dataset(choice, dataset_dir, args, work)
            results += figures
            notes.append(note)
        if skipped:
            notes.append(f"skipped, shared data absent: {', '.join(skipped)}")
        if not args.nnunet_bin.exists():
            notes.append("nnU-Net absent: no comparison")
        if results:
            _write_json(args.json, results, notes)
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
