"""Sharing a trained model: ``autoseg export-model`` writes one zip, ``import-model`` installs it.

The zip (format ``autoseg-model-1``, documented in documentation/find_best.md)::

    model.json                          manifest: versions, date, every file with its sha256
    plans.json                          preprocessed/<ds>/plans.json
    dataset.json                        raw/<ds>/dataset.json without the per-case subject map
    inference.json                      results/<ds>/inference.json (configurations, folds,
                                        post-processing)
    <config>/fold_<k>/checkpoint_final.pt

A model zip comes from someone else, so importing trusts nothing in it: names are checked
before anything is written (no absolute paths, no ``..``, no links, nothing the manifest does
not list), every file is hashed while it is extracted into a private staging folder, every
JSON file is validated, and every checkpoint is opened with ``torch.load(weights_only=True)``
(:func:`autoseg.networks.checkpoint.load_checkpoint`), which refuses pickled objects that
could run code. Only then are the files moved into place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autoseg import __version__
from autoseg.choices import parse_folds, parse_list
from autoseg.errors import AutosegError
from autoseg.io import atomic_path, load_dataset_json
from autoseg.io.atomic import TMP_MARK
from autoseg.layout import FINAL, ResultsLayout
from autoseg.paths import (
    data_root,
    parse_dataset_folder,
    preprocessed_dir,
    raw_dir,
    resolve_dataset,
    results_dir,
)

MODEL_FORMAT = "autoseg-model-1"
MANIFEST = "model.json"
PLANS = "plans.json"
DATASET = "dataset.json"
INFERENCE = "inference.json"
CHECKPOINT = FINAL  # inside an exported zip too: <config>/fold_<k>/checkpoint_final.pt
JSON_FILES = (PLANS, DATASET, INFERENCE)
MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists ~ 30 files; 1 MiB is generous
_CHUNK = 1 << 20
_CHECKPOINT_PATH = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)/fold_(\d+)/" + re.escape(CHECKPOINT) + "$"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# What reading a damaged, encrypted or exotic zip member raises.
_ZIP_READ_ERRORS = (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, zlib.error)
_FIX_IMPORT = "ask the sender for a fresh export made with 'autoseg export-model'"


# --------------------------------------------------------------------------------------------
# Export


def _trained_folds(config_dir: Path) -> set[int]:
    return set(ResultsLayout(config_dir.parent).trained_folds(config_dir.name))


def _with_localisers(configs: list[str], plan: Any) -> list[str]:
    """The configurations plus the localiser of a ``crop`` configuration, which prediction
    runs first to place the crop window."""
    out = list(configs)
    for c in configs:
        crop = plan.configurations[c].crop
        if crop is not None and crop.localiser not in out:
            out.append(crop.localiser)
    return out


def _inference_for_export(
    info: dict[str, Any] | None, configs: list[str], folds: list[int]
) -> dict[str, Any]:
    """inference.json as exported: unchanged when it matches the exported models; otherwise
    adjusted so that ``predict -d`` runs exactly the exported configurations and folds (its
    post-processing kept only when the configurations are the ones it was decided for)."""
    if info is not None:
        same_configs = list(info.get("configurations", [])) == configs
        if same_configs and list(info.get("folds", [])) == folds:
            return info
    out = dict(info or {})
    same = info is not None and set(info.get("configurations", [])) == set(configs)
    out["configurations"] = list(configs)
    out["folds"] = list(folds)
    out["ensemble"] = len(configs) > 1
    out["postprocessing"] = dict(info.get("postprocessing", {})) if same and info else {}
    if not same:  # the scale views, like the post-processing, were decided for other models
        out["tta_scales"] = [1.0]
    out["export_note"] = "configurations/folds chosen at export" + (
        "" if same else "; post-processing and scale views not decided for them, so none"
    )
    return out


def _with_training_volumes(info: dict[str, Any], preprocessed: Path) -> dict[str, Any]:
    """Add the training cases' foreground volumes (mm³, sorted, no case ids) so that the
    importing lab's predictions still get the out-of-distribution volume flag."""
    from autoseg.inference.predict import training_volumes_from_fingerprint

    volumes = training_volumes_from_fingerprint(preprocessed)
    if volumes and "training_foreground_mm3" not in info:
        info = {**info, "training_foreground_mm3": sorted(round(v, 3) for v in volumes)}
    return info


