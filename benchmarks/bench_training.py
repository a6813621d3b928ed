"""Training throughput: autoseg against nnU-Net v2, same configuration, data and settings.

    taskset -c 1 .venv/bin/python -m benchmarks.bench_training [--device cpu|cuda]
        [--only 3d 2d brats] [--plans autoseg nnunet] [--cases 20 --frames 30]
        [--iterations 20] [--warmup 3] [--repeats 3] [--threads 1] [--cpus 1] [--workers 0]
        [--time-budget 2h | none] [--gpu-memory GB]
        [--max-voxels N] [--patch-3d Z Y X] [--batch-3d N] [--patch-2d Y X] [--batch-2d N]
        [--json benchmarks/results/training.json] [--workdir DIR]

Smoke run (~5 min on one shared core): ``--cases 4 --frames 4 --iterations 5 --warmup 1
--repeats 1 --max-voxels 200000 --cpus 1``. The full default run (20 + 30 phantoms, 3 + 20
iterations x 3 repetitions x 2 systems x 4 configurations) takes 1-2 hours on one CPU core, most
of it nnU-Net's own ``3d_fullres`` (24x160x160, batch 2, 32-320 features: ~13 s per iteration
on 2 cores); ``--max-voxels`` shrinks that (see below). On a machine shared with other work,
compare the CPU seconds per iteration: other processes stretch wall time, not CPU time.

**Data.** :func:`autoseg.phantoms.generate_phantom`: ``mri3d`` (``--cases``, default 20 thigh
volumes 24x160x160 at 3x0.75x0.75 mm) and ``us2d`` (``--frames``, default 30 wrist frames
256x320), converted with :func:`autoseg.io.convert.convert_folder` under a temporary
``AUTOSEG_ROOT`` (label ``nerve``), planned with :func:`autoseg.planning.planner.run_plan` and
preprocessed with :func:`autoseg.preprocessing.preprocess.preprocess_dataset`. Fold 0 of
autoseg's ``splits.json`` (5 folds grouped by subject, fewer when there are fewer subjects) is
the training set of both systems (nnU-Net gets it as ``splits_final.json`` via
``nnunet_bridge.write_nnunet_splits``). ``brats`` (multi-channel 3D) is the BraTS subset of
``../shared/data`` (6 volumes of 240x240x155 at 1 mm, FLAIR + T1c, 4 labels), converted by
``benchmarks/accuracy_cv.py``; it is skipped, and the JSON says so, when that data is absent.

**Which configurations** (``--plans``), each for the 3D phantom's and BraTS's ``3d_fullres``
and the 2D phantom's ``2d`` (``--only``):

- ``autoseg``: autoseg's own plan. On a CPU that is the plan a CPU user gets from
  ``autoseg plan-and-train --time-budget 2h`` (``--time-budget``; all configurations planned,
  the budget split between them; iterations timed on this machine with ``--threads`` torch
  threads, so the plan follows the machine's load — the plan used is written to the JSON);
  should the budget drop the configuration, it is re-planned alone (``--configs``), which the
  output says. With ``--device cuda`` it is the GPU memory plan without a time budget (the
  detected GPU's memory, or ``--gpu-memory``). nnU-Net trains exactly that configuration:
  ``nnunet_bridge.prepare_nnunet_dataset`` writes it as plans ``autosegPlans`` (same spacing,
  normalisation, patch, batch, PlainConvUNet of the same stages, kernels, strides and widths,
  deep supervision), then ``nnUNetv2_preprocess -plans_name autosegPlans -c CONFIG``.
- ``nnunet``: nnU-Net's own plan: ``nnUNetv2_extract_fingerprint`` + ``nnUNetv2_plan_experiment``
  (default planner, ``nnUNetPlans``) + ``nnUNetv2_preprocess -c CONFIG``; autoseg trains that
  configuration via ``nnunet_bridge.autoseg_plan_from_nnunet`` (a second ``AUTOSEG_ROOT`` over
  the same raw data, preprocessed by autoseg).

``--patch-3d/--batch-3d/--patch-2d/--batch-2d`` replace a configuration's patch and batch, and
``--max-voxels`` shrinks any configuration whose batch x patch exceeds it (the batch first,
down to 2, then the largest patch axis by its total stride; :func:`scale_to_voxels`) — in both
systems' copies of the plan alike, before either preprocesses, so that nnU-Net's GPU-sized
``3d_fullres`` (~13 s per iteration on 2 cores) can be timed on a CPU. The sizes used are
printed and written to the JSON.

**What is timed.** Each measurement is a fresh process — autoseg under ``.venv/bin/python``,
nnU-Net under ``.venv-bench/bin/python`` (same torch) — with ``--threads`` torch threads
(``torch.set_num_threads`` and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``), pinned to ``--cpus``,
and ``--workers`` data-augmentation processes (default 0: both augment in the training process
— autoseg's in-process loader, nnU-Net's ``SingleThreadedAugmenter`` with
``nnUNet_n_proc_DA=0``). It builds the real trainer (autoseg: ``setup_from_plan``,
``options_from_plan``, ``Trainer`` and the loader ``Trainer.fit`` builds for an epoch; nnU-Net:
``get_trainer_from_args`` -> ``nnUNetTrainer``, ``on_train_start()``, ``on_train_epoch_start()``),
runs ``--warmup`` iterations, then times ``--iterations`` iterations of
``trainer.train_step(next(loader))`` — sampling, augmentation, forward, deep-supervision
Dice + CE loss, backward, gradient clipping, SGD step (nnU-Net: ``next(dataloader_train)``).
No validation, checkpoint or log write is in the timed part (nnU-Net's ``on_train_end()``
runs after it). Seconds per iteration = timed wall time / iterations; an epoch = 250 such
iterations. The repetitions alternate between the systems (autoseg first in even repetitions,
nnU-Net first in odd ones) so that other load on the machine hits both alike; medians are
reported with the ratio autoseg / nnU-Net. Peak memory is the largest sum of proportional set
sizes over the process tree (augmentation workers included) over the whole process life,
sampled every 20 ms (``results.run_measured``); on CUDA also
``torch.cuda.max_memory_allocated``, and beside it the planner's estimate of the same step
(``autoseg.networks.memory``, the patch, batch and optimizer timed): whether the two match
within 15 % goes to the console and the JSON's ``notes`` (:func:`memory_check`). CPU seconds
per timed iteration are those of the training process only (``time.process_time``; workers not
counted).

**Not equal between the systems** (also in the JSON's ``notes``): each uses its own data
loader, augmentation pipeline and storage (autoseg: its MRI/ultrasound augmentation profiles
and ``.npy`` arrays; nnU-Net: its default transforms on blosc2-compressed arrays), its own
Dice + CE implementation, and its own network class (nnU-Net's convolutions carry a bias before
instance norm, autoseg's do not). nnU-Net's ``on_train_start`` also builds its validation loader
(one batch prefetched), which counts towards its peak memory; autoseg builds its validation
loader per epoch, after the iterations. On CUDA both train with mixed precision and
``torch.compile`` (their defaults; warm-up covers compilation); on a CPU neither compiles.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks.results import (
    REPO,
    checkout_env,
    module_command,
    parse_cpus,
    thread_env,
)

BENCH_DIR = REPO / "benchmarks"
AUTOSEG_PYTHON = REPO / ".venv" / "bin" / "python"
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
EPOCH_ITERATIONS = 250  # nnU-Net's and autoseg's iterations per epoch
MIN_BATCH = 2  # nnU-Net's smallest planned batch; --max-voxels does not go below it
FOLD = 0
AUTOSEG_PLANS_NAME = "autosegPlans"
NNUNET_PLANS_NAME = "nnUNetPlans"
DEFAULT_TIME_BUDGET = "2h"


@dataclass(frozen=True)
class Phantom:
    """One benchmark dataset: a phantom kind (or a real dataset) and the configuration timed."""

    key: str  # "3d" | "2d" | "brats"
    kind: str  # autoseg.phantoms kind ("" for a real dataset)
    dataset_id: int
    name: str
    channel: str
    config: str
    label: str
    # a dataset of benchmarks/accuracy_cv.py converted from ../shared/data instead of a phantom
    shared: str | None = None


PHANTOMS = {
    "3d": Phantom("3d", "mri3d", 961, "BenchTrainThigh", "T2", "3d_fullres", "3D thigh"),
    "2d": Phantom("2d", "us2d", 962, "BenchTrainWrist", "US", "2d", "2D wrist"),
    # multi-channel 3D: 6 BraTS cases, FLAIR + T1c, 4 labels (accuracy_cv's id and name)
    "brats": Phantom(
        "brats", "", 934, "BraTS2015Subset", "", "3d_fullres", "3D BraTS", "brats2015_subset"
    ),
}
PLAN_LABELS = {"autoseg": "autoseg plan", "nnunet": "nnU-Net plan"}


# --------------------------------------------------------------------------- pure helpers
def total_strides(strides: Sequence[Sequence[int]]) -> list[int]:
    """Product of the per-stage strides along each axis: a patch must be a multiple of it for
    every skip connection to line up (both systems' U-Nets need this)."""
    dims = len(strides[0])
    return [math.prod(int(s[a]) for s in strides) for a in range(dims)]


def check_patch(patch: Sequence[int], divisors: Sequence[int]) -> None:
    """Raise ValueError unless every patch axis is a positive multiple of its total stride."""
    if len(patch) != len(divisors):
        raise ValueError(f"patch {list(patch)} has {len(patch)} axes, the network {len(divisors)}")
    bad = [(p, d) for p, d in zip(patch, divisors) if p < d or p % d]
    if bad:
        raise ValueError(
            f"patch {list(patch)} is not a multiple of the network's total strides "
            f"{list(divisors)} along every axis"
        )


def scale_to_voxels(
    patch: Sequence[int],
    batch: int,
    divisors: Sequence[int],
    max_voxels: int,
    min_batch: int = MIN_BATCH,
) -> tuple[list[int], int]:
    """Shrink (patch, batch) until batch x prod(patch) <= max_voxels, or nothing can shrink.

    The batch goes first, one at a time down to ``min_batch`` (2, nnU-Net's floor: batch
    statistics and the foreground oversampling need two samples), because time per iteration
    is about proportional to it and it leaves the receptive-field-to-patch relation alone. Then
    the largest patch axis (in voxels) loses one total stride, so the patch stays a valid input
    for the same network: for the anisotropic thigh plans that trims the in-plane axes and
    keeps the few thick slices. The same rule applies to both systems' copies of a plan, so it
    cannot favour either.
    """
    patch = [int(p) for p in patch]
    batch = int(batch)
    while batch * math.prod(patch) > max_voxels:
        if batch > min_batch:
            batch -= 1
            continue
        shrinkable = [a for a in range(len(patch)) if patch[a] - divisors[a] >= divisors[a]]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: (patch[a], a))
        patch[axis] -= divisors[axis]
    return patch, batch


