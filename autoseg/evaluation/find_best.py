"""``autoseg find-best``: pick the configuration (or ensemble of two) and the post-processing.

Everything is decided on out-of-fold predictions: every training case is scored by the model
of the fold that did not train on it (``<config>/fold_<k>/validation/<case>.npz``), so the
cross-validated Dice is an honest estimate of a new case's, and choosing among ~15 candidates
on it overfits little. The rules, thresholds and the ``inference.json`` fields are in
documentation/find_best.md.

Memory: cases are processed one at a time (each worker holds one case's probabilities of
every configuration, ~ 200 MB for a 320 x 320 x 60 MRI with 3 classes and 5 configurations),
never all cases at once.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoseg import __version__
from autoseg.choices import parse_folds, parse_list
from autoseg.errors import AutosegError
from autoseg.evaluation.metrics import (
    compute_metrics,
    dice,
    map_cases,
    mask_unlabelled,
    read_label_map,
)
from autoseg.io import load_dataset_json, write_json_atomic
from autoseg.io.atomic import TMP_MARK
from autoseg.layout import ResultsLayout
from autoseg.paths import resolve_dataset, results_dir
from autoseg.postprocessing.rules import (
    MIN_SIZE_FRACTION,
    RULE_K_LARGEST,
    RULE_LARGEST,
    RULE_MIN_SIZE,
    RULE_NONE,
    apply_rule,
    component_sizes,
    min_size_from_training,
    min_size_rule,
)

if TYPE_CHECKING:  # scale_views imports this module's TIE_DICE
    from autoseg.evaluation.scale_views import ScaleTrial

INFERENCE_FILE = "inference.json"
SPLITS_FILE = "splits.json"

TIE_DICE = 0.002
"""Candidates whose mean Dice is within 0.002 of the best are tied; the lower mean HD95 wins.

0.002 is below the fold-to-fold spread of the nerve Dice (~ 0.01-0.03 with a few dozen cases),
so such a difference is noise, while a boundary that strays less (HD95) is a real gain.
"""

POSTPROCESS_EPSILON = 1e-4
"""A post-processing rule must raise its label's mean Dice by more than this to be kept."""

K_LARGEST_K = 2
"""k of the k-largest rule: the sciatic nerve splits into its tibial and peroneal branches."""

K_LARGEST_MIN_SHARE = 0.2
"""The k-largest rule is tried only when >= 20 % of the training labels that contain the label
show >= 2 components: otherwise the structure is one piece (largest-component covers it), and
trying one more rule on a few dozen cases adds a chance of keeping a rule by luck."""

# Order of preference among rules with equal gain: least destructive first.
_RULE_PREFERENCE = (RULE_MIN_SIZE, RULE_K_LARGEST, RULE_LARGEST)
_SAME = 1e-12  # "not lower" allows for float summation noise only


# --------------------------------------------------------------------------------------------
# Pure helpers


def candidate_name(configs: Sequence[str]) -> str:
    """``"3d_fullres"`` or ``"2d+3d_fullres"`` for an ensemble."""
    return "+".join(configs)


def enumerate_candidates(configs: Sequence[str]) -> list[tuple[str, ...]]:
    """Every configuration alone, then every pair (an ensemble of two), in the given order."""
    singles = [(c,) for c in configs]
    return singles + list(itertools.combinations(configs, 2))


def segment(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Label map from one or more (K, ...) probability arrays: mean, then argmax (uint8).

    Equal probabilities go to the lower class (background first), as ``np.argmax`` does.
    Classes are compared one at a time (a running maximum), so the float32 sum of an ensemble
    is held for two classes, not all K (measured on 3 x 60 x 320 x 320 float16: as fast as
    ``np.argmax`` for one model, 0.11 s instead of 0.14 s for a pair).
    """
    n_classes = probabilities[0].shape[0]
    out = np.zeros(probabilities[0].shape[1:], dtype=np.uint8)
    best = _class_sum(probabilities, 0)
    for k in range(1, n_classes):
        score = _class_sum(probabilities, k)
        better = score > best
        out[better] = k
        np.maximum(best, score, out=best)
    return out


def _class_sum(probabilities: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Sum over models of class k's probability, in float32 (the mean's argmax is the sum's)."""
    total = probabilities[0][k].astype(np.float32)
    for p in probabilities[1:]:
        total += p[k]
    return total


def score_segmentation(
    seg: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int],
    ignore_label: int | None = None,
) -> dict[int, tuple[float, float]]:
    """``{label: (Dice, HD95 mm)}``. HD95 is metrics' ``hd95_mm_filled``: the image diagonal
    when exactly one mask is empty, so that its mean over cases is always defined. Reference
    voxels of ``ignore_label`` count for nothing."""
    seg, ref = mask_unlabelled(seg, ref, ignore_label)
    m = compute_metrics(seg, ref, spacing, labels)
    return {int(lab): (m[lab]["dice"], m[lab]["hd95_mm_filled"]) for lab in labels}


