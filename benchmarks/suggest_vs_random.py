"""Does labelling the scans ``suggest-labels`` picks beat labelling random ones? (issue 17, 2)

    AUTOSEG_ROOT=ROOT OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m \\
        benchmarks.suggest_vs_random DATASET --run-budget 4m [--seeds 0 1] [--share 0.25] \\
        [--strategy typical|uncertain] [--label each|any|NAME] [--aware] [--epochs N] \\
        [--config 2d] [--holdout-fold 0] [--work DIR] [--json PATH]

On a planned dataset (``plans.json``; ``splits.json`` is created as ``autoseg train`` creates
it when missing), with the learning curve's machinery
(:mod:`autoseg.evaluation.learning_curve`) and suggest-labels'
(:mod:`autoseg.inference.suggest`), for each seed:

1. hold-out = fold 0's validation cases (the learning curve's); pool = the other cases;
2. S0 = a random ``--share`` (a quarter) of the pool's subjects with all their cases, seeded
   and cohort-stratified exactly as the learning curve's subset of that share and seed; model
   M0 is trained on S0 under ``--run-budget``;
3. M0 predicts the rest of the pool with uncertainty (mirrored views as members, as
   ``suggest-labels`` does by default) and ``suggest_labels`` picks K = ``--share`` of the
   pool's cases as ``--strategy`` says: ``typical`` (its default: typical scans of groups
   S0 does not cover) or ``uncertain`` (uncertainty x diversity, ranked by ``--label``, with
   S0 as the labelled scans when ``--aware``); S_suggested = S0 + those K,
   S_random = S0 + K cases drawn at random (seeded) from the same rest: both add K single
   cases, so they differ only in which K;
4. M_suggested and M_random are trained under the same budget with the same training seed
   as M0, and all three are scored on the hold-out (Dice per label; failures: cases with
   Dice < 0.5).

Printed: a table per seed, the mean over seeds and the paired difference suggested - random
(mean Dice over labels, and per label) with its range over seeds, and one line saying which
won and by how much. The JSON (``--json``, default ``benchmarks/results/suggest_vs_random.json``
for the default strategy, ``suggest_vs_random_<tag>.json`` for another ranking)
has the shared shape (``benchmarks.results.write_results``, with the command line) and every
seed's sets, picks and per-case scores under ``seeds``.

Resumable: the work folder (default ``$AUTOSEG_ROOT/results/DATASET/suggest_vs_random/CONFIG``)
holds ``s<seed>/start``, ``s<seed>/suggested-<tag>``, ``s<seed>/random`` (one run folder
each, skipped when its ``heldout.json`` exists, resumed from its last epoch when interrupted)
and ``s<seed>/suggest-<tag>`` (the suggestions, reused when M0 was not retrained), where the
tag names the ranking (``--label``, ``--strategy typical``, ``-aware`` with ``--aware``):
rankings compared on the same seeds share S0 and the random arm.

``--small`` builds a tiny us2d phantom (30 frames of 64 x 80, 8 subjects) under ``--work``
(default: a new temporary folder), plans it with a 4-8 network and trains 2 epochs of 2
iterations: a smoke run of the script (under a minute); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from benchmarks.results import REPO, Result, write_results

BENCHMARK = "suggest_vs_random"
DEFAULT_JSON = REPO / "benchmarks" / "results" / f"{BENCHMARK}.json"
RANDOM_SEED = 1718
"""Mixed with the seed into the random picks, so they do not repeat the subject order's draw."""
ARMS = ("start", "random", "suggested")
FAILURE_DICE = 0.5
SMALL_ID, SMALL_NAME, SMALL_CASES = 951, "SuggestSmoke", 30


# ------------------------------------------------------------------------------ the design
def start_set(held: Any, share: float, seed: int) -> list[str]:
    """S0: the learning curve's subset of ``share`` of the pool's subjects for ``seed``."""
    from autoseg.evaluation.learning_curve import design_runs

    ds = held.ds
    runs = design_runs(held.pool, ds.subject_of, ds.cohort_of, [share], seeds=seed + 1)
    return list(next(r for r in runs if r.seed == seed).cases)


def added_size(share: float, n_pool_cases: int, n_rest: int) -> int:
    """K: ``share`` of the pool's cases, rounded half up, at least 1, at most what is left."""
    from autoseg.evaluation.learning_curve import subset_size

    return min(n_rest, subset_size(share, n_pool_cases))


