"""Every GPU question in one call: ``make gpu-check`` (or this script under ``.venv``).

    .venv/bin/python -m benchmarks.gpu_check [--only tests,memory,predict,bench]
        [--skip bench] [--budget 480] [--out benchmarks/results/gpu_check]

Without a CUDA GPU it says why in one line and exits with status 2. Otherwise it runs these
steps, each in its own process (its output shown and kept in ``<out>/logs/<step>.log``), and
prints one summary at the end — every check passed / failed / skipped, its figure and its
target — also written to ``<out>/summary.txt``. Exit status 1 when a check failed.

* ``tests``: ``pytest -m gpu`` — every test marked ``gpu`` (tests/test_memory.py: the memory
  estimate of two fixed networks within 15 % of ``torch.cuda.max_memory_allocated``). Passed
  when they all pass and none is skipped.
* ``memory``: the planner's memory estimate of autoseg's real training step against the step's
  measured ``torch.cuda.max_memory_allocated``, for the golden GPU plan of the sciatic-nerve MRI
  geometry (``plans/sciatic_mri_320x320x60.plans.json``: ``3d_fullres`` 40x192x256 batch 2 and
  ``2d`` 320x320 batch 48, planned for 8 GB). ``Trainer.train_step`` with the plan's optimizer,
  AMP and deep supervision on random batches of the planned shape, eager (``compile="off"``:
  the estimator models the eager step, and compiling would cost minutes of the budget); the
  peak of the second step (the first makes the momentum buffers). Target: estimate / measured
  within 1 +- 0.15 (``bench_training.ESTIMATE_TOLERANCE``). Seconds per iteration of 10 more
  steps are reported beside it.
* ``predict``: ``Predictor.predict`` (preprocessing, sliding window with mirroring TTA, AMP,
  inversion, argmax, quality flags — everything of ``autoseg predict`` but file I/O) of one
  320x320x60 MRI volume at 0.52x0.52x4.4 mm with that plan's ``3d_fullres`` network (one fold,
  random weights: the time does not depend on them). One untimed call (cuDNN tuning), then the
  median of 3. Target: < 1 s per volume (documentation/benchmarks.md).
* ``bench``: ``run_all.py``'s quick settings of the training and inference benchmarks on
  ``--device cuda`` (autoseg and nnU-Net side by side; results in ``<out>/bench``). Needs
  ``.venv-bench`` (``make bench-venv``, which downloads nnU-Net): without it the step is skipped
  and says so; the steps above need only ``.venv``. Quick figures are smoke, not measurements:
  the step passes when both scripts run; their ratios are shown beside.

The whole run is held to ``--budget`` seconds (default 480): each step gets its own limit or
what is left, whichever is less, and a step past it is stopped and counted as failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks.results import REPO, checkout_env, module_command

BENCH_DIR = REPO / "benchmarks"
STEPS = ("tests", "memory", "predict", "bench")
# Seconds each step may take at most (the whole run: --budget). On an H100 the first three
# should need well under a minute each; the bench step gets whatever is left.
STEP_LIMITS = {"tests": 120.0, "memory": 120.0, "predict": 90.0, "bench": None}
DEFAULT_BUDGET_S = 480.0
MIN_STEP_S = 20.0  # a step that would get less than this is skipped, not started
TARGETS = {
    "tests": "all pass, none skipped",
    "memory": "estimate / measured within 1 +- 0.15",
    "predict": "< 1 s per volume",
    "bench": "both scripts run on cuda (quick: smoke, not measurements)",
}
GOLDEN_PLAN = REPO / "plans" / "sciatic_mri_320x320x60.plans.json"
MEMORY_CONFIGS = ("3d_fullres", "2d")
PREDICT_CONFIG = "3d_fullres"
PREDICT_SHAPE, PREDICT_SPACING = (60, 320, 320), (4.4, 0.52, 0.52)  # the plan's geometry, zyx
PREDICT_TARGET_S = 1.0
PREDICT_REPEATS = 3
TIMED_ITERATIONS = 10
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
BENCH_SCRIPTS = ("training", "inference")
STATUSES = ("passed", "failed", "skipped")


@dataclass
class Check:
    """One line of the summary."""

    name: str
    status: str  # one of STATUSES
    figure: str = "-"
    target: str = "-"
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")


# --------------------------------------------------------------------------- pure helpers
def select_steps(only: str | None, skip: str | None) -> list[str]:
    """The steps to run, in :data:`STEPS` order: ``only`` (comma-separated) or all, less
    ``skip``. Unknown names raise ``ValueError`` naming the known ones."""

    def names(text: str | None) -> list[str]:
        out = [n.strip() for n in (text or "").split(",") if n.strip()]
        bad = [n for n in out if n not in STEPS]
        if bad:
            raise ValueError(f"unknown step {bad[0]!r} (steps: {', '.join(STEPS)})")
        return out

    chosen = set(names(only)) or set(STEPS)
    chosen -= set(names(skip))
    if not chosen:
        raise ValueError("no step left to run")
    return [s for s in STEPS if s in chosen]


def cuda_problem(torch_version: str, cuda_version: str | None, available: bool, count: int):
    """``None`` when a CUDA GPU can be used, else the one line saying why not."""
    if cuda_version is None:
        return (
            f"gpu-check: no GPU check possible: torch {torch_version} in this environment is "
            "built without CUDA (install a CUDA build of torch into .venv)"
        )
    if not available or count < 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = "" if visible is None else f"; CUDA_VISIBLE_DEVICES={visible!r}"
        return (
            f"gpu-check: no GPU check possible: torch {torch_version} (CUDA {cuda_version}) "
            f"sees no CUDA device{where}"
        )
    return None


def step_timeout(step: str, remaining_s: float) -> float | None:
    """Seconds the step may run: its own limit or what is left of the budget, whichever is
    less; ``None`` when too little is left to start it."""
    limit = STEP_LIMITS[step]
    allowed = remaining_s if limit is None else min(limit, remaining_s)
    return allowed if allowed >= MIN_STEP_S else None


def pytest_counts(output: str) -> dict[str, int]:
    """Counts of pytest's final line (``2 passed, 1 skipped, 380 deselected in 9.1s``)."""
    counts: dict[str, int] = {}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed)", output):
        key = "error" if what.startswith("error") else what
        counts[key] = counts.get(key, 0) + int(n)
    return counts


