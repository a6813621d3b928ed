"""Throughput of the training data pipeline: batches per second, sampling + full augmentation.

    .venv/bin/python -m benchmarks.bench_dataloader [--batches 20] [--repeats 3] [--workers 0 2]
        [--only 3d 2d thigh] [--plans PATH/plans.json --config-3d 3d_fullres]
        [--plans-2d PATH --config-2d 2d] [--no-nnunet] [--json PATH]

Three plans on phantom-like preprocessed data written to a temporary folder:

- **3d**: thigh-MRI-like volumes 40x256x256 (anisotropic, MRI profile), patch 20x128x128,
  batch 2 — or the planner's 3D configuration when ``--plans`` is given;
- **2d**: wrist-ultrasound-like frames 470x600 (ultrasound profile), patch 224x288, batch 12 —
  or the planner's 2D configuration;
- **thigh**: the planner's ``3d_fullres`` for the thigh phantom of :mod:`autoseg.phantoms`
  (24x160x160 at 3x0.75x0.75 mm: patch 24x160x160, batch 2, ``3d_anisotropic``, MRI profile),
  sampled from the same 40x256x256 volumes as **3d**.

For each it prints seconds per batch and batches per second with 0 and 2 worker processes —
the median of ``--repeats`` measurements (each a fresh loader, warm-up, then ``--batches``
timed batches) — and the GPU step time the loader has to beat. With 0 workers it also prints
the CPU time per batch, which other jobs on a shared machine disturb much less than wall time.
If ``.venv-bench/bin/python`` exists with nnunetv2, nnU-Net v2's own loader (its default
training transforms and multi-process augmenter, on its default blosc2 storage) is timed on
the same arrays and plan in the same run, its measurements alternating with ours so that other
work on the machine hits both alike, and the ratio of rates printed (> 1: autoseg is faster).

``--json PATH`` (default ``benchmarks/results/dataloader.json``) writes the batch rates of both
systems per plan and worker count in the shape of ``benchmarks/results.py`` (higher is better,
target autoseg / nnU-Net >= 1).

Reference GPU step times (what the loader must beat so that the GPU never waits) come from
nnU-Net v1's ``documentation/expected_epoch_times.md`` (A100 40GB, PyTorch 1.7.1, cuDNN 8.1,
mixed precision; one epoch = 250 iterations):

- Task002_Heart 3d_fullres with dummy data (no data loading): 48.53 s/epoch = 0.194 s per
  iteration, patch 80x192x160, batch 2 (4.9 M voxels per batch);
- Task002_Heart 2d (with data loading): 40.06 s/epoch = 0.160 s per iteration.

Our 3D batch is ~7x smaller than Heart's, so the same GPU needs roughly 0.194 x (our voxels /
4.9 M) per step if time scaled with voxels (it scales less than linearly for small patches, so
this is a lower bound on the step time, i.e. the hardest target). An H100 is ~1.5-2x faster
than an A100, which halves the targets again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

if not __package__:  # started as a file, not as a module of the package
    print(
        f"run as python -m benchmarks.{Path(__file__).stem} (from the repository root)",
        file=sys.stderr,
    )
    sys.exit(2)

from autoseg.data import LoaderConfig, build_loader
from autoseg.data.dataset import locations_from_seg, write_case_arrays
from benchmarks.results import REPO, Result, from_runs, write_results

HEART_3D_STEP_S = 48.53 / 250  # A100, dummy data, 80x192x160 x 2
HEART_3D_VOXELS = 80 * 192 * 160 * 2
HEART_2D_STEP_S = 40.06 / 250  # A100, 2d, with data loading
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "dataloader.json"
NOTES = [
    "measurements alternate between autoseg and nnU-Net (fresh loader each, warm-up batches "
    "untimed); figures are medians of the per-measurement rates",
    "same arrays, patch size, batch size and foreground oversampling for both; each system "
    "applies its own training augmentation (autoseg: its modality profile, incl. MRI/US "
    "transforms; nnU-Net: its default training transforms) and its own storage (autoseg .npy, "
    "nnU-Net blosc2 as its preprocessor writes it)",
]


# --------------------------------------------------------------------------- phantoms
def thigh_phantom(rng: np.random.Generator, shape=(40, 256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """Normalised thigh-like volume: muscle ellipse, fat rim, femur, sciatic nerve (label 1,
    ~8 px across) and two vessels (label 2) drifting slowly along z, Rician-like noise."""
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x].astype(np.float32)
    img = np.zeros(shape, np.float32)
    seg = np.zeros(shape, np.uint8)
    cy, cx = y / 2 + rng.uniform(-8, 8), x / 2 + rng.uniform(-8, 8)
    for k in range(z):
        drift = 6 * math.sin(k / z * math.pi)
        thigh = ((yy - cy) / (0.42 * y)) ** 2 + ((xx - cx) / (0.36 * x)) ** 2
        sl = np.where(thigh < 1, 1.0, 0.0) + np.where((thigh > 0.8) & (thigh < 1), 1.2, 0.0)
        femur = (yy - cy) ** 2 + (xx - cx + 10) ** 2 < 14**2
        sl[femur] = 0.3
        nerve = (yy - cy - 40 - drift) ** 2 / 5**2 + (xx - cx - 5) ** 2 / 4**2 < 1
        vessel = ((yy - cy - 20) ** 2 + (xx - cx + 30 + drift) ** 2 < 6**2) | (
            (yy - cy - 28) ** 2 + (xx - cx - 25) ** 2 < 5**2
        )
        sl[nerve] = 1.6
        sl[vessel] = 2.0
        img[k] = sl
        seg[k][nerve] = 1
        seg[k][vessel] = 2
    img += rng.normal(0, 0.08, img.shape).astype(np.float32)
    img = (img - img.mean()) / img.std()
    return img[None], seg


def wrist_us_phantom(rng: np.random.Generator, shape=(470, 600)) -> tuple[np.ndarray, np.ndarray]:
    """Normalised B-mode-like frame: depth attenuation, speckle, bright fascia lines, an oval
    median nerve (label 1) and a dark round artery (label 2)."""
    y, x = shape
    yy, xx = np.mgrid[:y, :x].astype(np.float32)
    img = np.exp(-yy / (0.8 * y)) * rng.gamma(4.0, 0.25, shape)
    for row in rng.uniform(0.2, 0.8, 3) * y:
        img += 0.8 * np.exp(-(((yy - row - 0.05 * (xx - x / 2)) / 3.0) ** 2))
    cy, cx = rng.uniform(0.35, 0.55) * y, rng.uniform(0.35, 0.65) * x
    nerve = ((yy - cy) / 22) ** 2 + ((xx - cx) / 40) ** 2 < 1
    artery = (yy - cy - 10) ** 2 + (xx - cx - 90) ** 2 < 18**2
    img[nerve] = 0.9 + 0.3 * rng.random(int(nerve.sum()))
    img[artery] *= 0.1
    seg = np.zeros(shape, np.uint8)
    seg[nerve] = 1
    seg[artery] = 2
    img = ((img - img.mean()) / img.std()).astype(np.float32)
    return img[None, None], seg[None]


def write_dataset(folder: Path, kind: str, n_cases: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n_cases):
        img, seg = thigh_phantom(rng) if kind == "3d" else wrist_us_phantom(rng)
        write_case_arrays(folder, f"{kind}_{i:03d}", img, seg)
        ids.append(f"{kind}_{i:03d}")
    return ids


def write_nnunet_locations(src: Path, ids: list[str]) -> None:
    """nnU-Net's per-case properties (class locations with a channel column) as ``.pkl``;
    the nnU-Net side converts the arrays to its default blosc2 format itself."""
    for case in ids:
        seg = np.load(src / f"{case}_seg.npy")
        locs = {
            k: np.concatenate([np.zeros((len(v), 1), np.int64), v], axis=1)
            for k, v in locations_from_seg(seg).items()
        }
        with open(src / f"{case}.pkl", "wb") as f:
            pickle.dump({"class_locations": locs}, f)


# --------------------------------------------------------------------------- timing
def time_autoseg(folder: Path, cfg: LoaderConfig, workers: int, n_batches: int) -> dict[str, float]:
    """One measurement: a fresh loader, ``max(2, 2 * workers)`` warm-up batches, then
    ``n_batches`` timed: wall seconds per batch, and this process's CPU seconds per batch (for 0
    workers the whole pipeline's cost, which other jobs disturb much less than wall time)."""
    with build_loader(folder, None, cfg, num_workers=workers, seed=0) as loader:
        for _ in range(max(2, workers * 2)):
            next(loader)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n_batches):
            next(loader)
        wall = (time.perf_counter() - t0) / n_batches
        return {"wall": wall, "cpu": (time.process_time() - c0) / n_batches}


