"""Loaders that keep the trainer fed: sample, augment, batch — in worker processes if asked.

``build_loader`` returns an endless iterator of batches::

    {"data": float32 (B, C*k, *patch), "target": uint8 (B, 1, *patch), "keys": [case ids]}

(``k`` = context slices for 2.5D, 1 otherwise). With ``num_workers > 0`` batches are made by
batchgenerators' ``MultiThreadedAugmenter`` (one process and one queue per worker, read in
turn, so the order of batches is reproducible); with 0 they are made in the calling process.
Forked workers make each batch straight in a shared-memory buffer and send only its number
(:class:`SharedBatches`); the main process copies it out (~1 ms instead of 5-7 ms of
unpickling a 4-6 MB batch).

Randomness: worker ``i`` (and the single-process loader, as worker 0) draws everything from
generators seeded with ``(seed, i)`` — patch positions and spatial augmentation from
``numpy.random.Generator`` objects, intensity augmentation from private copies of the global
``numpy.random`` and ``random`` states that batchgenerators' transforms use. The same seed
therefore gives the same batches, and one worker gives the same batches as none. The caller's
global random state is never touched.

Shutting down: ``close()`` (or leaving a ``with`` block, or Ctrl-C while waiting for a batch)
stops and joins all workers. An exception inside a worker is sent to the main process and
raised there (an :class:`AutosegError` unchanged, anything else as ``RuntimeError`` with the
worker's traceback), after the workers were stopped. On Linux, workers also ask the kernel to
terminate them when the process that started them dies (``PR_SET_PDEATHSIG``), so even a
killed trainer leaves no orphaned workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import multiprocessing
import os
import random
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.data.augment import AugmentationProfile, Augmenter, get_profile, spatial_settings
from autoseg.data.dataset import CaseStore
from autoseg.data.sampler import PatchGeometry, clear_scratch, jitter_voxels, sample_patch
from autoseg.errors import AutosegError
from autoseg.io.anisotropy import is_anisotropic
from autoseg.planning.plan import Plan

_FIX_PLAN = "correct the configuration in plans.json (plans/README.md describes every field)"

_GEOMETRIC_PROFILES = ("2d", "2.5d", "3d", "3d_anisotropic")


@dataclass(frozen=True)
class LoaderConfig:
    """Everything the loader needs for one configuration, as plain values.

    ``patch_size`` is in the configuration's axes: ``(y, x)`` for 2D/2.5D (the axes left after
    cutting along ``slice_axis``), ``(z, y, x)`` for 3D. ``crop_window`` (voxels, same axes) is
    set for the ``crop`` configuration. ``augmentation`` names an imaging profile (``default``,
    ``mri``, ``ultrasound``, ``none``) or is an :class:`AugmentationProfile`; ``anisotropic``
    makes a 3D configuration's spatial augmentation in-plane only, ``thick_axis`` names the
    axis left alone (array order).
    """

    dim: int
    patch_size: tuple[int, ...]
    batch_size: int
    oversample_foreground: float = 0.33
    slices: int = 1
    crop_window: tuple[int, ...] | None = None
    augmentation: str | AugmentationProfile = "default"
    anisotropic: bool = False
    seed: int = 0
    slice_axis: int = 0
    thick_axis: int = 0
    spacing: tuple[float, ...] | None = None
    crop_jitter_mm: float = 4.0
    name: str = ""
    ignore_label: int | None = None  # sparse annotation: value of unlabelled voxels

    def __post_init__(self) -> None:
        where = f"configuration {self.name!r}" if self.name else "loader configuration"
        if self.dim not in (2, 3):
            raise AutosegError(f"{where}: dim must be 2 or 3, got {self.dim}", fix=_FIX_PLAN)
        if len(self.patch_size) != self.dim or any(int(p) < 1 for p in self.patch_size):
            raise AutosegError(
                f"{where}: patch_size {list(self.patch_size)} needs {self.dim} positive values",
                fix=_FIX_PLAN,
            )
        if self.batch_size < 1:
            raise AutosegError(f"{where}: batch_size must be >= 1", fix=_FIX_PLAN)
        if not 0.0 <= self.oversample_foreground <= 1.0:
            raise AutosegError(
                f"{where}: oversample_foreground must be a fraction 0..1, "
                f"got {self.oversample_foreground}",
                fix=_FIX_PLAN,
            )
        if self.slices < 1 or self.slices % 2 == 0:
            raise AutosegError(
                f"{where}: slices (context slices) must be odd, got {self.slices}", fix=_FIX_PLAN
            )
        if self.slices > 1 and self.dim != 2:
            raise AutosegError(f"{where}: only 2D configurations stack slices", fix=_FIX_PLAN)
        if self.crop_window is not None and len(self.crop_window) != self.dim:
            raise AutosegError(
                f"{where}: crop window {list(self.crop_window)} needs {self.dim} values",
                fix=_FIX_PLAN,
            )
        if not (0 <= self.slice_axis <= 2 and 0 <= self.thick_axis <= 2):
            raise AutosegError(f"{where}: slice_axis/thick_axis must be 0, 1 or 2", fix=_FIX_PLAN)
        get_profile(self.augmentation)  # raises for unknown names

    @classmethod
    def from_plan(
        cls,
        config: Mapping[str, Any],
        *,
        plan: Mapping[str, Any] | None = None,
        name: str | None = None,
        **overrides: Any,
    ) -> LoaderConfig:
        """A LoaderConfig from a hand-written configuration block (a dict, as in
        ``plans.json``); training reads the typed plan instead (:meth:`from_configuration`).

        Reads ``dim``, ``patch_size``, ``batch_size``, ``oversample_foreground``,
        ``context_slices``, ``slice_axis``, ``spacing``, ``crop.window_voxels``,
        ``thick_axis`` and ``augmentation`` (the planner's geometric profile:
        ``3d_anisotropic`` sets ``anisotropic``; without it a 3D block is anisotropic by its
        spacing). The imaging profile comes from ``modality`` in the block, or from the whole
        plan's ``fingerprint.modality`` when ``plan`` is given (any ultrasound channel:
        ``ultrasound``; else any MRI channel: ``mri``; else ``default``). ``overrides`` replace
        any field (e.g. ``batch_size=2, seed=7``).
        """
        c = dict(config)
        patch = tuple(int(p) for p in _first(c, "patch_size", default=()))
        dim = int(_first(c, "dim", default=len(patch) or 3))
        slices = int(_first(c, "context_slices", default=1))
        geometric = str(c.get("augmentation", "") or "")
        anisotropic = geometric == "3d_anisotropic"
        spacing = c.get("spacing")
        spacing = tuple(float(s) for s in spacing) if spacing else None
        if not anisotropic and dim == 3 and spacing and not geometric:
            # in-plane-only augmentation when the plan does not say (autoseg.io.anisotropy)
            anisotropic = is_anisotropic(spacing)
        crop = c.get("crop")
        window = None
        if isinstance(crop, Mapping) and crop.get("window_voxels"):
            window = tuple(int(v) for v in crop["window_voxels"])
        profile = c.get("modality")
        if isinstance(profile, Mapping):  # per-channel modalities, as in the fingerprint
            profile = profile_of_modalities(profile)
        if not profile and plan is not None:
            profile = modality_profile(plan)
        if not profile and geometric and geometric not in _GEOMETRIC_PROFILES:
            profile = geometric
        thick = c.get("thick_axis")
        if thick is None and plan is not None:
            thick = (plan.get("resampling") or {}).get("thick_axis")
        if thick is None:
            thick = int(np.argmax(spacing)) if (spacing and dim == 3) else 0
        slice_axis = c.get("slice_axis")
        values: dict[str, Any] = dict(
            dim=dim,
            patch_size=patch,
            batch_size=int(_first(c, "batch_size", default=2)),
            oversample_foreground=float(_first(c, "oversample_foreground", default=0.33)),
            slices=slices,
            crop_window=window,
            augmentation=str(profile or "default"),
            anisotropic=bool(anisotropic),
            slice_axis=0 if slice_axis is None else int(slice_axis),
            thick_axis=int(thick),
            spacing=spacing,
            name=str(name or c.get("name") or ""),
        )
        ignore = c.get("ignore_label")
        if ignore is None and plan is not None:
            ignore = plan.get("ignore_label")
        if ignore is not None:
            values["ignore_label"] = int(ignore)
        if "seed" in c:
            values["seed"] = int(c["seed"])
        return cls._with(values, overrides)

    @classmethod
    def from_configuration(cls, plan: Plan, config: str, **overrides: Any) -> LoaderConfig:
        """The loader of one configuration of the typed plan (what the trainer and
        ``show-batch`` use): the fields as the planner wrote them, the imaging profile from the
        fingerprint's modalities, the thick axis from the resampling rule (else the coarsest
        axis of a 3D configuration)."""
        cfg = plan.configurations[config]
        spacing = tuple(float(s) for s in cfg.spacing)
        thick = plan.resampling.thick_axis
        if thick is None:
            thick = int(np.argmax(spacing)) if cfg.dim == 3 else 0
        values: dict[str, Any] = dict(
            dim=cfg.dim,
            patch_size=tuple(int(p) for p in cfg.patch_size),
            batch_size=int(cfg.batch_size),
            oversample_foreground=float(cfg.oversample_foreground),
            slices=int(cfg.context_slices),
            crop_window=None if cfg.crop is None else tuple(int(v) for v in cfg.crop.window_voxels),
            augmentation=profile_of_modalities(plan.fingerprint.modality),
            anisotropic=cfg.augmentation == "3d_anisotropic",
            slice_axis=0 if cfg.slice_axis is None else int(cfg.slice_axis),
            thick_axis=int(thick),
            spacing=spacing,
            name=config,
            ignore_label=plan.ignore_label,  # sparse annotation (None: every voxel labelled)
        )
        return cls._with(values, overrides)

    @classmethod
    def _with(cls, values: dict[str, Any], overrides: Mapping[str, Any]) -> LoaderConfig:
        known = {f.name for f in fields(cls)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise TypeError(f"unknown LoaderConfig field(s): {', '.join(bad)}")
        values.update(overrides)
        return cls(**values)


def _first(d: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def modality_profile(plan: Mapping[str, Any]) -> str:
    """Imaging profile for a whole plan dict from its fingerprint's channel modalities."""
    return profile_of_modalities(((plan.get("fingerprint") or {}).get("modality")) or {})


