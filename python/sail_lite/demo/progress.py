"""A live progress bar using only the standard library.

On a terminal it redraws one line in place (``\\r``), at most every ``redraw_seconds``; when the
stream is not a TTY (CI logs, pipes) it prints a plain line every ``line_seconds`` instead, so
logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class ProgressBar:
    def __init__(
        self,
        total: int,
        *,
        unit: str = "rollouts",
        stream: TextIO | None = None,
        width: int = 30,
        redraw_seconds: float = 0.1,
        line_seconds: float = 2.0,
        tty: bool | None = None,
    ) -> None:
        self.total = max(total, 1)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stdout
        self.width = width
        self.tty = _is_tty(self.stream) if tty is None else tty
        self.min_interval = redraw_seconds if self.tty else line_seconds
        self._last_draw = float("-inf")
        self._last_line = ""
        self._finished = False

    def line(self, done: int, elapsed: float, detail: str = "") -> str:
        """The text of the bar, e.g. ``[#######.......]  24/64 rollouts   3.1 s  75 samples``."""
        done = min(done, self.total)
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        digits = len(str(self.total))
        text = f"[{bar}] {done:>{digits}}/{self.total} {self.unit}  {elapsed:5.1f} s"
        return f"{text}  {detail}" if detail else text

    def update(self, done: int, elapsed: float, detail: str = "", *, force: bool = False) -> None:
        if self._finished:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        text = self.line(done, elapsed, detail)
        if self.tty:
            # Pad over the previous, possibly longer, line.
            pad = max(0, len(self._last_line) - len(text))
            self.stream.write("\r" + text + " " * pad)
        else:
            self.stream.write(text + "\n")
        self._last_line = text
        self.stream.flush()

    def finish(self, done: int, elapsed: float, detail: str = "") -> None:
        """Draw the final state and end the line."""
        if self._finished:
            return
        if not self.tty and self._last_line == self.line(done, elapsed, detail):
            self._finished = True
            return
        self.update(done, elapsed, detail, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        self._finished = True

    def abandon(self) -> None:
        """Stop drawing without a final state (the run failed): end a half-drawn line so an
        error message starts on its own."""
        if self.tty and self._last_line and not self._finished:
            self.stream.write("\n")
            self.stream.flush()
        self._finished = True