def choose_patch_batch(
    patch: Sequence[int],
    batch: int,
    divisors: Sequence[int],
    *,
    new_patch: Sequence[int] | None = None,
    new_batch: int | None = None,
    max_voxels: int | None = None,
) -> tuple[list[int], int]:
    """The (patch, batch) to time: explicit overrides first, then the voxel cap."""
    out_patch = [int(p) for p in (new_patch if new_patch is not None else patch)]
    out_batch = int(new_batch if new_batch is not None else batch)
    check_patch(out_patch, divisors)
    if out_batch < 1:
        raise ValueError(f"batch must be >= 1, got {out_batch}")
    if max_voxels is not None:
        out_patch, out_batch = scale_to_voxels(out_patch, out_batch, divisors, max_voxels)
    return out_patch, out_batch


def configuration_mismatches(autoseg_cfg: dict[str, Any], nnunet_cfg: dict[str, Any]) -> list[str]:
    """What differs between autoseg's and nnU-Net's copy of the timed configuration (patch,
    batch and the U-Net's stages); empty when both train the same thing, the premise of every
    figure here. Both configurations are in array axis order (the phantoms' configurations have
    nnU-Net's identity ``transpose_forward``)."""
    arch, kw = autoseg_cfg["architecture"], nnunet_cfg["architecture"]["arch_kwargs"]
    pairs = {
        "patch_size": (autoseg_cfg["patch_size"], nnunet_cfg["patch_size"]),
        "batch_size": (autoseg_cfg["batch_size"], nnunet_cfg["batch_size"]),
        "features_per_stage": (arch["features_per_stage"], kw["features_per_stage"]),
        "strides": (arch["strides"], kw["strides"]),
        "kernel_sizes": (arch["kernel_sizes"], kw["kernel_sizes"]),
        "convolutions per encoder stage": (arch["n_blocks_per_stage"], kw["n_conv_per_stage"]),
    }
    out = []
    for what, (ours, theirs) in pairs.items():
        if json.dumps(ours) != json.dumps(theirs):
            out.append(f"{what}: autoseg {ours}, nnU-Net {theirs}")
    if not arch.get("deep_supervision", False):
        out.append("deep supervision: off in autoseg's configuration, always on in nnU-Net's")
    return out