def summarise_candidate(
    name: str,
    configs: Sequence[str],
    per_case: Sequence[Mapping[int, tuple[float, float]]],
    labels: Sequence[int],
) -> dict[str, Any]:
    """Mean Dice over labels then cases (equal to the mean over labels of the per-label means,
    since every case scores every label), per-label means, and the same for HD95."""
    dices = np.array([[case[lab][0] for lab in labels] for case in per_case], dtype=float)
    hd95 = np.array([[case[lab][1] for lab in labels] for case in per_case], dtype=float)
    return {
        "name": name,
        "configs": list(configs),
        "ensemble": len(configs) > 1,
        "mean_dice": float(dices.mean(axis=1).mean()),
        "per_label_dice": {str(lab): float(dices[:, i].mean()) for i, lab in enumerate(labels)},
        "mean_hd95": float(hd95.mean(axis=1).mean()),
        "per_label_hd95": {str(lab): float(hd95[:, i].mean()) for i, lab in enumerate(labels)},
        "n_cases": len(per_case),
    }


def choose_candidate(
    candidates: Sequence[Mapping[str, Any]], tie_dice: float = TIE_DICE
) -> Mapping[str, Any]:
    """Highest mean Dice; among those within ``tie_dice`` of it, lowest mean HD95, then fewer
    configurations (cheaper to run), then the higher Dice, then the name."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    best = max(c["mean_dice"] for c in candidates)
    tied = [c for c in candidates if best - c["mean_dice"] < tie_dice]
    return min(tied, key=lambda c: (c["mean_hd95"], len(c["configs"]), -c["mean_dice"], c["name"]))


def k_largest_applicable(
    n_components: Sequence[int], min_share: float = K_LARGEST_MIN_SHARE, k: int = K_LARGEST_K
) -> bool:
    """True when at least ``min_share`` of the training labels that contain the label have
    ``k`` or more components (see :data:`K_LARGEST_MIN_SHARE`)."""
    present = [n for n in n_components if n > 0]
    if not present:
        return False
    return sum(n >= k for n in present) / len(present) >= min_share


def decide_postprocessing(
    baseline: Mapping[int, float],
    trials: Mapping[int, Mapping[str, Mapping[int, float]]],
    epsilon: float = POSTPROCESS_EPSILON,
) -> dict[int, str]:
    """Rule name per label from cross-validated mean Dice values.

    ``baseline[label]`` is the label's mean Dice without post-processing; ``trials[label][rule]``
    the mean Dice of every label after applying ``rule`` to ``label``. A rule is kept when it
    raises its own label by more than ``epsilon`` and lowers no other label; of several, the
    largest gain wins, and gains within ``epsilon`` of each other go to the least destructive
    rule (min-size, then k-largest, then largest).
    """
    out: dict[int, str] = {}
    for label in baseline:
        chosen, chosen_gain = RULE_NONE, epsilon
        options = trials.get(label, {})
        for rule in sorted(options, key=_preference):
            after = options[rule]
            gain = after[label] - baseline[label]
            others_ok = all(
                after[other] >= baseline[other] - _SAME for other in baseline if other != label
            )
            if not others_ok or gain <= epsilon:
                continue
            if chosen == RULE_NONE or gain > chosen_gain + epsilon:
                chosen, chosen_gain = rule, gain
        out[label] = chosen
    return out


def _preference(rule: str) -> int:
    return _RULE_PREFERENCE.index(rule) if rule in _RULE_PREFERENCE else len(_RULE_PREFERENCE)


def fold_thresholds(
    min_volume_per_case: Mapping[str, float | None],
    train_cases_per_fold: Mapping[int, Sequence[str]],
    fraction: float = MIN_SIZE_FRACTION,
) -> dict[int, float | None]:
    """Min-size threshold (mm³) of one label for each fold, learned from that fold's training
    cases only, so that a validation case never sets its own threshold."""
    out: dict[int, float | None] = {}
    for fold, cases in train_cases_per_fold.items():
        vols = [min_volume_per_case.get(c) for c in cases]
        out[fold] = min_size_from_training([v for v in vols if v is not None], fraction)
    return out


# --------------------------------------------------------------------------------------------
# Finding the validation outputs


@dataclass
class _Discovery:
    folds: list[int]
    cases: dict[str, int]  # case -> fold it is validated in
    train_cases: dict[int, list[str]]  # fold -> training cases (for min-size thresholds)
    files: dict[str, dict[str, Path]]  # config -> case -> npz
    skipped: dict[str, str]  # config -> why it is not a candidate


def _npz_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        p.name[: -len(".npz")]: p
        for p in folder.iterdir()
        if p.name.endswith(".npz") and not p.name.startswith((".", TMP_MARK)) and p.is_file()
    }


def _config_dirs(res: Path) -> list[str]:
    if not res.is_dir():
        return []
    return sorted(p.name for p in res.iterdir() if p.is_dir() and any(p.glob("fold_*/validation")))


def _load_splits(res: Path) -> list[dict[str, list[str]]] | None:
    path = res / SPLITS_FILE
    if not path.is_file():
        return None
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(splits, list) and all("val" in s for s in splits)
    except (OSError, json.JSONDecodeError, AssertionError, TypeError):
        raise AutosegError(
            "splits.json is not a list of {train, val} folds",
            path=path,
            fix="restore it from the training run (it defines the folds)",
        ) from None
    return splits


def discover(res: Path, configs: Sequence[str] | None, folds: Sequence[int] | None) -> _Discovery:
    """Which configurations have out-of-fold probabilities for every case of every fold."""
    splits = _load_splits(res)
    available = _config_dirs(res)
    explicit = configs is not None
    names = list(configs) if explicit else available
    if not names:
        raise AutosegError(
            "no configuration has validation results",
            path=res,
            fix="train every fold first: autoseg train DATASET CONFIG all",
        )
    if folds is None:
        if splits is not None:
            folds = list(range(len(splits)))
        else:
            folds = sorted(
                int(d.parent.name[5:])
                for c in names
                for d in (res / c).glob("fold_*/validation")
                if d.parent.name[5:].isdigit()
            )
    folds = sorted(set(folds))
    if splits is not None and folds and folds[-1] >= len(splits):
        raise AutosegError(
            f"fold {folds[-1]} does not exist: splits.json has {len(splits)} folds",
            path=res / SPLITS_FILE,
            fix=f"use folds 0-{len(splits) - 1}",
        )
    layout = ResultsLayout(res)
    found = {c: {f: _npz_files(layout.validation_dir(c, f)) for f in folds} for c in names}
    expected: dict[int, set[str]] = {}
    for f in folds:
        if splits is not None:
            expected[f] = set(splits[f]["val"])
        else:
            expected[f] = set().union(*(found[c][f] for c in names))
    files: dict[str, dict[str, Path]] = {}
    skipped: dict[str, str] = {}
    for c in names:
        problems = []
        for f in folds:
            missing = expected[f] - set(found[c][f])
            if not found[c][f]:
                problems.append(f"fold {f} has no validation output")
            elif missing:
                problems.append(f"fold {f} lacks {len(missing)} of {len(expected[f])} cases")
        if problems:
            skipped[c] = "; ".join(problems)
            continue
        files[c] = {case: found[c][f][case] for f in folds for case in expected[f]}
    if explicit and skipped:
        c, why = next(iter(skipped.items()))
        raise AutosegError(
            f"configuration {c!r} is incomplete: {why}",
            path=res / c,
            fix="finish its training (autoseg train DATASET CONFIG all) or leave it out "
            "of --configs",
        )
    if not files:
        raise AutosegError(
            "no configuration has validation outputs for all folds "
            f"{','.join(map(str, folds))} ({'; '.join(f'{c}: {w}' for c, w in skipped.items())})",
            path=res,
            fix="finish training every fold, or choose --folds",
        )
    cases: dict[str, int] = {}
    for f in folds:
        for case in expected[f]:
            if case in cases:
                raise AutosegError(
                    f"case {case!r} is validated in folds {cases[case]} and {f}",
                    path=res,
                    fix="the folds must not overlap; check splits.json",
                )
            cases[case] = f
    all_cases = sorted(cases)
    train_cases = {
        f: list(splits[f]["train"])
        if splits is not None and "train" in splits[f]
        else [c for c in all_cases if cases[c] != f]
        for f in folds
    }
    return _Discovery(folds, dict(sorted(cases.items())), train_cases, files, skipped)


# --------------------------------------------------------------------------------------------
# Per-case work (runs in worker processes)


def _load_probabilities(path: Path, num_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    try:
        with np.load(path) as npz:
            probs = npz["probabilities"]
    except Exception as exc:  # zip/pickle/key errors: a damaged or foreign file
        raise AutosegError(
            f"cannot read validation probabilities ({type(exc).__name__}: {str(exc)[:100]})",
            path=path,
            fix="re-run the validation of this fold (autoseg train ... --validate-only) or "
            "retrain it",
        ) from exc
    if probs.shape != (num_classes, *shape):
        raise AutosegError(
            f"probabilities have shape {probs.shape}, expected {(num_classes, *shape)} "
            "(classes, then the reference label's shape)",
            path=path,
            fix="re-run this fold's validation: it must be written at the raw image's geometry",
        )
    return probs


@dataclass(frozen=True)
class _ScoreJob:
    case: str
    ref: Path
    probs: tuple[tuple[str, Path], ...]
    candidates: tuple[tuple[str, ...], ...]
    labels: tuple[int, ...]
    num_classes: int
    ignore_label: int | None = None  # sparse annotation: reference voxels that count for nothing


@dataclass
class _CaseScores:
    case: str
    scores: dict[str, dict[int, tuple[float, float]]]  # candidate -> label -> (dice, hd95)
    n_components: dict[int, int]  # reference components per label
    min_volume_mm3: dict[int, float | None]  # smallest reference component per label
    spacing: tuple[float, ...]


def _score_case(job: _ScoreJob) -> _CaseScores:
    ref, geometry = read_label_map(job.ref)
    spacing = geometry.spacing_zyx
    probs = {c: _load_probabilities(p, job.num_classes, ref.shape) for c, p in job.probs}
    scores = {
        candidate_name(cand): score_segmentation(
            segment([probs[c] for c in cand]), ref, spacing, job.labels, job.ignore_label
        )
        for cand in job.candidates
    }
    n_comp, min_vol = _reference_stats(ref, spacing, job.labels)  # 'ignore' is not in labels
    return _CaseScores(job.case, scores, n_comp, min_vol, tuple(spacing))


def _reference_stats(
    ref: np.ndarray, spacing: Sequence[float], labels: Sequence[int]
) -> tuple[dict[int, int], dict[int, float | None]]:
    """Per label: number of components, and the smallest one's volume in mm³ (None if none)."""
    voxel = math.prod(spacing)
    n_comp: dict[int, int] = {}
    min_vol: dict[int, float | None] = {}
    for lab in labels:
        sizes = component_sizes(ref, lab)
        n_comp[lab] = int(sizes.size)
        min_vol[lab] = float(sizes[-1]) * voxel if sizes.size else None
    return n_comp, min_vol


