"""Sections 1 and 2: the dataset and how to reproduce it; the plan in plain words."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
from typing import Any

import numpy as np

from autoseg import __version__
from autoseg.evaluation.metrics import FAILURE_DICE
from autoseg.evaluation.report.cases import (
    CaseResult,
)
from autoseg.evaluation.report.constants import (
    _DASH,
)
from autoseg.evaluation.report.gather import (
    ReportData,
    Source,
)
from autoseg.evaluation.report.markup import (
    details,
    esc,
    fmt,
    fmt_dims,
    fmt_duration,
    fmt_time,
    kv_table,
    missing,
)
from autoseg.networks.registry import NETWORKS


def versions() -> list[tuple[str, str]]:
    out = [("autoseg", __version__), ("Python", platform.python_version())]
    for dist in ("torch", "numpy", "SimpleITK"):
        try:
            out.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            out.append((dist, "not installed"))
    return out


def device_text(plan: Any) -> str:
    if plan is None:
        return _DASH
    d = plan.device
    if d.type == "cuda":
        return f"GPU {d.name or ''} ({d.gpu_memory_gb:g} GB, {d.source})".replace("  ", " ")
    return f"CPU (no GPU seen when planning; memory budget {d.gpu_memory_gb:g} GB, {d.source})"


def reproduce_commands(data: ReportData) -> str:
    ref = data.dataset_ref
    train = f"autoseg plan-and-train {ref}"
    if data.n_folds and data.n_folds != 5:
        train += f" --n-folds {data.n_folds}"
    if data.plan is not None and data.plan.schedule.time_budget_s:
        train += f" --time-budget {int(data.plan.schedule.time_budget_s)}s"
    lines = [
        "# with the same raw dataset and plans.json in place (plan-and-train plans only when",
        "# preprocessed/<dataset>/plans.json is missing, so hand edits are kept)",
        train,
        f"autoseg predict -d {ref} -i INPUT_FOLDER -o OUTPUT_FOLDER",
        f"autoseg report {ref}",
    ]
    return f"<pre>{esc(chr(10).join(lines))}</pre>"


def section_overview(data: ReportData, source: Source | None, results: list[CaseResult]) -> str:
    ds = data.ds
    scored = [r for r in results if not r.error]
    cards = [("training cases", str(len(data.cases)))]
    if data.inference is not None:
        info = data.inference
        cards.append(("chosen model", str(info.get("chosen", _DASH))))
        cards.append(("CV Dice (post-processed)", fmt(info.get("cv_dice_postprocessed"))))
    elif source is not None:
        cards.append(("best so far (no find-best)", source.name))
    if scored:
        cards.append(
            (f"mean Dice, {len(scored)} cases", fmt(np.mean([r.mean_dice for r in scored])))
        )
        cards.append((f"failures (Dice < {FAILURE_DICE})", str(sum(r.failed for r in scored))))
    card_html = "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in cards
    )
    cohort_counts: dict[str, int] = {}
    for c in data.cohorts.values():
        cohort_counts[c] = cohort_counts.get(c, 0) + 1
    finished = [f.finished_at for fs in data.folds.values() for f in fs if f.finished_at]
    dates = [("plan", fmt_time(data.plan.created_at) if data.plan else _DASH)]
    if finished:
        dates.append(
            ("training finished", f"{fmt_time(min(finished))} … {fmt_time(max(finished))}")
        )
    if data.inference is not None:
        dates.append(("find-best", fmt_time(data.inference.get("created_at"))))
    dates.append(("this report", fmt_time(_dt.datetime.now(_dt.UTC).isoformat())))
    pairs = [
        ("dataset", f"<code>{esc(data.raw)}</code>"),
        ("cases", f"{len(data.cases)} labelled training cases"),
        ("labels", esc(", ".join(f"{v} = {n}" for v, n in data.labels.items()))),
        ("channels", esc(", ".join(f"{k}: {v}" for k, v in ds.channel_names.items()))),
    ]
    if cohort_counts:
        pairs.append(
            ("cohorts", esc(", ".join(f"{k} ({n})" for k, n in sorted(cohort_counts.items()))))
        )
    if ds.description:
        pairs.append(("description", esc(ds.description)))
    if ds.reference:
        pairs.append(("reference", esc(ds.reference)))
    pairs.append(("dates", "; ".join(f"{esc(k)} {esc(v)}" for k, v in dates)))
    pairs.append(("software", esc(", ".join(f"{k} {v}" for k, v in versions()))))
    pairs.append(("device", esc(device_text(data.plan))))
    return (
        f'<div class="cards">{card_html}</div>'
        + kv_table(pairs)
        + "<h3>Reproduce</h3>"
        + reproduce_commands(data)
    )


def describe_configuration(name: str, cfg: Any, plan: Any) -> str:
    """One sentence per configuration, e.g. ``3d_fullres: 3D U-Net, 6 stages, patch 24x160x160
    voxels (72x120x120 mm) at 3x0.75x0.75 mm, batch 2, ~2.5 GB GPU memory, 1000 epochs x 250
    iterations``."""
    arch = cfg.architecture
    name = str(arch.get("network"))
    net = NETWORKS.get(name).label if name in NETWORKS else name
    if cfg.dim == 2 and plan.dim == 3 and cfg.slice_axis is not None:
        plane = "-".join(a for i, a in enumerate("zyx") if i != cfg.slice_axis)
        if cfg.context_slices > 1:
            what = (
                f"2D {net} on {plane} slices, {cfg.context_slices} neighbouring slices in, "
                "the centre one predicted"
            )
        else:
            what = f"2D {net} on {plane} slices"
    else:
        what = f"{cfg.dim}D {net}"
    patch_mm = [p * s for p, s in zip(cfg.patch_size, cfg.spacing)]
    schedule = getattr(cfg, "schedule", None) or plan.schedule
    parts = [
        what,
        f"{cfg.n_stages} stages",
        f"patch {fmt_dims(cfg.patch_size)} voxels ({fmt_dims(patch_mm)} mm) at "
        f"{fmt_dims(cfg.spacing)} mm",
        f"batch {cfg.batch_size}",
    ]
    if cfg.crop is not None:
        parts.append(
            f"window {fmt_dims(cfg.crop.window_voxels)} voxels ({fmt_dims(cfg.crop.window_mm)} "
            f"mm) around the structure found by {cfg.crop.localiser}"
        )
    if cfg.parameters:
        parts.append(f"{cfg.parameters / 1e6:.1f} M parameters")
    parts.append(f"~{cfg.estimated_memory_gb:.2g} GB GPU memory")
    length = f"{schedule.epochs} epochs x {schedule.iterations_per_epoch} iterations"
    budget = getattr(schedule, "train_budget_s", None)
    if budget:  # a configuration schedule fitted to --time-budget
        length += f" (fitted to {fmt_duration(budget)} of training per fold)"
    parts.append(length)
    return f"{name}: " + ", ".join(parts)


def section_plan(data: ReportData) -> str:
    plan = data.plan
    if plan is None:
        return missing(
            f"No plan: {data.plan_problem}. Run autoseg plan {data.dataset_ref} "
            "(plan-and-train does it first)."
        )
    fp = plan.fingerprint
    norm = ", ".join(
        f"{plan.channel_names.get(k, k)}: {n.scheme}" for k, n in plan.normalization.items()
    )
    intro = (
        f"{fp.dim}D data, {fp.n_cases} cases, median spacing {fmt_dims(fp.spacing_median)} mm "
        f"(anisotropy {fp.anisotropy_ratio:.3g}), median foreground "
        f"{100 * fp.foreground_fraction_median:.2g} % of the voxels. Target spacing "
        f"{fmt_dims(plan.target_spacing)} mm; normalisation {norm}. Planned by "
        f"{plan.created_by} on {fmt_time(plan.created_at)}."
    )
    items = []
    for name, cfg in plan.configurations.items():
        why = [f"{k}: {v}" for k, v in cfg.why.items()]
        items.append(
            f"<li><b>{esc(describe_configuration(name, cfg, plan))}</b>"
            + (details(f"why ({len(why)} decisions)", why) if why else "")
            + "</li>"
        )
    plan_why = [f"{k}: {v}" for k, v in plan.why.items()]
    return (
        f"<p>{esc(intro)}</p><ul>{''.join(items)}</ul>"
        + (details("why: plan-wide decisions", plan_why) if plan_why else "")
        + f'<p class="note">Source: <code>{esc(data.plan_path)}</code></p>'
    )
