"""Run every benchmark against nnU-Net v2, one after another, and collect one report.

    .venv/bin/python -m benchmarks.run_all [--quick] [--only fingerprint,preprocess,...]
        [--device cpu|cuda] [--cpus 1] [--threads 1] [--timeout SECONDS] [--out DIR]
        [--collect-only]

Runs ``benchmarks/bench_<name>.py`` for fingerprint, preprocess, dataloader, training,
inference and accuracy, then ``benchmarks/budget_curve.py`` (test Dice per time budget, with
its ablation: hours of one core) and ``benchmarks/nnunet_peer.py`` (nnU-Net beside its
25-minute runs at the same wall clock) — in that order; ``--only`` picks some — each in its own
process, ``.venv/bin/python -m benchmarks.<script>`` (``--python``; this checkout first on
``PYTHONPATH``) with ``--json <out>/<name>.json``, its output shown and
kept in ``<out>/logs/<name>.log``. The accuracy benchmark runs once per dataset (``PER_DATASET``:
the thigh phantom and usgra-seg, as ``accuracy_<dataset>``; a dataset whose shared data is
absent is skipped). A script that does not exist is skipped with a message; one that fails (or
runs past ``--timeout``) is reported and the next one runs. Options reach only
the scripts whose argparse takes them (read from their source):

* ``--quick``: the smallest sensible settings of each script (a smoke run of minutes; the
  figures are not measurements), written to ``benchmarks/results/quick/`` so that they never
  replace real figures;
* ``--device``: passed as ``--device``;
* ``--cpus LIST`` (taskset syntax, ``1`` or ``0,1``): this process and so every benchmark is
  pinned to those CPUs, scripts with ``--cpus`` get the list, ``bench_fingerprint.py`` gets
  ``--cores N``;
* ``--threads N``: passed as ``--threads`` and set as ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
  for every script.

Then it reads every ``<out>/*.json`` (shape: ``benchmarks/results.py``; malformed files are
named and skipped) and writes, atomically, ``<out>/summary.md`` — one table of every figure
(benchmark, figure, autoseg, nnU-Net, ratio, target, met/MISSED), this run's status of each
script, and per benchmark its date, machine, versions, command and notes — and
``<out>/ratios.png`` (:func:`chart.plot_ratios`). ``--collect-only`` only rebuilds those two.
Exit status 1 when a script failed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as _dt
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks.chart import figure_met, figure_ratio, load_results, plot_ratios
from benchmarks.results import REPO, checkout_env, command_line, parse_cpus

BENCH_DIR = REPO / "benchmarks"

BENCHMARKS = (
    "fingerprint",
    "preprocess",
    "dataloader",
    "training",
    "inference",
    "accuracy",
    "budget_curve",
    "nnunet_peer",
)
# Scripts not named bench_<name>.py
SCRIPTS = {"budget_curve": "budget_curve.py", "nnunet_peer": "nnunet_peer.py"}
RESULTS_DIR = BENCH_DIR / "results"
AUTOSEG_PYTHON = REPO / ".venv" / "bin" / "python"

# Smoke settings per script, each (option, values...), passed only where the script takes the
# option. Taken from each script's argparse and its documented smoke run; a script that has
# its own ``--quick`` gets that instead.
QUICK: dict[str, list[tuple[str, ...]]] = {
    "fingerprint": [
        ("--dataset", "synthetic"),
        ("--cases", "4"),
        ("--shape", "12", "64", "64"),
        ("--repeats", "1"),
        ("--workers", "1"),
    ],
    "preprocess": [
        ("--dataset", "thigh"),
        ("--cases", "4"),
        ("--shape", "12", "64", "64"),
        ("--repeats", "1"),
        ("--workers", "1"),
        ("--no-resampling",),
    ],
    "dataloader": [("--batches", "3"), ("--repeats", "1"), ("--workers", "0"), ("--only", "thigh")],
    "training": [
        ("--only", "3d", "2d"),
        ("--cases", "4"),
        ("--frames", "4"),
        ("--iterations", "5"),
        ("--warmup", "1"),
        ("--repeats", "1"),
        ("--max-voxels", "200000"),
    ],
    "inference": [
        ("--cases", "3"),
        ("--folds", "0"),
        ("--train-epochs", "1"),
        ("--train-iterations", "20"),
        ("--repeats", "1"),
    ],
    "accuracy": [
        ("--dataset", "phantom_mri3d"),
        ("--cases", "10"),
        ("--fold-budget", "1m"),
        ("--folds", "0"),
    ],
    "budget_curve": [("--dataset", "phantom_mri3d"), ("--budgets", "2m")],
    "nnunet_peer": [("--dataset", "phantom_mri3d"), ("--budget", "2m")],
}


# Benchmarks that run once per dataset (not in --quick runs, which keep to QUICK's settings):
# (suffix of the run's name, JSON and log; the script's options). A real dataset whose shared
# data is absent is skipped and said so.
PER_DATASET: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "accuracy": [
        ("phantom_mri3d", ("--dataset", "phantom_mri3d")),
        ("usgra_seg", ("--dataset", "usgra_seg")),
    ],
    # beside budget_curve's 25-minute runs (its default --work), at the same wall clock
    "nnunet_peer": [
        ("usgra_seg", ("--dataset", "usgra_seg", "--budget", "25m")),
        ("phantom_mri3d", ("--dataset", "phantom_mri3d", "--budget", "25m")),
    ],
}


def runs_of(name: str, quick: bool) -> list[tuple[str, tuple[str, ...]]]:
    """``(run name, extra options)`` of one benchmark: one run, or one per dataset."""
    if quick or name not in PER_DATASET:
        return [(name, ())]
    return [(f"{name}_{suffix}", extra) for suffix, extra in PER_DATASET[name]]


@dataclass
class RunStatus:
    """What happened to one benchmark in this run (for the console and the summary)."""

    name: str
    status: str  # "ok" | "skipped" | "failed" | "no results"
    seconds: float = 0.0
    message: str = ""
    command: str = ""


# --------------------------------------------------------------------------- commands
def script_options(script: Path) -> set[str]:
    """Long options a script's argparse declares (every ``*.add_argument("--x", ...)`` in its
    source), read without running it: importing a benchmark costs seconds of torch import."""
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return set()
    options = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
        ):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("--"):
                    options.add(str(arg.value))
    return options


def build_command(
    name: str,
    script: Path,
    python: Path,
    json_path: Path,
    *,
    quick: bool = False,
    device: str | None = None,
    cpus: str | None = None,
    threads: int | None = None,
) -> tuple[list[str], list[str]]:
    """``(command, messages)`` for one benchmark: ``python -m <package>.<script>`` (the
    package is the script's folder, ``benchmarks``), with only the options the script
    declares, and each setting it cannot take said in ``messages`` (so a run never dies of an
    unknown option, and the reader knows what was not applied)."""
    options = script_options(script)
    cmd = [str(python), "-m", f"{script.parent.name}.{script.stem}"]
    messages = []
    if "--json" in options:
        cmd += ["--json", str(json_path)]
    else:
        messages.append("takes no --json: its figures are not collected")
    if quick:
        if "--quick" in options:
            cmd.append("--quick")
        else:
            wanted = QUICK.get(name, [])
            cmd += [v for opt in wanted if opt[0] in options for v in opt]
            missing = [opt[0] for opt in wanted if opt[0] not in options]
            if missing:
                messages.append(f"quick: ignores {' '.join(missing)} (not its options)")
    if device is not None:
        if "--device" in options:
            cmd += ["--device", device]
        elif device != "cpu":  # the scripts without it run on the CPU only
            messages.append(f"takes no --device: runs on its default, not {device}")
    if cpus is not None:
        if "--cpus" in options:
            cmd += ["--cpus", cpus]
        elif "--cores" in options:
            cmd += ["--cores", str(len(parse_cpus(cpus)))]
    if threads is not None and "--threads" in options:
        cmd += ["--threads", str(threads)]
    return cmd, messages


def run_logged(
    cmd: Sequence[str], log_path: Path, env: dict[str, str], timeout: float | None
) -> int:
    """Run ``cmd`` with its output shown live and copied to ``log_path``; its exit status, or
    -9 when it ran past ``timeout`` seconds (then its whole process group is ended: nnU-Net's
    worker processes too)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            list(cmd),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # its own process group, so a timeout ends all of it
        )
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(timeout, stop) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
            proc.wait()
        except KeyboardInterrupt:
            _kill_group(proc)
            raise
        finally:
            if timer is not None:
                timer.cancel()
    return -9 if timed_out.is_set() else proc.returncode


