"""The one exception type that the CLI turns into a clean message instead of a traceback."""

from __future__ import annotations


class AutosegError(Exception):
    """A problem the user can fix: the message names the file, what is wrong and the fix."""

    def __init__(self, message: str, *, path: object | None = None, fix: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.fix = fix
        parts = []
        if self.path:
            parts.append(f"{self.path}:")
        parts.append(message)
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__(" ".join(parts))
