"""The one progress display of every long loop: an epoch's batches, a BERT run's steps,
``train rl``'s trials.

On a terminal (its stream's ``isatty()``) a loop is a tqdm bar that updates in place, with
the lines that stay (an epoch's summary) written above it. Anywhere else, a log file, a
pipe, ``ray job logs``, a Ray worker whose output the driver forwards, the same facts come
as plain newline-terminated lines, at most one per ``every`` seconds, so that a log keeps
no carriage returns or escape codes and does not grow a line per batch.

Both forms show the same text, computed here on one clock::

    epoch 1/2 batch 20/40, train ppl 123.4, 5 s, ETA 10 s
    step 10/100, MLM loss 3.000, 5 s, ETA 90 s
    3/8 trials, 40 s, ETA 60 s

The ETA is the loop's mean rate since it started: the elapsed time per unit done in this
run (units before ``initial``, a resumed run's, are not counted) times the units left, or,
given ``work=(done, total)``, the elapsed time per unit of that work times the work left
(``train rl``'s trials differ in cost).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

#: Seconds between two plain lines of one loop, by default.
PLAIN_EVERY = 10.0
#: Seconds between two redraws of a terminal's bar.
REDRAW = 0.1


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def facts(
    desc: str,
    n: int,
    total: int,
    unit: str = "",
    text: str = "",
    elapsed: float = 0.0,
    eta: float | None = None,
) -> str:
    """One progress line's text: ``{desc} {n}/{total} {unit}, {text}, {elapsed} s, ETA {eta} s``
    (the parts that are empty or unknown left out)."""
    line = f"{desc} {n}/{total}" if desc else f"{n}/{total}"
    if unit:
        line += f" {unit}"
    if text:
        line += f", {text}"
    line += f", {elapsed:.0f} s"
    if eta is not None:
        line += f", ETA {eta:.0f} s"
    return line


def eta_seconds(
    elapsed: float,
    n: int,
    total: int,
    initial: int = 0,
    work: tuple[float, float] | None = None,
) -> float | None:
    """Seconds left at the mean rate so far; None before anything is done, or when done."""
    if work is not None:
        done, whole = work
        if done <= 0 or done >= whole:
            return None
        return elapsed * (whole - done) / done
    if n - initial <= 0 or n >= total:
        return None
    return elapsed / (n - initial) * (total - n)


class Progress:
    """The progress display of one stream (default: ``sys.stderr`` as it is when a loop
    starts), for loop after loop.

    ``start`` begins a loop of ``total`` units, ``update`` moves it to ``n`` units done
    (with a short ``text`` of metrics), ``write`` prints a line that stays, and ``close``
    ends the loop (its bar disappears; the caller's summary line stands in for it).

    Plain lines (where the stream is not a terminal) carry ``prefix`` (a sweep trial's
    name) and come at most one per ``every`` seconds, the first ``wait`` seconds after the
    loop starts. ``terminal`` overrides the stream's own ``isatty()``; ``clock`` is the
    clock of the elapsed times and ETAs.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        prefix: str = "",
        every: float = PLAIN_EVERY,
        wait: float = 0.0,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream, self.prefix = stream, prefix
        self.every, self.wait = every, wait
        self._terminal, self.clock = terminal, clock
        self._bar = None
        self._loop: tuple[str, int, str, int] | None = None
        self._started = self._last = 0.0
        self._printed = False
        self._latest = self._shown = ""

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def terminal(self) -> bool:
        return is_terminal(self.stream) if self._terminal is None else self._terminal

    def start(self, total: int, desc: str = "", unit: str = "", initial: int = 0) -> None:
        """Begins a loop of ``total`` units (``initial`` of them done before this run)."""
        self.close()
        self._loop = (desc, int(total), unit, int(initial))
        self._started = self._last = self.clock()
        self._printed = False
        self._latest = self._shown = ""
        if self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                bar_format="{percentage:3.0f}%|{bar:20}| {desc}",
                desc=self.line(initial),
            )

    def line(self, n: int, text: str = "", work: tuple[float, float] | None = None) -> str:
        """The loop's text at ``n`` units done, now."""
        if self._loop is None:
            raise RuntimeError("start a loop before its progress")
        desc, total, unit, initial = self._loop
        elapsed = self.clock() - self._started
        eta = eta_seconds(elapsed, n, total, initial, work)
        return facts(desc, n, total, unit, text, elapsed, eta)

    def update(self, n: int, text: str = "", work: tuple[float, float] | None = None) -> None:
        """The loop is at ``n`` units done; ``text``: its metrics now; ``work``: (done,
        total) of a cost the ETA follows instead of the units."""
        line = self.line(n, text, work)
        self._latest = line
        now = self.clock()
        if self._bar is not None:
            self._bar.set_description_str(line, refresh=False)
            self._bar.n = n
            if now - self._last >= REDRAW or n >= self._bar.total:
                self._last = now
                self._bar.refresh()
            return
        if now - self._started < self.wait:
            return
        if self._printed and now - self._last < self.every:
            return
        self._printed, self._last = True, now
        self._shown = line
        self._print(self.prefix + line)

    def write(self, line: str) -> None:
        """A line that stays: above the bar on a terminal, a plain line elsewhere."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            self._print(self.prefix + line)

    def finish(self) -> None:
        """Ends the loop and leaves its latest line (on a terminal, in place of the bar;
        elsewhere, unless it was the last plain line)."""
        line, shown = self._latest, self._shown
        self.close()
        if line and line != shown:
            self._print(self.prefix + line)

    def close(self) -> None:
        """Ends the loop; its bar, if any, is cleared."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._loop = None

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
