"""Sweeps that lose a worker node, or their driver, on a ``ray.cluster_utils.Cluster`` (a
head without CPUs, two worker nodes of 1 CPU, a dead node noticed within about 2 s): they
complete and give what an undisturbed run gives (:mod:`cluster_runs`): the single-node run
of the same sweep, started first to go on beside the cluster's.

A node is killed as a machine dies: its raylet gets SIGKILL (by PID, from the cluster
handle), and whatever the raylet started exits with it. Each test that kills a node has a
cluster of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_runs import (
    FIGURE2,
    assert_ran_on_nodes,
    assert_same_results,
    table1,
)
from clusters import driver_env, start_cluster
from sweep_drivers import polls_while_running, recorded_finished, start_sweep

from tuning.report import EARLIER_RESULTS_PREFIX, read_trials

pytestmark = pytest.mark.cluster

#: Eight one-seed trials of figure2's four seeds, a few seconds each.
FIGURE2_SPLIT = (*FIGURE2, "--seeds-per-trial", "1")


def sweep_driver(args: tuple[str, ...], storage: Path, address: str) -> subprocess.Popen:
    """``imm-ray sweep ARGS`` joining the cluster at ``address``, in a process group of its
    own; its output (stdout and stderr) in its ``stdout``."""
    return start_sweep(
        *args,
        "--storage",
        str(storage),
        "--address",
        address,
        output=True,
        env=driver_env(),
    )


@contextlib.contextmanager
def killed_at_exit(driver: subprocess.Popen) -> Iterator[None]:
    """Kills the sweep ``driver`` (its whole process group) if it still runs at exit."""
    try:
        yield
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


def stored_rows(folder: Path) -> dict[str, list[dict]]:
    """Trial folder name → the rows of its ``result.json`` stored so far."""
    return {found.folder: found.rows for found in read_trials(folder)}


def stored_statuses(folder: Path) -> dict[str, list[str]]:
    """Each stored experiment state's trial statuses, by file name (what a failure shows)."""
    statuses = {}
    for state in sorted(folder.glob("experiment_state-*.json")):
        trials = json.loads(state.read_text())["trial_data"]
        statuses[state.name] = [json.loads(trial)["status"] for trial, _ in trials]
    return statuses


