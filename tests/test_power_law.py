"""The learning curve's power-law fit (autoseg.evaluation.power_law)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from autoseg.evaluation.power_law import (
    MIN_SIZES,
    UNBOUNDED_FACTOR,
    answer,
    default_target,
    fit_power_law,
    refusal,
)

SIZES = [4, 8, 16, 32, 64]


def _points(a: float, b: float, noise: float, seeds: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    n, dice = [], []
    for size in SIZES:
        for _ in range(seeds):
            n.append(size)
            dice.append(1 - a * size ** (-b) * math.exp(rng.normal(0, noise)))
    return n, dice


def test_recovers_a_known_power_law_exactly():
    n, dice = _points(0.8, 0.45, noise=0.0)
    fit = fit_power_law(n, dice)
    assert fit.a == pytest.approx(0.8, rel=1e-9)
    assert fit.b == pytest.approx(0.45, rel=1e-9)
    assert fit.s == pytest.approx(0.0, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.n_points == 15 and fit.n_sizes == 5
    assert float(fit.dice(10)) == pytest.approx(1 - 0.8 * 10**-0.45)


def test_recovers_a_noisy_power_law_and_its_band_covers_the_truth_95_percent_of_the_time():
    fits = [fit_power_law(*_points(0.6, 0.35, noise=0.05, seed=s)) for s in range(400)]
    assert np.mean([f.b for f in fits]) == pytest.approx(0.35, abs=0.005)
    assert np.median([f.a for f in fits]) == pytest.approx(0.6, rel=0.03)
    covered = np.mean([f.b_low < 0.35 < f.b_high for f in fits])
    assert 0.92 <= covered <= 0.98


def test_fit_agrees_with_polyfit_and_linregress():
    n, dice = _points(0.7, 0.3, noise=0.08, seed=3)
    fit = fit_power_law(n, dice)
    x, y = np.log(n), np.log(1 - np.asarray(dice))
    slope, intercept = np.polyfit(x, y, 1)
    assert fit.b == pytest.approx(-slope, rel=1e-10)
    assert math.log(fit.a) == pytest.approx(intercept, rel=1e-10)
    ref = stats.linregress(x, y)
    t = stats.t.ppf(0.975, len(x) - 2)
    assert fit.b_low == pytest.approx(-ref.slope - t * ref.stderr, rel=1e-9)
    assert fit.b_high == pytest.approx(-ref.slope + t * ref.stderr, rel=1e-9)
    assert fit.r2 == pytest.approx(ref.rvalue**2, rel=1e-9)
    # the curve's band at one size: statsmodels' formula written out with linregress's numbers
    x0 = math.log(100)
    resid = y - (ref.intercept + ref.slope * x)
    s = math.sqrt((resid**2).sum() / (len(x) - 2))
    half = t * s * math.sqrt(1 / len(x) + (x0 - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
    lo, hi = fit.error_band(100)
    centre = ref.intercept + ref.slope * x0
    assert math.log(float(lo)) == pytest.approx(centre - half, rel=1e-9)
    assert math.log(float(hi)) == pytest.approx(centre + half, rel=1e-9)


def test_subjects_for_target_and_its_band_match_a_search_along_the_band():
    n, dice = _points(0.9, 0.4, noise=0.06, seed=5)
    fit = fit_power_law(n, dice)
    target = 0.85
    need, low, high = fit.subjects_for(target)
    assert float(fit.dice(need)) == pytest.approx(target, abs=1e-9)
    grid = np.exp(np.linspace(math.log(1), math.log(1e5), 200001))
    d_lo, d_hi = fit.dice_band(grid)
    inside = (d_lo <= target) & (target <= d_hi)
    assert grid[inside].min() == pytest.approx(low, rel=1e-3)
    assert grid[inside].max() == pytest.approx(high, rel=1e-3)
    assert low < need < high


def test_answer_says_how_many_more_subjects():
    n, dice = _points(0.5, 0.5, noise=0.01, seed=1)
    fit = fit_power_law(n, dice)
    # e = 0.5 n^-0.5 reaches 0.05 (Dice 0.95) at n = 100
    got = answer(fit, n_current=64, current_dice=float(fit.dice(64)), target=0.95)
    assert got.kind == "more"
    assert got.n_needed == pytest.approx(100, abs=3)
    assert got.more == got.n_needed - 64
    assert got.n_low <= got.n_needed <= got.n_high
    assert got.text.startswith(f"about {got.more} more labelled subjects to reach Dice 0.950")
    assert f"95 % band {got.n_low - 64}–{got.n_high - 64}" in got.text


def test_a_band_beyond_twenty_times_the_measured_subjects_is_called_unbounded():
    # a shallow, noisy curve (usgra-seg at 2.5 min per run: b ~ 0.07): the band's upper end is
    # astronomically far out and is reported as unbounded, not as a number of subjects
    n, dice = _points(0.65, 0.07, noise=0.06, seed=3)
    fit = fit_power_law(n, dice)
    assert fit.b_low > 0  # not flat
    target = float(fit.dice(5 * max(n)))  # reached at 5x the subjects: a number is given
    got = answer(fit, n_current=max(n), current_dice=float(fit.dice(max(n))), target=target)
    assert got.kind == "more" and got.n_high > UNBOUNDED_FACTOR * max(n)
    assert f"more than {UNBOUNDED_FACTOR * max(n) - max(n)}: unbounded" in got.text
    assert str(got.n_high - max(n)) not in got.text


def test_a_target_beyond_twenty_times_the_measured_subjects_is_out_of_reach():
    n, dice = _points(0.65, 0.07, noise=0.03, seed=5)
    fit = fit_power_law(n, dice)
    got = answer(fit, n_current=max(n), current_dice=float(fit.dice(max(n))), target=0.75)
    assert got.kind == "beyond" and "beyond what this curve can say" in got.text
    assert "more labelled" not in got.text


def test_a_band_end_that_overflows_is_infinite_not_an_error():
    n, dice = _points(0.65, 0.07, noise=0.08, seed=3)  # its band end: exp(> 700)
    fit = fit_power_law(n, dice)
    found = fit.subjects_for(float(fit.dice(5 * max(n))))
    assert found is not None and math.isinf(found[2]) and math.isfinite(found[0])
    got = answer(fit, n_current=max(n), current_dice=0.4, target=float(fit.dice(5 * max(n))))
    assert got.kind == "more" and "unbounded" in got.text


def test_answer_reached_when_the_target_is_below_the_curve():
    n, dice = _points(0.5, 0.5, noise=0.01, seed=1)
    fit = fit_power_law(n, dice)
    got = answer(fit, n_current=64, current_dice=0.94, target=0.9)
    assert got.kind == "reached" and got.more == 0


def test_flat_data_says_flat():
    rng = np.random.default_rng(2)
    n = [s for s in SIZES for _ in range(2)]
    dice = list(0.8 + rng.normal(0, 0.01, len(n)))
    fit = fit_power_law(n, dice)
    assert fit.b_low <= 0 <= fit.b_high
    assert fit.subjects_for(0.85) is None
    got = answer(fit, n_current=64, current_dice=0.8)
    assert got.kind == "flat"
    assert got.text.startswith("the curve is flat: more labels of this kind will not help")


def test_a_wide_band_around_a_rising_fit_is_uncertain_not_flat():
    # the thigh phantom's learning curve: two seeds far apart at every size
    n = [3, 3, 6, 6, 8, 8, 11, 11]
    dice = [0.696, 0.521, 0.845, 0.641, 0.897, 0.646, 0.885, 0.833]
    fit = fit_power_law(n, dice)
    assert fit.b_low <= 0 < fit.b and fit.gain_from_doubling(11) >= 0.01
    got = answer(fit, n_current=11, current_dice=0.859)
    assert got.kind == "uncertain"
    assert "cannot tell yet" in got.text and "--seeds" in got.text and "flat" not in got.text


def test_a_significant_but_tiny_exponent_is_flat_by_the_doubling_gain():
    # e = 0.1 n^-0.05 with no noise: b's band excludes 0, but doubling 64 gains 0.002 Dice
    n, dice = _points(0.1, 0.05, noise=0.0)
    fit = fit_power_law(n, dice)
    assert fit.b_low > 0
    assert fit.gain_from_doubling(64) < 0.01
    assert answer(fit, 64, float(fit.dice(64))).kind == "flat"


@pytest.mark.parametrize("sizes", [[10, 10, 10], [10, 20, 10, 20], [5]])
def test_fewer_than_three_sizes_refuses(sizes):
    dice = [0.7 + 0.001 * i for i in range(len(sizes))]
    why = refusal(sizes, dice)
    assert why is not None and f"at least {MIN_SIZES}" in why and "\n" not in why
    with pytest.raises(ValueError, match="at least 3"):
        fit_power_law(sizes, dice)
    assert answer(None, max(sizes), 0.7, reason=why).kind == "refused"


def test_non_finite_points_do_not_count_as_sizes():
    assert refusal([5, 10, 20], [0.5, 0.6, float("nan")]) is not None
    assert refusal([5, 10, 20], [0.5, 0.6, 0.7]) is None


def test_default_target_lies_between_the_current_dice_and_one():
    assert default_target(0.80) == pytest.approx(0.85)
    assert default_target(0.97) == pytest.approx(0.985)
    for d in np.linspace(0.0, 0.999, 50):
        assert d < default_target(d) < 1
