"""Predicting new cases with one configuration, or an ensemble, of trained folds.

For each configuration: preprocess the case exactly as its training data was preprocessed
(the plan's spacing and normalization), slide every fold's network over it, average the
folds' probabilities, and invert the preprocessing so that the probabilities lie on the input
image's own grid. Configurations of an ensemble are averaged on that grid (their spacings can
differ), then the argmax is post-processed.

The ``crop`` configuration sees only a window around the nerve: its localiser configuration
(planned in ``crop.localiser``) predicts the whole image first, and the window is centred on
the largest connected foreground component it finds.

Scale views (``tta_scales``, part of test-time augmentation beside mirroring): the case is
also preprocessed to a finer grid, so that structures appear ``s`` times larger to the network,
and the views' probabilities are averaged on the input grid. find-best keeps them only when
they raise the out-of-fold Dice (documentation/find_best.md, "Scale views").
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoseg.errors import AutosegError
from autoseg.inference.sliding_window import WindowSpec, predict_sliding_window, tta_mirror_axes
from autoseg.io import Geometry
from autoseg.io.components import label_components
from autoseg.layout import ResultsLayout
from autoseg.networks import build_network
from autoseg.networks.checkpoint import load_checkpoint


@dataclass
class FoldModel:
    """One trained fold of one configuration, ready to run."""

    config: str
    fold: int
    network: torch.nn.Module


@dataclass
class CaseFlags:
    """What a user should check for one case (the seeds report 10-20 % outright failures)."""

    empty: bool = False
    volume_outlier: bool = False
    low_confidence: bool = False
    fold_disagreement: bool = False
    localiser_missed: bool = False
    details: dict[str, float] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return any(
            (
                self.empty,
                self.volume_outlier,
                self.low_confidence,
                self.fold_disagreement,
                self.localiser_missed,
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.any,
            "empty": self.empty,
            "volume_outlier": self.volume_outlier,
            "low_confidence": self.low_confidence,
            "fold_disagreement": self.fold_disagreement,
            "localiser_missed": self.localiser_missed,
            **{k: round(float(v), 4) for k, v in self.details.items()},
        }


# Thresholds of the quality flags (documented in documentation/prediction.md).
LOW_CONFIDENCE = 0.75  # mean max-probability inside the predicted foreground
FOLD_AGREEMENT = 0.8  # mean pairwise Dice of the folds' own segmentations
VOLUME_FACTOR = 3.0  # foreground volume outside [min / 3, max * 3] of the training cases


def load_fold_models(
    results_config_dir: str | os.PathLike,
    config: str,
    folds: Sequence[int],
    *,
    checkpoint: str = "final",
    device: torch.device | str = "cpu",
) -> list[FoldModel]:
    """Build each fold's network from its checkpoint (weights only; never runs code)."""
    models = []
    for fold in folds:
        folder = Path(results_config_dir)
        path = ResultsLayout(folder.parent).checkpoint(folder.name, fold, checkpoint)
        state = load_checkpoint(path, map_location="cpu")
        net = build_network(json.loads(state["arch"]))
        net.load_state_dict(state["model"])
        models.append(FoldModel(config, int(fold), net.to(device).eval()))
    if not models:
        raise AutosegError(f"no folds given for configuration {config!r}")
    return models


def trained_mirror_axes(plan: Any, config: str) -> tuple[int, ...]:
    """The network-input axes the configuration's training augmentation mirrored (the
    loader's profile follows the plan's modalities: ultrasound flips left-right only)."""
    from autoseg.data import get_profile
    from autoseg.data.loader import profile_of_modalities

    profile = get_profile(profile_of_modalities(plan.fingerprint.modality))
    return tta_mirror_axes(profile.mirror_axes, len(plan.configurations[config].patch_size))


