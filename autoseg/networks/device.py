"""Which torch device a command runs on: ``auto`` is cuda when a GPU is visible, else cpu.

In the network layer, below training and inference, so that both choose the device by the
same rule without importing each other."""

from __future__ import annotations

import torch

from autoseg.errors import AutosegError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if visible, else cpu; ``cuda`` without a GPU is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AutosegError("--device cuda asked for, but no CUDA GPU is visible", fix="use cpu")
    return torch.device(name)
