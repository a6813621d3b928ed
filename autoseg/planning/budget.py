"""Fitting the plan to a training-time budget (``autoseg plan --time-budget 2h``).

The memory rules size networks for a GPU, as nnU-Net does. On a CPU such a plan cannot be
trained (nnU-Net's ``3d_fullres`` of the thigh phantom, 24 x 160 x 160 x batch 2, takes ~13 s
per iteration on 2 cores; its 250 000 iterations would take 38 days). With a time budget the
planner therefore *measures* how long one training iteration of each configuration takes on
the planning device and shrinks what does not fit:

1. The budget covers training every planned configuration x 5 folds (what
   ``autoseg plan-and-train`` does): each (configuration, fold) gets
   ``budget / (configurations x 5)`` of wall-clock time, less a start-up reserve
   (:func:`reserve_seconds`) and an estimate of the end-of-fold validation (sliding window
   with mirroring over the fold's validation cases).
2. The remaining time buys epochs of ``iterations_per_epoch`` iterations, each iteration the
   measured network step plus the data loader's time (:func:`loader_seconds`: on a CPU it
   shares the cores; on a GPU its worker processes overlap with the step), each epoch also
   :data:`VAL_BATCHES_PER_EPOCH` forward batches for the pseudo Dice.
3. A configuration is kept as planned when that gives at least :data:`MIN_ITERATIONS`
   iterations per fold. Otherwise it moves down its *ladder* (:func:`time_ladder`) and takes
   the first rung that does: the batch towards 2, then the feature widths halved (32 -> 16 ->
   8 at the first stage, the cap scaled alike; the topology kept), then the patch reduced
   towards a floor (:func:`patch_floor`) in the memory rule's shrinking order, re-deriving the
   topology (a stage is dropped when an axis gets too short to pool).
4. When a configuration fits at no rung, configurations are dropped (:func:`fit_to_budget`:
   that one if it cannot fit even alone, else the last of :func:`keep_order`) so that the
   remaining ones get more time per fold; when none can reach MIN_ITERATIONS, the plan is a
   best effort with a warning (:func:`best_effort`).

The step timer is injectable (:data:`StepTimer`): the planner uses :class:`MeasuredStepTimer`
around the trainer's own step (:data:`StepMeasure`, handed in by the pipeline), tests a fake.
Measuring a large network on a CPU costs seconds per step, so the search
(:func:`first_fitting`) bisects the ladder and, before measuring a rung, predicts its time from
the nearest measured
smaller rung (scaled by :func:`activation_count`); a rung that would not fit even at
1/:data:`SCREEN_FACTOR` of that prediction is rejected unmeasured.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from autoseg.errors import AutosegError
from autoseg.planning.patch import MIN_BATCH, axis_to_shrink, fine_axes, minimal_patch
from autoseg.planning.plan import ConfigurationPlan
from autoseg.planning.registry import configuration_names
from autoseg.planning.resolution import Resolution
from autoseg.planning.schedule import DEFAULT_EPOCHS, DEFAULT_ITERATIONS_PER_EPOCH
from autoseg.planning.topology import architecture_block, fit_topology, total_stride

StepTimer = Callable[[dict[str, Any], tuple[int, ...], int], float]
"""(architecture block, patch size, batch size) -> seconds of one training iteration (forward,
Dice + cross-entropy over the deep-supervision outputs, backward, SGD step) on the device."""

N_FOLDS = 5
# Fixed cost of a fold besides its epochs: process start and imports, splits, network and
# loader set-up, final checkpoint. Measured on 2 CPU cores: 6.4-7.5 s per `autoseg train`
# process of one fold, of which ~3 s are imports paid once per process. On a GPU the
# trainer's torch.compile and cuDNN autotuning add ~1 min (nnU-Net's experience; not
# measured here).
STARTUP_S = {"cpu": 5.0, "cuda": 60.0}
# ... plus this share of the fold for timing noise (shared machines, data-loader hiccups).
NOISE_RESERVE = 0.05
# Fewest training iterations per fold worth planning. Phantoms, 2d at 8-128 features, batch 2,
# 10 epochs, fold 0 (documentation/planning.md, "Time budget"): 100-650 iterations ->
# validation Dice 0.00 in all 10 runs; 800 -> 0.85 and 0.88 (wrist) but 0.00 (thigh);
# 870-1200 -> 0.78-0.88 in all 5 runs.
MIN_ITERATIONS = 1000
# Iterations per fold a configuration should reach before the budget is spent on anything
# else (more configurations, more folds, a finer grid or a wider network): below it one model
# still gains more from training longer than an ensemble gains from more models. usgra-seg
# (documentation/planning.md, "Where the budget goes"): TODO measured curve.
TARGET_ITERATIONS = 6000
# At least 10 epochs, the pseudo-Dice / checkpoint rhythm (and poly learning-rate steps).
MIN_EPOCHS = 10
MAX_EPOCHS = DEFAULT_EPOCHS
MAX_ITERATIONS_PER_EPOCH = DEFAULT_ITERATIONS_PER_EPOCH
# The trainer's per-epoch pseudo Dice: this many forward batches without mirroring.
VAL_BATCHES_PER_EPOCH = 10
# Forward pass (eval mode, no gradients) of a batch / one training step of the same batch.
# Measured on 2 CPU cores for 2D and 3D U-Nets of 8-16 base features: 0.23-0.31.
FORWARD_FRACTION = 0.3
# End-of-fold validation: sliding windows overlapping by half a patch, all 2^dim mirrorings.
WINDOW_OVERLAP = 0.5
# Data loading on a CPU, one process, sampling + full augmentation (bench_dataloader.py):
# 0.5 ms per batch + 25 ns per voxel of every array (image channels and the label map).
LOADER_S_PER_BATCH = 0.5e-3
LOADER_S_PER_VOXEL = 25e-9
# ... and the trainer's loader worker processes take cores from the network's threads, plus
# inter-process transfer: measured in two `autoseg train` folds on 2 cores (thigh phantom 2d,
# 8-128 features): iterations of 0.0445 and 0.0495 s for steps of 0.038 and 0.040 s timed
# alone, i.e. 14-17 % above step + loader.
CPU_WORKER_CONTENTION = 0.15
# On a GPU the loader runs in the trainer's worker processes (its default: 2) beside the step.
GPU_LOADER_WORKERS = 2
# Per epoch besides its iterations and pseudo Dice: new loaders (worker start) for training
# and validation, checkpoint and log writes. Measured 0.2-0.3 s on 2 CPU cores.
EPOCH_OVERHEAD_S = 0.2
# Shrinking ladder: batch in steps of 1/sqrt(2), widths halved twice (32 -> 16 -> 8), then the
# patch towards max(2 x the p95 foreground extent, 32 voxels in-plane).
BATCH_STEP = 1 / math.sqrt(2)
WIDTH_DIVISORS = (1, 2, 4)
FLOOR_EXTENT_FACTOR = 2.0
MIN_PATCH_IN_PLANE = 32
# A rung predicted slower than this many times what would fit is rejected unmeasured.
SCREEN_FACTOR = 4.0
# Measuring: warm-up step(s), then up to this many timed steps within the time cap.
MEASURE_WARMUP = 1
MEASURE_REPEATS = 5
MEASURE_SECONDS = {"cpu": 2.0, "cuda": 3.0}
# Preference when configurations must go: the first ones are kept longest.
KEEP_ORDER = ("3d_fullres", "2d", "2.5d", "3d_lowres")
# Best effort (no configuration reaches MIN_ITERATIONS): the most preferred configuration
# whose minimum budget is within this factor of the smallest.
BEST_EFFORT_SLACK = 1.25


def _x(values: Sequence[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def _s(seconds: float) -> str:
    return f"{seconds:.3g} s"


# ---------------------------------------------------------------- measuring


StepMeasure = Callable[..., float]
"""``(arch, patch, batch, *, device, max_seconds, channels_last) -> seconds`` of one real
training iteration: :func:`autoseg.training.timing.trainer_step_seconds` (the trainer's own
step; the training stage injects it, planning does not import training)."""


def time_step(
    step: Callable[[], object],
    device_type: str,
    *,
    warmup: int = MEASURE_WARMUP,
    repeats: int = MEASURE_REPEATS,
    max_seconds: float | None = None,
    synchronize: Callable[[], object] | None = None,
) -> float:
    """Median seconds of ``step()`` (``synchronize()`` after each, for a GPU's queue).

    ``warmup`` calls first (allocation, cuDNN autotuning; at least one on a CPU), then up to
    ``repeats`` timed calls while the total stays under ``max_seconds`` (default
    :data:`MEASURE_SECONDS`: 2 s on CPU, 3 s on cuda). On a CPU, where the first step costs
    about what later ones do (measured within +-25 %), a warm-up that alone exceeds the cap is
    returned as the measurement, so a 13 s step costs 13 s and not 52."""
    cap = MEASURE_SECONDS.get(device_type, 2.0) if max_seconds is None else max_seconds

    def once() -> float:
        start = time.perf_counter()
        step()
        if synchronize is not None:
            synchronize()
        return time.perf_counter() - start

    began = time.perf_counter()
    first = [once() for _ in range(max(warmup, 1 if device_type == "cpu" else 0))]
    if first and device_type == "cpu" and time.perf_counter() - began >= cap:
        return float(first[-1])
    timed = [once()]
    while len(timed) < repeats and time.perf_counter() - began < cap:
        timed.append(once())
    return float(statistics.median(timed))


class MeasuredStepTimer:
    """The planner's :data:`StepTimer`: ``measure`` (a :data:`StepMeasure`, the trainer's own
    step) on one device, each (architecture, patch, batch) measured once.

    On a CPU with more than one torch thread each step is also timed with one thread, and the
    faster setting counts (:meth:`threads`, written to the plan as ``cpu_threads`` for the
    trainer): a small network's step is mostly short operations, where waking the other
    threads costs more than they add (thigh phantom 2d, 8-128 features, patch 64x80: 0.015 s
    with one thread, 0.038 s with two under ``OMP_WAIT_POLICY=PASSIVE``; a 32-320 network at
    128x128: 0.15 vs 0.18 s the other way round). Then, with the faster thread count, in the
    channels-last layout too (:meth:`channels_last`, the plan's ``channels_last``): faster for
    narrow networks, slower for wide ones (:func:`autoseg.networks.precision.memory_format`)."""

    def __init__(self, measure: StepMeasure, device: str = "cpu", max_seconds: float | None = None):
        self.measure = measure
        self.device = device
        self.max_seconds = max_seconds
        self.cache: dict[tuple[str, tuple[int, ...], int], float] = {}
        self._threads: dict[tuple[str, tuple[int, ...], int], int] = {}  # CPU measurements
        self._layout: dict[tuple[str, tuple[int, ...], int], bool] = {}  # CPU measurements

    def __call__(self, arch: dict[str, Any], patch: tuple[int, ...], batch: int) -> float:
        key = _timer_key(arch, patch, batch)
        if key not in self.cache:
            import torch

            def timed(channels_last: bool = False) -> float:
                return self.measure(
                    arch,
                    patch,
                    batch,
                    device=self.device,
                    max_seconds=self.max_seconds,
                    channels_last=channels_last,
                )

            self.cache[key] = timed()
            if torch.device(self.device).type == "cpu":
                threads = torch.get_num_threads()
                if threads > 1:
                    torch.set_num_threads(1)
                    try:
                        one = timed()
                    finally:
                        torch.set_num_threads(threads)
                    if one <= self.cache[key]:
                        self.cache[key], threads = one, 1
                self._threads[key] = threads
                before = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    last = timed(channels_last=True)
                finally:
                    torch.set_num_threads(before)
                self._layout[key] = last < self.cache[key]
                self.cache[key] = min(last, self.cache[key])
        return self.cache[key]

    def channels_last(self, arch: dict[str, Any], patch: Sequence[int], batch: int) -> bool | None:
        """Whether the measured CPU step was faster in the channels-last layout (None: not
        measured here, or not on a CPU)."""
        return self._layout.get(_timer_key(arch, patch, batch))

    def threads(self, arch: dict[str, Any], patch: Sequence[int], batch: int) -> int | None:
        """The torch thread count a measured CPU step was fastest with (None: not measured
        here, or not on a CPU)."""
        return self._threads.get(_timer_key(arch, patch, batch))


def _timer_key(arch: dict[str, Any], patch: Sequence[int], batch: int) -> tuple:
    """One (architecture, patch, batch) as a hashable key: the timers measure each once."""
    return (json.dumps(arch, sort_keys=True), tuple(int(p) for p in patch), int(batch))


class CachedTimer:
    """Memoises any :data:`StepTimer` and counts the questions it had to pass on."""

    def __init__(self, timer: StepTimer):
        self.timer = timer
        self.cache: dict[tuple[str, tuple[int, ...], int], float] = {}

    def __call__(self, arch: dict[str, Any], patch: tuple[int, ...], batch: int) -> float:
        key = _timer_key(arch, patch, batch)
        if key not in self.cache:
            self.cache[key] = float(self.timer(arch, tuple(patch), int(batch)))
        return self.cache[key]


# ---------------------------------------------------------------- the cost of one fold


def fold_seconds(time_budget_s: float, n_configs: int, n_folds: int = N_FOLDS) -> float:
    """Wall-clock seconds of one (configuration, fold): the budget split evenly."""
    return float(time_budget_s) / (max(n_configs, 1) * n_folds)


def reserve_seconds(fold_s: float, device_type: str) -> float:
    """What a fold keeps back from its epochs besides validation: start-up + 5 % for noise."""
    return STARTUP_S.get(device_type, STARTUP_S["cpu"]) + NOISE_RESERVE * fold_s


def loader_seconds(device_type: str, batch: int, patch: Sequence[int], channels: int) -> float:
    """Seconds one training batch costs the data loader *on the step's critical path*.

    CPU: the loader (sampling, spatial + intensity augmentation) works on the same cores as
    the network, so its whole time adds to the step. ``benchmarks/bench_dataloader.py``,
    one process, 2 cores: 3D patch 24x32x32 x 2 -> 3 ms, 24x64x64 -> 9 ms, 24x80x96 -> 10-15
    ms, 24x160x160 -> 48-50 ms; 2D 32x32 x 2 -> 0.7-1.2 ms, 64x64 -> 1.1-1.2 ms, 128x128 ->
    1.9-2.2 ms, 256x320 -> 7-11 ms: 0.5 ms + 25 ns per voxel of each array (image channels +
    label). That is 7-15 % of the step of the small networks a CPU budget leads to.
    GPU: the trainer's worker processes prepare batches while the GPU computes; the loader is
    only waited for when one worker's share exceeds the step, which :func:`iteration_seconds`
    accounts for.
    """
    arrays = channels + 1
    return LOADER_S_PER_BATCH + LOADER_S_PER_VOXEL * batch * math.prod(patch) * arrays


def iteration_seconds(step_s: float, loader_s: float, device_type: str) -> float:
    """One training iteration: on a CPU the step, 15 % for the loader workers competing for
    its cores (:data:`CPU_WORKER_CONTENTION`), and the loader's own work; on a GPU the slower
    of the step and the loader spread over :data:`GPU_LOADER_WORKERS` workers."""
    if device_type == "cuda":
        return max(step_s, loader_s / GPU_LOADER_WORKERS)
    return step_s * (1 + CPU_WORKER_CONTENTION) + loader_s


def window_count(
    image: Sequence[int], patch: Sequence[int], overlap: float = WINDOW_OVERLAP
) -> int:
    """Sliding windows covering ``image`` with ``patch`` at ``overlap`` (the predictor's rule:
    steps of at most ``patch * (1 - overlap)``, first window at 0, last at the end)."""
    n = 1
    for size, p in zip(image, patch):
        if p < size:
            n *= math.ceil((size - p) / max(1, int(p * (1 - overlap)))) + 1
    return n


def validation_mirroring(device_type: str) -> bool:
    """Whether a time-budgeted plan's end-of-fold validation mirrors (test-time augmentation).

    On a CPU, mirroring multiplies the validation cost by 4 (2D) or 8 (3D) and would eat the
    time the folds need to learn (on the demo's thigh phantom, validation alone outgrew a 1-min
    fold); it changes the out-of-fold Dice by a little only, while ``autoseg predict`` still
    mirrors by default. On a GPU the validation is cheap and mirrors, as nnU-Net does. The
    trainer applies the same rule (autoseg.evaluation.validation.validate_fold).
    """
    return device_type != "cpu"


@dataclass(frozen=True)
class FoldContext:
    """What one fold of a configuration costs besides its training iterations."""

    device_type: str
    n_val_cases: int  # validation cases of one fold
    image_shape: tuple[int, ...]  # median image in the network's axes (crop: the window)
    images_per_case: int = 1  # 2d / 2.5d of 3D data: the slices of a volume
    extra_validation_s: float = 0.0  # crop: its localiser predicting the same cases

    def validation_seconds(self, step_s: float, batch: int, patch: Sequence[int]) -> float:
        """End-of-fold validation: every validation case predicted by sliding windows, each
        window a forward pass costing FORWARD_FRACTION of a training step's share per sample;
        with all 2^dim mirrorings on a GPU, without on a CPU (see
        :func:`validation_mirroring`)."""
        windows = window_count(self.image_shape, patch) * self.images_per_case
        mirrors = 2 ** len(patch) if validation_mirroring(self.device_type) else 1
        forwards = self.n_val_cases * windows * mirrors
        return forwards * FORWARD_FRACTION * step_s / batch + self.extra_validation_s


@dataclass(frozen=True)
class FoldSchedule:
    """The training length bought by one fold's time for one measured step."""

    epochs: int
    iterations_per_epoch: int
    train_budget_s: float  # what the epoch loop may take
    validation_s: float  # end-of-fold validation estimate
    iteration_s: float  # step + loader
    epoch_s: float  # iterations + per-epoch pseudo Dice

    @property
    def iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    @property
    def predicted_train_s(self) -> float:
        return self.epochs * self.epoch_s


def fold_schedule(
    fold_s: float,
    step_s: float,
    batch: int,
    patch: Sequence[int],
    channels: int,
    context: FoldContext,
) -> FoldSchedule:
    """Epochs x iterations per epoch that fit one fold.

    The epoch loop gets ``fold_s - reserve - validation`` (:func:`reserve_seconds`,
    :meth:`FoldContext.validation_seconds`). Iterations per epoch
    = what a tenth of that buys (at least MIN_EPOCHS epochs: the pseudo-Dice and checkpoint
    rhythm), at most nnU-Net's 250; epochs = how many such epochs fit, at most 1000. A huge
    budget therefore gives nnU-Net's 1000 x 250.
    """
    loader = loader_seconds(context.device_type, batch, patch, channels)
    iteration = iteration_seconds(step_s, loader, context.device_type)
    validation = context.validation_seconds(step_s, batch, patch)
    pseudo_dice = VAL_BATCHES_PER_EPOCH * FORWARD_FRACTION * step_s
    train = fold_s - reserve_seconds(fold_s, context.device_type) - validation
    per_epoch = (train / MIN_EPOCHS - pseudo_dice - EPOCH_OVERHEAD_S) / iteration
    ipe = int(min(MAX_ITERATIONS_PER_EPOCH, max(1, math.floor(per_epoch)))) if train > 0 else 1
    epoch_s = ipe * iteration + pseudo_dice + EPOCH_OVERHEAD_S
    epochs = int(min(MAX_EPOCHS, max(0, math.floor(train / epoch_s)))) if train > 0 else 0
    return FoldSchedule(epochs, ipe, max(train, 0.0), validation, iteration, epoch_s)


def schedule_fits(schedule: FoldSchedule, iterations: int = MIN_ITERATIONS) -> bool:
    """Enough iterations (MIN_ITERATIONS: enough to learn something) in at least one epoch."""
    return schedule.epochs >= 1 and schedule.iterations >= iterations


def rung_context(context: FoldContext, candidate: Candidate) -> FoldContext:
    """The fold's costs on the candidate's grid: a coarser grid has a smaller median image
    (fewer validation windows)."""
    if candidate.resolution is None:
        return context
    return replace(context, image_shape=tuple(candidate.resolution.median_shape))


# ---------------------------------------------------------------- the ladder


# Tiers of the ladder: what a rung gives up. FREE rungs (smaller batch, a coarser grid that the
# reference masks survive, narrower networks) are taken to reach TARGET_ITERATIONS; CONTEXT
# rungs (a patch cut towards the context floor) and LAST rungs (below the floor) only to reach
# MIN_ITERATIONS.
FREE, CONTEXT, LAST = 0, 1, 2


@dataclass(frozen=True, eq=False)
class Candidate:
    """One network / patch / batch (and grid) the time search may choose; ``change`` names the
    rung, ``resolution`` the coarser grid it trains on (None: the configuration's own)."""

    architecture: dict[str, Any]
    patch: tuple[int, ...]
    batch: int
    width_divisor: int = 1
    change: str = "memory plan"
    resolution: Resolution | None = None
    tier: int = FREE

    def describe(self) -> str:
        feats = self.architecture["features_per_stage"]
        grid = "" if self.resolution is None else f", {self.resolution.factor:g}x coarser grid"
        return (
            f"patch {_x(self.patch)}, batch {self.batch}, features {feats[0]}-{feats[-1]}, "
            f"{len(feats)} stages{grid}"
        )

    def spacing(self, config: ConfigurationPlan) -> list[float]:
        r = self.resolution
        return list(config.spacing) if r is None else list(r.spacing)

    def median_shape(self, config: ConfigurationPlan) -> list[int]:
        r = self.resolution
        return list(config.median_shape) if r is None else list(r.median_shape)


def batch_steps(batch: int) -> list[int]:
    """``batch`` down to 2 in steps of 1/sqrt(2): 24 -> 16, 11, 7, 4, 2 (time is about
    proportional to the batch, so each rung saves ~30 %)."""
    steps = [int(batch)]
    while steps[-1] > MIN_BATCH:
        steps.append(max(MIN_BATCH, int(steps[-1] * BATCH_STEP)))
    return steps


def scale_features(arch: dict[str, Any], divisor: int) -> dict[str, Any]:
    """The architecture with every stage's width divided by ``divisor`` (32-320 / 2 = 16-160,
    / 4 = 8-80); strides, kernels and blocks unchanged."""
    out = dict(arch)
    out["features_per_stage"] = [max(1, int(f) // divisor) for f in arch["features_per_stage"]]
    return out


def patch_floor(
    patch: Sequence[int], spacing: Sequence[float], extent_mm: Sequence[float] | None
) -> list[int]:
    """The smallest patch the time search goes to, per axis: 2 x the p95 foreground extent
    (the structure plus half its size of context on each side), at least 32 voxels along
    in-plane (finest) axes and the minimal network input along coarser ones; never more than
    the planned patch. The sciatic nerve, ~14 mm at 0.75 mm: 38 voxels; a nerve running
    through the stack keeps the whole stack along z."""
    fine = fine_axes(spacing)
    minimal = minimal_patch(patch, spacing)
    floor = []
    for a, (p, s) in enumerate(zip(patch, spacing)):
        f = MIN_PATCH_IN_PLANE if fine[a] else minimal[a]
        if extent_mm is not None:
            f = max(f, math.ceil(FLOOR_EXTENT_FACTOR * extent_mm[a] / s - 1e-6))
        floor.append(int(min(f, p)))
    return floor


def time_ladder(
    config: ConfigurationPlan,
    floor: Sequence[int],
    hard_floor: Sequence[int] | None = None,
    *,
    resolutions: Sequence[Resolution] = (),
    extent_mm: Sequence[float] | None = None,
) -> list[Candidate]:
    """The configuration's rungs, slowest first: the memory plan; the batch down to 2
    (:func:`batch_steps`); each coarser grid of ``resolutions`` at batch 2, the patch covering
    the same millimetres and the topology re-derived (:func:`resolution_rung`); the widths
    halved twice at batch 2 on the coarsest grid (:func:`scale_features`); then the patch
    shrunk towards ``floor`` at batch 2 and a quarter of the widths, one total stride at a time
    along the axis with the largest patch / median-image ratio (the memory rule's order),
    re-deriving the topology each time (an axis too short to pool loses a stage); then, with
    ``hard_floor``, on below ``floor`` towards it (last resorts, marked "below the context
    floor"). ``floor`` and ``hard_floor`` are in the configuration's own voxels; on a coarser
    grid they are recomputed there from ``extent_mm`` (:func:`patch_floor`). Independent of
    the budget, so a larger budget can only stop on an earlier rung. Rungs are tiered
    (:data:`FREE`, :data:`CONTEXT`, :data:`LAST`): what they give up."""
    arch0 = dict(config.architecture)
    patch0 = tuple(int(p) for p in config.patch_size)
    ladder = [Candidate(arch0, patch0, config.batch_size)]
    for b in batch_steps(config.batch_size)[1:]:
        ladder.append(Candidate(arch0, patch0, b, 1, f"batch {config.batch_size} -> {b}"))
    batch = ladder[-1].batch
    for r in resolutions:
        ladder.append(resolution_rung(config, r, batch))
    widest, coarsest = ladder[-1].architecture, ladder[-1].resolution
    for d in WIDTH_DIVISORS[1:]:
        arch = scale_features(widest, d)
        feats = arch["features_per_stage"]
        wide = widest["features_per_stage"]
        change = f"features {wide[0]}-{wide[-1]} -> {feats[0]}-{feats[-1]}"
        ladder.append(Candidate(arch, ladder[-1].patch, batch, d, change, coarsest))
    if coarsest is not None:
        start = ladder[-1].patch
        floor = patch_floor(start, coarsest.spacing, extent_mm)
        if hard_floor is not None:
            hard_floor = patch_floor(start, coarsest.spacing, None)
    ladder += _patch_rungs(config, ladder[-1], floor, "", CONTEXT)
    if hard_floor is not None:
        ladder += _patch_rungs(config, ladder[-1], hard_floor, " (below the context floor)", LAST)
    return ladder


def resolution_rung(config: ConfigurationPlan, resolution: Resolution, batch: int) -> Candidate:
    """The memory plan's network on a coarser grid: the patch covers the same millimetres
    (divided by the factor along the fine axes, at most the median image there), the topology
    and widths re-derived for that patch and spacing as the memory rule derives them."""
    arch0 = config.architecture
    wanted = [
        min(max(1, round(p * s / r)), max(m, 1))
        for p, s, r, m in zip(
            config.patch_size, config.spacing, resolution.spacing, resolution.median_shape
        )
    ]
    patch, topo = fit_topology(resolution.spacing, wanted)
    block = architecture_block(
        topo,
        network=arch0["network"],
        in_channels=arch0["in_channels"],
        num_classes=arch0["num_classes"],
    )
    change = (
        f"spacing {_x(config.spacing)} -> {_x(resolution.spacing)} ({resolution.factor:g}x "
        f"coarser), patch {_x(patch)}"
    )
    return Candidate(block, tuple(patch), batch, 1, change, resolution)


def _patch_rungs(
    config: ConfigurationPlan, start: Candidate, floor: Sequence[int], note: str, tier: int
) -> list[Candidate]:
    """Rungs shrinking ``start``'s patch one total stride at a time towards ``floor`` (on
    ``start``'s grid)."""
    arch0, divisor = config.architecture, WIDTH_DIVISORS[-1]
    patch, arch = list(start.patch), start.architecture
    spacing, median = start.spacing(config), start.median_shape(config)
    rungs: list[Candidate] = []
    while True:
        axis = axis_to_shrink(patch, median, spacing, floor)
        if axis is None:
            break
        stride = total_stride(arch)
        shrunk = list(patch)
        shrunk[axis] = max(patch[axis] - stride[axis], floor[axis])
        new_patch, topo = fit_topology(spacing, shrunk)
        if new_patch == patch:  # rounding gave back the same patch: nothing left to shrink
            break
        block = architecture_block(
            topo,
            network=arch0["network"],
            in_channels=arch0["in_channels"],
            num_classes=arch0["num_classes"],
        )
        arch = scale_features(block, divisor)
        change = f"patch {_x(patch)} -> {_x(new_patch)}{note}"
        rungs.append(
            Candidate(arch, tuple(new_patch), start.batch, divisor, change, start.resolution, tier)
        )
        patch = new_patch
    return rungs


def activation_count(arch: dict[str, Any], patch: Sequence[int], batch: int) -> int:
    """Elements of all conv outputs of one forward pass (encoder blocks, transposed convs,
    decoder convs). On a CPU the step time follows it better than the FLOPs (instance norm and
    the element-wise ops are memory-bound): 7-16 ns per element for networks of 8-16 base
    features on 2 cores, up to ~50 ns for the smallest (fixed per-layer overhead)."""
    feats, strides = arch["features_per_stage"], arch["strides"]
    current = [int(p) for p in patch]
    total = 0
    n = len(feats)
    for i in range(n):
        current = [max(1, c // s) for c, s in zip(current, strides[i])]
        convs = arch["n_blocks_per_stage"][i]
        if i < n - 1:
            convs += 1 + arch["n_conv_per_stage_decoder"][i]
        total += convs * feats[i] * math.prod(current)
    return total * batch


@dataclass
class LadderSearch:
    """Result of :func:`first_fitting`: the chosen rung (None: not even the last fits) and
    every rung looked at, with its measured or (``screened``) predicted seconds."""

    index: int | None
    measured: dict[int, float] = field(default_factory=dict)
    screened: dict[int, float] = field(default_factory=dict)


def first_fitting(
    ladder: Sequence[Candidate],
    timer: StepTimer,
    fits: Callable[[Candidate, float], bool],
    necessary: Callable[[Candidate, float], bool] | None = None,
    screen_factor: float | None = SCREEN_FACTOR,
) -> LadderSearch:
    """The first (largest) rung whose measured step time ``fits``.

    ``necessary`` is a condition implied by ``fits`` that only gets easier down the ladder
    (enough training iterations, validation left out); ``fits`` itself need not be monotone:
    end-of-fold validation takes more sliding windows as the patch shrinks, so a small patch
    can cost more in total than a middle one. The search measures the last rung (cheap; when
    even it fails ``necessary``, nothing fits), bisects for the first rung meeting
    ``necessary`` (~log2(rungs) measurements), then walks down from there to the first rung
    that ``fits`` (every rung above that one failed ``necessary``, hence ``fits``).

    With ``screen_factor``, a rung whose time predicted from the nearest measured smaller rung
    (x :func:`activation_count` ratio) would fail ``necessary`` even divided by the factor is
    rejected without measuring it. Predictions from a smaller rung overestimate (its fixed
    per-layer overhead is scaled up too), hence the factor.
    """
    necessary = necessary or fits
    search = LadderSearch(None)

    def measure(i: int) -> float:
        if i not in search.measured:
            c = ladder[i]
            search.measured[i] = float(timer(c.architecture, c.patch, c.batch))
            search.screened.pop(i, None)
        return search.measured[i]

    def maybe(i: int) -> bool:
        c = ladder[i]
        if i not in search.measured and screen_factor is not None:
            below = [j for j in search.measured if j > i]
            if below:
                j = min(below)
                ref = ladder[j]
                ratio = activation_count(c.architecture, c.patch, c.batch) / max(
                    1, activation_count(ref.architecture, ref.patch, ref.batch)
                )
                predicted = search.measured[j] * ratio
                if not necessary(c, predicted / screen_factor):
                    search.screened[i] = predicted
                    return False
        return necessary(c, measure(i))

    last = len(ladder) - 1
    if not maybe(last):
        return search
    lo, hi = -1, last
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if maybe(mid):
            hi = mid
        else:
            lo = mid
    search.index = next((i for i in range(hi, last + 1) if fits(ladder[i], measure(i))), None)
    return search


# ---------------------------------------------------------------- whole plans


def keep_order(names: Sequence[str], localiser: str | None) -> list[str]:
    """Configurations, most wanted first; when time runs out the last ones go.

    ``crop`` exists only for tiny structures, where it is the configuration that sees the
    structure at full resolution with balanced classes, and it cannot run without its
    localiser: both come first. Then ``3d_fullres`` (nnU-Net's most often best), ``2d``,
    ``2.5d`` and ``3d_lowres``. 2D data has only ``2d``.
    """
    head = ["crop", localiser] if "crop" in names and localiser in names else []
    rest = [n for n in KEEP_ORDER if n in names and n not in head]
    other = [n for n in names if n not in head and n not in rest]
    return head + rest + other


def runnable(order: Sequence[str], localiser: str | None) -> list[str]:
    """The configurations trained for ``order``: a ``crop`` whose localiser is not among them
    is replaced by the localiser (a crop cannot be placed without it)."""
    names: list[str] = []
    for n in order:
        if n == "crop" and localiser not in order:
            n = localiser or n
        if n not in names:
            names.append(n)
    return names


@dataclass
class ConfigFit:
    """The time fit of one configuration."""

    name: str
    ladder: list[Candidate]
    search: LadderSearch
    schedule: FoldSchedule | None  # None when not even the last rung fits
    context: FoldContext
    required: int = MIN_ITERATIONS  # the iterations per fold it had to reach

    @property
    def candidate(self) -> Candidate:
        assert self.search.index is not None
        return self.ladder[self.search.index]

    @property
    def step_s(self) -> float:
        assert self.search.index is not None
        return self.search.measured[self.search.index]

    def why(self, fold_s: float) -> str:
        """The shrinks with their measured (or predicted) seconds per iteration."""
        seen = []
        for i in sorted(set(self.search.measured) | set(self.search.screened)):
            if i in self.search.measured:
                seen.append(f"{self.ladder[i].change}: {_s(self.search.measured[i])}")
            else:
                seen.append(
                    f"{self.ladder[i].change}: ~{_s(self.search.screened[i])} predicted, "
                    "not measured"
                )
        top = self.search.measured.get(0, self.search.screened.get(0))
        head = f"fold budget {_s(fold_s)}; memory plan ({self.ladder[0].describe()})"
        head += "" if top is None else f" ~{_s(top)}/iteration"
        if self.schedule is None or self.search.index is None:
            return head + f"; no rung fits {self.required} iterations (" + "; ".join(seen) + ")"
        s = self.schedule
        verdict = (
            "kept"
            if self.search.index == 0
            else f"shrunk to rung {self.search.index} ({self.candidate.describe()})"
        )
        if self.candidate.tier == LAST:
            verdict += ", a patch chosen below the context floor"
        return (
            f"{head} -> {verdict}: {_s(self.step_s)}/iteration measured + "
            f"{_s(s.iteration_s - self.step_s)} loader and its workers -> {s.epochs} epochs x "
            f"{s.iterations_per_epoch} iterations ({s.iterations} "
            f"{'>=' if s.iterations >= TARGET_ITERATIONS else '<'} {TARGET_ITERATIONS} target"
            f"{'' if s.iterations >= TARGET_ITERATIONS else f', >= {MIN_ITERATIONS} minimum'}), "
            f"predicted {_s(s.predicted_train_s)} training + {_s(s.validation_s)} validation "
            f"of {_s(fold_s)}; rungs timed: " + "; ".join(seen)
        )


@dataclass
class BudgetFit:
    """The time fit of a whole plan: kept configurations and why the others went."""

    fold_s: float
    configs: dict[str, ConfigFit]
    dropped: list[str]
    notes: list[str]
    warning: str | None = None  # set when no configuration reaches MIN_ITERATIONS
    n_folds: int = N_FOLDS  # folds trained: N_FOLDS (cross-validation) or 1 (one split)


def fit_configuration(
    name: str,
    config: ConfigurationPlan,
    *,
    fold_s: float,
    timer: StepTimer,
    context: FoldContext,
    extent_mm: Sequence[float] | None,
    screen_factor: float | None = SCREEN_FACTOR,
    below_floor: bool = False,
    resolutions: Sequence[Resolution] = (),
    required: int = MIN_ITERATIONS,
) -> ConfigFit:
    """The rung of the configuration's ladder to train, or none (``schedule`` None).

    First the first :data:`FREE` rung (smaller batch, coarser grid, narrower network) that
    trains :data:`TARGET_ITERATIONS` per fold. When none does and ``required`` is below the
    target: the fastest FREE rung if it trains ``required`` iterations, else the first later
    rung (a patch cut towards the context floor; with ``below_floor`` also beyond it, the last
    resort of :func:`fit_to_budget`) that does."""
    floor = patch_floor(config.patch_size, config.spacing, extent_mm)
    hard = patch_floor(config.patch_size, config.spacing, None) if below_floor else None
    ladder = time_ladder(config, floor, hard, resolutions=resolutions, extent_mm=extent_mm)
    channels = config.architecture["in_channels"]

    def schedule_of(c: Candidate, step_s: float, validation: bool = True) -> FoldSchedule:
        ctx = rung_context(context, c)
        if not validation:
            ctx = replace(ctx, n_val_cases=0, extra_validation_s=0.0)
        return fold_schedule(fold_s, step_s, c.batch, c.patch, channels, ctx)

    def reaching(n: int) -> tuple[Callable[[Candidate, float], bool], ...]:
        return (
            lambda c, t: schedule_fits(schedule_of(c, t), n),
            lambda c, t: schedule_fits(schedule_of(c, t, validation=False), n),
        )

    timer = CachedTimer(timer)
    n_free = sum(1 for c in ladder if c.tier == FREE)
    search = first_fitting(ladder[:n_free], timer, *reaching(TARGET_ITERATIONS), screen_factor)
    if search.index is None and required < TARGET_ITERATIONS:
        last = n_free - 1
        if schedule_fits(schedule_of(ladder[last], timer(*_args(ladder[last]))), required):
            search.index = last
            search.measured[last] = timer(*_args(ladder[last]))
        else:
            rest = first_fitting(ladder, timer, *reaching(required), screen_factor)
            rest.measured.update(search.measured)
            rest.screened.update(
                {i: t for i, t in search.screened.items() if i not in rest.measured}
            )
            search = rest
    schedule = None
    if search.index is not None:
        chosen = ladder[search.index]
        schedule = schedule_of(chosen, search.measured[search.index])
    return ConfigFit(name, ladder, search, schedule, context, required)


def _args(c: Candidate) -> tuple[dict[str, Any], tuple[int, ...], int]:
    return c.architecture, c.patch, c.batch


def network_extent(
    extent_mm: Sequence[float] | None, config: ConfigurationPlan
) -> list[float] | None:
    """The p95 foreground extent (data axes) in the configuration's network axes."""
    if extent_mm is None:
        return None
    if config.slice_axis is not None:
        return [e for a, e in enumerate(extent_mm) if a != config.slice_axis]
    return list(extent_mm)


def fit_to_budget(
    configs: Mapping[str, ConfigurationPlan],
    *,
    time_budget_s: float,
    timer: StepTimer,
    device_type: str,
    n_cases: int,
    data_shape: Sequence[int],
    extent_mm: Sequence[float] | None,
    screen_factor: float | None = SCREEN_FACTOR,
    progress: Callable[[str], None] | None = None,
    resolutions: Mapping[str, Sequence[Resolution]] | None = None,
) -> BudgetFit:
    """Fit the configurations to ``time_budget_s``: which ones, at which rung, over how many
    folds (:func:`budget_passes`).

    Each pass drops configurations until every kept one reaches the pass's iterations per
    fold: a configuration that does not even with the budget to itself (a ``crop`` with its
    localiser) goes; otherwise the last of :func:`keep_order` goes, so that the others get
    more time per fold. ``data_shape`` is the median image at the target spacing in data axes
    (its slice count multiplies the validation of 2D configurations of 3D data);
    ``extent_mm`` the p95 foreground extent in data axes (None without foreground);
    ``resolutions`` the coarser grids each configuration may train on
    (:mod:`autoseg.planning.resolution`); those marked ``small`` (a structure under the pixel
    floor there) only in the passes below the iteration target: a grid the structure barely
    spans is worth taking to learn at all, never to buy five folds or a second configuration.
    Raises AutosegError when no configuration fits, naming the budget at which the cheapest
    one would.
    """
    crop = configs.get("crop")
    localiser = None if crop is None or crop.crop is None else crop.crop.localiser
    order_all = keep_order(list(configs), localiser)
    n_val = max(1, math.ceil(n_cases / N_FOLDS))
    timer = CachedTimer(timer)
    notes: list[str] = []
    hopeless: dict[str, ConfigFit] = {}
    grids = resolutions or {}

    def evaluate(
        names: Sequence[str], fold_s: float, below_floor: bool, required: int
    ) -> dict[str, ConfigFit]:
        fits: dict[str, ConfigFit] = {}
        # a localiser before its crop; registered configurations after the built-ins
        for name in [n for n in configuration_names() if n in names]:
            config = configs[name]
            extra = 0.0
            if config.crop is not None and config.crop.localiser in fits:
                loc = fits[config.crop.localiser].schedule
                extra = 0.0 if loc is None else loc.validation_s
            slices = 1 if config.slice_axis is None else int(data_shape[config.slice_axis])
            context = FoldContext(device_type, n_val, tuple(config.median_shape), slices, extra)
            if progress is not None:
                progress(name)
            fits[name] = fit_configuration(
                name,
                config,
                fold_s=fold_s,
                timer=timer,
                context=context,
                extent_mm=network_extent(extent_mm, config),
                screen_factor=screen_factor,
                below_floor=below_floor,
                resolutions=[
                    r for r in grids.get(name, ()) if required < TARGET_ITERATIONS or not r.small
                ],
                required=required,
            )
            if fits[name].schedule is None:
                break
        return fits

    def attempt(n_folds: int, required: int, below_floor: bool, one: bool) -> BudgetFit | None:
        order = list(order_all)
        while order:
            names = runnable(order[:1] if one else order, localiser)
            fold_s = fold_seconds(time_budget_s, len(names), n_folds)
            fits = evaluate(names, fold_s, below_floor, required)
            failed = next((n for n, f in fits.items() if f.schedule is None), None)
            if failed is None:
                dropped = [n for n in configs if n not in names]
                if dropped:
                    notes.append(
                        f"dropped {', '.join(dropped)}: with them not every configuration "
                        f"could train {required} iterations per fold; {len(names)} "
                        f"configuration(s) x {n_folds} fold(s) get {_s(fold_s)} each"
                    )
                return BudgetFit(fold_s, fits, dropped, notes, n_folds=n_folds)
            alone = [failed] if failed != "crop" else [localiser, "crop"]
            alone_fits = (
                fits
                if alone == names
                else evaluate(
                    alone, fold_seconds(time_budget_s, len(alone), n_folds), below_floor, required
                )
            )
            if alone_fits[failed].schedule is None:
                if required <= MIN_ITERATIONS:
                    hopeless[failed] = alone_fits[failed]
                gone = [failed] + (["crop"] if failed == localiser else [])
                if required <= MIN_ITERATIONS:
                    notes.append(
                        f"{failed} cannot train {required} iterations per fold at any rung "
                        f"even with the whole budget (down to "
                        f"{fits[failed].ladder[-1].describe()})"
                    )
            else:
                gone = [order[-1]]
            order = [n for n in order if n not in gone]
        return None

    for n_folds, required, below_floor, one in budget_passes():
        fit = attempt(n_folds, required, below_floor, one)
        if fit is not None:
            if n_folds < N_FOLDS:
                notes.append(
                    f"not every fold of a {N_FOLDS}-fold cross-validation could reach "
                    f"{TARGET_ITERATIONS} iterations: one model on one training split "
                    f"({N_FOLDS - 1}/{N_FOLDS} of the cases), its hold-out ({1}/{N_FOLDS}) "
                    "for selection and the estimate"
                )
            return fit
        if not below_floor and required == MIN_ITERATIONS:
            notes.append("no configuration fits above its context floor: trying smaller patches")
    return best_effort(hopeless, time_budget_s, notes, order_all, localiser)


def budget_passes() -> list[tuple[int, int, bool, bool]]:
    """Where the budget goes, in order of preference: (folds, iterations per fold each kept
    configuration must reach, whether patches may go below the context floor, whether only
    the most preferred configuration that fits is trained).

    1. nnU-Net's 5-fold cross-validation, when every kept configuration reaches
       :data:`TARGET_ITERATIONS` per fold (the ensemble of five models, and an out-of-fold
       estimate over every case);
    2. otherwise one training split (fold 0) at :data:`TARGET_ITERATIONS`: one model trained
       five times longer is worth more than five under-trained ones (usgra-seg at 25 min:
       nerve Dice 0.34 with five folds of ~1,200 iterations, 0.49 with one of ~6,000);
    3. when not even one configuration reaches the target alone: only the most preferred one
       that reaches :data:`MIN_ITERATIONS` on one split (a ``crop`` with its localiser) —
       splitting a budget that short over several would leave each even further from it; from
       this pass on the grids a structure spans under 16 px are offered too (the thigh phantom:
       one split on the full grid at 25 min, 0.924 held-back Dice, where five folds on the 1.5x
       grid scored 0.901; on that grid at 5 min, 0.903, where the full grid scored 0.874);
    4. the same with patches below the context floor: a label's box spans all its
       components (a plexus of nerves, or nerve + vessels across an ultrasound frame:
       usgra-seg's p95 box is 183x421 px of a 480x534 frame), so the floor can be the whole
       image, and 250 full-frame iterations (Dice 0, measured) lose to 1000 smaller-patch ones.
    """
    return [
        (N_FOLDS, TARGET_ITERATIONS, False, False),
        (1, TARGET_ITERATIONS, False, False),
        (1, MIN_ITERATIONS, False, True),
        (1, MIN_ITERATIONS, True, True),
    ]


def best_effort(
    hopeless: Mapping[str, ConfigFit],
    time_budget_s: float,
    notes: list[str],
    names: Sequence[str],
    localiser: str | None = None,
) -> BudgetFit:
    """When no configuration reaches MIN_ITERATIONS: the most preferred (:func:`keep_order`)
    of those whose budget for MIN_ITERATIONS is within 1.25x of the smallest (a crop needs its
    localiser and is not a candidate), alone, at its measured rung with the most iterations,
    with a warning naming that budget. Planning still succeeds so that a
    demo on a busy machine runs; the plan says loudly that it may not learn. Raises
    AutosegError only when not even one epoch of 1 iteration fits beside the validation."""
    budgets = {n: minimum_budget_s(f) for n, f in hopeless.items() if n != "crop"}
    known = {n: b for n, b in budgets.items() if b is not None}
    if not known:
        raise AutosegError(
            f"a time budget of {_s(time_budget_s)} cannot train any configuration",
            fix="give a longer --time-budget, or none",
        )
    # the most preferred of those needing at most BEST_EFFORT_SLACK x the smallest budget
    # (timings of similar configurations differ by noise more than by substance)
    smallest = min(known.values())
    order = keep_order(list(names), localiser)
    name = next(n for n in order if n in known and known[n] <= BEST_EFFORT_SLACK * smallest)
    fit = hopeless[name]
    fold_s = fold_seconds(time_budget_s, 1, 1)
    channels = fit.ladder[0].architecture["in_channels"]
    options = {
        i: fold_schedule(
            fold_s,
            step,
            fit.ladder[i].batch,
            fit.ladder[i].patch,
            channels,
            rung_context(fit.context, fit.ladder[i]),
        )
        for i, step in fit.search.measured.items()
    }
    i = max(options, key=lambda k: (options[k].iterations, -k))
    if options[i].epochs < 1:
        raise AutosegError(
            f"a time budget of {_s(time_budget_s)} cannot train any configuration: "
            f"{_s(fold_s)} does not even cover the start-up "
            f"({_s(reserve_seconds(fold_s, fit.context.device_type))}) and the validation "
            f"({_s(options[i].validation_s)}) of {name}",
            fix=f"give a longer --time-budget (at least ~{_duration(known[name])}), or none",
        )
    search = LadderSearch(i, dict(fit.search.measured), dict(fit.search.screened))
    chosen = ConfigFit(name, fit.ladder, search, options[i], fit.context)
    warning = (
        f"warning: {_s(time_budget_s)} is too short to train any configuration for "
        f"{MIN_ITERATIONS} iterations per fold (below that the phantoms' validation Dice stays "
        f"~0); planned {name} alone with {options[i].iterations} iterations per fold, which may "
        f"not learn: give --time-budget {_duration(known[name])} or more"
    )
    dropped = [n for n in names if n != name]
    return BudgetFit(fold_s, {name: chosen}, dropped, notes, warning=warning, n_folds=1)


def minimum_budget_s(fit: ConfigFit) -> float | None:
    """The time budget (this configuration alone, one training split) at which the cheapest
    measured rung would train MIN_ITERATIONS; None when no rung was measured."""
    best = None
    for i, step in fit.search.measured.items():
        c = fit.ladder[i]

        def enough(fold_s: float, c: Candidate = c, step: float = step) -> bool:
            channels = c.architecture["in_channels"]
            context = rung_context(fit.context, c)
            return schedule_fits(fold_schedule(fold_s, step, c.batch, c.patch, channels, context))

        low, high = 0.0, 1.0
        while not enough(high):
            low, high = high, high * 2
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (low, mid) if enough(mid) else (mid, high)
        best = high if best is None else min(best, high)
    return best


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "more"
    if seconds < 3600:
        return f"{math.ceil(seconds / 60)}m"
    return f"{math.ceil(seconds / 360) / 10:g}h"
