"""benchmarks/budget_curve.py: which points run, how test images are scored, the levers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import budget_curve as bc


def test_points_cheapest_first_phantom_capped_ablation_at_25_minutes():
    pts = bc.points(["usgra_seg", "phantom_mri3d"], ["120m", "5m", "60m"], 3600.0, True)
    assert pts[:2] == [("usgra_seg", "5m", "autoseg"), ("phantom_mri3d", "5m", "autoseg")]
    assert ("phantom_mri3d", "120m", "autoseg") not in pts  # beyond the phantom's cap
    assert ("usgra_seg", "120m", "autoseg") in pts
    ablation = [p for p in pts if p[2] != "autoseg"]
    assert (
        {p[2] for p in ablation}
        == set(bc.ABLATION)
        == set(bc.VARIANTS)
        - {"autoseg", *bc.LOSS_VARIANTS, *bc.SEED_VARIANTS, *bc.BATCH_DICE_VARIANTS}
    )
    assert all(p[:2] == ("usgra_seg", "25m") for p in ablation)
    assert bc.points(["phantom_mri3d"], ["5m"], 3600.0, True) == [
        ("phantom_mri3d", "5m", "autoseg")
    ]


def test_score_folder_dice_per_label_and_failures(tmp_path):
    from autoseg.io import Geometry, write_image

    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    g = Geometry.default((8, 8))
    a = np.zeros((8, 8), np.uint8)
    a[2:6, 2:6] = 1
    b = a.copy()
    b[2:6, 2:4] = 0  # half of the nerve missed: Dice 2/3
    c = np.zeros((8, 8), np.uint8)
    c[0, 0] = 2  # a vessel only in the reference, the nerve absent from the prediction
    for name, p, r in (("one", a, a), ("two", b, a), ("three", c, a)):
        write_image(pred / f"{name}.png", p, g)
        write_image(ref / f"{name}.png", r, g)
    s = bc.score_folder(pred, ref, [1, 2])
    assert s["n"] == 3 and s["failures"] == 1  # "three": nerve Dice 0
    assert s["cases"]["two"]["1"] == pytest.approx(2 / 3)
    assert s["cases"]["one"]["2"] == 1.0  # absent from both
    assert s["mean"]["1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert s["cases"]["three"]["2"] == 0.0


def test_variants_turn_their_lever_off_in_the_product_code(monkeypatch):
    from autoseg.networks import precision
    from autoseg.planning import budget as bd
    from autoseg.planning import resolution

    for module, name in (
        (bd, "budget_passes"),
        (bd, "TARGET_ITERATIONS"),
        (resolution, "FACTORS"),
        (precision, "cpu_has_native_bf16"),
    ):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
    bc.VARIANTS["five_folds"]()
    assert {p[0] for p in bd.budget_passes()} == {bd.N_FOLDS}
    bc.VARIANTS["full_resolution"]()
    assert resolution.coarsest_factor({"1": {"2": {"mean": 1.0, "p10": 1.0}}}, ["1"])[0] == 1.0
    bc.VARIANTS["float32"]()
    assert precision.autocast_dtype("cpu") is None
    bc.VARIANTS["before"]()
    assert bd.TARGET_ITERATIONS == bd.MIN_ITERATIONS


def test_seed_variants_reach_the_trainer_options(monkeypatch):
    from autoseg.planning.planner import plan_dataset
    from autoseg.planning.synthetic import synthetic_fingerprint
    from autoseg.training import run

    monkeypatch.setattr(run, "options_from_plan", run.options_from_plan)
    plan = plan_dataset(synthetic_fingerprint("961_Seed", [64, 64], [1.0, 1.0], n_cases=10))
    assert run.options_from_plan(plan, "2d").seed == 0
    bc.VARIANTS["seed_2"]()
    options = run.options_from_plan(plan, "2d", num_workers=3)
    assert (options.seed, options.num_workers) == (2, 3)
    assert options.epochs == plan.schedule.epochs  # the plan's schedule, untouched


def test_summary_rows_and_plot(tmp_path):
    record = {
        "dataset": "usgra_seg",
        "budget": "25m",
        "budget_s": 1500.0,
        "variant": "autoseg",
        "wall_s": 1400.0,
        "test": {"mean": {"1": 0.6, "2": 0.8}, "failures": 7, "n": 40},
        "estimate": {"dice": 0.62, "kind": "hold-out"},
    }
    rows = bc.summarize([record])
    assert [r.autoseg for r in rows] == [0.6, 0.8, 7.0, pytest.approx(1400 / 1500)]
    bc.plot([record, {**record, "budget": "5m", "budget_s": 300.0}], tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    json.dumps([r.to_dict() for r in rows])


def _plot_point() -> dict:
    """The fields plot() reads of one default usgra-seg point at 25 minutes."""
    return {
        "dataset": "usgra_seg",
        "budget_s": 1500.0,
        "variant": "autoseg",
        "test": {"mean": {"1": 0.6, "2": 0.8}},
        "estimate": {"dice": 0.62},
    }


def test_plot_draws_ablation_points_and_nnunet_peers_read_from_their_result_files(tmp_path):
    record = _plot_point()
    peer_file = tmp_path / "peer.json"
    peer_file.write_text(
        json.dumps(
            {
                "dataset": "usgra_seg",
                "nnunet": {
                    "peer": {"system": "peer", "budget_s": 1500.0, "test": {"mean": {"1": 0.5}}}
                },
            }
        )
    )
    peers = bc.load_peers([peer_file, tmp_path / "missing.json"])
    assert [(p["system"], p["dataset"]) for p in peers] == [("peer", "usgra_seg")]
    records = [record, {**record, "budget_s": 300.0}, {**record, "variant": "float32"}]
    bc.plot(records, tmp_path / "c.png", peers)
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_finished_seed_points_are_collected_beside_their_default_point(tmp_path):
    for name in ("seed_1_25m", "seed_2_60m"):  # 60m has no default point in todo
        (tmp_path / "usgra_seg" / name).mkdir(parents=True)
        (tmp_path / "usgra_seg" / name / "record.json").write_text("{}")
    (tmp_path / "usgra_seg" / "seed_2_25m").mkdir()  # started, not finished: no record
    todo = [("usgra_seg", "25m", "autoseg"), ("usgra_seg", "25m", "float32")]
    assert bc.finished_seed_points(tmp_path, todo) == [("usgra_seg", "25m", "seed_1")]
    assert bc.finished_seed_points(tmp_path / "nothing", todo) == []


def test_plot_draws_seed_runs_as_hollow_points_of_their_curve(tmp_path, monkeypatch):
    import matplotlib.axes

    calls = []
    real = matplotlib.axes.Axes.scatter

    def spy(self, x, y, **kw):
        calls.append((list(x), list(y), kw.get("marker"), kw.get("facecolors")))
        return real(self, x, y, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy)
    record = _plot_point()
    seed = {**record, "variant": "seed_1", "test": {"mean": {"1": 0.55, "2": 0.75}}}
    bc.plot([record, seed], tmp_path / "c.png")
    assert ([25.0], [0.55], "o", "none") in calls and ([25.0], [0.75], "o", "none") in calls
    assert not any(c[1] == [0.6] for c in calls)  # the default point is on its line, not a dot


def test_batch_dice_variants_take_per_sample_dice_back_and_keep_their_seed(monkeypatch):
    from autoseg.planning import planner, sampling
    from autoseg.training import run

    monkeypatch.setattr(planner, "loss_rule", planner.loss_rule)
    monkeypatch.setattr(run, "options_from_plan", run.options_from_plan)
    assert planner.loss_rule("2d", True)[0].batch_dice is False  # the product: per-sample
    bc.VARIANTS["batch_dice_seed_2"]()
    loss, why = planner.loss_rule("2d", True)
    assert (loss, why) == sampling.loss_rule("2d", False) and loss.batch_dice is True
    assert "seed 2" in bc.VARIANTS["batch_dice_seed_2"].__doc__
    assert run.options_from_plan.__name__ == "options"  # the seed lever is applied too
    assert set(bc.BATCH_DICE_VARIANTS) == {"batch_dice"} | {
        f"batch_dice_seed_{s}" for s in bc.SEEDS
    }


def test_install_plan_applies_the_variants_plan_edit_and_carries_the_fingerprint(tmp_path):
    src = tmp_path / "plan" / "933_USGRA"
    src.mkdir(parents=True)
    plan = {"configurations": {"2d": {"loss": {"name": "dice_ce", "batch_dice": False}}}}
    (src / "plans.json").write_text(json.dumps(plan))
    (src / "fingerprint.json").write_text('{"n": 1}')
    for variant, batch in (("seed_1", False), ("batch_dice_seed_1", True), ("batch_dice", True)):
        target = tmp_path / variant / "933_USGRA"
        bc.install_plan(src / "plans.json", variant, target)
        written = json.loads((target / "plans.json").read_text())
        assert written["configurations"]["2d"]["loss"]["batch_dice"] is batch
        assert (target / "fingerprint.json").read_text() == '{"n": 1}'
    assert json.loads((src / "plans.json").read_text()) == plan  # the shared plan is untouched
    bc.install_plan(src / "plans.json", "autoseg", tmp_path / "no_fp")  # fingerprint optional
    (src / "fingerprint.json").unlink()
    bc.install_plan(src / "plans.json", "autoseg", tmp_path / "no_fp2")
    assert not (tmp_path / "no_fp2" / "fingerprint.json").exists()
    assert set(bc.PLAN_EDITS) == set(bc.BATCH_DICE_VARIANTS)


def test_plan_file_needs_run_and_an_existing_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bc.main(["--plan-file", str(tmp_path / "plans.json")])
    assert "with --run" in capsys.readouterr().err
    run = ["--run", "usgra_seg", "25m", "autoseg", str(tmp_path), str(tmp_path)]
    with pytest.raises(SystemExit):
        bc.main([*run, "--plan-file", str(tmp_path / "missing.json")])
    assert "missing.json: no such file" in capsys.readouterr().err


def test_loss_study_points_and_variants(monkeypatch):
    from autoseg.planning import planner

    pts = bc.points(["usgra_seg", "phantom_mri3d"], ["5m"], 3600.0, False, "10m")
    study = [p for p in pts if p[2].startswith("loss_")]
    assert {p[2] for p in study} == {f"loss_{n}" for n in bc.LOSS_STUDY}
    assert {p[0] for p in study} == {"usgra_seg", "phantom_mri3d"}
    assert ("usgra_seg", "10m", "autoseg") in pts  # the dice_ce row of the study
    assert not [p for p in bc.points(["usgra_seg"], ["25m"], 3600.0, True) if "loss" in p[2]]
    monkeypatch.setattr(planner, "loss_rule", planner.loss_rule)  # restored after the test
    bc.VARIANTS["loss_focal"]()
    loss, why = planner.loss_rule("2d")
    assert loss.name == "focal" and loss.batch_dice and "loss study" in why
    loss, why = planner.loss_rule("2d", True)  # whole frames: the study keeps per-sample Dice
    assert loss.name == "focal" and not loss.batch_dice and "per-sample" in why


def test_score_folder_pools_precision_and_recall(tmp_path):
    from autoseg.io import Geometry, write_image

    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    g = Geometry.default((8, 8))
    r = np.zeros((8, 8), np.uint8)
    r[2:4, 2:4] = 1  # 4 pixels
    p = np.zeros((8, 8), np.uint8)
    p[2:4, 2:6] = 1  # 8 pixels, 4 of them right: precision 0.5, recall 1
    write_image(ref / "a.nii.gz", r, g)
    write_image(pred / "a.nii.gz", p, g)
    out = bc.score_folder(pred, ref, [1])
    assert out["precision"]["1"] == 0.5 and out["recall"]["1"] == 1.0
    assert out["mean"]["1"] == pytest.approx(2 * 4 / 12)
