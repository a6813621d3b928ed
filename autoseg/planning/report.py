"""A readable summary of a plan: one table row per configuration, then the ``why`` lines."""

from __future__ import annotations

from collections.abc import Sequence

from autoseg.planning.plan import ConfigurationPlan, Plan

COLUMNS = (
    "config",
    "spacing (mm)",
    "patch",
    "batch",
    "stages",
    "pools/axis",
    "features",
    "params",
    "GPU mem",
)


def _x(values: Sequence[float]) -> str:
    return "x".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in values)


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def configuration_row(name: str, c: ConfigurationPlan) -> list[str]:
    feats = c.architecture["features_per_stage"]
    label = name if c.context_slices == 1 else f"{name} (k={c.context_slices})"
    return [
        label,
        _x(c.spacing),
        _x(c.patch_size),
        str(c.batch_size),
        str(c.n_stages),
        _x(c.pools_per_axis),
        f"{feats[0]}-{feats[-1]}",
        _millions(c.parameters),
        f"{c.estimated_memory_gb:.2f} GB",
    ]


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str] = COLUMNS) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def format_plan(plan: Plan, *, why: bool = True) -> str:
    """The configuration table (axes in array order, z first) and, with ``why``, the reasons."""
    fp = plan.fingerprint
    dev = plan.device
    out = [
        f"Plan for {plan.dataset}: {fp.dim}D, {fp.n_cases} cases, target spacing "
        f"{_x(plan.target_spacing)} mm, budget {dev.gpu_memory_gb:g} GB ({dev.source}, "
        f"{dev.type}{', ' + dev.name if dev.name else ''})",
        "",
        format_table([configuration_row(n, c) for n, c in plan.configurations.items()]),
    ]
    for name, c in plan.configurations.items():
        if c.crop is not None:
            out.append(
                f"{name}: window {_x(c.crop.window_mm)} mm = {_x(c.crop.window_voxels)} voxels, "
                f"localised by {c.crop.localiser} at {_x(c.crop.localiser_spacing)} mm"
            )
    s = plan.schedule
    budget = "" if s.time_budget_s is None else f", time budget {s.time_budget_s:g} s"
    out.append(
        f"schedule: {s.epochs} epochs x {s.iterations_per_epoch} iterations ({s.source}{budget})"
    )
    if why:
        out += ["", "Why:"]
        out += [f"  {key}: {text}" for key, text in plan.why.items()]
        for name, c in plan.configurations.items():
            out += [f"  {name}.{key}: {text}" for key, text in c.why.items()]
    return "\n".join(out)
