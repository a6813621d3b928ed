"""benchmarks/ is a package run with ``python -m``: no script edits ``sys.path``, every module
imports as ``benchmarks.<name>`` (once, under that name), the scripts import each other without
a circle, a script started as a file says how to run it, and a child process started by a
benchmark imports this checkout. Import and parse only: no benchmark runs here."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.results import checkout_env, module_command

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.name != "__init__.py")


def _has_main(path: Path) -> bool:
    """Whether a file ends in ``if __name__ == "__main__":`` (a script, not a library)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)


SCRIPTS = sorted(p for p in BENCH.glob("*.py") if _has_main(p))


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def path_patches(source: str) -> list[int]:
    """Lines of ``source`` that touch ``sys.path`` (any use of it, ``from sys import path``,
    ``site.addsitedir``) or carry it in code for a child (``-c`` strings; docstrings aside)."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("path", "addsitedir")
            and isinstance(node.value, ast.Name)
            and node.value.id in ("sys", "site")
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module in ("sys", "site"):
            if any(a.name in ("path", "addsitedir") for a in node.names):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "sys.path" in node.value
            and id(node) not in docs
        ):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_path_patch_finder_sees_every_form():
    code = (
        '"""Mentions sys.path in prose only."""\n'
        "import sys\nfrom sys import path\n"
        "sys.path.insert(0, 'x')\nsys.path[:0] = ['y']\n"
        "code = 'import sys; sys.path.append(1)'\n"
        "import site\nsite.addsitedir('z')\n"
    )
    assert path_patches(code) == [3, 4, 5, 6, 8]
    assert path_patches('"""sys.path is not edited here."""\nimport os\n') == []


def test_no_benchmark_file_patches_sys_path():
    found = [
        f"{p.relative_to(REPO)}:{line}"
        for p in sorted(BENCH.rglob("*.py"))
        for line in path_patches(p.read_text(encoding="utf-8"))
    ]
    assert not found, f"sys.path edits (import as benchmarks.<name> instead): {found}"


def test_every_benchmark_module_imports_as_part_of_the_package():
    import benchmarks

    assert Path(benchmarks.__file__) == BENCH / "__init__.py"  # a package, not a namespace
    assert len(MODULES) >= 14
    for name in MODULES:
        module = importlib.import_module(f"benchmarks.{name}")
        assert Path(module.__file__) == BENCH / f"{name}.py"
    # imported once, under the package's name: no top-level twin (``import results``) that
    # would hold a second copy of its state
    twins = sorted(set(MODULES) & set(sys.modules))
    assert not twins, f"benchmark modules also imported at top level: {twins}"


def benchmark_imports(path: Path) -> set[str]:
    """The ``benchmarks`` modules one file imports, at any depth of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "benchmarks":
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmarks."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("benchmarks.")}
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> modules it imports), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_benchmark_modules_import_each_other_without_a_circle():
    """bench_accuracy, bench_preprocess and bench_training once imported each other for shared
    timing helpers; those live in results.py now, and no circle may come back."""
    graph = {name: benchmark_imports(BENCH / f"{name}.py") for name in MODULES}
    assert graph["bench_accuracy"] >= {"results"}  # the graph sees package imports
    assert find_cycle(graph) is None, find_cycle(graph)
    assert not graph["results"], "results.py is the shared base: it imports no benchmark"


def test_autoseg_never_imports_benchmarks():
    found = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "autoseg").rglob("*.py"))
        if benchmark_imports(p) or "import benchmarks" in p.read_text(encoding="utf-8")
    ]
    assert not found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_script_started_as_a_file_says_how_to_run_it(script, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == f"run as python -m benchmarks.{script.stem} (from the repository root)\n"
    assert proc.stdout == ""


def test_scripts_found():
    names = {p.stem for p in SCRIPTS}
    assert {"run_all", "bench_accuracy", "bench_training", "gpu_check", "chart"} <= names
    assert "results" not in names and "nnunet_bridge" not in names  # libraries, no main


def test_module_command_and_checkout_env():
    cmd = module_command(Path("/py"), "bench_training", "--driver", Path("/s.json"))
    assert cmd == ["/py", "-m", "benchmarks.bench_training", "--driver", "/s.json"]
    env = checkout_env({"PYTHONPATH": os.pathsep.join(["/other", str(REPO)]), "X": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/other"] and env["X"] == "1"
    first = checkout_env({}, "/pkg_parent")
    assert first["PYTHONPATH"].split(os.pathsep) == ["/pkg_parent", str(REPO)]


def test_a_child_imports_this_checkout_from_any_folder(tmp_path):
    """A benchmark's child (nnU-Net's venv, another working folder) must import this checkout's
    benchmarks and autoseg, not an installed or other worktree's copy."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import autoseg, benchmarks; print(benchmarks.__file__); print(autoseg.__file__)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=checkout_env(base),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    bench_file, autoseg_file = proc.stdout.split()
    assert Path(bench_file) == BENCH / "__init__.py"
    assert Path(autoseg_file) == REPO / "autoseg" / "__init__.py"


def test_run_all_starts_each_benchmark_as_a_module(tmp_path):
    from benchmarks import run_all

    script = BENCH / "bench_training.py"
    cmd, _ = run_all.build_command("training", script, Path("/py"), tmp_path / "t.json")
    assert cmd[:3] == ["/py", "-m", "benchmarks.bench_training"]
    assert cmd[3:5] == ["--json", str(tmp_path / "t.json")]


def test_the_recorded_command_is_the_module_form(monkeypatch):
    """Result files record ``python -m benchmarks.<name> ARGS``, which can be run again, not
    the module file's path that ``sys.argv[0]`` holds under ``-m``."""
    import types

    from benchmarks.results import command_line

    main = types.ModuleType("__main__")
    main.__spec__ = importlib.util.find_spec("benchmarks.chart")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", [str(BENCH / "chart.py"), "a.json", "-o", "r.png"])
    python = Path(sys.executable).name
    assert command_line() == [python, "-m", "benchmarks.chart", "a.json", "-o", "r.png"]
    main.__spec__ = None  # started as a file (a tool outside the package)
    assert command_line() == [python, str(BENCH / "chart.py"), "a.json", "-o", "r.png"]
