"""Golden plans: the planner's output for the real nerve geometries must not drift silently.

The plans are re-made with the memory estimates recorded when the golden files were written
(plans/estimates/), so this is fast; a separate test checks that the real estimator still gives
the recorded number for every chosen patch and batch. After a deliberate rule change run
``python plans/regenerate.py`` and commit the regenerated files with it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

PLANS = Path(__file__).resolve().parents[1] / "plans"
NAMES = sorted(p.stem for p in (PLANS / "fingerprints").glob("*.json"))
REGENERATE = "python plans/regenerate.py (then review 'git diff plans/' and commit)"


def _regenerate_module():
    spec = importlib.util.spec_from_file_location("plans_regenerate", PLANS / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


regen = _regenerate_module()


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _diff(a, b, where="plan"):
    """Paths where two JSON values differ (first few), for a readable failure."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'golden' if k in a else 'new'}")
            else:
                out += _diff(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: golden {a!r} != new {b!r}"]


def test_the_four_real_geometries_have_golden_plans():
    expected = set(regen.REAL_GEOMETRIES)
    assert expected <= set(NAMES)
    for name in NAMES:
        assert (PLANS / f"{name}.plans.json").is_file(), f"missing golden plan: {REGENERATE}"


def test_golden_fingerprints_match_their_descriptions():
    """plans/fingerprints/ is what REAL_GEOMETRIES describes (no stale hand edits)."""
    from autoseg.planning.synthetic import synthetic_fingerprint

    for name, spec in regen.REAL_GEOMETRIES.items():
        spec = dict(spec)
        made = synthetic_fingerprint(
            spec.pop("dataset"), spec.pop("shape"), spec.pop("spacing"), **spec
        )
        assert made == _load(PLANS / "fingerprints" / f"{name}.json"), f"{name}: {REGENERATE}"


@pytest.mark.parametrize("name", NAMES)
def test_planner_output_matches_golden(name):
    golden = _load(PLANS / f"{name}.plans.json")
    replay = regen.ReplayEstimator(_load(PLANS / "estimates" / f"{name}.json"))
    try:
        new = regen.golden_plan(_load(PLANS / "fingerprints" / f"{name}.json"), replay)
    except LookupError as exc:
        pytest.fail(f"{name}: {exc}")
    diffs = _diff(regen.comparable(golden), regen.comparable(new))
    assert not diffs, f"{name}: planner output drifted ({REGENERATE}):\n" + "\n".join(diffs[:15])


def test_golden_plans_load_and_validate():
    from autoseg.planning import load_plan

    for name in NAMES:
        plan = load_plan(PLANS / f"{name}.plans.json")
        for c in plan.configurations.values():
            assert c.estimated_memory_gb <= regen.BUDGET_GB and c.batch_size >= 2


def test_recorded_estimates_match_the_real_network():
    """The estimates the golden plans rest on are still what the real estimator says for each
    chosen configuration (patch at its batch, and the next batch that was rejected)."""
    from autoseg.planning.patch import network_memory_gb

    checked = 0
    for name in NAMES:
        golden = _load(PLANS / f"{name}.plans.json")
        table = regen.ReplayEstimator(_load(PLANS / "estimates" / f"{name}.json"))
        for cname, c in golden["configurations"].items():
            for batch in (c["batch_size"], c["batch_size"] + 1):
                try:
                    recorded = table(c["architecture"], tuple(c["patch_size"]), batch)
                except LookupError:
                    continue  # batch + 1 was never asked for (5 % limit)
                real = network_memory_gb(c["architecture"], tuple(c["patch_size"]), batch)
                assert real == pytest.approx(recorded, rel=1e-6), (
                    f"{name} {cname} batch {batch}: the memory estimator changed "
                    f"({recorded:.3f} -> {real:.3f} GB): {REGENERATE}"
                )
                checked += 1
    assert checked >= 2 * len(NAMES)
