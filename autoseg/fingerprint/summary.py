"""A short human-readable summary of a fingerprint, as printed by ``autoseg fingerprint``."""

from __future__ import annotations

from collections.abc import Sequence

from autoseg.fingerprint.schema import Fingerprint


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _vec(v: Sequence[float] | None, unit: str = "") -> str:
    if v is None:
        return "n/a"
    return " x ".join(_num(x) for x in v) + unit


def _axes(dim: int) -> str:
    return "(z, y, x)" if dim == 3 else "(y, x)"


def format_summary(fp: Fingerprint) -> str:
    """Dim, cases, spacing, shape, anisotropy, per-label size, intensity range, modality."""
    agg = fp.aggregate
    n_ch = len(fp.channel_names)
    lines = [
        f"{fp.dataset}: {fp.dim}D, {fp.n_cases} cases, {n_ch} channel{'s' * (n_ch != 1)}",
        f"  spacing     median {_vec(agg.spacing_median, ' mm')} {_axes(fp.dim)}, "
        f"min {_vec(agg.spacing_min)}, max {_vec(agg.spacing_max)}",
        f"  shape       median {_vec(agg.shape_median)}, after crop median "
        f"{_vec(agg.shape_after_crop_median)} (max {_vec(agg.shape_after_crop_max)})",
        f"  anisotropy  {agg.anisotropy_ratio:.3g} (largest / smallest median spacing)",
    ]
    for name, value in fp.foreground_labels.items():
        key = str(value)
        present = sum(c.class_voxel_fraction.get(key, 0.0) > 0 for c in fp.cases)
        text = (
            f"  label {value} {name!r}: in {present}/{fp.n_cases} cases, "
            f"{100 * agg.class_voxel_fraction_mean[key]:.3g} % of voxels "
            f"(median {100 * agg.class_voxel_fraction_median[key]:.3g} %)"
        )
        extent = agg.foreground_extent_mm.get(key)
        comps = agg.n_components.get(key)
        if extent is not None and comps is not None:
            text += (
                f", extent median {_vec(extent.median, ' mm')} (max {_vec(extent.max, ' mm')})"
                f", components median {comps.median:g}, max {comps.max}"
            )
        lines.append(text)
    if agg.cases_without_foreground:
        lines.append(f"  {agg.cases_without_foreground} case(s) have no foreground at all")
    for ch, name in fp.channel_names.items():
        st = agg.intensity[ch]
        lines.append(
            f"  channel {ch} {name!r}: {fp.modality[ch]}, foreground intensity "
            f"0.5-99.5 % [{_num(st.p00_5)}, {_num(st.p99_5)}], "
            f"mean {_num(st.mean)} +- {_num(st.std)}, range [{_num(st.min)}, {_num(st.max)}]"
        )
    return "\n".join(lines)
