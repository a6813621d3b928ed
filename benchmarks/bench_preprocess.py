"""Benchmark: autoseg's preprocessing against nnU-Net v2's, same data, same cores.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_preprocess                  # 20 phantoms, 2 cores
    .venv/bin/python -m benchmarks.bench_preprocess --vary-spacing   # force resampling
    .venv/bin/python -m benchmarks.bench_preprocess --resampling     # backends only
    .venv/bin/python -m benchmarks.bench_preprocess --cases 4 --shape 12 64 64 --repeats 1 \
        --workers 1 --no-resampling                                  # smoke run

The dataset is the 3D thigh-MRI nerve phantom (:mod:`autoseg.phantoms`): 20 volumes of
24 x 160 x 160 voxels at 3 x 0.75 x 0.75 mm, int16, zero air outside the thigh. With
``--vary-spacing`` case ``i`` is stored at (3 + 0.1 (i mod 5)) x (0.7 + 0.02 (i mod 6)) mm in
plane, so every case is resampled to the median spacing (the phantom's own spacing is uniform,
which makes resampling a no-op for both systems).

Each system runs in a fresh interpreter (start-up and imports count on both sides), median of
``--repeats`` runs after one warm-up; peak memory is the largest sum of proportional set sizes
(PSS: resident memory, shared pages split between the processes sharing them) over the process
tree, sampled every 20 ms (workers included):

* ``preprocess`` — ``autoseg``: :func:`autoseg.preprocessing.preprocess_dataset` with
  ``overwrite=True`` on a plan made with the planner's rules (target spacing, normalization,
  resampling orders); ``nnU-Net``: ``nnUNetv2_preprocess -d ID -c 3d_fullres -np N`` after an
  untimed fingerprint and plan;
* ``fingerprint + plan + preprocess`` (the issue's first figure, the whole first stage) —
  ``autoseg``: ``run_fingerprint(overwrite=True)``, ``run_plan`` (its memory rules for the CPU,
  no time budget) and ``preprocess_dataset`` in one process, as ``plan-and-train`` runs them;
  ``nnU-Net``: ``nnUNetv2_plan_and_preprocess -d ID -c CONFIG -np N -npfp N --clean``.

nnU-Net runs if ``.venv-bench/bin/nnUNetv2_plan_and_preprocess`` exists
(``benchmarks/make_bench_venv.sh`` builds it); the ratio nnU-Net / autoseg is the speed-up.

``--dataset NAME ...`` (default ``thigh usgra_seg brats2015_subset``) picks the datasets, one
after another: ``thigh`` is the phantom set above; ``usgra_seg`` (204 ultrasound frames, 2D),
``brats2015_subset`` (6 volumes of 240 x 240 x 155, two channels), ``phantom_mri3d`` and
``phantom_us2d`` are the accuracy benchmark's datasets, converted once under ``--workdir`` by
``benchmarks/accuracy_cv.py`` (a real one is skipped, and said so, when ``../shared/data``
lacks it). Each system plans those with its own planner (untimed) and both preprocess the
configuration nnU-Net trains by default there (``2d`` for 2D data, ``3d_fullres`` for 3D),
nnU-Net from autoseg's nnU-Net export of the same files.

``--resampling`` times the resampling backends on one volume: autoseg's separable matrices,
3D ``scipy.ndimage.zoom`` and SimpleITK's B-spline resampler.

``--json PATH`` (default ``benchmarks/results/preprocess.json``, ``preprocess_varied.json``
with ``--vary-spacing``) writes the compared figures of every dataset in the shape of
``benchmarks/results.py``: wall time (target autoseg / nnU-Net <= 0.5, the issue's ">= 2x
faster"), CPU time and peak memory (no target).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from autoseg.io import DatasetJson, Geometry, write_image
from benchmarks.results import (
    DEFAULT_NNUNET_CONFIG,
    REPO,
    Result,
    checkout_env,
    from_runs,
    run_measured,
    write_results,
)

NNUNET_BIN = REPO / ".venv-bench" / "bin" / "nnUNetv2_plan_and_preprocess"
DATASET_ID = 951
DATASET = f"Dataset{DATASET_ID}_BenchThigh"  # accepted by autoseg and nnU-Net alike
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
RESULTS_DIR = REPO / "benchmarks" / "results"
Runs = list[tuple[float, float, float]]  # (wall s, CPU s, peak MB) per timed run
# "thigh": the phantoms generated here; the others: benchmarks/accuracy_cv.py's datasets.
DATASET_CHOICES = ("thigh", "phantom_mri3d", "phantom_us2d", "usgra_seg", "brats2015_subset")
DEFAULT_DATASETS = ("thigh", "usgra_seg", "brats2015_subset")


def make_dataset(raw: Path, n_cases: int, shape, vary_spacing: bool) -> Path:
    """Phantom volumes in the standard layout (shared by both systems); returns the folder."""
    from autoseg.phantoms import Mri3dConfig, make_case

    dest = raw / DATASET
    if (dest / "dataset.json").is_file():
        return dest
    cfg = Mri3dConfig(shape=tuple(shape))
    for i in range(n_cases):
        case = make_case("mri3d", i, seed=0, config=cfg)
        geo = case.geometry
        if vary_spacing:
            spacing_zyx = (3.0 + 0.1 * (i % 5), 0.7 + 0.02 * (i % 6), 0.7 + 0.02 * (i % 6))
            geo = Geometry(tuple(reversed(spacing_zyx)), geo.origin, geo.direction, geo.size)
        write_image(dest / "imagesTr" / f"{case.case_id}_0000.nii.gz", case.image, geo)
        write_image(dest / "labelsTr" / f"{case.case_id}.nii.gz", case.mask, geo)
    DatasetJson(
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1},
        num_training=n_cases,
        file_ending=".nii.gz",
    ).save(dest)
    return dest


def write_plan(root: Path, dataset_dir: Path) -> None:
    """plans.json for 3d_fullres from the planner's rules (fingerprint numbers read here)."""
    from autoseg.io import list_cases, read_image
    from autoseg.planning.normalization import channel_normalization
    from autoseg.planning.plan import (
        ConfigurationPlan,
        DeviceInfo,
        FingerprintSummary,
        Plan,
        Schedule,
        save_plan,
    )
    from autoseg.planning.spacing import resampling_rule, target_spacing
    from autoseg.planning.topology import architecture_block, fit_topology

    spacings, shapes = [], []
    for case in list_cases(dataset_dir):
        img = read_image(case.images[0])
        spacings.append(img.geometry.spacing_zyx)
        shapes.append(img.array.shape)
    target, _ = target_spacing(spacings, shapes)
    median = [float(v) for v in np.median(spacings, axis=0)]
    resampling, _ = resampling_rule(target, median)
    norm, _ = channel_normalization("mri", None, 0.9)
    patch, topo = fit_topology(target, (24, 128, 128))
    arch = architecture_block(topo, network="unet", in_channels=1, num_classes=2)
    plan = Plan(
        dataset=dataset_dir.name,
        created_by="bench_preprocess",
        created_at="2025-01-01T00:00:00",
        fingerprint=FingerprintSummary(
            sha256="0" * 64,
            dim=3,
            n_cases=len(spacings),
            modality={"0": "mri"},
            spacing_median=median,
            shape_after_crop_median=[int(v) for v in np.median(shapes, axis=0)],
            anisotropy_ratio=max(median) / min(median),
            foreground_fraction_median=0.002,
            foreground_extent_p95_mm=None,
            cases_without_foreground=0,
        ),
        device=DeviceInfo(type="cpu", name=None, gpu_memory_gb=8.0, source="default"),
        channel_names={"0": "T2"},
        labels={"background": 0, "nerve": 1},
        normalization={"0": norm},
        target_spacing=list(target),
        resampling=resampling,
        configurations={
            "3d_fullres": ConfigurationPlan(
                dim=3,
                spacing=list(target),
                median_shape=list(patch),
                patch_size=list(patch),
                batch_size=2,
                architecture=arch,
            )
        },
        schedule=Schedule(),
    )
    save_plan(plan, root / "preprocessed" / dataset_dir.name / "plans.json")


