"""``imm-ray sweep`` drivers that tests kill mid-sweep, and what Tune recorded as finished
before the kill (``test_sweep.py``, ``test_storage.py``, ``test_lost_nodes.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuning.storage import Location


def imm_ray(*args: str, timeout: float = 300, **run: Any) -> subprocess.CompletedProcess:
    """``imm-ray ARGS`` to its end, its output captured as text; ``run`` as for
    :func:`subprocess.run`."""
    return subprocess.run(
        [sys.executable, "-m", "imm_ray.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **run,
    )


def start_sweep(*args: str, output: bool = False, **popen: Any) -> subprocess.Popen:
    """``imm-ray sweep ARGS`` in the background, in a process group of its own (so that a
    test can kill it whole); its output (stdout and stderr) as text in its ``stdout`` where
    ``output``, else dropped; ``popen`` as for :class:`subprocess.Popen`."""
    streams = (
        {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        if output
        else {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    )
    return subprocess.Popen(
        [sys.executable, "-m", "imm_ray.cli", "sweep", *args],
        start_new_session=True,
        **streams,
        **popen,
    )


def kill_once_two_finished(driver: subprocess.Popen, folder: Path | Location, timeout: float):
    """Waits until Tune records two trials of ``folder`` finished (:func:`recorded_finished`)
    or the sweep ends, within ``timeout`` seconds; then SIGKILLs the sweep's process group."""
    deadline = time.monotonic() + timeout
    while len(recorded_finished(folder)) < 2 and driver.poll() is None:
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()


def polls_while_running(driver: subprocess.Popen, timeout: float, what: str) -> Iterator[None]:
    """Yields every 0.1 s while the sweep ``driver`` runs; fails once it has ended, or once
    ``timeout`` seconds have passed (``what`` says what did not happen in time)."""
    deadline = time.monotonic() + timeout
    while True:
        assert driver.poll() is None, "the sweep ended before the kill"
        assert time.monotonic() < deadline, what
        yield
        time.sleep(0.1)


def recorded_finished(folder: Path | Location) -> dict[str, bytes]:
    """Trials that Tune's saved experiment state in ``folder`` records as finished, and
    whose stored ``result.json`` holds every size of the trial → that ``result.json``. (A
    driver killed while Tune copied its files may have stored the state before the results;
    ``--resume`` runs such a trial again.)"""
    done = {}
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:  # the sweep has stored nothing yet
        return done
    for entry in entries:
        if not (entry.name.startswith("experiment_state") and entry.name.endswith(".json")):
            continue
        try:
            state = json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):  # being replaced right now
            continue
        for trial_json, _ in state["trial_data"]:
            trial = json.loads(trial_json)
            if trial["status"] != "TERMINATED":
                continue
            try:
                text = (folder / trial["relative_logdir"] / "result.json").read_bytes()
                sizes = [json.loads(line)["size"] for line in text.splitlines() if line.strip()]
            except (OSError, json.JSONDecodeError):  # being copied right now
                continue
            if sorted(sizes) == trial["config"]["trial"]["sizes"]:
                done[trial["relative_logdir"]] = text
    return done
