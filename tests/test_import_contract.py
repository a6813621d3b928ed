"""The import contract: a stage imports only itself and the stages below it, function-level
imports included (documentation/developing.md's table, enforced here)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autoseg"

# Stages from the ground up; a module may import its own stage and any stage listed earlier.
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "errors", "root", "paths", "progress", "registry", "choices", "layout"),
    ("io",),
    ("networks",),
    ("phantoms", "fingerprint"),
    ("planning",),
    ("preprocessing",),
    ("data",),
    ("training",),
    ("postprocessing",),
    ("inference",),
    ("evaluation",),
    ("pipeline", "demo"),
    ("cli", "__main__"),
]
LEVEL = {stage: i for i, stages in enumerate(LAYERS) for stage in stages}


def stage_of(module: str) -> str:
    """``autoseg.training.trainer`` -> ``training``; ``autoseg`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """Every ``autoseg`` module ``path`` imports, at any depth of the file, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = (
        module_name(path, root)
        if path.name == "__init__.py"
        else module_name(path, root).rpartition(".")[0]
    )
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("autoseg")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.startswith("autoseg"):
                out.append((node.lineno, name))
    return out


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        src = stage_of(module_name(path, root))
        if src not in LEVEL:
            found.append(f"{path}: stage {src!r} is not in the contract's table")
            continue
        for line, name in imported_modules(path, root):
            dst = stage_of(name)
            if dst not in LEVEL:
                found.append(f"{path}:{line}: imports {name}, a stage not in the table")
            elif LEVEL[dst] > LEVEL[src]:
                found.append(f"{path.relative_to(root.parent)}:{line}: {src} imports {name}")
    return found


def test_no_stage_imports_a_higher_one():
    assert violations() == []


def test_every_stage_package_is_in_the_table():
    stages = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()}
    stages = {s for s in stages if not s.startswith((".", "_")) or s in ("__init__", "__main__")}
    stages.discard("__pycache__")
    assert stages <= set(LEVEL), stages - set(LEVEL)


def test_the_contract_catches_an_upward_import_even_inside_a_function(tmp_path):
    pkg = tmp_path / "autoseg"
    (pkg / "io").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "io" / "__init__.py").write_text("")
    (pkg / "io" / "reader.py").write_text(
        "def read():\n    from autoseg.training.trainer import Trainer\n    return Trainer\n"
    )
    (pkg / "io" / "relative.py").write_text("from ..evaluation import metrics\n")
    found = violations(pkg)
    assert any("io imports autoseg.training.trainer" in v for v in found)
    assert any("io imports autoseg.evaluation" in v for v in found)


@pytest.mark.parametrize(
    ("module", "stage"),
    [("autoseg", "__init__"), ("autoseg.io.image", "io"), ("autoseg.layout", "layout")],
)
def test_stage_of(module, stage):
    assert stage_of(module) == stage
