"""Progress for logs: off a terminal a live bar prints nothing (or only at the end), so long work writes
a plain line instead, on the first update, then at least every `every_s` seconds, and at the end.

    step 120/1000 (12%) · loss 1.2345 · 48.2 samples/s · ETA 0:18:02

Callers keep their rich bar for terminals and use `ProgressLines` when `stream.isatty()` is false.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

LOG_EVERY_S = 30.0  # well inside "a line per minute", without flooding a CI log


def wants_lines(stream: TextIO | None = None) -> bool:
    """True where a live bar would not be seen: the stream is a file or a pipe."""
    stream = stream or sys.stderr
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return True


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLines:
    """`update(done, **fields)` prints `label done/total (pct) · field value … · rate · ETA` when due."""

    def __init__(self, label: str, total: int | None = None, *, unit: str = "items", done: int = 0,
                 every_s: float = LOG_EVERY_S, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self._stream = stream
        self._clock = clock
        self._start_done = done
        self._started = clock()
        self._last_line: float | None = None

    def update(self, done: int, **fields: float | str) -> None:
        now = self._clock()
        finished = self.total is not None and done >= self.total
        if self._last_line is not None and now - self._last_line < self.every_s and not finished:
            return
        self._last_line = now
        print(self.line(done, now, fields), file=self._stream or sys.stderr, flush=True)

    def line(self, done: int, now: float, fields: dict[str, float | str]) -> str:
        elapsed = now - self._started
        rate = (done - self._start_done) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label} {done}" if self.total is None
                 else f"{self.label} {done}/{self.total} ({100 * done / max(self.total, 1):.0f}%)"]
        parts += [f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                  for name, value in fields.items()]
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total is not None and rate > 0:
            parts.append(f"ETA {format_duration((self.total - done) / rate)}")
        parts.append(f"elapsed {format_duration(elapsed)}")
        return " · ".join(parts)