def random_picks(rest: Sequence[str], k: int, seed: int) -> list[str]:
    """K cases of ``rest`` drawn without replacement, seeded by ``seed``."""
    rng = np.random.default_rng([RANDOM_SEED, int(seed)])
    ordered = sorted(rest)
    return sorted(ordered[i] for i in rng.choice(len(ordered), size=k, replace=False))


def suggested_picks(
    held: Any,
    checkpoint: Path,
    rest: Sequence[str],
    k: int,
    folder: Path,
    *,
    reuse: bool,
    device: str,
    progress: bool,
    label: str = "each",
    strategy: str = "uncertain",
    labelled: Sequence[str] = (),
) -> dict[str, Any]:
    """``suggest_labels`` with M0 on the rest of the pool: the K picks in their order, with
    each one's score and reason; a finished earlier answer for the same rest and K is reused
    when ``reuse`` (M0 was not retrained since)."""
    from autoseg.evaluation.learning_curve import run_predictor
    from autoseg.inference.predict import OUTPUT_EXT, InputCase
    from autoseg.inference.suggest import suggest_labels

    path = folder / "suggestions.json"
    if reuse and path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        seen = {r["case"] for r in old["ranking"]} | set(old["failed"])
        same_rank = (
            old.get("label", "any") == label
            and old.get("strategy", "uncertain") == strategy
            and old.get("labelled", 0) == len(labelled)
        )
        if old["n_requested"] == k and seen == set(rest) and same_rank:
            return old
    ending = held.ds.file_ending
    out_ext = OUTPUT_EXT.get(ending.lower(), ending)
    inputs = [InputCase(c, tuple(held.cases[c].images), out_ext) for c in sorted(rest)]
    known = [InputCase(c, tuple(held.cases[c].images), out_ext) for c in sorted(labelled)]
    predictor = run_predictor(held.plan, held.config, checkpoint, device=device, tta=True)
    suggest_labels(
        predictor,
        inputs,
        folder,
        k,
        label=label,
        strategy=strategy,
        labelled=known,
        progress=progress,
    )
    return json.loads(path.read_text(encoding="utf-8"))


def run_design(held: Any, arm: str, seed: int, train: Sequence[str]) -> dict[str, Any]:
    """What ``run.json`` records: a rerun with other sets stops instead of mixing them."""
    return {
        "benchmark": BENCHMARK,
        "config": held.config,
        "arm": arm,
        "seed": seed,
        "train_cases": sorted(train),
        "holdout_cases": list(held.holdout),
    }


def failures(per_case: Mapping[str, Mapping[str, float]]) -> dict[str, int]:
    """Per label, the held-out cases with Dice below :data:`FAILURE_DICE` (a NaN, the label
    absent from both the reference and the prediction, is no failure)."""
    labels = sorted({k for c in per_case.values() for k in c})
    return {lab: sum(1 for c in per_case.values() if c[lab] < FAILURE_DICE) for lab in labels}


# ------------------------------------------------------------------------------ one seed
def ranking_tag(label: str, strategy: str = "uncertain", aware: bool = False) -> str:
    """The name of a ranking in folder names: the label for uncertainty rankings, the
    strategy otherwise, '-aware' when S0 is passed as the labelled scans."""
    tag = label if strategy == "uncertain" else strategy
    return f"{tag}-aware" if aware and strategy == "uncertain" else tag


def arm_folder(arm: str, tag: str) -> str:
    """The run folder of an arm: the suggested arm (and its picks) per ranking, so rankings
    compared on the same seeds share S0 and the random arm."""
    return arm if arm in ("start", "random") else f"{arm}-{tag}"


