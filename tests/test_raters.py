"""Tests for autoseg.evaluation.raters and ``autoseg raters`` on synthetic raters of a truth."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from autoseg.cli import raters as raters_cli
from autoseg.errors import AutosegError
from autoseg.evaluation import compare_raters, consensus, human_level_test, majority_vote, staple
from autoseg.io import Geometry, read_image, write_image

SPACING = (3.0, 0.5, 0.5)
SHAPE = (6, 32, 32)


def _ball(shape, centre, radius_mm, spacing=SPACING) -> np.ndarray:
    axes = [(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return ((z / 2.0) ** 2 + y**2 + x**2 <= radius_mm**2).astype(np.uint8)


def _disjoint_flips(truth: np.ndarray, n_raters: int, seed: int) -> list[np.ndarray]:
    """Each rater flips its own voxels near the boundary; no voxel is flipped twice."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage as ndi

    band = ndi.binary_dilation(truth, iterations=2) & ~ndi.binary_erosion(truth, iterations=2)
    idx = np.flatnonzero(band)
    rng.shuffle(idx)
    owner = np.arange(idx.size) % (n_raters + 1)  # 1/(n+1) of the band stays untouched
    raters = []
    for r in range(n_raters):
        m = truth.copy().ravel()
        mine = idx[owner == r]
        m[mine] = truth.ravel()[mine] ^ 1
        raters.append(m.reshape(truth.shape))
    return raters


def test_majority_vote_recovers_the_truth_when_two_of_three_agree():
    truth = _ball(SHAPE, (3, 16, 16), 5.0)
    raters = _disjoint_flips(truth, 3, seed=0)
    assert all(not np.array_equal(r, truth) for r in raters)
    assert np.array_equal(majority_vote(raters), truth)
    assert np.array_equal(consensus(raters, "majority"), truth)


def test_majority_vote_with_several_labels_and_ties_going_to_background():
    a = np.zeros((4, 4), np.uint8)
    a[0, :] = 1
    a[1, :] = 2
    b = a.copy()
    b[0, 0] = 2  # 2 of 3 still say 1
    c = a.copy()
    c[1, 1] = 0
    assert np.array_equal(majority_vote([a, b, c]), a)
    # Two raters that disagree: tie -> background, i.e. their intersection.
    d = np.zeros((4, 4), np.uint8)
    d[0, :2] = 1
    assert np.array_equal(majority_vote([a, d]), np.where((a == 1) & (d == 1), 1, 0))


def test_staple_runs_and_agrees_with_the_truth():
    truth = _ball(SHAPE, (3, 16, 16), 5.0)
    raters = _disjoint_flips(truth, 3, seed=1)
    est, performance = staple(raters)
    dice = 2 * (est & truth).sum() / (est.sum() + truth.sum())
    assert dice > 0.97
    assert len(performance[1]["sensitivity"]) == 3
    assert all(0.5 < s <= 1.0 for s in performance[1]["sensitivity"])
    assert np.array_equal(consensus(raters, "staple"), est)


def test_consensus_needs_two_raters_and_a_known_method():
    m = np.zeros((3, 3), np.uint8)
    with pytest.raises(AutosegError, match="at least 2"):
        consensus([m], "majority")
    with pytest.raises(AutosegError, match="unknown"):
        consensus([m, m], "mean")


# --------------------------------------------------------------------------------------------
# The human-level test


def test_human_level_test_direction_and_verdicts():
    rng = np.random.default_rng(0)
    humans = rng.normal(0.85, 0.03, 30)
    same = rng.normal(0.85, 0.03, 10)
    worse = rng.normal(0.70, 0.03, 10)
    better = rng.normal(0.95, 0.03, 10)
    assert human_level_test(same, humans, higher_is_better=True)["verdict"] == "human-level"
    bad = human_level_test(worse, humans, higher_is_better=True)
    assert bad["p_value"] < 0.05 and bad["verdict"] == "worse"
    good = human_level_test(better, humans, higher_is_better=True)
    assert good["p_value"] > 0.5 and good["verdict"] == "human-level"  # one-sided
    # For a distance, higher is worse.
    dist = human_level_test(1 / worse, 1 / humans, higher_is_better=False)
    assert dist["verdict"] == "worse"
    assert human_level_test([], humans, higher_is_better=True)["verdict"] == "undetermined"
    assert human_level_test([1.0, 1.0], [1.0] * 5, higher_is_better=True)["p_value"] == 1.0


# --------------------------------------------------------------------------------------------
# Folders


def _rater_dataset(root: Path, n_cases: int, n_raters: int, seed: int):
    """Per case a ball; raters and an equal model shift it by 0-1 voxel; a worse model by 4."""
    rng = np.random.default_rng(seed)
    geom = Geometry.default(SHAPE, SPACING)
    rater_dirs = [root / f"rater{i}" for i in range(n_raters)]
    for case in range(n_cases):
        centre = (2.5, 16 + rng.uniform(-2, 2), 16 + rng.uniform(-2, 2))
        radius = rng.uniform(3.5, 5.0)

        def shifted(max_shift: float, centre=centre, radius=radius) -> np.ndarray:
            dy, dx = rng.uniform(-max_shift, max_shift, 2)
            return _ball(SHAPE, (centre[0], centre[1] + dy, centre[2] + dx), radius)

        for d in rater_dirs:
            write_image(d / f"case{case:02d}.nii.gz", shifted(1.2), geom)
        write_image(root / "equal" / f"case{case:02d}.nii.gz", shifted(1.2), geom)
        worse = _ball(SHAPE, (centre[0], centre[1] + 4, centre[2] + 4), radius)
        write_image(root / "worse" / f"case{case:02d}.nii.gz", worse, geom)
    return rater_dirs


