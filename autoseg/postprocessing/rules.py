"""Connected-component post-processing of label maps, per label.

A nerve is one tube (the sciatic nerve splits into a tibial and a peroneal branch, so two
tubes); a network's typical error on it is a small island elsewhere (a vessel or a fascicle-like
texture). Three rules remove such islands; ``autoseg find-best`` keeps one for a label only when
it improves that label's cross-validated Dice (documentation/find_best.md).

Rules, as stored in ``inference.json`` under ``"postprocessing"`` (keys are label values as
strings)::

    {"rule": "none"}
    {"rule": "largest"}                       keep the largest component
    {"rule": "k_largest", "k": 2}             keep the k largest components
    {"rule": "min_size", "min_voxels": 40, "min_volume_mm3": 12.5}
                                              remove components below the size

Removed voxels become background (0). Components are fully connected: 26-neighbourhood in 3D,
8 in 2D (a thin oblique nerve touches its next slice only along an edge or a corner). Rules
only ever remove voxels of their own label, so rules of different labels never interact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from autoseg.errors import AutosegError
from autoseg.io.components import label_components

RULE_NONE = "none"
RULE_LARGEST = "largest"
RULE_K_LARGEST = "k_largest"
RULE_MIN_SIZE = "min_size"
RULES = (RULE_NONE, RULE_LARGEST, RULE_K_LARGEST, RULE_MIN_SIZE)

MIN_SIZE_FRACTION = 0.1
"""Size threshold = 10 % of the smallest component of that label in the training labels.

A component a tenth the size of anything an annotator ever drew is almost surely noise, while
the margin of 10x keeps real but small pieces (a nerve cut by the field of view's edge, a thin
branch near the bifurcation) far above the threshold. Sciatic nerve at 0.5 x 0.5 x 3.5 mm: the
smallest labelled piece is a few hundred mm³ (one slice of a 10 mm nerve is ~ 280 mm³), so
islands below ~ 30 mm³ (~ 35 voxels) go.
"""

_FIX = 'write e.g. {"1": {"rule": "largest"}} (rules: ' + ", ".join(RULES) + ")"


def connectivity_for(ndim: int) -> int:
    """Full connectivity: 26 in 3D, 8 in 2D."""
    if ndim == 3:
        return 26
    if ndim == 2:
        return 8
    raise ValueError(f"post-processing needs a 2D or 3D label map, got {ndim}D")


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight box around a mask (None when empty): labelling only the box is 10-100x faster
    for a nerve that fills 0.1-0.2 % of the image."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=others))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(component ids of the mask, voxel count per id; index 0 = outside, count 0)."""
    ids, n = label_components(mask, connectivity_for(mask.ndim))
    sizes = np.bincount(ids.ravel(), minlength=n + 1)
    sizes[0] = 0
    return ids, sizes


def component_sizes(seg: np.ndarray, label: int) -> np.ndarray:
    """Voxel counts of the label's connected components, largest first (int64)."""
    seg = np.asarray(seg)
    connectivity_for(seg.ndim)
    mask = seg == label
    box = _bounding_box(mask)
    if box is None:
        return np.zeros(0, dtype=np.int64)
    _, sizes = _components(mask[box])
    return np.sort(sizes[1:].astype(np.int64))[::-1]


def _keep_components(seg: np.ndarray, label: int, select) -> np.ndarray:
    """Copy of ``seg`` where voxels of ``label`` outside the components ``select(sizes)``
    returns (a boolean array over component ids, index 0 ignored) become background."""
    seg = np.asarray(seg)
    connectivity_for(seg.ndim)
    out = seg.copy()
    mask = seg == label
    box = _bounding_box(mask)
    if box is None:
        return out
    ids, sizes = _components(mask[box])
    keep = np.asarray(select(sizes), dtype=bool)
    keep[0] = True  # outside the label: untouched
    drop = ~keep[ids]
    sub = out[box]
    sub[drop] = 0
    return out


def _k_largest_ids(sizes: np.ndarray, k: int) -> np.ndarray:
    """Boolean over component ids: the k largest; equal sizes keep the lower id (the one met
    first in array order), so the result never depends on sort stability."""
    keep = np.zeros(sizes.shape, dtype=bool)
    ids = np.arange(1, sizes.size)
    order = ids[np.lexsort((ids, -sizes[1:]))]
    keep[order[:k]] = True
    return keep


def keep_largest_component(seg: np.ndarray, label: int) -> np.ndarray:
    """Keep only the largest connected component of ``label``; the rest becomes background."""
    return keep_k_largest(seg, label, 1)


def keep_k_largest(seg: np.ndarray, label: int, k: int) -> np.ndarray:
    """Keep the ``k`` largest components of ``label`` (k = 2 for a nerve that splits into its
    tibial and peroneal branches); the rest becomes background."""
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return _keep_components(seg, label, lambda sizes: _k_largest_ids(sizes, int(k)))


