"""benchmarks/gpu_check.py on a CPU: the no-GPU line, step selection and time limits, the
verdicts and the one summary. The CUDA steps themselves need a GPU (``make gpu-check``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check as gc
from benchmarks.run_all import RunStatus

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@NO_CUDA
def test_without_a_gpu_it_says_so_in_one_line_and_fails(tmp_path, capsys):
    assert gc.main(["--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gpu-check: no GPU check possible: ")
    assert "without CUDA" in out or "sees no CUDA device" in out
    assert not (tmp_path / "out").exists()  # nothing was started


def test_the_no_gpu_line_names_the_reason(monkeypatch):
    cpu_build = gc.cuda_problem("2.13.0+cpu", None, False, 0)
    assert "torch 2.13.0+cpu" in cpu_build and "built without CUDA" in cpu_build
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    hidden = gc.cuda_problem("2.13.0", "12.8", False, 0)
    assert "sees no CUDA device" in hidden and "CUDA_VISIBLE_DEVICES=''" in hidden
    assert gc.cuda_problem("2.13.0", "12.8", True, 1) is None


def test_step_selection_keeps_the_order_and_rejects_unknown_names():
    assert gc.select_steps(None, None) == list(gc.STEPS)
    assert gc.select_steps("bench, tests", None) == ["tests", "bench"]
    assert gc.select_steps(None, "bench") == ["tests", "memory", "predict"]
    assert gc.select_steps("memory,predict", "predict") == ["memory"]
    with pytest.raises(ValueError, match="unknown step 'gpu'.*tests, memory"):
        gc.select_steps("gpu", None)
    with pytest.raises(ValueError, match="no step left"):
        gc.select_steps("tests", "tests")


def test_each_step_gets_its_limit_or_what_is_left():
    assert gc.step_timeout("tests", 400) == gc.STEP_LIMITS["tests"]
    assert gc.step_timeout("memory", 50) == 50
    assert gc.step_timeout("bench", 300) == 300  # the bench step takes the rest
    assert gc.step_timeout("predict", gc.MIN_STEP_S - 1) is None


def test_a_budget_too_small_skips_every_step_and_the_summary_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gc, "_cuda_header", lambda: (None, "a GPU"))
    started = []
    monkeypatch.setattr(gc, "run_step_process", lambda *a: started.append(a) or [])
    rc = gc.main(["--only", "tests,predict", "--budget", "5", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert rc == 0 and started == []
    assert "overall: passed (0 passed, 0 failed, 2 skipped)" in text
    assert "only 5 s of the budget left" in text
    assert (tmp_path / "summary.txt").read_text(encoding="utf-8").startswith("=" * 78)


def test_steps_run_in_order_and_one_failure_fails_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gc, "_cuda_header", lambda: (None, "NVIDIA H100, torch 2.13.0"))
    ran = []

    def fake(step, out, timeout):
        ran.append((step, timeout))
        status = "failed" if step == "predict" else "passed"
        return [gc.Check(step, status, "1.23 s" if step == "predict" else "ok", gc.TARGETS[step])]

    monkeypatch.setattr(gc, "run_step_process", fake)
    assert gc.main(["--skip", "bench", "--out", str(tmp_path)]) == 1
    assert [s for s, _ in ran] == ["tests", "memory", "predict"]
    assert all(t <= gc.STEP_LIMITS[s] for s, t in ran)
    text = capsys.readouterr().out
    summary = text[text.index("GPU check summary") :]
    assert "NVIDIA H100" in summary and "overall: FAILED (2 passed, 1 failed, 0 skipped)" in summary
    predict_row = next(line for line in summary.splitlines() if line.startswith("predict"))
    assert "FAILED" in predict_row and "1.23 s" in predict_row and "< 1 s per volume" in predict_row


def test_summary_has_one_row_per_check_with_status_figure_and_target():
    checks = [
        gc.Check("gpu tests (pytest -m gpu)", "passed", "2 passed", gc.TARGETS["tests"]),
        gc.Check(
            "memory estimate 3d",
            "failed",
            "900 / 1200 MB = 0.75",
            gc.TARGETS["memory"],
            "training step 0.210 s/it",
        ),
        gc.Check("bench (quick, vs nnU-Net)", "skipped", detail=".venv-bench absent"),
    ]
    text = gc.format_summary(checks, "H100", 123.4, 480)
    assert text.isascii()  # printable on any console
    lines = text.splitlines()
    assert "123 s of the 480 s budget" in text
    head = next(i for i, line in enumerate(lines) if line.startswith("check"))
    rows = lines[head + 1 : head + 4]
    # the columns line up: every status starts where the header's does
    column = lines[head].index("status")
    assert [r[column:].split()[0] for r in rows] == ["passed", "FAILED", "skipped"]
    assert "0.75" in rows[1] and "within 1 +- 0.15" in rows[1]
    assert "  memory estimate 3d: training step 0.210 s/it" in lines
    assert "  bench (quick, vs nnU-Net): .venv-bench absent" in lines
    assert lines[-2] == "overall: FAILED (1 passed, 1 failed, 1 skipped)"
    assert gc.exit_status(checks) == 1 and gc.exit_status(checks[::2]) == 0
    with pytest.raises(ValueError):
        gc.Check("x", "ok")


@pytest.mark.parametrize(
    ("rc", "output", "status", "figure"),
    [
        (0, "..\n2 passed, 714 deselected in 9.10s\n", "passed", "2 passed"),
        (0, "ss\n2 skipped, 714 deselected in 3.0s\n", "failed", "2 skipped"),
        (1, "F.\n1 failed, 1 passed, 714 deselected in 9.1s\n", "failed", "1 failed, 1 passed"),
        (5, "714 deselected in 2.0s\n", "failed", "no tests ran"),
    ],
)
def test_gpu_tests_pass_only_when_they_all_ran_and_passed(rc, output, status, figure):
    check = gc.tests_check(rc, output)
    assert (check.status, check.figure) == (status, figure)


def test_memory_and_predict_verdicts_follow_their_targets():
    assert gc.memory_verdict("2d", "320x320 batch 48", 1100, 1000, 0.2).status == "passed"
    low = gc.memory_verdict("3d_fullres", "40x192x256 batch 2", 800, 1000, 0.3)
    assert low.status == "failed" and low.figure == "800 / 1000 MB = 0.80"
    fast = gc.predict_verdict([0.5, 0.9, 0.6], 3.0, tta=True)
    assert fast.status == "passed" and fast.figure == "0.60 s" and "TTA on" in fast.detail
    assert gc.predict_verdict([1.2, 0.9, 1.1], 3.0, tta=True).status == "failed"


def test_without_the_bench_venv_the_nnunet_step_is_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "BENCH_PYTHON", tmp_path / ".venv-bench" / "bin" / "python")
    monkeypatch.setattr(gc, "REPO", tmp_path)
    (check,) = gc.step_bench(tmp_path / "out", 300)
    assert check.status == "skipped" and ".venv-bench/bin/python absent" in check.detail
    assert not (tmp_path / "out").exists()


def test_bench_checks_show_each_scripts_ratios():
    statuses = [
        RunStatus("training", "ok", 50.0),
        RunStatus("inference", "failed", 9.0, "exit status 1; log: x.log"),
    ]
    figures = [
        {
            "benchmark": "training",
            "metric": "iterations/s",
            "autoseg": 3.0,
            "nnunet": 2.0,
            "target": 1.0,
            "better": "higher",
        },
        {"benchmark": "inference", "metric": "s/case", "autoseg": 1.0, "nnunet": 1.0},
    ]
    training, inference = gc.bench_checks(statuses, figures)
    assert training.status == "passed" and training.figure == "iterations/s 1.5 (met)"
    assert inference.status == "failed" and inference.figure == "-"  # stale figures not shown
    assert "exit status 1" in inference.detail


@NO_CUDA
@pytest.mark.slow
def test_a_step_that_crashes_is_a_failed_check_with_its_log(tmp_path, capsys):
    (check,) = gc.run_step_process("predict", tmp_path, timeout=120)
    assert check.status == "failed" and check.name == "predict"
    assert (
        "exit status 1" in check.detail and str(tmp_path / "logs" / "predict.log") in check.detail
    )
    assert "Traceback" in (tmp_path / "logs" / "predict.log").read_text()


def test_a_configuration_that_fails_to_run_fails_alone(monkeypatch):
    def measure(plan, config, work):
        if config == "3d_fullres":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return gc.memory_verdict(config, "320x320 batch 48", 1000, 1000, 0.1)

    monkeypatch.setattr(gc, "measure_training_step", measure)
    three_d, two_d = gc.step_memory(Path("unused"))
    assert three_d.status == "failed" and "RuntimeError: CUDA out of memory" in three_d.detail
    assert two_d.status == "passed"
