"""DDP with gloo on CPU: 2 processes follow the loss curve of 1 process with the same global
batch, and the replicas stay identical."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import itertools, json, sys
    from pathlib import Path
    import numpy as np, torch
    import torch.distributed as dist
    sys.path[:0] = [{repo!r}, {tests!r}]  # this checkout's autoseg, whatever is installed
    from test_trainer import _setup, _options, synthetic_loader
    from autoseg.training.distributed import (
        gloo_worker_threads, init_distributed, shutdown_distributed)
    from autoseg.training.trainer import Trainer

    ddp = {ddp!r}
    rank, world = init_distributed("cpu") if ddp else (0, 1)
    calls = itertools.count()

    def loader(case_ids, augment, seed, batch_size):
        # The same global batch in every process (seeded by call number, not rank): each rank
        # takes its slice, so 2 x 2 samples equal the single process's 4.
        glob = synthetic_loader(case_ids, augment, next(calls), batch_size * world)
        for b in glob:
            s = slice(rank * batch_size, (rank + 1) * batch_size)
            yield {{"data": b["data"][s], "target": b["target"][s]}}

    torch.set_num_threads(1)
    t = Trainer(_setup(Path({out!r})), _options(epochs=4, iterations_per_epoch=5), ["a"], ["b"],
                Path({out!r}), loader_factory=loader)
    log = t.fit()
    flat = torch.cat([p.detach().flatten() for p in t.network.parameters()])
    if ddp:
        others = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(others, flat)
        assert all(torch.equal(others[0], o) for o in others), "replicas diverged"
    if rank == 0:
        Path({out!r}, "losses.json").write_text(json.dumps([e["train_loss"] for e in log]))
    if ddp:
        # As `autoseg train --ddp` does: the trainer (its DDP model holds the group) is released
        # before the group is left, so that leaving it ends gloo's worker threads.
        during = gloo_worker_threads()
        del t
        shutdown_distributed()
        if rank == 0:
            Path({out!r}, "workers.json").write_text(json.dumps([during, gloo_worker_threads()]))
    """
)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the interpreter")
    tests = str(Path(__file__).parent)
    repo = str(Path(__file__).parents[1])
    curves = {}
    for name, ddp in (("single", False), ("ddp", True)):
        out = tmp_path / name
        out.mkdir()
        script = tmp_path / f"{name}.py"
        script.write_text(SCRIPT.format(repo=repo, tests=tests, ddp=ddp, out=str(out)))
        cmd = (
            [torchrun, "--standalone", "--nproc_per_node=2", str(script)]
            if ddp
            else [sys.executable, str(script)]
        )
        proc = subprocess.run(
            cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=240
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        curves[name] = json.loads((out / "losses.json").read_text())
    # Leaving the group ended gloo's worker threads. One still running at interpreter exit can
    # free a finished collective's tensors while Python shuts down, and the process aborts
    # ("terminate called without an active exception"; documentation/training.md).
    during, after = json.loads((tmp_path / "ddp" / "workers.json").read_text())
    assert during >= 1 and after == 0, (during, after)
    single, ddp = curves["single"], curves["ddp"]
    assert len(single) == len(ddp) == 4
    assert ddp[-1] < ddp[0]
    # Cross-entropy is averaged identically; only the batch Dice differs (2 + 2 samples vs 4).
    for a, b in zip(single, ddp):
        assert abs(a - b) / a < 0.05, (single, ddp)