def epoch_seconds(iteration_s: float, iterations: int = EPOCH_ITERATIONS) -> float:
    """Seconds of one training epoch from the per-iteration time (no validation)."""
    return iteration_s * iterations


def fold_groups(case_ids: Sequence[str], subjects: Sequence[str]) -> tuple[list[str], int]:
    """(groups, folds) for autoseg's splits: its 5 folds grouped by subject, fewer folds when
    the phantom has fewer subjects (``--cases 4``), and each case its own group when all come
    from one subject (a few ultrasound frames), since both trainers need a validation set."""
    groups = list(subjects) if len(set(subjects)) >= 2 else list(case_ids)
    return groups, max(2, min(5, len(set(groups))))


def alternation(repeats: int) -> list[tuple[str, str]]:
    """Order of the measurements: autoseg first in even repetitions, nnU-Net first in odd
    ones, so neither system always runs right after the other (page cache, thermal state)."""
    order = []
    for r in range(repeats):
        pair = ("autoseg", "nnunet") if r % 2 == 0 else ("nnunet", "autoseg")
        order.extend((f"{r}", s) for s in pair)
    return order


def summarise_steps(step_seconds: Sequence[float], cpu_s: float) -> dict[str, float]:
    """One measurement's figures from its timed iterations."""
    n = len(step_seconds)
    total = float(sum(step_seconds))
    it_s = total / n
    return {
        "iteration_s": it_s,
        "iterations_per_s": 1.0 / it_s,
        "epoch_s": epoch_seconds(it_s),
        "median_step_s": float(statistics.median(step_seconds)),
        "cpu_per_iteration_s": cpu_s / n,
    }


def make_results(
    label: str, runs: dict[str, list[dict[str, Any]]], cuda: bool, note: str = ""
) -> list[Any]:
    """The :class:`results.Result` rows of one configuration from both systems' runs;
    ``note`` (the sizes timed) goes into every row."""
    from benchmarks.results import from_runs

    def col(system: str, key: str) -> list[float]:
        return [r[key] for r in runs.get(system, []) if r.get(key) is not None]

    rows = [
        ("iterations_per_s", "iterations per second", "it/s", "higher", 1.0, "it/s"),
        ("epoch_s", "seconds per 250-iteration epoch", "s", "lower", None, "s/epoch"),
        ("peak_mb", "peak memory (PSS, process tree)", "MB", "lower", None, "peak MB"),
        ("cpu_per_iteration_s", "CPU seconds per iteration", "s", "lower", None, "CPU s/it"),
    ]
    if cuda:
        rows.append(("cuda_peak_mb", "peak CUDA memory allocated", "MB", "lower", None, "GPU MB"))
    return [
        from_runs(
            f"{label}: {short}", metric, unit, col("autoseg", k), col("nnunet", k), b, t, note
        )
        for k, metric, unit, b, t, short in rows
    ]