def nnunet_absent(nnunet_bin: Path) -> bool:
    """Whether nnU-Net's command is missing (then only autoseg is timed), said on the console."""
    if nnunet_bin.exists():
        return False
    print(
        f"nnU-Net: absent ({nnunet_bin} not found; build it with "
        "benchmarks/make_bench_venv.sh) - no comparison"
    )
    return True


def alternate(
    commands: list[tuple[list[str], dict[str, str]]], repeats: int
) -> list[list[tuple[float, float, float]]]:
    """Each command once untimed (page cache, bytecode), then ``repeats`` rounds in which every
    command runs once, the order reversed every other round: other work on the machine then
    slows both systems alike, and neither always runs right after the other. One list of
    measurements per command."""
    for cmd, env in commands:
        run_measured(cmd, env)
    runs: list[list[tuple[float, float, float]]] = [[] for _ in commands]
    for r in range(repeats):
        order = list(range(len(commands)))
        if r % 2:
            order.reverse()
        for i in order:
            runs[i].append(run_measured(*commands[i]))
    return runs


def _fmt(runs: list[tuple[float, float, float]]) -> str:
    walls = [w for w, _, _ in runs]
    cpu = statistics.median(c for _, c, _ in runs)
    peak = max(m for _, _, m in runs)
    return (
        f"wall {statistics.median(walls):6.2f} s (runs {', '.join(f'{w:.2f}' for w in walls)}), "
        f"CPU {cpu:6.2f} s, peak memory {peak:.0f} MB"
    )


