"""Orchestration: fingerprint -> :class:`Plan` (pure) and the ``plans.json`` file (I/O).

Every number comes from one of the rule modules (spacing, normalization, topology, patch,
configurations, sampling, schedule); this module only feeds them and records their ``why``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from autoseg import __version__
from autoseg.errors import AutosegError
from autoseg.fingerprint.schema import FINGERPRINT_FILE, Fingerprint
from autoseg.networks.registry import NETWORKS
from autoseg.planning import configurations as cfg
from autoseg.planning.budget import (
    N_FOLDS,
    SCREEN_FACTOR,
    BudgetFit,
    MeasuredStepTimer,
    StepMeasure,
    StepTimer,
    fit_configuration,
    fit_to_budget,
)
from autoseg.planning.normalization import channel_normalization, crop_volume_ratio
from autoseg.planning.patch import (
    CachedEstimator,
    MemoryEstimator,
    batch_size_rule,
    extra_optimizer_state_gb,
    fit_patch,
    network_memory_gb,
    parameter_count,
)
from autoseg.planning.plan import (
    PLANS_FILE,
    ConfigurationPlan,
    ConfigurationSchedule,
    CropWindow,
    DeviceInfo,
    FingerprintSummary,
    Loss,
    Plan,
    Schedule,
    save_plan,
)
from autoseg.planning.registry import (
    CONFIGURATIONS,
    applicable,
    candidates,
    configuration_names,
    is_configuration,
    register_configuration,
)
from autoseg.planning.resolution import (
    Resolution,
    coarser_spacing,
    coarsest_factor,
    cross_sections,
    size_factor,
    useful_factors,
)
from autoseg.planning.sampling import (
    augmentation_profile,
    loss_rule,
    oversample_rate,
    patch_holds_case,
)
from autoseg.planning.schedule import optimizer_rule, schedule_rule
from autoseg.planning.spacing import (
    median_resampled_shape,
    resampling_rule,
    target_spacing,
    total_resampled_voxels,
)
from autoseg.planning.topology import (
    Topology,
    architecture_block,
    pooling_topology,
    total_stride,
)
from autoseg.progress import progress_bar

DEFAULT_GPU_MEMORY_GB = 8.0
# Upper bound of the low-resolution search: 1.01^1024 ~ 26 000x coarser, far beyond any image.
MAX_LOWRES_STEPS = 1024


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def _tag(rule: Callable[..., Any], text: str) -> str:
    """Prefix a reason with its rule's name, e.g. ``spacing.target_spacing: median ...``."""
    return f"{rule.__module__.rsplit('.', 1)[-1]}.{rule.__name__}: {text}"


def _ruled(rule: Callable[..., tuple[Any, str]], *args: Any, **kwargs: Any) -> tuple[Any, str]:
    """Apply a rule that returns (value, reason); tag the reason with the rule's name."""
    value, text = rule(*args, **kwargs)
    return value, _tag(rule, text)


# ---------------------------------------------------------------- inputs


def as_fingerprint(fingerprint: Mapping[str, Any] | Fingerprint) -> Fingerprint:
    """The typed fingerprint, checked for what the planner relies on."""
    fp = (
        fingerprint
        if isinstance(fingerprint, Fingerprint)
        else Fingerprint.from_dict(dict(fingerprint))
    )
    fix = "recompute it with 'autoseg fingerprint DATASET --overwrite'"
    if fp.dim not in (2, 3):
        raise AutosegError(f"fingerprint dim must be 2 or 3, got {fp.dim}", fix=fix)
    if not fp.cases:
        raise AutosegError("the fingerprint lists no training case", fix=fix)
    for c in fp.cases:
        if len(c.spacing) != fp.dim or len(c.shape_after_crop) != fp.dim:
            raise AutosegError(f"case {c.case_id}: spacing/shape are not {fp.dim}D", fix=fix)
        if min(c.spacing) <= 0 or min(c.shape_after_crop) < 1:
            raise AutosegError(f"case {c.case_id}: non-positive spacing or shape", fix=fix)
    if sorted(fp.labels.values())[:1] != [0] or len(fp.labels) < 2:
        raise AutosegError("labels need background 0 and at least one foreground label", fix=fix)
    if set(fp.modality) != set(fp.channel_names):
        raise AutosegError("modality must name every channel", fix=fix)
    return fp


