"""The benchmark harness (benchmarks/run_all.py, benchmarks/chart.py) on tiny fake results and
scripts: collecting, the summary table, the "times better" transform, the chart file and the
handling of missing and failing scripts. No real benchmark runs here."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import chart, run_all
from benchmarks.results import from_runs, write_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_fixture(folder: Path) -> None:
    """Two well-formed result files (one met, one missed target) and one broken file."""
    write_results(
        folder / "fingerprint.json",
        "fingerprint",
        [
            from_runs("fingerprint, 4 x 12x64x64", "wall time", "s", [1.0], [4.0], "lower", 0.5),
            from_runs("fingerprint, 4 x 12x64x64", "peak memory", "MB", [300], [900], "lower"),
        ],
        notes=["all autoseg runs first"],
    )
    rate = from_runs(
        "dataloader, 3d, 0 workers", "batches/s", "batches/s", [2, 3, 4], [5, 5, 5], "higher", 1.0
    )
    write_results(
        folder / "dataloader.json",
        "dataloader",
        [rate],
    )
    (folder / "broken.json").write_text('{"benchmark": "x", "results": [', encoding="utf-8")


def test_times_better_both_directions() -> None:
    assert chart.times_better(2.0, "higher") == 2.0
    assert chart.times_better(0.5, "higher") == 0.5
    assert chart.times_better(0.25, "lower") == 4.0  # a quarter of the time: 4x better
    assert chart.times_better(2.0, "lower") == 0.5
    assert chart.times_better(None, "lower") is None
    assert chart.times_better(0.0, "lower") is None


def test_figure_ratio_and_met_from_medians() -> None:
    fig = {"autoseg": 1.0, "nnunet": 4.0, "better": "lower", "target": 0.5, "ratio": 99}
    assert chart.figure_ratio(fig) == 0.25 and chart.figure_met(fig) is True
    fig = {"autoseg": 4.0, "nnunet": 5.0, "better": "higher", "target": 1.0}
    assert chart.figure_met(fig) is False
    assert chart.figure_met({"autoseg": 4.0, "nnunet": None, "better": "higher"}) is None


def test_collect_skips_malformed_file_by_name(tmp_path: Path) -> None:
    _write_fixture(tmp_path)
    wrong = {"benchmark": "y", "results": [{"name": "a", "better": "sideways"}]}
    (tmp_path / "wrong_shape.json").write_text(json.dumps(wrong))
    files, problems = run_all.collect_results(tmp_path)
    assert [d["benchmark"] for d in files] == ["fingerprint", "dataloader"]  # harness order
    assert len(problems) == 2
    assert any(p.startswith("broken.json: unreadable") for p in problems)
    assert any(p.startswith("wrong_shape.json:") and "better" in p for p in problems)


def test_summary_table_content(tmp_path: Path) -> None:
    _write_fixture(tmp_path)
    files, problems = run_all.collect_results(tmp_path)
    statuses = [run_all.RunStatus("training", "skipped", message="bench_training.py missing")]
    text = run_all.summary_markdown(files, problems, statuses, command="run_all.py --quick")
    header = "| benchmark | figure | autoseg | nnU-Net | ratio | target | result |"
    assert header in text
    rows = [ln for ln in text.splitlines() if ln.startswith(("| fingerprint", "| dataloader"))]
    assert rows[0] == "| fingerprint | 4 x 12x64x64: wall time [s] | 1 | 4 | 0.25 | ≤ 0.5 | met |"
    assert rows[1].endswith("| 300 | 900 | 0.333 | – | – |")  # no target: nothing to judge
    assert "| 3 | 5 | 0.6 | ≥ 1 | **MISSED**" in rows[2]
    assert "| training | skipped |" in text
    assert "- note: all autoseg runs first" in text
    assert "- command: `" in text and "- machine: " in text and "- versions: " in text
    assert "broken.json: unreadable" in text
    assert "`run_all.py --quick`" in text


def test_chart_writes_png(tmp_path: Path) -> None:
    _write_fixture(tmp_path)
    files, _ = run_all.collect_results(tmp_path)
    alone = {"name": "no nnU-Net", "autoseg": 1.0, "nnunet": None, "better": "higher"}
    files.append({"benchmark": "training", "results": [alone]})
    out = chart.plot_ratios(files, tmp_path / "sub" / "ratios.png")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    assert not list(out.parent.glob("*.tmp"))  # atomic write left nothing behind


def test_chart_cli(tmp_path: Path) -> None:
    _write_fixture(tmp_path)
    out = tmp_path / "r.png"
    assert chart.main([*map(str, sorted(tmp_path.glob("*.json"))), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC


FAKE_SCRIPT = textwrap.dedent(
    """
    import argparse, json, sys
    p = argparse.ArgumentParser()
    p.add_argument("--json")
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    fig = {"name": "fake", "metric": "wall time", "unit": "s", "autoseg": 1.0, "nnunet": 3.0,
           "better": "lower", "target": 0.5}
    with open(a.json, "w") as f:
        json.dump({"benchmark": "fingerprint", "command": " ".join(sys.argv),
                   "notes": [f"cases={a.cases} threads={a.threads}"], "results": [fig]}, f)
    """
)


def test_run_all_skips_missing_and_failing_scripts(tmp_path: Path, capsys) -> None:
    scripts = tmp_path / "fake_benchmarks"  # a package: run_all starts -m fake_benchmarks.<x>
    scripts.mkdir()
    (scripts / "bench_fingerprint.py").write_text(FAKE_SCRIPT)
    (scripts / "bench_preprocess.py").write_text("import sys\nprint('boom')\nsys.exit(3)\n")
    out = tmp_path / "results"
    argv = ["--only", "fingerprint,preprocess,training", "--quick", "--threads", "1"]
    argv += ["--out", str(out), "--python", sys.executable, "--scripts-dir", str(scripts)]
    rc = run_all.main(argv)
    text = capsys.readouterr().out
    assert rc == 1  # one script failed
    assert "training: skipped" in text and "bench_training.py does not exist" in text
    assert "preprocess: failed" in text and "exit status 3" in text
    assert "boom" in (out / "logs" / "preprocess.log").read_text()
    # the quick settings reach only the options the script declares
    result = json.loads((out / "fingerprint.json").read_text())
    assert result["notes"] == ["cases=4 threads=1"]
    assert "--shape" not in result["command"] and "--repeats" not in result["command"]
    summary = (out / "summary.md").read_text()
    assert "| fingerprint | fake: wall time [s] | 1 | 3 | 0.333 | ≤ 0.5 | met |" in summary
    assert "| training | skipped |" in summary and "| preprocess | failed |" in summary
    assert (out / "ratios.png").read_bytes()[:8] == PNG_MAGIC


def test_script_options_and_helpers(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "import argparse\np = argparse.ArgumentParser()\n"
        'p.add_argument("-o", "--out")\np.add_argument("--device", default="cpu")\n'
    )
    assert run_all.script_options(script) == {"--out", "--device"}
    assert run_all.parse_cpus("1") == [1] and run_all.parse_cpus("0,2-3") == [0, 2, 3]
    assert run_all.parse_only("dataloader, fingerprint") == ["fingerprint", "dataloader"]
    with pytest.raises(ValueError, match="unknown"):
        run_all.parse_only("fingerprint,nope")


def test_benchmark_scripts_compared_figures() -> None:
    """The figures the three existing scripts write: directions, targets, peak = largest run,
    and an empty nnU-Net side when it was not run."""
    from benchmarks import bench_dataloader, bench_fingerprint, bench_preprocess

    ours, theirs = [(1.0, 0.8, 100.0), (3.0, 0.9, 120.0)], [(8.0, 5.0, 900.0)]
    wall, mem = bench_fingerprint.fingerprint_results(ours, theirs, "4 x 12x64x64")
    assert (wall.metric, wall.better, wall.target, wall.ratio) == ("wall time", "lower", 0.5, 0.25)
    assert (mem.autoseg, mem.nnunet, mem.target) == (120.0, 900.0, None)
    alone = bench_fingerprint.fingerprint_results(ours, [], "x")
    assert all(r.nnunet is None and r.ratio is None for r in alone)

    wall, cpu, mem = bench_preprocess.preprocess_results(ours, theirs, "4 x 12x64x64")
    assert wall.target == 0.5 and cpu.metric == "CPU time" and cpu.target is None
    assert mem.autoseg == 120.0 and wall.name == "preprocess, 4 x 12x64x64"
    assert bench_preprocess.default_json(True).name == "preprocess_varied.json"

    cfg = bench_dataloader.LoaderConfig(2, (32, 32), 2, name="tiny")
    fast, slow = [{"wall": 0.1, "cpu": 0.1}], [{"wall": 0.2, "cpu": 0.3}]
    rate = bench_dataloader.rate_result("2d", cfg, 0, fast, slow)
    assert (rate.better, rate.target, rate.autoseg, rate.met) == ("higher", 1.0, 10.0, True)
    assert rate.ratio == pytest.approx(2.0) and "3.00" in rate.note


def test_alternate_warms_up_then_swaps_the_order_every_round(tmp_path):
    import os

    from benchmarks import bench_preprocess

    log = tmp_path / "order.txt"

    def cmd(tag):
        code = f"open({str(log)!r}, 'a').write({tag!r})"
        return ([sys.executable, "-c", code], dict(os.environ))

    runs = bench_preprocess.alternate([cmd("a"), cmd("n")], repeats=3)
    # warm-up a, n; then rounds a n | n a | a n
    assert log.read_text() == "an" + "an" + "na" + "an"
    assert [len(r) for r in runs] == [3, 3]
    assert all(wall > 0 and mem >= 0 for r in runs for wall, _, mem in r)


def test_preprocess_benchmark_on_named_datasets(tmp_path, monkeypatch):
    """``--dataset``: converted, planned by autoseg, preprocessed for nnU-Net's default
    configuration of the data (2d here); a dataset whose shared data is absent is skipped and
    said so; without nnU-Net only autoseg's side is written."""
    import json

    from benchmarks import accuracy_cv, bench_preprocess

    monkeypatch.setitem(accuracy_cv.SOURCES, "usgra_seg", tmp_path / "absent_usgra")
    out = tmp_path / "pp.json"
    args = ["--dataset", "usgra_seg", "phantom_us2d", "--workdir", str(tmp_path / "w")]
    args += ["--repeats", "1", "--workers", "0", "--no-resampling"]
    args += ["--nnunet-bin", str(tmp_path / "absent")]
    assert bench_preprocess.main([*args, "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    wall = [f for f in written["results"] if f["metric"] == "wall time"]
    assert [f["name"] for f in wall] == [
        "preprocess, phantom_us2d (30 cases), 2d",
        "fingerprint + plan + preprocess, phantom_us2d (30 cases), 2d",
    ]
    assert wall[1]["autoseg"] > 0 and wall[1]["nnunet"] is None
    assert wall[0]["autoseg"] > 0 and wall[0]["nnunet"] is None
    assert any("skipped, shared data absent: usgra_seg" in n for n in written["notes"])
    pre = tmp_path / "w" / "phantom_us2d" / "autoseg_root" / "preprocessed"
    assert list(pre.glob("*/*/manifest.json"))  # the 2d data really was written


def test_fingerprint_benchmark_measures_each_dataset_and_skips_absent_ones(tmp_path, monkeypatch):
    import json
    import os

    from benchmarks import accuracy_cv, bench_fingerprint

    monkeypatch.setitem(accuracy_cv.SOURCES, "brats2015_subset", tmp_path / "absent_brats")
    out = tmp_path / "fp.json"
    args = ["--dataset", "brats2015_subset", "synthetic", "--cases", "2", "--shape", "8", "32"]
    args += ["32", "--repeats", "1", "--workers", "1", "--workdir", str(tmp_path / "w")]
    args += ["--nnunet-bin", str(tmp_path / "absent"), "--json", str(out)]
    affinity = os.sched_getaffinity(0)
    try:
        assert bench_fingerprint.main([*args, "--cores", str(len(affinity))]) == 0
    finally:
        os.sched_setaffinity(0, affinity)
    written = json.loads(out.read_text())
    wall = [f for f in written["results"] if f["metric"] == "wall time"]
    assert [f["name"] for f in wall] == ["fingerprint, 2 x 8x32x32"]
    assert wall[0]["autoseg"] > 0 and wall[0]["nnunet"] is None
    assert any("skipped, shared data absent: brats2015_subset" in n for n in written["notes"])
    assert any(n.startswith("2 x 8x32x32: autoseg (API") for n in written["notes"])


def test_run_all_runs_accuracy_once_per_dataset_and_skips_absent_data(tmp_path, monkeypatch):
    from benchmarks import accuracy_cv

    assert run_all.runs_of("accuracy", quick=True) == [("accuracy", ())]
    assert run_all.runs_of("training", quick=False) == [("training", ())]
    scripts = tmp_path / "fake_benchmarks"  # a package: run_all starts -m fake_benchmarks.<x>
    scripts.mkdir()
    # writes its --dataset into the --json file it is given
    (scripts / "bench_accuracy.py").write_text(
        "import argparse, json\np = argparse.ArgumentParser()\n"
        'p.add_argument("--json")\np.add_argument("--dataset")\n'
        "a = p.parse_args()\nopen(a.json, 'w').write(json.dumps({'dataset': a.dataset}))\n"
    )
    monkeypatch.setitem(accuracy_cv.SOURCES, "usgra_seg", tmp_path / "absent")
    out = tmp_path / "results"
    statuses = run_all.run_benchmarks(
        ["accuracy"], out, scripts_dir=scripts, python=Path(sys.executable)
    )
    assert [(s.name, s.status) for s in statuses] == [
        ("accuracy_phantom_mri3d", "ok"),
        ("accuracy_usgra_seg", "skipped"),
    ]
    assert json.loads((out / "accuracy_phantom_mri3d.json").read_text()) == {
        "dataset": "phantom_mri3d"
    }
    assert (out / "logs" / "accuracy_phantom_mri3d.log").is_file()
    assert "absent not found" in statuses[1].message


def test_nnunet_commands_plan_untimed_then_give_both_stages(tmp_path, monkeypatch):
    import os
    import stat

    from benchmarks import bench_preprocess

    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.txt"
    for tool in ("nnUNetv2_extract_fingerprint", "nnUNetv2_plan_experiment"):
        stub = bindir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $* threads=$nnUNet_n_proc_DA" >> {log}\n')
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    cmds = bench_preprocess.nnunet_commands(bindir, tmp_path / "raw", 934, "2d", 2, tmp_path)
    assert log.read_text().splitlines() == [
        "nnUNetv2_extract_fingerprint -d 934 -np 2 threads=1",
        "nnUNetv2_plan_experiment -d 934 threads=1",
    ]
    (pre, pre_env), (whole, whole_env) = (cmds[s] for s in bench_preprocess.STAGES)
    assert os.path.basename(pre[0]) == "nnUNetv2_preprocess"
    assert pre[1:] == ["-d", "934", "-c", "2d", "-np", "2"]
    assert os.path.basename(whole[0]) == "nnUNetv2_plan_and_preprocess"
    assert whole[1:] == ["-d", "934", "-c", "2d", "-np", "2", "-npfp", "2", "--clean"]
    assert pre_env["nnUNet_raw"] == str(tmp_path / "raw") and pre_env["nnUNet_n_proc_DA"] == "0"
    assert whole_env["nnUNet_n_proc_DA"] == "1"


def test_every_benchmark_script_runs_as_a_script() -> None:
    """run_all starts ``python -m benchmarks.bench_<name>``: without the ``__main__`` guard
    calling main() a script exits 0 having done nothing (which a refactor once caused)."""
    import ast

    scripts = sorted(run_all.BENCH_DIR.glob("bench_*.py")) + [run_all.BENCH_DIR / "run_all.py"]
    assert len(scripts) >= 7
    for script in scripts:
        tree = ast.parse(script.read_text(encoding="utf-8"))
        guards = [
            node
            for node in tree.body
            if isinstance(node, ast.If)
            and "__main__" in ast.unparse(node.test)
            and "main(" in ast.unparse(node)
        ]
        assert guards, f"{script.name} never calls main() when run"
