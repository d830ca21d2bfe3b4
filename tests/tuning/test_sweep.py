"""Sweeps as users run them: ``imm-ray sweep`` in a subprocess, killed and resumed, then
redrawn with ``imm-ray report``. Sweeps submitted with ``ray job submit`` to a cluster are
in ``test_cluster_jobs.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from sweep_drivers import imm_ray, kill_once_two_finished, recorded_finished, start_sweep
from tiny_sweeps import SWEEP
from trial_pids import assert_every_trial_wrote_its_pid

from tuning.placement import PID_FILE


def finished_at(folder: Path) -> dict[str, float]:
    """The trials :func:`recorded_finished` finds → their ``result.json``'s mtime (which a
    rerun changes even where it writes the same values)."""
    return {
        name: (folder / name / "result.json").stat().st_mtime for name in recorded_finished(folder)
    }


def reported(folder: Path) -> dict[tuple[str, int], dict[str, float]]:
    """Every (trial folder, size) → its reported per-seed values, as written to disk."""
    rows = {}
    for result in folder.glob("*/result.json"):
        for line in result.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[(result.parent.name, row["size"])] = row["values"]
    return rows


def test_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    # 80 one-seed trials: Tune reuses its workers, so a short sweep would end before the
    # kill; and Tune saves its experiment state every second (its adaptive period could
    # otherwise first save it at the end of so short a sweep).
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(SWEEP.replace("seeds: 3", "seeds: 40"))
    trials = 80
    storage = tmp_path / "results"
    folder = storage / "tiny"
    driver = start_sweep(
        str(sweep),
        "--storage",
        str(storage),
        env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"},
    )
    kill_once_two_finished(driver, folder, timeout=240)
    # A trial still running at the kill, or finished but not yet recorded, is rerun on
    # --resume (deterministically, to the same values); a recorded one must not be.
    before = finished_at(folder)
    rows_before = reported(folder)
    assert 2 <= len(before) < trials, "the kill must land mid-sweep"

    again = imm_ray("sweep", str(sweep), "--storage", str(storage))
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = imm_ray("sweep", str(sweep), "--storage", str(storage), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = finished_at(folder)
    assert len(after) == trials
    assert {name: after[name] for name in before} == before, "a finished trial was rerun"
    rows_after = reported(folder)
    assert {key: rows_after.get(key) for key in rows_before} == rows_before, "a result was lost"
    table = (folder / "summary.md").read_text()
    body = [line for line in table.splitlines() if line.startswith("| ") and "[" in line]
    assert [line.split("|")[1].strip() for line in body] == ["3", "6"]
    rows = (folder / "summary.csv").read_text().splitlines()
    assert rows[0] == "setting,epochs,mean,p10,p90,seeds"
    assert len(rows) == 5 and all(row.endswith(",40") for row in rows[1:])

    (folder / "summary.csv").unlink()
    (folder / "figure.png").unlink()
    report = imm_ray("report", str(folder))
    assert report.returncode == 0, report.stderr
    assert (folder / "summary.csv").read_text().splitlines() == rows
    assert (folder / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_sweep_prints_one_line_per_trial_and_where_the_results_are(tiny_sweeps):
    run = tiny_sweeps("rl")  # SWEEP with 2 seeds
    result, storage = run.result, run.storage
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) < 40, "\n".join(lines)
    text = "\n".join(lines)
    for noise in ("DeprecationWarning", "new API stack", "gputil", "Token authentication"):
        assert noise not in text, text
    assert sum("] done: " in line for line in lines) == 4
    assert f"table: {storage / 'tiny' / 'summary.md'}" in text
    # Tune's JSON and CSV results, in every trial's folder; no TensorBoard files unasked.
    trials = [path for path in (storage / "tiny").iterdir() if path.is_dir()]
    assert len(trials) == 4
    for trial in trials:
        assert (trial / "result.json").is_file() and (trial / "progress.csv").is_file()
        assert not list(trial.glob("events.out.tfevents*")), trial
    assert_every_trial_wrote_its_pid(storage / "tiny")


def _raylet_time(line: str) -> float:
    """Epoch seconds of a raylet log line ``[2026-12-02 18:24:33,335 I ...]`` (local time)."""
    stamp = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def test_a_sweeps_trials_run_on_the_workers_ray_prestarts_as_the_driver_connects(tmp_path):
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(SWEEP.replace("seeds: 3", "seeds: 1").replace("seeds_per_trial: 1\n", ""))
    storage = tmp_path / "results"
    result = imm_ray("sweep", str(sweep), "--storage", str(storage))
    assert result.returncode == 0, result.stderr[-3000:]
    folder = storage / "tiny"
    trial_pids = {int(path.read_text()) for path in folder.glob(f"*/{PID_FILE}")}
    assert len(trial_pids) == 2  # two trials side by side on the two CPUs
    # The sweep's Ray session: the one whose workers' logs name the trials' processes.
    ray_tmp = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
    logs = {
        path.parent
        for pid in trial_pids
        for path in ray_tmp.glob(f"session_*/logs/python-core-worker-*_{pid}.log")
    }
    logs = max(logs, key=lambda path: path.stat().st_mtime)
    raylet = (logs / "raylet.out").read_text().splitlines()
    started = {
        int(line.split("with pid ")[1].split()[0]): _raylet_time(line)
        for line in raylet
        if "Started worker process with pid" in line
    }
    # Ray started a worker for each trial before the driver had even written the sweep's
    # first file (so while it started Tune, not on the trials' request), and never built
    # a runtime env for them (which would have kept the trials off prestarted workers).
    first_file = (folder / "experiment.json").stat().st_mtime
    prestarted = {pid for pid, time in started.items() if time < first_file}
    assert len(prestarted) == 2 and trial_pids <= set(started), (started, trial_pids)
    assert not any("Create runtime env" in line for line in raylet)
    # The trials ran on them, but where Ray reaped one as idle just before a trial asked
    # for a worker (its idle-worker killer may, under load), and started another.
    reaped = {
        pid
        for pid in prestarted - trial_pids
        for log in logs.glob(f"python-core-worker-*_{pid}.log")
        if "Worker exited because it was idle" in log.read_text()
    }
    assert len(trial_pids - prestarted) == len(reaped), (started, trial_pids, reaped)


def test_the_driver_loads_pytorch_and_tensorboard_only_when_asked_for_event_files(tmp_path):
    # A sweep file's RL sweep needs neither in the driver (each costs it a second or more);
    # Python's -X importtime lists every module the driver imports.
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(SWEEP.replace("seeds: 3", "seeds: 1").replace("seeds_per_trial: 1\n", ""))
    # The two sweeps side by side, each with its own embedded Ray (suite time).
    drivers = {
        name: subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "imm_ray.cli", "sweep", str(sweep)]
            + ["--storage", str(tmp_path / name), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, extra in (("plain", []), ("tensorboard", ["--tensorboard"]))
    }
    errors = {}
    try:
        for name, driver in drivers.items():
            errors[name] = driver.communicate(timeout=300)[1]
    finally:  # neither is left running, whatever happened to the other
        for driver in drivers.values():
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    runs = {}
    for name, stderr in errors.items():
        storage = tmp_path / name
        assert drivers[name].returncode == 0, stderr[-3000:]
        imported = {
            line.rsplit("|", 1)[1].strip()
            for line in stderr.splitlines()
            if line.startswith("import time:")
        }
        trials = [path for path in (storage / "tiny").iterdir() if path.is_dir()]
        events = [list(trial.glob("events.out.tfevents*")) for trial in trials]
        runs[name] = imported, trials, events
    imported, trials, events = runs["plain"]
    assert len(trials) == 2 and "ray.tune" in imported
    assert not {"torch", "tensorboardX"} & imported
    assert events == [[], []]
    imported, trials, events = runs["tensorboard"]
    assert len(trials) == 2 and "tensorboardX" in imported
    assert all(len(found) == 1 and found[0].stat().st_size > 0 for found in events), events


def test_sweep_cli_rejects_bad_input_before_starting(tmp_path):
    unknown = imm_ray("sweep", "figure99", "--storage", str(tmp_path))
    assert unknown.returncode == 2 and "figure2, figure9, lambda-search" in unknown.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(SWEEP.replace("seeds: 3", "seeds: -1"))
    result = imm_ray("sweep", str(bad), "--storage", str(tmp_path))
    assert result.returncode == 2 and "bad.yaml:3: seeds" in result.stderr
    assert "Traceback" not in result.stderr
    missing = imm_ray("report", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "holds no sweep" in missing.stderr
    assert not any(tmp_path.glob("*/experiment_state*.json"))


def test_a_crashed_trial_is_retried_and_the_sweep_completes(tmp_path):
    """SIGKILL the worker process of a running trial: Tune's FailureConfig reruns it."""
    sweep = tmp_path / "crash.yaml"
    sweep.write_text(SWEEP.replace("epochs: [3, 6]", "epochs: [200, 400]"))
    storage = tmp_path / "results"
    driver = start_sweep(
        str(sweep),
        "--storage",
        str(storage),
        output=True,
    )
    # The trainable writes its own PID to trial.pid in its trial folder: kill that one
    # process, which this test's sweep started, and nothing else on the machine.
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        pid_files = sorted((storage / "tiny").glob(f"*/{PID_FILE}"))
        if pid_files and pid_files[0].read_text().strip():
            time.sleep(1.0)  # let it get into training
            killed = int(pid_files[0].read_text())
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    output, _ = driver.communicate(timeout=300)
    assert killed is not None, "no trial worker was seen running"
    assert driver.returncode == 0, output[-3000:]
    rows = (storage / "tiny" / "summary.csv").read_text().splitlines()
    assert len(rows) == 5 and all(row.endswith(",3") for row in rows[1:])
    assert "failed, retrying" in output, "the kill must have failed a running trial"
    # One line says why, instead of Tune's traceback of the failure (error.txt keeps it).
    # (Ray may still print a worker's own stderr, traceback and all, as it stops it.)
    assert "Trial task failed" not in output, output[-3000:]
    assert "[6/6 trials" in output and "errored after" not in output
