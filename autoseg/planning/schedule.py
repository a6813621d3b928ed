"""Training schedule: nnU-Net's default length and the ``--time-budget`` argument.

Without a time budget every configuration trains nnU-Net's 1000 x 250 iterations
(:func:`schedule_rule`). With one, :mod:`autoseg.planning.budget` times the training
iterations on the planning device and fits each configuration's schedule (and, if needed,
its network) to the budget; this module only parses the duration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoseg.errors import AutosegError
from autoseg.planning.plan import SGD_LR, SGD_WEIGHT_DECAY, Schedule

# nnU-Net: 1000 epochs x 250 iterations (250k steps), the length its defaults are tuned for.
DEFAULT_EPOCHS = 1000
DEFAULT_ITERATIONS_PER_EPOCH = 250

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"10m"``, ``"8h"``, ``"1h30m"``, ``"90s"``, ``"2d"`` or a bare number
    of seconds (``"600"``). Raises AutosegError for anything else or a non-positive value."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", s):
            seconds = float(s)
        elif s and _DURATION.sub("", s) == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(s))
        else:
            raise AutosegError(
                f"cannot read the time budget {text!r}",
                fix="write it like 10m, 8h, 1h30m, 90s, 2d or a number of seconds",
            )
    if not seconds > 0:
        raise AutosegError(f"the time budget must be positive, got {text!r}", fix="e.g. 8h")
    return seconds


def schedule_rule(time_budget_s: float | None) -> tuple[Schedule, str]:
    """The default schedule (the planner's choice without a time budget; a budget given here
    is only recorded — ``budget.fit_to_budget`` is what fits one)."""
    schedule = Schedule(
        epochs=DEFAULT_EPOCHS,
        iterations_per_epoch=DEFAULT_ITERATIONS_PER_EPOCH,
        time_budget_s=None if time_budget_s is None else float(time_budget_s),
        source="default",
    )
    why = f"nnU-Net default {DEFAULT_EPOCHS} epochs x {DEFAULT_ITERATIONS_PER_EPOCH} iterations"
    if time_budget_s is not None:
        why += (
            f"; time budget {time_budget_s:g} s recorded - the trainer fits epochs to it from a "
            "measured iteration speed"
        )
    return schedule, why


# Optimizer of a short schedule. nnU-Net's SGD (Nesterov momentum 0.99, lr 0.01, poly decay)
# is tuned for 250k iterations; in a short schedule it spends its first ~1200 iterations before
# a small structure appears at all. Thigh phantom 2d (8-128 features, batch 2), fold 0,
# validation Dice, SGD / AdamW lr 3e-3 (documentation/planning.md, "Optimizer of a short
# schedule"): 1000 iterations 0.00 / 0.72, 3000: 0.74 / 0.72, 6000: 0.83 / 0.82; fold 1 at
# 1000: 0.33 / 0.50; wrist phantom at 1000: 0.24 / 0.84. AdamW at lr 1e-3 / 1e-2 (1000): 0.44 /
# 0.36. benchmarks/short_schedule.py, 3000 iterations: thigh 0.86 / 0.84, wrist 0.93 / 0.89.
# On real data (usgra-seg, 2d on the 4x grid, 16-256 features, batch 2, 9400 iterations, fold
# 0) AdamW was not worse: test nerve Dice 0.645 / SGD 0.629, hold-out 0.622 / 0.613. So between
# 3000 and ~10 000 iterations the two are level within a seed's noise, and AdamW, which finds a
# small structure within ~200 iterations rather than ~1200, is kept up to 10 000; beyond,
# nnU-Net's SGD, tuned for its 250 000.
ADAMW_BELOW_ITERATIONS = 10_000
ADAMW_LR = 3e-3
ADAMW_WEIGHT_DECAY = 1e-4


@dataclass(frozen=True)
class OptimizerChoice:
    name: str  # "sgd" | "adamw" (plan.OPTIMIZERS)
    initial_lr: float
    weight_decay: float


def optimizer_rule(total_iterations: int) -> tuple[OptimizerChoice, str]:
    """AdamW for schedules shorter than ``ADAMW_BELOW_ITERATIONS`` training iterations per fold,
    nnU-Net's SGD otherwise; both decay with the same poly schedule."""
    if total_iterations < ADAMW_BELOW_ITERATIONS:
        choice = OptimizerChoice("adamw", ADAMW_LR, ADAMW_WEIGHT_DECAY)
        why = (
            f"{total_iterations} iterations < {ADAMW_BELOW_ITERATIONS}: AdamW lr {ADAMW_LR:g} "
            "(SGD with momentum 0.99 needs ~1200 iterations before a small structure appears)"
        )
    else:
        choice = OptimizerChoice("sgd", SGD_LR, SGD_WEIGHT_DECAY)
        why = f"{total_iterations} iterations >= {ADAMW_BELOW_ITERATIONS}: nnU-Net's SGD"
    return choice, why
