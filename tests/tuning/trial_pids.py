"""The promise of ``docs/sweeps.md`` that every trial writes the PID of its process to
``trial.pid``, checked on a finished sweep's folder (by the end-to-end sweep of every kind)."""

from __future__ import annotations

import os
from pathlib import Path

from tuning.placement import PID_FILE
from tuning.report import parse_rows


def assert_every_trial_wrote_its_pid(folder: Path) -> dict[str, int]:
    """Every trial folder of the sweep in ``folder`` holds ``trial.pid`` with the PID that
    reported its results (each row of Tune's ``result.json`` carries it); trial folder →
    that PID.

    Tune reuses a worker for the next trial (``reuse_actors``), and a reused worker once
    wrote its trials' PIDs where nobody read them: when the sweep had more trials (of one
    CPU each, every kind's default) than the machine has cores, some worker must have run
    two of them, or the check proved nothing about that case.
    """
    trials = [d for d in Path(folder).iterdir() if (d / "result.json").is_file()]
    assert trials, f"no trial folder in {folder}"
    pids = {}
    for trial in trials:
        reported = {row["pid"] for row in parse_rows((trial / "result.json").read_text())}
        assert len(reported) == 1, f"{trial.name}: results from {sorted(reported)}"
        assert (trial / PID_FILE).is_file(), f"{trial.name} has no {PID_FILE}"
        assert int((trial / PID_FILE).read_text()) == next(iter(reported)), trial.name
        pids[trial.name] = next(iter(reported))
    if len(trials) > len(os.sched_getaffinity(0)):
        assert len(set(pids.values())) < len(trials), "no worker ran two trials"
    return pids
