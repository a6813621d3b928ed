"""The training loop for one configuration and one cross-validation fold.

Defaults follow nnU-Net, whose values have held up across many datasets: SGD with Nesterov
momentum 0.99, initial learning rate 0.01 with polynomial decay (exponent 0.9) per epoch,
weight decay 3e-5, gradient-norm clipping at 12, Dice + cross-entropy with deep supervision,
mixed precision on a GPU.

Resuming is exact: every epoch re-seeds all random number generators from
``(seed, fold, epoch, rank)`` and builds its data loader from that seed, and a checkpoint is
written (atomically) after every epoch. A run killed at any moment and resumed therefore
repeats the interrupted epoch with the same batches and ends in the same state as one that was
never interrupted.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from autoseg.errors import AutosegError
from autoseg.io.atomic import json_safe, write_json_atomic
from autoseg.layout import BEST, FINAL, LATEST, TRAINING_LOG
from autoseg.networks import build_network
from autoseg.networks.checkpoint import load_checkpoint, save_checkpoint
from autoseg.networks.device import pick_device
from autoseg.planning.plan import SGD_LR, SGD_WEIGHT_DECAY
from autoseg.registry import Registry
from autoseg.training.losses import DeepSupervisionLoss, build_loss, downsample_target
from autoseg.training.losses.core import drop_ignored

if TYPE_CHECKING:
    from autoseg.data.loader import LoaderConfig


@dataclass
class TrainSetup:
    """What the trainer needs from the plan for one configuration
    (:func:`autoseg.training.run.setup_from_plan`)."""

    config_name: str
    arch: dict[str, Any]
    patch_size: tuple[int, ...]
    batch_size: int
    data_dir: Path  # preprocessed/<dataset>/<data identifier>
    num_classes: int
    # the loader's view of the configuration (sampling, context slices, crop window,
    # augmentation profile), built from the typed plan (LoaderConfig.from_configuration);
    # None only for trainers given their own loader factory (tests)
    loader: LoaderConfig | None = None
    loss: dict[str, Any] = field(default_factory=dict)  # name, batch_dice, dice_weight, ...
    trainer: str = "default"  # the registered trainer (TRAINERS) the plan names


@dataclass
class TrainOptions:
    """How long and how to train; the schedule comes from the plan, the rest from the user."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 10  # batches for the per-epoch pseudo Dice
    optimizer: str = "sgd"  # "sgd" (nnU-Net's, Nesterov) | "adamw" (short schedules)
    initial_lr: float = SGD_LR
    momentum: float = 0.99  # SGD only
    weight_decay: float = SGD_WEIGHT_DECAY
    cpu_threads: int | None = None  # torch threads on a CPU (the plan's measured best)
    grad_clip: float = 12.0
    device: str = "auto"  # "auto" = cuda when present, else cpu
    amp: bool = True  # float16 on cuda, bfloat16 on a CPU that has it in hardware (precision)
    deterministic: bool = False
    num_workers: int = 0
    seed: int = 0
    compile: str = "auto"  # "auto": torch.compile on cuda only (not measured faster on CPU)
    progress: bool = True
    ema_alpha: float = 0.9  # smoothing of the pseudo Dice used to pick the best checkpoint
    time_budget_s: float | None = None  # seconds the epoch loop may take (refits the epochs)
    max_epochs: int = 1000
    warmup_iterations: int = 0  # linear learning-rate warm-up from 0 over these iterations
    lr_per_iteration: bool = False  # poly decay every iteration (True) or every epoch
    weight_ema: float = 0.0  # decay of an exponential moving average of the weights (0: off)
    channels_last: bool = False  # the channels-last layout (the plan's, when it was faster)


def poly_lr(initial: float, epoch: int, epochs: int, exponent: float = 0.9) -> float:
    """Polynomial decay from ``initial`` at epoch 0 towards 0 at ``epochs``."""
    return initial * max(0.0, 1 - epoch / max(epochs, 1)) ** exponent


def scheduled_lr(
    initial: float, step: int, total: int, warmup: int = 0, exponent: float = 0.9
) -> float:
    """The learning rate of training step ``step`` (0-based) of ``total``: a linear warm-up
    from ``initial / warmup`` to ``initial`` over the first ``warmup`` steps, then
    :func:`poly_lr` over the remaining ones, reaching 0 at ``total``."""
    if step < warmup:
        return initial * (step + 1) / warmup
    return poly_lr(initial, step - warmup, max(total - warmup, 1), exponent)


