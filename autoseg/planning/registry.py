"""Configurations a plan can hold, by name (``autoseg plan --configs NAME``; the keys of
``configurations`` in ``plans.json``).

A configuration is one function ``(PlanningContext, planned so far) -> ConfigurationPlan``, or
a one-line reason it was not planned. The built-ins (``2d``, ``2.5d``, ``3d_fullres``,
``3d_lowres``, ``crop``) register in :mod:`autoseg.planning.planner`; a researcher's file in
``autoseg/planning/`` that calls :func:`register_configuration` is found without other edits
(the registry imports the package's modules on its first lookup; documentation/extending.md).

Everything after planning reads a configuration's fields (``dim``, ``spacing``,
``context_slices``, ``crop``), not its name, so a registered configuration is preprocessed,
trained, predicted and compared by find-best like a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autoseg.registry import Registry

# Planning order of the built-ins: a later configuration may read earlier ones (``crop``
# places its window with a localiser planned before it).
BUILTIN_CONFIGURATIONS = ("2d", "2.5d", "3d_fullres", "3d_lowres", "crop")


@dataclass(frozen=True)
class ConfigurationRule:
    """``plan(ctx, planned)`` plans the configuration; ``dims`` are the data dimensions it
    applies to; ``automatic`` ones are considered without ``--configs`` (the built-ins' own
    rules then decide). A registered configuration is not automatic unless it says so, so a
    new file never changes the plans of users who did not ask for it."""

    plan: Callable[[Any, Mapping[str, Any]], Any]
    dims: tuple[int, ...] = (2, 3)
    automatic: bool = False


CONFIGURATIONS: Registry[ConfigurationRule] = Registry(
    "configuration",
    packages=("autoseg.planning",),
    where="--configs or the keys of configurations in plans.json",
)


def register_configuration(
    name: str, *, dims: tuple[int, ...] = (2, 3), automatic: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register_configuration("2d_coarse", dims=(2, 3))`` on a planning function."""

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        CONFIGURATIONS.register(name)(ConfigurationRule(fn, tuple(dims), automatic))
        return fn

    return add


def configuration_names() -> tuple[str, ...]:
    """Every known configuration in planning order: the built-ins, then registered ones by name."""
    extra = [n for n in CONFIGURATIONS.names() if n not in BUILTIN_CONFIGURATIONS]
    return BUILTIN_CONFIGURATIONS + tuple(extra)


def is_configuration(name: str) -> bool:
    return name in BUILTIN_CONFIGURATIONS or name in CONFIGURATIONS


def candidates(dim: int, builtin: tuple[str, ...]) -> tuple[str, ...]:
    """The configurations considered without ``--configs``: the built-in candidates for
    ``dim`` and the registered ``automatic`` ones that apply to it."""
    extra = [
        n
        for n in configuration_names()
        if n not in BUILTIN_CONFIGURATIONS
        and CONFIGURATIONS.get(n).automatic
        and dim in CONFIGURATIONS.get(n).dims
    ]
    return tuple(builtin) + tuple(extra)


def applicable(dim: int) -> tuple[str, ...]:
    """Every configuration that may be asked for on ``dim``-D data."""
    return tuple(n for n in configuration_names() if dim in CONFIGURATIONS.get(n).dims)
