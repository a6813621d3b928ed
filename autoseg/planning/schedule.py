"""Training schedule: nnU-Net's default length and the ``--time-budget`` argument.

Fitting the schedule to a time budget needs a measured iteration speed on the training
device, which only the trainer can take; the planner records the budget and leaves
``source: "default"`` until then (it never invents a speed).
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
    """The default schedule, with the time budget recorded for the trainer."""
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
