"""Which scale views help: find-best's trial with several view sets on trained fold-0 models.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python -m benchmarks.scale_views ROOT [ROOT ...]
        [--dataset 933_USGRA] [--views 1,1.1,1.2 0.9,1,1.1] [--mirror] [--json PATH]

Each ROOT is a data root (raw/, preprocessed/, results/) with a trained and validated fold 0 of
one configuration; its fold-0 validation cases (``splits.json``) are predicted by that model
without and with each view set, exactly as :func:`autoseg.evaluation.scale_views.try_scale_views`
does inside find-best (the end-of-fold validation's mirroring rule unless ``--mirror``), and the
per-label mean Dice of both arms is printed and written to ``--json``. Test cases are never
read. documentation/find_best.md ("Scale views") has the figures behind ``SCALE_VIEWS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)


def parse_views(text: str) -> tuple[float, ...]:
    """``"1,1.1,1.2"`` -> (1.0, 1.1, 1.2)."""
    return tuple(float(v) for v in text.split(","))


def trial_rows(
    root: Path, dataset: str, view_sets: list[tuple[float, ...]], mirror: bool
) -> list[dict]:
    """One row per view set: the root, the views, both arms' per-label Dice, the seconds."""
    from dataclasses import replace

    from autoseg.evaluation.scale_views import try_scale_views
    from autoseg.io import load_dataset_json
    from autoseg.layout import ResultsLayout
    from autoseg.planning.plan import load_plan

    raw = root / "raw" / dataset
    res = root / "results" / dataset
    plan = load_plan(root / "preprocessed" / dataset)
    if mirror:  # the trial mirrors unless the plan is a time-budgeted CPU plan
        plan = replace(plan, schedule=replace(plan.schedule, source="benchmark"))
    configs = [p.name for p in res.iterdir() if (p / "fold_0" / "checkpoint_final.pt").is_file()]
    val = json.loads(ResultsLayout(res).splits.read_text(encoding="utf-8"))[0]["val"]
    ending = load_dataset_json(raw).file_ending
    refs = {c: raw / "labelsTr" / f"{c}{ending}" for c in val}
    labels = sorted(v for v in plan.labels.values() if v != 0)
    rows = []
    for views in view_sets:
        trial = try_scale_views(
            raw, plan, res, configs[:1], {c: 0 for c in val}, refs, labels, scales=views,
            device="cpu", progress=False,
        )  # fmt: skip
        rows.append({"root": str(root), **trial.to_dict()})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path)
    ap.add_argument("--dataset", default="933_USGRA")
    ap.add_argument("--views", nargs="+", default=["1,1.1,1.2", "0.9,1,1.1"])
    ap.add_argument("--mirror", action="store_true", help="mirror every view (as predict does)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    view_sets = [parse_views(v) for v in args.views]
    rows = []
    for root in args.roots:
        for row in trial_rows(root, args.dataset, view_sets, args.mirror):
            gains = {k: row["dice_with"][k] - row["dice_without"][k] for k in row["dice_without"]}
            print(
                f"{root.name:24s} views {'/'.join(f'{v:g}' for v in row['scales']):12s} "
                + "  ".join(
                    f"label {k}: {row['dice_without'][k]:.3f} -> {row['dice_with'][k]:.3f} "
                    f"({gains[k]:+.3f})"
                    for k in row["dice_without"]
                )
                + f"  {row['seconds']:.0f} s",
                flush=True,
            )
            rows.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"mirror": args.mirror, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