def fingerprint_sha256(fingerprint: Mapping[str, Any] | Fingerprint) -> str:
    """Hash of the fingerprint's canonical JSON: tells whether a plan is stale."""
    d = fingerprint.to_dict() if isinstance(fingerprint, Fingerprint) else fingerprint
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def detect_device() -> tuple[str, str | None, float | None]:
    """("cuda", name, total GiB) of GPU 0, or ("cpu", None, None)."""
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            return "cuda", str(props.name), props.total_memory / 2**30
    except Exception:  # a broken CUDA installation plans as a CPU machine
        pass
    return "cpu", None, None


def device_rule(gpu_memory_gb: float | None, device: str | None = None) -> tuple[DeviceInfo, str]:
    """The memory budget: ``--gpu-memory`` if given, else the detected GPU's total memory, else
    8 GB (nnU-Net's reference budget, which a plan made on a CPU machine can then train with
    on a typical 8-12 GB GPU)."""
    if device is None:
        kind, name, detected = detect_device()
    elif device in ("cuda", "cpu"):
        kind, name, detected = device, None, None
    else:
        raise AutosegError(f"unknown device {device!r}", fix="use 'cuda' or 'cpu'")
    if gpu_memory_gb is not None:
        if not gpu_memory_gb > 0:
            raise AutosegError(f"--gpu-memory must be positive, got {gpu_memory_gb}", fix="e.g. 8")
        info = DeviceInfo(kind, name, float(gpu_memory_gb), "argument")
        return info, f"budget {gpu_memory_gb:g} GB from --gpu-memory ({kind})"
    if detected is not None:
        info = DeviceInfo(kind, name, round(detected, 2), "detected")
        return info, f"budget {detected:.1f} GB = total memory of {name}"
    info = DeviceInfo(kind, name, DEFAULT_GPU_MEMORY_GB, "default")
    return info, f"no GPU memory given or detected -> default budget {DEFAULT_GPU_MEMORY_GB:g} GB"


def parse_configs(configs: str | Iterable[str] | None, dim: int) -> list[str] | None:
    """``"2d,3d_fullres"`` or a list -> validated names (None = let the rules decide)."""
    if configs is None:
        return None
    names = [c.strip() for c in configs.split(",")] if isinstance(configs, str) else list(configs)
    names = [n for n in names if n]
    possible = applicable(dim)
    for n in names:
        if not is_configuration(n):
            raise AutosegError(
                f"unknown configuration {n!r}",
                fix=f"choose from {', '.join(configuration_names())}",
            )
        if n not in possible:
            raise AutosegError(
                f"configuration {n!r} does not apply to {dim}D data",
                fix=f"choose from {', '.join(possible)}",
            )
    if not names:
        raise AutosegError("no configuration named", fix=f"e.g. --configs {possible[0]}")
    return names


# ---------------------------------------------------------------- the pure planner


@dataclass
class PlanningContext:
    """Numbers several rules share, derived once from the fingerprint; what a configuration's
    planning function (:func:`autoseg.planning.registry.register_configuration`) is given."""

    fp: Fingerprint
    spacings: list[list[float]]
    shapes: list[list[int]]
    target: list[float]
    median_shape: list[int]
    thick: int | None
    fg_fraction: float
    network: str
    estimator: MemoryEstimator
    budget_gb: float
    total_voxels: int = 0  # of the whole dataset at the target spacing
    _full: ConfigurationPlan | None = None

    def full_resolution(self) -> ConfigurationPlan:
        """The 3D full-resolution configuration (``3d_lowres`` derives from it even when
        ``3d_fullres`` itself is not asked for); planned once."""
        if self._full is None:
            self._full = plan_configuration(
                self,
                "3d_fullres",
                self.target,
                self.median_shape,
                dataset_voxels=self.total_voxels,
                fg_fraction=self.fg_fraction,
                why={"spacing": "target spacing"},
            )
        return self._full

    @property
    def n_channels(self) -> int:
        return len(self.fp.channel_names)

    @property
    def num_classes(self) -> int:
        return len(self.fp.labels)


def _median_foreground_fraction(fp: Fingerprint) -> float:
    """Median over cases of the summed foreground-label fractions."""
    return float(np.median([sum(c.class_voxel_fraction.values()) for c in fp.cases]))


def _topology_why(topo: Topology, arch: dict[str, Any], spacing: Sequence[float]) -> str:
    pools = list(topo.pools_per_axis)
    coarse = [f"stage {s}: {list(k)}" for s, k in enumerate(topo.kernel_sizes) if 1 in k]
    why = (
        f"{topo.n_stages} stages, pooling per axis {pools} (an axis is pooled while its spacing "
        f"is < 2x the finest and its map >= 8) from spacing {_fmt(spacing)}; features "
        f"{arch['features_per_stage']}"
    )
    if coarse:
        why += "; kernel 1 along axes >= 2x coarser: " + ", ".join(coarse)
    return why


