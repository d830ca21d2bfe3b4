"""A quiet console for every kind of sweep: a tiny sweep of each kind through the CLI, its
stdout and stderr piped (as in a log or ``ray job logs``), prints its trial lines and its
results with no escape codes, no Ray "[repeated Nx across cluster]" folding, no warning a
user cannot act on and no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from imm_ray.cluster import plain_worker_lines
from tuning.kinds import KIND_MODULES

#: An ANSI escape sequence (colour codes among them), or a bare carriage return.
ESCAPE = re.compile(r"\x1b|\r")


@pytest.mark.parametrize("kind", list(KIND_MODULES))
def test_a_tiny_sweep_of_every_kind_keeps_a_plain_quiet_console(kind, tiny_sweeps):
    # The run that the kind's end-to-end test checks the results of (tiny_sweeps.py).
    run = tiny_sweeps(kind)
    result = run.result
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    assert run.trial_line in console, console[-3000:]
    assert "table: " in result.stdout
    assert not ESCAPE.search(console), repr(ESCAPE.search(console).group())
    assert "repeated" not in console, console
    assert not [line for line in console.splitlines() if "warning" in line.lower()], console
    assert "Traceback" not in console, console
    assert "mtime may not be reliable" not in console, console  # transformers, in BERT trials


def test_worker_lines_are_asked_for_one_by_one_and_without_colour_off_a_terminal(monkeypatch):
    for name in ("RAY_COLOR_PREFIX", "RAY_DEDUP_LOGS"):
        monkeypatch.delenv(name, raising=False)
    plain_worker_lines()  # pytest captures stdout and stderr: not terminals
    assert os.environ["RAY_DEDUP_LOGS"] == "0"
    assert os.environ["RAY_COLOR_PREFIX"] == "0"
    # A user's own settings win.
    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")
    monkeypatch.setenv("RAY_DEDUP_LOGS", "1")
    plain_worker_lines()
    assert os.environ["RAY_COLOR_PREFIX"] == "1" and os.environ["RAY_DEDUP_LOGS"] == "1"


def test_worker_lines_keep_their_colour_on_a_terminal(tmp_path):
    import pty

    main, secondary = pty.openpty()
    code = (
        "import os, sys\n"
        "from imm_ray.cluster import plain_worker_lines\n"
        "plain_worker_lines()\n"
        "print(os.environ.get('RAY_COLOR_PREFIX'), os.environ.get('RAY_DEDUP_LOGS'),"
        " file=open(sys.argv[1], 'w'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_COLOR_PREFIX", "RAY_DEDUP_LOGS")}
    try:
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "seen")],
            stdout=secondary,
            stderr=secondary,
            env=env,
            check=True,
            timeout=60,
        )
    finally:
        os.close(secondary)
        os.close(main)
    assert (tmp_path / "seen").read_text().split() == ["None", "0"]