def tests_check(returncode: int, output: str) -> Check:
    c = pytest_counts(output)
    shown = ", ".join(f"{v} {k}" for k, v in c.items() if k != "deselected") or "no tests ran"
    ok = returncode == 0 and c.get("passed", 0) > 0 and not c.get("skipped")
    detail = "" if ok else f"pytest exit status {returncode}"
    if c.get("skipped"):
        detail += "; a skipped GPU test means CUDA was not usable in pytest"
    status = "passed" if ok else "failed"
    return Check("gpu tests (pytest -m gpu)", status, shown, TARGETS["tests"], detail.strip("; "))


def memory_verdict(config: str, shape: str, estimate_mb: float, peak_mb: float, s_per_it: float):
    from benchmarks.bench_training import ESTIMATE_TOLERANCE

    ratio = estimate_mb / peak_mb
    ok = abs(ratio - 1) <= ESTIMATE_TOLERANCE
    return Check(
        f"memory estimate {config} {shape}",
        "passed" if ok else "failed",
        f"{estimate_mb:.0f} / {peak_mb:.0f} MB = {ratio:.2f}",
        TARGETS["memory"],
        f"training step {s_per_it:.3f} s/it (eager, AMP)",
    )


def predict_verdict(seconds: Sequence[float], first_s: float, tta: bool) -> Check:
    median = statistics.median(seconds)
    z, y, x = PREDICT_SHAPE
    return Check(
        f"predict {x}x{y}x{z} MRI, {PREDICT_CONFIG}",
        "passed" if median < PREDICT_TARGET_S else "failed",
        f"{median:.2f} s",
        TARGETS["predict"],
        f"median of {len(seconds)}, mirroring TTA {'on' if tta else 'off'}; first call "
        f"{first_s:.2f} s (cuDNN tuning)",
    )


def bench_checks(statuses: Sequence[Any], figures: Sequence[dict[str, Any]]) -> list[Check]:
    """One check per benchmark script of the quick run: passed when it ran, with the ratios
    of its figures (autoseg / nnU-Net and the verdict against the target) as its figure."""
    from benchmarks.chart import figure_met, figure_ratio

    checks = []
    for s in statuses:
        ratios = []
        for fig in figures:
            if s.status != "ok" or fig.get("benchmark") != s.name:
                continue
            ratio = figure_ratio(fig)
            if ratio is None:
                continue
            verdict = {True: "met", False: "missed", None: "no target"}[figure_met(fig)]
            ratios.append(f"{fig.get('metric', '?')} {ratio:.2g} ({verdict})")
        status = {"ok": "passed", "skipped": "skipped"}.get(s.status, "failed")
        figure = "; ".join(ratios[:3]) + (f" (+{len(ratios) - 3})" if len(ratios) > 3 else "")
        name = f"bench {s.name} (quick, vs nnU-Net)"
        checks.append(Check(name, status, figure or "-", TARGETS["bench"], s.message))
    return checks


def bench_skipped(reason: str) -> Check:
    return Check("bench (quick, vs nnU-Net)", "skipped", "-", TARGETS["bench"], reason)


