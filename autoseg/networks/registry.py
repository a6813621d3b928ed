"""Networks a plan can name (``architecture.network``; ``autoseg plan --network NAME``).

A :class:`NetworkSpec` tells the planner the blocks per stage of a topology it has chosen
(:func:`autoseg.planning.topology.architecture_block`), and builds the module from the
validated architecture block. The planner, the memory estimate, training, inference and the
report all read this one registry; a new file in ``autoseg/networks/`` that calls
``register_network`` is found without other edits (documentation/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoseg.registry import Registry


@dataclass(frozen=True)
class NetworkSpec:
    """``build(ArchitectureConfig) -> nn.Module`` — in train mode a list of logits, full
    resolution first, one per ``decoder_scales()`` when the block asks for deep supervision;
    ``encoder_blocks(n_stages)`` / ``decoder_convs(n_stages)``: blocks per encoder stage and
    convolutions per decoder stage (``n_stages - 1``) the planner writes; ``label`` names it
    in the report."""

    build: Callable[[Any], Any]
    encoder_blocks: Callable[[int], list[int]]
    decoder_convs: Callable[[int], list[int]]
    label: str


NETWORKS: Registry[NetworkSpec] = Registry(
    "network",
    packages=("autoseg.networks",),
    where="plans.json architecture.network or --network",
)
register_network = NETWORKS.register
