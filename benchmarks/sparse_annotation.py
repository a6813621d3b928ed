"""How many slices can a lab leave unlabelled? Held-back Dice vs labelling every K-th slice.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python -m benchmarks.sparse_annotation \\
        [--source phantom|sct] [--every 1 2 4 8] [--budget 10m] [--cases 20] [--held-out 8] \\
        [--work DIR] [--json PATH]

The thigh MRI phantom (``generate_phantom('mri3d', seed=1)``, ``--cases`` training cases) is
converted once; ``autoseg convert DATASET --sparse-every K`` then makes one dataset per K (K = 1
is the fully labelled baseline, with the same ``ignore`` label declared, so every point runs
the same code). Each is trained with ``autoseg plan-and-train --time-budget B`` (the same B for
every K: equal training budget), predicts the held-back cases (``--held-out`` cases of other
subjects, seed 2, fully labelled) with ``autoseg predict``, and is scored with ``autoseg
evaluate`` (nerve Dice per case, averaged). Printed: one row per K with the share of slices
labelled, the held-back Dice and the wall clock.

``--source sct``: real MRI instead, from ``../shared/data/sct_testing`` (one subject, so no
held-back *subject*): its T1-weighted volume (42 x 76 x 77 voxels, 1 mm) with the manual
spinal-cord mask, cut across the cord into :data:`SCT_SLABS` slabs of 11 axial slices
(contiguous cord segments, C-spine); slabs :data:`SCT_HELD` are held back fully labelled and
the other five are the training cases (one "subject" each). What it measures is how well
a model trained on sparsely labelled cord segments segments other segments of the same
cord; a cross-subject number needs more subjects than the set has. Skips with a one-line
message when the data is absent.

Resumable: a K whose ``record.json`` exists under ``--work`` (default
``autoseg_data/sparse_annotation``) is not run again. ``--small`` shrinks everything (4 cases
of 8 x 48 x 48, 1 held back, 2 folds) for a smoke test of the script itself; its numbers mean
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    raise SystemExit(2)

SOURCE_SEED, HELD_OUT_SEED = 1, 2
BASE_ID = 1
NAMES = {"phantom": ("ThighPhantom", "ThighSparse"), "sct": ("CordT1", "CordSparse")}
SCT = Path(os.environ.get("AUTOSEG_SHARED_DATA") or REPO.parent / "shared" / "data") / "sct_testing"
SCT_IMAGE, SCT_MASK = "t1/t1w.nii.gz", "t1/t1w_seg-manual.nii.gz"
SCT_SLABS = 7  # 77 axial slices -> 7 slabs of 11
SCT_HELD = (2, 5)  # interior slabs held back: neither end of the field of view


def phantom_config(small: bool) -> Any:
    from autoseg.phantoms import Mri3dConfig

    return Mri3dConfig(shape=(8, 48, 48)) if small else Mri3dConfig()


def prepare(work: Path, n_cases: int, n_held: int, small: bool) -> tuple[Path, Path]:
    """The fully labelled dataset (id 1) under ``work/root`` and the held-back cases."""
    from autoseg.cli import main as autoseg_main
    from autoseg.paths import raw_dir
    from autoseg.phantoms import generate_phantom, write_held_out

    cfg = phantom_config(small)
    source = work / "source"
    if not (source / "cases.csv").is_file():
        generate_phantom("mri3d", source, n_cases, seed=SOURCE_SEED, config=cfg, overwrite=True)
    images, masks = write_held_out("mri3d", work / "held_out", n_held, HELD_OUT_SEED, cfg)
    if not any(raw_dir().glob(f"{BASE_ID:03d}_*")):
        args = ["convert", str(source), "--name", NAMES["phantom"][0], "--id", str(BASE_ID)]
        if autoseg_main([*args, "--label-names", "nerve", "--channel-names", "T2"]) != 0:
            raise SystemExit("converting the phantom failed")
    return images, masks


def sct_root(data: Path = SCT) -> Path:
    """The sct_testing folder, or a one-line exit when it is absent."""
    if not (data / SCT_IMAGE).is_file() or not (data / SCT_MASK).is_file():
        raise SystemExit(f"sct_testing not found under {data} (see ../shared/data/README.md)")
    return data


def slab_bounds(n_slices: int, n_slabs: int) -> list[tuple[int, int]]:
    """Contiguous, equal (to within one slice) slabs covering 0..n_slices."""
    edges = [round(i * n_slices / n_slabs) for i in range(n_slabs + 1)]
    return list(zip(edges[:-1], edges[1:]))


def prepare_sct(work: Path, data: Path = SCT) -> tuple[Path, Path]:
    """The cord slabs: training slabs as a convert source, held-back ones as images/masks."""
    import SimpleITK as sitk

    from autoseg.cli import main as autoseg_main
    from autoseg.paths import raw_dir

    data = sct_root(data)
    source, held = work / "source", work / "held_out"
    images, masks = held / "images", held / "masks"
    image = sitk.ReadImage(str(data / SCT_IMAGE))
    mask = sitk.ReadImage(str(data / SCT_MASK))
    # the cord runs along SimpleITK's third index (the array's first axis): cut across it
    axis_len = image.GetSize()[2]
    for folder in (source, images, masks):
        folder.mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(slab_bounds(axis_len, SCT_SLABS)):
        name = f"cord_{i}"
        img, seg = image[:, :, a:b], sitk.Cast(mask[:, :, a:b] > 0, sitk.sitkUInt8)
        if i in SCT_HELD:
            pairs = [(img, images / f"{name}.nii.gz"), (seg, masks / f"{name}.nii.gz")]
        else:
            pairs = [(img, source / f"{name}.nii.gz"), (seg, source / f"{name}_mask.nii.gz")]
        for volume, path in pairs:
            if not path.is_file():
                sitk.WriteImage(volume, str(path))
    if not any(raw_dir().glob(f"{BASE_ID:03d}_*")):
        args = ["convert", str(source), "--name", NAMES["sct"][0], "--id", str(BASE_ID)]
        if autoseg_main([*args, "--label-names", "cord", "--channel-names", "T1"]) != 0:
            raise SystemExit("converting the sct_testing slabs failed")
    return images, masks


def run_point(
    every: int,
    budget: str,
    images: Path,
    masks: Path,
    root: Path,
    folds: list[str],
    source: str = "phantom",
) -> dict[str, Any]:
    """Sparse copy, plan-and-train at the budget, predict and score the held-back cases."""
    from autoseg.cli import main as autoseg_main
    from autoseg.evaluation import evaluate_folders
    from autoseg.io import load_dataset_json
    from autoseg.paths import raw_dir

    name, dataset_id = f"{NAMES[source][1]}{every}", 10 + every
    folder = f"{dataset_id:03d}_{name}"
    if not (raw_dir() / folder).is_dir():
        args = ["convert", str(BASE_ID), "--name", name, "--id", str(dataset_id)]
        if autoseg_main([*args, "--sparse-every", str(every)]) != 0:
            raise SystemExit(f"convert --sparse-every {every} failed")
    started = time.perf_counter()
    if autoseg_main(["plan-and-train", folder, "--time-budget", budget, *folds]) != 0:
        raise SystemExit(f"plan-and-train {folder} failed")
    wall_s = time.perf_counter() - started
    out = root / "test_predictions" / folder
    if autoseg_main(["predict", "-i", str(images), "-o", str(out), "-d", folder]) != 0:
        raise SystemExit(f"predict {folder} failed")
    result = evaluate_folders(out, masks, labels=[1], progress=False, ignore_label=None)
    ds = load_dataset_json(raw_dir() / folder)
    inference = json.loads((root / "results" / folder / "inference.json").read_text())
    return {
        "every": every,
        "labelled_slices": 1.0 / every,
        "budget": budget,
        "wall_s": round(wall_s, 1),
        "held_out_dice": result.mean("dice", label=1),
        "held_out_cases": len(result.cases),
        "cv_dice": inference.get("cv_dice"),
        "ignore_label": ds.ignore_label,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", choices=sorted(NAMES), default="phantom")
    p.add_argument("--every", type=int, nargs="+", default=[1, 2, 4, 8], metavar="K")
    p.add_argument("--budget", default="10m", help="plan-and-train --time-budget per K")
    p.add_argument("--cases", type=int, default=20, help="training phantom cases")
    p.add_argument("--held-out", type=int, default=8, help="held-back phantom cases")
    p.add_argument("--work", type=Path, default=REPO / "autoseg_data" / "sparse_annotation")
    p.add_argument("--json", type=Path, default=None, help="write the records here too")
    p.add_argument("--small", action="store_true", help="smoke test of the script (tiny data)")
    args = p.parse_args(argv)
    if args.small:
        args.cases, args.held_out = 4, 1
    work = args.work.resolve()
    root = work / "root"
    os.environ["AUTOSEG_ROOT"] = str(root)
    if args.source == "sct":
        images, masks = prepare_sct(work)
    else:
        images, masks = prepare(work, args.cases, args.held_out, args.small)
    records = []
    for every in args.every:
        record_path = work / f"every_{every}" / "record.json"
        if record_path.is_file():
            record = json.loads(record_path.read_text())
        else:
            folds = ["--n-folds", "2"] if args.small else []
            record = run_point(every, args.budget, images, masks, root, folds, args.source)
            record_path.parent.mkdir(parents=True, exist_ok=True)
            record_path.write_text(json.dumps(record, indent=2))
        records.append(record)
    what = (
        f"sct_testing T1 cord, {SCT_SLABS - len(SCT_HELD)} training slabs, "
        f"{len(SCT_HELD)} held back"
        if args.source == "sct"
        else f"thigh phantom, {args.cases} training cases"
    )
    print(f"\n{what}, plan-and-train --time-budget {args.budget}")
    print(f"{'K':>3}  {'labelled':>8}  {'held-back Dice':>14}  {'CV Dice':>7}  {'wall':>7}")
    for r in records:
        cv = "-" if r["cv_dice"] is None else f"{r['cv_dice']:.3f}"
        print(
            f"{r['every']:>3}  {r['labelled_slices']:>8.0%}  {r['held_out_dice']:>14.3f}  "
            f"{cv:>7}  {r['wall_s']:>6.0f}s"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
