"""What the model is unsure about: per-voxel uncertainty maps and one score per case.

Two maps, both normalised by log(K) (K classes) to 0..1:

* **entropy** of the ensemble's mean probability, H(p̄) = −Σ_k p̄_k log p̄_k: the total
  predictive uncertainty. 0 where the ensemble is certain, 1 where every class is equally
  likely.
* **disagreement** between the ensemble members, the mutual information
  I = H(p̄) − (1/M) Σ_m H(p_m) = (1/M) Σ_m KL(p_m ‖ p̄), the mean Kullback-Leibler divergence
  of the members from their mean (BALD, Houlsby et al. 2011; Gal et al. 2017 used it to pick
  images to label). It is 0 exactly when all members give the same probabilities and grows
  with how far they are apart; unlike counting votes ("1 − the fraction of members agreeing
  with the argmax") it sees two members that agree on the argmax but not on the confidence
  (0.51 vs 0.99), and it needs no per-member label maps: a running sum of the members'
  entropies beside the running mean is enough. It splits the entropy into its parts,
  H(p̄) = mean member entropy (what every member finds ambiguous: noise, a blurred edge)
  + I (what the members disagree on: what more labels can fix), so I ≤ H(p̄) ≤ log K.

The members are the models the prediction averages (every fold of every configuration);
with a single model they are its test-time mirror views (each window predicted mirrored; a
flip the network handles differently is a sign it is guessing). One model without mirroring
has one member and no disagreement to measure: the map is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# A voxel counts towards the case score when the ensemble gives it at least this chance of
# being foreground (any class > 0): see score_region.
FOREGROUND_CHANCE = 0.1
_TINY = np.float32(1e-30)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats over the class axis 0 of (K, *spatial) probabilities, float32
    (0 log 0 = 0). Computed one class at a time: one spatial array of working memory."""
    out = np.zeros(probs.shape[1:], np.float32)
    for k in range(probs.shape[0]):
        p = np.clip(np.asarray(probs[k], dtype=np.float32), 0.0, 1.0)
        out -= p * np.log(np.maximum(p, _TINY))
    return np.maximum(out, 0.0, out=out)


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """:func:`entropy` / log(K): 0 for a certain voxel, 1 for a uniform one."""
    return np.minimum(entropy(probs) / np.float32(math.log(probs.shape[0])), 1.0)


def disagreement(mean_probs: np.ndarray, mean_member_entropy: np.ndarray) -> np.ndarray:
    """Mutual information H(p̄) − mean_m H(p_m) in nats (>= 0; rounding clipped)."""
    return np.maximum(entropy(mean_probs) - mean_member_entropy, 0.0).astype(np.float32)


def mutual_information(members: Sequence[np.ndarray]) -> np.ndarray:
    """Disagreement of equally weighted members, each (K, *spatial): the mean KL divergence of
    the members from their mean, in nats. Streams: two arrays besides the members."""
    if not members:
        raise ValueError("no members")
    total = np.zeros(members[0].shape, np.float32)
    member_entropy = np.zeros(members[0].shape[1:], np.float32)
    for m in members:
        total += m
        member_entropy += entropy(m)
    n = np.float32(len(members))
    return disagreement(total / n, member_entropy / n)


def _grown(candidate: np.ndarray) -> np.ndarray:
    """``candidate`` grown by one voxel (all 8 / 26 neighbours) so the edge is in."""
    from scipy import ndimage

    if not candidate.any():
        return candidate
    return ndimage.binary_dilation(candidate, structure=np.ones((3,) * candidate.ndim, bool))


def score_region(probs: np.ndarray) -> np.ndarray:
    """Voxels the case score averages over: every voxel the ensemble gives at least a 10 %
    chance of foreground (which holds the predicted foreground and the uncertain band around
    it: for two classes, p >= 0.1 is the confident foreground plus every voxel with a
    normalised entropy >= 0.47 on its side), grown by one voxel so the edge is in.

    Why not the whole image: the background is mostly certain, so a whole-image mean measures
    the field of view as much as the model: the same nerve in a frame with 4x the area would
    score 4x lower. Why not the argmax foreground alone: a nerve the model half-sees
    (p = 0.3 everywhere) has no argmax foreground and would score nothing.
    """
    return _grown((1.0 - probs[0]) >= FOREGROUND_CHANCE)