NNUNET_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, warnings
    warnings.filterwarnings("ignore")
    import numpy as np
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import (
        NonDetMultiThreadedAugmenter)
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    src, folder, ids, patch, batch = (sys.argv[1], sys.argv[2], json.loads(sys.argv[3]),
        json.loads(sys.argv[4]), int(sys.argv[5]))
    # nnU-Net's default storage: blosc2 with chunks/blocks fitted to the patch, as its
    # preprocessor writes them
    import os, pickle
    from nnunetv2.training.dataloading.nnunet_dataset import (
        nnUNetDatasetBlosc2, comp_blosc2_params)
    os.makedirs(folder, exist_ok=True)
    for case in ids:
        data = np.load(os.path.join(src, case + ".npy"))
        seg = np.load(os.path.join(src, case + "_seg.npy"))[None].astype(np.int16)
        props = pickle.load(open(os.path.join(src, case + ".pkl"), "rb"))
        bd, cd = comp_blosc2_params(data.shape, tuple(patch), data.itemsize)
        bs, cs = comp_blosc2_params(seg.shape, tuple(patch), seg.itemsize)
        nnUNetDatasetBlosc2.save_case(data, seg, props, os.path.join(folder, case),
                                      chunks=cd, blocks=bd, chunks_seg=cs, blocks_seg=bs)
    # nnUNetTrainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size, as it decides
    dim = len(patch)
    if dim == 2:
        dummy2d = False
        rot = np.pi / 12 if max(patch) / min(patch) > 1.5 else np.pi
        mirror = (0, 1)
    else:
        dummy2d = max(patch) / patch[0] > 3
        rot = np.pi if dummy2d else np.pi / 6
        mirror = (0, 1, 2)
    initial = get_patch_size(patch, (-rot, rot), (-rot, rot), (-rot, rot), (0.85, 1.25))
    if dummy2d:
        initial[0] = patch[0]
    tr = nnUNetTrainer.get_training_transforms(patch, (-rot, rot), None, mirror, dummy2d)
    labels = LabelManager({"background": 0, "nerve": 1, "vessel": 2}, None)
    print("ready", flush=True)
    for line in sys.stdin:  # "workers batches": one measurement, as time_autoseg does
        w, n = (int(v) for v in line.split())
        ds = nnUNetDatasetBlosc2(folder, list(ids))
        dl = nnUNetDataLoader(ds, batch, initial, patch, labels,
                              oversample_foreground_percent=0.33, transforms=tr)
        gen = (SingleThreadedAugmenter(dl, None) if w == 0 else
               NonDetMultiThreadedAugmenter(dl, None, w, num_cached=max(6, w // 2),
                                            seeds=None, pin_memory=False, wait_time=0.002))
        for _ in range(max(2, 2 * w)):
            next(gen)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            b = next(gen)
        wall = (time.perf_counter() - t0) / n
        cpu = (time.process_time() - c0) / n
        if w:
            gen._finish()
        print(json.dumps({"wall": wall, "cpu": cpu, "shape": list(b["data"].shape)}), flush=True)
    """
)


class NnunetTimer:
    """nnU-Net v2's loader in a ``.venv-bench`` process: converts the arrays to its blosc2
    format once, then makes one measurement per :meth:`measure` — so measurements of the two
    systems can alternate, and a burst of other work on the machine hits both alike. Holds a
    process, hence a class."""

    def __init__(self, src: Path, ids: list[str], patch: tuple[int, ...], batch: int):
        folder = src.parent / f"{src.name}_nnunet_{'x'.join(str(p) for p in patch)}"
        env = {
            **os.environ,
            "nnUNet_raw": str(folder),
            "nnUNet_preprocessed": str(folder),
            "nnUNet_results": str(folder),
        }
        self.log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 (close())
        args = [str(src), str(folder), json.dumps(ids), json.dumps(list(patch)), str(batch)]
        self.proc = subprocess.Popen(
            [str(BENCH_PYTHON), "-c", NNUNET_SCRIPT, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
        )
        self.ok = self._readline() == "ready"

    def _readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            self.log.seek(0)
            print(f"  nnU-Net timing failed:\n{self.log.read()[-2000:]}")
        return line

    def measure(self, workers: int, n_batches: int) -> dict[str, float] | None:
        if not self.ok:
            return None
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{workers} {n_batches}\n")
        self.proc.stdin.flush()
        line = self._readline()
        if not line:
            self.ok = False
            return None
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "wall": statistics.median(r["wall"] for r in runs),
        "best": min(r["wall"] for r in runs),
        "cpu": statistics.median(r["cpu"] for r in runs),
    }


def _rate(t: dict[str, float], workers: int) -> str:
    text = f"{t['wall']:.4f} s/batch = {1 / t['wall']:5.1f} batches/s"
    text += f" (fastest {t['best']:.4f} s)"
    if workers == 0:
        text += f", CPU {t['cpu']:.4f} s/batch"
    return text


def rate_result(
    kind: str,
    cfg: LoaderConfig,
    workers: int,
    ours: list[dict[str, float]],
    theirs: list[dict[str, float]],
) -> Result:
    """Batches per second of one plan and worker count (higher is better, target ratio 1: at
    least nnU-Net's rate); the 0-worker CPU-time ratio, steadier on a shared machine, goes in
    the note. An empty ``theirs`` (nnU-Net not timed) leaves nnU-Net's side empty."""
    note = ""
    if workers == 0 and ours and theirs:
        cpu = _median(theirs)["cpu"] / _median(ours)["cpu"]
        note = f"CPU time per batch nnU-Net / autoseg: {cpu:.2f}"
    return from_runs(
        f"dataloader, {kind}: {cfg.name}, {workers} workers",
        "batches per second",
        "batches/s",
        [1 / r["wall"] for r in ours],
        [1 / r["wall"] for r in theirs],
        "higher",
        1.0,
        note,
    )


# --------------------------------------------------------------------------- main
def plan_configs(args: argparse.Namespace) -> dict[str, tuple[str, LoaderConfig]]:
    """``{name: (dataset kind, config)}`` for the plans to time."""
    defaults = {
        "3d": LoaderConfig(
            3,
            (20, 128, 128),
            2,
            anisotropic=True,
            augmentation="mri",
            spacing=(4.0, 0.5, 0.5),
            name="3d default",
        ),
        "2d": LoaderConfig(2, (224, 288), 12, augmentation="ultrasound", name="2d default"),
        # what `autoseg plan` gives for the thigh phantom (24x160x160 at 3x0.75x0.75 mm)
        "thigh": LoaderConfig.from_plan(
            {
                "dim": 3,
                "patch_size": [24, 160, 160],
                "batch_size": 2,
                "spacing": [3.0, 0.75, 0.75],
                "augmentation": "3d_anisotropic",
            },
            name="thigh phantom 3d_fullres",
            augmentation="mri",
        ),
    }
    out = {}
    for kind, name, path in (
        ("3d", args.config_3d, args.plans),
        ("2d", args.config_2d, args.plans_2d or args.plans),
        ("thigh", "", None),
    ):
        if kind not in args.only:
            continue
        data_kind = "2d" if kind == "2d" else "3d"
        plan = json.loads(Path(path).read_text()) if path else {}
        block = plan.get("configurations", {}).get(name)
        if block is None:
            if path:
                print(f"{name} not in {path}; using the default {kind} plan")
            out[kind] = (data_kind, defaults[kind])
            continue
        # the phantoms carry the profile of their modality, whatever the plan's dataset was
        profile = "mri" if kind == "3d" else "ultrasound"
        out[kind] = (data_kind, LoaderConfig.from_plan(block, name=name, augmentation=profile))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per setting (median)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--only", nargs="+", default=["3d", "2d", "thigh"], help="plans to time")
    parser.add_argument("--plans", help="plans.json to take the 3D (and 2D) configuration from")
    parser.add_argument("--plans-2d", help="plans.json for the 2D configuration (default --plans)")
    parser.add_argument("--config-3d", default="3d_fullres")
    parser.add_argument("--config-2d", default="2d")
    parser.add_argument("--no-nnunet", action="store_true", help="skip nnU-Net's loader")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help="write the compared figures here"
    )
    args = parser.parse_args(argv)

    configs = plan_configs(args)
    print(f"CPU cores visible: {os.cpu_count()}, affinity: {len(os.sched_getaffinity(0))}")
    print(
        f"median of {args.repeats} measurements of {args.batches} batches per setting, "
        "alternating between autoseg and nnU-Net"
    )
    summary = []
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench_dl_") as tmp:
        datasets: dict[str, list[str]] = {}
        for kind, (data_kind, cfg) in configs.items():
            folder = Path(tmp) / data_kind
            if data_kind not in datasets:
                datasets[data_kind] = write_dataset(
                    folder, data_kind, 8 if data_kind == "3d" else 16
                )
            ids = datasets[data_kind]
            voxels = cfg.batch_size * math.prod(cfg.patch_size)
            print(
                f"\n[{kind}] {cfg.name}: patch {list(cfg.patch_size)} batch {cfg.batch_size} "
                f"slices {cfg.slices} anisotropic {cfg.anisotropic} profile {cfg.augmentation}"
            )
            nnunet = None
            if args.no_nnunet or cfg.slices > 1 or cfg.crop_window is not None:
                pass
            elif not BENCH_PYTHON.exists():
                print(f"  nnU-Net loader: not timed ({BENCH_PYTHON} not found)")
            else:
                if not (folder / f"{ids[0]}.pkl").exists():
                    write_nnunet_locations(folder, ids)
                nnunet = NnunetTimer(folder, ids, tuple(cfg.patch_size), cfg.batch_size)
            # measurements alternate between the systems: ours, theirs, ours, theirs, ...
            runs: dict[tuple[str, int], list[dict[str, float]]] = {}
            for _ in range(args.repeats):
                for w in args.workers:
                    runs.setdefault(("autoseg", w), []).append(
                        time_autoseg(folder, cfg, w, args.batches)
                    )
                    theirs = nnunet.measure(w, args.batches) if nnunet is not None else None
                    if theirs is not None:
                        runs.setdefault(("nnunet", w), []).append(theirs)
            if nnunet is not None:
                nnunet.close()
            ours = {w: _median(runs[("autoseg", w)]) for w in args.workers}
            for w in args.workers:
                print(f"  autoseg  workers={w}: {_rate(ours[w], w)}")
            if cfg.dim == 3:
                step = HEART_3D_STEP_S * voxels / HEART_3D_VOXELS
                print(
                    f"  GPU step to beat: A100 nnU-Net Heart 3d_fullres "
                    f"{HEART_3D_STEP_S:.3f} s/it, scaled to this batch's "
                    f"{voxels / 1e6:.2f} M voxels: {step:.3f} s/it"
                )
            else:
                step = HEART_2D_STEP_S
                print(f"  GPU step to beat: A100 nnU-Net Heart 2d {HEART_2D_STEP_S:.3f} s/it")
            if 0 in ours:
                need = math.ceil(ours[0]["wall"] / step)
                print(f"  workers needed to keep up with {step:.3f} s/it: {need}")
            for w in args.workers:
                theirs_runs = runs.get(("nnunet", w), [])
                results.append(rate_result(kind, cfg, w, runs[("autoseg", w)], theirs_runs))
                if ("nnunet", w) not in runs:
                    continue
                theirs = _median(runs[("nnunet", w)])
                ratio = theirs["wall"] / ours[w]["wall"]
                print(
                    f"  nnU-Net  workers={w}: {_rate(theirs, w)}; "
                    f"autoseg rate / nnU-Net rate {ratio:.2f}"
                )
                cpu = f"{theirs['cpu'] / ours[w]['cpu']:.2f}" if w == 0 else "-"
                summary.append((kind, w, ours[w]["wall"], theirs["wall"], ratio, cpu))
    if summary:
        print(
            "\nplan   workers  autoseg s/batch  nnU-Net s/batch  rate ratio  CPU ratio (0 workers)"
        )
        for kind, w, a, b, r, c in summary:
            print(f"{kind:6s} {w:7d}  {a:15.4f}  {b:15.4f}  {r:10.2f}  {c}")
    if results:
        notes = [*NOTES, f"CPU affinity {sorted(os.sched_getaffinity(0))}"]
        if not summary:
            notes.append("nnU-Net's loader not timed: no comparison")
        out = write_results(
            args.json, "dataloader", results, notes=notes, bench_python=BENCH_PYTHON
        )
        print(f"results: {out}")


if __name__ == "__main__":
    main()
