"""Case-parallel work: one map over cases in worker processes, for every stage that reads
cases (fingerprint, verify, convert, preprocess, metrics) — before, two copies and three
bespoke pools, each with its own worker count, start method and crash handling."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from autoseg.errors import case_of, failure_context, note_failure
from autoseg.progress import progress_bar

T = TypeVar("T")
R = TypeVar("R")

# Per-case work is reading a file plus milliseconds to a second of numpy/ITK: beyond ~4
# processes they mostly compete for the disk and for memory (each holds one case's arrays; a
# 320x320x60 case with float64 temporaries ~0.5 GB while preprocessing).
MAX_DEFAULT_WORKERS = 4


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: ``taskset`` counts), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """min(4, usable CPUs): the worker processes of a case-parallel step by default."""
    return min(MAX_DEFAULT_WORKERS, usable_cpus())


def fork_context() -> Any:
    """``fork`` on Linux, ``spawn`` elsewhere.

    Fork starts workers in milliseconds with everything already imported: on a 20-case
    fingerprint (2 cores) a forked pool took 0.13 s in all where ``forkserver`` took 0.2-0.3 s,
    about what the whole job costs serially. It also works from a plain user script without an
    ``if __name__ == "__main__":`` guard, which spawn/forkserver re-import and crash on. Meant
    for workers that run numpy/ITK/cc3d only, never torch or OpenMP (ITK re-creates its thread
    pool after fork)."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def forkserver_context(preload: Sequence[str] = ()) -> Any:
    """``forkserver`` on Linux (its server imports ``preload`` once), ``spawn`` elsewhere: for
    workers of a parent whose libraries keep threads a fork could copy mid-lock (convert reads
    with SimpleITK's multithreaded readers before its pool starts)."""
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        if preload:
            ctx.set_forkserver_preload(list(preload))
        return ctx
    return multiprocessing.get_context("spawn")


def map_cases(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    num_workers: int | None,
    progress: bool,
    desc: str,
    context: Any = None,
    on_crash: Callable[[T, BaseException], R] | None = None,
) -> list[R]:
    """``[fn(x) for x in items]``, results in input order, in worker processes when there are
    several items and workers (``None``: :func:`default_workers`), with a progress bar.

    Workers are forked (:func:`fork_context`) unless ``context`` says otherwise
    (:func:`forkserver_context`). The first error cancels what has not started and is
    re-raised (an AutosegError keeps its message; another exception is marked with ``desc``
    and the item's case for the command line's one error line). A worker process that dies
    (a reader crashing on a corrupt file) breaks the pool: with ``on_crash``, every item it
    took down gets ``on_crash(item, error)`` instead (which may raise a one-line error)."""
    workers = default_workers() if num_workers is None else int(num_workers)
    results: list[Any] = [None] * len(items)
    bar = progress_bar(total=len(items), desc=desc, unit="case", disable=not progress)
    try:
        if workers <= 1 or len(items) <= 1:
            for i, item in enumerate(items):
                with failure_context(desc, case_of(item)):
                    results[i] = fn(item)
                bar.update()
            return results
        ctx = fork_context() if context is None else context
        with ProcessPoolExecutor(min(workers, len(items)), mp_context=ctx) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    exc = f.exception()
                    if isinstance(exc, BrokenProcessPool) and on_crash is not None:
                        results[futures[f]] = on_crash(items[futures[f]], exc)
                        bar.update()
                        continue
                    if exc is not None:
                        for other in pending:
                            other.cancel()
                        note_failure(exc, desc, case_of(items[futures[f]]))
                        raise exc
                    results[futures[f]] = f.result()
                    bar.update()
        return results
    finally:
        bar.close()
