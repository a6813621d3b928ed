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


def _die_on_two(x: int) -> int:
    if x == 2:
        os._exit(1)  # a reader crashing in C code: the process is gone, no exception
    return x


def test_a_crashed_worker_without_on_crash_breaks_the_map():
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        parallel.map_cases(_die_on_two, [0, 1, 2, 3], num_workers=2, progress=False, desc="d")


def test_on_crash_stands_in_for_the_cases_a_dead_worker_took_down():
    out = parallel.map_cases(
        _die_on_two,
        [0, 1, 2, 3],
        num_workers=2,
        progress=False,
        desc="d",
        on_crash=lambda x, exc: -1,
    )
    assert len(out) == 4 and out[2] == -1  # the crashing case is reported ...
    assert all(v in (x, -1) for x, v in zip([0, 1, 2, 3], out, strict=True))  # ... no other


def test_on_crash_may_stop_the_run_with_one_line():
    def stop(x, exc):
        raise AutosegError("a reader crashed", fix="use --workers 1")

    with pytest.raises(AutosegError, match="a reader crashed"):
        parallel.map_cases(
            _die_on_two, [0, 1, 2, 3], num_workers=2, progress=False, desc="d", on_crash=stop
        )


def test_a_forkserver_context_runs_the_same_map():
    ctx = parallel.forkserver_context(["autoseg.io.parallel"])
    out = parallel.map_cases(
        _square, list(range(5)), num_workers=2, progress=False, desc="sq", context=ctx
    )
    assert out == [x * x for x in range(5)]
