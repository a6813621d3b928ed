"""U-Nets built from the plan's architecture block, and their training-memory estimate.

Imports only torch (and numpy/stdlib), so the planner can size patches from the real network.
"""

from autoseg.networks.memory import MemoryEstimate, estimate_training_memory
from autoseg.networks.unet import ArchitectureConfig, UNet, build_network, count_parameters

__all__ = [
    "ArchitectureConfig",
    "MemoryEstimate",
    "UNet",
    "build_network",
    "count_parameters",
    "estimate_training_memory",
]
