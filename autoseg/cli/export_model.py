"""``autoseg export-model DATASET -o model.zip`` and ``autoseg import-model model.zip``.

Python API: :func:`autoseg.inference.model_io.export_model` / ``import_model``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-model",
        help="pack a trained model (plan, checkpoints, inference.json) into one zip",
        description="Write plans.json, dataset.json (without the per-case subject map), "
        "inference.json and the final checkpoints of the chosen configurations and folds, "
        "with a manifest of sha256 hashes, into one zip that 'autoseg import-model' installs "
        "elsewhere. No images or labels are included. Format: documentation/find_best.md. "
        "Python API: autoseg.inference.model_io.export_model.",
    )
    p.add_argument("dataset", help="dataset id (12), folder name (012_Nerves) or path")
    p.add_argument("-o", "--out", required=True, metavar="ZIP", help="output .zip file")
    p.add_argument(
        "--configs",
        nargs="+",
        default=None,
        metavar="CONFIG",
        help="configurations to export (default: inference.json's choice); a crop "
        "configuration brings its localiser",
    )
    p.add_argument(
        "--folds",
        nargs="+",
        default=None,
        metavar="K",
        help="folds to export, e.g. 0,1,2,3,4 (default: inference.json's folds)",
    )
    p.add_argument("--root", default=None, help="data root (default: $AUTOSEG_ROOT)")
    p.set_defaults(func=run_export)

    q = sub.add_parser(
        "import-model",
        help="verify and install a model zip made by export-model",
        description="Check the zip (manifest, sha256 of every file, no path traversal, no "
        "unexpected files, checkpoints loadable as weights only, so loading runs no code from "
        "the file) and install it under $AUTOSEG_ROOT so that 'autoseg predict -d DATASET' "
        "works. Python API: autoseg.inference.model_io.import_model.",
    )
    q.add_argument("zip", help="model .zip made by 'autoseg export-model'")
    q.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the model files of an existing dataset of the same name",
    )
    q.add_argument("--root", default=None, help="data root (default: $AUTOSEG_ROOT)")
    q.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> int:
    from autoseg.inference.model_io import export_model, read_manifest

    out = export_model(args.dataset, args.out, args.root, configs=args.configs, folds=args.folds)
    manifest = read_manifest(out)
    size_mb = out.stat().st_size / 1e6
    print(
        f"exported {manifest['dataset']}: configurations {', '.join(manifest['configurations'])}"
        f", folds {','.join(map(str, manifest['folds']))}, {len(manifest['files'])} files, "
        f"{size_mb:.1f} MB -> {out}"
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    from autoseg.inference.model_io import import_model, read_manifest

    res = import_model(args.zip, args.root, overwrite=args.overwrite)
    manifest = read_manifest(args.zip)
    print(
        f"imported {manifest['dataset']} (autoseg {manifest.get('autoseg_version')}, torch "
        f"{manifest.get('torch_version')}, made {manifest.get('created_at')}) into {res}"
    )
    print(f"predict with: autoseg predict -d {manifest['dataset']} -i INPUT -o OUTPUT")
    return 0
