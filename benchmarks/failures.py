"""Which frames fail, and do they fail in every run? The per-frame view of the budget curve.

    .venv/bin/python -m benchmarks.failures ROOT [ROOT ...] [--dataset 933_USGRA]
        [--label 1] [--json PATH] [--plot PATH]

Each ROOT is a run of the budget curve (``benchmarks/budget_curve.py --run``): a data root with
``raw/<dataset>/labelsTs``, ``test_predictions/`` (what ``autoseg predict`` wrote for the test
cases) and the fold-0 validation predictions under ``results/<dataset>/<config>/fold_0/
validation``. For every case of both parts (the test frames and fold 0's hold-out frames, the
same split in every run) it scores each run's prediction against the reference and asks:

- how many runs fail the case (Dice of ``--label`` below 0.5), whatever their plan, budget or
  seed: a case failed by every run is not fixed by another training choice of this recipe;
- how the Dice depends on the size of the structure (quartiles of its reference area);
- what each run would score if its failures scored its mean over the other cases: how much of
  the gap to a goal is failures and how much is the outline of the cases found.

Test predictions are only scored here, never used for a decision.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

FAIL_DICE = 0.5  # a failure, as in the issue and budget_curve.py


@dataclass(frozen=True)
class CaseScore:
    """One run's prediction of one case: the label's Dice and both areas in pixels/voxels."""

    dice: float
    ref_area: int
    pred_area: int


def score_case(pred: np.ndarray, ref: np.ndarray, label: int) -> CaseScore:
    from autoseg.evaluation.metrics import dice

    return CaseScore(
        dice(pred, ref, label),
        int(np.count_nonzero(ref == label)),
        int(np.count_nonzero(pred == label)),
    )


def _read(path: Path) -> np.ndarray:
    from autoseg.io import read_image

    return np.asarray(read_image(path).array)


def _validation_folder(root: Path, dataset: str) -> Path | None:
    res = root / "results" / dataset
    found = sorted(res.glob("*/fold_0/validation")) if res.is_dir() else []
    return found[0] if found else None


def score_run(root: Path, dataset: str, label: int) -> dict[str, dict[str, CaseScore]]:
    """``{"test": {case: score}, "holdout": {case: score}}`` for one run root."""
    raw = root / "raw" / dataset
    out: dict[str, dict[str, CaseScore]] = {"test": {}, "holdout": {}}
    parts = [("test", root / "test_predictions", raw / "labelsTs")]
    val = _validation_folder(root, dataset)
    if val is not None:
        parts.append(("holdout", val, raw / "labelsTr"))
    for part, pred_dir, ref_dir in parts:
        for pred_path in sorted(pred_dir.glob("*.nii.gz")):
            ref_path = ref_dir / pred_path.name
            if ref_path.is_file():
                case = pred_path.name[: -len(".nii.gz")]
                out[part][case] = score_case(_read(pred_path), _read(ref_path), label)
    return out


def reference_areas(folder: Path, label: int) -> list[int]:
    """The label's area in every reference of a labels folder: is the test set's size mix the
    training set's?"""
    return [int(np.count_nonzero(_read(p) == label)) for p in sorted(folder.glob("*.nii.gz"))]


def area_mix(areas: list[int], below: float) -> dict:
    a = np.asarray(areas)
    return {
        "n_cases": int(a.size),
        "quantiles_10_25_50_75_90": [int(v) for v in np.quantile(a, [0.1, 0.25, 0.5, 0.75, 0.9])],
        "fraction_below": round(float((a < below).mean()), 3),
        "below": int(below),
    }


def summarize(scores: dict[str, dict[str, CaseScore]], runs: list[str]) -> dict:
    """Failure counts per run and per case, Dice by size quartile, and the failures-fixed bound.

    ``scores`` maps run -> case -> score for one part; only cases every run scored are used.
    """
    cases = sorted(set.intersection(*(set(scores[r]) for r in runs)))
    d = np.array([[scores[r][c].dice for r in runs] for c in cases])  # cases x runs
    area = np.array([scores[runs[0]][c].ref_area for c in cases])
    failed = d < FAIL_DICE
    per_case = failed.sum(1)
    edges = np.quantile(area, [0.25, 0.5, 0.75])
    quart = np.digitize(area, edges)
    by_size = []
    for q in range(4):
        sel = quart == q
        by_size.append(
            {
                "quartile": q + 1,
                "n_cases": int(sel.sum()),
                "area_range": [int(area[sel].min()), int(area[sel].max())] if sel.any() else None,
                "mean_dice": [
                    round(float(d[sel, j].mean()), 4) if sel.any() else None
                    for j in range(len(runs))
                ],
                "failures": [int(failed[sel, j].sum()) for j in range(len(runs))],
            }
        )
    fixed = []
    for j in range(len(runs)):
        ok = ~failed[:, j]
        rest = float(d[ok, j].mean()) if ok.any() else 0.0
        fixed.append(round(float(np.where(ok, d[:, j], rest).mean()), 4))
    return {
        "runs": runs,
        "cases": cases,
        "mean_dice": [round(float(v), 4) for v in d.mean(0)],
        "failures": [int(v) for v in failed.sum(0)],
        "failed_by_k_runs": {str(k): int((per_case == k).sum()) for k in range(len(runs) + 1)},
        "always_failed": [c for c, k in zip(cases, per_case) if k == len(runs)],
        "never_failed": int((per_case == 0).sum()),
        "by_size": by_size,
        "failures_at_rest_mean": fixed,
        "per_case": {
            c: {"ref_area": int(a), "dice": [round(float(v), 4) for v in row]}
            for c, a, row in zip(cases, area, d)
        },
    }