def profile_of_modalities(modality: Mapping[str, Any]) -> str:
    """Imaging profile for per-channel modalities (``{"0": "ultrasound"}``): ultrasound wins,
    then MRI, else the default profile."""
    values = {str(v).lower() for v in modality.values()}
    if "ultrasound" in values:
        return "ultrasound"
    if "mri" in values:
        return "mri"
    return "default"


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class LoaderLayout:
    """How a configuration maps onto the stored volumes.

    ``front`` is the axis moved to the front (the slice axis for 2D/2.5D, the thick axis for
    anisotropic 3D) so that sampling and in-plane augmentation always treat axis 0 as the
    special one; ``geometry`` is in those moved axes; ``in_plane`` says whether spatial
    augmentation is 2D per slice.
    """

    front: int
    geometry: PatchGeometry
    in_plane: bool
    out_patch: tuple[int, ...]  # patch in the moved axes (2 values for 2D)


def loader_layout(config: LoaderConfig, augment: bool) -> tuple[LoaderLayout, Augmenter | None]:
    """Geometry and augmenter of a configuration (pure apart from building transforms)."""
    profile = get_profile("none" if not augment else config.augmentation)
    slice_mode = config.dim == 2
    front = config.slice_axis if slice_mode else (config.thick_axis if config.anisotropic else 0)
    in_plane = slice_mode or config.anisotropic
    if slice_mode:
        patch = (int(config.patch_size[0]), int(config.patch_size[1]))
        window = None if config.crop_window is None else (None, *config.crop_window)
        spacing_moved = None if config.spacing is None else (1e9, *config.spacing[-2:])
    else:
        order = _moved_order(front)
        patch3 = tuple(int(config.patch_size[a]) for a in order)
        window = None if config.crop_window is None else tuple(config.crop_window[a] for a in order)
        spacing_moved = None if config.spacing is None else tuple(config.spacing[a] for a in order)
    jitter = jitter_voxels(config.crop_jitter_mm, spacing_moved) if window else (0, 0, 0)
    if slice_mode:
        settings = spatial_settings(profile, patch, in_plane=True)
        geom = PatchGeometry(
            patch=(1, *patch),
            read=(config.slices, *patch),
            slice_mode=True,
            window=window,
            jitter=jitter,  # type: ignore[arg-type]
        )
        out_patch: tuple[int, ...] = patch
    else:
        if in_plane:
            settings = spatial_settings(profile, patch3[1:], in_plane=True)
        else:
            settings = spatial_settings(profile, patch3, in_plane=False)
        geom = PatchGeometry(
            patch=patch3,  # type: ignore[arg-type]
            read=patch3,  # type: ignore[arg-type]
            slice_mode=False,
            window=window,  # type: ignore[arg-type]
            jitter=jitter,  # type: ignore[arg-type]
        )
        out_patch = patch3
    augmenter = Augmenter(profile, settings) if augment else None
    return LoaderLayout(
        front=front, geometry=geom, in_plane=in_plane, out_patch=out_patch
    ), augmenter


