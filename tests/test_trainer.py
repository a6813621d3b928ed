"""Trainer: it learns, logs, checkpoints, and resumes exactly after a SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from autoseg.errors import AutosegError
from autoseg.networks.checkpoint import load_checkpoint
from autoseg.training.trainer import (
    Trainer,
    TrainOptions,
    TrainSetup,
    epoch_seed,
    make_optimizer,
    poly_lr,
    scheduled_lr,
)

ARCH = {
    "network": "unet",
    "dim": 2,
    "in_channels": 1,
    "num_classes": 2,
    "features_per_stage": [4, 8, 8],
    "kernel_sizes": [[3, 3], [3, 3], [3, 3]],
    "strides": [[1, 1], [2, 2], [2, 2]],
    "n_blocks_per_stage": [1, 1, 1],
    "n_conv_per_stage_decoder": [1, 1],
    "deep_supervision": True,
    "norm": "instance",
    "nonlin": "leaky_relu",
}


def synthetic_loader(case_ids, augment, seed, batch_size, patch=(32, 32)):
    """Bright discs on noise; the label is the disc. Fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    while True:
        data = rng.normal(0, 1, (batch_size, 1, *patch)).astype(np.float32)
        target = np.zeros((batch_size, 1, *patch), np.int64)
        yy, xx = np.mgrid[: patch[0], : patch[1]]
        for b in range(batch_size):
            cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(3, 7)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            data[b, 0][disc] += 2.5
            target[b, 0][disc] = 1
        yield {"data": data, "target": target}


def _setup(tmp_path: Path) -> TrainSetup:
    return TrainSetup("2d", ARCH, (32, 32), 4, tmp_path / "unused", num_classes=2)


def _options(**kw) -> TrainOptions:
    base = dict(
        epochs=3,
        iterations_per_epoch=4,
        val_iterations=2,
        progress=False,
        deterministic=True,
        device="cpu",
    )
    base.update(kw)
    return TrainOptions(**base)


def test_poly_lr_and_epoch_seed():
    assert poly_lr(0.01, 0, 100) == 0.01
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert epoch_seed(0, 1, 2) == epoch_seed(0, 1, 2) != epoch_seed(0, 1, 3)


def test_trainer_learns_and_writes_outputs(tmp_path):
    out = tmp_path / "fold_0"
    trainer = Trainer(
        _setup(tmp_path),
        _options(epochs=6, iterations_per_epoch=8),
        ["a"],
        ["b"],
        out,
        loader_factory=synthetic_loader,
    )
    log = trainer.fit()
    assert len(log) == 6
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert log[-1]["pseudo_dice"] > 0.5, log[-1]
    for name in (
        "checkpoint_latest.pt",
        "checkpoint_best.pt",
        "checkpoint_final.pt",
        "training_log.json",
        "training_curves.png",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "training_log.json").read_text())
    assert [e["epoch"] for e in saved] == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(out / "checkpoint_final.pt")["epoch"] == 6


def test_adamw_trainer_learns_and_resumes_with_its_own_state(tmp_path):
    out = tmp_path / "fold_0"
    opts = _options(epochs=6, iterations_per_epoch=8, optimizer="adamw", initial_lr=3e-3)
    trainer = Trainer(_setup(tmp_path), opts, ["a"], ["b"], out, loader_factory=synthetic_loader)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    log = trainer.fit()
    assert log[-1]["pseudo_dice"] > 0.5, log[-1]
    state = load_checkpoint(out / "checkpoint_final.pt")
    again = Trainer(_setup(tmp_path), opts, ["a"], ["b"], out, loader_factory=synthetic_loader)
    again.load_state(state)
    assert "exp_avg" in next(iter(again.optimizer.state.values()))  # Adam moments came back