def remove_small_components(seg: np.ndarray, label: int, min_voxels: int) -> np.ndarray:
    """Remove components of ``label`` with fewer than ``min_voxels`` voxels."""
    return _keep_components(seg, label, lambda sizes: sizes >= int(min_voxels))


def min_size_from_training(
    component_volumes_mm3: Iterable[float], fraction: float = MIN_SIZE_FRACTION
) -> float | None:
    """Size threshold in mm³ learned from the training labels' components of one label:
    ``fraction`` (:data:`MIN_SIZE_FRACTION`, 10 %) of the smallest one. None when the label
    has no component in the training labels (the rule then cannot be learned).

    Volumes rather than voxel counts, so that cases at different spacings share one threshold;
    :func:`min_voxels_for` converts it back for an image.
    """
    volumes = [float(v) for v in component_volumes_mm3 if v > 0]
    if not volumes:
        return None
    return float(fraction) * min(volumes)


def min_voxels_for(min_volume_mm3: float, spacing: Sequence[float]) -> int:
    """Voxel count below which a component is smaller than ``min_volume_mm3``: a component of
    n voxels is removed when ``n * voxel volume < min_volume_mm3``, i.e. ``n < ceil(...)``."""
    voxel = math.prod(float(s) for s in spacing)
    if voxel <= 0:
        raise ValueError(f"spacing {tuple(spacing)} must be positive")
    return max(1, math.ceil(min_volume_mm3 / voxel - 1e-9))


def min_size_rule(min_volume_mm3: float, spacing: Sequence[float]) -> dict[str, Any]:
    """The serialisable min-size rule: the volume, and its voxel count at ``spacing`` (used
    when :func:`apply_postprocessing` is called without a spacing)."""
    return {
        "rule": RULE_MIN_SIZE,
        "min_voxels": min_voxels_for(min_volume_mm3, spacing),
        "min_volume_mm3": float(min_volume_mm3),
    }


def validate_rule(rule: Any, where: str = "postprocessing") -> dict[str, Any]:
    """Check one rule dict; AutosegError (inference.json may be edited by hand)."""
    if not isinstance(rule, Mapping) or rule.get("rule") not in RULES:
        raise AutosegError(f"{where}: unknown post-processing rule {rule!r}", fix=_FIX)
    name = rule["rule"]
    if name == RULE_K_LARGEST:
        k = rule.get("k")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise AutosegError(f"{where}: k_largest needs an integer k >= 1", fix=_FIX)
    if name == RULE_MIN_SIZE:
        n = rule.get("min_voxels")
        vol = rule.get("min_volume_mm3")
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1) and not (
            isinstance(vol, int | float) and not isinstance(vol, bool) and vol > 0
        ):
            raise AutosegError(
                f"{where}: min_size needs min_voxels >= 1 or min_volume_mm3 > 0", fix=_FIX
            )
    return dict(rule)


def apply_rule(
    seg: np.ndarray,
    label: int,
    rule: Mapping[str, Any],
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Apply one rule to one label; returns a new array (``seg`` is not modified).

    A min-size rule uses ``min_volume_mm3`` when ``spacing`` (array order, mm) is given and the
    rule holds a volume, else ``min_voxels``.
    """
    rule = validate_rule(rule, f"label {label}")
    name = rule["rule"]
    if name == RULE_NONE:
        return np.array(seg, copy=True)
    if name == RULE_LARGEST:
        return keep_largest_component(seg, label)
    if name == RULE_K_LARGEST:
        return keep_k_largest(seg, label, rule["k"])
    if spacing is not None and rule.get("min_volume_mm3"):
        n = min_voxels_for(float(rule["min_volume_mm3"]), spacing)
    else:
        n = int(rule["min_voxels"])
    return remove_small_components(seg, label, n)


def apply_postprocessing(
    seg: np.ndarray,
    decisions: Mapping[str | int, Mapping[str, Any]],
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Apply a decision dict ``{"<label>": rule}`` (inference.json's ``"postprocessing"``).

    Labels without an entry, and labels absent from ``seg``, are left as they are. Pass the
    image's ``spacing`` (array order, mm) so that a min-size rule uses its volume in mm³.
    """
    out = np.array(seg, copy=True)
    if not decisions:
        return out
    for key, rule in decisions.items():
        try:
            label = int(key)
        except (TypeError, ValueError):
            raise AutosegError(
                f"postprocessing: key {key!r} is not a label value", fix=_FIX
            ) from None
        if label <= 0:
            raise AutosegError(f"postprocessing: label {label} must be a foreground label")
        validate_rule(rule, f"label {label}")
        if rule["rule"] != RULE_NONE:
            out = apply_rule(out, label, rule, spacing)
    return out