def _loss(
    ctx: PlanningContext,
    name: str,
    dim: int,
    patch: Sequence[int],
    median_shape: Sequence[int],
    architecture: dict[str, Any],
) -> tuple[Loss, str]:
    """The loss rule for a configuration's patch: is every sample the whole frame of a 2D
    dataset whose every frame has foreground? (Measured on 2D frames only: a whole-volume 3D
    patch keeps batch Dice until it is measured; a slice of a volume is never the case.)"""
    whole = (
        dim == ctx.fp.dim == 2
        and int(ctx.fp.aggregate.cases_without_foreground) == 0
        and patch_holds_case(patch, median_shape, total_stride(architecture))
    )
    return _ruled(loss_rule, name, whole)


def plan_configuration(
    ctx: PlanningContext,
    name: str,
    spacing: Sequence[float],
    median_shape: Sequence[int],
    *,
    dataset_voxels: int,
    fg_fraction: float,
    slice_axis: int | None = None,
    context_slices: int = 1,
    crop: CropWindow | None = None,
    why: dict[str, str] | None = None,
) -> ConfigurationPlan:
    in_channels = ctx.n_channels * context_slices

    def make_architecture(topo: Topology) -> dict[str, Any]:
        return architecture_block(
            topo, network=ctx.network, in_channels=in_channels, num_classes=ctx.num_classes
        )

    fit = fit_patch(spacing, median_shape, make_architecture, ctx.estimator, ctx.budget_gb)
    batch, memory, why_batch = batch_size_rule(
        fit.architecture, fit.patch, ctx.estimator, ctx.budget_gb, dataset_voxels
    )
    rate, why_rate = _ruled(oversample_rate, fg_fraction)
    loss, why_loss = _loss(ctx, name, len(spacing), fit.patch, median_shape, fit.architecture)
    augmentation, why_aug = _ruled(augmentation_profile, spacing, context_slices)
    why = dict(why or {})
    why.update(
        patch_size=_tag(fit_patch, fit.why),
        topology=_tag(pooling_topology, _topology_why(fit.topology, fit.architecture, spacing)),
        batch_size=_tag(batch_size_rule, why_batch),
        oversample_foreground=why_rate,
        loss=why_loss,
        augmentation=why_aug,
    )
    return ConfigurationPlan(
        dim=len(spacing),
        spacing=[float(s) for s in spacing],
        median_shape=[int(m) for m in median_shape],
        patch_size=list(fit.patch),
        batch_size=batch,
        architecture=fit.architecture,
        slice_axis=slice_axis,
        context_slices=context_slices,
        augmentation=augmentation,
        oversample_foreground=rate,
        loss=loss,
        estimated_memory_gb=round(memory, 3),
        parameters=parameter_count(fit.architecture),
        crop=crop,
        why=why,
    )


def _plan_slices(ctx: PlanningContext, name: str) -> ConfigurationPlan | str:
    """``2d`` / ``2.5d`` of 3D data (or ``2d`` of 2D data)."""
    if ctx.fp.dim == 2:
        return plan_configuration(
            ctx,
            name,
            ctx.target,
            ctx.median_shape,
            dataset_voxels=ctx.total_voxels,
            fg_fraction=ctx.fg_fraction,
            why={"spacing": f"target spacing {_fmt(ctx.target)}"},
        )
    axis = cfg.slice_axis(ctx.thick)
    keep = [a for a in range(3) if a != axis]
    why = {
        "spacing": f"in-plane target spacing; slices cut across axis {axis} "
        + ("(the thick axis)" if ctx.thick is not None else "(no thick axis: axis 0)")
    }
    k = 1
    if name == "2.5d":
        extents = [
            None if e is None else list(e.median)
            for e in ctx.fp.aggregate.foreground_extent_mm.values()
        ]
        k, why["context_slices"] = _ruled(
            cfg.context_slices, extents, axis, ctx.target[axis], ctx.median_shape[axis]
        )
        if k < cfg.MIN_CONTEXT_SLICES:
            return f"2.5d not planned: {why['context_slices']} (fewer than 3 slices)"
    return plan_configuration(
        ctx,
        name,
        [ctx.target[a] for a in keep],
        [ctx.median_shape[a] for a in keep],
        dataset_voxels=ctx.total_voxels,
        fg_fraction=ctx.fg_fraction,
        slice_axis=axis,
        context_slices=k,
        why=why,
    )