def finish(driver: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = driver.communicate(timeout=timeout)
    assert driver.returncode == 0, output[-3000:]
    return output


def test_an_rl_sweep_that_loses_a_node_completes_on_the_other_with_the_same_results(
    single_node, tmp_path
):
    single_node.start(*FIGURE2)
    storage = tmp_path / "results"
    folder = storage / "figure2"
    with start_cluster() as cluster:
        driver = sweep_driver(FIGURE2_SPLIT, storage, cluster.address)
        with killed_at_exit(driver):
            # Once a node has finished a trial and trains the next one, it dies.
            for _ in polls_while_running(driver, 240, "no node finished a trial in time"):
                finished_on = {rows[0]["node_id"] for rows in stored_rows(folder).values() if rows}
                lost = next(
                    (
                        w
                        for w in cluster.workers
                        if w.node_id in finished_on and cluster.training(w)
                    ),
                    None,
                )
                if lost is not None:
                    break
            cluster.kill(lost)
            output = finish(driver)
        (survivor,) = [w for w in cluster.workers if w is not lost]
    # The trial that trained on the lost node failed, and ran again on the other one. (A
    # worker outlives its raylet by up to a second or so: if it reported all its results
    # meanwhile, Tune, which lost the trial before it ended, still runs it again, and
    # appends the second run's rows to the first's.)
    assert "failed, retrying" in output
    # One line says why, instead of Tune's traceback (which error.txt keeps).
    assert "because its node has died" in output and "Trial task failed" not in output
    failed = [path.parent.name for path in folder.glob("*/error.txt")]
    assert failed
    trials = {found.folder: found for found in read_trials(folder)}
    for name in failed:
        sizes = trials[name].trial["sizes"]
        last_run = trials[name].rows[-len(sizes) :]
        assert [row["size"] for row in last_run] == sizes, name
        assert {row["node_id"] for row in last_run} == {survivor.node_id}, name
    assert_ran_on_nodes(folder, 2)
    assert_same_results(folder, single_node.folder(*FIGURE2), same_trials=False)


def test_a_language_model_trial_that_loses_its_node_continues_from_its_last_epoch(
    single_node, lm_data, tmp_path
):
    """Tune restarts the trial in the same driver from its last checkpoint, on the other
    node, and appends the restarted run's rows to the same ``result.json``."""
    args = table1(lm_data)
    single_node.start(*args)
    storage = tmp_path / "results"
    folder = storage / "table1"
    epochs = 5
    with start_cluster() as cluster:
        workers = {worker.node_id: worker for worker in cluster.workers}
        driver = sweep_driver(args, storage, cluster.address)
        with killed_at_exit(driver):
            # The IMM trial (the longest: about a second an epoch) loses its node once it
            # has reported an epoch, and before its last.
            victim = None
            for _ in polls_while_running(driver, 240, "the IMM trial reported no epoch in time"):
                for name, rows in stored_rows(folder).items():
                    imm = rows and rows[0]["setting"] == "IMM with KN bigram, valid"
                    if imm and max(row["size"] for row in rows) < epochs:
                        victim, lost = name, workers[rows[0]["node_id"]]
                if victim is not None:
                    break
            cluster.kill(lost)
            output = finish(driver)
    assert "failed, retrying" in output
    assert (folder / victim / "error.txt").is_file()
    # One result.json holds both runs of the trial (nothing was kept aside, as --resume does).
    assert not list((folder / victim).glob(f"{EARLIER_RESULTS_PREFIX}*"))
    valid = [row for row in stored_rows(folder)[victim] if row["setting"].endswith(", valid")]
    # Every epoch once, in order: epochs 1 … k on the lost node, then k + 1 … on the other,
    # where the restarted run started (Tune counts its iterations from 1 again, and the
    # trial's on).
    assert [row["size"] for row in valid] == list(range(1, epochs + 1))
    nodes = [row["node_id"] for row in valid]
    k = nodes.count(lost.node_id)
    assert 1 <= k < epochs and nodes == [lost.node_id] * k + [nodes[-1]] * (epochs - k), nodes
    assert nodes[-1] != lost.node_id
    restarted = valid[k]
    assert restarted["iterations_since_restore"] == 1
    assert restarted["training_iteration"] == valid[k - 1]["training_iteration"] + 1
    # And it trained on from its checkpoint exactly as an undisturbed trial does.
    assert_ran_on_nodes(folder, 2)
    assert_same_results(folder, single_node.folder(*args))


def test_a_sweep_whose_driver_is_killed_resumes_on_the_cluster_with_the_same_results(
    cluster, single_node, tmp_path
):
    single_node.start(*FIGURE2)
    storage = tmp_path / "results"
    folder = storage / "figure2"
    trials = 8
    driver = sweep_driver(FIGURE2_SPLIT, storage, cluster.address)
    try:
        for _ in polls_while_running(driver, 240, "no trial finished in time"):
            if len(recorded_finished(folder)) >= 2:
                break
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    before = recorded_finished(folder)
    assert 2 <= len(before) < trials, "the kill must land mid-sweep"

    statuses = stored_statuses(folder)
    resumed = sweep_driver((*FIGURE2_SPLIT, "--resume"), storage, cluster.address)
    resumed_output = (statuses, finish(resumed)[-3000:])
    after = recorded_finished(folder)
    assert len(after) == trials, (sorted(before), stored_statuses(folder), resumed_output)
    assert {name: after[name] for name in before} == before, "a finished trial was rerun"
    assert len(read_trials(folder)) == trials
    assert_ran_on_nodes(folder, 2)
    assert_same_results(folder, single_node.folder(*FIGURE2), same_trials=False)