# --------------------------------------------------------------------------- drivers
def time_steps(
    step: Callable[[], Any],
    warmup: int,
    iterations: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Run ``warmup`` untimed steps, then ``iterations`` timed ones; per-step wall seconds and
    the process CPU seconds of the timed part. ``sync`` waits for queued GPU work."""
    for _ in range(warmup):
        step()
    sync()
    times = []
    c0 = time.process_time()
    for _ in range(iterations):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    cpu = time.process_time() - c0
    return {"step_s": times, **summarise_steps(times, cpu)}


def _torch_setup(spec: dict[str, Any]) -> Any:
    import numpy as np
    import torch

    torch.set_num_threads(int(spec["threads"]))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return torch


def _cuda_hooks(torch: Any, device: str) -> tuple[Callable[[], None], Callable[[], float | None]]:
    if not device.startswith("cuda"):
        return (lambda: None), (lambda: None)
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.synchronize, lambda: torch.cuda.max_memory_allocated() / 2**20


def drive_autoseg(spec: dict[str, Any]) -> dict[str, Any]:
    """autoseg's trainer on the spec's configuration: the same set-up as ``Trainer.fit`` does
    for one epoch (seeded, model in train mode, the epoch's augmenting loader)."""
    torch = _torch_setup(spec)
    from autoseg.planning.plan import load_plan
    from autoseg.preprocessing.preprocess import data_identifier
    from autoseg.training.run import options_from_plan, setup_from_plan
    from autoseg.training.trainer import Trainer, _close, epoch_seed, seed_everything

    t0 = time.perf_counter()
    base = Path(spec["root"]) / "preprocessed" / spec["dataset"]
    plan = load_plan(base)
    config = spec["config"]
    setup = setup_from_plan(plan, config, base / data_identifier(plan, config))
    options = options_from_plan(
        plan, config, device=spec["device"], num_workers=int(spec["workers"]), progress=False
    )
    trainer = Trainer(
        setup, options, spec["train_ids"], spec["val_ids"], Path(spec["out_dir"]), fold=FOLD
    )
    seed = epoch_seed(options.seed, FOLD, 0)
    seed_everything(seed)
    trainer.model.train()
    loader = trainer.loader_factory(trainer.train_ids, True, seed, trainer.local_batch)
    sync, peak = _cuda_hooks(torch, str(trainer.device))
    setup_s = time.perf_counter() - t0
    shape: list[int] = []

    def step() -> None:
        batch = next(loader)
        shape[:] = list(batch["data"].shape)
        trainer.train_step(batch)

    try:
        out = time_steps(step, int(spec["warmup"]), int(spec["iterations"]), sync)
    finally:
        _close(loader)
    estimated = None
    if str(trainer.device).startswith("cuda"):
        estimated = planner_estimate_mb(
            setup.arch, setup.patch_size, trainer.local_batch, options.optimizer
        )
    out.update(
        setup_s=setup_s,
        batch_shape=shape,
        cuda_peak_mb=peak(),
        estimated_cuda_mb=estimated,
        device=str(trainer.device),
    )
    return out


# tests/test_memory.py's GPU test holds the estimate to within 15 % of max_memory_allocated.
ESTIMATE_TOLERANCE = 0.15


def planner_estimate_mb(
    arch: dict[str, Any], patch: Sequence[int], batch: int, optimizer: str
) -> float:
    """The planner's estimate of one AMP training step, in MB, without the CUDA context (which
    ``torch.cuda.max_memory_allocated`` does not count either)."""
    from autoseg.networks.memory import TRAINER_OPTIMIZERS, estimate_training_memory

    est = estimate_training_memory(
        arch, list(patch), int(batch), amp=True, optimizer=TRAINER_OPTIMIZERS[optimizer]
    )
    return est.total_bytes / 2**20


def memory_check(label: str, runs: dict[str, list[dict[str, Any]]]) -> str | None:
    """Whether the planner's memory estimate matched autoseg's measured CUDA peak (median over
    the repetitions); ``None`` off CUDA."""
    pairs = [
        (r["estimated_cuda_mb"], r["cuda_peak_mb"])
        for r in runs.get("autoseg", [])
        if r.get("estimated_cuda_mb") and r.get("cuda_peak_mb")
    ]
    if not pairs:
        return None
    estimate = statistics.median(e for e, _ in pairs)
    measured = statistics.median(m for _, m in pairs)
    ratio = estimate / measured
    verdict = "matched" if abs(ratio - 1) <= ESTIMATE_TOLERANCE else "did NOT match"
    return (
        f"{label}: the planner's memory estimate {estimate:.0f} MB vs measured "
        f"torch.cuda.max_memory_allocated {measured:.0f} MB (ratio {ratio:.2f}: {verdict} "
        f"within +-{ESTIMATE_TOLERANCE:.0%}; the CUDA context is outside both)"
    )


def drive_nnunet(spec: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net v2's ``nnUNetTrainer`` as ``nnUNetv2_train`` builds it (``get_trainer_from_args``,
    cuDNN benchmark on CUDA), ``on_train_start()`` and ``on_train_epoch_start()``, then its
    ``train_step(next(dataloader_train))``; ``on_train_end()`` after the timing. The
    ``nnUNet_*`` folders and ``nnUNet_n_proc_DA`` come from the environment."""
    torch = _torch_setup(spec)
    from nnunetv2.run.run_training import get_trainer_from_args

    t0 = time.perf_counter()
    device = torch.device(spec["device"])
    trainer = get_trainer_from_args(
        spec["dataset"],
        spec["config"],
        FOLD,
        "nnUNetTrainer",
        spec["plans_name"],
        False,
        device=device,
    )
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    sync, peak = _cuda_hooks(torch, str(device))
    setup_s = time.perf_counter() - t0
    shape: list[int] = []

    def step() -> None:
        batch = next(trainer.dataloader_train)
        shape[:] = list(batch["data"].shape)
        trainer.train_step(batch)

    try:
        out = time_steps(step, int(spec["warmup"]), int(spec["iterations"]), sync)
    finally:
        trainer.on_train_end()
    out.update(setup_s=setup_s, batch_shape=shape, cuda_peak_mb=peak(), device=str(device))
    return out


def driver_main(spec_path: str, out_path: str) -> int:
    """Entry of a measurement process: read the spec, time, write the figures as JSON."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    drive = drive_autoseg if spec["system"] == "autoseg" else drive_nnunet
    out = drive(spec)
    tmp = Path(out_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(out), encoding="utf-8")
    tmp.replace(out_path)
    return 0


# --------------------------------------------------------------------------- preparation
@dataclass
class Prepared:
    """A phantom converted, planned and preprocessed for autoseg (root A), with its splits."""

    phantom: Phantom
    root: Path
    raw: Path  # <root>/raw/<dataset>
    dataset: str  # autoseg's dataset folder name
    plan: dict[str, Any]
    fingerprint: dict[str, Any]
    splits: list[dict[str, list[str]]]
    plan_note: str


def _parse_budget(text: str | None) -> float | None:
    from autoseg.planning.schedule import parse_duration

    if text is None or text.lower() in ("none", "0", ""):
        return None
    return float(parse_duration(text))


def prepare_phantom(ph: Phantom, work: Path, n_cases: int, args: argparse.Namespace) -> Prepared:
    """Phantom (or shared dataset) -> autoseg raw dataset -> autoseg's own plan -> splits
    (root A)."""
    from autoseg.io import list_cases, load_dataset_json
    from autoseg.io.convert import convert_folder
    from autoseg.paths import raw_dir
    from autoseg.phantoms import generate_phantom
    from autoseg.planning.planner import run_plan
    from autoseg.training.splits import load_or_create_splits
    from autoseg.training.timing import trainer_step_measure

    root = work / f"{ph.key}_autoseg_plan" / "autoseg"
    if ph.shared is not None:
        from benchmarks.accuracy_cv import prepare

        raw = raw_dir(root) / prepare(ph.shared, root)
    else:
        src = work / "source" / ph.kind
        generate_phantom(ph.kind, src, n_cases, seed=0, overwrite=True, progress=False)
        result = convert_folder(
            src,
            ph.name,
            ph.dataset_id,
            root=root,
            overwrite=True,
            label_names=["nerve"],
            channel_names=[ph.channel],
            num_workers=1,
            progress=False,
        )
        raw = result.target
    budget = _parse_budget(args.time_budget)
    kwargs = dict(
        gpu_memory_gb=args.gpu_memory,
        time_budget_s=budget,
        device=args.device,
        overwrite=True,
        progress=False,
        step_measure=trainer_step_measure(),
    )
    how = (
        f"time budget {args.time_budget}" if budget is not None else "memory rules, no budget"
    ) + f", planned on {args.device} with {args.threads} thread(s)"
    path = run_plan(raw, root, **kwargs)
    plan = json.loads(path.read_text(encoding="utf-8"))
    if ph.config not in plan["configurations"]:
        how += f"; {ph.config} was dropped from the full plan, so it was planned alone"
        path = run_plan(raw, root, configs=[ph.config], **kwargs)
        plan = json.loads(path.read_text(encoding="utf-8"))
    fingerprint = json.loads((path.parent / "fingerprint.json").read_text(encoding="utf-8"))
    ds = load_dataset_json(raw)
    ids = [c.case_id for c in list_cases(raw, ds)]
    groups, n_folds = fold_groups(ids, [ds.subject_of(c) for c in ids])
    splits = load_or_create_splits(
        root / "results" / raw.name / "splits.json",
        ids,
        groups,
        [ds.cohort_of(c) for c in ids],
        n_folds=n_folds,
    )
    return Prepared(ph, root, raw, raw.name, plan, fingerprint, splits, how)


def sizes_from_args(ph: Phantom, args: argparse.Namespace) -> dict[str, Any]:
    """The patch/batch overrides of this phantom's configuration."""
    return {
        "new_patch": args.patch_3d if ph.config.startswith("3d") else args.patch_2d,
        "new_batch": args.batch_3d if ph.config.startswith("3d") else args.batch_2d,
        "max_voxels": args.max_voxels,
    }


def _resize_autoseg_config(cfg: dict[str, Any], sizes: dict[str, Any]) -> str:
    divisors = total_strides(cfg["architecture"]["strides"])
    before = (list(cfg["patch_size"]), cfg["batch_size"])
    patch, batch = choose_patch_batch(cfg["patch_size"], cfg["batch_size"], divisors, **sizes)
    cfg["patch_size"], cfg["batch_size"] = patch, batch
    return _size_note(before, (patch, batch))


def _resize_nnunet_config(cfg: dict[str, Any], sizes: dict[str, Any]) -> str:
    divisors = total_strides(cfg["architecture"]["arch_kwargs"]["strides"])
    before = (list(cfg["patch_size"]), cfg["batch_size"])
    patch, batch = choose_patch_batch(cfg["patch_size"], cfg["batch_size"], divisors, **sizes)
    cfg["patch_size"], cfg["batch_size"] = patch, batch
    return _size_note(before, (patch, batch))


def _size_note(before: tuple[list[int], int], after: tuple[list[int], int]) -> str:
    if before == (list(after[0]), after[1]):
        return "as planned"
    return (
        f"planned patch {'x'.join(map(str, before[0]))} batch {before[1]} -> "
        f"timed patch {'x'.join(map(str, after[0]))} batch {after[1]}"
    )


def _run_cli(cmd: list[str], env: dict[str, str]) -> None:
    """An nnU-Net command line tool (planning, preprocessing: untimed). Its planner calls
    ``torch.set_num_threads(nnUNet_n_proc_DA)``, which must then be >= 1."""
    env = {**env, "nnUNet_n_proc_DA": str(max(1, int(env.get("nnUNet_n_proc_DA", "1"))))}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, encoding="utf-8")
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}")


