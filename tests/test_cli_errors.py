"""No command ends in a traceback: an unexpected error prints one line (command, step, case,
log file) and exits 1; the log holds the traceback; AutosegError and Ctrl-C are unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import one_torch_thread, shrink_2d_plan, tiny_us_dataset

import autoseg.evaluation.metrics as metrics_module
from autoseg.cli import main
from autoseg.errors import AutosegError, case_of, failure_context, failure_where, report_failure
from autoseg.io import Geometry, write_image


def _masks(folder: Path, n: int) -> list[str]:
    """``n`` small 2D masks ``c0..``; returns the case ids."""
    geom = Geometry.default((24, 24), (1.0, 1.0))
    for i in range(n):
        mask = np.zeros((24, 24), np.uint8)
        mask[5 : 10 + i, 5:12] = 1
        write_image(folder / f"c{i}.nii.gz", mask, geom)
    return [f"c{i}" for i in range(n)]


def _fail_on(case_marker: str, real):
    """compute_metrics that raises IndexError for the case whose mask has ``case_marker`` rows."""

    def compute(pred, ref, spacing, labels=None):
        if int(ref[:, 5].sum()) == case_marker:
            raise IndexError("index 7 is out of bounds for axis 0 with size 7")
        return real(pred, ref, spacing, labels)

    return compute


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _log_path(line: str) -> Path:
    m = re.search(r"full traceback: (\S+\.log)$", line)
    assert m, line
    return Path(m.group(1))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unexpected_error_in_evaluate_names_case_and_log(tmp_path, monkeypatch, capsys, workers):
    root = tmp_path / "root"
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    cases = _masks(pred, 4)
    _masks(ref, 4)
    # c2's mask has 7 rows in column 5; forked workers inherit the patched function
    monkeypatch.setattr(
        metrics_module, "compute_metrics", _fail_on(7, metrics_module.compute_metrics)
    )
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--workers", workers])
    assert code == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("autoseg evaluate: failed in evaluate on case c2: IndexError: index 7")
    assert cases[2] in line and "c1" not in line
    log = _log_path(line)
    assert log.parent == (root / "logs").resolve() and log.is_file()
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert "IndexError: index 7 is out of bounds" in text
    assert "case: c2" in text and "arguments: evaluate --pred" in text
    assert "compute" in text  # the frame that raised (from the worker when forked)


def test_validation_error_after_training_names_case_and_rerun_resumes(
    tmp_path, monkeypatch, capsys
):
    """The incident: end-of-fold validation fails after training. One line; the checkpoint
    stays; rerunning the same command validates without training again."""
    root = tmp_path / "root"
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    tiny_us_dataset(root, 41, 5)
    assert main(["plan", "41", "--configs", "2d", "--brief"]) == 0
    plan_path = root / "preprocessed" / "041_TinyUS" / "plans.json"
    shrink_2d_plan(plan_path, epochs=2)
    capsys.readouterr()

    real = metrics_module.compute_metrics

    def broken(pred, ref, spacing, labels=None):
        raise IndexError("list index out of range")

    monkeypatch.setattr(metrics_module, "compute_metrics", broken)
    args = ["train", "41", "2d", "0", "--workers", "0", "--device", "cpu"]
    with one_torch_thread():
        code = main(args)
    assert code == 1
    err = capsys.readouterr().err
    assert "\r" not in err  # stderr is not a terminal: plain lines
    epochs = [x for x in err.splitlines() if x.startswith("2d fold 0 epoch ")]
    assert [x.split(":")[0] for x in epochs] == ["2d fold 0 epoch 1/2", "2d fold 0 epoch 2/2"]
    assert all(re.search(r"train loss \d+\.\d+, pseudo Dice \d\.\d+, \d", x) for x in epochs)
    line = err.splitlines()[-1]
    splits = json.loads((root / "results" / "041_TinyUS" / "splits.json").read_text())
    first = splits[0]["val"][0]
    assert line.startswith(
        f"autoseg train: failed in validate 2d fold 0 on case {first}: IndexError: list index"
    )
    assert "Traceback" not in err
    assert "in broken" in _log_path(line).read_text()
    fold = root / "results" / "041_TinyUS" / "2d" / "fold_0"
    assert (fold / "checkpoint_final.pt").is_file()
    trained_at = (fold / "checkpoint_final.pt").stat().st_mtime_ns

    monkeypatch.setattr(metrics_module, "compute_metrics", real)
    with one_torch_thread():
        assert main([*args, "--no-progress"]) == 0
    assert (fold / "validation" / "metrics.json").is_file()
    assert (fold / "checkpoint_final.pt").stat().st_mtime_ns == trained_at  # not retrained


def test_autoseg_error_and_interrupt_keep_their_one_line_and_write_no_log(
    tmp_path, monkeypatch, capsys
):
    root = tmp_path / "root"
    monkeypatch.setenv("AUTOSEG_ROOT", str(root))
    assert main(["evaluate", "--pred", str(tmp_path / "none"), "--ref", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("autoseg evaluate: error: ")
    assert "full traceback" not in line

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(metrics_module, "evaluate_folders", interrupted)
    monkeypatch.setattr("autoseg.evaluation.evaluate_folders", interrupted)
    assert main(["evaluate", "--pred", str(tmp_path), "--ref", str(tmp_path)]) == 130
    line = _one_error_line(capsys.readouterr().err)
    assert line == "autoseg evaluate: interrupted; run the same command again to resume."
    assert not (root / "logs").exists()


def test_log_falls_back_to_the_temp_folder_when_the_root_is_not_writable(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("AUTOSEG_ROOT", str(not_a_folder))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    try:
        with failure_context("convert", "case 9"):
            raise ValueError("bad\nvalue")
    except ValueError as exc:
        line, log = report_failure("autoseg convert", exc, ["convert", "x"])
    assert log == (tmp_path / "tmp" / "autoseg-logs").resolve() / log.name
    assert line == (
        f"autoseg convert: failed in convert on case case 9: ValueError: bad value; "
        f"full traceback: {log}"
    )
    assert "ValueError: bad\nvalue" in log.read_text()


def test_failure_context_keeps_the_innermost_step_and_passes_autoseg_errors():
    outer, inner = failure_context("train 2d fold 1"), failure_context("validate 2d fold 1", "c3")
    with pytest.raises(ZeroDivisionError) as info, outer, inner:
        _ = 1 / 0
    assert failure_where(info.value) == ("validate 2d fold 1", "c3")
    with pytest.raises(ZeroDivisionError) as info, failure_context("a", "c4"), failure_context("b"):
        _ = 1 / 0
    assert failure_where(info.value) == ("b", "c4")
    with pytest.raises(AutosegError) as err, failure_context("step", "c1"):
        raise AutosegError("fixable")
    assert failure_where(err.value) == (None, None)


def test_case_of_reads_ids_from_jobs():
    class Case:
        case_id = "a1"

    class Task:
        case = Case()

    class Job:
        case = "b2"

    assert [case_of("c3"), case_of(Case()), case_of(Task()), case_of(Job()), case_of(3)] == [
        "c3",
        "a1",
        "a1",
        "b2",
        None,
    ]


def test_demo_failure_is_one_line(tmp_path, monkeypatch, capsys):
    import autoseg.demo as demo

    monkeypatch.setenv("AUTOSEG_ROOT", str(tmp_path))

    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("autoseg.phantoms.generate_phantom", broken)
    assert demo.main(["--only", "us2d", "--no-progress"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("demo: failed in autoseg.demo.training_dataset: RuntimeError: disk")
    assert "disk on fire" in _log_path(line).read_text()
