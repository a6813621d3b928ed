"""One JSON shape for every benchmark's results, so ``make bench`` can collect and chart them.

Each script writes (``--json PATH``)::

    {"benchmark": "training", "date": "2026-11-24T10:00:00+00:00", "command": "...",
     "machine": {...}, "versions": {...}, "notes": ["what was not equal", ...],
     "results": [{"name": "3D phantom, autoseg plan", "metric": "iterations per second",
                  "unit": "it/s", "autoseg": 1.9, "nnunet": 1.2, "ratio": 1.58,
                  "better": "higher", "target": 1.0, "met": true,
                  "runs": {"autoseg": [...], "nnunet": [...]}}, ...]}

``ratio`` is always autoseg / nnU-Net of the medians; ``better`` says which direction wins
(``higher`` for rates and Dice, ``lower`` for times and memory) and ``target`` is the ratio the
issue asks for (e.g. ``0.5`` for inference time, ``1.0`` for a rate), so ``met`` needs no
knowledge of the metric.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "benchmarks"  # every script runs as ``python -m benchmarks.<name>`` from REPO


@dataclass
class Result:
    """One compared figure: medians of both systems, their ratio and whether it met the target."""

    name: str
    metric: str
    unit: str
    autoseg: float | None
    nnunet: float | None
    better: str  # "higher" or "lower"
    target: float | None = None
    runs: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.autoseg is None or self.nnunet is None or self.nnunet == 0:
            return None
        return self.autoseg / self.nnunet

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.target is None:
            return None
        return self.ratio >= self.target if self.better == "higher" else self.ratio <= self.target

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["met"] = self.met
        return data


def from_runs(
    name: str,
    metric: str,
    unit: str,
    autoseg_runs: Sequence[float],
    nnunet_runs: Sequence[float],
    better: str,
    target: float | None = None,
    note: str = "",
) -> Result:
    """A :class:`Result` from repeated measurements: medians are robust to the one run another
    job on the machine slowed down."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better: expected 'higher' or 'lower', got {better!r}")
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    return Result(
        name,
        metric,
        unit,
        med(list(autoseg_runs)),
        med(list(nnunet_runs)),
        better,
        target,
        {"autoseg": list(autoseg_runs), "nnunet": list(nnunet_runs)},
        note,
    )


def parse_cpus(text: str) -> list[int]:
    """``"1"``, ``"0,1"`` or ``"0-3"`` -> sorted CPU numbers (taskset's list syntax), so that
    both systems' processes can be pinned to the same cores."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(v) for v in part.split("-", 1))
            if hi < lo:
                raise ValueError(f"bad CPU range {part!r}")
            cpus.update(range(lo, hi + 1))
        else:
            cpus.add(int(part))
    if not cpus or min(cpus) < 0:
        raise ValueError(f"no CPUs in {text!r}")
    return sorted(cpus)


def math_threads_env(base: dict[str, str], threads: int) -> dict[str, str]:
    """``base`` with every math library (OpenMP, MKL, OpenBLAS) held to ``threads``, the same
    for both systems' processes."""
    env = dict(base)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def module_command(python: str | Path, name: str, *args: str | Path) -> list[str]:
    """``python -m benchmarks.<name> args``: how a benchmark starts another benchmark script (or
    itself, for one measured step), always as a module of the package, never by file path."""
    return [str(python), "-m", f"{PACKAGE}.{name}", *(str(a) for a in args)]