def _nnunet_env(base: dict[str, str], folder: Path) -> dict[str, str]:
    env = dict(base)
    for key in ("raw", "preprocessed", "results"):
        (folder / key).mkdir(parents=True, exist_ok=True)
        env[f"nnUNet_{key}"] = str(folder / key)
    return env


@dataclass
class Pair:
    """One configuration ready for both systems: what each measurement process needs."""

    label: str
    config: str
    sizes_note: str
    autoseg_spec: dict[str, Any]
    nnunet_spec: dict[str, Any]
    nnunet_env: dict[str, str]
    description: dict[str, Any]


def _autoseg_spec(prep: Prepared, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    fold = prep.splits[FOLD]
    return {
        "system": "autoseg",
        "root": str(root),
        "dataset": prep.dataset,
        "config": prep.phantom.config,
        "train_ids": fold["train"],
        "val_ids": fold["val"],
        "out_dir": str(root / "results" / prep.dataset / "bench_fold"),
        "device": args.device,
        "threads": args.threads,
        "workers": args.workers,
        "warmup": args.warmup,
        "iterations": args.iterations,
    }


def _nnunet_spec(dataset: str, plans_name: str, config: str, args: argparse.Namespace) -> dict:
    return {
        "system": "nnunet",
        "dataset": dataset,
        "plans_name": plans_name,
        "config": config,
        "device": args.device,
        "threads": args.threads,
        "workers": args.workers,
        "warmup": args.warmup,
        "iterations": args.iterations,
    }


def pair_autoseg_plan(prep: Prepared, work: Path, env: dict[str, str], args) -> Pair:
    """Plan A: autoseg's plan (resized if asked) for autoseg, and exported to nnU-Net."""
    from autoseg.planning.plan import plan_from_dict, save_plan
    from autoseg.preprocessing.preprocess import preprocess_dataset
    from benchmarks.nnunet_bridge import prepare_nnunet_dataset, write_nnunet_splits

    ph = prep.phantom
    plan = json.loads(json.dumps(prep.plan))
    note = _resize_autoseg_config(plan["configurations"][ph.config], sizes_from_args(ph, args))
    save_plan(plan_from_dict(plan), prep.root / "preprocessed" / prep.dataset / "plans.json")
    preprocess_dataset(prep.raw, prep.root, configs=[ph.config], num_workers=1, progress=False)
    nn_env = _nnunet_env(env, work / f"{ph.key}_autoseg_plan" / "nnunet")
    folder = prepare_nnunet_dataset(
        prep.raw,
        Path(nn_env["nnUNet_raw"]),
        Path(nn_env["nnUNet_preprocessed"]),
        plan,
        ph.config,
        ph.dataset_id,
        fingerprint=prep.fingerprint,
        plans_name=AUTOSEG_PLANS_NAME,
    )
    bindir = BENCH_PYTHON.parent
    _run_cli(
        [str(bindir / "nnUNetv2_preprocess"), "-d", str(ph.dataset_id)]
        + ["-plans_name", AUTOSEG_PLANS_NAME, "-c", ph.config, "-np", "1"],
        nn_env,
    )
    pre = Path(nn_env["nnUNet_preprocessed"]) / folder
    write_nnunet_splits(prep.splits, pre / "splits_final.json")
    cfg = plan["configurations"][ph.config]
    return Pair(
        f"{ph.label} {ph.config}, {PLAN_LABELS['autoseg']}",
        ph.config,
        note,
        _autoseg_spec(prep, prep.root, args),
        _nnunet_spec(folder, AUTOSEG_PLANS_NAME, ph.config, args),
        nn_env,
        {
            "plan": "autoseg",
            "how": prep.plan_note,
            "sizes": note,
            "autoseg_configuration": cfg,
            "nnunet_configuration": _nnunet_config(pre / f"{AUTOSEG_PLANS_NAME}.json", ph.config),
        },
    )


def _nnunet_config(plans_file: Path, config: str) -> dict[str, Any] | None:
    if not plans_file.is_file():
        return None
    return json.loads(plans_file.read_text(encoding="utf-8"))["configurations"].get(config)


def pair_nnunet_plan(prep: Prepared, work: Path, env: dict[str, str], args) -> Pair:
    """Plan B: nnU-Net's default plan (resized if asked), imported into autoseg."""
    from autoseg.io.nnunet import export_nnunet
    from autoseg.planning.plan import plan_from_dict, save_plan
    from autoseg.preprocessing.preprocess import preprocess_dataset
    from benchmarks.nnunet_bridge import autoseg_plan_from_nnunet, write_nnunet_splits

    ph = prep.phantom
    base = work / f"{ph.key}_nnunet_plan"
    nn_env = _nnunet_env(env, base / "nnunet")
    nn_raw = export_nnunet(prep.raw, Path(nn_env["nnUNet_raw"]), overwrite=True, progress=False)
    folder = nn_raw.name
    bindir = BENCH_PYTHON.parent
    ident = ["-d", str(ph.dataset_id)]
    _run_cli([str(bindir / "nnUNetv2_extract_fingerprint"), *ident, "-np", "1"], nn_env)
    _run_cli([str(bindir / "nnUNetv2_plan_experiment"), *ident], nn_env)
    pre = Path(nn_env["nnUNet_preprocessed"]) / folder
    plans_file = pre / f"{NNUNET_PLANS_NAME}.json"
    nn_plans = json.loads(plans_file.read_text(encoding="utf-8"))
    if ph.config not in nn_plans["configurations"]:
        raise RuntimeError(f"nnU-Net planned no {ph.config} for {folder}")
    note = _resize_nnunet_config(nn_plans["configurations"][ph.config], sizes_from_args(ph, args))
    tmp = plans_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(nn_plans, indent=1), encoding="utf-8")
    tmp.replace(plans_file)
    _run_cli(
        [str(bindir / "nnUNetv2_preprocess"), *ident]
        + ["-plans_name", NNUNET_PLANS_NAME, "-c", ph.config, "-np", "1"],
        nn_env,
    )
    write_nnunet_splits(prep.splits, pre / "splits_final.json")

    # autoseg side: a second root over the same raw files, with nnU-Net's configuration
    root = base / "autoseg"
    (root / "raw").mkdir(parents=True, exist_ok=True)
    link = root / "raw" / prep.dataset
    if not link.exists():
        link.symlink_to(prep.raw, target_is_directory=True)
    imported = autoseg_plan_from_nnunet(nn_plans, ph.config, prep.plan, name=ph.config)
    # only the timed configuration: others of autoseg's plan would be preprocessed for nothing
    imported["configurations"] = {ph.config: imported["configurations"][ph.config]}
    save_plan(plan_from_dict(imported), root / "preprocessed" / prep.dataset / "plans.json")
    preprocess_dataset(link, root, configs=[ph.config], num_workers=1, progress=False)
    splits_file = root / "results" / prep.dataset / "splits.json"
    splits_file.parent.mkdir(parents=True, exist_ok=True)
    splits_file.write_text(json.dumps(prep.splits), encoding="utf-8")
    return Pair(
        f"{ph.label} {ph.config}, {PLAN_LABELS['nnunet']}",
        ph.config,
        note,
        _autoseg_spec(prep, root, args),
        _nnunet_spec(folder, NNUNET_PLANS_NAME, ph.config, args),
        nn_env,
        {
            "plan": "nnunet",
            "how": "nnUNetv2_plan_experiment (default planner, nnUNetPlans)",
            "sizes": note,
            "autoseg_configuration": imported["configurations"][ph.config],
            "nnunet_configuration": nn_plans["configurations"][ph.config],
        },
    )