def view_spacing(spacing: Sequence[float], scale: float, n_axes: int) -> tuple[float, ...]:
    """Target spacing of a scale view: the last ``n_axes`` axes (those the network convolves:
    two for a 2D configuration, three for 3D) divided by ``scale``, so a structure spans
    ``scale`` times as many voxels; a 2D configuration's slice axis is left as planned."""
    if scale <= 0:
        raise ValueError(f"a scale view needs a positive scale, got {scale}")
    n = len(spacing)
    return tuple(float(v) / scale if i >= n - n_axes else float(v) for i, v in enumerate(spacing))


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """The scale views as floats; 1.0 (the trained view) must be one of them, because the
    uncertainty maps and the folds' agreement are taken on it."""
    out = tuple(float(s) for s in scales)
    if 1.0 not in out or any(s <= 0 for s in out):
        raise ValueError(f"scale views must be positive and include 1.0, got {list(out)}")
    return out


def window_spec(plan: Any, config: str, *, tta: bool, overlap: float = 0.5) -> WindowSpec:
    cfg = plan.configurations[config]
    return WindowSpec(
        patch_size=tuple(int(p) for p in cfg.patch_size),
        num_classes=plan.num_classes,
        slices=int(cfg.context_slices),
        slice_axis=int(cfg.slice_axis or 0) if cfg.dim < plan.dim else 0,
        overlap=overlap,
        mirror=tta,
        mirror_axes=trained_mirror_axes(plan, config),
    )


def largest_component_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """Bounding box [start, stop) of the largest connected component, None if empty."""
    if not mask.any():
        return None
    labels, _ = label_components(mask)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    biggest = labels == int(np.argmax(counts))
    idx = np.nonzero(biggest)
    return tuple((int(i.min()), int(i.max()) + 1) for i in idx)


def centred_window(
    centre: Sequence[float], window: Sequence[int], shape: Sequence[int]
) -> tuple[slice, ...]:
    """A window of ``window`` voxels centred on ``centre``, shifted to lie inside ``shape``."""
    out = []
    for c, w, s in zip(centre, window, shape):
        w = min(int(w), int(s))
        start = int(round(c - w / 2))
        start = min(max(start, 0), s - w)
        out.append(slice(start, start + w))
    return tuple(out)


def original_to_preprocessed(index: Sequence[float], properties: dict[str, Any]) -> list[float]:
    """Map a voxel position of the original image to the preprocessed grid of a case.

    Preprocessing resamples edge-aligned grids (voxel i covers [i, i+1) of the axis), so a
    voxel centre maps as (p + 0.5) * n / c - 0.5.
    """
    bbox = properties["crop_bbox"]
    pos = [float(i) - b[0] for i, b in zip(index, bbox)]
    if properties["was_2d"]:
        pos = [0.0, *pos]
    crop_shape = list(properties["shape_after_crop"])
    new_shape = list(properties["shape_after_resampling"])
    return [(p + 0.5) * n / c - 0.5 for p, n, c in zip(pos, new_shape, crop_shape)]