def _kill_group(proc: subprocess.Popen) -> None:
    """End the process group this harness started for one script (its own id, nothing else)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_benchmarks(
    names: Sequence[str],
    out: Path,
    *,
    scripts_dir: Path = BENCH_DIR,
    python: Path = AUTOSEG_PYTHON,
    quick: bool = False,
    device: str | None = None,
    cpus: str | None = None,
    threads: int | None = None,
    timeout: float | None = None,
) -> list[RunStatus]:
    """Run the named benchmarks one after another, each as a module of the package
    ``scripts_dir`` (its parent first on ``PYTHONPATH``, then this checkout); a missing or
    failing script is reported and skipped, never the end of the run."""
    env = checkout_env(dict(os.environ, PYTHONUNBUFFERED="1"), Path(scripts_dir).resolve().parent)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    from benchmarks.accuracy_cv import missing_source

    statuses = []
    runs = [(name, run, extra) for name in names for run, extra in runs_of(name, quick)]
    for i, (name, run, extra) in enumerate(runs, 1):
        script = scripts_dir / SCRIPTS.get(name, f"bench_{name}.py")
        head = f"[{i}/{len(runs)}] {run}"
        missing = missing_source(extra[1]) if extra[:1] == ("--dataset",) else None
        if not script.is_file() or missing is not None:
            msg = f"{script} does not exist (yet)" if missing is None else f"{missing} not found"
            print(f"\n=== {head}: skipped, {msg}", flush=True)
            statuses.append(RunStatus(run, "skipped", message=msg))
            continue
        json_path = out / f"{run}.json"
        cmd, messages = build_command(
            name,
            script,
            python,
            json_path,
            quick=quick,
            device=device,
            cpus=cpus,
            threads=threads,
        )
        cmd += extra
        shown = shlex.join(cmd)
        print(f"\n=== {head}: {shown}", flush=True)
        for message in messages:
            print(f"    note: {run} {message}", flush=True)
        before = json_path.stat().st_mtime if json_path.exists() else None
        t0 = time.perf_counter()
        log = out / "logs" / f"{run}.log"
        rc = run_logged(cmd, log, env, timeout)
        seconds = time.perf_counter() - t0
        wrote = json_path.exists() and json_path.stat().st_mtime != before
        if rc != 0:
            why = f"timed out after {timeout:g} s" if rc == -9 else f"exit status {rc}"
            status = RunStatus(run, "failed", seconds, f"{why}; log: {log}", shown)
        elif not wrote and "--json" in script_options(script):
            status = RunStatus(run, "no results", seconds, f"wrote no {json_path.name}", shown)
        else:
            status = RunStatus(run, "ok", seconds, "; ".join(messages), shown)
        print(f"=== {run}: {status.status} in {seconds:.0f} s {status.message}".rstrip())
        statuses.append(status)
    return statuses


# --------------------------------------------------------------------------- report
def collect_results(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every ``*.json`` result file in ``folder`` in benchmark order (then by name), and the
    problems of those skipped as malformed."""
    files, problems = load_results(folder.glob("*.json"))
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    files.sort(key=lambda d: (order.get(d["benchmark"], len(order)), d["benchmark"], d["_path"]))
    return files, problems


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(value: Any) -> str:
    return "–" if not isinstance(value, int | float) or isinstance(value, bool) else f"{value:.4g}"