def print_summary(part: str, s: dict) -> None:
    n = len(s["runs"])
    print(f"{part}: {len(s['cases'])} cases, {n} runs")
    print(f"  failures per run: {s['failures']}")
    hist = {k: v for k, v in s["failed_by_k_runs"].items() if v}
    print(f"  cases failed by k runs: {hist}; failed by every run: {s['always_failed']}")
    for q in s["by_size"]:
        if not q["n_cases"]:
            continue
        lo, hi = q["area_range"]
        print(
            f"  size quartile {q['quartile']} ({lo}-{hi} px): mean Dice "
            f"{np.mean(q['mean_dice']):.3f} over the runs, failures {sum(q['failures'])} of "
            f"{q['n_cases'] * n}"
        )
    print(f"  mean Dice per run:              {s['mean_dice']}")
    print(f"  if failures scored the rest's mean: {s['failures_at_rest_mean']}")


def plot(summaries: dict[str, dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("test", "holdout") if p in summaries]
    fig, axes = plt.subplots(1, len(parts), figsize=(6.2 * len(parts), 4.4), squeeze=False)
    for ax, part in zip(axes[0], parts):
        s = summaries[part]
        area = np.array([s["per_case"][c]["ref_area"] for c in s["cases"]])
        d = np.array([s["per_case"][c]["dice"] for c in s["cases"]])
        mean, lo, hi = d.mean(1), d.min(1), d.max(1)
        always = np.array([c in s["always_failed"] for c in s["cases"]])
        ax.vlines(area, lo, hi, color="0.75", lw=1.2, zorder=1)
        ax.scatter(area[~always], mean[~always], s=18, color="tab:blue", zorder=2,
                   label="mean over the runs (bar: lowest to highest run)")  # fmt: skip
        ax.scatter(area[always], mean[always], s=26, color="tab:red", zorder=3,
                   label="failed by every run")  # fmt: skip
        ax.axhline(FAIL_DICE, color="0.4", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.0)
        ax.set_xlabel("reference area of the structure (pixels, log scale)")
        ax.set_ylabel("Dice")
        name = "test frames" if part == "test" else "fold-0 hold-out frames"
        ax.set_title(f"{name}: {len(s['runs'])} runs, {len(s['cases'])} frames", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("roots", nargs="+", type=Path)
    ap.add_argument("--dataset", default="933_USGRA")
    ap.add_argument("--label", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    runs = [str(r) for r in args.roots]
    scored = {str(r): score_run(r, args.dataset, args.label) for r in args.roots}
    summaries = {}
    for part in ("test", "holdout"):
        have = [r for r in runs if scored[r][part]]
        if len(have) == len(runs):
            summaries[part] = summarize({r: scored[r][part] for r in runs}, runs)
            print_summary(part, summaries[part])
    if not summaries:
        print("no run has predictions to score", file=sys.stderr)
        return 1
    raw = args.roots[0] / "raw" / args.dataset
    if "test" in summaries and (raw / "labelsTr").is_dir():
        small = summaries["test"]["by_size"][0]["area_range"][1]  # top of the test's quartile 1
        mix = {
            part: area_mix(reference_areas(raw / folder, args.label), small)
            for part, folder in (("training", "labelsTr"), ("test", "labelsTs"))
        }
        summaries["size_mix"] = mix
        for part, m in mix.items():
            print(
                f"{part} references: area quantiles 10/25/50/75/90 {m['quantiles_10_25_50_75_90']}"
                f", {100 * m['fraction_below']:.0f} % below {m['below']} px"
            )
    if args.json:
        args.json.write_text(json.dumps({"label": args.label, **summaries}, indent=1) + "\n")
    if args.plot:
        print(f"figure: {plot(summaries, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