def test_optimizer_choice_and_cpu_threads(tmp_path):
    net = torch.nn.Linear(2, 2)
    assert isinstance(make_optimizer(net, _options()), torch.optim.SGD)
    with pytest.raises(AutosegError, match="unknown optimizer"):
        make_optimizer(net, _options(optimizer="adam"))
    before = torch.get_num_threads()
    seen: list[int] = []
    try:
        torch.set_num_threads(2)
        Trainer(
            _setup(tmp_path),
            _options(cpu_threads=1, epochs=1, iterations_per_epoch=2),
            ["a"],
            ["b"],
            tmp_path / "f",
            loader_factory=synthetic_loader,
            on_iteration=lambda e, i: seen.append(torch.get_num_threads()),
        ).fit()
        assert seen == [1, 1]  # the plan's threads while training ...
        assert torch.get_num_threads() == 2  # ... and the process's own afterwards
    finally:
        torch.set_num_threads(before)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from test_trainer import synthetic_loader, _setup, _options
    from autoseg.training.trainer import Trainer

    def die(epoch, it):
        if epoch == 1 and it == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    t = Trainer(_setup(Path({tmp!r})), _options(), ["a"], ["b"], Path({out!r}),
                loader_factory=synthetic_loader, on_iteration=die)
    t.fit()
    """
)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    Trainer(
        _setup(tmp_path), _options(), ["a"], ["b"], ref_dir, loader_factory=synthetic_loader
    ).fit()
    script = KILLER.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), out=str(killed_dir))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert proc.returncode == -9, proc.stderr  # really killed mid-epoch 2
    assert load_checkpoint(killed_dir / "checkpoint_latest.pt")["epoch"] == 1
    resumed = Trainer(
        _setup(tmp_path), _options(), ["a"], ["b"], killed_dir, loader_factory=synthetic_loader
    )
    resumed.fit(resume=True)
    ref = load_checkpoint(ref_dir / "checkpoint_final.pt")
    got = load_checkpoint(killed_dir / "checkpoint_final.pt")
    assert got["epoch"] == ref["epoch"] == 3
    for k, v in ref["model"].items():
        torch.testing.assert_close(got["model"][k], v, atol=1e-6, rtol=1e-5)
    ref_log, got_log = json.loads(ref["log"]), json.loads(got["log"])
    assert [e["train_loss"] for e in got_log] == pytest.approx(
        [e["train_loss"] for e in ref_log], rel=1e-5
    )


def test_time_budget_refits_epochs_after_the_first_epoch(tmp_path):
    out = tmp_path / "budget"
    opts = _options(epochs=50, iterations_per_epoch=2, time_budget_s=1e-3)
    log = Trainer(_setup(tmp_path), opts, ["a"], ["b"], out, loader_factory=synthetic_loader).fit()
    # a budget far below one epoch leaves the minimum: the measured epoch plus one more
    assert len(log) == 2 and log[0]["epochs_refitted"] == 2
    assert load_checkpoint(out / "checkpoint_final.pt")["epochs"] == 2
    roomy = _options(epochs=2, iterations_per_epoch=2, time_budget_s=3600.0, max_epochs=4)
    log = Trainer(
        _setup(tmp_path), roomy, ["a"], ["b"], tmp_path / "roomy", loader_factory=synthetic_loader
    ).fit()
    assert len(log) == 4  # a generous budget may extend the plan, up to max_epochs


def test_time_budget_is_refitted_every_epoch_when_epochs_slow_down(tmp_path, monkeypatch):
    """On a clock of the test's own (the trainer's ``time``), so a busy core cannot change it:
    each batch costs 0.01 s in the first epoch (its training and pseudo-Dice loaders), then
    0.05 s."""
    import types

    import autoseg.training.trainer as trainer_module

    clock = {"t": 0.0}
    monkeypatch.setattr(
        trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock["t"])
    )
    calls = []

    def slowing(case_ids, augment, seed, batch_size):
        calls.append(augment)
        pause = 0.01 if len(calls) <= 2 else 0.05  # epoch 1 (train + pseudo Dice) is fast
        for batch in synthetic_loader(case_ids, augment, seed, batch_size):
            clock["t"] += pause
            yield batch

    opts = _options(epochs=200, iterations_per_epoch=4, val_iterations=1, time_budget_s=2.0)
    trainer = Trainer(_setup(tmp_path), opts, ["a"], ["b"], tmp_path / "o", loader_factory=slowing)
    log = trainer.fit()
    took = clock["t"]
    first_fit = log[0]["epochs_refitted"]
    # fitted from the fast first epoch alone, the loop would have run first_fit epochs at the
    # slower pace; refitted every epoch it stops near the budget
    assert len(log) < first_fit / 2, (len(log), first_fit)
    assert took <= 2.0 + max(e["epoch_seconds"] for e in log) + 1e-9
    assert trainer.spent_s == pytest.approx(took, abs=1e-9)
    saved = load_checkpoint(tmp_path / "o" / "checkpoint_final.pt")
    assert saved["epochs"] == len(log) and saved["spent_s"] > 0


def test_scheduled_lr_warms_up_linearly_then_decays_to_zero_at_the_end():
    lrs = [scheduled_lr(1e-2, i, 100, warmup=10) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # rising through the warm-up
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))  # falling after it
    assert lrs[10] == pytest.approx(1e-2) and 0 < lrs[-1] < 1e-3
    assert scheduled_lr(1e-2, 100, 100, warmup=10) == 0.0
    assert scheduled_lr(1e-2, 50, 100) == poly_lr(1e-2, 50, 100)  # no warm-up: poly per step


def test_trainer_sets_the_learning_rate_every_iteration_when_asked(tmp_path):
    seen: list[float] = []
    opts = _options(epochs=2, iterations_per_epoch=5, warmup_iterations=3, lr_per_iteration=True)
    trainer = Trainer(
        _setup(tmp_path),
        opts,
        ["a"],
        ["b"],
        tmp_path / "out",
        loader_factory=synthetic_loader,
        on_iteration=lambda e, i: seen.append(trainer.optimizer.param_groups[0]["lr"]),
    )
    trainer.fit()
    assert seen == pytest.approx([scheduled_lr(opts.initial_lr, i, 10, 3) for i in range(10)])
    # per epoch (the default): one value per epoch after the warm-up
    seen.clear()
    opts = _options(epochs=2, iterations_per_epoch=5, warmup_iterations=2)
    trainer = Trainer(
        _setup(tmp_path),
        opts,
        ["a"],
        ["b"],
        tmp_path / "per_epoch",
        loader_factory=synthetic_loader,
        on_iteration=lambda e, i: seen.append(trainer.optimizer.param_groups[0]["lr"]),
    )
    trainer.fit()
    lr0, lr1 = poly_lr(opts.initial_lr, 0, 2), poly_lr(opts.initial_lr, 1, 2)
    assert seen == pytest.approx([opts.initial_lr / 2, opts.initial_lr, lr0, lr0, lr0] + [lr1] * 5)


def test_weight_average_is_validated_saved_and_resumed_exactly(tmp_path):
    opts = _options(epochs=3, iterations_per_epoch=4, weight_ema=0.8)
    ref = Trainer(
        _setup(tmp_path), opts, ["a"], ["b"], tmp_path / "ref", loader_factory=synthetic_loader
    )
    ref.fit()
    final = load_checkpoint(tmp_path / "ref" / "checkpoint_final.pt")
    # "model" (what predict loads) is the average, "train_model" the raw weights it follows
    for k, v in ref.ema_network.state_dict().items():
        torch.testing.assert_close(final["model"][k], v)
    for k, v in ref.network.state_dict().items():
        torch.testing.assert_close(final["train_model"][k], v)
    assert any(not torch.equal(final["model"][k], final["train_model"][k]) for k in final["model"])

    class Stop(Exception):
        pass

    def stop_in_epoch_2(epoch, it):
        if epoch == 1 and it == 1:
            raise Stop

    part = tmp_path / "part"
    with pytest.raises(Stop):
        Trainer(
            _setup(tmp_path),
            _options(epochs=3, iterations_per_epoch=4, weight_ema=0.8),
            ["a"],
            ["b"],
            part,
            loader_factory=synthetic_loader,
            on_iteration=stop_in_epoch_2,
        ).fit()
    assert load_checkpoint(part / "checkpoint_latest.pt")["epoch"] == 1
    Trainer(
        _setup(tmp_path),
        _options(epochs=3, iterations_per_epoch=4, weight_ema=0.8),
        ["a"],
        ["b"],
        part,
        loader_factory=synthetic_loader,
    ).fit(resume=True)
    got = load_checkpoint(part / "checkpoint_final.pt")
    for key in ("model", "train_model"):
        for k, v in final[key].items():
            torch.testing.assert_close(got[key][k], v, atol=1e-6, rtol=1e-5)


def test_weight_average_is_the_lerp_of_every_step(tmp_path):
    opts = _options(epochs=1, iterations_per_epoch=3, weight_ema=0.5, val_iterations=0)
    snapshots = []
    trainer = Trainer(
        _setup(tmp_path),
        opts,
        ["a"],
        [],
        tmp_path / "out",
        loader_factory=synthetic_loader,
        on_iteration=lambda e, i: snapshots.append(
            {k: v.clone() for k, v in trainer.network.named_parameters()}
        ),
    )
    start = {k: v.clone() for k, v in trainer.network.named_parameters()}
    trainer.fit()
    expected = start
    for snap in snapshots:
        expected = {k: 0.5 * expected[k] + 0.5 * snap[k] for k in expected}
    got = dict(trainer.ema_network.named_parameters())
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v)


def test_cpu_training_runs_in_bfloat16_only_where_the_cpu_has_it(tmp_path, monkeypatch):
    from autoseg.networks import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    trainer = Trainer(
        _setup(tmp_path), _options(), ["a"], ["b"], tmp_path / "a", loader_factory=synthetic_loader
    )
    assert trainer.autocast == torch.bfloat16 and not trainer.amp  # no gradient scaler
    seen = []
    real = trainer.network.forward
    monkeypatch.setattr(
        trainer.network,
        "forward",
        lambda x: seen.append(torch.get_autocast_dtype("cpu")) or real(x),
    )
    assert torch.is_autocast_enabled("cpu") is False
    trainer.train_step(next(synthetic_loader(["a"], True, 0, 4)))
    assert seen == [torch.bfloat16]
    off = Trainer(
        _setup(tmp_path),
        _options(amp=False),
        ["a"],
        ["b"],
        tmp_path / "b",
        loader_factory=synthetic_loader,
    )
    assert off.autocast is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    plain = Trainer(
        _setup(tmp_path), _options(), ["a"], ["b"], tmp_path / "c", loader_factory=synthetic_loader
    )
    assert plain.autocast is None


def test_channels_last_layout_trains_and_saves_weights_any_network_loads(tmp_path):
    from autoseg.networks import build_network

    opts = _options(epochs=2, iterations_per_epoch=3, channels_last=True)
    trainer = Trainer(
        _setup(tmp_path), opts, ["a"], ["b"], tmp_path / "cl", loader_factory=synthetic_loader
    )
    convs = [m for m in trainer.network.modules() if isinstance(m, torch.nn.Conv2d)]
    conv = next(m for m in convs if m.in_channels > 1 and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    log = trainer.fit()
    assert np.isfinite(log[-1]["train_loss"])
    plain = build_network(ARCH).eval()
    plain.load_state_dict(load_checkpoint(tmp_path / "cl" / "checkpoint_final.pt")["model"])
    x = torch.randn(1, 1, 32, 32)
    trainer.network.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), trainer.network(x), atol=1e-4, rtol=1e-4)
