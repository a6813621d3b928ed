"""Patch sampling, augmentation and loaders that feed the trainer.

Reads the preprocessed arrays (``<case>.npy``, ``<case>_seg.npy``, ``<case>_locations.npz``)
and a configuration of the plan; never imports training or inference.

>>> cfg = LoaderConfig.from_plan(plan["configurations"]["3d_fullres"], plan=plan)
>>> with build_loader(folder, train_ids, cfg, num_workers=2, seed=fold) as loader:
...     batch = next(loader)   # {"data": (B, C, *patch), "target": (B, 1, *patch), "keys": [...]}
"""

from autoseg.data.augment import PROFILES, AugmentationProfile, Augmenter, get_profile
from autoseg.data.dataset import CaseStore, list_preprocessed_cases
from autoseg.data.loader import LoaderConfig, PatchLoader, build_loader
from autoseg.data.sampler import augmented_read_size, elastic_displacement_bound

__all__ = [
    "PROFILES",
    "AugmentationProfile",
    "Augmenter",
    "CaseStore",
    "LoaderConfig",
    "PatchLoader",
    "augmented_read_size",
    "build_loader",
    "elastic_displacement_bound",
    "get_profile",
    "list_preprocessed_cases",
]