def measure_seed(
    held: Any,
    seed: int,
    share: float,
    budget: Mapping[str, Any],
    ranking: Mapping[str, Any],
    **train: Any,
):
    """Train and score S0, pick (as ``ranking`` says: label, strategy, aware), train and
    score both arms; the
    seed's record."""
    from autoseg.evaluation.learning_curve import train_and_score
    from autoseg.layout import FINAL

    say = train["say"]
    work: Path = budget["work"] / f"s{seed}"
    start = start_set(held, share, seed)
    rest = sorted(set(held.pool) - set(start))
    k = added_size(share, len(held.pool), len(rest))
    records: dict[str, dict[str, Any]] = {}

    def one(arm: str, cases: Sequence[str]) -> bool:
        record, before = train_and_score(
            held,
            sorted(cases),
            work / arm_folder(arm, ranking["tag"]),
            run_design(held, arm_folder(arm, ranking["tag"]), seed, cases),
            seed=seed,
            epoch_budget_s=budget["epoch_budget_s"],
            where=f"seed {seed}, {arm} ({len(cases)} cases)",
            extra={"arm": arm, "seed": seed},
            **train,
        )
        records[arm] = record
        return before

    start_before = one("start", start)
    picks = suggested_picks(
        held,
        work / "start" / FINAL,
        rest,
        k,
        work / arm_folder("suggest", ranking["tag"]),
        reuse=start_before,
        device=train["device"],
        progress=train["progress"],
        label=ranking["label"],
        strategy=ranking["strategy"],
        labelled=start if ranking["aware"] else (),
    )
    suggested = [r["case"] for r in picks["suggestions"]]
    randomly = random_picks(rest, k, seed)
    both = len(set(suggested) & set(randomly))
    say(
        f"seed {seed}: S0 {len(start)} cases, adding {k} of the other {len(rest)}: suggested "
        f"{', '.join(suggested)}; random {', '.join(randomly)} ({both} in both)"
    )
    one("random", [*start, *randomly])
    one("suggested", [*start, *suggested])
    scores = {
        arm: {
            "mean_dice": r["mean_dice"],
            "dice": r["dice"],
            "failures": failures(r["cases"]),
            "epochs": r["epochs"],
            "train_s": r["train_s"],
            "n_cases": r["n_cases"],
        }
        for arm, r in records.items()
    }
    return {
        "seed": seed,
        **ranking,
        "sets": {
            "start": sorted(start),
            "suggested_added": suggested,
            "random_added": randomly,
            "rest": rest,
        },
        "k": k,
        "suggestions": picks["suggestions"],
        "suggest_failed": picks["failed"],
        "scores": scores,
        "difference": paired(scores["suggested"], scores["random"]),
        "cases": {arm: r["cases"] for arm, r in records.items()},
    }