@dataclass(frozen=True)
class _StatsJob:
    ref: Path
    labels: tuple[int, ...]


def _stats_case(job: _StatsJob) -> dict[int, float | None]:
    ref, geometry = read_label_map(job.ref)
    return _reference_stats(ref, geometry.spacing_zyx, job.labels)[1]


@dataclass(frozen=True)
class _PostJob:
    case: str
    ref: Path
    probs: tuple[tuple[str, Path], ...]
    labels: tuple[int, ...]
    num_classes: int
    trials: tuple[tuple[int, str, tuple[tuple[str, Any], ...]], ...]  # (label, name, rule)
    ignore_label: int | None = None


def _postprocess_case(job: _PostJob) -> dict[tuple[int, str], dict[int, float]]:
    """Dice of every label, without post-processing (key ``(0, "none")``) and after each
    trial rule applied to its label."""
    ref, geometry = read_label_map(job.ref)
    spacing = geometry.spacing_zyx
    seg = segment([_load_probabilities(p, job.num_classes, ref.shape) for _, p in job.probs])
    labelled = None if job.ignore_label is None else ref != job.ignore_label

    def score(s: np.ndarray, lab: int) -> float:  # Dice over the labelled voxels
        return dice(s, ref, lab) if labelled is None else dice(s[labelled], ref[labelled], lab)

    out = {(0, RULE_NONE): {lab: score(seg, lab) for lab in job.labels}}
    for label, name, rule in job.trials:
        after = apply_rule(seg, label, dict(rule), spacing)
        out[(label, name)] = {lab: score(after, lab) for lab in job.labels}
    return out


