"""A power law of the segmentation error in the number of training subjects, and what it says.

Desai et al. (knee MRI) found Dice, VOE and CV all follow a power law of the number of training
subjects (p < 1e-4, exponents below 1). Fitting Dice itself as ``c·n^b`` would let the curve
pass 1; the error ``e = 1 − Dice`` goes to 0 instead, so the fitted Dice saturates below 1::

    e(n) = a · n^(−b)        log e = log a − b · log n

The fit is ordinary least squares of ``log e`` on ``log n`` over every measured point (each
subset size and seed one point, not the means per size, so that the residual spread counts the
seeds' spread). On the log scale the points' spread is roughly constant, where on the Dice scale
it shrinks as the error does, and the power law is a straight line.

**The band** is the regression's t-interval on the log scale (95 % by default): for the
exponent ``b ± t·s/√Sxx`` and for the fitted curve ``ŷ(x) ± t·s·√(1/m + (x − x̄)²/Sxx)``,
with ``s`` the residual standard deviation on ``m − 2`` degrees of freedom. It is exact when
the log errors scatter normally with one variance about the line. A bootstrap over the points
was not used: with 6-10 points at 3-4 sizes many resamples hold fewer than three sizes (the
slope is then undefined or wild) and the percentile bootstrap covers too little at such
sizes, whereas the t-interval widens honestly (t = 4.3 on 2 degrees of freedom). The seeds of
one size share subjects (and at 100 % all of them), so the points are not fully independent
and the band is, if anything, too narrow; the answer says "about".

**The number of subjects** for a target Dice ``D`` is where the fitted line reaches
``log(1 − D)``; its band is where the curve's band reaches it (Fieller's interval, solved in
closed form). That interval is bounded exactly when the exponent's band excludes 0.

**Flat**: when doubling the largest subset is predicted to gain less than :data:`FLAT_GAIN`
Dice, more labels of this kind will not help. **Uncertain**: when the exponent's band includes
0 but the fitted curve itself still gains :data:`FLAT_GAIN` or more from doubling, the runs
spread too much to tell a rising curve from a flat one (the thigh phantom with 3-11 subjects
and two seeds: b = 0.77, band −0.07 to 1.60, +0.059 from doubling) — the answer says so and
asks for more seeds instead of calling it flat.

**Refusals**: fewer than :data:`MIN_SIZES` distinct subset sizes (two sizes fit any straight
line through their means, leaving nothing to test the power law with, and an extrapolation from
them has no error estimate worth the name).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_SIZES = 3
CONFIDENCE = 0.95
ERROR_FLOOR = 1e-3
"""1 − Dice is clipped here before the logarithm: a perfect Dice (an easy case, a tiny
held-out set) would otherwise give log 0. 1e-3 is below any Dice a nerve segmentation reaches
(inter-rater Dice of nerves is 0.8-0.95)."""
FLAT_GAIN = 0.01
"""Dice gained by doubling the largest subset below which the curve counts as flat: 0.01 is
under the seed-to-seed spread of a single training run on these datasets (0.01-0.03)."""
TARGET_STEP = 0.05
"""The default target: the measured Dice at the largest subset plus this much …"""


def default_target(current_dice: float) -> float:
    """The Dice to ask about when the user names none: :data:`TARGET_STEP` above the current
    one, capped at halving the current error, so that the target always lies between the
    current Dice and 1 (0.80 -> 0.85; 0.97 -> 0.985)."""
    return min(current_dice + TARGET_STEP, 1.0 - (1.0 - current_dice) / 2.0)


def refusal(n: Sequence[float], dice: Sequence[float]) -> str | None:
    """Why these points cannot be fitted, in one line; None when they can."""
    sizes = sorted({float(v) for v, d in zip(n, dice) if math.isfinite(d)})
    if len(sizes) < MIN_SIZES:
        have = ", ".join(f"{s:g}" for s in sizes) or "none"
        return (
            f"no fit from {len(sizes)} subset size(s) ({have} subjects): a power law needs at "
            f"least {MIN_SIZES}, since a line through two sizes always fits and says nothing "
            "about the curve beyond them"
        )
    if sizes[0] <= 0:
        return "no fit: a subset of 0 subjects has no logarithm"
    return None


@dataclass(frozen=True)
class PowerLawFit:
    """``e = a·n^(−b)`` fitted in log–log, with what its t-interval needs."""

    a: float
    b: float
    b_low: float
    b_high: float
    confidence: float
    n_points: int
    n_sizes: int
    x_mean: float  # mean log n
    y_mean: float  # mean log e
    sxx: float  # sum of (log n − x_mean)²
    s: float  # residual standard deviation (log scale)
    t: float  # the t quantile on n_points − 2 degrees of freedom
    r2: float

    def error(self, n: float | np.ndarray) -> float | np.ndarray:
        return self.a * np.asarray(n, dtype=float) ** (-self.b)

    def dice(self, n: float | np.ndarray) -> float | np.ndarray:
        return 1.0 - self.error(n)

    def _half_width(self, x: np.ndarray) -> np.ndarray:
        return self.t * self.s * np.sqrt(1.0 / self.n_points + (x - self.x_mean) ** 2 / self.sxx)

    def error_band(self, n: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) error of the curve's band at ``n``."""
        x = np.log(np.asarray(n, dtype=float))
        y = math.log(self.a) - self.b * x
        h = self._half_width(x)
        return np.exp(y - h), np.exp(y + h)

    def dice_band(self, n: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) Dice of the curve's band at ``n``."""
        lo, hi = self.error_band(n)
        return 1.0 - hi, 1.0 - lo

    def gain_from_doubling(self, n: float) -> float:
        """Dice the curve gains from ``n`` to ``2n`` subjects."""
        return float(self.error(n) - self.error(2 * n))

    def is_flat(self, n_max: float) -> bool:
        return self.gain_from_doubling(n_max) < FLAT_GAIN

    def is_uncertain(self, n_max: float) -> bool:
        """The exponent's band includes 0 while the fit gains FLAT_GAIN or more by doubling."""
        return self.b_low <= 0 and not self.is_flat(n_max)

    def subjects_for(self, target_dice: float) -> tuple[float, float, float] | None:
        """Training subjects at which the curve reaches ``target_dice``, with the band's
        (low, high); None when the band is unbounded (the exponent's band includes 0).

        The band solves ``(ŷ(x) − y_t)² = t²s²(1/m + (x − x̄)²/Sxx)`` for ``x = log n``
        (Fieller): a quadratic with a positive leading coefficient ``b² − t²s²/Sxx`` exactly
        when the exponent's band excludes 0, and then always two real roots.
        """
        if not 0 < target_dice < 1:
            raise ValueError(f"target Dice {target_dice} must lie between 0 and 1")
        y_t = math.log(1.0 - target_dice)
        slope = -self.b
        k = (self.t * self.s) ** 2
        lead = slope**2 - k / self.sxx
        if lead <= 0 or slope >= 0:
            return None
        c = self.y_mean - y_t
        centre = self.x_mean - c / slope
        disc = max(0.0, (slope * c) ** 2 - lead * (c**2 - k / self.n_points))
        u1 = (-slope * c - math.sqrt(disc)) / lead
        u2 = (-slope * c + math.sqrt(disc)) / lead
        return (
            _exp(centre),
            _exp(self.x_mean + min(u1, u2)),
            _exp(self.x_mean + max(u1, u2)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _exp(x: float) -> float:
    """exp that gives inf instead of overflowing (a nearly flat curve's band end)."""
    return math.exp(x) if x < 700 else math.inf


def fit_power_law(
    n: Sequence[float], dice: Sequence[float], confidence: float = CONFIDENCE
) -> PowerLawFit:
    """Fit ``1 − dice = a·n^(−b)`` by least squares in log–log; raises ValueError with the
    one-line :func:`refusal` when the points cannot be fitted. Points with a non-finite Dice
    are left out."""
    from scipy.stats import t as student_t

    why = refusal(n, dice)
    if why is not None:
        raise ValueError(why)
    pairs = [(float(v), float(d)) for v, d in zip(n, dice) if math.isfinite(d)]
    x = np.log([p[0] for p in pairs])
    y = np.log(np.clip([1.0 - p[1] for p in pairs], ERROR_FLOOR, None))
    m = len(x)
    x_mean, y_mean = float(x.mean()), float(y.mean())
    sxx = float(((x - x_mean) ** 2).sum())
    slope = float(((x - x_mean) * (y - y_mean)).sum() / sxx)
    intercept = y_mean - slope * x_mean
    resid = y - (intercept + slope * x)
    sse = float((resid**2).sum())
    s = math.sqrt(sse / (m - 2))
    syy = float(((y - y_mean) ** 2).sum())
    t = float(student_t.ppf(0.5 + confidence / 2, m - 2))
    se_slope = s / math.sqrt(sxx)
    b = -slope
    return PowerLawFit(
        a=math.exp(intercept),
        b=b,
        b_low=b - t * se_slope,
        b_high=b + t * se_slope,
        confidence=confidence,
        n_points=m,
        n_sizes=len(set(x.tolist())),
        x_mean=x_mean,
        y_mean=y_mean,
        sxx=sxx,
        s=s,
        t=t,
        r2=1.0 - sse / syy if syy > 0 else 1.0,
    )


@dataclass(frozen=True)
class Answer:
    """The lab's question answered: ``kind`` is ``more``, ``reached``, ``beyond`` (more than
    :data:`UNBOUNDED_FACTOR` x the measured subjects), ``flat``, ``uncertain`` or ``refused``;
    ``text`` is the sentence."""

    kind: str
    text: str
    target: float | None = None
    n_current: int | None = None
    n_needed: int | None = None
    n_low: int | None = None
    n_high: int | None = None

    @property
    def more(self) -> int | None:
        return None if self.n_needed is None else max(0, self.n_needed - (self.n_current or 0))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "more": self.more}


def _count(n: float) -> str:
    return "an unbounded number of" if not math.isfinite(n) else f"about {n:.3g}"


# Beyond this many times the measured subjects the band's upper end is reported as unbounded:
# extrapolating a power law fitted over one decade (e.g. 41-163) by more than another one is
# the fit's shape talking (usgra-seg at 2.5 min per run: an upper end of 2.6e9 subjects).
UNBOUNDED_FACTOR = 20


def answer(
    fit: PowerLawFit | None,
    n_current: int,
    current_dice: float,
    target: float | None = None,
    reason: str | None = None,
) -> Answer:
    """What the fit says about labelling more subjects of this kind. ``n_current``: training
    subjects of the largest subset; ``current_dice``: its measured mean Dice; ``target``
    None: :func:`default_target`. ``fit`` None: refused, for ``reason``."""
    if fit is None:
        return Answer("refused", reason or "no fit", n_current=n_current)
    if target is None:
        target = default_target(current_dice)
    pct = round(fit.confidence * 100)
    if fit.is_uncertain(n_current):
        return Answer(
            "uncertain",
            "the curve cannot tell yet whether more labels help: its exponent's "
            f"{pct} % band ({fit.b_low:.2f} to {fit.b_high:.2f}) includes 0, though the fit "
            f"itself gains {fit.gain_from_doubling(n_current):+.3f} Dice from doubling the "
            f"{n_current} training subjects; more seeds (--seeds) narrow the band",
            target=target,
            n_current=n_current,
        )
    if fit.is_flat(n_current):
        gain = fit.gain_from_doubling(n_current)
        return Answer(
            "flat",
            "the curve is flat: more labels of this kind will not help (exponent "
            f"b = {fit.b:.2f}, {pct} % band {fit.b_low:.2f} to {fit.b_high:.2f}; doubling the "
            f"{n_current} training subjects gains {gain:+.3f} Dice)",
            target=target,
            n_current=n_current,
        )
    found = fit.subjects_for(target)
    assert found is not None  # not flat: the exponent's band excludes 0
    if found[0] > UNBOUNDED_FACTOR * n_current:
        return Answer(
            "beyond",
            f"Dice {target:.3f} is beyond what this curve can say: the fit reaches it only at "
            f"{_count(found[0])} training subjects, more than {UNBOUNDED_FACTOR}x the "
            f"{n_current} measured (labels of this kind alone will not get there at this "
            "budget)",
            target=target,
            n_current=n_current,
        )
    need, low = math.ceil(found[0]), math.ceil(found[1])
    high = math.ceil(found[2]) if math.isfinite(found[2]) else UNBOUNDED_FACTOR * n_current + 1
    if need <= n_current:
        return Answer(
            "reached",
            f"Dice {target:.3f} is reached already: the curve passes it at about {need} "
            f"training subjects, and {n_current} were used",
            target=target,
            n_current=n_current,
            n_needed=need,
            n_low=low,
            n_high=high,
        )
    more_low, more_high = max(0, low - n_current), max(0, high - n_current)
    band = f"{more_low}–{more_high}"
    if high > UNBOUNDED_FACTOR * n_current:
        # a band's end far beyond the measured sizes is the fit's shape, not information
        band = f"{more_low} to more than {UNBOUNDED_FACTOR * n_current - n_current}: unbounded"
    return Answer(
        "more",
        f"about {need - n_current} more labelled subjects to reach Dice {target:.3f} "
        f"({pct} % band {band}): {need} training subjects instead of {n_current}",
        target=target,
        n_current=n_current,
        n_needed=need,
        n_low=low,
        n_high=high,
    )
