"""benchmarks/nnunet_peer.py: which configuration the peer trains, its clock, its inputs, its
table; and the prediction shim's trainer lookup (nnU-Net itself runs only under make bench)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from benchmarks import nnunet_peer as peer


def test_default_paths_follow_the_budget_curve_layout(tmp_path):
    root = peer.default_autoseg_root(tmp_path, "usgra_seg", "25m")
    assert root == tmp_path / "usgra_seg" / "autoseg_25m"
    work = peer.default_work(root, "25m")
    assert work.parent == root.parent and work.name.startswith("autoseg_25m_nnunet_")
    assert peer.default_work(root, "25m") != peer.default_work(root, "10m")


def test_training_budget_and_fold_shares():
    assert peer.training_budget(1500, 90.5) == pytest.approx(1409.5)
    assert peer.training_budget(60, 90) == 0.0  # a set-up longer than the budget
    assert peer.fold_shares(1000, [0]) == {0: 1000}
    shares = peer.fold_shares(1000, [0, 1, 2, 3, 4])
    assert sum(shares.values()) == pytest.approx(1000) and len(set(shares.values())) == 1
    with pytest.raises(ValueError):
        peer.fold_shares(10, [])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("case_0000.nii.gz", "case_0000.nii.gz"),
        ("case.nii.gz", "case_0000.nii.gz"),
        ("img12_0001.png", "img12_0001.png"),
        ("frame_12.png", "frame_12_0000.png"),  # _12 is not a 4-digit channel suffix
    ],
)
def test_nnunet_input_names_carry_a_channel_suffix(name, expected):
    assert peer.nnunet_input_name(name) == expected


def test_stage_inputs_links_every_image_under_nnunets_names(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("b.nii.gz", "a_0000.nii.gz", "a_0001.nii.gz"):
        (images / name).write_bytes(name.encode())
    out = tmp_path / "staged"
    (out / "stale.nii.gz").parent.mkdir()
    (out / "stale.nii.gz").write_bytes(b"old")
    assert peer.stage_inputs(images, out) == ["a", "b"]
    assert sorted(p.name for p in out.iterdir()) == [
        "a_0000.nii.gz",
        "a_0001.nii.gz",
        "b_0000.nii.gz",
    ]
    assert (out / "b_0000.nii.gz").read_bytes() == b"b.nii.gz"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no test images"):
        peer.stage_inputs(empty, tmp_path / "x")


def _plan_with(configs: dict) -> dict:
    from autoseg.planning import plan_dataset
    from autoseg.planning.patch import approximate_memory_gb
    from autoseg.planning.synthetic import synthetic_fingerprint

    fp = synthetic_fingerprint("933_Check", [1, 256, 256], [1.0, 0.1, 0.1])
    plan = plan_dataset(fp, gpu_memory_gb=8, device="cuda", estimator=approximate_memory_gb)
    return plan.to_dict()


def test_peer_configuration_is_find_bests_choice_or_the_best_exportable_member():
    plan = _plan_with({})
    assert "2d" in plan["configurations"]
    config, why = peer.peer_configuration(plan, {"configurations": ["2d"], "chosen": "2d"})
    assert config == "2d" and "find-best's choice" in why
    with pytest.raises(SystemExit, match="names no configuration"):
        peer.peer_configuration(plan, {"configurations": []})
    # an ensemble with a member the bridge cannot export: the exportable one is trained
    crop = dict(plan["configurations"]["2d"], crop={"window_mm": [1.0, 1.0]})
    plan["configurations"]["crop"] = crop
    inference = {
        "configurations": ["crop", "2d"],
        "chosen": "ensemble",
        "candidates": [{"name": "crop", "mean_dice": 0.9}, {"name": "2d", "mean_dice": 0.5}],
    }
    config, why = peer.peer_configuration(plan, inference)
    assert config == "2d" and "crop left out" in why


def _record(system: str, cases: dict, iterations: int) -> dict:
    n = len(cases)
    means = {k: sum(c[k] for c in cases.values()) / n for k in ("1", "2")}
    return {
        "system": system,
        "test": {
            "mean": means,
            "cases": cases,
            "n": n,
            "failures": sum(c["1"] < 0.5 for c in cases.values()),
        },
        "training": {"0": {"iterations": iterations}},
        "wall_to_model_s": 1490.0,
        "budget_s": 1500.0,
    }


def test_build_results_pairs_the_images_and_counts_failures():
    a_cases = {"x": {"1": 0.8, "2": 0.9}, "y": {"1": 0.4, "2": 0.7}}
    n_cases = {"x": {"1": 0.6, "2": 0.8}, "y": {"1": 0.2, "2": 0.5}}
    autoseg = {"test": _record("a", a_cases, 0)["test"], "iterations": 9400, "wall_s": 1480.0}
    rows = peer.build_results("usgra_seg 25m", autoseg, {"peer": _record("peer", n_cases, 700)})
    by_name = {r.name.split(": ", 1)[1]: r for r in rows}
    nerve = by_name["nerve Dice (test)"]
    assert nerve.autoseg == pytest.approx(0.6) and nerve.nnunet == pytest.approx(0.4)
    assert "+0.200" in nerve.note and "2 test images" in nerve.note
    assert by_name["nerve failures (test)"].autoseg == 1.0
    assert by_name["nerve failures (test)"].nnunet == 1.0
    assert by_name["training iterations"].nnunet == 700.0
    assert by_name["vessel Dice (test)"].nnunet == pytest.approx(0.65)


def test_the_prediction_shim_finds_an_external_trainer_before_nnunets_own_search(tmp_path):
    """A stand-in nnunetv2 whose own search fails (as its Primus import does without timm):
    the shim must take the class from nnUNet_extTrainer, and leave other names to nnU-Net."""
    from benchmarks import bench_inference as bi

    fake = tmp_path / "site" / "nnunetv2" / "inference"
    fake.mkdir(parents=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "predict_from_raw_data.py").write_text(
        textwrap.dedent(
            """
            import sys
            def recursive_find_trainer_class_by_name(name):
                if name == "nnUNetTrainer":
                    return "shipped"
                raise ModuleNotFoundError("No module named 'timm'")
            def predict_entry_point():
                name = sys.argv[1]
                print("FOUND", recursive_find_trainer_class_by_name(name))
                return 0
            """
        )
    )
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "budget.py").write_text("nnUNetTrainerBudget = 'from-ext'\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path / "site"),
        "BENCH_TORCH_THREADS": "1",
        "nnUNet_extTrainer": str(ext),
    }
    for name, expected in (("nnUNetTrainerBudget", "from-ext"), ("nnUNetTrainer", "shipped")):
        out = subprocess.run(
            [sys.executable, "-c", bi.NNUNET_SHIM, name], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert f"FOUND {expected}" in out.stdout
