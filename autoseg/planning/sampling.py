"""Training-sample rules: foreground oversampling, loss, augmentation profile."""

from __future__ import annotations

import math
from collections.abc import Sequence

from autoseg.planning.plan import Loss
from autoseg.planning.spacing import ANISOTROPY_THRESHOLD

# nnU-Net forces 1/3 of the patches to contain foreground; the rest are placed at random.
OVERSAMPLE_DEFAULT = 0.33
# Below 1 % foreground the random patches rarely show the structure: +0.17 per decade below
# 1 % (0.1 % -> 0.50, the sciatic nerve's 0.15 % -> 0.47), capped at 0.67 (reached at 0.01 %)
# so that a third of the patches still show background far from the structure, where the
# false positives (vessels) arise.
OVERSAMPLE_FRACTION_THRESHOLD = 0.01
OVERSAMPLE_PER_DECADE = 0.17
OVERSAMPLE_MAX = 0.67


def oversample_rate(foreground_fraction: float) -> tuple[float, str]:
    """Share of patches forced to contain foreground, from the median foreground fraction."""
    f = float(foreground_fraction)
    if f >= OVERSAMPLE_FRACTION_THRESHOLD:
        return OVERSAMPLE_DEFAULT, (
            f"foreground {100 * f:.3g} % >= {100 * OVERSAMPLE_FRACTION_THRESHOLD:g} % -> "
            f"{OVERSAMPLE_DEFAULT}"
        )
    decades = math.log10(OVERSAMPLE_FRACTION_THRESHOLD / max(f, 1e-9))
    rate = round(min(OVERSAMPLE_MAX, OVERSAMPLE_DEFAULT + OVERSAMPLE_PER_DECADE * decades), 2)
    return rate, (
        f"foreground {100 * f:.3g} % is {decades:.2f} decades below "
        f"{100 * OVERSAMPLE_FRACTION_THRESHOLD:g} % -> {OVERSAMPLE_DEFAULT} + "
        f"{OVERSAMPLE_PER_DECADE} x {decades:.2f} = {rate} (max {OVERSAMPLE_MAX})"
    )


def loss_rule(config: str) -> tuple[Loss, str]:
    """Dice + cross-entropy for every configuration (nnU-Net's default, the most robust across
    the Medical Segmentation Decathlon; Dice copes with the 0.1 % nerve, CE keeps gradients
    well behaved). No other loss is chosen automatically; users may edit the block.

    Batch Dice (intersections summed over the batch) everywhere except ``crop``: random
    patches often miss a tiny nerve, and a per-sample Dice of an empty patch is 0/0 noise.
    ``crop`` windows are centred on the structure, every sample holds foreground, so the
    per-sample Dice weights each case equally.
    """
    if config == "crop":
        return Loss(
            batch_dice=False
        ), "dice_ce; every crop sample holds foreground -> per-sample Dice"
    return Loss(batch_dice=True), "dice_ce; patches may miss the structure -> batch Dice"


def augmentation_profile(spacing: Sequence[float], context_slices: int = 1) -> tuple[str, str]:
    """Augmentation profile name (the data loader defines each profile).

    ``2d`` / ``2.5d`` (the same transform applied to all k context slices) for the slice
    configurations (two spacing values; read from the fields, not the name, so a registered
    configuration gets the right one); for 3D ``3d_anisotropic`` when the configuration's
    spacing is anisotropic (ratio > 3: rotate and scale in-plane only, as nnU-Net's "dummy
    2D" augmentation - rotating 3 mm slices out of plane invents data), else ``3d``.
    """
    if len(spacing) == 2:  # a slice configuration: 2D, or 2.5D stacks of k slices
        profile = "2.5d" if context_slices > 1 else "2d"
        return profile, f"{profile} configuration"
    ratio = max(spacing) / min(spacing)
    if ratio > ANISOTROPY_THRESHOLD:
        return "3d_anisotropic", f"spacing anisotropy {ratio:.3g} > {ANISOTROPY_THRESHOLD:g}"
    return "3d", f"spacing anisotropy {ratio:.3g} <= {ANISOTROPY_THRESHOLD:g}"
