"""How failures reach the user: one line, never a traceback.

- :class:`AutosegError` is a problem the user can fix; the CLI prints its message (file, what
  is wrong, the fix) on one line and exits 2.
- Any other exception is a bug (or a broken machine). :func:`failure_context` marks the step
  and the case it came from; the CLI writes the full traceback to a log file
  (:func:`write_failure_log`, under ``$AUTOSEG_ROOT/logs/``) and prints one line naming the
  command, the step, the case and that file (:func:`failure_line`), then exits 1.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from autoseg.root import data_root


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


# ---------------------------------------------------------------------------------------------
# Where an unexpected exception came from

_STEP = "autoseg_step"
_CASE = "autoseg_case"


def note_failure(exc: BaseException, step: str | None, case: str | None = None) -> None:
    """Record on ``exc`` the step and case it came from; what an inner context recorded wins
    (it is the more precise), a case is added where only the step was known."""
    try:
        if step and getattr(exc, _STEP, None) is None:
            setattr(exc, _STEP, step)
        if case is not None and getattr(exc, _CASE, None) is None:
            setattr(exc, _CASE, str(case))
    except (AttributeError, TypeError):  # an exception type that refuses attributes
        pass


def failure_where(exc: BaseException) -> tuple[str | None, str | None]:
    """(step, case) recorded by :func:`failure_context`, each None when unknown."""
    return getattr(exc, _STEP, None), getattr(exc, _CASE, None)


@contextmanager
def failure_context(step: str, case: str | None = None) -> Iterator[None]:
    """Mark an unexpected exception raised inside with the step and case, then let it go on
    unchanged (same type, same traceback). AutosegError (which names its file) and
    KeyboardInterrupt pass untouched."""
    try:
        yield
    except AutosegError:
        raise
    except Exception as exc:
        note_failure(exc, step, case)
        raise


def case_of(item: object) -> str | None:
    """The case a per-case job is about: a case id string, or the job's ``case`` /
    ``case_id`` attribute (or its ``case.case_id``); None when it does not say."""
    if isinstance(item, str):
        return item
    for attr in ("case_id", "case"):
        value = getattr(item, attr, None)
        if isinstance(value, str):
            return value
        if value is not None and isinstance(getattr(value, "case_id", None), str):
            return value.case_id
    return None


# ---------------------------------------------------------------------------------------------
# The log file and the one line

LOG_FOLDER = "logs"  # under the data root; a temp folder when that is not writable
MAX_MESSAGE = 240  # characters of the exception's own message kept on the one line


def failure_log_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Where a traceback log goes, in order of preference: ``$AUTOSEG_ROOT/logs``, then
    ``<temp>/autoseg-logs``."""
    return [data_root(root) / LOG_FOLDER, Path(tempfile.gettempdir()) / "autoseg-logs"]


def write_failure_log(
    exc: BaseException,
    command: str,
    argv: Sequence[str] | None = None,
    root: str | os.PathLike | None = None,
) -> Path | None:
    """Write the full traceback (with the command line and versions) to a new, timestamped
    file ``<YYYYmmdd-HHMMSS>-<command>-<pid>.log``; its absolute path, or None when no folder
    was writable."""
    from autoseg import __version__

    step, case = failure_where(exc)
    args = list(sys.argv[1:] if argv is None else argv)
    header = [
        f"failed: {command}",
        f"arguments: {shlex.join(args)}",
        f"time: {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        f"step: {step or 'unknown'}",
        f"case: {case or 'unknown'}",
        f"autoseg {__version__}, Python {platform.python_version()}, {platform.platform()}",
        f"working directory: {os.getcwd()}",
        "",
    ]
    text = "\n".join(header) + "".join(traceback.format_exception(exc))
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in command).strip("-")
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug or 'autoseg'}-{os.getpid()}.log"
    for folder in failure_log_dirs(root):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path.resolve()
        except OSError:
            continue
    return None


def _innermost_autoseg_frame(exc: BaseException) -> str | None:
    """``autoseg.evaluation.metrics.hd95``: the deepest autoseg function in the traceback."""
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if module == "autoseg" or module.startswith("autoseg."):
            found = f"{module}.{frame.f_code.co_name}"
    return found


def failure_line(command: str, exc: BaseException, log: Path | None) -> str:
    """``autoseg evaluate: failed in evaluate on case c07: IndexError: ...; full traceback:
    /data/logs/...log`` on one line."""
    step, case = failure_where(exc)
    where = step or _innermost_autoseg_frame(exc)
    text = f"{command}: failed"
    if where:
        text += f" in {where}"
    if case:
        text += f" on case {case}"
    message = " ".join(str(exc).split())
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    text += f": {type(exc).__name__}" + (f": {message}" if message else "")
    if log is not None:
        text += f"; full traceback: {log}"
    else:
        text += "; the traceback could not be saved (no writable log folder)"
    return text


def report_failure(
    command: str,
    exc: BaseException,
    argv: Sequence[str] | None = None,
    root: str | os.PathLike | None = None,
) -> tuple[str, Path | None]:
    """Write the log (under ``root``'s ``logs/``, default ``$AUTOSEG_ROOT``) and return the one
    line and the log's path for an unexpected error."""
    try:
        log = write_failure_log(exc, command, argv, root)
    except Exception:  # the report of a failure must not fail itself
        log = None
    return failure_line(command, exc, log), log