def bench_resampling(shape=(24, 160, 160), factor=(1.25, 1.25, 1.25), repeats=5) -> None:
    """Order-3 3D resampling of one float32 volume with each backend, best of ``repeats``."""
    import scipy.ndimage as ndi
    import SimpleITK as sitk

    from autoseg.preprocessing.resampling import resample_array

    rng = np.random.default_rng(0)
    vol = ndi.gaussian_filter(rng.random(shape), 2).astype(np.float32)
    out = tuple(int(round(n * f)) for n, f in zip(shape, factor))

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    def itk() -> np.ndarray:
        r = sitk.ResampleImageFilter()
        r.SetSize(out[::-1])
        r.SetOutputSpacing([i / o for i, o in zip(shape[::-1], out[::-1])])
        r.SetOutputOrigin([-0.5 + 0.5 * i / o for i, o in zip(shape[::-1], out[::-1])])
        r.SetInterpolator(sitk.sitkBSpline)
        return sitk.GetArrayFromImage(r.Execute(sitk.GetImageFromArray(vol)))

    zoom = [o / i for o, i in zip(out, shape)]
    ours = best(lambda: resample_array(vol, out, (3, 3, 3)))
    sci = best(lambda: ndi.zoom(vol, zoom, order=3, mode="nearest", grid_mode=True))
    itk_t = best(itk)
    diff = np.abs(
        resample_array(vol, out, (3, 3, 3))
        - ndi.zoom(vol, zoom, order=3, mode="nearest", grid_mode=True)
    ).max()
    print(f"resampling {shape} -> {out}, order 3, {os.cpu_count()} CPUs:")
    print(f"  autoseg separable matrices  {1000 * ours:8.1f} ms  (max |diff| to scipy {diff:.1e})")
    print(f"  scipy.ndimage.zoom (3D)     {1000 * sci:8.1f} ms")
    print(f"  SimpleITK B-spline          {1000 * itk_t:8.1f} ms")


def preprocess_results(
    ours: Runs, theirs: Runs, label: str, stage: str = "preprocess"
) -> list[Result]:
    """The compared figures of ``(wall s, CPU s, peak MB)`` runs: wall time (target ratio 0.5,
    the issue's ">= 2x faster"), CPU time (steadier on a shared machine; no target) and peak
    memory (the largest of the timed runs, as printed; no target). An empty ``theirs`` (nnU-Net
    absent) leaves nnU-Net's side empty."""
    name = f"{stage}, {label}"
    column = lambda runs, i: [r[i] for r in runs]  # noqa: E731
    wall = from_runs(name, "wall time", "s", column(ours, 0), column(theirs, 0), "lower", 0.5)
    cpu = from_runs(name, "CPU time", "s", column(ours, 1), column(theirs, 1), "lower")
    mem = from_runs(name, "peak memory", "MB", column(ours, 2), column(theirs, 2), "lower")
    mem = dataclasses.replace(
        mem,
        autoseg=max(column(ours, 2), default=None),
        nnunet=max(column(theirs, 2), default=None),
    )
    return [wall, cpu, mem]


def default_json(vary_spacing: bool) -> Path:
    """One file per dataset variant, so the uniform and the varied run can both be collected."""
    return RESULTS_DIR / ("preprocess_varied.json" if vary_spacing else "preprocess.json")


