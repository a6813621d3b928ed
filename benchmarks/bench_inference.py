"""Benchmark: ``autoseg predict`` against ``nnUNetv2_predict`` with the SAME weights.

Usage (from the repository root; development settings on core 1 with one thread)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c 1 .venv/bin/python
        -m benchmarks.bench_inference [--kinds mri3d us2d] [--cases 10] [--folds 0]
        [--repeats 3] [--threads 1] [--cpus 1]
        [--device cpu|cuda] [--tta on off] [--train-cases 20 30] [--train-epochs 4]
        [--train-iterations 50] [--plan-budget 900] [--model-root ROOT --dataset NAME ...
        [--test-set phantoms|validation]]
        [--json benchmarks/results/inference.json] [--workdir DIR]

Smoke run: ``... bench_inference.py --cases 3 --folds 0 --train-epochs 1 --train-iterations 20
--repeats 1``. On a machine with cores to spare, run this script itself on a core outside
``--cpus`` (e.g. ``taskset -c 0 ... --cpus 1-4 --threads 4``): its memory sampler reads
``/proc`` every 20 ms and should not share the measured cores.

**Model.** With ``--model-root ROOT --dataset NAME [NAME ...]`` the trained autoseg datasets
under ``ROOT`` are used (``results/<dataset>/<config>/fold_k/checkpoint_final.pt``; the kind of
test phantom follows the plan's dimensionality). Otherwise a model is trained here, under
``--workdir`` (resumable): phantom (seed 1) -> ``convert_folder`` -> ``run_plan`` with the
configuration restricted to ``--config-3d``/``--config-2d`` and a time budget of
``--plan-budget`` seconds on ``--device`` (a plan sized for that device) -> preprocessing ->
``train`` of every ``--folds`` fold for ``--train-epochs`` x ``--train-iterations``. Such a
model is barely trained; its Dice only shows that both pipelines agree, not what autoseg
reaches (benchmarks/accuracy_cv.py does that). Every fold's ``checkpoint_final.pt`` is then
converted with ``benchmarks/nnunet_bridge.py`` (``nnunet_plans_from_autoseg`` +
``nnunet_state_dict`` + ``write_nnunet_model``) into an nnU-Net results folder with plans
``autosegPlans``: both systems run the same network, weights, patch size and target spacing.

**Test set.** ``--cases`` held-back phantoms (seed ``--seed``, default 2: subjects never seen
in training) of the default shapes: 3D thigh MRI 24x160x160 at 3x0.75x0.75 mm, 2D wrist
ultrasound 256x320. They go through ``convert_folder`` like the training data, so both systems
read the same ``<case>_0000.nii.gz`` files; the masks are kept for Dice. With ``--model-root``
and ``--test-set validation`` the test set is instead the model's own dataset: the first
``--cases`` validation cases of its first fold (images that fold never trained on; every
channel, linked) — real data such as usgra-seg's 2D ultrasound frames or the BraTS volumes.

**What is timed.** Each CLI call as a user runs it, in a fresh interpreter, pinned with
``taskset -c CPUS`` and ``OMP_NUM_THREADS = MKL_NUM_THREADS = --threads``; wall time, CPU time
(user + system of the process tree) and peak memory (largest summed PSS of the process tree,
sampled every 20 ms; ``results.run_measured``):

* autoseg: ``python -m autoseg predict -i IN -o OUT -d DATASET --config C --folds 0,1
  --no-postprocessing --no-progress --device D [--no-tta]`` with ``AUTOSEG_ROOT`` set. The
  explicit ``--config``/``--folds`` bypass ``inference.json``, so no post-processing runs
  (``--no-postprocessing`` says it twice); neither system post-processes.
* nnU-Net: ``nnUNetv2_predict -i IN -o OUT -d DatasetNNN_Name -c C -p autosegPlans
  -tr nnUNetTrainer -f 0 1 -device D -npp 1 -nps 1 --disable_progress_bar [--disable_tta]``,
  run as ``.venv-bench/bin/python -c SHIM ...`` where SHIM only makes ``torch.set_num_threads``
  use ``--threads`` and then calls nnU-Net's own ``predict_entry_point`` (its console script
  does the same import and call). Without it nnU-Net's ``-device cpu`` sets
  ``multiprocessing.cpu_count()`` threads (all cores of the machine, not the pinned ones).

Both start with compiled bytecode: ``PYTHONPYCACHEPREFIX`` points both at one cache in the
work folder, filled by the warm-up calls (``PYTHONDONTWRITEBYTECODE`` is removed for them).
Each system is called on all ``--cases`` cases and on 1 case; per case =
``(t_all - t_one) / (n - 1)`` removes start-up (interpreter, imports, model loading) and is the
figure the target (autoseg <= 0.5 x nnU-Net at equal Dice, within 0.005) applies to; the whole
calls are reported too. One untimed warm-up call per system, then ``--repeats`` repetitions; in
each, TTA on and off, the two systems alternate (and swap who goes first every repetition) so
that other work on the machine hits both alike; medians are reported.

**Dice** of each system's predictions (last repetition, all cases) against the phantom masks,
mean over cases and foreground labels (``autoseg.evaluation.metrics.dice``), their difference,
and the Dice between the two systems' predictions (agreement; 1.0 = identical label maps).

**Not equal between the systems** (also written to the JSON ``notes``):

* nnU-Net starts one spawned preprocessing process (``-npp 1``) and one spawned export process
  (``-nps 1``), each importing torch: more start-up and memory (counted: they are its process
  tree). autoseg reads the next case in a thread of the one process.
* Start-up differs by design: nnU-Net's ``torch.load(weights_only=False)`` of its checkpoint
  format vs autoseg's weights-only load; both build the network from their plan.
* nnU-Net keeps the whole prediction on the device (``perform_everything_on_device``, its
  default); on CPU that is the same memory.
* Ensembling and TTA: nnU-Net averages logits over mirrors and softmax at the end; autoseg
  averages softmax probabilities. Both mirror all axes; Gaussian weighting with sigma = 1/8
  patch and half-patch steps on both.
* Preprocessing and export are each system's own code (cropping to non-zero, normalisation,
  resampling and its inversion: nnU-Net resamples probabilities back with its own
  ``resample_data_or_seg``, autoseg with its separable matrices). On the phantoms the target
  spacing equals the image spacing, so no resampling happens on either side unless the plan
  changes the spacing.
* The exported nnU-Net model carries zero conv biases before instance norm (autoseg has none);
  they cancel exactly under instance norm.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from autoseg.layout import ResultsLayout
from benchmarks.results import (
    REPO,
    Result,
    format_table,
    from_runs,
    math_threads_env,
    run_measured,
    write_results,
)

BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
AUTOSEG_PYTHON = REPO / ".venv" / "bin" / "python"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "inference.json"
PLANS_NAME = "autosegPlans"
TRAINER = "nnUNetTrainer"
DICE_TOLERANCE = 0.005  # the "equal Dice"
TIME_TARGET = 0.5  # autoseg seconds per case <= 0.5 x nnU-Net's

# nnU-Net's own entry point, with torch.set_num_threads held to the benchmark's thread count
# (its -device cpu branch asks for multiprocessing.cpu_count(), i.e. every core of the machine).
# A trainer class that nnU-Net does not ship (nnUNetTrainerBudget) is looked up first in the
# files of nnUNet_extTrainer: nnU-Net's own search imports every trainer module it ships on
# the way, and its Primus trainers need timm, which .venv-bench leaves out on purpose
# (make_bench_venv.sh). Trainers nnU-Net ships are found by its own search as before.
NNUNET_SHIM = (
    "import os, sys, torch, importlib.util, pathlib\n"
    "_n = int(os.environ['BENCH_TORCH_THREADS'])\n"
    "_set = torch.set_num_threads\n"
    "torch.set_num_threads = lambda _asked: _set(_n)\n"
    "import nnunetv2.inference.predict_from_raw_data as _pr\n"
    "_find = _pr.recursive_find_trainer_class_by_name\n"
    "def _ext_first(name):\n"
    "    ext = os.environ.get('nnUNet_extTrainer')\n"
    "    for f in sorted(pathlib.Path(ext).glob('*.py')) if ext else []:\n"
    "        spec = importlib.util.spec_from_file_location('ext_' + f.stem, f)\n"
    "        mod = importlib.util.module_from_spec(spec)\n"
    "        spec.loader.exec_module(mod)\n"
    "        if hasattr(mod, name):\n"
    "            return getattr(mod, name)\n"
    "    return _find(name)\n"
    "_pr.recursive_find_trainer_class_by_name = _ext_first\n"
    "from nnunetv2.inference.predict_from_raw_data import predict_entry_point\n"
    "sys.argv[0] = 'nnUNetv2_predict'\n"
    "sys.exit(predict_entry_point())\n"
)


@dataclass(frozen=True)
class Kind:
    """A phantom kind: what the self-trained model and the test set are made of."""

    kind: str  # autoseg.phantoms kind
    label: str  # short name in the result table
    dataset_id: int
    name: str
    channel: str
    default_train_cases: int


KINDS = {
    "mri3d": Kind("mri3d", "3D MRI", 961, "BenchInferThigh", "T2", 20),
    "us2d": Kind("us2d", "2D US", 962, "BenchInferWrist", "US", 30),
}
TEST_ID_OFFSET = 10  # test sets are converted as dataset id + 10 under their own root


@dataclass
class Model:
    """A trained autoseg dataset ready to benchmark: where it lives and what to predict with."""

    kind: Kind
    root: Path
    folder: str  # autoseg dataset folder name, e.g. 961_BenchInferThigh
    config: str
    folds: list[int]
    plan: dict[str, Any]


@dataclass
class Measured:
    """One system's measurements for one TTA setting, one entry per repetition."""

    t_all: list[float] = field(default_factory=list)
    t_one: list[float] = field(default_factory=list)
    cpu_all: list[float] = field(default_factory=list)
    cpu_one: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- pure helpers
