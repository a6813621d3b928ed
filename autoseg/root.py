"""The one data root: the ``root`` argument, else ``$AUTOSEG_ROOT``, else ``./autoseg_data``.

Below everything (it imports nothing of autoseg), so that both the error reporting (where a
traceback log goes) and :mod:`autoseg.paths` (the folders under the root) read the same rule.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "AUTOSEG_ROOT"
DEFAULT_ROOT = "autoseg_data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument if given, else ``$AUTOSEG_ROOT``, else ``./autoseg_data``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(ROOT_ENV, DEFAULT_ROOT))