def _write_json(path: Path, results: list[Result], notes: list[str]) -> None:
    """The shared result file (atomic), with nnU-Net's versions read from its venv."""
    out = write_results(path, "preprocess", results, notes=notes, bench_python=BENCH_PYTHON)
    print(f"results: {out}")


Command = tuple[list[str], dict[str, str]]  # argv and environment of one timed process
STAGES = ("preprocess", "fingerprint + plan + preprocess")


def autoseg_commands(name: str, root: Path, config: str, workers: int) -> dict[str, Command]:
    """autoseg's command per stage: preprocessing alone (the plan already there), and the
    whole first stage in one process as ``plan-and-train`` runs it."""
    common = f"{name!r}, {str(root)!r}"
    preprocess = (
        f"preprocess_dataset({common}, configs=[{config!r}], num_workers={workers}, "
        "overwrite=True, progress=False)"
    )
    pipeline = (
        "from autoseg.fingerprint import run_fingerprint; from autoseg.planning import run_plan; "
        f"run_fingerprint({common}, overwrite=True, num_workers={workers}, progress=False); "
        f"run_plan({common}, device='cpu', overwrite=True, progress=False); "
    )
    head = "from autoseg.preprocessing import preprocess_dataset; "
    env = checkout_env(os.environ)
    codes = (head + preprocess, head + pipeline + preprocess)
    return {stage: ([sys.executable, "-c", code], env) for stage, code in zip(STAGES, codes)}


def nnunet_commands(
    bindir: Path, nn_raw: Path, nn_id: int, config: str, workers: int, work: Path
) -> dict[str, Command]:
    """nnU-Net's command per stage, after its untimed fingerprint and plan (which
    ``nnUNetv2_preprocess`` needs)."""
    nn_env = dict(
        os.environ,
        nnUNet_raw=str(nn_raw),
        nnUNet_preprocessed=str(work / "nnunet_preprocessed"),
        nnUNet_results=str(work / "nnunet_results"),
    )
    ident, w = ["-d", str(nn_id)], str(workers)
    # nnU-Net's planner sets torch threads to nnUNet_n_proc_DA, which fails at 0 (the value
    # that keeps its training in one process): give it 1 where it plans
    plan_env = dict(nn_env)
    if plan_env.get("nnUNet_n_proc_DA") == "0":
        plan_env["nnUNet_n_proc_DA"] = "1"
    for step in (["nnUNetv2_extract_fingerprint", *ident, "-np", w],
                 ["nnUNetv2_plan_experiment", *ident]):  # fmt: skip
        run_measured([str(bindir / step[0]), *step[1:]], plan_env)
    preprocess = [str(bindir / "nnUNetv2_preprocess"), *ident, "-c", config, "-np", w]
    # --clean: a new fingerprint every time, as autoseg's overwrite=True
    pipeline = [str(bindir / "nnUNetv2_plan_and_preprocess"), *ident, "-c", config]
    pipeline += ["-np", w, "-npfp", w, "--clean"]
    return dict(zip(STAGES, ((preprocess, nn_env), (pipeline, plan_env))))


