"""Training schedule: nnU-Net's default length and the ``--time-budget`` argument.

Without a time budget every configuration trains nnU-Net's 1000 x 250 iterations
(:func:`schedule_rule`). With one, :mod:`autoseg.planning.budget` times the training
iterations on the planning device and fits each configuration's schedule (and, if needed,
its network) to the budget; this module only parses the duration.
"""

from __future__ import annotations

import re

from autoseg.errors import AutosegError
from autoseg.planning.plan import Schedule

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
