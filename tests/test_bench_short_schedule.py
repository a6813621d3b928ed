"""benchmarks/short_schedule.py end to end on the wrist phantom with a few iterations."""

from __future__ import annotations

import json

import pytest

from benchmarks import short_schedule as ss


@pytest.mark.slow
def test_both_optimizers_train_the_fixed_network_and_a_rerun_skips_them(tmp_path, one_thread):
    argv = ["--kinds", "us2d", "--iterations", "100", "--work", str(tmp_path)]
    out = tmp_path / "rows.json"
    assert ss.main(argv + ["--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == ["sgd:0.01", "adamw:0.003"]
    assert all(0.0 <= r["dice"] <= 1.0 and len(r["pseudo_dice"]) == 1 for r in rows)
    plan = json.loads(next(tmp_path.glob("preprocessed/*/plans.json")).read_text())
    c = plan["configurations"]["2d"]
    assert c["patch_size"] == ss.FIXED["us2d"]["patch"] and c["batch_size"] == 2
    assert c["architecture"]["features_per_stage"] == ss.FIXED["us2d"]["features"]
    records = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert records == ["us2d_0_100_adamw:0.003.json", "us2d_0_100_sgd:0.01.json"]
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    assert ss.main(argv) == 0  # everything is recorded: nothing trains again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()} == before
