"""autoseg.io.parallel: the one case-parallel map every stage uses."""

from __future__ import annotations

import os

import pytest

from autoseg.errors import AutosegError
from autoseg.io import parallel


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise AutosegError("case 3 is broken", fix="fix it")
    return x


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_results_keep_the_input_order(workers):
    items = list(range(7))
    out = parallel.map_cases(_square, items, num_workers=workers, progress=False, desc="sq")
    assert out == [x * x for x in items]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_first_error_is_raised_with_its_message(workers):
    with pytest.raises(AutosegError, match="case 3 is broken"):
        parallel.map_cases(
            _fail_on_three, list(range(6)), num_workers=workers, progress=False, desc="check"
        )


def test_default_workers_follow_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert parallel.default_workers() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert parallel.default_workers() == parallel.MAX_DEFAULT_WORKERS
