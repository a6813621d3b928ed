"""documentation/extending.md's examples run as written: each registers, and trains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from test_trainer import _options, _setup, synthetic_loader

from autoseg.training.losses import LOSSES, build_loss
from autoseg.training.trainer import TRAINERS

DOC = Path(__file__).resolve().parents[1] / "documentation" / "extending.md"


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def registries():
    """Put the registries back as they were: the examples register for good."""
    saved = [(reg, dict(reg._items)) for reg in (LOSSES, TRAINERS) if reg.names()]
    yield
    for reg, items in saved:
        reg._items.clear()
        reg._items.update(items)


def _run(code: str, name: str) -> dict:
    namespace: dict = {"__name__": f"extending_example_{name}"}
    exec(compile(code, f"{DOC}:{name}", "exec"), namespace)
    return namespace


def test_the_page_has_a_loss_and_a_trainer_example_each_under_50_lines():
    examples = _examples()
    assert len(examples) == 2
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
    _run(_examples()[1], "trainer")
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