def per_case_seconds(t_all: float, t_one: float, n_cases: int) -> float:
    """Seconds per case without start-up: the call on n cases minus the call on 1 case pays
    start-up once in both, so the difference is n - 1 cases of pure prediction work."""
    if n_cases < 2:
        raise ValueError("per-case time needs at least 2 cases (the 1-case call is subtracted)")
    return (t_all - t_one) / (n_cases - 1)


def per_case_runs(t_all: Sequence[float], t_one: Sequence[float], n_cases: int) -> list[float]:
    """Per-case seconds of each repetition (its all-case and 1-case call paired)."""
    return [per_case_seconds(a, o, n_cases) for a, o in zip(t_all, t_one, strict=True)]


def call_order(repeat: int) -> tuple[str, str]:
    """Which system goes first in a repetition: swapped every time, so neither always runs
    right after the other (warm caches, a burst of another job)."""
    return ("autoseg", "nnunet") if repeat % 2 == 0 else ("nnunet", "autoseg")


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    """``taskset -c CPUS cmd`` (children inherit the affinity); the command as is without."""
    return ["taskset", "-c", cpus, *cmd] if cpus else list(cmd)


def thread_env(base: dict[str, str], threads: int) -> dict[str, str]:
    """The same thread count for every math library in both systems' processes."""
    env = math_threads_env(base, threads)
    env["BENCH_TORCH_THREADS"] = str(threads)
    return env