def _moved_order(front: int) -> tuple[int, int, int]:
    """Axis order after moving ``front`` to position 0 (the others keep their order)."""
    return (front, *[a for a in range(3) if a != front])


# --------------------------------------------------------------------------- randomness
class GlobalRandomSlot:
    """Private copies of the global ``numpy.random`` and ``random`` states.

    batchgenerators draws from the global generators; inside ``with slot:`` they hold this
    slot's state, and on exit the slot keeps the advanced state and the caller's is restored.
    """

    def __init__(self, seed_np: int, seed_py: int):
        self._np = np.random.RandomState(seed_np % 2**32).get_state()
        self._py = random.Random(seed_py).getstate()
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> GlobalRandomSlot:
        self._saved = (np.random.get_state(), random.getstate())
        np.random.set_state(self._np)
        random.setstate(self._py)
        return self

    def __exit__(self, *exc: object) -> None:
        self._np = np.random.get_state()
        self._py = random.getstate()
        assert self._saved is not None
        np.random.set_state(self._saved[0])
        random.setstate(self._saved[1])
        self._saved = None


def stream_seeds(
    seed: int, stream: int
) -> tuple[np.random.Generator, np.random.Generator, GlobalRandomSlot]:
    """Independent generators for worker ``stream`` of a loader seeded with ``seed``: patch
    positions, spatial augmentation, and the global-state slot of the intensity transforms."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(stream)]).generate_state(4)
    return (
        np.random.default_rng(int(state[0])),
        np.random.default_rng(int(state[3])),
        GlobalRandomSlot(int(state[1]), int(state[2])),
    )


# --------------------------------------------------------------------------- batch source
class BatchSource:
    """Makes batches; one copy lives in each worker process (batchgenerators' loader protocol:
    ``__next__`` and ``set_thread_id``)."""

    def __init__(
        self,
        store: CaseStore,
        config: LoaderConfig,
        *,
        seed: int,
        augment: bool,
    ):
        self.store = store
        self.config = config
        self.seed = int(seed)
        self.augment = augment
        self.layout, self.augmenter = loader_layout(config, augment)
        self.case_ids = list(store.case_ids)
        self.in_worker = False
        self.parent_pid = os.getpid()
        self.rng, self.aug_rng, self.slot = stream_seeds(self.seed, 0)
        self.shared: SharedBatches | None = None  # set by PatchLoader before workers fork
        self.worker_id = 0
        self.sent = 0

    # batchgenerators calls this in the worker right after it starts
    def set_thread_id(self, thread_id: int) -> None:
        self.in_worker = True
        self.worker_id = int(thread_id)
        self.rng, self.aug_rng, self.slot = stream_seeds(self.seed, int(thread_id))
        _die_with_parent(self.parent_pid)
        _reuse_freed_memory()

    def __iter__(self) -> BatchSource:
        return self

    def __next__(self) -> dict[str, Any]:
        if not self.in_worker:
            return self.make_batch()
        try:
            if self.shared is None:
                return self.make_batch()
            return self._make_shared()
        except Exception as exc:  # sent to the main process, which raises it
            if isinstance(exc, AutosegError):
                return {"__error__": exc}
            return {"__error__": "".join(traceback.format_exception(exc))}

    def batch_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of a batch's ``data`` and ``target`` (reads the first case's header)."""
        cfg = self.config
        channels = int(self.store.image(self.case_ids[0]).shape[0])
        patch = tuple(int(p) for p in cfg.patch_size)
        data = (cfg.batch_size, channels * cfg.slices, *patch)
        return data, (cfg.batch_size, 1, *patch)

    def _make_shared(self) -> dict[str, Any]:
        """Make the next batch in this worker's next shared buffer (once the main process has
        released it); what is sent through the pipe is only the buffer's number."""
        shared = self.shared
        assert shared is not None
        index = self.sent % shared.n_buffers
        while not shared.free[self.worker_id].acquire(timeout=0.05):
            if shared.stop.is_set():
                return {"__stopped__": True}
            if os.getppid() != self.parent_pid:
                os._exit(1)
        batch = self.make_batch(out=shared.views(self.worker_id, index))
        self.sent += 1
        return {"__shared__": (self.worker_id, index), "keys": batch["keys"]}

    def make_batch(self, out: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
        """One batch; into ``out`` (``data``, ``target`` of :meth:`batch_shapes`) when given."""
        cfg, lay = self.config, self.layout
        geom = lay.geometry
        order = _moved_order(lay.front)
        aug = self.augmenter
        keys: list[str] = []
        n_channels = None
        data = target = None
        for i in range(cfg.batch_size):
            case_id = self.case_ids[int(self.rng.integers(len(self.case_ids)))]
            force_fg = bool(self.rng.random() < cfg.oversample_foreground)
            image = self.store.image(case_id)
            seg = self.store.seg(case_id)
            locations = self.store.locations(case_id)
            if lay.front != 0:
                image = np.moveaxis(image, 1 + lay.front, 1)
                seg = np.moveaxis(seg, lay.front, 0)
                locations = {k: v[:, list(order)] for k, v in locations.items()}
            if data is None or target is None:
                n_channels = image.shape[0]
                seg_z = 1 if geom.slice_mode else geom.read[0]
                data_shape = (cfg.batch_size, n_channels, *geom.read)
                target_shape = (cfg.batch_size, 1, seg_z, *geom.read[1:])
                if out is not None and (geom.slice_mode or lay.front == 0):
                    # same memory layout as the batch: a reshape, so make it in place
                    data = out[0].reshape(data_shape)
                    target = out[1].reshape(target_shape)
                else:
                    data = np.empty(data_shape, np.float32)
                    target = np.empty(target_shape, np.uint8)
            elif image.shape[0] != n_channels:
                raise AutosegError(
                    f"case {case_id} has {image.shape[0]} channels, others {n_channels}",
                    path=self.store.folder,
                    fix="run 'autoseg preprocess' for this dataset again",
                )
            offsets, flips = None, (False, False, False)
            if aug is not None:
                warp = aug.draw_warp(self.aug_rng)
                offsets, flips = aug.offsets(warp), warp.flips
            sample_patch(
                case_id,
                image,
                seg,
                locations,
                geom,
                self.rng,
                force_fg,
                data[i],
                target[i, 0],
                offsets=offsets,
                flips=flips,
                ignore_label=cfg.ignore_label,
            )
            keys.append(case_id)
        assert data is not None and target is not None
        if aug is not None:
            with self.slot:
                data, target = aug.intensity(data, target)
        b, c = data.shape[:2]
        if geom.slice_mode:
            data = data.reshape(b, c * data.shape[2], *data.shape[3:])  # channel = c * k + slice
            target = target.reshape(b, 1, *target.shape[3:])
        elif lay.front != 0:
            inverse = [2 + order.index(a) for a in range(3)]
            data = data.transpose(0, 1, *inverse)
            target = target.transpose(0, 1, *inverse)
        if out is not None:
            for dest, made in zip(out, (data, target)):
                if not np.may_share_memory(dest, made):
                    dest[...] = made.reshape(dest.shape)
            return {"data": out[0], "target": out[1], "keys": keys}
        return {
            "data": np.ascontiguousarray(data, dtype=np.float32),
            "target": np.ascontiguousarray(target, dtype=np.uint8),
            "keys": keys,
        }


class SharedBatches:
    """Batch buffers in shared memory, ``n_buffers`` per worker, handed round in order.

    Pickling a batch through a pipe cost the main process 5-7 ms per 4-6 MB batch (the
    trainer's own process, which should be feeding the GPU); copying it out of shared memory
    costs ~1 ms. Worker ``w`` writes its ``n``-th batch into buffer ``n % n_buffers`` once the
    main process has released that buffer (one counting semaphore per worker: batches of a
    worker arrive in the order they were made, so the buffers free up in the same order) and
    sends only the buffer's number. The memory is an anonymous shared mapping made before the
    workers fork, so it needs no name and nothing to clean up; with another start method the
    loader pickles batches instead.
    """

    def __init__(
        self,
        n_workers: int,
        n_buffers: int,
        data_shape: Sequence[int],
        target_shape: Sequence[int],
    ):
        self.data_shape = tuple(int(v) for v in data_shape)
        self.target_shape = tuple(int(v) for v in target_shape)
        self.data_bytes = 4 * math.prod(self.data_shape)
        target_bytes = math.prod(self.target_shape)
        self.buffer_bytes = -(-(self.data_bytes + target_bytes) // 64) * 64
        self.n_buffers = int(n_buffers)
        self.memory = [mmap.mmap(-1, self.n_buffers * self.buffer_bytes) for _ in range(n_workers)]
        ctx = multiprocessing.get_context("fork")
        self.free = [ctx.Semaphore(self.n_buffers) for _ in range(n_workers)]
        self.stop = ctx.Event()

    def views(self, worker: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``data`` (float32) and ``target`` (uint8) arrays over one buffer."""
        start = index * self.buffer_bytes
        mem = self.memory[worker]
        data = np.frombuffer(mem, np.float32, math.prod(self.data_shape), start)
        target = np.frombuffer(mem, np.uint8, math.prod(self.target_shape), start + self.data_bytes)
        return data.reshape(self.data_shape), target.reshape(self.target_shape)

    def receive(self, item: dict[str, Any]) -> dict[str, Any]:
        """The batch a worker announced in ``item``, copied out; its buffer is released."""
        worker, index = item["__shared__"]
        data, target = self.views(worker, index)
        batch = {"data": data.copy(), "target": target.copy(), "keys": item["keys"]}
        del data, target
        self.free[worker].release()
        return batch


def _reuse_freed_memory() -> None:
    """Make this worker's allocator keep freed memory for the next batch (glibc only).

    By default glibc serves multi-megabyte arrays with fresh ``mmap`` pages and hands freed
    heap back to the kernel, so every batch's temporaries page-fault again; keeping them (up to
    1 GiB, per worker process — only workers, never the caller's process) took a worker's CPU
    time for the thigh batch from 21.8 to 18.7 ms (median of 3 runs each)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None)
            libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: arrays up to 32 MiB from the heap
            libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this worker when its parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


# --------------------------------------------------------------------------- the loader
@dataclass
class PatchLoader:
    """Endless iterator of batches with ``close()``; a context manager."""

    source: BatchSource
    num_workers: int = 0
    num_cached_per_worker: int = 3
    _augmenter: Any = field(default=None, repr=False)
    _shared: SharedBatches | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_workers > 0:
            from batchgenerators.dataloading.multi_threaded_augmenter import (
                MultiThreadedAugmenter,
            )

            self.source.parent_pid = os.getpid()
            self._shared = _shared_batches(
                self.source, self.num_workers, self.num_cached_per_worker
            )
            self.source.shared = self._shared
            seeds = [
                int(np.random.SeedSequence([self.source.seed & 0xFFFFFFFF, i]).generate_state(1)[0])
                for i in range(self.num_workers)
            ]
            self._augmenter = MultiThreadedAugmenter(
                self.source,
                None,
                self.num_workers,
                num_cached_per_queue=self.num_cached_per_worker,
                seeds=seeds,
            )
            self._augmenter._start()  # workers start producing while the caller sets up

    def __iter__(self) -> PatchLoader:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._closed:
            raise StopIteration
        if self._augmenter is None:
            return next(self.source)
        try:
            item = next(self._augmenter)
        except KeyboardInterrupt:
            self.close()
            raise
        except RuntimeError as exc:
            self.close()
            raise AutosegError(
                f"a data loading worker stopped ({exc})",
                fix="see the worker's message above; if it ran out of memory, use fewer "
                "workers (--num-workers)",
            ) from None
        except StopIteration:
            self.close()
            raise
        if isinstance(item, dict) and "__error__" in item:
            self.close()
            err = item["__error__"]
            if isinstance(err, BaseException):
                raise err
            raise RuntimeError(f"a data loading worker failed:\n{err}")
        if self._shared is not None and "__shared__" in item:
            return self._shared.receive(item)
        return item

    def close(self) -> None:
        """Stop and join the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._shared is not None:
            self._shared.stop.set()  # workers waiting for a free buffer give up
        if self._augmenter is not None:
            self._augmenter._finish()
            self._augmenter = None
        self._shared = None
        self.source.shared = None
        clear_scratch()

    def __enter__(self) -> PatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _shared_batches(source: BatchSource, n_workers: int, n_cached: int) -> SharedBatches | None:
    """Shared batch buffers for forked workers; None (batches are pickled) when workers do not
    fork or the batch shape cannot be known yet — a broken first case is then reported by the
    worker that reads it, as any other case."""
    if multiprocessing.get_start_method(allow_none=False) != "fork":
        return None
    try:
        data_shape, target_shape = source.batch_shapes()
    except Exception:
        return None
    # one more buffer than the worker's queue holds, so it can work on the next batch meanwhile
    return SharedBatches(n_workers, n_cached + 1, data_shape, target_shape)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_loader_workers(device_type: str, cpus: int | None = None) -> int:
    """Augmentation processes beside the training step. On a GPU 2, which keep a 2D/3D U-Net
    fed (the budget planner assumes as many: ``budget.GPU_LOADER_WORKERS``). On a CPU the
    cores the step leaves free, at most 2: the planner times the step with one thread when
    that is faster (``cpu_threads``), so on 2 cores one worker runs beside it; on a single
    core a worker would only take turns with the step and add the transfer, so none."""
    cpus = usable_cpus() if cpus is None else cpus
    if device_type == "cuda":
        return 2
    return max(0, min(2, cpus - 1))


def build_loader(
    cases_dir: str | os.PathLike,
    case_ids: Sequence[str] | None,
    config: LoaderConfig,
    *,
    num_workers: int = 0,
    seed: int | None = None,
    augment: bool = True,
) -> PatchLoader:
    """Endless batches of ``config`` from the preprocessed cases in ``cases_dir``.

    ``case_ids`` None means every case in the folder. ``seed`` (default ``config.seed``) fixes
    everything: the same seed gives the same batches for the same ``num_workers``. Use one seed
    per fold (and per epoch if loaders are rebuilt) so folds do not see identical streams.
    """
    if num_workers < 0:
        raise AutosegError(f"num_workers must be >= 0, got {num_workers}", fix="use 0 or more")
    store = CaseStore(Path(cases_dir), None if case_ids is None else list(case_ids))
    if seed is not None and seed != config.seed:
        config = replace(config, seed=int(seed))
    source = BatchSource(store, config, seed=config.seed, augment=augment)
    return PatchLoader(source, num_workers=int(num_workers))