# --------------------------------------------------------------------------- measuring
def measure(
    python: Path, spec: dict[str, Any], env: dict[str, str], folder: Path, tag: str
) -> dict[str, Any]:
    """One measurement process (``python -m benchmarks.bench_training --driver``, importing
    this checkout); its timings plus the peak PSS of its process tree."""
    from benchmarks.results import run_measured

    folder.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = folder / f"{tag}.spec.json", folder / f"{tag}.out.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    cmd = module_command(python, "bench_training", "--driver", spec_path, out_path)
    wall, cpu, peak = run_measured(cmd, checkout_env(env))
    out = json.loads(out_path.read_text(encoding="utf-8"))
    out.update(peak_mb=peak, process_wall_s=wall, process_cpu_s=cpu)
    return out


def _describe_run(system: str, r: dict[str, Any]) -> str:
    gpu = "" if r.get("cuda_peak_mb") is None else f", GPU {r['cuda_peak_mb']:.0f} MB"
    return (
        f"    {system:8s} {r['iteration_s']:.4f} s/it ({r['iterations_per_s']:.2f} it/s, "
        f"CPU {r['cpu_per_iteration_s']:.4f} s/it), peak {r['peak_mb']:.0f} MB{gpu}, "
        f"batch {r['batch_shape']}, set-up {r['setup_s']:.1f} s"
    )