def _plan_lowres(ctx: PlanningContext, full: ConfigurationPlan) -> ConfigurationPlan | str:
    """``3d_lowres`` at the first spacing where the patch covers >= 25 % of the median image."""
    needed, why_needed = cfg.needs_lowres(full.patch_size, full.median_shape)
    if not needed:
        return f"3d_lowres not planned: {why_needed}"

    def attempt(steps: int) -> tuple[float, list[float], list[int]]:
        spacing = cfg.lowres_spacing(ctx.target, steps)
        median = median_resampled_shape(ctx.shapes, ctx.spacings, spacing)
        fit = fit_patch(
            spacing,
            median,
            lambda topo: architecture_block(
                topo, network=ctx.network, in_channels=ctx.n_channels, num_classes=ctx.num_classes
            ),
            ctx.estimator,
            ctx.budget_gb,
        )
        return cfg.patch_coverage(fit.patch, median), spacing, median

    steps = cfg.lowres_steps(lambda k: attempt(k)[0], MAX_LOWRES_STEPS)
    if steps is None:
        return f"3d_lowres not planned: {why_needed}, and no coarser spacing reaches 25 %"
    coverage, spacing, median = attempt(steps)
    reduction = math.prod(full.median_shape) / math.prod(median)
    if reduction < cfg.LOWRES_MIN_REDUCTION:
        return (
            f"3d_lowres not planned: {why_needed}, but the coarser median image is only "
            f"{reduction:.2f}x smaller (< {cfg.LOWRES_MIN_REDUCTION:g}x)"
        )
    why = {
        "spacing": _tag(cfg.needs_lowres, why_needed)
        + f" -> lowres_step: spacing grown in {cfg.LOWRES_STEP} steps (in-plane first "
        f"until within 2x of the thick axis): {steps} steps -> {_fmt(spacing)}, where the patch "
        f"covers {100 * coverage:.0f} % of the median image {_fmt(median)} "
        f"({reduction:.1f}x fewer voxels than full resolution)"
    }
    return plan_configuration(
        ctx,
        "3d_lowres",
        spacing,
        median,
        dataset_voxels=total_resampled_voxels(ctx.shapes, ctx.spacings, spacing),
        fg_fraction=ctx.fg_fraction,
        why=why,
    )


def _plan_crop(
    ctx: PlanningContext, planned: Mapping[str, ConfigurationPlan]
) -> ConfigurationPlan | str:
    extent = cfg.foreground_extent_p95([c.foreground_extent_all_mm for c in ctx.fp.cases])
    if extent is None:
        return "crop not planned: no case has foreground"
    spacing = ctx.target  # crop is planned for 3D data only: the full-resolution spacing
    window_mm, window_vox, why_window = cfg.crop_window(extent, spacing, ctx.median_shape)
    wanted, why_wanted = cfg.wants_crop(ctx.fg_fraction, window_vox, ctx.median_shape)
    if not wanted:
        return f"crop not planned: {why_wanted}"
    localiser, why_loc = cfg.choose_localiser(list(planned))
    if localiser is None:
        return f"crop not planned: {why_loc} to localise it (add 2d to --configs)"
    share = math.prod(ctx.median_shape) / math.prod(window_vox)
    crop = CropWindow(
        window_mm=window_mm,
        window_voxels=window_vox,
        localiser=localiser,
        localiser_spacing=list(planned[localiser].spacing),
    )
    return plan_configuration(
        ctx,
        "crop",
        spacing,
        window_vox,
        dataset_voxels=ctx.fp.n_cases * math.prod(window_vox),
        fg_fraction=min(1.0, ctx.fg_fraction * share),
        crop=crop,
        why={
            "crop": "; ".join(
                [
                    _tag(cfg.wants_crop, why_wanted),
                    _tag(cfg.crop_window, why_window),
                    _tag(cfg.choose_localiser, why_loc),
                ]
            ),
            "spacing": "full-resolution target spacing inside the window",
            "median_shape": "the window (the image a crop sample is cut from)",
        },
    )


# The built-in configurations, in the order of BUILTIN_CONFIGURATIONS.
@register_configuration("2d", dims=(2, 3), automatic=True)
def _config_2d(ctx: PlanningContext, planned: Mapping[str, ConfigurationPlan]) -> Any:
    return _plan_slices(ctx, "2d")


