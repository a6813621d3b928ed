"""Intensity normalization, one scheme per channel.

- ``zscore``: subtract the image's own mean, divide by its own standard deviation. MRI and
  ultrasound intensities have no physical unit — the same nerve is 300 in one scan and 1200
  in the next — so each image is its own reference. With ``use_nonzero_mask`` the statistics come
  from the non-zero region only and the zero padding stays 0 (nnU-Net's ``use_mask_for_norm``,
  chosen by the planner when cropping removes a lot, so padding does not drag the mean).
- ``ct``: Hounsfield units are physical, so every image gets the same transform: clip to the
  dataset's foreground percentiles (typically 0.5 and 99.5) and standardize with the
  dataset's foreground mean and standard deviation.
- ``none``: keep the values (already normalized data, e.g. the z-scored BraTS example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from autoseg.errors import AutosegError

SCHEMES = ("zscore", "ct", "none")
# A flat image (std 0) must not divide by zero; below this the std is clamped.
MIN_STD = 1e-8


@dataclass(frozen=True)
class ChannelNormalization:
    """How to normalize one channel (field names as in the plan's ``normalization`` block).

    ``clip`` is ``(low, high)``; ``ct`` needs ``clip``, ``mean`` and ``std``.
    """

    scheme: str = "zscore"
    use_nonzero_mask: bool = False
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise AutosegError(
                f"unknown normalization scheme {self.scheme!r}",
                fix=f"use one of {', '.join(SCHEMES)} in plans.json",
            )
        if self.scheme == "ct" and (self.clip is None or self.mean is None or self.std is None):
            raise AutosegError(
                "ct normalization needs clip, mean and std",
                fix="re-run 'autoseg fingerprint' and 'autoseg plan' for this dataset",
            )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"scheme": self.scheme, "use_nonzero_mask": self.use_nonzero_mask}
        if self.clip is not None:
            d["clip"] = [float(self.clip[0]), float(self.clip[1])]
        if self.mean is not None:
            d["mean"] = float(self.mean)
        if self.std is not None:
            d["std"] = float(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelNormalization:
        clip = d.get("clip")
        return cls(
            scheme=str(d.get("scheme", "zscore")),
            use_nonzero_mask=bool(d.get("use_nonzero_mask", False)),
            clip=None if clip is None else (float(clip[0]), float(clip[1])),
            mean=None if d.get("mean") is None else float(d["mean"]),
            std=None if d.get("std") is None else float(d["std"]),
        )


def zscore(
    channel: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """(x - mean) / std over the whole image, or over ``mask`` with 0 outside it.

    An empty mask falls back to the whole image (nothing else to measure).
    """
    x = channel.astype(np.float32, copy=False)
    values = x[mask] if mask is not None and np.any(mask) else x
    mean = float(np.mean(values, dtype=np.float64))
    std = float(np.std(values, dtype=np.float64))
    out = (x - np.float32(mean)) / np.float32(max(std, MIN_STD))
    if mask is not None and np.any(mask):
        out[~mask] = 0.0
    return out.astype(np.float32, copy=False), {"mean": mean, "std": std}


def ct_normalize(
    channel: np.ndarray, clip_lower: float, clip_upper: float, mean: float, std: float
) -> np.ndarray:
    """Clip to the dataset percentiles, then standardize with the dataset mean and std."""
    x = np.clip(channel.astype(np.float32, copy=False), clip_lower, clip_upper)
    return ((x - np.float32(mean)) / np.float32(max(std, MIN_STD))).astype(np.float32)


def normalize_channel(
    channel: np.ndarray, norm: ChannelNormalization, mask: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalize one channel; returns the array and the parameters used (for properties)."""
    used: dict[str, Any] = {"scheme": norm.scheme}
    if norm.scheme == "zscore":
        out, stats = zscore(channel, mask if norm.use_nonzero_mask else None)
        used.update(use_nonzero_mask=norm.use_nonzero_mask, **stats)
    elif norm.scheme == "ct":
        assert norm.clip is not None and norm.mean is not None and norm.std is not None
        out = ct_normalize(channel, norm.clip[0], norm.clip[1], norm.mean, norm.std)
        used.update(norm.to_dict())
    else:
        out = channel.astype(np.float32)
    return out, used


def normalize_image(
    image: np.ndarray,
    norms: list[ChannelNormalization],
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Normalize a (C, Z, Y, X) image, one scheme per channel; float32 out."""
    if len(norms) != image.shape[0]:
        raise AutosegError(
            f"the plan normalizes {len(norms)} channel(s) but the image has {image.shape[0]}",
            fix="re-run 'autoseg plan' after changing the channels of the dataset",
        )
    out = np.empty(image.shape, np.float32)
    used = []
    for c, norm in enumerate(norms):
        out[c], params = normalize_channel(image[c], norm, mask)
        used.append(params)
    return out, used