def bytecode_env(base: dict[str, str], cache: Path) -> dict[str, str]:
    """Both systems start with compiled bytecode, cached in one folder of ours: a user's
    installation has it, and with ``PYTHONDONTWRITEBYTECODE`` set (as on some machines) the
    editable autoseg would recompile its modules on every call while the installed nnunetv2
    ships its ``.pyc`` files. The warm-up calls fill the cache."""
    env = dict(base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def autoseg_command(
    python: str | Path,
    inp: Path,
    out: Path,
    dataset: str,
    config: str,
    folds: Sequence[int],
    *,
    tta: bool,
    device: str,
) -> list[str]:
    """``autoseg predict`` with an explicit configuration and folds (no inference.json, hence
    no post-processing)."""
    cmd = [str(python), "-m", "autoseg", "predict", "-i", str(inp), "-o", str(out)]
    cmd += ["-d", dataset, "--config", config, "--folds", ",".join(str(f) for f in folds)]
    cmd += ["--no-postprocessing", "--no-progress", "--device", device]
    return cmd + ([] if tta else ["--no-tta"])


def nnunet_command(
    python: str | Path,
    inp: Path,
    out: Path,
    dataset: str,
    config: str,
    folds: Sequence[int],
    *,
    tta: bool,
    device: str,
    plans_name: str = PLANS_NAME,
    trainer: str = TRAINER,
) -> list[str]:
    """``nnUNetv2_predict`` through :data:`NNUNET_SHIM` with one preprocessing and one export
    process (its minimum)."""
    cmd = [str(python), "-c", NNUNET_SHIM, "-i", str(inp), "-o", str(out), "-d", dataset]
    cmd += ["-c", config, "-p", plans_name, "-tr", trainer, "-f", *(str(f) for f in folds)]
    cmd += ["-device", device, "-npp", "1", "-nps", "1", "--disable_progress_bar"]
    return cmd + ([] if tta else ["--disable_tta"])


def kind_of_dim(dim: int) -> str:
    """Test phantom for a trained dataset: 3D data -> thigh MRI, 2D -> wrist ultrasound."""
    if dim not in (2, 3):
        raise ValueError(f"no phantom for {dim}D data")
    return "mri3d" if dim == 3 else "us2d"


def foreground_labels(labels: dict[str, int]) -> list[int]:
    """Label values to score (background 0 left out)."""
    return sorted(v for v in labels.values() if v != 0)


def mean_dice(pred: Any, ref: Any, labels: Sequence[int]) -> float:
    """Mean Dice over ``labels`` of one case (a label in neither counts 1.0, autoseg's rule)."""
    from autoseg.evaluation.metrics import dice

    return float(statistics.fmean(dice(pred, ref, lab) for lab in labels))


def case_dices(pred_dir: Path, ref_dir: Path, cases: Sequence[str], labels: Sequence[int]):
    """Per-case mean Dice of ``pred_dir/<case>.nii.gz`` against ``ref_dir/<case>.nii.gz``."""
    from autoseg.io import read_image

    out = []
    for case in cases:
        pred = read_image(pred_dir / f"{case}.nii.gz").array
        ref = read_image(ref_dir / f"{case}.nii.gz").array
        if pred.shape != ref.shape:
            raise RuntimeError(f"{pred_dir / case}: shape {pred.shape} != reference {ref.shape}")
        out.append(mean_dice(pred, ref, labels))
    return out


UNMEASURABLE = (
    "per-case time not measurable: the 1-case call took as long as the n-case call (start-up "
    "noise exceeds the work of n - 1 cases); use more --cases or a quieter machine"
)


def measurable(*runs: Sequence[float]) -> bool:
    """A per-case median that is not positive means start-up noise swamped the n - 1 cases'
    work; a ratio of such numbers says nothing, so no verdict is drawn from it."""
    return all(statistics.median(r) > 0 for r in runs if r)


def dice_note(autoseg: float, nnunet: float, agreement: float) -> str:
    """Dice difference against the issue's tolerance, and how alike the two outputs are."""
    diff = autoseg - nnunet
    verdict = "equal" if abs(diff) <= DICE_TOLERANCE else "NOT equal"
    return (
        f"Dice autoseg - nnU-Net = {diff:+.4f} ({verdict} within {DICE_TOLERANCE}); "
        f"Dice between the two systems' predictions {agreement:.4f}"
    )


def summarise(
    label: str,
    tta: bool,
    n_cases: int,
    ours: Measured,
    theirs: Measured,
    dices: dict[str, list[float]] | None,
) -> list[Result]:
    """The Results of one dataset and TTA setting (see the module docstring)."""
    head = f"{label} TTA {'on' if tta else 'off'}"
    equal = ""
    if dices and dices.get("autoseg") and dices.get("nnunet"):
        diff = statistics.fmean(dices["autoseg"]) - statistics.fmean(dices["nnunet"])
        equal = f"Dice diff {diff:+.4f} ({'within' if abs(diff) <= DICE_TOLERANCE else 'OUTSIDE'}"
        equal += f" {DICE_TOLERANCE}: the target needs equal Dice)"
    pc = {s: per_case_runs(m.t_all, m.t_one, n_cases) for s, m in (("a", ours), ("n", theirs))}
    cpu = {s: per_case_runs(m.cpu_all, m.cpu_one, n_cases) for s, m in (("a", ours), ("n", theirs))}
    target: float | None = TIME_TARGET
    if not measurable(pc["a"], pc["n"]):
        target = None  # no verdict from a negative or zero difference of two noisy calls
        equal = (equal + "; " if equal else "") + UNMEASURABLE
    out = [
        from_runs(
            f"{head}: s/case",
            "wall seconds per case, start-up excluded",
            "s",
            pc["a"],
            pc["n"],
            "lower",
            target,
            note=equal,
        ),
        from_runs(
            f"{head}: CPU s/case",
            "CPU seconds per case, start-up excluded",
            "s",
            cpu["a"],
            cpu["n"],
            "lower",
        ),
        from_runs(
            f"{head}: call, {n_cases} cases",
            "wall seconds of the whole CLI call",
            "s",
            ours.t_all,
            theirs.t_all,
            "lower",
        ),
        from_runs(
            f"{head}: call, 1 case",
            "wall seconds of a CLI call on 1 case",
            "s",
            ours.t_one,
            theirs.t_one,
            "lower",
        ),
        from_runs(
            f"{head}: CPU s, call, 1 case",
            "CPU seconds of a CLI call on 1 case (start-up + 1 case)",
            "s",
            ours.cpu_one,
            theirs.cpu_one,
            "lower",
        ),
        from_runs(
            f"{head}: peak memory",
            "peak PSS of the process tree",
            "MB",
            ours.peak_mb,
            theirs.peak_mb,
            "lower",
        ),
    ]
    if dices is not None:
        a, n, agree = (dices.get(k, []) for k in ("autoseg", "nnunet", "agreement"))
        out.append(
            Result(
                f"{head}: Dice vs masks",
                "mean Dice over cases and foreground labels",
                "Dice",
                statistics.fmean(a) if a else None,
                statistics.fmean(n) if n else None,
                "higher",
                None,
                {"autoseg": list(a), "nnunet": list(n), "agreement": list(agree)},
                dice_note(statistics.fmean(a), statistics.fmean(n), statistics.fmean(agree))
                if a and n and agree
                else "",
            )
        )
    return out


# --------------------------------------------------------------------------- data and models
def convert_phantom(
    kind: Kind, n_cases: int, seed: int, source: Path, root: Path, dataset_id: int, name: str
) -> Path:
    """Generate a phantom and convert it into ``root/raw`` (skipped when already there);
    returns the raw dataset folder."""
    from autoseg.io.convert import convert_folder
    from autoseg.paths import dataset_folder_name, raw_dir
    from autoseg.phantoms import generate_phantom

    target = raw_dir(root) / dataset_folder_name(dataset_id, name)
    if (target / "dataset.json").is_file():
        found = json.loads((target / "dataset.json").read_text("utf-8"))["numTraining"]
        if found != n_cases:
            raise SystemExit(f"{target} holds {found} cases, not {n_cases}: give another --workdir")
        return target
    generate_phantom(kind.kind, source, n_cases, seed=seed, overwrite=True, progress=False)
    result = convert_folder(
        source,
        name,
        dataset_id,
        root=root,
        label_names=["nerve"],
        channel_names=[kind.channel],
        overwrite=True,
        num_workers=1,
        progress=False,
    )
    return result.target


def train_model(kind: Kind, args: argparse.Namespace, work: Path, config: str) -> Model:
    """Phantom -> convert -> time-budgeted plan -> preprocess -> a few iterations per fold."""
    from autoseg.evaluation.validation import validate_fold
    from autoseg.planning.plan import load_plan
    from autoseg.planning.planner import run_plan
    from autoseg.training.run import options_from_plan, train
    from autoseg.training.timing import trainer_step_measure

    root = work / "autoseg_root"
    n_train = args.train_cases.get(kind.kind, kind.default_train_cases)
    raw = convert_phantom(
        kind, n_train, 1, work / "source" / kind.kind, root, kind.dataset_id, kind.name
    )
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    plans = run_plan(
        raw.name,
        root,
        configs=[config],
        time_budget_s=args.plan_budget,
        device=device,
        progress=False,
        step_measure=trainer_step_measure(),
    )
    plan = load_plan(plans.parent)
    if config not in plan.configurations:
        raise SystemExit(f"the planner left {config} out: {plan.why.get('configurations')}")
    options = options_from_plan(
        plan,
        config,
        epochs=args.train_epochs,
        iterations_per_epoch=args.train_iterations,
        val_iterations=max(1, min(10, args.train_iterations // 5)),
        device=args.device,
        num_workers=0,
    )
    print(
        f"[{kind.label}] training {raw.name} {config} folds {args.folds}: "
        f"{args.train_epochs} x {args.train_iterations} iterations",
        flush=True,
    )
    train(
        raw.name, config, args.folds, root, options=options, progress=False, validate=validate_fold
    )
    return Model(kind, root, raw.name, config, list(args.folds), _plan_dict(root, raw.name))


def _plan_dict(root: Path, folder: str) -> dict[str, Any]:
    from autoseg.paths import preprocessed_dir

    return json.loads((preprocessed_dir(root) / folder / "plans.json").read_text("utf-8"))


def existing_model(root: Path, dataset: str, args: argparse.Namespace) -> Model:
    """A dataset trained elsewhere: its plan tells the kind of test phantom to use."""
    from autoseg.paths import resolve_dataset

    folder = resolve_dataset(dataset, root).name
    plan = _plan_dict(root, folder)
    kind = KINDS[kind_of_dim(int(plan["fingerprint"]["dim"]))]
    config = args.config_3d if kind.kind == "mri3d" else args.config_2d
    return Model(kind, root, folder, config, list(args.folds), plan)


def check_exportable(model: Model) -> None:
    """nnU-Net has no 2.5D stacks and no localiser crop: such configurations cannot be
    compared with the same weights."""
    cfg = model.plan["configurations"].get(model.config)
    if cfg is None:
        raise SystemExit(f"{model.folder}: configuration {model.config} not in the plan")
    if int(cfg.get("context_slices", 1) or 1) != 1 or cfg.get("crop"):
        raise SystemExit(
            f"{model.folder} {model.config}: 2.5D or crop configurations have no "
            "nnU-Net counterpart; choose another --config"
        )
    for fold in model.folds:
        layout = ResultsLayout(model.root / "results" / model.folder)
        path = layout.fold_dir(model.config, fold)
        if not layout.checkpoint(model.config, fold).is_file():
            raise SystemExit(f"{path}: no checkpoint_final.pt (train the fold first)")


def held_back_set(model: Model, n_cases: int, seed: int, work: Path) -> tuple[Path, Path, Path]:
    """(images, masks, folder with the first case only) of the held-back phantom cases."""
    kind = model.kind
    root = work / "test_root"
    raw = convert_phantom(
        kind,
        n_cases,
        seed,
        work / "test_source" / kind.kind,
        root,
        kind.dataset_id + TEST_ID_OFFSET,
        f"{kind.name}Test{seed}",
    )
    images, masks = raw / "imagesTr", raw / "labelsTr"
    first = sorted(p for p in images.iterdir() if p.name.endswith("_0000.nii.gz"))[0]
    one = work / "test_one" / kind.kind
    if not (one / first.name).is_file():
        one.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(first, one / first.name)
    return images, masks, one


def validation_set(model: Model, n_cases: int, work: Path) -> tuple[Path, Path, Path]:
    """(images, masks, folder with the first case only) from the model's own dataset: the
    first ``n_cases`` validation cases of its first fold (images that fold never trained on),
    every channel linked, not copied."""
    from autoseg.io import list_cases, load_dataset_json
    from autoseg.paths import raw_dir

    raw = raw_dir(model.root) / model.folder
    splits_file = model.root / "results" / model.folder / "splits.json"
    val = json.loads(splits_file.read_text(encoding="utf-8"))[model.folds[0]]["val"]
    wanted = sorted(val)[:n_cases]
    if len(wanted) < 2:
        raise SystemExit(f"{splits_file}: fold {model.folds[0]} has < 2 validation cases")
    cases = {c.case_id: c for c in list_cases(raw, load_dataset_json(raw))}
    base = work / "test_validation" / model.folder
    images, masks, one = base / "images", base / "masks", base / "one"
    for folder in (images, masks, one):
        folder.mkdir(parents=True, exist_ok=True)
    for i, cid in enumerate(wanted):
        case = cases[cid]
        links = [(f, images / f.name) for f in case.images]
        links.append((case.label, masks / case.label.name))
        links += [(f, one / f.name) for f in case.images] if i == 0 else []
        for src, dst in links:
            if not dst.exists():
                dst.symlink_to(src.resolve())
    return images, masks, one


def export_to_nnunet(model: Model, nnunet_results: Path) -> str:
    """Write the nnU-Net results folder with every fold's weights; returns its dataset name."""
    from autoseg.inference.predictor import trained_mirror_axes
    from autoseg.io import load_dataset_json
    from autoseg.io.nnunet import nnunet_folder_name
    from autoseg.networks.checkpoint import load_checkpoint
    from autoseg.paths import preprocessed_dir, raw_dir
    from autoseg.planning.plan import plan_from_dict
    from benchmarks import nnunet_bridge as bridge

    raw = raw_dir(model.root) / model.folder
    nn_name = nnunet_folder_name(raw)
    fp_path = preprocessed_dir(model.root) / model.folder / "fingerprint.json"
    fingerprint = json.loads(fp_path.read_text("utf-8")) if fp_path.is_file() else None
    nn_plans = bridge.nnunet_plans_from_autoseg(
        model.plan, model.config, nn_name, fingerprint, plans_name=PLANS_NAME
    )
    states = {}
    for fold in model.folds:
        layout = ResultsLayout(model.root / "results" / model.folder)
        state = load_checkpoint(layout.checkpoint(model.config, fold))
        states[fold] = bridge.nnunet_state_dict(state["model"], json.loads(state["arch"]))
    dataset_json = load_dataset_json(raw).to_dict(nnunet_only=True)
    # the same test-time mirroring as autoseg: the axes its training mirrored
    axes = trained_mirror_axes(plan_from_dict(model.plan), model.config)
    bridge.write_nnunet_model(
        nnunet_results,
        nn_name,
        nn_plans,
        model.config,
        dataset_json,
        states,
        trainer=TRAINER,
        mirror_axes=axes,
    )
    return nn_name


# --------------------------------------------------------------------------- measurement
def timed_call(cmd: list[str], env: dict[str, str], out: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak MB) of one CLI call into a fresh output folder."""
    shutil.rmtree(out, ignore_errors=True)
    return run_measured(cmd, env)


def measure(
    model: Model,
    nn_name: str | None,
    images: Path,
    one: Path,
    work: Path,
    args: argparse.Namespace,
) -> tuple[dict[tuple[str, bool], Measured], dict[tuple[str, bool], Path]]:
    """Alternating repetitions of both systems' CLI calls; returns the measurements and the
    output folders of the last all-case calls (for Dice)."""
    base = bytecode_env(thread_env(dict(os.environ), args.threads), work / "pycache")
    env = {
        "autoseg": {**base, "AUTOSEG_ROOT": str(model.root)},
        "nnunet": {
            **base,
            "nnUNet_raw": str(work / "nnunet_raw"),
            "nnUNet_preprocessed": str(work / "nnunet_preprocessed"),
            "nnUNet_results": str(work / "nnunet_results"),
            "nnUNet_n_proc_DA": "0",
            "nnUNet_def_n_proc": "1",
        },
    }
    systems = ["autoseg"] + (["nnunet"] if nn_name else [])
    out_root = work / "predictions" / model.kind.kind

    def command(system: str, inp: Path, out: Path, tta: bool) -> list[str]:
        if system == "autoseg":
            cmd = autoseg_command(
                args.autoseg_python,
                inp,
                out,
                model.folder,
                model.config,
                model.folds,
                tta=tta,
                device=args.device,
            )
        else:
            assert nn_name is not None
            cmd = nnunet_command(
                args.nnunet_python,
                inp,
                out,
                nn_name,
                model.config,
                model.folds,
                tta=tta,
                device=args.device,
            )
        return pinned(cmd, args.cpus)

    for system in systems:  # warm-up: page cache, bytecode, first CUDA context
        timed_call(
            command(system, one, out_root / "warmup", False), env[system], out_root / "warmup"
        )
    runs = {(s, t): Measured() for s in systems for t in args.tta_flags}
    outputs = {}
    for rep in range(args.repeats):
        for tta in args.tta_flags:
            for system in call_order(rep):
                if system not in systems:
                    continue
                tag = f"{system}_tta_{'on' if tta else 'off'}"
                out_all, out_one = out_root / f"{tag}_all", out_root / f"{tag}_one"
                w_all, c_all, peak = timed_call(
                    command(system, images, out_all, tta), env[system], out_all
                )
                w_one, c_one, peak_one = timed_call(
                    command(system, one, out_one, tta), env[system], out_one
                )
                m = runs[(system, tta)]
                m.t_all.append(w_all)
                m.t_one.append(w_one)
                m.cpu_all.append(c_all)
                m.cpu_one.append(c_one)
                m.peak_mb.append(max(peak, peak_one))
                outputs[(system, tta)] = out_all
                print(
                    f"  rep {rep} {tag}: {args.cases} cases {w_all:.2f} s, 1 case "
                    f"{w_one:.2f} s, peak {max(peak, peak_one):.0f} MB",
                    flush=True,
                )
    return runs, outputs


def dice_results(
    outputs: dict[tuple[str, bool], Path],
    masks: Path,
    cases: Sequence[str],
    labels: Sequence[int],
    tta: bool,
) -> dict[str, list[float]]:
    """Per-case Dice of each system against the masks, and between the two systems."""
    found: dict[str, list[float]] = {}
    for system in ("autoseg", "nnunet"):
        if (system, tta) in outputs:
            found[system] = case_dices(outputs[(system, tta)], masks, cases, labels)
    if ("autoseg", tta) in outputs and ("nnunet", tta) in outputs:
        found["agreement"] = case_dices(
            outputs[("autoseg", tta)], outputs[("nnunet", tta)], cases, labels
        )
    return found


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--kinds",
        nargs="+",
        default=list(KINDS),
        choices=list(KINDS),
        help="phantoms to train on and test with (ignored with --model-root)",
    )
    p.add_argument("--cases", type=int, default=10, help="held-back test cases (>= 2)")
    p.add_argument("--seed", type=int, default=2, help="test phantom seed (training uses 1)")
    p.add_argument("--folds", default="0", help="folds of both systems, e.g. 0 or 0,1,2,3,4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tta", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--threads", type=int, default=1, help="math threads of both systems")
    p.add_argument("--cpus", default="1", help="taskset CPU list of both ('' = no pinning)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both systems)")
    p.add_argument("--config-3d", default="3d_fullres")
    p.add_argument("--config-2d", default="2d")
    p.add_argument("--model-root", type=Path, help="AUTOSEG_ROOT of trained datasets")
    p.add_argument("--dataset", nargs="+", help="trained dataset(s) under --model-root")
    p.add_argument(
        "--test-set",
        choices=("phantoms", "validation"),
        default="phantoms",
        help="phantoms: new phantoms of the model's kind; validation (with --model-root): the "
        "first --cases validation cases of the first fold of the model's own dataset",
    )
    p.add_argument(
        "--train-cases",
        nargs="+",
        type=int,
        default=None,
        help="training phantoms per kind, in --kinds order (default 20 and 30)",
    )
    p.add_argument("--train-epochs", type=int, default=4)
    p.add_argument("--train-iterations", type=int, default=50, help="iterations per epoch")
    p.add_argument(
        "--plan-budget",
        type=float,
        default=900.0,
        help="planner time budget in seconds (5 folds), sizes the plan",
    )
    p.add_argument(
        "--autoseg-python",
        type=Path,
        default=AUTOSEG_PYTHON if AUTOSEG_PYTHON.exists() else Path(sys.executable),
    )
    p.add_argument("--nnunet-python", type=Path, default=BENCH_PYTHON)
    p.add_argument("--workdir", type=Path, help="keep models, data and outputs here (resumable)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    if args.cases < 2:
        p.error("--cases must be >= 2 (per-case time subtracts a 1-case call)")
    if bool(args.model_root) != bool(args.dataset):
        p.error("--model-root and --dataset go together")
    if args.test_set == "validation" and not args.model_root:
        p.error("--test-set validation needs a trained dataset (--model-root, --dataset)")
    args.folds = [int(f) for f in str(args.folds).replace(",", " ").split()]
    args.tta_flags = [t == "on" for t in args.tta]
    counts = args.train_cases or []
    args.train_cases = dict(zip(args.kinds, counts, strict=False))
    return args


def notes(args: argparse.Namespace) -> list[str]:
    """What is not equal between the systems, and how the figures were taken."""
    return [
        f"both systems: taskset -c {args.cpus or '(none)'}, {args.threads} math thread(s), "
        f"device {args.device}, folds {args.folds}, same weights (autoseg checkpoints "
        "converted by benchmarks/nnunet_bridge.py), same test files",
        "s/case = (t_call(n cases) - t_call(1 case)) / (n - 1): start-up excluded; "
        "target autoseg <= 0.5 x nnU-Net at equal Dice (within 0.005)",
        "no post-processing on either side (autoseg: explicit --config/--folds bypass "
        "inference.json, plus --no-postprocessing)",
        "nnU-Net runs through a shim holding torch.set_num_threads to --threads (its -device "
        "cpu asks for every core of the machine); otherwise its own predict_entry_point",
        "nnU-Net: -npp 1 -nps 1 still spawn one preprocessing and one export process "
        "(each imports torch); autoseg reads ahead in a thread of its one process",
        "TTA: nnU-Net averages logits over mirrors, autoseg softmax probabilities; both "
        "mirror all axes, Gaussian weighting, half-patch steps",
        "each system's own preprocessing/export code (crop, normalisation, resampling and "
        "its inversion); nnU-Net keeps the prediction on the device (its default)",
        "peak memory: largest summed PSS of the CLI call's process tree (20 ms sampling)",
        "start-up with compiled bytecode for both (PYTHONPYCACHEPREFIX in the work folder, "
        "filled by one untimed warm-up call per system)",
    ]


def bridge_differences() -> list[str]:
    """The bridge's list of what the exported nnU-Net model cannot copy, less training."""
    from benchmarks import nnunet_bridge

    return [
        f"bridge: {d}" for d in nnunet_bridge.KNOWN_DIFFERENCES if not d.startswith("nnUNetTrainer")
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)  # training here, when the model is made here
    have_nnunet = Path(args.nnunet_python).exists()
    if not have_nnunet:
        print(
            f"nnU-Net: {args.nnunet_python} not found (benchmarks/make_bench_venv.sh builds "
            "it) - autoseg only"
        )
    tmp = tempfile.TemporaryDirectory(prefix="bench_inf_") if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    details: list[dict[str, Any]] = []
    try:
        if args.model_root:
            models = [existing_model(args.model_root.resolve(), d, args) for d in args.dataset]
        else:
            models = [
                train_model(
                    KINDS[k], args, work, args.config_3d if k == "mri3d" else args.config_2d
                )
                for k in args.kinds
            ]
        for model in models:
            check_exportable(model)
            if args.test_set == "validation":
                images, masks, one = validation_set(model, args.cases, work)
            else:
                images, masks, one = held_back_set(model, args.cases, args.seed, work)
            cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
            nn_name = export_to_nnunet(model, work / "nnunet_results") if have_nnunet else None
            cfg = model.plan["configurations"][model.config]
            label, test = model.kind.label, f"seed {args.seed}"
            if args.test_set == "validation":
                label = f"{model.folder} ({model.kind.label})"
                test = f"validation cases of fold {model.folds[0]}"
            print(
                f"\n[{label}] {model.folder} {model.config} folds {model.folds}: "
                f"patch {cfg['patch_size']}, {len(cases)} test cases ({test})",
                flush=True,
            )
            runs, outputs = measure(model, nn_name, images, one, work, args)
            labels = foreground_labels(model.plan["labels"])
            for tta in args.tta_flags:
                dices = dice_results(outputs, masks, cases, labels, tta)
                results += summarise(
                    label,
                    tta,
                    len(cases),
                    runs[("autoseg", tta)],
                    runs.get(("nnunet", tta), Measured()),
                    dices,
                )
            details.append(
                {
                    "dataset": model.folder,
                    "nnunet_dataset": nn_name,
                    "config": model.config,
                    "folds": model.folds,
                    "patch_size": cfg["patch_size"],
                    "spacing": cfg.get("spacing"),
                    "test_cases": cases,
                    "test_set": test,
                    "model_root": str(model.root),
                    "self_trained": not args.model_root,
                    "train_epochs": None if args.model_root else args.train_epochs,
                    "train_iterations": None if args.model_root else args.train_iterations,
                }
            )
        print("\n" + format_table(results))
        for r in results:
            if r.note:
                print(f"  {r.name}: {r.note}")
        path = write_results(
            args.json,
            "inference",
            results,
            notes=notes(args) + (bridge_differences() if have_nnunet else []),
            bench_python=args.nnunet_python if have_nnunet else None,
            extra={"datasets": details},
        )
        print(f"\nwritten: {path}")
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