def export_model(
    dataset: str | int | os.PathLike,
    out_zip: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    configs: Sequence[str] | str | None = None,
    folds: Sequence[int] | str | None = None,
) -> Path:
    """Write the trained model of ``dataset`` to ``out_zip`` (atomically); returns its path.

    ``configs`` default to inference.json's choice, ``folds`` to its folds (or to the folds
    trained for every configuration when there is no inference.json). A ``crop``
    configuration brings its localiser along.
    """
    from autoseg.networks.checkpoint import load_checkpoint
    from autoseg.planning.plan import load_plan

    raw = resolve_dataset(dataset, root)
    name = raw.name
    ds = load_dataset_json(raw)
    plans_path = preprocessed_dir(root) / name / PLANS
    plan = load_plan(plans_path)
    res = results_dir(root) / name
    info_path = res / INFERENCE
    info = _read_json_object(info_path) if info_path.is_file() else None

    config_list = parse_list(configs)
    if config_list is None:
        if info is None:
            raise AutosegError(
                "no inference.json: nothing says which configurations to export",
                path=res,
                fix="run 'autoseg find-best DATASET' first, or name --configs",
            )
        config_list = [str(c) for c in info.get("configurations", [])]
    config_list = list(dict.fromkeys(config_list))
    if not config_list:
        raise AutosegError("no configuration to export", path=info_path, fix="name --configs")
    for c in config_list:
        if c not in plan.configurations:
            raise AutosegError(
                f"configuration {c!r} is not in the plan ({', '.join(plan.configurations)})",
                path=plans_path,
                fix="name a configuration of plans.json",
            )
    all_configs = _with_localisers(config_list, plan)

    given = parse_folds(folds)
    if given is not None:
        fold_list = given
    elif info is not None and "folds" in info and parse_list(configs) is None:
        fold_list = sorted(int(f) for f in info["folds"])
    else:
        common = set.intersection(*(_trained_folds(res / c) for c in all_configs))
        fold_list = sorted(common)
    if not fold_list:
        raise AutosegError(
            "no fold has a checkpoint_final.pt for every configuration",
            path=res,
            fix="finish training (autoseg train DATASET CONFIG all)",
        )

    checkpoints: list[tuple[str, Path]] = []
    for c in all_configs:
        for f in fold_list:
            path = ResultsLayout(res).checkpoint(c, f)
            if not path.is_file():
                raise AutosegError(
                    f"configuration {c} fold {f} has no final checkpoint",
                    path=path,
                    fix="finish training it, or leave it out with --configs / --folds",
                )
            load_checkpoint(path)  # never ship a damaged or unsafe checkpoint
            checkpoints.append((f"{c}/fold_{f}/{CHECKPOINT}", path))

    ds.cases = {}  # subject and cohort ids stay with the data, not the model
    json_bytes = {
        PLANS: plans_path.read_bytes(),
        DATASET: _json_bytes(ds.to_dict()),
        INFERENCE: _json_bytes(
            _with_training_volumes(
                _inference_for_export(info, config_list, fold_list), preprocessed_dir(root) / name
            )
        ),
    }
    out_zip = Path(out_zip)
    files: list[dict[str, Any]] = []
    with atomic_path(out_zip) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for arc, data in json_bytes.items():
            zf.writestr(arc, data)
            files.append(_entry(arc, hashlib.sha256(data).hexdigest(), len(data)))
        for arc, path in checkpoints:
            digest, size = _copy_into_zip(zf, path, arc)
            files.append(_entry(arc, digest, size))
        manifest = _manifest(name, all_configs, fold_list, files)
        zf.writestr(MANIFEST, _json_bytes(manifest))
    return out_zip


def _entry(path: str, sha256: str, size: int) -> dict[str, Any]:
    return {"path": path, "sha256": sha256, "size": int(size)}


def _manifest(
    name: str, configs: list[str], folds: list[int], files: list[dict[str, Any]]
) -> dict[str, Any]:
    import torch

    return {
        "format": MODEL_FORMAT,
        "dataset": name,
        "configurations": configs,
        "folds": folds,
        "autoseg_version": __version__,
        "torch_version": str(torch.__version__),
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "files": files,
    }


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8")


