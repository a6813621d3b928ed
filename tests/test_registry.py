"""Extension points: the registries, the five registered losses and a plan-named trainer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_trainer import _options, _setup, synthetic_loader

from autoseg.errors import AutosegError
from autoseg.planning.plan import ConfigurationPlan, PlanFieldError
from autoseg.registry import Registry
from autoseg.training.losses import LOSSES, build_loss
from autoseg.training.losses.weighted_ce import inverse_frequency_weights
from autoseg.training.trainer import TRAINERS, Trainer

DESAI = ("ce", "soft_dice", "weighted_ce", "focal")


# ------------------------------------------------------------------ the registry itself
def test_registry_names_errors_and_temporary_entries():
    reg: Registry[int] = Registry("widget", where="plans.json widget")
    reg.register("one")(1)
    reg.register("one")(1)  # the same object again (a module imported twice) is harmless
    with pytest.raises(ValueError, match="twice"):
        reg.register("one")(2)
    with pytest.raises(ValueError, match="letters"):
        reg.register("bad name")
    with pytest.raises(AutosegError) as err:
        reg.get("two")
    assert "unknown widget 'two' (plans.json widget)" in str(err.value)
    assert "one" in err.value.fix
    with reg.temporary("two", 2):
        assert reg.get("two") == 2 and reg.names() == ["one", "two"]
    assert "two" not in reg
    with reg.temporary("one", 5):
        assert reg.get("one") == 5
    assert reg.get("one") == 1


def test_builtin_losses_and_trainer_are_registered_on_first_lookup():
    assert set(LOSSES.names()) >= {"dice_ce", *DESAI}
    assert TRAINERS.get("default") is Trainer


# ------------------------------------------------------------------ the losses
def _batch(seed: int, classes: int = 3, shape=(2, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape[0], classes, *shape[1:], generator=g)
    target = torch.randint(0, classes, (shape[0], 1, *shape[1:]), generator=g)
    return logits, target


def _perfect(target: torch.Tensor, classes: int) -> torch.Tensor:
    onehot = torch.zeros(target.shape[0], classes, *target.shape[2:])
    onehot.scatter_(1, target, 1.0)
    return 20.0 * onehot - 10.0


@pytest.mark.parametrize("name", ["dice_ce", *DESAI])
def test_each_loss_is_finite_differentiable_and_lowest_for_the_right_answer(name):
    loss = build_loss({"name": name}, 3)
    logits, target = _batch(0)
    logits.requires_grad_(True)
    value = loss(logits, target)
    assert value.ndim == 0 and math.isfinite(value.item())
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    right = float(loss(_perfect(target, 3), target))
    wrong = float(loss(_perfect((target + 1) % 3, 3), target))
    assert right < 0.01 < wrong
    assert right < value.item() < wrong


def test_cross_entropy_and_focal_match_a_numpy_computation():
    logits, target = _batch(1)
    lp = logits.numpy() - logits.numpy().max(1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
    log_pt = np.take_along_axis(lp, target.numpy(), 1)[:, 0]
    pt = np.exp(log_pt)
    assert float(build_loss({"name": "ce"}, 3)(logits, target)) == pytest.approx(
        -log_pt.mean(), rel=1e-5
    )
    focal = -(((1 - pt) ** 3) * log_pt).mean()
    assert float(build_loss({"name": "focal"}, 3)(logits, target)) == pytest.approx(focal, rel=1e-5)


def test_weighted_cross_entropy_weighs_classes_by_inverse_frequency():
    target = torch.tensor([[[0, 0, 0, 0, 0, 0, 1, 1]]])  # 6 background, 2 foreground, none of 2
    w = inverse_frequency_weights(target, 3)
    assert w.tolist() == pytest.approx([8 / (2 * 6), 8 / (2 * 2), 0.0])
    logits, target = _batch(2)
    counts = np.bincount(target.numpy().ravel(), minlength=3)
    weights = counts.sum() / (3 * counts)
    lp = torch.log_softmax(logits, 1).numpy()
    log_pt = np.take_along_axis(lp, target.numpy(), 1)[:, 0]
    wt = weights[target.numpy()[:, 0]]
    expected = -(wt * log_pt).sum() / wt.sum()  # PyTorch's weighted mean
    assert float(build_loss({"name": "weighted_ce"}, 3)(logits, target)) == pytest.approx(
        expected, rel=1e-5
    )


def test_an_unknown_loss_is_a_one_line_error_naming_the_plan_field():
    with pytest.raises(AutosegError, match="unknown loss 'dice_focal'.*loss.name"):
        build_loss({"name": "dice_focal"}, 2)


# ------------------------------------------------------------------ the plan names them
def _plan_dict():
    from autoseg.planning import plan_dataset
    from autoseg.planning.patch import approximate_memory_gb
    from autoseg.planning.synthetic import synthetic_fingerprint

    fp = synthetic_fingerprint("902_Median", [1, 256, 256], [1.0, 0.1, 0.1])
    plan = plan_dataset(fp, gpu_memory_gb=8, device="cuda", estimator=approximate_memory_gb)
    d = json.loads(json.dumps(plan.to_dict()))
    return next(iter(d["configurations"])), d


def test_the_plan_carries_a_trainer_and_loss_name_and_omits_the_default_trainer():
    from autoseg.planning.plan import Plan

    name, d = _plan_dict()
    assert "trainer" not in d["configurations"][name]
    d["configurations"][name]["trainer"] = "my_trainer"
    d["configurations"][name]["loss"]["name"] = "focal"
    back = Plan.from_dict(d)
    assert back.configurations[name].trainer == "my_trainer"
    assert back.configurations[name].loss.name == "focal"
    assert back.to_dict()["configurations"][name]["trainer"] == "my_trainer"
    d["configurations"][name]["trainer"] = "rm -rf"
    with pytest.raises(PlanFieldError, match="trainer"):
        Plan.from_dict(d)
    assert ConfigurationPlan.__dataclass_fields__["trainer"].default == "default"


# ------------------------------------------------------------------ a trainer variant
def test_a_registered_trainer_overrides_hooks_and_trains(tmp_path):
    seen = []

    class ConstantLR(Trainer):
        def learning_rate(self, iteration: int) -> float:
            seen.append(iteration)
            return 0.005

        def build_loss(self):
            return build_loss({"name": "focal"}, self.setup.num_classes)

    with TRAINERS.temporary("constant_lr", ConstantLR):
        cls = TRAINERS.get("constant_lr")
        trainer = cls(
            _setup(tmp_path),
            _options(epochs=2, iterations_per_epoch=3),
            ["a"],
            ["b"],
            tmp_path / "fold_0",
            loader_factory=synthetic_loader,
        )
        trainer.fit()
    assert type(trainer.base_loss).__name__ == "FocalLoss"
    assert all(g["lr"] == 0.005 for g in trainer.optimizer.param_groups)
    assert seen[:1] == [0]
    with pytest.raises(AutosegError, match="unknown trainer 'constant_lr'"):
        TRAINERS.get("constant_lr")


def test_train_setup_takes_the_trainer_and_loss_the_plan_names(tmp_path):
    from autoseg.planning.plan import Plan
    from autoseg.training.run import setup_from_plan

    name, d = _plan_dict()
    d["configurations"][name]["trainer"] = "constant_lr"
    d["configurations"][name]["loss"]["name"] = "weighted_ce"
    setup = setup_from_plan(Plan.from_dict(d), name, tmp_path)
    assert setup.trainer == "constant_lr" and setup.loss["name"] == "weighted_ce"


# ------------------------------------------------------------------ --trainer
def _tiny_planned(tmp_path, monkeypatch):
    from conftest import tiny_us_dataset
    from test_pipeline_e2e import shrink_plan

    from autoseg.cli import main

    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path / "root"))
    tiny_us_dataset(tmp_path / "root", 951, 6)
    assert main(["plan", "951", "--brief"]) == 0
    plan_path = tmp_path / "root" / "preprocessed" / "951_TinyUS" / "plans.json"
    shrink_plan(plan_path, ["2d"], [32, 32])
    return main, plan_path


def test_train_with_trainer_writes_it_into_the_plan_and_trains_with_it(
    tmp_path, monkeypatch, capsys
):
    main, plan_path = _tiny_planned(tmp_path, monkeypatch)
    steps = []

    class Counting(Trainer):
        def train_step(self, batch):
            steps.append(type(self).__name__)
            return super().train_step(batch)

    assert main(["train", "951", "2d", "0", "--trainer", "nope", "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "unknown trainer 'nope'" in err and "Traceback" not in err
    assert "trainer" not in json.loads(plan_path.read_text())["configurations"]["2d"]
    with TRAINERS.temporary("counting", Counting):
        args = ["train", "951", "2d", "0", "--trainer", "counting", "--no-progress"]
        assert main([*args, "--workers", "0"]) == 0
        assert json.loads(plan_path.read_text())["configurations"]["2d"]["trainer"] == "counting"
        assert steps == ["Counting"] * 6  # 2 epochs x 3 iterations
        # back to the default trainer: fold 0 exists, so only with --overwrite
        back = ["train", "951", "2d", "0", "--trainer", "default", "--no-progress"]
        assert main([*back, "--workers", "0"]) != 0
        assert "mix two trainers' folds" in capsys.readouterr().err
        assert main([*back, "--workers", "0", "--overwrite"]) == 0
    assert "trainer" not in json.loads(plan_path.read_text())["configurations"]["2d"]
    assert len(steps) == 6


def test_the_budget_planner_times_the_named_trainers_own_step(one_thread):
    from test_trainer import ARCH

    from autoseg.training.timing import trainer_step_measure

    calls = []

    class Slow(Trainer):
        def train_step(self, batch):
            calls.append(batch["data"].shape)
            return super().train_step(batch)

    with TRAINERS.temporary("slow", Slow):
        # a cap no loaded core reaches: a warm-up over the cap is returned alone (one call)
        seconds = trainer_step_measure("slow")(ARCH, (32, 32), 2, device="cpu", max_seconds=30)
    assert seconds > 0 and len(calls) >= 2 and calls[0] == (2, 1, 32, 32)
    with pytest.raises(AutosegError, match="unknown trainer 'slow'"):
        trainer_step_measure("slow")