def paired(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """a - b: mean Dice, Dice per label and failures per label."""
    return {
        "mean_dice": a["mean_dice"] - b["mean_dice"],
        "dice": {lab: a["dice"][lab] - b["dice"][lab] for lab in a["dice"]},
        "failures": {lab: a["failures"][lab] - b["failures"][lab] for lab in a["failures"]},
    }


# ------------------------------------------------------------------------------ summary
def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, min, max and (for two or more) the sample standard deviation."""
    v = [float(x) for x in values]
    return {
        "mean": statistics.fmean(v),
        "min": min(v),
        "max": max(v),
        "sd": statistics.stdev(v) if len(v) > 1 else None,
        "n": len(v),
    }


def summarise(seeds: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> dict[str, Any]:
    """Per arm the mean over seeds; the paired difference's spread; the verdict."""
    arms = {}
    for arm in ARMS:
        at = [s["scores"][arm] for s in seeds]
        arms[arm] = {
            "mean_dice": spread([x["mean_dice"] for x in at]),
            "dice": {lab: spread([x["dice"][lab] for x in at]) for lab in labels},
            "failures": {lab: spread([x["failures"][lab] for x in at]) for lab in labels},
        }
    diff = {
        "mean_dice": spread([s["difference"]["mean_dice"] for s in seeds]),
        "dice": {lab: spread([s["difference"]["dice"][lab] for s in seeds]) for lab in labels},
        "failures": {
            lab: spread([s["difference"]["failures"][lab] for s in seeds]) for lab in labels
        },
    }
    return {"arms": arms, "difference": diff, "verdict": verdict(seeds, arms, diff)}


def verdict(seeds: Sequence[Mapping[str, Any]], arms: Mapping, diff: Mapping) -> str:
    """One plain sentence: which won, by how much, on how many seeds, and the gain over S0."""
    d = [s["difference"]["mean_dice"] for s in seeds]
    n = len(d)
    mean = diff["mean_dice"]["mean"]
    won = sum(1 for x in d if x > 0)
    lost = sum(1 for x in d if x < 0)
    gain = {a: arms[a]["mean_dice"]["mean"] - arms["start"]["mean_dice"]["mean"] for a in ARMS}
    per_seed = ", ".join(f"{x:+.3f}" for x in d)
    if mean > 0:
        head = f"suggested beat random by {mean:.3f} mean held-out Dice"
    elif mean < 0:
        head = f"random beat suggested by {-mean:.3f} mean held-out Dice"
    else:
        head = "suggested and random tied on mean held-out Dice"
    text = (
        f"{head} (suggested - random per seed: {per_seed}; suggested higher on {won} of {n} "
        f"seed(s), lower on {lost}). Adding the quarter to S0 gained {gain['random']:+.3f} "
        f"at random and {gain['suggested']:+.3f} as suggested."
    )
    if won and lost:
        text += " The seeds disagree on the sign: no winner beyond the seed-to-seed noise."
    elif n < 3:
        text += f" {n} seed(s) only: a direction, not a significance test."
    return text


def format_report(result: Mapping[str, Any]) -> str:
    """The per-seed table, the means and the verdict."""
    labels: dict[str, str] = result["labels"]
    keys = ["mean", *labels]
    names = {"mean": "mean", **labels}
    head = f"{'seed':>4}  {'set':<16} {'cases':>5} {'epochs':>6}"
    head += "".join(f"  {'Dice ' + names[k]:>12}" for k in keys)
    head += "".join(f"  {'fail ' + names[k]:>10}" for k in labels)
    titles = {"start": "S0", "random": "S0 + random", "suggested": "S0 + suggested"}
    lines = [
        f"suggest vs random on {result['dataset']} ({result['config']}): hold-out "
        f"{len(result['holdout'])} cases (fold {result['holdout_fold']}'s validation), pool "
        f"{result['pool_cases']} cases; S0 and the added set each {result['share']:.0%} of the "
        f"pool; suggested as {result.get('ranking', {}).get('tag', 'any')}; "
        f"{result['budget']['rule']}",
        "",
        head,
    ]

    def dice(scores: Mapping[str, Any], k: str) -> float:
        return scores["mean_dice"] if k == "mean" else scores["dice"][k]

    for s in result["seeds"]:
        for arm in ARMS:
            sc = s["scores"][arm]
            row = f"{s['seed']:>4}  {titles[arm]:<16} {sc['n_cases']:>5} {sc['epochs']:>6}"
            row += "".join(f"  {dice(sc, k):>12.3f}" for k in keys)
            row += "".join(f"  {sc['failures'][k]:>10d}" for k in labels)
            lines.append(row)
        d = s["difference"]
        row = f"{s['seed']:>4}  {'sugg. - random':<16} {'':>5} {'':>6}"
        row += "".join(f"  {dice(d, k):>+12.3f}" for k in keys)
        row += "".join(f"  {d['failures'][k]:>+10d}" for k in labels)
        lines += [row, ""]
    summary = result["summary"]
    lines.append(f"mean over {len(result['seeds'])} seed(s):")
    for arm in ARMS:
        a = summary["arms"][arm]
        cells = [a["mean_dice"]["mean"], *(a["dice"][k]["mean"] for k in labels)]
        fails = "".join(f"  {a['failures'][k]['mean']:>10.1f}" for k in labels)
        lines.append(
            f"{'':>4}  {titles[arm]:<16} {'':>5} {'':>6}"
            + "".join(f"  {c:>12.3f}" for c in cells)
            + fails
        )
    d = summary["difference"]
    rng = [d["mean_dice"], *(d["dice"][k] for k in labels)]
    lines.append(
        f"{'':>4}  {'sugg. - random':<16} {'':>5} {'':>6}"
        + "".join(f"  {c['mean']:>+12.3f}" for c in rng)
        + "".join(f"  {d['failures'][k]['mean']:>+10.1f}" for k in labels)
    )
    ranges = "; ".join(f"{names[k]} {c['min']:+.3f} to {c['max']:+.3f}" for k, c in zip(keys, rng))
    lines.append(f"suggested - random, range over seeds: {ranges}")
    sd = d["mean_dice"]["sd"]
    if sd is not None:
        lines.append(f"paired difference of mean Dice: sd over seeds {sd:.3f}")
    lines += ["", summary["verdict"]]
    return "\n".join(lines)


def to_results(result: Mapping[str, Any]) -> list[Result]:
    """The shared JSON's rows: each arm's mean Dice and the paired difference (one system
    measured: ``nnunet`` stays empty)."""
    summary = result["summary"]
    labels: dict[str, str] = result["labels"]
    rows = []
    titles = {"start": "S0", "random": "S0 + random quarter", "suggested": "S0 + suggested quarter"}
    for arm in ARMS:
        a = summary["arms"][arm]
        runs = {"autoseg": [s["scores"][arm]["mean_dice"] for s in result["seeds"]]}
        rows.append(
            Result(
                f"{titles[arm]}: held-out Dice, mean over labels",
                "Dice",
                "",
                a["mean_dice"]["mean"],
                None,
                "higher",
                runs=runs,
            )
        )
        for lab, name in labels.items():
            rows.append(
                Result(
                    f"{titles[arm]}: {name} failures (Dice < {FAILURE_DICE})",
                    "held-out cases",
                    "cases",
                    a["failures"][lab]["mean"],
                    None,
                    "lower",
                )
            )
    d = summary["difference"]["mean_dice"]
    rows.append(
        Result(
            "suggested - random (paired by seed): held-out Dice, mean over labels",
            "Dice difference",
            "",
            d["mean"],
            None,
            "higher",
            runs={"autoseg": [s["difference"]["mean_dice"] for s in result["seeds"]]},
            note=summary["verdict"],
        )
    )
    return rows


# ------------------------------------------------------------------------------ the run
def measure(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    seeds: Sequence[int] = (0, 1),
    share: float = 0.25,
    run_budget_s: float | None = None,
    config: str | None = None,
    holdout_fold: int = 0,
    label: str = "each",
    strategy: str = "typical",
    aware: bool = False,
    work: Path | None = None,
    epochs: int | None = None,
    iterations: int | None = None,
    device: str = "auto",
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Every seed's three models and the picks between them, and the summary."""
    from autoseg.errors import AutosegError
    from autoseg.evaluation.learning_curve import prepare_holdout, run_budget

    if not 0 < share <= 1 / 3:
        raise AutosegError(f"share {share} must lie in (0, 1/3]", fix="e.g. --share 0.25")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise AutosegError(f"seeds {list(seeds)}: give distinct seeds >= 0", fix="--seeds 0 1")
    held = prepare_holdout(
        dataset, root, config=config, holdout_fold=holdout_fold, progress=progress
    )
    schedule = getattr(held.plan.configurations[held.config], "schedule", None)
    run_s, loop_s, rule = run_budget(
        None,
        run_budget_s,
        3 * len(seeds),
        getattr(schedule, "train_budget_s", None),
        epochs is not None,
    )
    if num_workers is None:
        from autoseg.data.loader import default_loader_workers
        from autoseg.networks.device import pick_device

        num_workers = default_loader_workers(pick_device(device).type)
    work = Path(work) if work else held.layout.root / BENCHMARK / held.config
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"{BENCHMARK}.log"

    def say(line: str) -> None:
        if progress:
            print(line, flush=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    say(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {BENCHMARK} {held.name} {held.config}")
    say(rule)
    budget = {"work": work, "epoch_budget_s": loop_s}
    train = {
        "epochs": epochs,
        "iterations": iterations,
        "device": device,
        "num_workers": num_workers,
        "progress": progress,
        "say": say,
    }
    aware = aware or strategy == "typical"  # typical picks cover what S0 does not
    ranking = {
        "label": label,
        "strategy": strategy,
        "aware": aware,
        "tag": ranking_tag(label, strategy, aware),
    }
    records = [measure_seed(held, seed, share, budget, ranking, **train) for seed in seeds]
    result = {
        "dataset": held.name,
        "config": held.config,
        "labels": held.labels,
        "holdout_fold": holdout_fold,
        "holdout": list(held.holdout),
        "pool_cases": len(held.pool),
        "share": share,
        "ranking": ranking,
        "label": label,
        "budget": {"run_budget_s": run_s, "epoch_budget_s": loop_s, "rule": rule},
        "work": str(work),
        "seeds": records,
    }
    result["summary"] = summarise(records, held.labels)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(format_report(result) + "\n")
    return result


def make_small(work: Path) -> Path:
    """A tiny planned us2d phantom under ``work/root`` (its ``AUTOSEG_ROOT``); returns it."""
    from autoseg.cli import main as autoseg_main
    from autoseg.paths import preprocessed_dir, raw_dir
    from autoseg.phantoms import Us2dConfig, generate_phantom

    root = work / "root"
    os.environ["AUTOSEG_ROOT"] = str(root)
    name = f"{SMALL_ID:03d}_{SMALL_NAME}"
    if not (raw_dir() / name).is_dir():
        source = work / "source"
        cfg = Us2dConfig(shape=(64, 80))
        generate_phantom("us2d", source, SMALL_CASES, seed=0, config=cfg, overwrite=True)
        args = ["convert", str(source), "--name", SMALL_NAME, "--id", str(SMALL_ID)]
        args += ["--label-names", "nerve"]
        if autoseg_main(args) != 0:
            raise SystemExit("converting the small phantom failed")
    plan_path = preprocessed_dir() / name / "plans.json"
    if not plan_path.is_file():
        if autoseg_main(["plan", str(SMALL_ID), "--configs", "2d", "--brief"]) != 0:
            raise SystemExit("planning the small phantom failed")
        shrink_plan(plan_path)
    return root


def shrink_plan(plan_path: Path, epochs: int = 2, iterations: int = 2) -> None:
    """What a user may do by editing plans.json: the 2d configuration as a two-stage 4-8
    network on 32 x 32 patches, batch 2, and a schedule of a few iterations."""
    plan = json.loads(plan_path.read_text())
    cfg = plan["configurations"]["2d"]
    cfg["architecture"].update(
        features_per_stage=[4, 8],
        kernel_sizes=[[3, 3], [3, 3]],
        strides=[[1, 1], [2, 2]],
        n_blocks_per_stage=[1, 1],
        n_conv_per_stage_decoder=[1],
    )
    cfg.update(patch_size=[32, 32], batch_size=2)
    cfg.pop("schedule", None)
    plan["schedule"].update(epochs=epochs, iterations_per_epoch=iterations)
    plan_path.write_text(json.dumps(plan))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{BENCHMARK}",
        description="Held-out Dice of S0 + the quarter suggest-labels picks vs S0 + a random "
        "quarter (issue 17 part 2); see the module docstring.",
    )
    p.add_argument("dataset", nargs="?", help="planned dataset id, name or path")
    p.add_argument("--run-budget", help="each model's training budget, e.g. 4m")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--share", type=float, default=0.25, help="S0's and the added set's share")
    p.add_argument(
        "--label",
        default="each",
        help="with --strategy uncertain: each (default), any, or a label name",
    )
    p.add_argument(
        "--strategy",
        default="typical",
        choices=["typical", "uncertain"],
        help="suggest-labels' strategy (default: its default, typical)",
    )
    p.add_argument(
        "--aware",
        action="store_true",
        help="pass S0 to suggest-labels as the scans labelled already (always with typical)",
    )
    p.add_argument("--config")
    p.add_argument("--holdout-fold", type=int, default=0)
    p.add_argument("--epochs", type=int, help="override the plan's schedule")
    p.add_argument("--iterations", type=int, help="iterations per epoch (override)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, help="data loader workers (default: autoseg's)")
    p.add_argument("--work", type=Path, help="run folders (see the module docstring)")
    p.add_argument("--json", type=Path, help=f"result file (default {DEFAULT_JSON})")
    p.add_argument("--small", action="store_true", help="smoke run on a tiny phantom")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.dataset is None and not args.small:
        p.error("give a DATASET (or --small)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from autoseg.errors import AutosegError
    from autoseg.planning.schedule import parse_duration

    args = parse_args(argv)
    dataset, work = args.dataset, args.work
    if args.small:
        work = work or Path(tempfile.mkdtemp(prefix=f"{BENCHMARK}_small_"))
        make_small(work)
        dataset, work = dataset or str(SMALL_ID), work / "runs"
    tag = ranking_tag(args.label, args.strategy, args.aware or args.strategy == "typical")
    default = (
        DEFAULT_JSON if tag == "typical" else DEFAULT_JSON.with_name(f"{BENCHMARK}_{tag}.json")
    )
    out = args.json or (work / f"{BENCHMARK}.json" if args.small else default)
    try:
        budget = None if args.run_budget is None else parse_duration(args.run_budget)
        result = measure(
            dataset,
            seeds=args.seeds,
            share=args.share,
            run_budget_s=budget,
            config=args.config,
            holdout_fold=args.holdout_fold,
            label=args.label,
            strategy=args.strategy,
            aware=args.aware,
            work=work,
            epochs=args.epochs,
            iterations=args.iterations,
            device=args.device,
            num_workers=0 if args.small and args.workers is None else args.workers,
            progress=not args.no_progress,
        )
    except AutosegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_report(result))
    notes = [
        "one system measured (autoseg): the 'nnunet' fields are empty",
        f"{len(result['seeds'])} seed(s); each model trained under the same budget and "
        "training seed; the added sets are single cases, suggested by M0 or drawn at random",
    ]
    if args.small:
        notes.append("--small: a tiny phantom and a few iterations; the numbers mean nothing")
    write_results(out, BENCHMARK, to_results(result), notes=notes, extra={"measurement": result})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
