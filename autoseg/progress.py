"""Progress bars that suit where they are shown: tqdm on a terminal, plain lines elsewhere.

On a terminal a bar redraws itself in place with carriage returns; written to a file (CI,
``nohup``, ``> log 2>&1``) every redraw stays in the file, so a log of a few minutes' work grows
to megabytes of half-lines. :func:`progress_bar` therefore returns a real tqdm bar when its
stream is a terminal and otherwise a :class:`LineProgress`, which prints one line when the bar
is closed (``verify: 20/20 case, 3.2s``) and, for a bar that runs longer than
:data:`INTERVAL_S`, one line per interval in between. A bar made with ``leave=False`` (a
transient bar, such as a training epoch's, whose caller reports the outcome itself) prints no
closing line, nor does a bar left by an exception (the error message follows instead).
Every stage makes its bars here, so this module sits in the lowest layer (it imports tqdm
only).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

# A line every 5 minutes for a bar that takes longer: it shows a long fingerprint or
# preprocessing run is alive (`tail -f` on the log) while adding at most 12 lines an hour.
INTERVAL_S = 300.0


def is_terminal(stream: IO[str] | None) -> bool:
    """True when ``stream`` is an interactive terminal (a closed or odd stream is not)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def format_seconds(seconds: float) -> str:
    """``4.2s``, ``3m05s``, ``1h02m``: short enough for a log line, exact enough to compare."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LineProgress:
    """The part of tqdm's interface that autoseg uses, printing plain lines instead of a bar."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None = None,
        desc: str | None = None,
        unit: str = "it",
        leave: bool = True,
        file: IO[str] | None = None,
        interval_s: float = INTERVAL_S,
        clock: Any = time.monotonic,
    ):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc or ""
        self.unit = unit
        self.leave = leave
        self.file = file
        self.interval_s = interval_s
        self.n = 0
        self.postfix = ""
        self._clock = clock
        self._start = clock()
        self._last_line = self._start
        self._closed = False

    # -- what callers use
    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress bar has no iterable")
        try:
            for item in self.iterable:
                yield item
                self.update()
        except GeneratorExit:  # the loop was left early (an error, a break): no closing line
            self._closed = True
            raise
        self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:  # the work failed: the error message says so, not a count
            self._closed = True
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self._clock()
        if now - self._last_line >= self.interval_s and not self._finished():
            self._print()
            self._last_line = now

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "") -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Closed from a `finally` while an exception propagates: the error message says what
        # happened; a count would only stand between it and the reader.
        if self.leave and sys.exc_info()[0] is None:
            self._print()

    # -- internals
    def _finished(self) -> bool:
        return self.total is not None and self.n >= self.total

    def line(self) -> str:
        """``desc: n/total unit, elapsed (postfix)``."""
        count = _number(self.n) + (f"/{_number(self.total)}" if self.total is not None else "")
        text = f"{self.desc}: " if self.desc else ""
        text += f"{count} {self.unit}, {format_seconds(self._clock() - self._start)}"
        return text + (f" ({self.postfix})" if self.postfix else "")

    def _print(self) -> None:
        stream = self.file if self.file is not None else sys.stderr
        stream.write(self.line() + "\n")
        stream.flush()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    file: IO[str] | None = None,
    **tqdm_kwargs: Any,
) -> Any:
    """A tqdm bar on a terminal; a :class:`LineProgress` on any other stream (default stderr).

    Use it as tqdm: iterate over it, or ``update()`` it and ``close()`` it (or use ``with``).
    ``disable=True`` gives tqdm's silent bar. Other tqdm keywords reach tqdm on a terminal.
    """
    stream = file if file is not None else sys.stderr
    if disable or is_terminal(stream):
        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            disable=disable,
            leave=leave,
            file=stream,
            **tqdm_kwargs,
        )
    return LineProgress(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream)