def figure_row(benchmark: str, fig: dict[str, Any]) -> list[str]:
    """The summary table's cells for one figure: name without the benchmark prefix, metric and
    unit, both medians, the ratio, the target with its direction and the verdict."""
    name = str(fig.get("name", ""))
    if name.lower().startswith(benchmark.lower() + ","):
        name = name[len(benchmark) + 1 :].strip()
    unit = f" [{fig['unit']}]" if fig.get("unit") else ""
    ratio = figure_ratio(fig)
    target = fig.get("target")
    sign = "≥" if fig.get("better") == "higher" else "≤"
    target_text = "–" if target is None else f"{sign} {target:g}"
    met = figure_met(fig)
    if ratio is None:
        verdict = "no comparison"
    else:
        verdict = {True: "met", False: "**MISSED**", None: "–"}[met]
    return [
        benchmark,
        f"{name}: {fig.get('metric', '')}{unit}",
        _num(fig.get("autoseg")),
        _num(fig.get("nnunet")),
        "–" if ratio is None else f"{ratio:.3g}",
        target_text,
        verdict,
    ]


def _machine(machine: dict[str, Any]) -> str:
    if not machine:
        return "–"
    parts = []
    if machine.get("cpus"):
        parts.append(f"{machine['cpus']} CPUs (affinity {machine.get('affinity')})")
    if machine.get("cpu_model"):
        parts.append(str(machine["cpu_model"]))
    if machine.get("memory_gib"):
        parts.append(f"{machine['memory_gib']} GiB")
    parts.append(f"GPU {machine['gpu']}" if machine.get("gpu") else "no GPU")
    if machine.get("omp_num_threads"):
        parts.append(f"OMP_NUM_THREADS={machine['omp_num_threads']}")
    for key in ("platform", "python"):
        if machine.get(key):
            parts.append(f"{key} {machine[key]}")
    return ", ".join(parts) or "–"


