"""Imaging modality of each channel, guessed from its name in ``dataset.json``.

The planner normalises CT with fixed, dataset-wide intensity windows (Hounsfield units mean
the same thing in every scan) and MRI/ultrasound per image (their grey values are arbitrary
per acquisition), so the modality of each channel decides normalisation. Channel names are
free text written by users ("T2", "T2w_TSE", "DWI_b800", "B-mode", "US", "CT"), hence the
rule below works on words, not on exact strings.

Rule, applied to the lower-cased name split into alphanumeric words:

1. **ct** — a word ``ct`` / ``cta`` / ``cect`` / ``nect`` / ``ncct`` / ``cbct`` / ``ctp`` /
   ``hu``, or ``ct`` followed by digits (``ct1``), or the phrase "computed tomography".
2. **mri** — a word that names an MR contrast or sequence: ``t1*``, ``t2*`` (T1w, T1c, T2s,
   T2star...), ``flair*``, ``pd``/``pdw``/``pdfs``, ``dwi``, ``dti``, ``adc``, ``b<digits>``,
   ``stir``, ``dixon``, ``swi``, ``tse``/``fse``/``gre``/``spin``/``mprage``/``dess``/
   ``vibe``/``space``, ``mt*`` (magnetisation transfer), ``mr``/``mri``/``mrn`` or
   "magnetic resonance", "neurography". Checked before ultrasound because MR sequence names
   contain "echo" ("spin echo", "gradient echo").
3. **ultrasound** — a word ``us`` / ``usg`` / ``ultrasound*`` / ``echo*`` / ``sono*`` /
   ``doppler`` / ``bmode``, or the phrase "b-mode" / "b mode".
4. **other** — anything else (e.g. nnU-Net's ``noNorm`` / ``zscore`` channel names, photos).
"""

from __future__ import annotations

import re

MODALITIES = ("ct", "mri", "ultrasound", "other")

_CT_WORD = re.compile(r"^(?:ct\d*|cta|cect|nect|ncct|cbct|ctp|hu)$")
_CT_PHRASE = re.compile(r"computed[\s_-]*tomograph")
_MRI_WORD = re.compile(
    r"^(?:t1\w*|t2\w*|flair\w*|pd|pdw|pdfs|dwi|dti|adc|b\d+|stir|dixon|swi|tse|fse|gre|spin"
    r"|mprage|dess|vibe|space|mt|mt\d\w*|mton|mtoff|mr|mri|mrn)$"
)
_MRI_PHRASE = re.compile(r"magnetic[\s_-]*resonance|neurograph")
_US_WORD = re.compile(r"^(?:us|usg|ultrasound\w*|ultrasonograph\w*|echo\w*|sono\w*|doppler|bmode)$")
_US_PHRASE = re.compile(r"\bb[\s_-]?mode\b|ultrason")


def modality_of(channel_name: str) -> str:
    """``"ct"``, ``"mri"``, ``"ultrasound"`` or ``"other"`` for one channel name (rule above)."""
    name = channel_name.lower()
    words = re.findall(r"[a-z0-9]+", name)
    if any(_CT_WORD.match(w) for w in words) or _CT_PHRASE.search(name):
        return "ct"
    if any(_MRI_WORD.match(w) for w in words) or _MRI_PHRASE.search(name):
        return "mri"
    if any(_US_WORD.match(w) for w in words) or _US_PHRASE.search(name):
        return "ultrasound"
    return "other"


def channel_modalities(channel_names: dict[str, str]) -> dict[str, str]:
    """Modality per channel key, in channel order: ``{"0": "mri", "1": "mri"}``."""
    return {k: modality_of(v) for k, v in sorted(channel_names.items(), key=lambda kv: int(kv[0]))}
