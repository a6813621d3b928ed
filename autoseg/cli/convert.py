"""``autoseg convert``: a folder of images and masks -> a dataset; or a dataset -> nnU-Net."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoseg.errors import AutosegError
from autoseg.io.convert import (
    FORMATS,
    convert_folder,
    export_nnunet,
    parse_label_map,
    parse_names,
    parse_spacing,
    parse_threshold,
)
from autoseg.io.nnunet import is_nnunet_dataset
from autoseg.io.verify import Problem, summary_line
from autoseg.paths import parse_dataset_folder, raw_dir, resolve_dataset

MAX_WARNINGS = 10
EPILOG = """\
pairing rules, in order: (1) --pairs CSV (columns image,mask or image_0000,...; optional
case,subject,cohort); (2) images/ + masks/ (or labels/) with the same file names;
(3) one folder, mask named <stem>_mask/_seg/_label/_labels/_gt; (4) a test/ (or imagesTs/)
folder and images without a mask go to imagesTs. cases.csv (case,subject,cohort) at the top
of SOURCE fills per-case metadata; --subject-pattern takes subjects from the case names.
See documentation/dataset_format.md.

examples:
  autoseg convert ~/us_frames --name MedianUS --labels 255:1 --label-names nerve --spacing 0.08,0.08
  autoseg convert ~/bp_jpeg --name BrachialUS --threshold 127 --subject-pattern '^(\\d+)_'
  autoseg convert ~/Task01_BrainTumour --name BrainTumour --format msd
  autoseg convert ~/thigh_mrn --name SciaticMRN --pairs ~/thigh_mrn/pairs.csv --channel-names T2
  autoseg convert 12 --to nnunet --out ~/nnUNet_raw
  autoseg convert 12 --name ThighSparse4 --sparse-every 4
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="turn a folder of images and masks into a dataset (or export one to nnU-Net)",
        description="Convert NIfTI/NRRD/MHA/DICOM/PNG/TIF images and masks into the standard "
        "dataset layout under $AUTOSEG_ROOT/raw, then verify it. Rerunning an interrupted "
        "conversion finishes it. Python: autoseg.io.convert.convert_folder and "
        "autoseg.io.nnunet.export_nnunet.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="source folder (or a pairs CSV); with --to nnunet, a dataset")
    p.add_argument("--name", help="dataset name (letters, digits, '-', '_')")
    p.add_argument("--id", type=int, dest="dataset_id", help="dataset id (default: next free)")
    p.add_argument("--pairs", metavar="CSV", help="CSV listing image,mask pairs")
    p.add_argument("--labels", metavar="OLD:NEW,...", help="remap mask values, e.g. 255:1")
    p.add_argument(
        "--threshold",
        metavar="T",
        help="binarise masks: values >= T become label 1, the rest 0 (one-label masks saved "
        "as JPEG or 0/255: --threshold 127)",
    )
    p.add_argument("--label-names", metavar="A,B", help="names of labels 1, 2, ...")
    p.add_argument("--channel-names", metavar="A,B", help="names of channels 0, 1, ... (e.g. T2)")
    p.add_argument(
        "--spacing",
        metavar="Y,X",
        help="pixel size in mm for formats without one (PNG/TIF/JPG); default 1.0",
    )
    p.add_argument("--meta", metavar="CSV", help="per-case metadata: case,subject,cohort")
    p.add_argument(
        "--subject-pattern",
        metavar="REGEX",
        help="subject id = first group of REGEX matched in each case name, e.g. '^(\\d+)_' "
        "for video frames 12_7.jpg (keeps a subject's frames in one cross-validation fold)",
    )
    p.add_argument("--format", choices=FORMATS, default="auto", help="source layout")
    p.add_argument("--overwrite", action="store_true", help="replace an existing target")
    p.add_argument("--workers", type=int, help="processes (default min(4, cpu count))")
    p.add_argument("--to", choices=("nnunet",), help="also export to another tool's layout")
    p.add_argument("--out", metavar="DIR", help="folder for --to nnunet (e.g. $nnUNet_raw)")
    p.add_argument(
        "--sparse-every",
        type=int,
        metavar="K",
        help="SOURCE is a 3D dataset: make the dataset --name from it with only every K-th "
        "slice (along each volume's thickest axis) labelled, the rest the 'ignore' label "
        "(sparse-annotation experiments)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.sparse_every is not None:
        return _run_sparse(args)
    if (args.to is None) != (args.out is None):
        raise AutosegError(
            "--to and --out go together", fix="give both, e.g. --to nnunet --out DIR"
        )
    if args.workers is not None and args.workers < 1:
        raise AutosegError(f"--workers {args.workers} must be at least 1", fix="e.g. --workers 4")
    if args.to == "nnunet" and args.name is None:
        dataset = _existing_dataset(args.source)
        if dataset is not None:
            out = export_nnunet(dataset, args.out, overwrite=args.overwrite)
            print(f"exported {dataset} -> {out}")
            return 0
    if args.name is None:
        raise AutosegError(
            "--name is required to convert a folder",
            path=args.source,
            fix="add e.g. --name SciaticMRN",
        )
    result = convert_folder(
        args.source,
        args.name,
        args.dataset_id,
        pairs_csv=args.pairs,
        label_map=parse_label_map(args.labels) if args.labels else None,
        label_names=parse_names(args.label_names) if args.label_names else None,
        channel_names=parse_names(args.channel_names, "--channel-names")
        if args.channel_names
        else None,
        spacing=parse_spacing(args.spacing) if args.spacing else None,
        meta_csv=args.meta,
        threshold=parse_threshold(args.threshold) if args.threshold is not None else None,
        subject_pattern=args.subject_pattern,
        fmt=args.format,
        overwrite=args.overwrite,
        num_workers=args.workers,
    )
    for note in result.notes:
        print(f"note: {note}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    test = f" and {result.n_test} test case(s)" if result.n_test else ""
    print(f"converted {result.n_cases} training case(s){test} into {result.target}")
    _print_problems(result.problems)
    print(summary_line(result.target, result.problems))
    if not result.ok:
        print(
            f"fix the source and rerun with --overwrite; 'autoseg verify {result.target}' "
            "checks the dataset again"
        )
        return 1
    if args.to == "nnunet":
        out = export_nnunet(result.target, args.out, overwrite=args.overwrite)
        print(f"exported to {out}")
    return 0


def _run_sparse(args: argparse.Namespace) -> int:
    from autoseg.io.convert import choose_target
    from autoseg.io.sparse import check_every, make_sparse_dataset
    from autoseg.io.verify import verify_dataset

    check_every(args.sparse_every)
    if args.to is not None:
        raise AutosegError(
            "--sparse-every and --to do not go together",
            fix="make the sparse dataset first, then export it",
        )
    source = _existing_dataset(args.source)
    if source is None:
        raise AutosegError(
            "--sparse-every needs a converted dataset (id, name or folder with dataset.json)",
            path=args.source,
            fix="convert the source folder first, then run convert DATASET --sparse-every K",
        )
    if args.name is None:
        raise AutosegError(
            "--name is required for the sparse copy", fix="add e.g. --name ThighSparse4"
        )
    target = choose_target(args.name, args.dataset_id, None)
    target, ignore = make_sparse_dataset(
        source, target, args.sparse_every, overwrite=args.overwrite
    )
    print(
        f"kept one slice in {args.sparse_every} of {source.name} labelled, the rest "
        f"'ignore' ({ignore}), in {target}"
    )
    workers = 1 if args.workers is None else args.workers
    problems = verify_dataset(target, num_workers=workers, progress=False)
    _print_problems(problems)
    print(summary_line(target, problems))
    return 0 if not any(p.is_error for p in problems) else 1


def _print_problems(problems: list[Problem], max_warnings: int = MAX_WARNINGS) -> None:
    """Every error, but only the first warnings: Kaggle-style sets have thousands of empty
    masks, each a warning, which would bury the errors."""
    warnings = [p for p in problems if not p.is_error]
    for p in problems:
        if p.is_error:
            print(str(p))
    for p in warnings[:max_warnings]:
        print(str(p))
    if len(warnings) > max_warnings:
        print(f"... and {len(warnings) - max_warnings} more warnings ('autoseg verify' lists all)")


def _existing_dataset(spec: str) -> Path | None:
    """A converted dataset named by path, id or folder name; None for a source folder.

    Only folders whose dataset.json has nnU-Net v2's keys count: a Decathlon folder also has
    a dataset.json but must be converted first (its images may be 4D).
    """
    path = Path(spec).expanduser()
    if path.is_dir() and not (path / "dataset.json").is_file():
        return None
    try:
        found = resolve_dataset(path if path.is_dir() else spec)
    except AutosegError:
        by_name = [p for p in _raw_folders() if (parse_dataset_folder(p.name) or ())[1:] == (spec,)]
        if len(by_name) != 1:
            return None
        found = by_name[0]
    return found if is_nnunet_dataset(found) else None


def _raw_folders() -> list[Path]:
    base = raw_dir()
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