def format_summary(checks: Sequence[Check], header: str, seconds: float, budget: float) -> str:
    """The one summary: a table of every check (name, status, figure, target), its details,
    and the overall verdict."""
    rows = [("check", "status", "figure", "target")]
    for c in checks:
        rows.append((c.name, "FAILED" if c.status == "failed" else c.status, c.figure, c.target))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["", "=" * 78, f"GPU check summary: {header}"]
    lines.append(f"{seconds:.0f} s of the {budget:.0f} s budget")
    for r in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths)) + "  " + r[3])
    details = [f"  {c.name}: {c.detail}" for c in checks if c.detail]
    if details:
        lines += ["details:", *details]
    n = {s: sum(c.status == s for c in checks) for s in STATUSES}
    verdict = "FAILED" if n["failed"] else "passed"
    lines.append(
        f"overall: {verdict} ({n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped)"
    )
    lines.append("=" * 78)
    return "\n".join(lines)


def exit_status(checks: Sequence[Check]) -> int:
    return 1 if any(c.status == "failed" for c in checks) else 0


# --------------------------------------------------------------------------- steps (on CUDA)
def _golden_plan() -> Any:
    from autoseg.planning.plan import plan_from_dict

    return plan_from_dict(json.loads(GOLDEN_PLAN.read_text(encoding="utf-8")), GOLDEN_PLAN)


def step_tests(out: Path) -> list[Check]:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace"
    )
    sys.stdout.write(proc.stdout + proc.stderr)
    return [tests_check(proc.returncode, proc.stdout + proc.stderr)]


def _random_batch(setup: Any, batch: int, rng: Any) -> dict[str, Any]:
    import numpy as np

    channels = int(setup.arch["in_channels"])
    data = rng.standard_normal((batch, channels, *setup.patch_size), dtype=np.float32)
    target = rng.integers(0, setup.num_classes, (batch, 1, *setup.patch_size), dtype=np.int64)
    return {"data": data, "target": target}


def measure_training_step(plan: Any, config: str, work: Path) -> Check:
    """Estimate vs measured CUDA peak of one real training step (see the module docstring)."""
    import numpy as np
    import torch

    from autoseg.training.run import options_from_plan, setup_from_plan
    from autoseg.training.trainer import Trainer
    from benchmarks.bench_training import planner_estimate_mb

    setup = setup_from_plan(plan, config, work / "unused")
    options = options_from_plan(plan, config, device="cuda", compile="off", progress=False)
    trainer = Trainer(setup, options, ["a"], ["b"], work / config, loader_factory=None)
    batch = _random_batch(setup, trainer.local_batch, np.random.default_rng(0))
    trainer.model.train()
    trainer.train_step(batch)  # momentum buffers, cuDNN autotuning
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    trainer.train_step(batch)
    torch.cuda.synchronize()
    peak_mb = torch.cuda.max_memory_allocated() / 2**20
    t0 = time.perf_counter()
    for _ in range(TIMED_ITERATIONS):
        trainer.train_step(batch)
    torch.cuda.synchronize()
    s_per_it = (time.perf_counter() - t0) / TIMED_ITERATIONS
    estimate_mb = planner_estimate_mb(
        setup.arch, setup.patch_size, trainer.local_batch, options.optimizer
    )
    shape = f"{'x'.join(map(str, setup.patch_size))} batch {trainer.local_batch}"
    del trainer, batch
    torch.cuda.empty_cache()
    return memory_verdict(config, shape, estimate_mb, peak_mb, s_per_it)


def step_memory(out: Path) -> list[Check]:
    """One check per configuration; one that fails to run (out of memory, say) is a failed
    check with the error, and the others still run."""
    import torch

    plan = _golden_plan()
    checks = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for config in MEMORY_CONFIGS:
            try:
                checks.append(measure_training_step(plan, config, Path(tmp)))
            except Exception as err:  # out of memory, say: this check fails, the next runs
                name = f"memory estimate {config}"
                why = f"{type(err).__name__}: {str(err)[:300]}"
                checks.append(Check(name, "failed", "-", TARGETS["memory"], why))
                torch.cuda.empty_cache()
    return checks


def step_predict(out: Path) -> list[Check]:
    import numpy as np
    import torch

    from autoseg.inference.predictor import FoldModel, Predictor
    from autoseg.io import Geometry
    from autoseg.networks import build_network

    plan = _golden_plan()
    cfg = plan.configurations[PREDICT_CONFIG]
    torch.manual_seed(0)
    net = build_network(dict(cfg.architecture)).to("cuda").eval()
    models = {PREDICT_CONFIG: [FoldModel(PREDICT_CONFIG, 0, net)]}
    predictor = Predictor(plan, models, device="cuda")
    shape, spacing = PREDICT_SHAPE, PREDICT_SPACING
    rng = np.random.default_rng(0)
    image = rng.normal(300, 80, (1, *shape)).astype(np.float32)
    geometry = Geometry.default(shape, spacing)

    def once() -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        predictor.predict(image, geometry)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    first = once()
    seconds = [once() for _ in range(PREDICT_REPEATS)]
    return [predict_verdict(seconds, first, predictor.tta)]


