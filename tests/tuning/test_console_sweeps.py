"""A quiet console for every kind of sweep: a tiny sweep of each kind through the CLI, its
stdout and stderr piped (as in a log or ``ray job logs``), prints its trial lines and its
results with no escape codes, no Ray "[repeated Nx across cluster]" folding, no warning a
user cannot act on and no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_runs import table2
from sweep_drivers import imm_ray

from imm_ray.cluster import plain_worker_lines
from tuning.kinds import KIND_MODULES

#: An ANSI escape sequence (colour codes among them), or a bare carriage return.
ESCAPE = re.compile(r"\x1b|\r")

RL_SWEEP = """\
name: tiny
epochs: [3]
seeds: 1
settings:
  - label: No IMM
    imm: false
  - label: IMM
"""


def _sweep_args(kind: str, tmp_path: Path, request) -> tuple[list[str], str]:
    """A tiny sweep of ``kind``: its ``imm-ray sweep`` arguments, and a fragment of a line
    that shows in the console as its trials run (a worker's own line where the trainable
    prints one)."""
    if kind == "rl":
        sweep = tmp_path / "tiny.yaml"
        sweep.write_text(RL_SWEEP)
        return [str(sweep)], "] done: IMM"
    if kind == "logistic":
        return ["table4", "--seeds", "1"], "] done: "
    if kind == "lm":
        from imm_ray.supervised.lm.synthetic import MarkovSource

        data = tmp_path / "data"
        MarkovSource.random(6, seed=5).write_corpus(data, (1500, 300, 300), seed=5)
        args = ["table1", "--seeds", "1", "--data", str(data), "--preset", "tiny"]
        return [*args, "--epochs", "1", "--max-batches", "12"], " seed 0 epoch 1/1: valid ppl "
    if kind == "bert":
        return list(table2(*request.getfixturevalue("bert_data"))), "+MLM+IMM seed 0: dev mcc "
    raise AssertionError(f"no tiny sweep for kind {kind!r}: add one here")


@pytest.mark.parametrize("kind", list(KIND_MODULES))
def test_a_tiny_sweep_of_every_kind_keeps_a_plain_quiet_console(kind, tmp_path, request):
    args, trial_line = _sweep_args(kind, tmp_path, request)
    # Ray's own variables as a user's shell would leave them: unset.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_COLOR_PREFIX", "RAY_DEDUP_LOGS")}
    result = imm_ray("sweep", *args, "--storage", str(tmp_path / "results"), env=env)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    assert trial_line in console, console[-3000:]
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
