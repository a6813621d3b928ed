"""benchmarks/failures.py: per-case failures across runs, on small hand-made predictions."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from benchmarks import failures as fl


def _disc(shape, centre, radius, label=1):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius**2).astype(np.uint8) * label


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(arr[None]), str(path))


def _case_refs():
    """Eight cases whose nerve radius grows with the case number (areas in 4 quartiles)."""
    return {f"c{i}": _disc((48, 48), (24, 24), 3 + 2 * i) for i in range(8)}


def _make_run(root, refs, missed, ds="1_X"):
    """A run root whose predictions equal the references except the ``missed`` cases, whose
    nerve is drawn in a far corner (Dice 0)."""
    raw = root / "raw" / ds
    for case, ref in refs.items():
        _write(raw / "labelsTs" / f"{case}.nii.gz", ref)
        _write(raw / "labelsTr" / f"{case}.nii.gz", ref)
        pred = _disc(ref.shape, (4, 4), 2) if case in missed else ref
        _write(root / "test_predictions" / f"{case}.nii.gz", pred)
        _write(root / "results" / ds / "2d" / "fold_0" / "validation" / f"{case}.nii.gz", pred)


def test_summarize_counts_failures_per_run_and_case_and_the_failures_fixed_bound():
    mk = fl.CaseScore
    w = mk(0.9, 50, 50)
    scores = {
        "a": {"x": mk(0.0, 10, 5), "y": mk(0.8, 100, 90), "z": mk(0.6, 1000, 900), "w": w},
        "b": {"x": mk(0.1, 10, 7), "y": mk(0.4, 100, 40), "z": mk(0.7, 1000, 800), "w": w},
    }
    s = fl.summarize(scores, ["a", "b"])
    assert s["cases"] == ["w", "x", "y", "z"]
    assert s["failures"] == [1, 2]
    assert s["always_failed"] == ["x"] and s["never_failed"] == 2
    assert s["failed_by_k_runs"] == {"0": 2, "1": 1, "2": 1}
    # run a: the failure x scores the mean of w, y, z (0.9, 0.8, 0.6) -> mean of 4 = 0.7667
    assert abs(s["failures_at_rest_mean"][0] - np.mean([0.9, 0.7667, 0.8, 0.6])) < 1e-3
    assert abs(s["mean_dice"][1] - np.mean([0.9, 0.1, 0.4, 0.7])) < 1e-4
    # one case per size quartile here; the smallest (x, area 10) is quartile 1
    q1 = s["by_size"][0]
    assert q1["area_range"] == [10, 10] and q1["failures"] == [1, 1]


def test_cases_missing_from_a_run_are_left_out_of_the_comparison():
    mk = fl.CaseScore
    scores = {"a": {"x": mk(0.2, 9, 9), "y": mk(0.9, 9, 9)}, "b": {"y": mk(0.3, 9, 9)}}
    s = fl.summarize(scores, ["a", "b"])
    assert s["cases"] == ["y"] and s["failures"] == [0, 1]


def test_end_to_end_scores_both_parts_and_writes_json_and_figure(tmp_path, capsys):
    refs = _case_refs()
    r1, r2 = tmp_path / "run1", tmp_path / "run2"
    _make_run(r1, refs, missed={"c0", "c1"})
    _make_run(r2, refs, missed={"c0", "c5"})
    out, fig = tmp_path / "f.json", tmp_path / "f.png"
    argv = [str(r1), str(r2), "--dataset", "1_X", "--json", str(out), "--plot", str(fig)]
    assert fl.main(argv) == 0
    data = json.loads(out.read_text())
    for part in ("test", "holdout"):
        s = data[part]
        assert s["failures"] == [2, 2]
        assert s["always_failed"] == ["c0"]
        assert s["failed_by_k_runs"]["1"] == 2 and s["never_failed"] == 5
        assert s["by_size"][0]["failures"] == [2, 1]  # c0 and c1 are the smallest quartile
        # the references are exact elsewhere: failures at the rest's mean give 1.0
        assert s["failures_at_rest_mean"] == [1.0, 1.0]
    mix = data["size_mix"]  # quartile 1 tops out at c1's area: only c0 lies below it
    assert mix["training"]["fraction_below"] == mix["test"]["fraction_below"] == 0.125
    assert mix["test"]["n_cases"] == 8
    assert fig.stat().st_size > 10_000
    assert "failed by every run: ['c0']" in capsys.readouterr().out


def test_runs_without_predictions_are_an_error_not_an_empty_table(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert fl.main([str(tmp_path / "empty")]) == 1
    assert "no run has predictions" in capsys.readouterr().err