def summary_markdown(
    files: Sequence[dict[str, Any]],
    problems: Sequence[str],
    statuses: Sequence[RunStatus] = (),
    *,
    command: str = "",
    quick: bool = False,
    started: float | None = None,
) -> str:
    """The report: one table of every figure, then this run's status per script, then each
    benchmark's date, machine, versions, command and notes, then the skipped files. Files
    older than ``started`` (not rewritten by this run) are marked as earlier results."""
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    lines = ["# Benchmarks: autoseg vs nnU-Net v2", ""]
    lines.append(f"Written {now}" + (f" by `{command}`" if command else "") + ".")
    if quick:
        lines.append("**Quick smoke settings: these figures are not measurements.**")
    lines += [
        "",
        "Both systems were measured in the same run of each benchmark on the same machine and "
        "data; *ratio* is autoseg / nnU-Net of the medians, *target* the ratio the issue asks "
        "for (≤ for times and memory, ≥ for rates and scores). Chart: `ratios.png`.",
        "",
        "| benchmark | figure | autoseg | nnU-Net | ratio | target | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for data in files:
        for fig in data["results"]:
            cells = figure_row(data["benchmark"], fig)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if not any(d["results"] for d in files):
        lines.append("| – | no results collected | | | | | |")
    if statuses:
        lines += [
            "",
            "## This run",
            "",
            "| benchmark | status | time | note |",
            "|---|---|---|---|",
        ]
        for s in statuses:
            took = f"{s.seconds:.0f} s" if s.seconds else "–"
            lines.append(f"| {s.name} | {s.status} | {took} | {_cell(s.message) or '–'} |")
    lines += ["", "## Details"]
    for data in files:
        path = Path(data["_path"])
        stale = started is not None and path.stat().st_mtime < started
        lines += ["", f"### {data['benchmark']} (`{path.name}`)", ""]
        if stale:
            lines.append("- **from an earlier run** (not rewritten by this one)")
        lines.append(f"- date: {data.get('date', '–')}")
        lines.append(f"- command: `{data.get('command', '–')}`")
        lines.append(f"- machine: {_machine(data.get('machine') or {})}")
        vers = data.get("versions") or {}
        lines.append("- versions: " + (", ".join(f"{k} {v}" for k, v in vers.items()) or "–"))
        for note in data.get("notes") or []:
            lines.append(f"- note: {note}")
        for fig in data["results"]:
            if fig.get("note"):
                lines.append(f"- {fig['name']}: {fig['note']}")
    if problems:
        lines += ["", "## Skipped result files", ""]
        lines += [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


def write_text_atomic(path: Path, text: str) -> Path:
    """Temp file in the same folder, then rename: a reader never sees half a summary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def report(
    out: Path,
    statuses: Sequence[RunStatus] = (),
    *,
    command: str = "",
    quick: bool = False,
    started: float | None = None,
) -> tuple[Path, Path]:
    """Collect ``out/*.json`` and write ``summary.md`` and ``ratios.png`` there."""
    files, problems = collect_results(out)
    for problem in problems:
        print(f"skipped result file {problem}")
    text = summary_markdown(
        files, problems, statuses, command=command, quick=quick, started=started
    )
    summary = write_text_atomic(out / "summary.md", text)
    title = "autoseg vs nnU-Net v2 — quick smoke settings, not measurements" if quick else None
    chart = plot_ratios(files, out / "ratios.png", title=title)
    return summary, chart


def parse_only(text: str | None) -> list[str]:
    """``"fingerprint,preprocess"`` (commas or spaces) -> names in the harness's order."""
    if not text:
        return list(BENCHMARKS)
    wanted = {t for t in text.replace(",", " ").split() if t}
    unknown = wanted - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(BENCHMARKS)}")
    return [b for b in BENCHMARKS if b in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smallest settings: a smoke run")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="for scripts that take it")
    parser.add_argument("--cpus", help="pin to these CPUs (taskset list, e.g. 1 or 0,1)")
    parser.add_argument("--threads", type=int, help="math threads per process")
    parser.add_argument("--timeout", type=float, help="seconds per script before it is stopped")
    parser.add_argument(
        "--out", type=Path, help="results folder (default benchmarks/results, quick: .../quick)"
    )
    parser.add_argument("--python", type=Path, help="interpreter (default .venv/bin/python)")
    parser.add_argument("--scripts-dir", type=Path, default=BENCH_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--collect-only", action="store_true", help="only rebuild the report")
    args = parser.parse_args(argv)
    try:
        names = parse_only(args.only)
        cpus = parse_cpus(args.cpus) if args.cpus else None
    except ValueError as err:
        parser.error(str(err))
    out = args.out or (RESULTS_DIR / "quick" if args.quick else RESULTS_DIR)
    python = args.python or (AUTOSEG_PYTHON if AUTOSEG_PYTHON.exists() else Path(sys.executable))
    if cpus is not None:
        os.sched_setaffinity(0, cpus)  # every benchmark inherits it
    command = shlex.join(command_line()) if argv is None else ""
    started = time.time()
    statuses: list[RunStatus] = []
    if not args.collect_only:
        statuses = run_benchmarks(
            names,
            out,
            scripts_dir=args.scripts_dir,
            python=python,
            quick=args.quick,
            device=args.device,
            cpus=args.cpus,
            threads=args.threads,
            timeout=args.timeout,
        )
    summary, chart = report(
        out,
        statuses,
        command=command,
        quick=args.quick,
        started=None if args.collect_only else started,
    )
    print(f"\nsummary: {summary}\nchart:   {chart}")
    for s in statuses:
        print(f"  {s.name:12s} {s.status:10s} {s.message}")
    return 1 if any(s.status == "failed" for s in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
