"""Checkpoints that are safe to load from someone else.

A checkpoint holds only tensors, numbers, strings, lists and dicts, and is always read with
``torch.load(weights_only=True)``: PyTorch then refuses any pickled object that could run code
on load (a crafted ``__reduce__``), and we turn that refusal into a clear error.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from autoseg.errors import AutosegError
from autoseg.io.atomic import atomic_path

FORMAT = "autoseg-checkpoint-1"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: a crash mid-write keeps the previous checkpoint intact."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without executing code from it; AutosegError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise AutosegError("checkpoint not found", path=path, fix="train this fold first")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive
        raise AutosegError(
            "cannot read checkpoint: not a PyTorch zip archive (damaged, or another format)",
            path=path,
            fix="retrain this fold or copy the file again",
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AutosegError(
            "refused to load: the file contains Python objects that could run code, not only "
            "weights",
            path=path,
            fix="load only checkpoints written by autoseg; ask the sender for a clean export",
        ) from exc
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise AutosegError(
            f"cannot read checkpoint ({type(exc).__name__}: {str(exc)[:120]})",
            path=path,
            fix="the file is damaged; retrain or copy it again",
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AutosegError(
            "not an autoseg checkpoint", path=path, fix="give a checkpoint_*.pt from autoseg"
        )
    return state