class Predictor:
    """Holds a plan and the fold networks of the chosen configurations; predicts cases."""

    def __init__(
        self,
        plan: Any,
        models: dict[str, list[FoldModel]],
        *,
        device: torch.device | str = "cpu",
        tta: bool = True,
        amp: bool = True,
        overlap: float = 0.5,
        postprocessing: dict[str, Any] | None = None,
        localisers: dict[str, list[FoldModel]] | None = None,
        training_volumes_mm3: Sequence[float] | None = None,
        batch_size: int | None = None,
        tta_scales: Sequence[float] = (1.0,),
    ):
        self.plan = plan
        self.models = models
        self.device = torch.device(device)
        self.tta = tta
        self.amp = amp
        self.overlap = overlap
        self.postprocessing = postprocessing or {}
        self.localisers = localisers or {}
        self.training_volumes_mm3 = list(training_volumes_mm3 or [])
        self.batch_size = batch_size
        self.tta_scales = check_scales(tta_scales)
        self._case_cache: dict[str, tuple] = {}  # per case: config -> result (see predict)
        # per case, with uncertainty: config -> its members' disagreement (nats, input grid)
        self._disagreement_cache: dict[str, np.ndarray] = {}
        self._uncertainty = False  # set while predict_with_uncertainty runs
        from autoseg.preprocessing.preprocess import params_from_plan

        self._params = {name: params_from_plan(plan, [name])[0] for name in self._all_configs()}

    def _all_configs(self) -> list[str]:
        return list(dict.fromkeys([*self.models, *self.localisers]))

    # ------------------------------------------------------------------ pieces
    def preprocess(self, image: np.ndarray, geometry: Geometry, config: str):
        from autoseg.preprocessing.preprocess import preprocess_case

        return preprocess_case(image, geometry, self._params[config])

    def _fold_probabilities(
        self, models: list[FoldModel], data: np.ndarray, config: str
    ) -> list[torch.Tensor]:
        spec = window_spec(self.plan, config, tta=self.tta, overlap=self.overlap)
        return [
            predict_sliding_window(
                m.network, data, spec, device=self.device, batch_size=self.batch_size, amp=self.amp
            )
            for m in models
        ]

    @property
    def n_models(self) -> int:
        """Fold networks the prediction averages (every fold of every configuration)."""
        return sum(len(m) for m in self.models.values())

    def _member_kind(self) -> tuple[str, int]:
        """What the uncertainty's disagreement compares: the models when there are several,
        the mirror views of a single model with TTA, nothing otherwise."""
        if self.n_models > 1:
            return "models", self.n_models
        if self.tta:
            config = next(iter(self.models))
            spec = window_spec(self.plan, config, tta=True, overlap=self.overlap)
            axes = spec.mirror_axes if spec.mirror_axes is not None else range(spec.dim)
            n = 2 ** len(tuple(axes))
            if n > 1:
                return "mirrors", n
        return "single", 1

    def _mirror_disagreement(
        self, model: FoldModel, data: np.ndarray, config: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        spec = window_spec(self.plan, config, tta=self.tta, overlap=self.overlap)
        return predict_sliding_window(
            model.network,
            data,
            spec,
            device=self.device,
            batch_size=self.batch_size,
            amp=self.amp,
            disagreement=True,
        )

    def probabilities_preprocessed(
        self,
        data: np.ndarray,
        properties: dict[str, Any],
        config: str,
        window: tuple[slice, ...] | None = None,
        *,
        disagreement: bool = False,
    ) -> tuple[np.ndarray, list[np.ndarray]] | tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Fold-averaged probabilities (K, Z, Y, X) on the preprocessed grid, and each fold's
        argmax (for the disagreement flag). ``window`` restricts prediction to a crop.

        ``disagreement``: also the members' mutual information (Z, Y, X) in nats on this grid
        (:mod:`autoseg.inference.uncertainty`): between the folds when there are several,
        between the mirror views when this is the only model and TTA is on, else 0. Taken
        here, before resampling, so that interpolation never counts as disagreement."""
        models = self.models.get(config) or self.localisers[config]
        mirrors = disagreement and self._member_kind()[0] == "mirrors"
        mirror_dis = None
        sub = data if window is None else data[(slice(None), *window)]
        if mirrors:
            probs, mirror_dis = self._mirror_disagreement(models[0], sub, config)
            folds = [probs]
        else:
            folds = self._fold_probabilities(models, sub, config)
        if window is None:
            full = [f.numpy() for f in folds]
        else:
            full = []
            for f in folds:
                canvas = np.zeros((f.shape[0], *data.shape[1:]), np.float32)
                canvas[0] = 1.0
                canvas[(slice(None), *window)] = f.numpy()
                full.append(canvas)
        mean = np.mean(full, axis=0)
        maps = [np.argmax(f, axis=0) for f in full]
        if not disagreement:
            return mean, maps
        from autoseg.inference.uncertainty import disagreement as mutual_info
        from autoseg.inference.uncertainty import entropy

        if mirror_dis is not None:
            dis = np.zeros(data.shape[1:], np.float32)
            dis[window or ...] = mirror_dis.numpy()
        elif len(full) > 1:
            member_entropy = np.zeros(data.shape[1:], np.float32)
            for f in full:
                member_entropy += entropy(f)
            dis = mutual_info(mean, member_entropy / np.float32(len(full)))
        else:
            dis = np.zeros(data.shape[1:], np.float32)
        return mean, maps, dis

    def _crop_window(
        self, image: np.ndarray, geometry: Geometry, config: str, properties: dict[str, Any]
    ) -> tuple[tuple[slice, ...], bool]:
        """Window for the crop configuration from its localiser's whole-image prediction."""
        cfg = self.plan.configurations[config]
        localiser = cfg.crop.localiser
        probs, _, _ = self.config_probabilities(image, geometry, localiser)
        box = largest_component_box(np.argmax(probs, axis=0) > 0)
        shape = properties["shape_after_resampling"]
        window_vox = list(cfg.crop.window_voxels)
        if len(window_vox) < len(shape):
            window_vox = [shape[0], *window_vox]  # 2D window on a 2D dataset stored as Z=1
        if box is None:
            centre = [s / 2 for s in shape]
            missed = True
        else:
            centre_orig = [(a + b - 1) / 2 for a, b in box]
            centre = original_to_preprocessed(centre_orig, properties)
            missed = False
        return centred_window(centre, window_vox, shape), missed

    def config_probabilities(
        self, image: np.ndarray, geometry: Geometry, config: str
    ) -> tuple[np.ndarray, list[np.ndarray], bool]:
        """Probabilities on the original grid for one configuration (+ folds' label maps)."""
        from autoseg.preprocessing.invert import invert_labels, invert_map, invert_probabilities

        if config in self._case_cache:  # e.g. the crop's localiser is also in the ensemble
            return self._case_cache[config]

        pre = self.preprocess(image, geometry, config)
        window, missed = None, False
        cfg = self.plan.configurations[config]
        if config == "crop" and cfg.crop is not None:
            window, missed = self._crop_window(image, geometry, config, pre.properties)
        if self._uncertainty and config in self.models:
            probs, fold_maps, dis = self.probabilities_preprocessed(
                pre.data, pre.properties, config, window, disagreement=True
            )
            self._disagreement_cache[config] = invert_map(dis, pre.properties)[0]
        else:
            probs, fold_maps = self.probabilities_preprocessed(
                pre.data, pre.properties, config, window
            )
        back, _ = invert_probabilities(probs, pre.properties)
        if window is None and config in self.models:
            back = self._with_scale_views(back, image, geometry, config)
        fold_back = [invert_labels(m.astype(np.uint8), pre.properties)[0] for m in fold_maps]
        self._case_cache[config] = (back, fold_back, missed)
        return back, fold_back, missed

    def _with_scale_views(
        self, back: np.ndarray, image: np.ndarray, geometry: Geometry, config: str
    ) -> np.ndarray:
        """``back`` (the trained view on the input grid) averaged with the other scale views
        (none unless ``tta_scales`` names more than 1.0; each view mirrors as ``tta`` says).
        A crop configuration keeps its localiser's window and is not rescaled."""
        extra = [s for s in self.tta_scales if s != 1.0]
        if not extra:
            return back
        total = back.astype(np.float32, copy=True)
        for scale in extra:
            total += self.scale_view(image, geometry, config, scale)
        return total / np.float32(1 + len(extra))

    def scale_view(
        self, image: np.ndarray, geometry: Geometry, config: str, scale: float
    ) -> np.ndarray:
        """One scale view of one configuration: its folds' mean probabilities (K, ...) on the
        input grid, predicted on the grid :func:`view_spacing` makes."""
        from dataclasses import replace

        from autoseg.preprocessing.invert import invert_probabilities
        from autoseg.preprocessing.preprocess import preprocess_case

        params = self._params[config]
        n_axes = len(self.plan.configurations[config].patch_size)
        view = replace(params, spacing=view_spacing(params.spacing, scale, n_axes))
        pre = preprocess_case(image, geometry, view)
        probs, _ = self.probabilities_preprocessed(pre.data, pre.properties, config)
        return invert_probabilities(probs, pre.properties)[0]

    # ------------------------------------------------------------------ whole case
    def predict(
        self, image: np.ndarray, geometry: Geometry
    ) -> tuple[np.ndarray, np.ndarray, CaseFlags]:
        """(label map, probabilities (K, ...), flags) on the input image's own grid.

        ``image`` is (C, *spatial) as :func:`autoseg.preprocessing.preprocess.read_case`
        returns it.
        """
        seg, probs, flags, _ = self._predict(image, geometry, uncertainty=False)
        return seg, probs, flags

    def predict_with_uncertainty(self, image: np.ndarray, geometry: Geometry) -> tuple:
        """:meth:`predict` plus a :class:`~autoseg.inference.uncertainty.CaseUncertainty`
        (entropy and disagreement maps on the input's grid). The label map and probabilities
        are the same numbers :meth:`predict` gives."""
        return self._predict(image, geometry, uncertainty=True)

    def _predict(self, image: np.ndarray, geometry: Geometry, *, uncertainty: bool) -> tuple:
        self._case_cache, self._disagreement_cache = {}, {}
        self._uncertainty = uncertainty
        try:
            all_probs, all_folds, missed_any = [], [], False
            for config in self.models:
                probs, folds, missed = self.config_probabilities(image, geometry, config)
                all_probs.append(probs)
                all_folds.extend(folds)
                missed_any |= missed
            probs = np.mean(all_probs, axis=0).astype(np.float32)
            seg = np.argmax(probs, axis=0).astype(np.uint8)
            if self.postprocessing:
                from autoseg.postprocessing.rules import apply_postprocessing

                seg = apply_postprocessing(seg, self.postprocessing, geometry.spacing_zyx)
            flags = self.quality_flags(seg, probs, all_folds, geometry)
            flags.localiser_missed = missed_any
            unc = None
            if uncertainty:
                dis = [self._disagreement_cache[c] for c in self.models]
                unc = self._case_uncertainty(probs, all_probs, dis)
        finally:
            self._case_cache, self._disagreement_cache = {}, {}
            self._uncertainty = False
        return seg, probs, flags, unc

    def _case_uncertainty(
        self, probs: np.ndarray, config_probs: list[np.ndarray], config_dis: list[np.ndarray]
    ):
        """Combine the configurations on the input grid. The disagreement over all models
        splits exactly into the part between the configurations' means and each
        configuration's own (taken on its grid): with equal weights per configuration,
        I = H(p̄) − mean_c [H(p̄_c) − I_c], where H(p̄_c) − I_c is the configuration's mean
        model entropy."""
        from autoseg.inference.uncertainty import case_uncertainty, entropy

        if len(config_probs) == 1:
            dis = config_dis[0]
        else:
            member_entropy = np.zeros(probs.shape[1:], np.float32)
            for p, d in zip(config_probs, config_dis):
                member_entropy += entropy(p) - d
            member_entropy /= np.float32(len(config_probs))
            dis = np.maximum(entropy(probs) - member_entropy, 0.0).astype(np.float32)
        kind, members = self._member_kind()
        names = self.plan.foreground_names
        return case_uncertainty(probs, dis, members=members, member_kind=kind, label_names=names)

    def quality_flags(
        self,
        seg: np.ndarray,
        probs: np.ndarray,
        fold_maps: Sequence[np.ndarray],
        geometry: Geometry,
    ) -> CaseFlags:
        flags = CaseFlags()
        fg = seg > 0
        voxel_mm3 = float(np.prod(geometry.spacing))
        volume = float(fg.sum()) * voxel_mm3
        flags.details["foreground_mm3"] = volume
        flags.empty = not fg.any()
        if fg.any():
            conf = float(probs.max(axis=0)[fg].mean())
            flags.details["mean_confidence"] = conf
            flags.low_confidence = conf < LOW_CONFIDENCE
        if self.training_volumes_mm3 and not flags.empty:
            lo = min(self.training_volumes_mm3) / VOLUME_FACTOR
            hi = max(self.training_volumes_mm3) * VOLUME_FACTOR
            flags.volume_outlier = not lo <= volume <= hi
        if len(fold_maps) > 1:
            dices = []
            for i in range(len(fold_maps)):
                for j in range(i + 1, len(fold_maps)):
                    a, b = fold_maps[i] > 0, fold_maps[j] > 0
                    denom = a.sum() + b.sum()
                    dices.append(1.0 if denom == 0 else 2 * (a & b).sum() / denom)
            agreement = float(np.mean(dices))
            flags.details["fold_agreement"] = agreement
            flags.fold_disagreement = agreement < FOLD_AGREEMENT
        return flags
