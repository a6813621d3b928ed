"""Regenerate the golden plans in plans/ (run after changing a planning rule):

    python plans/regenerate.py                         # all fingerprints in plans/fingerprints/
    python plans/regenerate.py path/to/fingerprint.json [--name NAME]   # add one, then all

Each golden plan ``plans/<name>.plans.json`` is the planner's output for
``plans/fingerprints/<name>.json`` at an 8 GB budget on a CUDA device, with the real network's
memory estimate; ``plans/estimates/<name>.json`` records every estimate the planner asked for.
``tests/test_planning_golden.py`` re-plans with those recorded estimates (fast) and fails when
the output drifts from the golden files (everything but ``created_by`` / ``created_at`` is
compared) or when the planner asks for an estimate the golden run did not need; it also checks
that the real estimator still gives the recorded numbers for each chosen patch. Review the diff
(``git diff plans/``), update documentation/planning.md if numbers it quotes changed, and
commit the regenerated files together with the rule change.

The four hand-written fingerprints describe the real nerve geometries the project targets;
``REAL_GEOMETRIES`` holds their descriptions (edit it, then run this script, to change one).
To add a real dataset, pass its ``fingerprint.json``: it is copied into plans/fingerprints/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from autoseg.io.atomic import write_json_atomic  # noqa: E402
from autoseg.planning import plan_dataset  # noqa: E402
from autoseg.planning.patch import network_memory_gb  # noqa: E402
from autoseg.planning.synthetic import synthetic_fingerprint  # noqa: E402

FINGERPRINTS = HERE / "fingerprints"
ESTIMATES = HERE / "estimates"
BUDGET_GB = 8.0
DEVICE = "cuda"
VOLATILE = ("created_by", "created_at")  # not compared by the golden test

# Real geometries, array order (z, y, x) / (y, x). Foreground numbers are the nerve's: a
# sciatic nerve ~10 x 14 mm in cross-section running through the whole stack (0.15-0.2 % of
# the voxels); a median nerve at the wrist ~40 x 75 pixels (~0.6 %); a tibial nerve at the
# knee ~6 x 8 mm (0.12 %).
REAL_GEOMETRIES: dict[str, dict[str, Any]] = {
    "sciatic_mri_256x256x40": dict(
        dataset="901_SciaticMRI",
        shape=[40, 256, 256],
        spacing=[3.0, 0.75, 0.75],
        modality="mri",
        foreground_fraction={"1": 0.0015},
        foreground_extent_mm={"1": [120.0, 10.0, 14.0]},
    ),
    "sciatic_mri_320x320x60": dict(
        dataset="902_SciaticMRI",
        shape=[60, 320, 320],
        spacing=[4.4, 0.52, 0.52],
        modality="mri",
        foreground_fraction={"1": 0.002},
        foreground_extent_mm={"1": [264.0, 9.0, 13.0]},
    ),
    "median_us_606x468": dict(
        dataset="903_MedianUS",
        shape=[468, 606],
        spacing=[1.0, 1.0],  # PNG: no physical pixel size, spacing 1 (dataset_format.md)
        modality="ultrasound",
        foreground_fraction={"1": 0.006},
        foreground_extent_mm={"1": [40.0, 75.0]},
    ),
    "knee_mri_384x384x80": dict(
        dataset="904_KneeMRI",
        shape=[80, 384, 384],
        spacing=[1.5, 0.4, 0.4],
        modality="mri",
        foreground_fraction={"1": 0.0012},
        foreground_extent_mm={"1": [120.0, 6.0, 8.0]},
    ),
}


def _arch_key(arch: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:16]


class RecordingEstimator:
    """The real estimator, remembering every answer (architecture, patch, batch) -> GiB."""

    def __init__(self) -> None:
        self.architectures: dict[str, dict[str, Any]] = {}
        self.entries: list[dict[str, Any]] = []

    def __call__(self, arch: dict[str, Any], patch: tuple[int, ...], batch: int) -> float:
        gb = network_memory_gb(arch, patch, batch)
        key = _arch_key(arch)
        self.architectures[key] = arch
        self.entries.append({"arch": key, "patch": list(patch), "batch": batch, "gb": gb})
        return gb

    def to_dict(self) -> dict[str, Any]:
        return {"architectures": self.architectures, "entries": self.entries}


class ReplayEstimator:
    """Answers only what a :class:`RecordingEstimator` recorded; anything else means the planner
    asks different questions than when the golden plan was made."""

    def __init__(self, recorded: dict[str, Any]) -> None:
        self.recorded = recorded
        self.table = {
            (e["arch"], tuple(e["patch"]), e["batch"]): e["gb"] for e in recorded["entries"]
        }

    def __call__(self, arch: dict[str, Any], patch: tuple[int, ...], batch: int) -> float:
        key = (_arch_key(arch), tuple(patch), batch)
        if key not in self.table:
            raise LookupError(
                f"the planner asked for an estimate the golden run did not need "
                f"(patch {list(patch)}, batch {batch}): its output drifted; run "
                "python plans/regenerate.py and review the diff"
            )
        return self.table[key]


def golden_plan(fingerprint: dict[str, Any], estimator: Any = None) -> dict[str, Any]:
    """The planner's output for a golden fingerprint, as a JSON dict."""
    return plan_dataset(
        fingerprint, gpu_memory_gb=BUDGET_GB, device=DEVICE, estimator=estimator
    ).to_dict()


def comparable(plan: dict[str, Any]) -> dict[str, Any]:
    """A plan dict without the fields that change from run to run."""
    return {k: v for k, v in plan.items() if k not in VOLATILE}


def write_real_geometries() -> None:
    for name, spec in REAL_GEOMETRIES.items():
        spec = dict(spec)
        fp = synthetic_fingerprint(
            spec.pop("dataset"), spec.pop("shape"), spec.pop("spacing"), **spec
        )
        write_json_atomic(FINGERPRINTS / f"{name}.json", fp)


def regenerate() -> list[Path]:
    written = []
    for fp_path in sorted(FINGERPRINTS.glob("*.json")):
        fingerprint = json.loads(fp_path.read_text(encoding="utf-8"))
        recorder = RecordingEstimator()
        out = HERE / f"{fp_path.stem}.plans.json"
        write_json_atomic(out, golden_plan(fingerprint, recorder))
        write_json_atomic(ESTIMATES / f"{fp_path.stem}.json", recorder.to_dict())
        written.append(out)
        print(f"wrote {out.relative_to(HERE.parent)} ({len(recorder.entries)} estimates)")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fingerprint", nargs="?", help="a fingerprint.json to add")
    parser.add_argument("--name", help="golden name for it (default: its dataset name)")
    args = parser.parse_args(argv)
    FINGERPRINTS.mkdir(parents=True, exist_ok=True)
    ESTIMATES.mkdir(parents=True, exist_ok=True)
    write_real_geometries()
    if args.fingerprint:
        src = Path(args.fingerprint)
        name = args.name or json.loads(src.read_text(encoding="utf-8"))["dataset"]
        shutil.copyfile(src, FINGERPRINTS / f"{name}.json")
    regenerate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
