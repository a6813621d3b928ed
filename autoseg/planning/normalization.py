"""Per-channel intensity normalization rule, from the fingerprint's modality per channel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from autoseg.planning.plan import Normalization

# nnU-Net's threshold: when cropping to the nonzero region removes 25 % or more of the median
# image (skull-stripped brains, scanner padding), the zeros are not anatomy, and including them
# in the mean/std would shift the normalized tissue values from case to case.
NONZERO_MASK_CROP_RATIO = 0.75


def crop_volume_ratio(
    shapes: Sequence[Sequence[int]], shapes_after_crop: Sequence[Sequence[int]]
) -> float:
    """Median over cases of (volume after cropping to nonzero) / (original volume)."""
    ratios = [float(np.prod(c)) / float(np.prod(s)) for s, c in zip(shapes, shapes_after_crop)]
    return float(np.median(ratios))


def channel_normalization(
    modality: str, intensity: Mapping[str, float] | None, crop_ratio: float
) -> tuple[Normalization, str]:
    """The normalization of one channel.

    - ``ct``: Hounsfield units mean the same in every scan, so one dataset-wide mapping is right:
      clip to the foreground's 0.5 / 99.5 percentiles (removes metal and air outliers), then
      subtract the foreground mean and divide by its std (``intensity`` = the fingerprint's
      aggregate foreground statistics).
    - everything else (``mri``, ``ultrasound``, ``other``): intensities are arbitrary per scan
      (coil, gain, depth), so each image is z-scored on its own. The nonzero mask is used only
      when cropping to nonzero removed >= 25 % of the median image (``crop_ratio`` <= 0.75);
      otherwise the whole image is used ("mask-free": nerve MRI and ultrasound keep their
      dark regions, which are real tissue or gel).
    """
    if modality == "ct":
        if not intensity:
            raise ValueError("CT normalization needs the fingerprint's intensity statistics")
        lo, hi = float(intensity["p00_5"]), float(intensity["p99_5"])
        if hi <= lo:
            hi = lo + 1.0
        std = max(float(intensity["std"]), 1e-8)
        return (
            Normalization(scheme="ct", clip=[lo, hi], mean=float(intensity["mean"]), std=std),
            f"modality ct -> clip to foreground p0.5/p99.5 [{lo:.4g}, {hi:.4g}], then "
            f"(x - {float(intensity['mean']):.4g}) / {std:.4g} (dataset foreground mean/std)",
        )
    use_mask = crop_ratio <= NONZERO_MASK_CROP_RATIO
    why = (
        f"modality {modality} -> z-score per image; cropping to nonzero kept "
        f"{100 * crop_ratio:.0f} % of the median image "
    )
    if use_mask:
        why += f"(<= {100 * NONZERO_MASK_CROP_RATIO:.0f} %) -> statistics inside the nonzero mask"
    else:
        why += f"(> {100 * NONZERO_MASK_CROP_RATIO:.0f} %) -> mask-free (whole image)"
    return Normalization(scheme="zscore", use_nonzero_mask=use_mask), why
