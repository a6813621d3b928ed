"""Shared test helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread while the block runs. The test networks are tiny, and on a shared
    2-core machine two spin-waiting OpenMP threads ran 5-50x slower whenever another process
    held a core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    with one_torch_thread():
        yield
