"""Progress for runs without a terminal (a log file, ``--json``, a sweep trial): a line on stderr at most
every few seconds, with how far the run is and about how long is left (from the mean time per unit of
work so far). With a terminal the loops show a tqdm bar instead."""

from __future__ import annotations

import sys
import time


class ProgressLines:
    """Throttled progress lines: :meth:`update` with the work done so far prints ``<text> (N s so far,
    about M s left)`` when ``every`` seconds have passed since the last line.

    :param total: the units of work of the whole run (steps, iterations).
    :param every: seconds between lines.
    """

    def __init__(self, total: int, every: float) -> None:
        self.total, self.every = total, every
        self.t0 = self.last = time.perf_counter()

    def update(self, done: int, text) -> None:
        """Print ``text`` (a string, or a function that makes it, called only when a line is due) with the time
        so far and the time left, if ``every`` seconds have passed since the last line."""
        now = time.perf_counter()
        if now - self.last < self.every or done <= 0:
            return
        self.last = now
        elapsed = now - self.t0
        text = text() if callable(text) else text
        print(f"{text} ({elapsed:.0f} s so far, about {elapsed / done * (self.total - done):.0f} s left)",
              file=sys.stderr, flush=True)


__all__ = ["ProgressLines"]