# --------------------------------------------------------------------------------------------
# The driver


def find_best(
    dataset: str | int | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    configs: Sequence[str] | str | None = None,
    folds: Sequence[int] | str | None = None,
    progress: bool = True,
    num_workers: int | None = None,
    write: bool = True,
    scale_views: bool = True,
    deadline: float | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Score every configuration and pair, choose one and its post-processing, write
    ``results/<dataset>/inference.json`` (unless ``write=False``) and return its content.

    Four steps: :func:`score_candidates` (out-of-fold Dice of every configuration and
    ensemble), :func:`search_postprocessing` (on the chosen one's segmentations),
    :func:`autoseg.evaluation.scale_views.try_scale_views` (``scale_views``: whether predicting
    at finer grids too helps the chosen one; ``deadline``, ``time.monotonic()`` seconds, stops
    it) and :func:`inference_document` (what ``predict`` and the report read)."""
    raw = resolve_dataset(dataset, root)
    ds = load_dataset_json(raw)
    res = results_dir(root) / raw.name
    found = discover(res, parse_list(configs), parse_folds(folds))
    labels = tuple(sorted(ds.foreground_labels.values()))
    if not labels:
        raise AutosegError("dataset.json has no foreground label", path=raw / "dataset.json")
    num_classes = max(ds.class_labels.values()) + 1  # the network's outputs: no 'ignore'
    ignore = ds.ignore_label
    refs = {}
    for case in found.cases:
        ref = raw / "labelsTr" / f"{case}{ds.file_ending}"
        if not ref.is_file():
            raise AutosegError(
                f"validated case {case!r} has no reference label",
                path=ref,
                fix="restore labelsTr, or check that the results belong to this dataset",
            )
        refs[case] = ref
    scored = score_candidates(
        found, refs, labels, num_classes, num_workers, progress, ignore_label=ignore
    )
    post = search_postprocessing(
        raw,
        ds.file_ending,
        found,
        refs,
        scored,
        labels,
        num_classes,
        num_workers,
        progress,
        ignore_label=ignore,
    )
    trial = None
    if scale_views:
        trial = _scale_trial(
            raw, root, res, found, refs, scored, labels, ignore, deadline, device, progress
        )
    info = inference_document(raw.name, ds.labels, found, scored, post, labels, res, trial)
    if write:
        write_json_atomic(res / INFERENCE_FILE, info)
    return info


def _scale_trial(
    raw: Path,
    root: str | os.PathLike | None,
    res: Path,
    found: _Discovery,
    refs: Mapping[str, Path],
    scored: Scored,
    labels: tuple[int, ...],
    ignore: int | None,
    deadline: float | None,
    device: str,
    progress: bool,
) -> ScaleTrial:
    """The scale-view trial on the chosen candidate, or why it was not run."""
    from autoseg.evaluation.scale_views import SCALE_VIEWS, ScaleTrial, try_scale_views
    from autoseg.paths import preprocessed_dir
    from autoseg.planning.plan import load_plan

    configs = list(scored.chosen["configs"])
    plan_dir = preprocessed_dir(root) / raw.name
    if not (plan_dir / "plans.json").is_file():
        return ScaleTrial(SCALE_VIEWS, False, "not tried: no plans.json beside the results")
    plan = load_plan(plan_dir)
    layout = ResultsLayout(res)
    if not all(layout.checkpoint(c, f).is_file() for c in configs for f in found.folds):
        return ScaleTrial(SCALE_VIEWS, False, "not tried: a fold's final checkpoint is missing")
    return try_scale_views(
        raw,
        plan,
        res,
        configs,
        found.cases,
        refs,
        labels,
        ignore_label=ignore,
        deadline=deadline,
        device=device,
        progress=progress,
    )


@dataclass
class Scored:
    """Every candidate's out-of-fold scores (``per_case``: each case's, with its spacing, its
    components and the smallest reference component per label), ranked, and the choice."""

    per_case: list[Any]
    summaries: list[dict[str, Any]]
    chosen: dict[str, Any]


def score_candidates(
    found: _Discovery,
    refs: Mapping[str, Path],
    labels: tuple[int, ...],
    num_classes: int,
    num_workers: int | None,
    progress: bool,
    ignore_label: int | None = None,
) -> Scored:
    """Dice and HD95 of every configuration and ensemble on every validated case; ranked by
    mean Dice, the winner by :func:`choose_candidate`."""
    usable = list(found.files)
    candidates = tuple(enumerate_candidates(usable))
    jobs = [
        _ScoreJob(
            case,
            refs[case],
            tuple((c, found.files[c][case]) for c in usable),
            candidates,
            labels,
            num_classes,
            ignore_label,
        )
        for case in found.cases
    ]
    per_case = map_cases(
        _score_case, jobs, num_workers=num_workers, progress=progress, desc="score candidates"
    )
    summaries = [
        summarise_candidate(
            candidate_name(cand), cand, [r.scores[candidate_name(cand)] for r in per_case], labels
        )
        for cand in candidates
    ]
    summaries.sort(key=lambda s: -s["mean_dice"])
    return Scored(per_case, summaries, choose_candidate(summaries))


@dataclass
class PostSearch:
    """Each label's decided rule (``decisions``, as inference.json stores it), the mean Dice
    without rules (``baseline``) and under each rule tried (``trial_means``), each label's
    Dice after its rule, and where k-largest was tried."""

    decisions: dict[str, dict[str, Any]]
    baseline: dict[int, float]
    trial_means: dict[int, dict[str, dict[int, float]]]
    post_label: dict[int, float]
    k_ok: dict[int, bool]


def search_postprocessing(
    raw: Path,
    file_ending: str,
    found: _Discovery,
    refs: Mapping[str, Path],
    scored: Scored,
    labels: tuple[int, ...],
    num_classes: int,
    num_workers: int | None,
    progress: bool,
    ignore_label: int | None = None,
) -> PostSearch:
    """Try each label's rules on the chosen candidate's out-of-fold segmentations (min-size
    thresholds learnt per fold from that fold's training labels) and keep those that help."""
    per_case, chosen = scored.per_case, scored.chosen
    min_vol = {lab: {r.case: r.min_volume_mm3[lab] for r in per_case} for lab in labels}
    # Training cases of the chosen folds that were not scored (only when --folds leaves some
    # folds out) still teach the min-size threshold.
    unscored = sorted({c for cs in found.train_cases.values() for c in cs} - set(found.cases))
    unscored = [c for c in unscored if (raw / "labelsTr" / f"{c}{file_ending}").is_file()]
    extra = map_cases(
        _stats_case,
        [_StatsJob(raw / "labelsTr" / f"{c}{file_ending}", labels) for c in unscored],
        num_workers=num_workers,
        progress=progress and bool(unscored),
        desc="training labels",
    )
    for case, vols in zip(unscored, extra):
        for lab in labels:
            min_vol[lab][case] = vols[lab]
    n_comp = {lab: [r.n_components[lab] for r in per_case] for lab in labels}
    thresholds = {lab: fold_thresholds(min_vol[lab], found.train_cases) for lab in labels}
    k_ok = {lab: k_largest_applicable(n_comp[lab]) for lab in labels}
    post_jobs = []
    for r in per_case:
        fold = found.cases[r.case]
        trials: list[tuple[int, str, tuple[tuple[str, Any], ...]]] = []
        for lab in labels:
            trials.append((lab, RULE_LARGEST, (("rule", RULE_LARGEST),)))
            if k_ok[lab]:
                trials.append((lab, RULE_K_LARGEST, (("rule", RULE_K_LARGEST), ("k", K_LARGEST_K))))
            if any(t is not None for t in thresholds[lab].values()):
                t = thresholds[lab][fold]
                # A fold without a learnable threshold leaves its cases untouched.
                rule = min_size_rule(t, r.spacing) if t is not None else {"rule": RULE_NONE}
                trials.append((lab, RULE_MIN_SIZE, tuple(rule.items())))
        post_jobs.append(
            _PostJob(
                r.case,
                refs[r.case],
                tuple((c, found.files[c][r.case]) for c in chosen["configs"]),
                labels,
                num_classes,
                tuple(trials),
                ignore_label,
            )
        )
    post = map_cases(
        _postprocess_case,
        post_jobs,
        num_workers=num_workers,
        progress=progress,
        desc="post-processing",
    )
    keys = set().union(*(p.keys() for p in post))
    means = {k: {lab: float(np.mean([p[k][lab] for p in post])) for lab in labels} for k in keys}
    baseline = means[(0, RULE_NONE)]
    trial_means = {
        lab: {name: means[(lab2, name)] for lab2, name in keys if lab2 == lab} for lab in labels
    }
    decided = decide_postprocessing(baseline, trial_means)

    # Final rules: thresholds from all training labels, voxel counts at the median spacing.
    median_spacing = tuple(float(s) for s in np.median([r.spacing for r in per_case], axis=0))
    decisions: dict[str, dict[str, Any]] = {}
    for lab in labels:
        name = decided[lab]
        if name == RULE_MIN_SIZE:
            vols = [v for v in min_vol[lab].values() if v is not None]
            decisions[str(lab)] = min_size_rule(min_size_from_training(vols), median_spacing)
        elif name == RULE_K_LARGEST:
            decisions[str(lab)] = {"rule": RULE_K_LARGEST, "k": K_LARGEST_K}
        else:
            decisions[str(lab)] = {"rule": name}
    # Rules only remove voxels of their own label, so each label's Dice under the combined
    # decisions is its Dice under its own rule.
    post_label = {
        lab: (trial_means[lab][decided[lab]][lab] if decided[lab] != RULE_NONE else baseline[lab])
        for lab in labels
    }
    return PostSearch(decisions, baseline, trial_means, post_label, k_ok)


def inference_document(
    dataset: str,
    label_values: Mapping[str, int],
    found: _Discovery,
    scored: Scored,
    post: PostSearch,
    labels: tuple[int, ...],
    res: Path,
    trial: ScaleTrial | None = None,
) -> dict[str, Any]:
    """``inference.json``: the choice, its post-processing, every candidate's scores, the
    estimate's kind and how the choice was made. ``tta_scales``: the scale views predict
    uses (``[1.0]`` unless the trial kept them; ``scale_views`` says why)."""
    chosen, baseline, trial_means = scored.chosen, post.baseline, post.trial_means
    names = {v: k for k, v in label_values.items()}
    if trial is None:
        from autoseg.evaluation.scale_views import SCALE_VIEWS, ScaleTrial

        trial = ScaleTrial(SCALE_VIEWS, False, "not tried (--no-scale-views)")
    return {
        "dataset": dataset,
        "configurations": list(chosen["configs"]),
        "folds": list(found.folds),
        "ensemble": len(chosen["configs"]) > 1,
        "labels": {str(lab): names.get(lab, str(lab)) for lab in labels},
        "postprocessing": post.decisions,
        "tta_scales": trial.tta_scales,
        "scale_views": trial.to_dict(),
        "postprocessing_trials": {
            str(lab): {
                RULE_NONE: _r(baseline[lab]),
                **{n: _r(v[lab]) for n, v in sorted(trial_means[lab].items(), key=_trial_order)},
            }
            for lab in labels
        },
        "candidates": [_rounded(s) for s in scored.summaries],
        "chosen": chosen["name"],
        "cv_dice": _r(chosen["mean_dice"]),
        "cv_dice_postprocessed": _r(float(np.mean([post.post_label[lab] for lab in labels]))),
        "cv_dice_per_label_postprocessed": {str(lab): _r(post.post_label[lab]) for lab in labels},
        "n_cases": len(scored.per_case),
        "estimate": estimate_kind(found.folds, _n_splits(res), len(scored.per_case)),
        "skipped_configurations": dict(found.skipped),
        "selection": {
            "score": "mean over cases of the mean foreground Dice over labels",
            "tie_dice": TIE_DICE,
            "tie_breaker": "mean HD95 (mm, image diagonal when one mask is empty)",
            "postprocessing_epsilon": POSTPROCESS_EPSILON,
            "min_size_fraction": MIN_SIZE_FRACTION,
            "k_largest_k": K_LARGEST_K,
            "k_largest_min_share": K_LARGEST_MIN_SHARE,
            "k_largest_tried": {str(lab): post.k_ok[lab] for lab in labels},
        },
        "created_by": f"autoseg {__version__}",
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _n_splits(res: Path) -> int | None:
    try:
        return len(json.loads((res / "splits.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def estimate_kind(folds: Sequence[int], n_splits: int | None, n_cases: int) -> dict[str, Any]:
    """What the scores above estimate: a cross-validation when every fold of ``splits.json``
    was validated, else a hold-out of the validated folds' cases — one training split when a
    short time budget planned one model trained longer (``plans.json`` ``schedule.folds``)."""
    folds = sorted(folds)
    full = n_splits is not None and folds == list(range(n_splits))
    if full:
        text = f"{n_splits}-fold cross-validation: every training case scored out of fold"
    else:
        text = (
            f"hold-out of fold(s) {', '.join(map(str, folds))} ({n_cases} cases) — not a "
            "cross-validation: "
            + ("one model on one training split" if len(folds) == 1 else "some folds only")
        )
    return {
        "kind": "cross_validation" if full else "hold_out",
        "folds": folds,
        "n_splits": n_splits,
        "n_cases": n_cases,
        "text": text,
    }


def _trial_order(item: tuple[str, Any]) -> int:
    return (RULE_LARGEST, RULE_K_LARGEST, RULE_MIN_SIZE).index(item[0])


def _r(x: float) -> float:
    return round(float(x), 6)


def _rounded(summary: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if isinstance(v, float):
            out[k] = _r(v)
        elif isinstance(v, dict):
            out[k] = {kk: _r(vv) for kk, vv in v.items()}
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# Report


def _describe_rule(rule: Mapping[str, Any]) -> str:
    name = rule.get("rule")
    if name == RULE_LARGEST:
        return "keep the largest component"
    if name == RULE_K_LARGEST:
        return f"keep the {rule.get('k')} largest components"
    if name == RULE_MIN_SIZE:
        return (
            f"remove components < {rule.get('min_volume_mm3', 0):.4g} mm³ "
            f"(~{rule.get('min_voxels')} voxels)"
        )
    return "none"


def format_table(rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """Rows of cells as aligned columns (first row = header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if ra else c.ljust(w) for c, w, ra in zip(r, widths, right)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_find_best(info: Mapping[str, Any]) -> str:
    """The candidates table, the choice and the post-processing decision, as printed."""
    labels = list(info["labels"])
    header = ["", "candidate", "mean Dice", *(f"{info['labels'][lab]}" for lab in labels), "HD95"]
    rows = [header]
    for c in info["candidates"]:
        rows.append(
            [
                "*" if c["name"] == info["chosen"] else "",
                c["name"],
                f"{c['mean_dice']:.4f}",
                *(f"{c['per_label_dice'][lab]:.4f}" for lab in labels),
                f"{c['mean_hd95']:.2f} mm",
            ]
        )
    right = [False, False, True, *([True] * len(labels)), True]
    out = [
        f"{info['n_cases']} cases, folds {','.join(map(str, info['folds']))}; mean foreground "
        f"Dice (per-label Dice), HD95 as tie-breaker within {TIE_DICE}",
        format_table(rows, right),
        "",
        f"chosen: {info['chosen']}" + (" (ensemble: mean of probabilities)" * info["ensemble"]),
        "post-processing (kept only if it raises the label's cross-validated Dice by more than "
        f"{POSTPROCESS_EPSILON:g}):",
    ]
    for lab in labels:
        trials = info["postprocessing_trials"][lab]
        tried = ", ".join(f"{n} {v:.4f}" for n, v in trials.items())
        out.append(
            f"  {info['labels'][lab]} ({lab}): {_describe_rule(info['postprocessing'][lab])}  "
            f"[Dice: {tried}]"
        )
    out.append(
        f"cross-validated Dice: {info['cv_dice']:.4f} -> {info['cv_dice_postprocessed']:.4f} "
        "with post-processing"
    )
    views = info.get("scale_views")
    if views:
        scales = " / ".join(f"{s:g}" for s in views["scales"])
        verdict = "kept" if views["adopted"] else "not kept"
        counts = ""
        if views.get("n_cases"):
            counts = (
                f"; {views.get('cases_better', 0)} cases better, "
                f"{views.get('cases_worse', 0)} worse"
            )
        out.append(f"scale views {scales}: {verdict} ({views['reason']}{counts})")
    for c, why in info.get("skipped_configurations", {}).items():
        out.append(f"skipped {c}: {why}")
    return "\n".join(out)