def _copy_into_zip(zf: zipfile.ZipFile, path: Path, arc: str) -> tuple[str, int]:
    """Stream a file into the zip, hashing exactly the bytes stored."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as src, zf.open(arc, "w", force_zip64=True) as dst:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AutosegError(f"cannot parse JSON ({exc})", path=path, fix="repair the file") from exc
    if not isinstance(data, dict):
        raise AutosegError("expected a JSON object", path=path, fix="repair the file")
    return data


# --------------------------------------------------------------------------------------------
# Import


def _refuse(zip_path: Path, why: str) -> AutosegError:
    return AutosegError(f"refused to import: {why}", path=zip_path, fix=_FIX_IMPORT)


def unsafe_member_name(name: str) -> str | None:
    """Why a zip member name could write outside the target folder (None when safe)."""
    if not name or "\x00" in name:
        return "empty name or NUL character"
    if "\\" in name:
        return "backslash in name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "'..', '.' or empty path component"
    return None


def _is_link(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def _read_manifest(zip_path: Path, zf: zipfile.ZipFile) -> dict[str, Any]:
    try:
        info = zf.getinfo(MANIFEST)
    except KeyError:
        raise _refuse(zip_path, f"no {MANIFEST} (not an autoseg model export)") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise _refuse(zip_path, f"{MANIFEST} is implausibly large")
    try:
        manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, *_ZIP_READ_ERRORS) as exc:
        raise _refuse(zip_path, f"{MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
        raise _refuse(zip_path, f"{MANIFEST} is not an {MODEL_FORMAT} manifest")
    name = manifest.get("dataset")
    if (
        not isinstance(name, str)
        or parse_dataset_folder(name) is None
        or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", name)
    ):
        raise _refuse(zip_path, f"dataset name {name!r} is not a dataset folder name")
    configs, folds = manifest.get("configurations"), manifest.get("folds")
    if (
        not isinstance(configs, list)
        or not configs
        or not all(isinstance(c, str) for c in configs)
        or not isinstance(folds, list)
        or not folds
        or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 0 for f in folds)
    ):
        raise _refuse(zip_path, f"{MANIFEST} lacks valid configurations/folds lists")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise _refuse(zip_path, f"{MANIFEST} lists no files")
    for f in files:
        ok = (
            isinstance(f, dict)
            and isinstance(f.get("path"), str)
            and isinstance(f.get("sha256"), str)
            and _SHA256.match(f["sha256"])
            and isinstance(f.get("size"), int)
            and f["size"] >= 0
        )
        if not ok:
            raise _refuse(zip_path, f"bad file entry in {MANIFEST}: {str(f)[:100]}")
    return manifest


def _check_members(zip_path: Path, zf: zipfile.ZipFile, manifest: dict[str, Any]) -> None:
    """Every member name safe, listed, single and a regular file; every listed file present."""
    listed = [f["path"] for f in manifest["files"]]
    if len(set(listed)) != len(listed):
        raise _refuse(zip_path, f"{MANIFEST} lists a file twice")
    for path in listed:
        why = unsafe_member_name(path)
        if why:
            raise _refuse(zip_path, f"unsafe file name {path!r} ({why})")
        if path not in JSON_FILES and not _CHECKPOINT_PATH.match(path):
            raise _refuse(zip_path, f"unexpected file {path!r} in {MANIFEST}")
    missing_json = [j for j in JSON_FILES if j not in listed]
    if missing_json:
        raise _refuse(zip_path, f"{', '.join(missing_json)} missing")
    parents = {p.rsplit("/", i)[0] + "/" for p in listed for i in (1, 2) if p.count("/") >= i}
    seen: set[str] = set()
    for info in zf.infolist():
        name = info.filename
        why = unsafe_member_name(name)
        if why:
            raise _refuse(zip_path, f"unsafe file name {name!r} ({why})")
        if _is_link(info):
            raise _refuse(zip_path, f"{name!r} is a symbolic link")
        if name in seen:
            raise _refuse(zip_path, f"{name!r} appears twice")
        seen.add(name)
        if info.is_dir():
            if name not in parents:
                raise _refuse(zip_path, f"unexpected folder {name!r}")
        elif name != MANIFEST and name not in listed:
            raise _refuse(zip_path, f"unexpected file {name!r} (not in {MANIFEST})")
    absent = [p for p in listed if p not in seen]
    if absent:
        raise _refuse(zip_path, f"file(s) listed but missing: {', '.join(absent[:3])}")
    pairs = [_CHECKPOINT_PATH.match(p) for p in listed]
    found = {(m.group(1), int(m.group(2))) for m in pairs if m}
    wanted = {(c, f) for c in manifest["configurations"] for f in manifest["folds"]}
    if not found or found != wanted:
        raise _refuse(zip_path, "checkpoints do not match the manifest's configurations x folds")


def _extract_verified(
    zip_path: Path, zf: zipfile.ZipFile, entry: dict[str, Any], staging: Path
) -> Path:
    """Extract one listed file into ``staging``, reading no more than its listed size and
    comparing its sha256 (a changed byte, or a zip bomb, stops here)."""
    dest = staging / entry["path"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    limit = entry["size"]
    with zf.open(entry["path"]) as src, open(dest, "wb") as out:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _refuse(zip_path, f"{entry['path']} is larger than its manifest entry")
            h.update(chunk)
            out.write(chunk)
    if size != limit or h.hexdigest() != entry["sha256"]:
        raise _refuse(
            zip_path, f"{entry['path']} does not match its sha256 in {MANIFEST} (altered?)"
        )
    return dest


def _existing(name: str, root: str | os.PathLike | None) -> list[Path]:
    """Files or folders of the dataset ``name`` already under the root."""
    return [
        p
        for p in (
            raw_dir(root) / name,
            preprocessed_dir(root) / name / PLANS,
            results_dir(root) / name,
        )
        if p.exists()
    ]


def _same_id_elsewhere(name: str, root: str | os.PathLike | None) -> list[str]:
    parsed = parse_dataset_folder(name)
    base = raw_dir(root)
    if parsed is None or not base.is_dir():
        return []
    return sorted(
        p.name
        for p in base.iterdir()
        if p.is_dir() and p.name != name and (parse_dataset_folder(p.name) or (-1,))[0] == parsed[0]
    )


def _validate_staged(zip_path: Path, staging: Path, manifest: dict[str, Any]) -> None:
    """JSON files parse and agree with each other; every checkpoint loads weights-only."""
    from autoseg.networks.checkpoint import load_checkpoint
    from autoseg.planning.plan import load_plan
    from autoseg.postprocessing.rules import validate_rule

    ds = load_dataset_json(staging)
    plan = load_plan(staging / PLANS)
    if {k: int(v) for k, v in ds.labels.items()} != dict(plan.labels):
        raise _refuse(zip_path, "dataset.json and plans.json disagree on the labels")
    info = _read_json_object(staging / INFERENCE)
    configs = [str(c) for c in manifest["configurations"]]
    folds = [int(f) for f in manifest["folds"]]
    for c in configs:
        if c not in plan.configurations:
            raise _refuse(zip_path, f"configuration {c!r} is not in plans.json")
    chosen = info.get("configurations")
    if not isinstance(chosen, list) or not chosen or not set(chosen) <= set(configs):
        raise _refuse(zip_path, "inference.json names configurations the zip does not hold")
    if not set(int(f) for f in info.get("folds", [])) <= set(folds):
        raise _refuse(zip_path, "inference.json names folds the zip does not hold")
    post = info.get("postprocessing", {})
    if not isinstance(post, dict):
        raise _refuse(zip_path, "inference.json's postprocessing is not an object")
    for label, rule in post.items():
        validate_rule(rule, f"inference.json postprocessing {label}")
    from autoseg.inference.predictor import check_scales

    try:
        check_scales(info.get("tta_scales", [1.0]))
    except (TypeError, ValueError):
        raise _refuse(
            zip_path, "inference.json's tta_scales must be positive numbers that include 1.0"
        ) from None
    for c in configs:
        for f in folds:
            arc = f"{c}/fold_{f}/{CHECKPOINT}"
            try:
                state = load_checkpoint(staging / arc)
            except AutosegError as exc:
                raise AutosegError(
                    f"refused to import: {arc}: {exc.message}", path=zip_path, fix=_FIX_IMPORT
                ) from exc
            if state.get("config", c) != c or int(state.get("fold", f)) != f:
                raise _refuse(
                    zip_path,
                    f"{arc} holds configuration {state.get('config')} fold {state.get('fold')}",
                )


def _install(src: Path, dst: Path) -> None:
    """Move a verified file into place atomically (copying when on another file system)."""
    with atomic_path(dst) as tmp:
        shutil.move(str(src), str(tmp))


def _keep_existing_dataset_json(staged: Path, existing: Path) -> bool:
    """On --overwrite keep a local dataset.json that agrees on channels, labels and file ending:
    it may hold the subject/cohort map that an export leaves out."""
    if not existing.is_file():
        return False
    try:
        old = load_dataset_json(existing.parent)
    except AutosegError:
        return False
    new = load_dataset_json(staged.parent)
    return (old.channel_names, old.labels, old.file_ending) == (
        new.channel_names,
        new.labels,
        new.file_ending,
    )


def import_model(
    zip_path: str | os.PathLike, root: str | os.PathLike | None = None, *, overwrite: bool = False
) -> Path:
    """Verify and install a model zip; returns ``results/<dataset>``.

    Installs plans.json into ``preprocessed/<ds>/``, dataset.json into ``raw/<ds>/`` (no
    images: add cases to ``imagesTs`` or predict any folder) and inference.json plus the
    checkpoints into ``results/<ds>/``, after which ``autoseg predict -d <ds>`` works. Refuses
    an existing dataset of that name unless ``overwrite``.
    """
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise AutosegError("file not found", path=zip_path, fix="check the path")
    if not zipfile.is_zipfile(zip_path):
        raise AutosegError(
            "not a zip file", path=zip_path, fix="give a .zip made by 'autoseg export-model'"
        )
    base = data_root(root)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AutosegError(f"cannot open the zip ({exc})", path=zip_path, fix=_FIX_IMPORT) from None
    with zf:
        manifest = _read_manifest(zip_path, zf)
        _check_members(zip_path, zf, manifest)
        name = manifest["dataset"]
        clash = _same_id_elsewhere(name, root)
        if clash:
            raise AutosegError(
                f"dataset id of {name} is already used by {', '.join(clash)}",
                path=raw_dir(root),
                fix="import into another root (--root), or rename/remove the other dataset",
            )
        existing = _existing(name, root)
        if existing and not overwrite:
            raise AutosegError(
                f"dataset {name} already exists ({', '.join(str(p) for p in existing)})",
                path=zip_path,
                fix="use --overwrite to replace its model files, or import into another --root",
            )
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{TMP_MARK}import-", dir=base))
        try:
            for entry in manifest["files"]:
                try:
                    _extract_verified(zip_path, zf, entry, staging)
                except _ZIP_READ_ERRORS as exc:
                    raise _refuse(zip_path, f"cannot read {entry['path']} ({exc})") from None
            _validate_staged(zip_path, staging, manifest)
            res = results_dir(root) / name
            # Checkpoints first and inference.json last: an interrupted import never leaves an
            # inference.json that points to missing checkpoints.
            for entry in manifest["files"]:
                if _CHECKPOINT_PATH.match(entry["path"]):
                    _install(staging / entry["path"], res / entry["path"])
            _install(staging / PLANS, preprocessed_dir(root) / name / PLANS)
            raw_json = raw_dir(root) / name / DATASET
            if not _keep_existing_dataset_json(staging / DATASET, raw_json):
                _install(staging / DATASET, raw_json)
            _install(staging / INFERENCE, res / INFERENCE)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return res


def read_manifest(zip_path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a model zip (validated as on import), e.g. to show what it holds."""
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise AutosegError("not a zip file", path=zip_path, fix="give a model .zip")
    with zipfile.ZipFile(zip_path) as zf:
        manifest = _read_manifest(zip_path, zf)
        _check_members(zip_path, zf, manifest)
    return manifest


__all__ = ["export_model", "import_model", "read_manifest", "unsafe_member_name"]
