"""benchmarks/suggest_vs_random.py: the sets it trains on, its JSON, the verdict, and that a
rerun trains, scores and suggests nothing again (on a tiny planned phantom, 2 x 2 iterations)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import one_torch_thread, planned_subject_dataset

from autoseg.training.trainer import Trainer
from benchmarks import suggest_vs_random as svr

NAME = "043_TinyUS"


def test_random_picks_are_seeded_distinct_and_from_the_rest():
    rest = [f"c{i:02d}" for i in range(20)]
    a = svr.random_picks(rest, 5, 0)
    assert len(set(a)) == 5 and set(a) <= set(rest)
    assert a == svr.random_picks(list(reversed(rest)), 5, 0)  # the order given does not matter
    assert a != svr.random_picks(rest, 5, 1)


def test_added_size_is_a_share_of_the_pool_capped_by_the_rest():
    assert svr.added_size(0.25, 163, 122) == 41
    assert svr.added_size(0.25, 8, 6) == 2
    assert svr.added_size(0.25, 2, 1) == 1
    assert svr.added_size(0.5, 10, 3) == 3


def _seed(diff: float) -> dict:
    return {"difference": {"mean_dice": diff}}


def _arms(start: float, random: float, suggested: float) -> dict:
    return {a: {"mean_dice": {"mean": v}} for a, v in zip(svr.ARMS, (start, random, suggested))}


def test_the_verdict_names_the_winner_the_margin_and_disagreeing_seeds():
    text = svr.verdict(
        [_seed(0.02), _seed(0.04)], _arms(0.5, 0.55, 0.58), {"mean_dice": {"mean": 0.03}}
    )
    assert text.startswith("suggested beat random by 0.030 mean held-out Dice")
    assert "higher on 2 of 2 seed(s), lower on 0" in text
    assert "gained +0.050 at random and +0.080 as suggested" in text
    assert "a direction, not a significance test" in text
    text = svr.verdict(
        [_seed(-0.03), _seed(0.01), _seed(-0.01)],
        _arms(0.5, 0.6, 0.59),
        {"mean_dice": {"mean": -0.01}},
    )
    assert text.startswith("random beat suggested by 0.010")
    assert "The seeds disagree on the sign" in text


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    """12 frames of 6 subjects (two cohorts), planned 2d, 2 epochs of 2 iterations."""
    return planned_subject_dataset(tmp_path_factory.mktemp("svr") / "root", 43)


@pytest.fixture
def root(planned, tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(planned, copy)
    monkeypatch.setenv("AUTOSEG_ROOT", str(copy))
    return copy


def test_design_end_to_end_sets_json_and_a_rerun_trains_nothing(
    root, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "svr.json"
    args = ["43", "--seeds", "0", "1", "--workers", "0", "--device", "cpu", "--json", str(out)]
    with one_torch_thread():
        assert svr.main([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["benchmark"] == "suggest_vs_random"
    assert data["command"] and data["notes"] and data["machine"]["cpus"] >= 1
    m = data["measurement"]
    splits = json.loads((root / "results" / NAME / "splits.json").read_text())
    holdout = set(splits[0]["val"])
    pool = set(splits[0]["train"])
    assert set(m["holdout"]) == holdout and m["pool_cases"] == len(pool) == 8
    assert m["labels"] == {"1": "nerve"}
    work = Path(m["work"])
    assert work == root / "results" / NAME / "suggest_vs_random" / "2d"
    starts = []
    for s in m["seeds"]:
        sets = s["sets"]
        start, sugg, rand = (
            set(sets["start"]),
            set(sets["suggested_added"]),
            set(sets["random_added"]),
        )
        # S0: one whole subject of the four in the pool; K: a quarter of the pool's 8 cases
        assert len(start) == 2 and len({int(c[4:]) // 2 for c in start}) == 1
        assert s["k"] == 2 and len(sugg) == len(rand) == 2
        assert start <= pool and not (start & sugg) and not (start & rand)
        assert set(sets["rest"]) == pool - start and sugg | rand <= set(sets["rest"])
        assert [r["case"] for r in s["suggestions"]] == sets["suggested_added"]
        assert all(  # the default: suggest-labels' typical scans
            r["reason"].startswith(("the most typical of", "a scan unlike any"))
            for r in s["suggestions"]
        )
        starts.append(start)
        # what each model really trained on (run.json), never a held-out case
        trained = {
            arm: set(
                json.loads(
                    (
                        work / f"s{s['seed']}" / svr.arm_folder(arm, "typical") / "run.json"
                    ).read_text()
                )["train_cases"]
            )
            for arm in svr.ARMS
        }
        assert trained["start"] == start
        assert trained["suggested"] == start | sugg and trained["random"] == start | rand
        assert trained["suggested"] - trained["random"] == sugg - rand
        assert all(not (t & holdout) for t in trained.values())
        for arm in svr.ARMS:
            sc = s["scores"][arm]
            assert sc["n_cases"] == len(trained[arm]) and sc["epochs"] == 2
            assert 0 <= sc["mean_dice"] <= 1 and sc["dice"]["1"] == pytest.approx(sc["mean_dice"])
            assert 0 <= sc["failures"]["1"] <= len(holdout)
            assert sorted(s["cases"][arm]) == sorted(holdout)
        d = s["difference"]["mean_dice"]
        assert d == pytest.approx(
            s["scores"]["suggested"]["mean_dice"] - s["scores"]["random"]["mean_dice"]
        )
        assert (work / f"s{s['seed']}" / "suggest-typical" / "suggestions.csv").is_file()
    summary = m["summary"]
    diffs = [s["difference"]["mean_dice"] for s in m["seeds"]]
    assert summary["difference"]["mean_dice"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert summary["difference"]["mean_dice"]["n"] == 2
    names = [r["name"] for r in data["results"]]
    assert names[-1].startswith("suggested - random (paired by seed)")
    assert data["results"][-1]["runs"]["autoseg"] == pytest.approx(diffs)
    assert data["results"][-1]["note"] == summary["verdict"]
    assert (
        summary["verdict"] in printed
        and "S0 + suggested" in printed
        and "sugg. - random" in printed
    )

    # a rerun trains, scores and suggests nothing, and writes the same numbers
    def refuse(*a, **k):
        raise AssertionError("done again")

    monkeypatch.setattr(Trainer, "fit", refuse)
    monkeypatch.setattr("autoseg.evaluation.learning_curve.score_holdout", refuse)
    monkeypatch.setattr("autoseg.inference.suggest.suggest_labels", refuse)
    assert svr.main([*args, "--no-progress"]) == 0
    last = (work / "suggest_vs_random.log").read_text().split("\n--- ")[-1]
    assert last.count("done before") == 6 and "training" not in last
    again = json.loads(out.read_text())["measurement"]
    assert again["seeds"] == m["seeds"]
    # another ranking on the same seeds shares S0 and the random arm: it trains one arm
    monkeypatch.undo()
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    fits = []
    real_fit = Trainer.fit

    def counted(self, *a, **k):
        fits.append(1)
        return real_fit(self, *a, **k)

    monkeypatch.setattr(Trainer, "fit", counted)
    uncertain = [*args[:-1], str(tmp_path / "each.json"), "--strategy", "uncertain"]
    with one_torch_thread():
        assert svr.main([*uncertain, "--no-progress"]) == 0
    assert len(fits) == 2  # the uncertainty arm of each seed
    u = json.loads((tmp_path / "each.json").read_text())["measurement"]
    assert u["ranking"] == {"label": "each", "strategy": "uncertain", "aware": False, "tag": "each"}
    for s, s_unc in zip(m["seeds"], u["seeds"]):
        assert s_unc["scores"]["random"] == s["scores"]["random"]
        assert s_unc["scores"]["start"] == s["scores"]["start"]
        assert (work / f"s{s['seed']}" / "suggested-each" / "run.json").is_file()
        assert all(
            r["reason"].startswith(("uncertainty", "the most uncertain"))
            for r in s_unc["suggestions"]
        )


def test_a_deleted_start_model_is_retrained_and_its_suggestions_redone(root, tmp_path, monkeypatch):
    """Suggestions belong to one M0: a retrained M0 suggests again (and reuses nothing stale)."""
    args = ["43", "--seeds", "0", "--workers", "0", "--device", "cpu", "--no-progress"]
    args += ["--json", str(tmp_path / "a.json"), "--work", str(tmp_path / "w")]
    calls = []
    real = svr.suggested_picks

    def spy(*a, **k):
        calls.append(k["reuse"])
        return real(*a, **k)

    monkeypatch.setattr(svr, "suggested_picks", spy)
    suggestions = tmp_path / "w" / "s0" / "suggest-typical" / "suggestions.json"
    with one_torch_thread():
        assert svr.main(args) == 0
        first = suggestions.stat().st_mtime_ns
        assert svr.main(args) == 0
        assert suggestions.stat().st_mtime_ns == first
        for arm in svr.ARMS:
            shutil.rmtree(tmp_path / "w" / "s0" / svr.arm_folder(arm, "typical"))
        assert svr.main(args) == 0
    assert calls == [False, True, False]
    assert suggestions.stat().st_mtime_ns != first
