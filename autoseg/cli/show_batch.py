"""``autoseg show-batch DATASET --config 3d_fullres``: a PNG of what the network is fed.

Draws one batch of (augmented) training patches from the preprocessed data of a configuration
and writes a grid with the masks outlined. Python API: :func:`autoseg.data.show.show_batch` on
a batch from :func:`autoseg.data.build_loader`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegError
from autoseg.paths import parse_dataset_folder, preprocessed_dir

PLANS_FILE = "plans.json"
_FIX_PREPROCESS = "run 'autoseg plan DATASET' and 'autoseg preprocess DATASET' first"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show-batch",
        help="write a PNG of augmented training patches with their masks",
        description="Sample one batch of training patches of a configuration (with the "
        "augmentation training uses), and write a grid of them with each label outlined "
        "(3D patches: middle slice). Python API: autoseg.data.show.show_batch.",
    )
    p.add_argument(
        "dataset",
        metavar="DATASET",
        help="dataset id (12), folder name under $AUTOSEG_ROOT/preprocessed (012_Nerves), or "
        "a path to the folder that holds plans.json",
    )
    p.add_argument("--config", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("--n", type=int, default=8, metavar="N", help="patches to show (default 8)")
    p.add_argument("--out", default="batch.png", metavar="PNG", help="output file")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--no-augment", action="store_true", help="show raw patches without augmentation"
    )
    p.add_argument("--channel", type=int, default=0, help="input channel shown (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autoseg.data import LoaderConfig, build_loader
    from autoseg.data.show import show_batch

    folder = find_preprocessed_dataset(args.dataset)
    plan = read_plans(folder)
    configs = plan.get("configurations") or {}
    if args.config not in configs:
        raise AutosegError(
            f"configuration {args.config!r} is not in the plan "
            f"(it has {', '.join(configs) or 'none'})",
            path=folder / PLANS_FILE,
            fix="pass one of them with --config",
        )
    if args.n < 1:
        raise AutosegError(f"--n must be at least 1, got {args.n}", fix="use --n 8")
    block = configs[args.config]
    cfg = LoaderConfig.from_plan(block, plan=plan, name=args.config, batch_size=args.n)
    cases_dir = config_data_dir(folder, args.config, block)
    with build_loader(
        cases_dir, None, cfg, num_workers=0, seed=args.seed, augment=not args.no_augment
    ) as loader:
        batch = next(loader)
    if not 0 <= args.channel < batch["data"].shape[1] // cfg.slices:
        raise AutosegError(
            f"--channel {args.channel} does not exist "
            f"({batch['data'].shape[1] // cfg.slices} input channels)",
            fix="use --channel 0",
        )
    aug = "no augmentation" if args.no_augment else f"augmentation '{profile_name(cfg)}'"
    title = f"{folder.name} {args.config} patch {list(cfg.patch_size)}, {aug}, seed {args.seed}"
    out = show_batch(batch, args.out, channel=args.channel, slices=cfg.slices, title=title)
    print(f"wrote {out} ({args.n} patches of {args.config} from {cases_dir})")
    return 0


def profile_name(cfg: Any) -> str:
    from autoseg.data import get_profile

    return get_profile(cfg.augmentation).name


def find_preprocessed_dataset(spec: str) -> Path:
    """The ``preprocessed/<ds>`` folder for an id, a folder name or a path with plans.json."""
    as_path = Path(spec)
    if (as_path / PLANS_FILE).is_file():
        return as_path
    base = preprocessed_dir()
    folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if spec.isdigit():
        matches = [p for p in folders if (parse_dataset_folder(p.name) or (-1,))[0] == int(spec)]
    else:
        parsed = parse_dataset_folder(spec)
        matches = [p for p in folders if p.name == spec or parse_dataset_folder(p.name) == parsed]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(p.name for p in folders) or "none"
    raise AutosegError(
        f"no single preprocessed dataset {spec!r} under {base} (there: {known})",
        fix=_FIX_PREPROCESS,
    )


def read_plans(folder: Path) -> dict[str, Any]:
    path = folder / PLANS_FILE
    if not path.is_file():
        raise AutosegError("no plans.json here", path=folder, fix=_FIX_PREPROCESS)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AutosegError(
            f"not valid JSON (line {exc.lineno}: {exc.msg})",
            path=path,
            fix="repair the file or re-create it with 'autoseg plan DATASET --overwrite'",
        ) from None


def config_data_dir(folder: Path, config: str, block: dict[str, Any]) -> Path:
    """Folder holding a configuration's arrays: the plan's ``data_identifier`` if set, else
    the preprocessed folder whose ``manifest.json`` lists the configuration."""
    ident = block.get("data_identifier")
    if ident and (folder / ident).is_dir():
        return folder / ident
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        manifest = sub / "manifest.json"
        if not manifest.is_file():
            continue
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8")).get("configurations", [])
        except (OSError, ValueError):
            continue
        if config in listed:
            return sub
    raise AutosegError(
        f"no preprocessed data for configuration {config!r} (no manifest.json lists it)",
        path=folder,
        fix=f"run 'autoseg preprocess {folder.name}' and wait for it to finish",
    )