def command_line() -> list[str]:
    """This process's command as typed, for the record: ``python -m benchmarks.<name> ARGS``
    when it runs as a module (``sys.argv[0]`` is then the file's full path, which started as a
    file would not work), else ``python ARGV``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["-m", spec.name] if spec is not None and spec.name else sys.argv[:1]
    return [Path(sys.executable).name, *head, *sys.argv[1:]]


def checkout_env(base: Mapping[str, str], *first: str | Path) -> dict[str, str]:
    """``base`` with this checkout (and any folders in ``first``, before it) at the front of
    ``PYTHONPATH``: a child process, of either virtual environment and in any working folder,
    imports ``benchmarks`` and ``autoseg`` from the same checkout as its parent, not from an
    installed copy or another worktree. Entries already there stay, after these."""
    front = [str(Path(p)) for p in (*first, REPO)]
    rest = [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p and p not in front]
    return {**base, "PYTHONPATH": os.pathsep.join(dict.fromkeys(front + rest))}


def _version(module: str, python: str | Path | None = None) -> str | None:
    if python is None:
        try:
            mod = __import__(module)
        except ImportError:
            return None
        return getattr(mod, "__version__", None)
    try:
        out = subprocess.run(
            [str(python), "-c", f"import {module}; print({module}.__version__)"],
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model and GPU (if torch sees one): the facts a reader needs to
    compare figures between machines."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if "model name" in ln), None)
        info["cpu_model"] = model
    except OSError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def versions(bench_python: str | Path | None = None) -> dict[str, str | None]:
    """Versions of both systems' stacks; nnU-Net's from the benchmark venv's interpreter."""
    found = {m: _version(m) for m in ("autoseg", "torch", "numpy", "SimpleITK")}
    if bench_python is not None and Path(bench_python).exists():
        found["nnunetv2"] = _package_version("nnunetv2", bench_python)
        found["torch (nnU-Net venv)"] = _version("torch", bench_python)
    return found


def _package_version(name: str, python: str | Path) -> str | None:
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    try:
        out = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, encoding="utf-8", timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def write_results(
    path: str | os.PathLike,
    benchmark: str,
    results: Sequence[Result],
    *,
    notes: Sequence[str] = (),
    bench_python: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the shared JSON shape atomically (temp file + rename: a crash leaves no half file)."""
    path = Path(path)
    data = {
        "benchmark": benchmark,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(command_line()),
        "machine": machine_info(),
        "versions": versions(bench_python),
        "notes": list(notes),
        "results": [r.to_dict() for r in results],
    }
    if extra:
        data.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def format_table(results: Sequence[Result]) -> str:
    """Plain-text table: name, both medians, ratio and whether the target was met."""
    lines = [f"{'':<44} {'autoseg':>10} {'nnU-Net':>10} {'ratio':>7}  target"]
    for r in results:
        a = "-" if r.autoseg is None else f"{r.autoseg:.4g}"
        n = "-" if r.nnunet is None else f"{r.nnunet:.4g}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        sign = ">=" if r.better == "higher" else "<="
        target = "" if r.target is None else f"{sign} {r.target:g}"
        verdict = {True: " met", False: " MISSED", None: ""}[r.met]
        lines.append(f"{r.name[:44]:<44} {a:>10} {n:>10} {ratio:>7}  {target}{verdict} ({r.unit})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- shared by scripts
# nnU-Net's configuration that stands for "nnU-Net as it ships" on each benchmark dataset.
DEFAULT_NNUNET_CONFIG = {
    "phantom_mri3d": "3d_fullres",
    "phantom_us2d": "2d",
    "usgra_seg": "2d",
    "brats2015_subset": "3d_fullres",
}


def thread_env(base: dict[str, str], threads: int, workers: int) -> dict[str, str]:
    """Environment giving a process ``threads`` OpenMP/MKL threads and nnU-Net ``workers``
    augmentation processes (``nnUNet_n_proc_DA``; autoseg takes its workers from the spec)."""
    env = math_threads_env(base, threads)
    env["nnUNet_n_proc_DA"] = str(workers)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _pss_mb(pid: int) -> float:
    """Proportional set size: pages shared by forked workers are counted once in the sum."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak MB of the summed PSS of the process tree) of one command.

    CPU time (user + system of the command and every worker it waited for) is the number to
    compare on a shared machine: other jobs stretch wall time, not CPU time.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_pss_mb(p) for p in _descendants(proc.pid)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return wall, cpu, peak