def _verdicts(result, baseline: str) -> dict[str, dict]:
    return {
        c["metric"]: c
        for c in result.comparisons
        if c["baseline"] == baseline and c["cohort"] == "all" and c["label"] == 1
    }


def test_pairwise_table_has_one_row_per_rater_pair(tmp_path):
    dirs = _rater_dataset(tmp_path, n_cases=3, n_raters=4, seed=0)
    res = compare_raters(dirs, out_dir=tmp_path / "out", num_workers=1, progress=False)
    assert len(res.pairwise_summary) == 4 * 3 // 2
    pairs = {(r["rater_a"], r["rater_b"]) for r in res.pairwise_summary}
    assert pairs == set(itertools.combinations(res.raters, 2))
    assert len(res.pairwise) == 3 * 6
    assert all(r["n_cases"] == 3 for r in res.pairwise_summary)
    assert all(0.3 < r["dice_mean"] <= 1.0 for r in res.pairwise_summary)
    assert len(res.vs_consensus) == 3 * 4  # each rater vs consensus, no model
    with open(tmp_path / "out" / "pairwise.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6
    cons = read_image(tmp_path / "out" / "consensus" / "case00.nii.gz")
    assert cons.geometry.spacing_zyx == pytest.approx(SPACING)
    assert not (tmp_path / "out" / "model_comparison.csv").exists()


def test_worse_model_is_detected_and_an_equal_one_is_human_level(tmp_path):
    dirs = _rater_dataset(tmp_path, n_cases=10, n_raters=3, seed=3)
    worse = compare_raters(dirs, pred_dir=tmp_path / "worse", num_workers=1, progress=False)
    for baseline in ("consensus", "raters"):
        v = _verdicts(worse, baseline)
        assert v["dice"]["p_value"] < 0.05 and v["dice"]["verdict"] == "worse"
        assert v["hd95_mm_filled"]["verdict"] == "worse"
    equal = compare_raters(dirs, pred_dir=tmp_path / "equal", num_workers=1, progress=False)
    for baseline in ("consensus", "raters"):
        v = _verdicts(equal, baseline)
        assert v["dice"]["p_value"] > 0.05 and v["dice"]["verdict"] == "human-level"
        assert v["hd95_mm_filled"]["verdict"] == "human-level"
        # 10 cases x 3 raters: model vs each rater (or each leave-one-out consensus); humans
        # vs each other (3 pairs) or vs the consensus of the others (3 raters).
        assert v["dice"]["n_model"] == 30 and v["dice"]["n_human"] == 30
    loo = [r for r in equal.leave_one_out if r["case"] == "case00"]
    assert len(loo) == 3 * 2  # each left-out rater and the model, against the same consensus


def test_cohorts_staple_and_outputs_through_the_cli(tmp_path, capsys):
    dirs = _rater_dataset(tmp_path, n_cases=6, n_raters=3, seed=5)
    cohorts = tmp_path / "cohorts.csv"
    cohorts.write_text("case,cohort\n" + "".join(f"case{i:02d},{'AB'[i % 2]}\n" for i in range(6)))
    out = tmp_path / "out"
    parser = argparse.ArgumentParser(prog="autoseg")
    raters_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["raters", "--raters", *map(str, dirs), "--pred", str(tmp_path / "worse"),
         "--method", "staple", "--cohorts", str(cohorts), "--out", str(out), "--quiet",
         "--workers", "2"]
    )  # fmt: skip
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "consensus: staple" in text and "-> worse" in text
    data = json.loads((out / "raters.json").read_text())
    assert data["consensus_method"] == "staple"
    assert data["test"]["alpha"] == 0.05 and "one-sided" in data["test"]["name"]
    assert {c["cohort"] for c in data["comparisons"]} == {"all", "A", "B"}
    assert data["staple_performance"]["case00"]["1"]["sensitivity"]
    for name in (
        "pairwise_per_case.csv",
        "pairwise.csv",
        "vs_consensus_per_case.csv",
        "model_vs_raters_per_case.csv",
        "model_comparison.csv",
        "leave_one_out_per_case.csv",
    ):
        assert (out / name).is_file(), name
    assert len(list((out / "consensus").glob("*.nii.gz"))) == 6


def test_cases_missing_from_a_rater_are_skipped_and_listed(tmp_path):
    dirs = _rater_dataset(tmp_path, n_cases=3, n_raters=2, seed=1)
    (dirs[1] / "case02.nii.gz").unlink()
    res = compare_raters(dirs, num_workers=1, progress=False)
    assert res.cases == ["case00", "case01"] and res.skipped_cases == ["case02"]


def test_rater_errors_are_user_errors(tmp_path):
    dirs = _rater_dataset(tmp_path, n_cases=2, n_raters=2, seed=2)
    with pytest.raises(AutosegError, match="at least 2"):
        compare_raters(dirs[:1], progress=False)
    with pytest.raises(AutosegError, match="unknown consensus"):
        compare_raters(dirs, method="vote", progress=False)
    other = tmp_path / "other"
    write_image(other / "zzz.nii.gz", np.zeros(SHAPE, np.uint8), Geometry.default(SHAPE, SPACING))
    with pytest.raises(AutosegError, match="no case is present"):
        compare_raters([dirs[0], other], progress=False)