def label_region(probs: np.ndarray, k: int) -> np.ndarray:
    """The voxels a label's own score averages over: class ``k`` has at least a 10 % chance
    there, grown by one voxel. Why per label: a frame whose nerve the model is unsure of
    and whose vessel it is sure of has one mean over the union of both regions; a lab that
    needs more nerve examples (or the balanced ranking of :mod:`autoseg.inference.suggest`)
    needs the two apart."""
    return _grown(np.asarray(probs[k]) >= FOREGROUND_CHANCE)


def label_scores(
    entropy_map: np.ndarray, probs: np.ndarray, names: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Per foreground class (named by ``names`` for classes 1, 2, ..., else "1", "2", ...):
    the mean of the normalised entropy map over :func:`label_region`, and the region's size.
    The entropy is the multi-class one, so a voxel torn between nerve and vessel counts for
    both labels. A class with no plausible voxel is averaged over the whole image (near 0:
    the model is sure it is absent), as the case score is."""
    out: dict[str, dict[str, Any]] = {}
    for k in range(1, probs.shape[0]):
        name = names[k - 1] if names is not None else str(k)
        region = label_region(probs, k)
        where = region if region.any() else np.ones_like(region)
        out[name] = {
            "score": round(float(entropy_map[where].mean()), 6),
            "region_voxels": int(region.sum()),
        }
    return out


@dataclass
class CaseUncertainty:
    """The two normalised maps of one case on the input's grid, and what they were made of."""

    entropy: np.ndarray  # float32, 0..1
    disagreement: np.ndarray  # float32, 0..1
    members: int  # predictions the disagreement compares (1: none to compare)
    member_kind: str  # "models" (folds/configurations), "mirrors" or "single"
    region: np.ndarray  # bool: the voxels the score averages (see score_region)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # see label_scores

    def summary(self) -> dict[str, Any]:
        """Per-case numbers: ``score`` (mean normalised entropy over the region: the ranking
        number), ``disagreement`` (mean normalised disagreement there), the region's size.
        A case without any plausible foreground is averaged over the whole image."""
        where = self.region if self.region.any() else np.ones_like(self.region)
        return {
            "score": round(float(self.entropy[where].mean()), 6),
            "disagreement": round(float(self.disagreement[where].mean()), 6),
            "region_voxels": int(self.region.sum()),
            "region_fraction": round(float(self.region.mean()), 6),
            "members": self.members,
            "member_kind": self.member_kind,
            "labels": {name: dict(v) for name, v in self.labels.items()},
        }


def case_uncertainty(
    probs: np.ndarray,
    disagreement_nats: np.ndarray,
    *,
    members: int,
    member_kind: str,
    label_names: Sequence[str] | None = None,
) -> CaseUncertainty:
    """Normalise the maps of one case: ``probs`` (K, *spatial) the ensemble's mean,
    ``disagreement_nats`` its members' mutual information; ``label_names`` name classes
    1..K-1 in the per-label scores."""
    log_k = np.float32(math.log(probs.shape[0]))
    entropy_map = normalised_entropy(probs)
    return CaseUncertainty(
        entropy=entropy_map,
        disagreement=np.clip(disagreement_nats / log_k, 0.0, 1.0).astype(np.float32),
        members=int(members),
        member_kind=member_kind,
        region=score_region(probs),
        labels=label_scores(entropy_map, probs, label_names),
    )


def map_extension(prediction_ext: str) -> str:
    """The uncertainty maps' file type: the prediction's, unless that holds only integers
    (PNG, JPEG, BMP): then NIfTI, which keeps the 0..1 floats and the pixel grid."""
    from autoseg.io.image import PILLOW_EXTENSIONS

    return ".nii.gz" if prediction_ext.lower() in PILLOW_EXTENSIONS else prediction_ext