@register_configuration("2.5d", dims=(3,), automatic=True)
def _config_25d(ctx: PlanningContext, planned: Mapping[str, ConfigurationPlan]) -> Any:
    return _plan_slices(ctx, "2.5d")


@register_configuration("3d_fullres", dims=(3,), automatic=True)
def _config_3d_fullres(ctx: PlanningContext, planned: Mapping[str, ConfigurationPlan]) -> Any:
    return ctx.full_resolution()


@register_configuration("3d_lowres", dims=(3,), automatic=True)
def _config_3d_lowres(ctx: PlanningContext, planned: Mapping[str, ConfigurationPlan]) -> Any:
    return _plan_lowres(ctx, ctx.full_resolution())


@register_configuration("crop", dims=(3,), automatic=True)
def _config_crop(ctx: PlanningContext, planned: Mapping[str, ConfigurationPlan]) -> Any:
    return _plan_crop(ctx, planned)


def _with_time_fit(
    ctx: PlanningContext, name: str, config: ConfigurationPlan, fit: BudgetFit, timer: StepTimer
) -> ConfigurationPlan:
    """The configuration as the time budget left it: its rung, measured step, schedule,
    optimizer and (CPU) thread count."""
    f = fit.configs[name]
    c, s = f.candidate, f.schedule
    assert s is not None
    why = dict(config.why)
    why["time_budget"] = _tag(fit_configuration, f.why(fit.fold_s))
    changes: dict[str, Any] = {}
    if c.resolution is not None:
        r = c.resolution
        why.setdefault("spacing", f"spacing {_fmt(config.spacing)}")  # a registered one's
        why["spacing"] += (
            f"; time budget -> {_fmt(r.spacing)} ({r.factor:g}x coarser along the fine axes; "
            "predictions are resampled back to the input grid; see time_budget)"
        )
        changes["spacing"] = list(r.spacing)
        changes["median_shape"] = list(r.median_shape)
    if c.batch != config.batch_size:
        why["batch_size"] += f"; time budget -> batch {c.batch} (see time_budget)"
        changes["batch_size"] = c.batch
    if list(c.patch) != list(config.patch_size):
        why["patch_size"] += f"; time budget -> {'x'.join(map(str, c.patch))} (see time_budget)"
        changes["patch_size"] = list(c.patch)
    if c.architecture != config.architecture:
        feats = c.architecture["features_per_stage"]
        why["topology"] += (
            f"; time budget -> {len(feats)} stages, features {feats} (see time_budget)"
        )
        changes["architecture"] = c.architecture
        changes["parameters"] = parameter_count(c.architecture)
    loss, why_loss = _loss(
        ctx,
        name,
        config.dim,
        c.patch,
        changes.get("median_shape", config.median_shape),
        c.architecture,
    )
    # only a loss the rule chose follows the new patch (a registered configuration's own stays)
    ruled = config.why.get("loss", "").startswith(_tag(loss_rule, ""))
    if ruled and loss != config.loss:
        why["loss"] = f"{why_loss}; with the time budget's patch (see time_budget)"
        changes["loss"] = loss
    memory = config.estimated_memory_gb
    if changes:
        memory = ctx.estimator(c.architecture, tuple(c.patch), c.batch)
    optimizer, why_optimizer = optimizer_rule(s.epochs * s.iterations_per_epoch)
    why["optimizer"] = _tag(optimizer_rule, why_optimizer)
    extra = extra_optimizer_state_gb(changes.get("parameters", config.parameters), optimizer.name)
    if extra:
        memory += extra
        why["optimizer"] += f"; its second moment adds {extra:.3f} GB to estimated_memory_gb"
        if memory > ctx.budget_gb:
            why["optimizer"] += f", which then exceeds the {ctx.budget_gb:g} GB budget"
    if changes or extra:
        changes["estimated_memory_gb"] = round(memory, 3)
    threads_of = getattr(timer, "threads", None)
    threads = threads_of(c.architecture, c.patch, c.batch) if threads_of else None
    if threads is not None:
        why["cpu_threads"] = (
            f"budget.MeasuredStepTimer: the step was fastest with {threads} torch thread(s)"
        )
    layout_of = getattr(timer, "channels_last", None)
    channels_last = bool(layout_of(c.architecture, c.patch, c.batch)) if layout_of else False
    if layout_of is not None and layout_of(c.architecture, c.patch, c.batch) is not None:
        why["channels_last"] = "budget.MeasuredStepTimer: the step was faster " + (
            "in the channels-last layout" if channels_last else "in the default layout"
        )
    return replace(
        config,
        **changes,
        measured_step_s=round(f.step_s, 5),
        schedule=ConfigurationSchedule(
            epochs=s.epochs,
            iterations_per_epoch=s.iterations_per_epoch,
            train_budget_s=round(s.train_budget_s, 1),
            optimizer=optimizer.name,
            initial_lr=optimizer.initial_lr,
            weight_decay=optimizer.weight_decay,
            cpu_threads=threads,
            channels_last=channels_last,
        ),
        why=why,
    )