def epoch_seed(seed: int, fold: int, epoch: int, rank: int = 0) -> int:
    """One reproducible 31-bit seed per (run seed, fold, epoch, process); epoch -1 seeds the
    weight initialisation."""
    mixed = np.random.SeedSequence([seed, fold, epoch + 1, rank]).generate_state(1)[0]
    return int(mixed) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    # batchgenerators' transforms draw from numpy's global generator, so it must be seeded too.
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(network: nn.Module, options: TrainOptions) -> torch.optim.Optimizer:
    """nnU-Net's SGD (Nesterov momentum 0.99), or AdamW for the short schedules a time budget
    plans (planning.schedule.optimizer_rule); the trainer sets the learning rate every epoch."""
    if options.optimizer == "sgd":
        return torch.optim.SGD(
            network.parameters(),
            lr=options.initial_lr,
            momentum=options.momentum,
            nesterov=True,
            weight_decay=options.weight_decay,
        )
    if options.optimizer == "adamw":
        return torch.optim.AdamW(
            network.parameters(), lr=options.initial_lr, weight_decay=options.weight_decay
        )
    raise AutosegError(
        f"unknown optimizer {options.optimizer!r}", fix="use sgd or adamw in the plan's schedule"
    )


LoaderFactory = Callable[[Sequence[str], bool, int, int], Iterator[dict]]


def default_loader_factory(setup: TrainSetup, num_workers: int) -> LoaderFactory:
    """Build batches with :mod:`autoseg.data` for the given cases, augmentation and seed."""
    from autoseg.data import build_loader

    if setup.loader is None:
        raise ValueError("TrainSetup.loader is None: build the setup with setup_from_plan")
    base = setup.loader

    def make(case_ids: Sequence[str], augment: bool, seed: int, batch_size: int):
        cfg = replace(base, batch_size=batch_size, seed=seed)
        return build_loader(
            setup.data_dir, list(case_ids), cfg, num_workers=num_workers, seed=seed, augment=augment
        )

    return make


def _close(loader: Any) -> None:
    closer = getattr(loader, "close", None) or getattr(loader, "_finish", None)
    if closer is not None:
        closer()


TRAINERS: Registry[type[Trainer]] = Registry(
    "trainer",
    packages=("autoseg.training.trainers",),
    where="plans.json configurations.*.trainer or --trainer",
)
register_trainer = TRAINERS.register


