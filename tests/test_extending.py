"""documentation/extending.md's examples run as written: each registers, and trains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import one_torch_thread, tiny_us_dataset
from test_trainer import _options, _setup, synthetic_loader

from autoseg.cli import main
from autoseg.networks.registry import NETWORKS
from autoseg.planning.registry import CONFIGURATIONS
from autoseg.training.losses import LOSSES, build_loss
from autoseg.training.trainer import TRAINERS

DOC = Path(__file__).resolve().parents[1] / "documentation" / "extending.md"


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def registries():
    """Put the registries back as they were: the examples register for good."""
    saved = [
        (reg, dict(reg._items))
        for reg in (LOSSES, TRAINERS, NETWORKS, CONFIGURATIONS)
        if reg.names()
    ]
    yield
    for reg, items in saved:
        reg._items.clear()
        reg._items.update(items)


def _run(code: str, name: str) -> dict:
    namespace: dict = {"__name__": f"extending_example_{name}"}
    exec(compile(code, f"{DOC}:{name}", "exec"), namespace)
    return namespace


def test_the_page_has_a_loss_a_network_a_trainer_and_a_configuration_example_under_50_lines():
    examples = _examples()
    assert len(examples) == 4
    assert all(len(e.strip().splitlines()) < 50 for e in examples)


def test_the_loss_example_registers_and_prefers_the_right_answer(registries):
    _run(_examples()[0], "loss")
    loss = build_loss({"name": "tversky"}, 2)
    target = torch.zeros(2, 1, 16, 16, dtype=torch.long)
    target[:, :, 4:9, 4:9] = 1
    right = torch.cat([1 - target, target], 1).float() * 20 - 10
    assert float(loss(right, target)) < 0.01 < float(loss(-right, target))
    # a miss costs more than a false alarm of the same size (beta > alpha)
    miss, extra = right.clone(), right.clone()
    miss[:, 1, 4:6, 4:9], miss[:, 0, 4:6, 4:9] = -10, 10
    extra[:, 1, 9:11, 4:9], extra[:, 0, 9:11, 4:9] = 10, -10
    assert float(loss(miss, target)) > float(loss(extra, target))


def test_the_trainer_example_registers_and_trains_with_its_own_optimizer(registries, tmp_path):
    _run(_examples()[2], "trainer")
    cls = TRAINERS.get("constant_lr")
    trainer = cls(
        _setup(tmp_path),
        _options(epochs=3, iterations_per_epoch=6),
        ["a"],
        ["b"],
        tmp_path / "fold_0",
        loader_factory=synthetic_loader,
    )
    log = trainer.fit()
    assert type(trainer.optimizer) is torch.optim.SGD
    assert all(g["lr"] == 0.01 and g["momentum"] == 0 for g in trainer.optimizer.param_groups)
    assert [e["lr"] for e in log] == [0.01] * 3
    assert (tmp_path / "fold_0" / "checkpoint_final.pt").is_file()


def test_the_network_example_is_planned_built_and_estimated(registries):
    from autoseg.networks import build_network, estimate_training_memory
    from autoseg.planning import plan_dataset
    from autoseg.planning.patch import approximate_memory_gb
    from autoseg.planning.synthetic import synthetic_fingerprint

    _run(_examples()[1], "network")
    fp = synthetic_fingerprint("903_Light", [1, 256, 256], [1.0, 0.1, 0.1])
    plan = plan_dataset(
        fp, network="light_unet", gpu_memory_gb=8, device="cuda", estimator=approximate_memory_gb
    )
    config = next(iter(plan.configurations.values()))
    arch, patch = config.architecture, list(config.patch_size)
    n = len(arch["strides"])
    assert arch["network"] == "light_unet"
    assert arch["n_blocks_per_stage"] == [1] * n and arch["n_conv_per_stage_decoder"] == [1] * (
        n - 1
    )
    net = build_network(arch).train()
    default = build_network(
        {
            **arch,
            "network": "unet",
            "n_blocks_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
        }
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(net) < count(default)
    outputs = net(torch.zeros(1, arch["in_channels"], *patch))
    assert isinstance(outputs, list) and list(outputs[0].shape[-2:]) == patch
    assert estimate_training_memory(arch, patch, 2).total_gb > 0


def test_the_configuration_example_is_planned_trained_and_predicted(
    registries, tmp_path, monkeypatch
):
    import json

    import numpy as np

    from autoseg.io import read_image

    root = tmp_path / "root"
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    raw = tiny_us_dataset(root, 42, 5)
    _run(_examples()[3], "configuration")
    assert main(["plan", raw.name, "--configs", "2d,2d_coarse", "--brief"]) == 0
    plan_path = root / "preprocessed" / raw.name / "plans.json"
    plan = json.loads(plan_path.read_text())
    fine, coarse = plan["configurations"]["2d"], plan["configurations"]["2d_coarse"]
    assert coarse["spacing"] == [2 * s for s in fine["spacing"]]
    assert coarse["augmentation"] == "2d" and coarse["dim"] == 2
    # a few iterations of a small network, as a user may edit the plan
    coarse["architecture"].update(
        features_per_stage=[4, 8],
        kernel_sizes=[[3, 3], [3, 3]],
        strides=[[1, 1], [2, 2]],
        n_blocks_per_stage=[1, 1],
        n_conv_per_stage_decoder=[1],
    )
    coarse.update(patch_size=[16, 32], batch_size=2)
    coarse.pop("schedule", None)
    plan["schedule"].update(epochs=1, iterations_per_epoch=2)
    plan_path.write_text(json.dumps(plan))
    with one_torch_thread():
        assert main(["preprocess", raw.name, "--configs", "2d_coarse", "--no-progress"]) == 0
        assert main(["train", raw.name, "2d_coarse", "0", "--no-progress"]) == 0
        out = tmp_path / "pred"
        code = main(
            ["predict", "-i", str(raw / "imagesTr"), "-o", str(out), "-d", raw.name]
            + ["--config", "2d_coarse", "--folds", "0", "--no-progress"]
        )
    assert code == 0
    image = read_image(raw / "imagesTr" / "case0_0000.nii.gz")
    pred = read_image(out / "case0.nii.gz")
    assert pred.array.shape == image.array.shape  # back on the input's grid
    assert np.allclose(pred.geometry.spacing, image.geometry.spacing)
