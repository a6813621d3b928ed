"""The plan: typed dataclasses <-> ``plans.json``, validated on load.

Users may edit any field of ``plans.json`` by hand, so :func:`load_plan` checks every field and
names the bad one (``configurations.3d_fullres.patch_size[1]: ...``) instead of failing later
inside preprocessing or training. Every decided value has a ``why`` entry (rule name, inputs
and numbers) so that ``autoseg plan`` can explain itself.

Per-axis lists (spacing, shapes, patch sizes) are in array order: ``(z, y, x)`` / ``(y, x)``.
The JSON schema of this file is ``plans/plan.schema.json``; ``plans/README.md`` describes it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegError
from autoseg.io.atomic import write_json_atomic
from autoseg.planning.registry import (
    BUILTIN_CONFIGURATIONS,
    configuration_names,
    is_configuration,
)

SCHEMA_VERSION = 1
PLANS_FILE = "plans.json"

CONFIG_NAMES = BUILTIN_CONFIGURATIONS
NORMALIZATION_SCHEMES = ("zscore", "ct")
MODALITIES = ("ct", "mri", "ultrasound", "other")
# The planner's loss; plans may name any registered one (autoseg.training.losses), which the
# trainer checks — the plan stage cannot import the training stage's registry.
DEFAULT_LOSS = "dice_ce"
DEFAULT_TRAINER = "default"
AUGMENTATION_PROFILES = ("2d", "2.5d", "3d", "3d_anisotropic")
DEVICE_TYPES = ("cuda", "cpu")
SCHEDULE_SOURCES = ("default", "time_budget", "user")
_FIX = (
    "correct the field by hand (plans/README.md describes every field) or re-create the plan "
    "with 'autoseg plan DATASET --overwrite'"
)


class PlanFieldError(ValueError):
    """A bad field; ``where`` is its dotted path inside plans.json."""

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(f"{where}: {message}")


# ---------------------------------------------------------------- small field readers


def _obj(value: Any, where: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """A dict that holds every key of ``keys`` (except ``optional``) and no unknown key."""
    if not isinstance(value, dict):
        raise PlanFieldError(where, f"expected an object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise PlanFieldError(f"{where}.{unknown[0]}", f"unknown field (known: {', '.join(keys)})")
    missing = [k for k in keys if k not in value and k not in optional]
    if missing:
        raise PlanFieldError(f"{where}.{missing[0]}", "missing")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v: Any, where: str, lo: int | None = None) -> int:
    if not _is_int(v):
        raise PlanFieldError(where, f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise PlanFieldError(where, f"expected an integer >= {lo}, got {v}")
    return int(v)


def _float(v: Any, where: str, lo: float | None = None, positive: bool = False) -> float:
    if not (isinstance(v, int | float) and not isinstance(v, bool)) or not math.isfinite(v):
        raise PlanFieldError(where, f"expected a number, got {v!r}")
    if positive and v <= 0:
        raise PlanFieldError(where, f"expected a positive number, got {v}")
    if lo is not None and v < lo:
        raise PlanFieldError(where, f"expected a number >= {lo}, got {v}")
    return float(v)


def _opt_float(v: Any, where: str, positive: bool = False) -> float | None:
    return None if v is None else _float(v, where, positive=positive)


def _str(v: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise PlanFieldError(where, f"expected a string, got {v!r}")
    if choices is not None and v not in choices:
        raise PlanFieldError(where, f"expected one of {', '.join(choices)}, got {v!r}")
    return v


def _opt_str(v: Any, where: str) -> str | None:
    return None if v is None else _str(v, where)


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise PlanFieldError(where, f"expected true or false, got {v!r}")
    return v


def _list(v: Any, where: str, length: int | None = None) -> list:
    if not isinstance(v, list):
        raise PlanFieldError(where, f"expected a list, got {v!r}")
    if length is not None and len(v) != length:
        raise PlanFieldError(where, f"expected {length} entries, got {len(v)} ({v})")
    return v


def _ints(v: Any, where: str, length: int | None = None, lo: int = 1) -> list[int]:
    return [_int(x, f"{where}[{i}]", lo) for i, x in enumerate(_list(v, where, length))]


def _floats(v: Any, where: str, length: int | None = None) -> list[float]:
    return [
        _float(x, f"{where}[{i}]", positive=True) for i, x in enumerate(_list(v, where, length))
    ]


def _name(v: Any, where: str) -> str:
    """A registry name (letters, digits, '_', '-'); the registry itself checks it exists."""
    name = _str(v, where)
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise PlanFieldError(where, f"expected a name of letters, digits, '_' or '-', got {v!r}")
    return name


def _why(v: Any, where: str) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise PlanFieldError(where, "expected an object of field -> explanation")
    return {k: str(x) for k, x in v.items()}


def _keys(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# ---------------------------------------------------------------- the dataclasses


@dataclass
class FingerprintSummary:
    """The fingerprint numbers the plan was made from (``sha256`` detects a stale plan)."""

    sha256: str
    dim: int
    n_cases: int
    modality: dict[str, str]
    spacing_median: list[float]
    shape_after_crop_median: list[int]
    anisotropy_ratio: float
    foreground_fraction_median: float
    foreground_extent_p95_mm: list[float] | None
    cases_without_foreground: int

    @classmethod
    def from_dict(cls, d: Any, where: str = "fingerprint") -> FingerprintSummary:
        d = _obj(d, where, _keys(cls))
        dim = _int(d["dim"], f"{where}.dim", 2)
        if dim not in (2, 3):
            raise PlanFieldError(f"{where}.dim", f"expected 2 or 3, got {dim}")
        modality = d["modality"]
        if not isinstance(modality, dict) or not modality:
            raise PlanFieldError(f"{where}.modality", "expected an object channel -> modality")
        extent = d["foreground_extent_p95_mm"]
        return cls(
            sha256=_str(d["sha256"], f"{where}.sha256"),
            dim=dim,
            n_cases=_int(d["n_cases"], f"{where}.n_cases", 1),
            modality={
                str(k): _str(v, f"{where}.modality.{k}", MODALITIES) for k, v in modality.items()
            },
            spacing_median=_floats(d["spacing_median"], f"{where}.spacing_median", dim),
            shape_after_crop_median=_ints(
                d["shape_after_crop_median"], f"{where}.shape_after_crop_median", dim
            ),
            anisotropy_ratio=_float(d["anisotropy_ratio"], f"{where}.anisotropy_ratio", 1.0),
            foreground_fraction_median=_float(
                d["foreground_fraction_median"], f"{where}.foreground_fraction_median", 0.0
            ),
            foreground_extent_p95_mm=None
            if extent is None
            else [
                _float(x, f"{where}.foreground_extent_p95_mm[{i}]", 0.0)
                for i, x in enumerate(_list(extent, f"{where}.foreground_extent_p95_mm", dim))
            ],
            cases_without_foreground=_int(
                d["cases_without_foreground"], f"{where}.cases_without_foreground", 0
            ),
        )


@dataclass
class DeviceInfo:
    """The device the plan was made for. ``gpu_memory_gb`` is the budget every configuration's
    estimated training memory stays under; ``source`` says where it came from (``argument``:
    ``--gpu-memory``; ``detected``: the GPU's total memory; ``default``: 8 GB, no GPU)."""

    type: str
    name: str | None
    gpu_memory_gb: float
    source: str

    @classmethod
    def from_dict(cls, d: Any, where: str = "device") -> DeviceInfo:
        d = _obj(d, where, _keys(cls))
        return cls(
            type=_str(d["type"], f"{where}.type", DEVICE_TYPES),
            name=_opt_str(d["name"], f"{where}.name"),
            gpu_memory_gb=_float(d["gpu_memory_gb"], f"{where}.gpu_memory_gb", positive=True),
            source=_str(d["source"], f"{where}.source", ("argument", "detected", "default")),
        )


@dataclass
class Normalization:
    """Per-channel intensity normalization.

    ``zscore``: ``(x - mean(x)) / std(x)`` per image; with ``use_nonzero_mask`` the statistics
    come from the nonzero region only and voxels outside it stay 0.
    ``ct``: clip to ``clip`` (dataset foreground 0.5/99.5 percentiles), then
    ``(x - mean) / std`` with the dataset's foreground ``mean``/``std``.
    """

    scheme: str
    use_nonzero_mask: bool = False
    clip: list[float] | None = None
    mean: float | None = None
    std: float | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Normalization:
        d = _obj(d, where, _keys(cls), optional=("use_nonzero_mask", "clip", "mean", "std"))
        scheme = _str(d["scheme"], f"{where}.scheme", NORMALIZATION_SCHEMES)
        clip = d.get("clip")
        if clip is not None:
            clip = [
                _float(x, f"{where}.clip[{i}]")
                for i, x in enumerate(_list(clip, f"{where}.clip", 2))
            ]
            if clip[0] >= clip[1]:
                raise PlanFieldError(f"{where}.clip", f"expected [low, high], low < high: {clip}")
        norm = cls(
            scheme=scheme,
            use_nonzero_mask=_bool(d.get("use_nonzero_mask", False), f"{where}.use_nonzero_mask"),
            clip=clip,
            mean=_opt_float(d.get("mean"), f"{where}.mean"),
            std=_opt_float(d.get("std"), f"{where}.std", positive=True),
        )
        if scheme == "ct":
            for name in ("clip", "mean", "std"):
                if getattr(norm, name) is None:
                    raise PlanFieldError(f"{where}.{name}", "the 'ct' scheme needs it")
        return norm


@dataclass
class Resampling:
    """How preprocessing resamples to the target spacing (spline orders per axis).

    ``thick_axis`` is the anisotropic axis (array order) resampled separately, or null when
    the data are not anisotropic (then the ``*_thick_axis`` orders equal the in-plane ones).
    Labels are resampled as one-hot maps with ``label_order`` (1 = linear), then argmax.
    """

    thick_axis: int | None
    image_order: int = 3
    image_order_thick_axis: int = 3
    label_order: int = 1
    label_order_thick_axis: int = 1

    @classmethod
    def from_dict(cls, d: Any, where: str = "resampling", dim: int = 3) -> Resampling:
        d = _obj(d, where, _keys(cls))
        axis = d["thick_axis"]
        if axis is not None:
            axis = _int(axis, f"{where}.thick_axis", 0)
            if axis >= dim:
                raise PlanFieldError(f"{where}.thick_axis", f"expected an axis < {dim}, got {axis}")
        orders = {}
        for k in ("image_order", "image_order_thick_axis", "label_order", "label_order_thick_axis"):
            orders[k] = _int(d[k], f"{where}.{k}", 0)
            if orders[k] > 5:
                raise PlanFieldError(f"{where}.{k}", f"spline order is 0..5, got {orders[k]}")
        return cls(thick_axis=axis, **orders)


@dataclass
class Loss:
    """Training loss: ``dice_ce`` = soft Dice + cross-entropy (autoseg.training.losses)."""

    name: str = "dice_ce"
    batch_dice: bool = True
    dice_weight: float = 1.0
    ce_weight: float = 1.0

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Loss:
        d = _obj(d, where, _keys(cls), optional=("batch_dice", "dice_weight", "ce_weight"))
        return cls(
            name=_name(d["name"], f"{where}.name"),
            batch_dice=_bool(d.get("batch_dice", True), f"{where}.batch_dice"),
            dice_weight=_float(d.get("dice_weight", 1.0), f"{where}.dice_weight", 0.0),
            ce_weight=_float(d.get("ce_weight", 1.0), f"{where}.ce_weight", 0.0),
        )


@dataclass
class CropWindow:
    """The ``crop`` configuration's window: ``window_mm`` around the structure (at training
    time centred on the labelled foreground; at inference on the foreground predicted by the
    ``localiser`` configuration at ``localiser_spacing``)."""

    window_mm: list[float]
    window_voxels: list[int]
    localiser: str
    localiser_spacing: list[float]

    @classmethod
    def from_dict(cls, d: Any, where: str, dim: int) -> CropWindow:
        d = _obj(d, where, _keys(cls))
        loc = _str(d["localiser"], f"{where}.localiser", CONFIG_NAMES)
        if loc == "crop":
            raise PlanFieldError(f"{where}.localiser", "the crop configuration cannot localise")
        return cls(
            window_mm=_floats(d["window_mm"], f"{where}.window_mm", dim),
            window_voxels=_ints(d["window_voxels"], f"{where}.window_voxels", dim),
            localiser=loc,
            localiser_spacing=_floats(d["localiser_spacing"], f"{where}.localiser_spacing"),
        )


OPTIMIZERS = ("sgd", "adamw")
# nnU-Net's SGD (Nesterov momentum 0.99): what every plan without an optimizer field trains with.
SGD_LR = 1e-2
SGD_WEIGHT_DECAY = 3e-5


@dataclass
class ConfigurationSchedule:
    """Training length of one configuration fitted to ``--time-budget`` (it overrides the
    plan-wide ``schedule`` for this configuration). ``train_budget_s`` is the wall-clock time
    the epoch loop of one fold (training iterations and the per-epoch pseudo Dice) may take;
    the trainer refits ``epochs`` to it once it has timed a real epoch.

    ``optimizer`` / ``initial_lr`` / ``weight_decay``: a short schedule trains with AdamW
    (:func:`autoseg.planning.schedule.optimizer_rule`); ``sgd`` is nnU-Net's (Nesterov momentum
    0.99). ``cpu_threads``: the torch thread count the step was fastest with on the planning
    CPU, which the trainer then uses (None: the process's own setting; always None on a GPU).
    ``channels_last``: whether the step was faster in the channels-last layout there.
    Plans written before these fields existed read as SGD at 0.01 with no thread setting."""

    epochs: int
    iterations_per_epoch: int
    train_budget_s: float
    optimizer: str = "sgd"
    initial_lr: float = SGD_LR
    weight_decay: float = SGD_WEIGHT_DECAY
    cpu_threads: int | None = None
    channels_last: bool = False

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ConfigurationSchedule:
        optional = ("optimizer", "initial_lr", "weight_decay", "cpu_threads", "channels_last")
        d = _obj(d, where, _keys(cls), optional=optional)
        threads = d.get("cpu_threads")
        return cls(
            epochs=_int(d["epochs"], f"{where}.epochs", 1),
            iterations_per_epoch=_int(
                d["iterations_per_epoch"], f"{where}.iterations_per_epoch", 1
            ),
            train_budget_s=_float(d["train_budget_s"], f"{where}.train_budget_s", positive=True),
            optimizer=_str(d.get("optimizer", "sgd"), f"{where}.optimizer", OPTIMIZERS),
            initial_lr=_float(d.get("initial_lr", SGD_LR), f"{where}.initial_lr", positive=True),
            weight_decay=_float(
                d.get("weight_decay", SGD_WEIGHT_DECAY), f"{where}.weight_decay", lo=0.0
            ),
            cpu_threads=None if threads is None else _int(threads, f"{where}.cpu_threads", 1),
            channels_last=_bool(d.get("channels_last", False), f"{where}.channels_last"),
        )


@dataclass
class ConfigurationPlan:
    """One trainable configuration.

    ``dim`` is the network's dimension; for ``2d`` and ``2.5d`` of 3D data the images are cut
    along ``slice_axis`` and the network sees ``context_slices`` neighbouring slices (1 for
    ``2d``, k for ``2.5d``) per image channel, predicting the centre slice. ``median_shape`` is
    the median (cropped, resampled) image shape at ``spacing`` in the network's axes.
    ``measured_step_s`` and ``schedule`` are set only when the plan was fitted to a time
    budget: the measured seconds of one training iteration on the planning device, and this
    configuration's own training length. ``trainer`` names the registered trainer that trains
    it (``autoseg.training.trainer.TRAINERS``; written only when not ``default``).
    """

    dim: int
    spacing: list[float]
    median_shape: list[int]
    patch_size: list[int]
    batch_size: int
    architecture: dict[str, Any]
    slice_axis: int | None = None
    context_slices: int = 1
    augmentation: str = "3d"
    oversample_foreground: float = 0.33
    loss: Loss = field(default_factory=Loss)
    estimated_memory_gb: float = 0.0
    parameters: int = 0
    crop: CropWindow | None = None
    why: dict[str, str] = field(default_factory=dict)
    measured_step_s: float | None = None
    schedule: ConfigurationSchedule | None = None
    trainer: str = DEFAULT_TRAINER

    @property
    def n_stages(self) -> int:
        return len(self.architecture["features_per_stage"])

    @property
    def pools_per_axis(self) -> list[int]:
        """How often each axis is halved (a stride of 2 at a stage)."""
        return [sum(1 for s in self.architecture["strides"] if s[a] > 1) for a in range(self.dim)]

    @classmethod
    def from_dict(
        cls, d: Any, where: str, *, n_channels: int, num_classes: int, data_dim: int
    ) -> ConfigurationPlan:
        d = _obj(
            d,
            where,
            _keys(cls),
            optional=("slice_axis", "crop", "why", "measured_step_s", "schedule", "trainer"),
        )
        dim = _int(d["dim"], f"{where}.dim", 2)
        if dim not in (2, 3) or dim > data_dim:
            raise PlanFieldError(f"{where}.dim", f"expected 2 or 3 (<= data dim {data_dim})")
        slice_axis = d.get("slice_axis")
        slices = dim == 2 and data_dim == 3
        if slice_axis is not None:
            slice_axis = _int(slice_axis, f"{where}.slice_axis", 0)
            if not slices or slice_axis > 2:
                raise PlanFieldError(
                    f"{where}.slice_axis", "only a 2D configuration of 3D data has a slice axis"
                )
        elif slices:
            raise PlanFieldError(
                f"{where}.slice_axis", "a 2D configuration of 3D data needs it (0, 1 or 2)"
            )
        context = _int(d["context_slices"], f"{where}.context_slices", 1)
        if context % 2 == 0:
            raise PlanFieldError(
                f"{where}.context_slices", f"expected an odd number, got {context}"
            )
        if context > 1 and slice_axis is None:
            raise PlanFieldError(f"{where}.context_slices", "needs a slice_axis (2.5D of 3D data)")
        crop = d.get("crop")
        plan = cls(
            dim=dim,
            spacing=_floats(d["spacing"], f"{where}.spacing", dim),
            median_shape=_ints(d["median_shape"], f"{where}.median_shape", dim),
            patch_size=_ints(d["patch_size"], f"{where}.patch_size", dim),
            batch_size=_int(d["batch_size"], f"{where}.batch_size", 1),
            architecture=_architecture(d["architecture"], f"{where}.architecture"),
            slice_axis=slice_axis,
            context_slices=context,
            augmentation=_str(d["augmentation"], f"{where}.augmentation", AUGMENTATION_PROFILES),
            oversample_foreground=_float(
                d["oversample_foreground"], f"{where}.oversample_foreground", 0.0
            ),
            loss=Loss.from_dict(d["loss"], f"{where}.loss"),
            estimated_memory_gb=_float(d["estimated_memory_gb"], f"{where}.estimated_memory_gb", 0),
            parameters=_int(d["parameters"], f"{where}.parameters", 0),
            crop=None if crop is None else CropWindow.from_dict(crop, f"{where}.crop", dim),
            why=_why(d.get("why", {}), f"{where}.why"),
            measured_step_s=_opt_float(
                d.get("measured_step_s"), f"{where}.measured_step_s", positive=True
            ),
            schedule=None
            if d.get("schedule") is None
            else ConfigurationSchedule.from_dict(d["schedule"], f"{where}.schedule"),
            trainer=_name(d.get("trainer", DEFAULT_TRAINER), f"{where}.trainer"),
        )
        if plan.oversample_foreground > 1.0:
            raise PlanFieldError(f"{where}.oversample_foreground", "expected a fraction 0..1")
        arch = plan.architecture
        if arch["dim"] != dim:
            raise PlanFieldError(f"{where}.architecture.dim", f"expected {dim} (the config's dim)")
        if arch["in_channels"] != n_channels * context:
            raise PlanFieldError(
                f"{where}.architecture.in_channels",
                f"expected {n_channels * context} (channels {n_channels} x context_slices "
                f"{context}), got {arch['in_channels']}",
            )
        if arch["num_classes"] != num_classes:
            raise PlanFieldError(
                f"{where}.architecture.num_classes",
                f"expected {num_classes} (labels incl. background), got {arch['num_classes']}",
            )
        divisor = [math.prod(s[a] for s in arch["strides"]) for a in range(dim)]
        for a, (p, q) in enumerate(zip(plan.patch_size, divisor)):
            if p % q:
                raise PlanFieldError(
                    f"{where}.patch_size[{a}]",
                    f"{p} is not a multiple of the network's total stride {q} on that axis "
                    f"(total stride {divisor})",
                )
        return plan


def _architecture(value: Any, where: str) -> dict[str, Any]:
    """Validate the architecture block with the network builder's own checker."""
    from autoseg.networks.unet import ArchitectureConfig  # lazy: imports torch

    try:
        return ArchitectureConfig.from_dict(value).to_dict()
    except ValueError as exc:
        raise PlanFieldError(where, str(exc)) from None


@dataclass
class Schedule:
    """Training length. ``source``: ``default`` (nnU-Net's 1000 x 250), ``time_budget`` (fitted
    to ``--time-budget`` from iteration times measured at planning time; every configuration
    then has its own ``schedule`` block, which takes precedence), or ``user`` (edited by hand).
    ``time_budget_s`` records ``--time-budget``: the wall-clock time of training every
    configuration x 5 folds. ``fold_budget_s`` (time-budget plans only) is that time per
    configuration and fold, validation and start-up included. ``folds`` (time-budget plans
    only) are the folds to train when a short budget buys one model on one training split
    (``[0]``) rather than the 5-fold cross-validation (None: every fold of ``splits.json``)."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    time_budget_s: float | None = None
    source: str = "default"
    fold_budget_s: float | None = None
    folds: list[int] | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "schedule") -> Schedule:
        d = _obj(d, where, _keys(cls), optional=("fold_budget_s", "folds"))
        folds = d.get("folds")
        return cls(
            epochs=_int(d["epochs"], f"{where}.epochs", 1),
            iterations_per_epoch=_int(
                d["iterations_per_epoch"], f"{where}.iterations_per_epoch", 1
            ),
            time_budget_s=_opt_float(d["time_budget_s"], f"{where}.time_budget_s", positive=True),
            source=_str(d["source"], f"{where}.source", SCHEDULE_SOURCES),
            fold_budget_s=_opt_float(
                d.get("fold_budget_s"), f"{where}.fold_budget_s", positive=True
            ),
            folds=None if folds is None else _ints(folds, f"{where}.folds", lo=0),
        )


_TIME_BUDGET_SCHEDULE_FIELDS = ("fold_budget_s", "folds")
_TIME_BUDGET_CONFIG_FIELDS = ("measured_step_s", "schedule")


def _drop_none(d: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if d.get(key, 0) is None:
            del d[key]


@dataclass
class Plan:
    """Everything later stages need; ``plans.json`` is its JSON form (:meth:`to_dict`)."""

    dataset: str
    created_by: str
    created_at: str
    fingerprint: FingerprintSummary
    device: DeviceInfo
    channel_names: dict[str, str]
    labels: dict[str, int]
    normalization: dict[str, Normalization]
    target_spacing: list[float]
    resampling: Resampling
    configurations: dict[str, ConfigurationPlan]
    schedule: Schedule
    why: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    # the label value of unlabelled voxels (dataset.json's 'ignore'; sparse annotation): not
    # a class (``labels`` and the network's outputs leave it out); the loss, the sampler and
    # validation mask it. Written only when set.
    ignore_label: int | None = None

    @property
    def dim(self) -> int:
        return self.fingerprint.dim

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def foreground_names(self) -> list[str]:
        """Label names of the network's classes 1..K-1, in class order."""
        return sorted(self.labels, key=self.labels.__getitem__)[1:]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        version = d.pop("schema_version")
        if d["ignore_label"] is None:
            del d["ignore_label"]
        # Fields added for time-budget plans are written only when set, so that plans made
        # without a budget keep the exact form they had before these fields existed.
        _drop_none(d["schedule"], _TIME_BUDGET_SCHEDULE_FIELDS)
        for config in d["configurations"].values():
            _drop_none(config, _TIME_BUDGET_CONFIG_FIELDS)
            if config.get("trainer") == DEFAULT_TRAINER:
                del config["trainer"]
        return {"schema_version": version, **d}

    @classmethod
    def from_dict(cls, d: Any) -> Plan:
        d = _obj(d, "plan", _keys(cls), optional=("why", "ignore_label"))
        version = _int(d["schema_version"], "schema_version", 1)
        if version != SCHEMA_VERSION:
            raise PlanFieldError(
                "schema_version", f"this autoseg reads version {SCHEMA_VERSION}, got {version}"
            )
        fp = FingerprintSummary.from_dict(d["fingerprint"])
        channels = d["channel_names"]
        if not isinstance(channels, dict) or not channels:
            raise PlanFieldError("channel_names", "expected an object index -> name")
        channels = {str(k): _str(v, f"channel_names.{k}") for k, v in channels.items()}
        labels = d["labels"]
        if not isinstance(labels, dict) or len(labels) < 2:
            raise PlanFieldError("labels", "expected an object name -> value with background")
        labels = {str(k): _int(v, f"labels.{k}", 0) for k, v in labels.items()}
        if sorted(labels.values()) != list(range(len(labels))):
            raise PlanFieldError("labels", f"expected values 0..{len(labels) - 1}, got {labels}")
        ignore = d.get("ignore_label")
        if ignore is not None:
            ignore = _int(ignore, "ignore_label", len(labels))
        norm = _obj(d["normalization"], "normalization", tuple(channels))
        configs = d["configurations"]
        if not isinstance(configs, dict) or not configs:
            raise PlanFieldError("configurations", "expected at least one configuration")
        for name in configs:
            if not is_configuration(name):
                raise PlanFieldError(
                    f"configurations.{name}",
                    f"unknown configuration (known: {', '.join(configuration_names())})",
                )
        spacing = _floats(d["target_spacing"], "target_spacing", fp.dim)
        plan = cls(
            dataset=_str(d["dataset"], "dataset"),
            created_by=_str(d["created_by"], "created_by"),
            created_at=_str(d["created_at"], "created_at"),
            fingerprint=fp,
            device=DeviceInfo.from_dict(d["device"]),
            channel_names=channels,
            labels=labels,
            normalization={
                k: Normalization.from_dict(v, f"normalization.{k}") for k, v in norm.items()
            },
            target_spacing=spacing,
            resampling=Resampling.from_dict(d["resampling"], dim=fp.dim),
            configurations={
                name: ConfigurationPlan.from_dict(
                    c,
                    f"configurations.{name}",
                    n_channels=len(channels),
                    num_classes=len(labels),
                    data_dim=fp.dim,
                )
                for name, c in configs.items()
            },
            schedule=Schedule.from_dict(d["schedule"]),
            why=_why(d.get("why", {}), "why"),
            schema_version=version,
            ignore_label=ignore,
        )
        for name, c in plan.configurations.items():
            if c.crop is not None and c.crop.localiser not in plan.configurations:
                raise PlanFieldError(
                    f"configurations.{name}.crop.localiser",
                    f"{c.crop.localiser!r} is not a configuration of this plan",
                )
        return plan


def plan_from_dict(data: Any, path: str | os.PathLike | None = None) -> Plan:
    """Validate a plan dict; errors become AutosegError naming the field (and the file).

    A plan from a newer autoseg is named as such first: its new fields would otherwise be
    reported as unknown, and "correct the field by hand" is no fix for it.
    """
    version = data.get("schema_version") if isinstance(data, dict) else None
    if _is_int(version) and version > SCHEMA_VERSION:
        raise AutosegError(
            f"plan was written by a newer autoseg (schema_version {version}; this one reads "
            f"version {SCHEMA_VERSION})",
            path=path,
            fix="upgrade autoseg to use this plan, or re-create it with this version: "
            "'autoseg plan DATASET --overwrite'",
        )
    try:
        return Plan.from_dict(data)
    except PlanFieldError as exc:
        raise AutosegError(f"bad plan field {exc}", path=path, fix=_FIX) from None


def load_plan(path: str | os.PathLike) -> Plan:
    """Read and validate ``plans.json`` (a file, or a folder that holds one)."""
    path = Path(path)
    if path.is_dir():
        path = path / PLANS_FILE
    if not path.is_file():
        raise AutosegError(
            "no plan here", path=path, fix="run 'autoseg plan DATASET' to create plans.json"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AutosegError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
            path=path,
            fix=_FIX,
        ) from None
    return plan_from_dict(data, path)


def save_plan(plan: Plan, path: str | os.PathLike) -> Path:
    """Write ``plans.json`` atomically; returns the path."""
    path = Path(path)
    write_json_atomic(path, plan.to_dict())
    return path