def _resolutions(
    ctx: PlanningContext, planned: Mapping[str, ConfigurationPlan]
) -> tuple[dict[str, list[Resolution]], str]:
    """The coarser grids each configuration may train on when the time budget is short
    (:mod:`autoseg.planning.resolution`): up to the coarsest factor the reference masks
    survive, along the fine axes, never coarser than an anisotropic stack's thick axis. Not
    for ``crop`` (its point is full resolution) nor ``3d_lowres`` (already coarse)."""
    labels = [str(v) for v in ctx.fp.foreground_labels.values()]
    max_factor, why = _ruled(coarsest_factor, ctx.fp.aggregate.coarsening_dice, labels)
    diameters = cross_sections(ctx.fp.cases, labels)
    out: dict[str, list[Resolution]] = {}
    sizes: dict[str, str] = {}
    for name, config in planned.items():
        if name in ("crop", "3d_lowres"):
            continue
        by_size, sizes[name] = _ruled(size_factor, diameters, min(config.spacing))
        axis = config.slice_axis if config.dim < ctx.fp.dim else None
        cap = None
        if axis is not None and ctx.thick is not None:
            cap = float(ctx.target[ctx.thick])
        grids = []
        for factor in useful_factors(config.spacing, max_factor, cap):
            grid = list(coarser_spacing(config.spacing, factor, cap))
            data_grid = list(grid)
            if axis is not None:
                data_grid.insert(axis, float(ctx.target[axis]))
            median = median_resampled_shape(ctx.shapes, ctx.spacings, data_grid)
            if axis is not None:
                median = [m for a, m in enumerate(median) if a != axis]
            small = factor > by_size
            grids.append(Resolution(factor, tuple(grid), tuple(int(m) for m in median), small))
        out[name] = grids
    if len(set(sizes.values())) == 1:
        why += "; " + next(iter(sizes.values()))
    else:
        why += "; " + "; ".join(f"{n}: {t}" for n, t in sizes.items())
    return out, why


def _budget_schedule(time_budget_s: float, fit: BudgetFit) -> tuple[Schedule, str]:
    """Plan-wide schedule of a time-budget plan: the fold budget, and as the fallback length
    the configuration with the fewest iterations (never overruns any configuration's fold)."""
    shortest = min(fit.configs.values(), key=lambda f: f.schedule.iterations if f.schedule else 0)
    s = shortest.schedule
    assert s is not None
    schedule = Schedule(
        epochs=s.epochs,
        iterations_per_epoch=s.iterations_per_epoch,
        time_budget_s=float(time_budget_s),
        source="time_budget",
        fold_budget_s=round(fit.fold_s, 1),
        folds=None if fit.n_folds == N_FOLDS else list(range(fit.n_folds)),
    )
    per_config = ", ".join(
        f"{n} {f.schedule.epochs} x {f.schedule.iterations_per_epoch}"
        for n, f in fit.configs.items()
        if f.schedule is not None
    )
    why = _tag(
        fit_to_budget,
        f"time budget {time_budget_s:g} s for {len(fit.configs)} configuration(s) x "
        + (
            f"{N_FOLDS} folds (cross-validation)"
            if fit.n_folds == N_FOLDS
            else f"{fit.n_folds} training split (fold 0; its hold-out for selection and the "
            "estimate)"
        )
        + f" -> {fit.fold_s:.4g} s per fold; each configuration has its own schedule "
        f"({per_config}); plan-wide fallback = the shortest ({shortest.name})",
    )
    return schedule, why