def step_bench(out: Path, seconds_left: float) -> list[Check]:
    if not BENCH_PYTHON.exists():
        return [
            bench_skipped(
                f"{BENCH_PYTHON.relative_to(REPO)} absent (make bench-venv downloads nnU-Net): "
                "no nnU-Net comparison; the checks above need only .venv"
            )
        ]
    from benchmarks import run_all

    folder = out / "bench"
    started = time.time()
    per_script = max(MIN_STEP_S, (seconds_left - 15) / len(BENCH_SCRIPTS))
    statuses = run_all.run_benchmarks(
        BENCH_SCRIPTS, folder, quick=True, device="cuda", timeout=per_script
    )
    run_all.report(folder, statuses, command="gpu_check.py bench", quick=True, started=started)
    files, _ = run_all.collect_results(folder)
    from benchmarks.chart import flatten

    return bench_checks(statuses, flatten(files))


def run_step(step: str, out: Path, seconds_left: float) -> list[Check]:
    """A step's checks, in this process (the child started by :func:`main`)."""
    if step == "tests":
        return step_tests(out)
    if step == "memory":
        return step_memory(out)
    if step == "predict":
        return step_predict(out)
    if step == "bench":
        return step_bench(out, seconds_left)
    raise ValueError(step)


def _child(step: str, result: Path, out: Path, seconds_left: float) -> int:
    checks = run_step(step, out, seconds_left)
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(c) for c in checks]), encoding="utf-8")
    tmp.replace(result)
    return 0


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def run_step_process(step: str, out: Path, timeout: float) -> list[Check]:
    """Run one step in its own process (CUDA memory and a crash stay there) within
    ``timeout`` seconds; a crash or time-out becomes a failed check with the log's tail."""
    from benchmarks.run_all import run_logged

    result = out / f"{step}.result.json"
    result.unlink(missing_ok=True)
    log = out / "logs" / f"{step}.log"
    cmd = module_command(sys.executable, "gpu_check", "--step", step, "--result", result)
    cmd += ["--out", str(out), "--seconds-left", f"{timeout:.0f}"]
    rc = run_logged(cmd, log, checkout_env(dict(os.environ, PYTHONUNBUFFERED="1")), timeout)
    if rc == 0 and result.is_file():
        return [Check(**c) for c in json.loads(result.read_text(encoding="utf-8"))]
    why = f"timed out after {timeout:.0f} s" if rc == -9 else f"exit status {rc}"
    return [Check(step, "failed", "-", TARGETS[step], f"{why}; {_tail(log)}; log: {log}")]


def _cuda_header() -> tuple[str | None, str]:
    import torch

    problem = cuda_problem(
        torch.__version__,
        torch.version.cuda,
        torch.cuda.is_available(),
        torch.cuda.device_count() if torch.cuda.is_available() else 0,
    )
    if problem is not None:
        return problem, ""
    name = torch.cuda.get_device_name(0)
    return None, f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--skip", help="comma-separated steps not to run")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds in all")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "gpu_check")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds-left", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step is not None:
        return _child(args.step, args.result, args.out, args.seconds_left)
    try:
        steps = select_steps(args.only, args.skip)
    except ValueError as err:
        parser.error(str(err))
    problem, header = _cuda_header()
    if problem is not None:
        print(problem)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    checks: list[Check] = []
    for i, step in enumerate(steps, 1):
        remaining = args.budget - (time.perf_counter() - t0)
        timeout = step_timeout(step, remaining)
        if timeout is None:
            why = f"only {remaining:.0f} s of the budget left"
            checks.append(Check(step, "skipped", "-", TARGETS[step], why))
            continue
        print(f"\n=== [{i}/{len(steps)}] {step} (at most {timeout:.0f} s)", flush=True)
        checks += run_step_process(step, args.out, timeout)
    summary = format_summary(checks, header, time.perf_counter() - t0, args.budget)
    try:
        print(summary)
    except UnicodeEncodeError:  # a log tail in a detail, on an ASCII console
        print(summary.encode("ascii", "replace").decode("ascii"))
    (args.out / "summary.txt").write_text(summary.lstrip() + "\n", encoding="utf-8")
    return exit_status(checks)


if __name__ == "__main__":
    sys.exit(main())
