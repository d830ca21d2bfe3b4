"""The one progress display: a tqdm bar on a terminal, plain throttled lines elsewhere,
the same facts (done/total, elapsed, ETA, metrics) in both, on a controllable clock."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import termios

import pytest

from imm_ray.progress import Progress, eta_seconds, facts, is_terminal

ESCAPE = re.compile(r"\x1b\[|\r")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_eta_is_the_mean_rate_since_the_loop_started_times_what_is_left():
    assert eta_seconds(elapsed=10.0, n=20, total=100) == pytest.approx(40.0)
    # A resumed run counts only its own units: 10 of them in 10 s, 70 left.
    assert eta_seconds(elapsed=10.0, n=30, total=100, initial=20) == pytest.approx(70.0)
    # Weighted by work: a quarter of the work in 30 s leaves 90 s, whatever the count.
    assert eta_seconds(elapsed=30.0, n=3, total=4, work=(2.0, 8.0)) == pytest.approx(90.0)
    assert eta_seconds(elapsed=5.0, n=0, total=10) is None  # nothing done yet
    assert eta_seconds(elapsed=5.0, n=10, total=10) is None  # done
    assert eta_seconds(elapsed=5.0, n=20, total=30, initial=20) is None


def test_a_line_carries_its_count_metrics_elapsed_time_and_eta():
    assert facts("epoch 1/2 batch", 20, 40, text="train ppl 123.4", elapsed=5.2, eta=5.2) == (
        "epoch 1/2 batch 20/40, train ppl 123.4, 5 s, ETA 5 s"
    )
    assert facts("", 4, 4, unit="trials", elapsed=61.0) == "4/4 trials, 61 s"


def test_plain_lines_where_the_stream_is_not_a_terminal_with_the_eta_of_the_clock():
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, every=0.0, clock=clock)
    progress.start(40, "epoch 1/2 batch")
    clock.now += 10
    progress.update(20, "train ppl 123.4")
    clock.now += 20
    progress.update(40, "train ppl 99.0")
    progress.close()
    progress.write("epoch 1/2: valid ppl 98.0")
    assert out.getvalue().splitlines() == [
        "epoch 1/2 batch 20/40, train ppl 123.4, 10 s, ETA 10 s",
        "epoch 1/2 batch 40/40, train ppl 99.0, 30 s",
        "epoch 1/2: valid ppl 98.0",
    ]


def test_plain_lines_come_at_most_one_per_interval_and_the_first_after_the_wait():
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, prefix="IMM seed 0: ", every=100.0, wait=50.0, clock=clock)
    progress.start(10, "step")
    for step in range(1, 11):
        clock.now += 20  # a step every 20 s: printable at 60 s, then not before 160 s
        progress.update(step)
    assert out.getvalue().splitlines() == [
        "IMM seed 0: step 3/10, 60 s, ETA 140 s",
        "IMM seed 0: step 8/10, 160 s, ETA 40 s",
    ]
    # A new loop starts its own wait and interval.
    progress.start(10, "step")
    clock.now += 10
    progress.update(1)
    assert len(out.getvalue().splitlines()) == 2


def test_finish_leaves_the_latest_line_once():
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, every=100.0, clock=clock)
    progress.start(3, unit="trials")
    for n in (1, 2, 3):
        clock.now += 10
        progress.update(n, work=(n, 3))
    progress.finish()
    assert out.getvalue().splitlines() == ["1/3 trials, 10 s, ETA 20 s", "3/3 trials, 30 s"]
    out.truncate(0), out.seek(0)
    progress.start(1, unit="trials")
    progress.update(1)  # printed at once
    progress.finish()
    assert out.getvalue().splitlines() == ["1/1 trials, 0 s"]


def test_a_terminal_gets_a_bar_that_updates_in_place_with_the_same_facts():
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    terminal = os.fdopen(secondary, "w", buffering=1)
    try:
        assert is_terminal(terminal) and not is_terminal(io.StringIO())
        clock = Clock()
        progress = Progress(terminal, every=1e9, clock=clock)
        progress.start(40, "epoch 1/2 batch")
        clock.now += 10
        progress.update(20, "train ppl 123.4")
        progress.write("a line that stays")
        clock.now += 10
        progress.update(40, "train ppl 99.0")
        progress.close()
        terminal.flush()
        shown = _read_all(main)
    finally:
        terminal.close()
        os.close(main)
    # Redrawn in place (carriage returns, no newline per update) despite `every`, which
    # throttles plain lines only; the lasting line on a line of its own.
    assert "\r" in shown
    assert "epoch 1/2 batch 20/40, train ppl 123.4, 10 s, ETA 10 s" in shown
    assert "epoch 1/2 batch 40/40, train ppl 99.0, 20 s" in shown
    assert re.search(r"(^|\n|\r)a line that stays\r?\n", shown), repr(shown)
    assert "|" in shown and "%" in shown  # tqdm's bar


def test_plain_lines_hold_no_carriage_return_or_escape_code():
    out = io.StringIO()
    progress = Progress(out, every=0.0)
    progress.start(2, "step")
    progress.update(1, "loss 1.0")
    progress.write("done")
    progress.finish()
    assert out.getvalue() and not ESCAPE.search(out.getvalue())


def test_the_stream_is_looked_up_when_a_loop_starts(capsys):
    progress = Progress(every=0.0)  # sys.stderr as it is then (here: pytest's capture)
    progress.start(2, "step")
    progress.update(1)
    assert capsys.readouterr().err == "step 1/2, 0 s, ETA 0 s\n"


def _read_all(fd: int) -> str:
    import select

    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")