def run_pair(pair: Pair, args: argparse.Namespace, env: dict[str, str], folder: Path) -> dict:
    """All repetitions of one configuration, alternating between the systems."""
    d = pair.description
    if d["nnunet_configuration"] is None:
        raise RuntimeError(f"{pair.label}: nnU-Net's plans lack {pair.config}")
    differ = configuration_mismatches(d["autoseg_configuration"], d["nnunet_configuration"])
    if differ:
        raise RuntimeError(f"{pair.label}: the systems would train different things: {differ}")
    runs: dict[str, list[dict[str, Any]]] = {"autoseg": [], "nnunet": []}
    autoseg_env = thread_env(env, args.threads, args.workers)
    nnunet_env = thread_env(pair.nnunet_env, args.threads, args.workers)
    for rep, system in alternation(args.repeats):
        if system == "autoseg":
            r = measure(args.autoseg_python, pair.autoseg_spec, autoseg_env, folder, f"a{rep}")
        else:
            r = measure(BENCH_PYTHON, pair.nnunet_spec, nnunet_env, folder, f"n{rep}")
        runs[system].append(r)
        print(_describe_run(system, r), flush=True)
    return runs


def _short_runs(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    keep = (
        "iteration_s",
        "median_step_s",
        "cpu_per_iteration_s",
        "peak_mb",
        "cuda_peak_mb",
        "estimated_cuda_mb",
        "batch_shape",
        "setup_s",
        "process_wall_s",
        "device",
    )
    return {s: [{k: r.get(k) for k in keep} for r in rs] for s, rs in runs.items()}


NOTES = [
    "each system uses its own data loader, augmentation pipeline and storage (autoseg: "
    "MRI/ultrasound augmentation profiles on .npy arrays; nnU-Net: default transforms on "
    "blosc2-compressed arrays), its own Dice + CE loss and its own U-Net class (nnU-Net's "
    "convolutions carry a bias before instance norm, autoseg's do not)",
    "nnU-Net's on_train_start also builds its validation loader and prefetches a batch of it "
    "(in its peak memory); autoseg builds its validation loader after an epoch's iterations",
    "peak memory is the peak PSS of the whole measurement process tree over its life "
    "(imports and set-up included); CPU seconds per iteration count the training process only "
    "(with --threads > 1 they include OpenMP threads spin-waiting)",
    "autoseg's own plan on a CPU comes from the time-budget rule, which times steps on this "
    "machine: it follows the machine's load at planning time (the plan is in 'configurations')",
]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--driver"]:
        return driver_main(argv[1], argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--only",
        nargs="+",
        default=list(PHANTOMS),
        choices=sorted(PHANTOMS),
        help="brats: the BraTS subset (multi-channel 3D), skipped when ../shared/data lacks it",
    )
    parser.add_argument("--plans", nargs="+", default=["autoseg", "nnunet"], choices=PLAN_LABELS)
    parser.add_argument("--cases", type=int, default=20, help="3D thigh phantoms")
    parser.add_argument("--frames", type=int, default=30, help="2D wrist phantoms")
    parser.add_argument("--iterations", type=int, default=20, help="timed per measurement")
    parser.add_argument("--warmup", type=int, help="untimed first (default 3, cuda 20)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per system")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads")
    parser.add_argument("--cpus", help="pin everything to these CPUs, e.g. 1 or 0,1")
    parser.add_argument("--workers", type=int, default=0, help="augmentation processes")
    parser.add_argument(
        "--time-budget",
        help=f"autoseg's planning budget (default {DEFAULT_TIME_BUDGET} on cpu, none on cuda)",
    )
    parser.add_argument("--gpu-memory", type=float, help="autoseg's planning memory budget, GB")
    parser.add_argument("--max-voxels", type=int, help="cap batch x patch voxels (both systems)")
    parser.add_argument("--patch-3d", type=int, nargs=3, metavar=("Z", "Y", "X"))
    parser.add_argument("--batch-3d", type=int)
    parser.add_argument("--patch-2d", type=int, nargs=2, metavar=("Y", "X"))
    parser.add_argument("--batch-2d", type=int)
    parser.add_argument("--json", default=str(BENCH_DIR / "results" / "training.json"))
    parser.add_argument("--workdir", type=Path, help="keep data here (default: a temp folder)")
    parser.add_argument(
        "--autoseg-python",
        type=Path,
        default=AUTOSEG_PYTHON if AUTOSEG_PYTHON.exists() else Path(sys.executable),
    )
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = 20 if args.device == "cuda" else 3
    if args.time_budget is None and args.device == "cpu":
        args.time_budget = DEFAULT_TIME_BUDGET
    if not BENCH_PYTHON.exists():
        print(f"{BENCH_PYTHON} not found: build it with benchmarks/make_bench_venv.sh")
        return 2
    if args.cpus:
        os.sched_setaffinity(0, parse_cpus(args.cpus))  # inherited by every process started
    env = thread_env(dict(os.environ), args.threads, args.workers)
    os.environ.update({k: env[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    import torch

    torch.set_num_threads(args.threads)  # autoseg's planner times steps with these threads

    print(
        f"device {args.device}, {args.threads} thread(s), {args.workers} augmentation "
        f"worker(s), CPUs {sorted(os.sched_getaffinity(0))}; {args.warmup} warm-up + "
        f"{args.iterations} timed iterations x {args.repeats} repetitions per system"
    )
    tmp = tempfile.TemporaryDirectory(prefix="bench_train_") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    from benchmarks.accuracy_cv import missing_source

    results, described, memory_notes, skipped = [], {}, [], []
    try:
        for key in args.only:
            ph = PHANTOMS[key]
            if ph.shared is not None and (missing := missing_source(ph.shared)) is not None:
                print(f"\n{ph.label}: skipped, {missing} not found (the shared data)")
                skipped.append(key)
                continue
            n = args.cases if key == "3d" else args.frames
            t0 = time.perf_counter()
            prep = prepare_phantom(ph, work, n, args)
            what = ph.shared or f"{n} phantoms"
            print(f"\n{ph.label}: {what}; autoseg plan: {prep.plan_note} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
            for which in args.plans:
                make = pair_autoseg_plan if which == "autoseg" else pair_nnunet_plan
                pair = make(prep, work, env, args)
                cfg = pair.description["autoseg_configuration"]
                arch = cfg["architecture"]
                print(
                    f"  [{pair.label}] patch {cfg['patch_size']} batch {cfg['batch_size']}, "
                    f"features {arch['features_per_stage']}, strides {arch['strides']} "
                    f"({pair.sizes_note})",
                    flush=True,
                )
                runs = run_pair(pair, args, env, work / "runs" / f"{key}_{which}")
                sizes = f"patch {cfg['patch_size']} batch {cfg['batch_size']} ({pair.sizes_note})"
                results.extend(make_results(pair.label, runs, args.device == "cuda", sizes))
                if (check := memory_check(pair.label, runs)) is not None:
                    print(f"  {check}", flush=True)
                    memory_notes.append(check)
                described[pair.label] = {**pair.description, "runs": _short_runs(runs)}
    finally:
        if tmp is not None:
            tmp.cleanup()
    from benchmarks.results import format_table, write_results

    print("\n" + format_table(results))
    settings = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("json", "workdir")
    }
    notes = [*NOTES, *memory_notes]
    if skipped:
        notes.append(f"skipped, shared data absent: {', '.join(skipped)}")
    path = write_results(
        args.json,
        "training",
        results,
        notes=notes,
        bench_python=BENCH_PYTHON,
        extra={"settings": settings, "configurations": described},
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