@register_trainer("default")
class Trainer:
    """Trains one fold; holds the model, optimizer and log, and writes everything to out_dir.

    Registered as ``default``. A variant subclasses it in one file of
    ``autoseg/training/trainers/``, decorated ``@register_trainer("name")``, and overrides the
    hooks it changes — :meth:`build_network`, :meth:`build_loss`, :meth:`build_optimizer`,
    :meth:`learning_rate`, :meth:`make_loader`, :meth:`validation_step` — and a plan's
    ``trainer`` field chooses it (documentation/extending.md).
    """

    def __init__(
        self,
        setup: TrainSetup,
        options: TrainOptions,
        train_ids: Sequence[str],
        val_ids: Sequence[str],
        out_dir: str | os.PathLike,
        *,
        fold: int = 0,
        loader_factory: LoaderFactory | None = None,
        on_iteration: Callable[[int, int], None] | None = None,
    ):
        self.setup = setup
        self.options = options
        self.train_ids = list(train_ids)
        self.val_ids = list(val_ids)
        self.out_dir = Path(out_dir)
        self.fold = fold
        self.on_iteration = on_iteration
        self.rank, self.world_size = _dist_rank_world()
        self.device = pick_device(options.device)
        if self.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if setup.batch_size % self.world_size:
            raise AutosegError(
                f"batch size {setup.batch_size} is not divisible by {self.world_size} processes",
                fix="choose a number of processes that divides the planned batch size",
            )
        self.local_batch = setup.batch_size // self.world_size
        self.loader_factory = loader_factory or self.make_loader
        from autoseg.networks.precision import autocast_dtype

        # float16 with a gradient scaler on a GPU; bfloat16 (no scaler: same exponent range as
        # float32) on a CPU that has it in hardware; float32 elsewhere.
        self.autocast = autocast_dtype(self.device.type, options.amp)
        self.amp = self.autocast == torch.float16
        if options.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        seed_everything(epoch_seed(options.seed, fold, -1))  # same initial weights everywhere
        from autoseg.networks.precision import memory_format

        self.layout = memory_format(len(setup.patch_size), options.channels_last)
        self.network: nn.Module = self.build_network().to(self.device)
        self.network = self.network.to(memory_format=self.layout)
        self.model: nn.Module = self.network
        if self.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if options.compile == "on" or (options.compile == "auto" and self.device.type == "cuda"):
            self.model = torch.compile(self.model)
        self.optimizer = self.build_optimizer()
        # An average of the weights over the last ~1/(1 - decay) steps: what is validated,
        # saved as "model" and predicted with; the raw weights keep training.
        self.ema_network: nn.Module | None = None
        if options.weight_ema > 0:
            self.ema_network = copy.deepcopy(self.network).requires_grad_(False)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        scales = getattr(self.network, "decoder_scales", lambda: [(1,) * len(setup.patch_size)])()
        self.ds_scales = [tuple(s) for s in scales] if setup.arch.get("deep_supervision") else []
        n_out = max(1, len(self.ds_scales))
        self.base_loss = self.build_loss()
        self.loss = DeepSupervisionLoss(self.base_loss, n_out)
        self.epoch = 0
        self.spent_s = 0.0  # wall time of the epoch loop so far, checkpoints included
        self._last_write_s = 0.0
        self.log: list[dict[str, Any]] = []
        self.best_ema: float = -math.inf

    # ---------------------------------------------------------------- hooks
    def build_network(self) -> nn.Module:
        """The network to train: the plan's architecture block (``networks`` registry)."""
        return build_network(self.setup.arch)

    def build_loss(self) -> nn.Module:
        """The loss for one output (deep supervision wraps it): the plan's ``loss`` block,
        ``dice_ce`` unless it names another registered loss (``training/losses``)."""
        return build_loss(self.setup.loss, self.setup.num_classes)

    def build_optimizer(self) -> torch.optim.Optimizer:
        """nnU-Net's SGD, or AdamW for short schedules (the plan's ``schedule.optimizer``)."""
        return make_optimizer(self.network, self.options)

    def learning_rate(self, iteration: int) -> float:
        """The learning rate of ``iteration`` of the current epoch (:attr:`epoch`): the
        warm-up, then poly decay per iteration (``lr_per_iteration``) or per epoch."""
        opts = self.options
        step = self.epoch * opts.iterations_per_epoch + iteration
        if opts.lr_per_iteration or step < opts.warmup_iterations:
            total = opts.epochs * opts.iterations_per_epoch
            return scheduled_lr(opts.initial_lr, step, total, opts.warmup_iterations)
        return poly_lr(opts.initial_lr, self.epoch, opts.epochs)

    def make_loader(
        self, case_ids: Sequence[str], augment: bool, seed: int, batch_size: int
    ) -> Iterator[dict]:
        """An endless iterator of ``{"data", "target"}`` batches of these cases (``autoseg.data``
        with the plan's sampling and augmentation)."""
        make = default_loader_factory(self.setup, self.options.num_workers)
        return make(case_ids, augment, seed, batch_size)

    # ---------------------------------------------------------------- checkpoints
    @property
    def eval_network(self) -> nn.Module:
        """The weights that are validated and saved for prediction (the average, if any)."""
        return self.ema_network if self.ema_network is not None else self.model

    def state(self) -> dict[str, Any]:
        extra = {}
        if self.ema_network is not None:
            extra["train_model"] = self.network.state_dict()
        return {
            "model": self.eval_network.state_dict()
            if self.ema_network is not None
            else self.network.state_dict(),
            **extra,
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "log": json.dumps(self.log),
            "best_ema": self.best_ema,
            "arch": json.dumps(self.setup.arch),
            "config": self.setup.config_name,
            "fold": self.fold,
            "patch_size": list(self.setup.patch_size),
            "epochs": self.options.epochs,  # may have been refitted to the time budget
            "spent_s": self.spent_s,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if self.ema_network is not None and "train_model" in state:
            self.network.load_state_dict(state["train_model"])
            self.ema_network.load_state_dict(state["model"])
        else:
            self.network.load_state_dict(state["model"])
            if self.ema_network is not None:
                self.ema_network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.epoch = int(state["epoch"])
        self.log = json.loads(state["log"])
        self.best_ema = float(state["best_ema"])
        self.options.epochs = int(state.get("epochs", self.options.epochs))
        self.spent_s = float(state.get("spent_s", 0.0))

    def maybe_resume(self) -> bool:
        path = self.out_dir / LATEST
        if not path.is_file():
            return False
        self.load_state(load_checkpoint(path, map_location=self.device))
        return True

    # ---------------------------------------------------------------- one step
    def _targets(self, target: torch.Tensor) -> list[torch.Tensor]:
        if not self.ds_scales:
            return [target]
        spatial = target.shape[2:]
        return [
            downsample_target(target, [s // f for s, f in zip(spatial, scale)])
            for scale in self.ds_scales
        ]

    def _outputs(self, out: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
        return list(out) if isinstance(out, (list, tuple)) else [out]

    def train_step(self, batch: dict) -> float:
        data = torch.as_tensor(batch["data"]).float().to(self.device, non_blocking=True)
        data = data.contiguous(memory_format=self.layout)
        target = torch.as_tensor(batch["target"]).long().to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            outputs = self._outputs(self.model(data))
        loss = self.loss([o.float() for o in outputs], self._targets(target))
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.network.parameters(), self.options.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema_network is not None:
            self._update_ema()
        return float(loss.detach())

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(
            self.device.type, dtype=self.autocast, enabled=self.autocast is not None
        )

    @torch.no_grad()
    def _update_ema(self) -> None:
        assert self.ema_network is not None
        ema = list(self.ema_network.parameters())
        raw = list(self.network.parameters())
        torch._foreach_lerp_(ema, raw, 1.0 - self.options.weight_ema)

    @torch.no_grad()
    def validation_step(self, batch: dict) -> tuple[float, np.ndarray]:
        """Loss and per-class (tp, fp, fn) counts of the full-resolution output."""
        data = torch.as_tensor(batch["data"]).float().to(self.device)
        target = torch.as_tensor(batch["target"]).long().to(self.device)
        with self._autocast():
            outputs = self._outputs(self.eval_network(data))
        loss = float(self.base_loss(outputs[0].float(), target))  # eval mode: full resolution only
        # sparse annotation: unlabelled voxels count for no class
        pred, tgt = drop_ignored(
            outputs[0].argmax(1), target[:, 0], self.setup.loss.get("ignore_label")
        )
        counts = np.zeros((self.setup.num_classes - 1, 3), dtype=np.int64)
        for c in range(1, self.setup.num_classes):
            p, t = pred == c, tgt == c
            counts[c - 1] = [int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())]
        return loss, counts

    # ---------------------------------------------------------------- the loop
    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train the remaining epochs. On a CPU with the plan's ``cpu_threads`` (the planner
        timed the step with that many threads and the schedule assumes it), the process's
        own setting is restored afterwards."""
        threads = torch.get_num_threads()
        if self.device.type == "cpu" and self.options.cpu_threads:
            torch.set_num_threads(self.options.cpu_threads)
        try:
            return self._fit(resume)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, resume: bool) -> list[dict[str, Any]]:
        from autoseg.progress import progress_bar

        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.maybe_resume()
        opts = self.options
        is_main = self.rank == 0
        while self.epoch < opts.epochs:
            start = time.perf_counter()
            seed = epoch_seed(opts.seed, self.fold, self.epoch, self.rank)
            seed_everything(seed)
            lr = self.learning_rate(0)
            self._set_lr(lr)
            self.model.train()
            losses = []
            loader = self.loader_factory(self.train_ids, True, seed, self.local_batch)
            bar = progress_bar(
                range(opts.iterations_per_epoch),
                desc=f"{self.setup.config_name} fold {self.fold} epoch {self.epoch + 1}/"
                f"{opts.epochs}",
                disable=not (opts.progress and is_main),
                leave=False,
            )
            try:
                for it in bar:
                    if it and (opts.lr_per_iteration or opts.warmup_iterations):
                        lr = self.learning_rate(it)
                        self._set_lr(lr)
                    losses.append(self.train_step(next(loader)))
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
                    if self.on_iteration is not None:
                        self.on_iteration(self.epoch, it)
            finally:
                _close(loader)
            train_time = time.perf_counter() - start
            entry = self._validate_epoch(seed)
            entry.update(
                epoch=self.epoch + 1,
                lr=lr,
                train_loss=_mean_across_ranks(float(np.mean(losses)), self.device),
                epoch_seconds=time.perf_counter() - start,
                iteration_seconds=train_time / max(1, opts.iterations_per_epoch),
            )
            prev = self.log[-1]["pseudo_dice_ema"] if self.log else entry["pseudo_dice"]
            entry["pseudo_dice_ema"] = (
                opts.ema_alpha * prev + (1 - opts.ema_alpha) * entry["pseudo_dice"]
            )
            self.log.append(entry)
            self.epoch += 1
            # the epoch's wall time, its checkpoint estimated by the previous one (so that the
            # checkpoint itself holds it), corrected once written
            self.spent_s += time.perf_counter() - start + self._last_write_s
            if opts.time_budget_s:
                planned = opts.epochs
                fitted = self.refit_epochs(self.spent_s)
                if self.epoch == 1 or fitted != planned:
                    entry["epochs_refitted"] = fitted
            written = time.perf_counter()
            if is_main:
                self._write_epoch_outputs(entry)
            estimate, self._last_write_s = self._last_write_s, time.perf_counter() - written
            self.spent_s += self._last_write_s - estimate
        if is_main:
            save_checkpoint(self.out_dir / FINAL, self.state())
        return self.log

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def refit_epochs(self, spent_s: float) -> int:
        """Fit the number of epochs to the epoch loop's time budget after every epoch.

        The planner's step time comes from a synthetic step; real epochs include data
        loading, the pseudo-Dice batches and the checkpoint, and drift (usgra-seg, 8-128
        features: first epoch 5.96 s, mean 6.32 s, plus 0.22 s of checkpoint and plot each —
        fitting once from the first epoch overran a 1200 s budget by 10 %). So after each
        epoch the remaining budget is divided by the mean wall time per epoch so far
        (``spent_s`` / epochs done; the plan's ``train_budget_s`` already leaves the
        end-of-fold validation out). At least one more epoch after the first; afterwards the
        loop may stop at once. The count is stored in each checkpoint, so a resumed run
        continues from it.
        """
        budget = float(self.options.time_budget_s or 0)
        per_epoch = max(spent_s / max(self.epoch, 1), 1e-6)
        fitted = self.epoch + int(max(0.0, budget - spent_s) // per_epoch)
        if self.world_size > 1:  # every rank must agree on the schedule
            fitted = int(round(_mean_across_ranks(float(fitted), self.device)))
        least = self.epoch + 1 if self.epoch == 1 else self.epoch
        self.options.epochs = max(least, min(fitted, self.options.max_epochs))
        return self.options.epochs

    def _validate_epoch(self, seed: int) -> dict[str, Any]:
        if not self.val_ids or self.options.val_iterations <= 0:
            return {"val_loss": float("nan"), "pseudo_dice": 0.0, "pseudo_dice_per_class": []}
        self.eval_network.eval()
        loader = self.loader_factory(self.val_ids, False, seed + 1, self.local_batch)
        losses, counts = [], np.zeros((self.setup.num_classes - 1, 3), dtype=np.int64)
        try:
            for _ in range(self.options.val_iterations):
                loss, c = self.validation_step(next(loader))
                losses.append(loss)
                counts += c
        finally:
            _close(loader)
        counts = _sum_across_ranks(counts, self.device)
        tp, fp, fn = counts[:, 0], counts[:, 1], counts[:, 2]
        denom = 2 * tp + fp + fn
        # A class absent from every validation patch gets no score rather than a fake 0 or 1.
        per_class = [float(2 * a / d) if d else float("nan") for a, d in zip(tp, denom)]
        valid = [d for d in per_class if not math.isnan(d)]
        return {
            "val_loss": _mean_across_ranks(float(np.mean(losses)), self.device),
            "pseudo_dice": float(np.mean(valid)) if valid else 0.0,
            "pseudo_dice_per_class": per_class,
        }

    def _write_epoch_outputs(self, entry: dict[str, Any]) -> None:
        if entry["pseudo_dice_ema"] > self.best_ema:
            self.best_ema = entry["pseudo_dice_ema"]
            save_checkpoint(self.out_dir / BEST, self.state())
        save_checkpoint(self.out_dir / LATEST, self.state())
        write_json_atomic(self.out_dir / TRAINING_LOG, json_safe(self.log))
        from autoseg.training.curves import plot_training_curves

        with contextlib.suppress(Exception):  # a plot must never stop training
            plot_training_curves(self.log, self.out_dir / "training_curves.png")

    def config_dict(self) -> dict[str, Any]:
        d = asdict(self.options)
        d["world_size"] = self.world_size
        d["device"] = str(self.device)
        return d


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _mean_across_ranks(value: float, device: torch.device) -> float:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t.item() / torch.distributed.get_world_size())


def _sum_across_ranks(counts: np.ndarray, device: torch.device) -> np.ndarray:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return counts
    t = torch.as_tensor(counts, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.cpu().numpy().astype(np.int64)
