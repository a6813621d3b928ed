"""``autoseg learning-curve``: the design of the runs, the budget rule, the command end to end
on a tiny planned phantom (resuming, the one-line errors) and its report section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import one_torch_thread, planned_subject_dataset, tiny_us_dataset
from PIL import Image

from autoseg.cli import main
from autoseg.errors import AutosegError
from autoseg.evaluation.learning_curve import (
    EPOCH_LOOP_SHARE,
    check_arguments,
    design_runs,
    nested_order,
    run_budget,
    subset_size,
)
from autoseg.training.trainer import Trainer

NAME = "041_TinyUS"


# ------------------------------------------------------------------------------ the design
def test_subset_size_rounds_half_up_and_keeps_one_subject():
    assert [subset_size(f, 5) for f in (0.25, 0.5, 0.75, 1.0)] == [1, 3, 4, 5]
    assert [subset_size(f, 42) for f in (0.25, 0.5, 0.75, 1.0)] == [11, 21, 32, 42]
    assert subset_size(0.01, 10) == 1


def test_nested_order_keeps_every_prefix_stratified():
    subjects = [f"p{i}" for i in range(9)] + [f"v{i}" for i in range(21)]
    strata = {s: ("patient" if s[0] == "p" else "volunteer") for s in subjects}
    for seed in range(5):
        order = nested_order(subjects, strata, seed)
        assert sorted(order) == sorted(subjects)
        for k in range(1, len(order) + 1):
            patients = sum(strata[s] == "patient" for s in order[:k])
            assert abs(patients - k * 9 / 30) < 1 + 1e-9
    assert nested_order(subjects, strata, 0) == nested_order(subjects, strata, 0)
    assert nested_order(subjects, strata, 0) != nested_order(subjects, strata, 1)


def test_design_runs_nests_subjects_per_seed_and_keeps_frames_of_a_subject_together():
    cases = [f"c{i:02d}" for i in range(24)]  # 8 subjects of 3 frames
    subject = {c: f"s{int(c[1:]) // 3}" for c in cases}
    cohort = {c: "a" if int(c[1:]) // 3 < 3 else "b" for c in cases}
    runs = design_runs(cases, subject.get, cohort.get, [0.25, 0.5, 0.75, 1.0], seeds=2)
    assert [(r.n, r.seed) for r in runs] == [(n, s) for n in (2, 4, 6, 8) for s in (0, 1)]
    for r in runs:
        assert sorted(r.cases) == sorted(c for c in cases if subject[c] in r.subjects)
        assert len(r.subjects) == r.n
    for seed in (0, 1):
        mine = [set(r.subjects) for r in runs if r.seed == seed]
        assert all(a < b for a, b in zip(mine, mine[1:]))
    full = [r for r in runs if r.n == 8]
    assert full[0].subjects == full[1].subjects  # at 100 % only the training seed differs
    small = [set(r.subjects) for r in runs if r.n == 2]
    assert small[0] != small[1]
    # stratified: 3 of 8 subjects are cohort a; half the pool holds 1 or 2 of them
    for r in runs:
        a = sum(cohort[c] == "a" for c in r.cases) // 3
        assert abs(a - r.n * 3 / 8) < 1 + 1e-9


def test_fractions_that_round_to_one_size_share_its_runs():
    cases = [f"c{i}" for i in range(3)]
    runs = design_runs(cases, lambda c: c, lambda c: None, [0.5, 0.6, 1.0], seeds=1)
    assert [(r.n, r.fractions) for r in runs] == [(2, (0.5, 0.6)), (3, (1.0,))]


def test_run_budget_rules():
    run_s, loop, rule = run_budget(1200.0, None, 8, None, False)
    assert run_s == 150.0 and loop == pytest.approx(EPOCH_LOOP_SHARE * 150.0)
    assert "split evenly over 8 runs: 2m30s each" in rule
    run_s, loop, rule = run_budget(None, 60.0, 8, 999.0, False)
    assert run_s == 60.0 and loop == pytest.approx(EPOCH_LOOP_SHARE * 60.0)
    assert "8m00s in all" in rule
    assert run_budget(None, None, 8, 300.0, False)[:2] == (None, 300.0)
    assert run_budget(None, None, 8, 300.0, True)[:2] == (None, None)
    assert run_budget(None, None, 8, None, False)[:2] == (None, None)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (([0.0, 0.5], 2, None, None, None), "must lie in"),
        (([0.5, 1.5], 2, None, None, None), "must lie in"),
        (([0.5], 0, None, None, None), "seeds train nothing"),
        (([0.5], 1, 60.0, 10.0, None), "both given"),
        (([0.5], 1, None, None, 1.0), "target Dice"),
    ],
)
def test_argument_mistakes_are_one_line_errors(args, match):
    with pytest.raises(AutosegError, match=match):
        check_arguments(*args)


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    """A planned tiny 2D dataset: 12 frames of 6 subjects, two cohorts; 2 epochs of 2
    iterations on a 4-8 network."""
    return planned_subject_dataset(tmp_path_factory.mktemp("lc") / "root", 41)


@pytest.fixture
def root(planned, tmp_path, monkeypatch) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(planned, copy)
    monkeypatch.setenv("AUTOSEG_ROOT", str(copy))
    return copy


ARGS = ["learning-curve", "41", "--seeds", "1", "--workers", "0", "--device", "cpu"]


def _interrupt_after_first_epoch_of(run_name: str):
    real = Trainer._write_epoch_outputs

    def write(self, entry):
        real(self, entry)
        if self.out_dir.name == run_name and self.epoch == 1:
            raise KeyboardInterrupt

    return write


def test_learning_curve_end_to_end_resumes_and_trains_nothing_twice(root, monkeypatch, capsys):
    folder = root / "results" / NAME / "learning_curve" / "2d"
    capsys.readouterr()
    # first call: interrupted in the first epoch of the third run
    monkeypatch.setattr(Trainer, "_write_epoch_outputs", _interrupt_after_first_epoch_of("n3_s0"))
    with one_torch_thread():
        assert main(ARGS) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert (folder / "n3_s0" / "checkpoint_latest.pt").is_file()
    assert not (folder / "n3_s0" / "heldout.json").is_file()
    monkeypatch.undo()
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))

    resumed = []
    real_resume = Trainer.maybe_resume

    def record(self):
        found = real_resume(self)
        resumed.append((self.out_dir.name, found, self.epoch))
        return found

    monkeypatch.setattr(Trainer, "maybe_resume", record)
    with one_torch_thread():
        assert main(ARGS) == 0
    out = capsys.readouterr().out
    # the interrupted run went on from its first epoch; the two before it were not retrained
    assert resumed == [("n3_s0", True, 1), ("n4_s0", False, 0)]
    assert "[1/4] 1 subjects (2 cases), seed 0: done before" in out
    assert "[3/4] 3 subjects (6 cases), seed 0: resuming" in out

    result = json.loads((folder / "learning_curve.json").read_text())
    splits = json.loads((root / "results" / NAME / "splits.json").read_text())
    holdout = set(splits[0]["val"])
    assert set(result["holdout"]["cases"]) == holdout
    assert [r["n_subjects"] for r in result["runs"]] == [1, 2, 3, 4]
    assert result["pool_subjects"] == 4 and result["holdout"]["subjects"] == 2
    subjects = []
    for r in result["runs"]:
        design = json.loads((folder / r["name"] / "run.json").read_text())
        assert not holdout & set(design["train_cases"])
        assert len(design["train_cases"]) == 2 * r["n_subjects"]  # both frames of a subject
        subjects.append(set(design["subjects"]))
        assert r["epochs"] == 2 and 0 <= r["mean_dice"] <= 1
        assert r["dice"]["1"] == pytest.approx(r["mean_dice"])
    assert all(a < b for a, b in zip(subjects, subjects[1:]))
    for key in ("mean", "1"):
        assert result["fits"][key]["n_sizes"] == 4
    assert result["answer"]["kind"] in {"more", "flat", "reached"}
    # the terminal table, also in the log
    assert "subjects   share  seed  epochs" in out and "Dice nerve" in out
    assert f"answer: {result['answer']['text']}" in out
    log = (folder / "learning_curve.log").read_text()
    assert f"answer: {result['answer']['text']}" in log
    with Image.open(folder / "learning_curve.png") as im:
        assert im.size[0] > 300 and len(np.unique(np.asarray(im.convert("L")))) > 10

    # a third call trains and scores nothing
    def refuse(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(Trainer, "fit", refuse)
    monkeypatch.setattr("autoseg.evaluation.learning_curve.score_holdout", refuse)
    assert main(ARGS) == 0
    assert capsys.readouterr().out.count("done before") == 4

    # the report shows the answer and the figure
    from autoseg.evaluation.report import build_report

    page = build_report("41", root, num_workers=0, progress=False).read_text()
    section = page.split('<section id="learning-curve">')[1].split("</section>")[0]
    assert "9. Learning curve" in section
    assert result["answer"]["text"].replace("'", "&#x27;") in section
    assert 'alt="learning curve 2d"' in section and "data:image/png;base64," in section


def test_fewer_than_three_sizes_are_measured_but_not_fitted(root, capsys):
    args = [*ARGS, "--fractions", "0.5", "1", "--run-budget", "1"]
    with one_torch_thread():
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "run budget 1.0s for each of 2 runs" in out
    line = [x for x in out.splitlines() if x.startswith("answer: ")]
    assert line == [
        "answer: no fit from 2 subset size(s) (2, 4 subjects): a power law needs at least 3, "
        "since a line through two sizes always fits and says nothing about the curve beyond them"
    ]


def _one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_an_unplanned_dataset_is_one_line_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path))
    tiny_us_dataset(tmp_path, 42, 5)
    assert main(["learning-curve", "42"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "042_TinyUS is not planned yet" in line
    assert "autoseg plan-and-train 042_TinyUS" in line


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--config", "3d_fullres"], "configuration '3d_fullres' is not in the plan"),
        (["--holdout-fold", "7"], "fold 7 is not in splits.json (5 folds)"),
        (["--fractions", "0", "1"], "must lie in (0, 1]"),
        (["--time-budget", "soon"], "cannot read the time budget"),
    ],
)
def test_mistakes_on_a_planned_dataset_are_one_line(root, capsys, extra, match):
    assert main(["learning-curve", "41", *extra]) == 2
    assert match in _one_error_line(capsys.readouterr().err)


def test_config_defaults_to_find_bests_first_choice_that_is_not_a_crop(root):
    from autoseg.evaluation.learning_curve import choose_config
    from autoseg.planning.plan import load_plan

    plan = load_plan(root / "preprocessed" / NAME)
    results = root / "results" / NAME
    assert choose_config(plan, results, None) == "2d"
    results.mkdir(parents=True, exist_ok=True)
    (results / "inference.json").write_text(json.dumps({"configurations": ["3d", "2d"]}))
    assert choose_config(plan, results, None) == "2d"  # 3d is not in this plan
    (results / "inference.json").write_text(json.dumps({"chosen": "2d"}))
    assert choose_config(plan, results, None) == "2d"


def test_report_says_how_to_make_a_learning_curve(root):
    from autoseg.evaluation.report import build_report

    page = build_report("41", root, num_workers=0, progress=False).read_text()
    section = page.split('<section id="learning-curve">')[1].split("</section>")[0]
    assert "No learning curve yet: autoseg learning-curve 41 --time-budget 20m" in section


def test_train_and_score_one_model_on_given_cases_then_skips_it(root, monkeypatch):
    """The reusable piece: any case ids (here three single frames, not whole subjects), one
    budget, the held-out scores; a second call returns the record without training."""
    from autoseg.evaluation.learning_curve import prepare_holdout, train_and_score

    held = prepare_holdout("41", root)
    assert held.config == "2d" and held.label_ids == [1]
    assert sorted(held.pool + held.holdout) == sorted(held.cases)
    assert not set(held.pool) & set(held.holdout)
    train = held.pool[:3]
    folder = root / "results" / NAME / "mine" / "three"
    lines: list[str] = []
    with one_torch_thread():
        record, before = train_and_score(
            held,
            train,
            folder,
            {"train_cases": train},
            seed=0,
            say=lines.append,
            where="three",
            extra={"name": "three"},
            progress=False,
        )
    assert not before and lines[0] == "three: training" and lines[-1].startswith("three: Dice")
    assert record["name"] == "three" and record["n_cases"] == 3 and record["epochs"] == 2
    assert sorted(record["cases"]) == sorted(held.holdout)
    assert json.loads((folder / "heldout.json").read_text()) == record

    def refuse(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(Trainer, "fit", refuse)
    monkeypatch.setattr("autoseg.evaluation.learning_curve.score_holdout", refuse)
    again, before = train_and_score(
        held, train, folder, {"train_cases": train}, seed=0, say=lines.append, where="three"
    )
    assert (
        before
        and again == record
        and lines[-1] == f"three: done before, Dice {again['mean_dice']:.3f}"
    )
    with pytest.raises(AutosegError, match="three was trained on other subjects"):
        train_and_score(held, held.pool[:2], folder, {"train_cases": held.pool[:2]}, seed=0)
    with pytest.raises(ValueError, match="overlap the held-out"):
        train_and_score(held, held.holdout[:1], folder.parent / "bad", {}, seed=0)