def plan_dataset(
    fingerprint: Mapping[str, Any] | Fingerprint,
    *,
    gpu_memory_gb: float | None = None,
    configs: str | Iterable[str] | None = None,
    time_budget_s: float | None = None,
    network: str = "unet",
    device: str | None = None,
    estimator: MemoryEstimator | None = None,
    step_timer: StepTimer | None = None,
    step_measure: StepMeasure | None = None,
    progress: bool = False,
) -> Plan:
    """The plan for a fingerprint (``fingerprint.json`` as a dict, or a Fingerprint).

    No file I/O. ``gpu_memory_gb`` is the memory budget (default: the detected GPU's memory,
    else 8 GB); ``configs`` restricts the configurations (names or ``"2d,3d_fullres"``; the
    rules may still leave one out, with the reason in ``plan.why["configurations"]``);
    ``time_budget_s`` is the wall-clock time for training all configurations x 5 folds: each
    configuration's training iteration is then timed on the planning device and the plan
    shrunk and scheduled to fit (:mod:`autoseg.planning.budget`); ``device`` overrides the
    detected device ("cuda"/"cpu"), which is also the device the iterations are timed on;
    ``estimator`` replaces the real-network memory estimate; the iterations are timed with
    ``step_measure`` (the trainer's own step, :mod:`autoseg.training.timing`, which the caller
    passes: planning does not import training) or ``step_timer`` replaces the whole timing
    (tests); ``progress`` shows a bar over the configurations (each runs the
    memory estimate 5-40 times, ~0.1-0.3 s each; timing takes ~2-20 s per configuration on a
    CPU).
    """
    fp = as_fingerprint(fingerprint)
    NETWORKS.get(network)  # an unknown name: one line listing the registered ones
    requested = parse_configs(configs, fp.dim)
    device_info, why_device = _ruled(device_rule, gpu_memory_gb, device)
    spacings = [list(c.spacing) for c in fp.cases]
    shapes = [list(c.shape_after_crop) for c in fp.cases]
    why: dict[str, str] = {"device": why_device}

    crop_ratio = crop_volume_ratio([c.shape for c in fp.cases], shapes)
    normalization = {}
    for ch in fp.channel_names:
        intensity = fp.aggregate.intensity.get(ch)
        stats = None if intensity is None else intensity.to_dict()
        if fp.modality[ch] == "ct" and (stats is None or stats["mean"] is None):
            raise AutosegError(
                f"channel {ch} is CT but the fingerprint has no foreground intensities",
                fix="label at least one case, or name the channel as non-CT in dataset.json",
            )
        normalization[ch], why[f"normalization.{ch}"] = _ruled(
            channel_normalization, fp.modality[ch], stats, crop_ratio
        )

    target, why["target_spacing"] = _ruled(target_spacing, spacings, shapes)
    resampling, why["resampling"] = _ruled(
        resampling_rule, target, list(fp.aggregate.spacing_median)
    )
    median_shape = median_resampled_shape(shapes, spacings, target)
    total_voxels = total_resampled_voxels(shapes, spacings, target)
    fg_fraction = _median_foreground_fraction(fp)
    ctx = PlanningContext(
        fp=fp,
        spacings=spacings,
        shapes=shapes,
        target=target,
        median_shape=median_shape,
        thick=resampling.thick_axis,
        fg_fraction=fg_fraction,
        network=network,
        estimator=CachedEstimator(estimator or network_memory_gb),
        budget_gb=device_info.gpu_memory_gb,
        total_voxels=total_voxels,
    )

    wanted = (
        list(candidates(fp.dim, cfg.candidate_configurations(fp.dim)))
        if requested is None
        else requested
    )
    planned: dict[str, ConfigurationPlan] = {}
    notes: list[str] = []
    order = [n for n in configuration_names() if n in wanted]
    for name in progress_bar(order, desc="planning", unit="config", disable=not progress):
        result = CONFIGURATIONS.get(name).plan(ctx, planned)
        if isinstance(result, ConfigurationPlan):
            planned[name] = result
        else:
            notes.append(str(result))
    if not planned:
        raise AutosegError(
            "no configuration could be planned: " + "; ".join(notes),
            fix="choose other --configs",
        )
    why["configurations"] = (
        f"{fp.dim}D data -> considered {', '.join(wanted)}; planned {', '.join(planned)}"
        + ("; " + "; ".join(notes) if notes else "")
    )
    extent_p95 = cfg.foreground_extent_p95([c.foreground_extent_all_mm for c in fp.cases])
    if time_budget_s is None:
        schedule, why["schedule"] = _ruled(schedule_rule, time_budget_s)
    else:
        bar = progress_bar(desc="timing iterations", unit="config", disable=not progress)

        def tick(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(1)

        if step_timer is None and step_measure is None:
            raise AutosegError(
                "planning for a time budget needs the trainer's step to time",
                fix="plan through autoseg.pipeline.plan_and_train, or pass step_measure="
                "autoseg.training.timing.trainer_step_measure()",
            )
        timer = step_timer or MeasuredStepTimer(step_measure, device_info.type)
        grids, why["resolution"] = _resolutions(ctx, planned)
        fit = fit_to_budget(
            planned,
            time_budget_s=time_budget_s,
            timer=timer,
            device_type=device_info.type,
            n_cases=fp.n_cases,
            data_shape=median_shape,
            extent_mm=extent_p95,
            screen_factor=SCREEN_FACTOR if step_timer is None else None,
            progress=tick,
            resolutions=grids,
        )
        bar.close()
        planned = {
            n: _with_time_fit(ctx, n, c, fit, timer) for n, c in planned.items() if n in fit.configs
        }
        if fit.notes:
            why["configurations"] += "; time budget: " + "; ".join(fit.notes)
        if fit.warning:
            why["time_budget_warning"] = fit.warning
        schedule, why["schedule"] = _budget_schedule(time_budget_s, fit)

    summary = FingerprintSummary(
        sha256=fingerprint_sha256(fp),
        dim=fp.dim,
        n_cases=fp.n_cases,
        modality=dict(fp.modality),
        spacing_median=[float(v) for v in fp.aggregate.spacing_median],
        shape_after_crop_median=[int(round(v)) for v in fp.aggregate.shape_after_crop_median],
        anisotropy_ratio=round(float(fp.aggregate.anisotropy_ratio), 4),
        foreground_fraction_median=fg_fraction,
        foreground_extent_p95_mm=None if extent_p95 is None else [round(v, 3) for v in extent_p95],
        cases_without_foreground=int(fp.aggregate.cases_without_foreground),
    )
    return Plan(
        dataset=fp.dataset,
        created_by=f"autoseg {__version__}",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        fingerprint=summary,
        device=device_info,
        channel_names=dict(fp.channel_names),
        labels=dict(fp.labels),
        ignore_label=fp.ignore_label,
        normalization=normalization,
        target_spacing=target,
        resampling=resampling,
        configurations=planned,
        schedule=schedule,
        why=why,
    )


# ---------------------------------------------------------------- files


def ensure_fingerprint(
    dataset: str | int | os.PathLike, root: str | os.PathLike | None, progress: bool = True
) -> Path:
    """The dataset's fingerprint, computed (or refreshed) from the raw dataset when that
    resolves; otherwise an existing ``<root>/preprocessed/<dataset>/fingerprint.json``."""
    from autoseg.fingerprint import run_fingerprint
    from autoseg.paths import preprocessed_dir

    try:
        return run_fingerprint(dataset, root, progress=progress)
    except AutosegError:
        candidate = preprocessed_dir(root) / str(dataset) / FINGERPRINT_FILE
        if candidate.is_file():
            return candidate
        raise


def run_plan(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    gpu_memory_gb: float | None = None,
    configs: str | Iterable[str] | None = None,
    time_budget_s: float | None = None,
    network: str = "unet",
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    step_measure: StepMeasure | None = None,
) -> Path:
    """Write ``<root>/preprocessed/<dataset>/plans.json`` and return its path.

    ``dataset`` is an id, folder name or path of a raw dataset (its fingerprint is computed
    first when missing or stale), or the name of a preprocessed folder holding a fingerprint.
    An existing plan is kept (it may hold hand edits) unless ``overwrite``; use
    :func:`plan_is_stale` to see whether it still matches the fingerprint. ``device``
    ("cuda"/"cpu", default: detected) is where training will run; with ``time_budget_s`` the
    iterations are timed there with ``step_measure`` (the trainer's step:
    :func:`autoseg.training.timing.trainer_step_measure`).
    """
    fp_path = ensure_fingerprint(dataset, root, progress=progress)
    out = fp_path.parent / PLANS_FILE
    if out.is_file() and not overwrite:
        return out
    data = json.loads(fp_path.read_text(encoding="utf-8"))
    plan = plan_dataset(
        Fingerprint.from_dict(data, fp_path),
        gpu_memory_gb=gpu_memory_gb,
        configs=configs,
        time_budget_s=time_budget_s,
        network=network,
        device=device,
        progress=progress,
        step_measure=step_measure,
    )
    return save_plan(plan, out)


def plan_is_stale(plan: Plan, fingerprint_file: str | os.PathLike) -> bool:
    """True when the fingerprint on disk is not the one the plan was made from."""
    data = json.loads(Path(fingerprint_file).read_text(encoding="utf-8"))
    return plan.fingerprint.sha256 != fingerprint_sha256(Fingerprint.from_dict(data))