def bench_dataset(choice: str, args: argparse.Namespace, work: Path) -> list[Result] | None:
    """Both systems on one dataset (``thigh``: the generated phantoms; otherwise an accuracy
    benchmark dataset), every stage; ``None`` when that dataset's shared data is absent."""
    from autoseg.planning import run_plan
    from benchmarks.accuracy_cv import converted

    root = work / choice / "autoseg_root"
    if choice == "thigh":
        config = "3d_fullres"
        dataset_dir = make_dataset(root / "raw", args.cases, args.shape, args.vary_spacing)
        write_plan(root, dataset_dir)
        shape = "x".join(str(v) for v in args.shape)
        spacing = "varied" if args.vary_spacing else "uniform"
        label = f"{args.cases} x {shape}, {spacing} spacing"
    else:  # planned by autoseg's own planner, untimed
        if (converted_dir := converted(choice, root)) is None:
            return None
        dataset_dir, config = converted_dir, DEFAULT_NNUNET_CONFIG[choice]
        run_plan(dataset_dir, root, device="cpu", progress=False)
        n = len(list((dataset_dir / "labelsTr").iterdir()))
        label = f"{choice} ({n} cases), {config}"
    print(f"\ndataset: {label}; workers={args.workers}")
    ours = autoseg_commands(dataset_dir.name, root, config, args.workers)
    if nnunet_absent(args.nnunet_bin):
        results = []
        for stage in STAGES:
            (runs,) = alternate([ours[stage]], args.repeats)
            print(f"{stage}: autoseg  {_fmt(runs)}")
            results += preprocess_results(runs, [], label, stage)
        return results
    if choice == "thigh":  # the phantom folder is in both systems' layout already
        nn_raw, nn_id = root / "raw", DATASET_ID
    else:  # autoseg's nnU-Net export of the same files
        from autoseg.io.nnunet import export_nnunet

        nn_raw = work / choice / "nnunet_raw"
        nn_folder = export_nnunet(dataset_dir, nn_raw, overwrite=True, progress=False)
        nn_id = int(nn_folder.name[len("Dataset") :].split("_")[0])
    bindir = args.nnunet_bin.parent
    theirs = nnunet_commands(bindir, nn_raw, nn_id, config, args.workers, work / choice)
    results = []
    for stage in STAGES:
        a, n = alternate([ours[stage], theirs[stage]], args.repeats)
        print(f"{stage}: autoseg  {_fmt(a)}")
        print(f"{stage}: nnU-Net  {_fmt(n)}")
        for i, what in ((0, "wall"), (1, "CPU")):
            ratio = statistics.median(r[i] for r in n) / statistics.median(r[i] for r in a)
            print(f"{stage}: speed-up nnU-Net / autoseg ({what} time): {ratio:.2f}x (target >= 2x)")
        results += preprocess_results(a, n, label, stage)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(24, 160, 160), metavar=("Z", "Y", "X")
    )
    parser.add_argument("--vary-spacing", action="store_true", help="per-case spacing")
    parser.add_argument(
        "--dataset",
        nargs="+",
        choices=DATASET_CHOICES,
        default=list(DEFAULT_DATASETS),
        help="thigh = the generated phantoms (--cases, --shape, --vary-spacing); the others "
        "are the accuracy benchmark's, skipped when their shared data is absent",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes for both systems")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resampling", action="store_true", help="only the backend timings")
    parser.add_argument(
        "--no-resampling", action="store_true", help="skip the backend timings (smoke runs)"
    )
    parser.add_argument("--nnunet-bin", type=Path, default=NNUNET_BIN)
    parser.add_argument("--workdir", type=Path, help="keep data and outputs here")
    parser.add_argument(
        "--json",
        type=Path,
        help="write the compared figures here (default: benchmarks/results/preprocess.json, "
        "preprocess_varied.json with --vary-spacing)",
    )
    args = parser.parse_args(argv)
    json_path = args.json or default_json(args.vary_spacing)

    if not args.no_resampling:
        bench_resampling()
        bench_resampling((60, 320, 320), (1.0, 1.2, 1.2), repeats=3)
    if args.resampling:
        return 0
    tmp = tempfile.TemporaryDirectory(prefix="bench_pp_") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    notes = [
        f"workers={args.workers} for both; CPU affinity {sorted(os.sched_getaffinity(0))}",
        "autoseg preprocesses with its planner's plan, nnU-Net with the plan of its own "
        "nnUNetv2_plan_experiment (untimed), the same configuration (3d_fullres for 3D data, 2d "
        "for 2D): target spacing and storage (autoseg .npy, nnU-Net blosc2) can differ",
        "fingerprint + plan + preprocess: autoseg's run_fingerprint, run_plan (memory rules "
        "for the CPU, no time budget) and preprocess_dataset in one process; nnU-Net's "
        "nnUNetv2_plan_and_preprocess -c CONFIG -np N -npfp N --clean; both plan all their "
        "configurations and preprocess the one compared",
        "alternating: one untimed warm-up run each, then rounds of one run per system, "
        "the order reversed every other round",
        "peak memory: summed PSS of the process tree sampled every 20 ms, largest of the "
        "timed runs",
    ]
    try:
        results, skipped = [], []
        for choice in dict.fromkeys(args.dataset):  # each once, in the order given
            measured = bench_dataset(choice, args, work)
            if measured is None:
                skipped.append(choice)
            else:
                results += measured
        if skipped:
            notes.append(f"skipped, shared data absent: {', '.join(skipped)}")
        if not args.nnunet_bin.exists():
            notes.append("nnU-Net absent: no comparison")
        if results:
            _write_json(json_path, results, notes)
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
