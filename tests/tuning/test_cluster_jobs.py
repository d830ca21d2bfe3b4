"""Every experiment kind submitted with ``ray job submit`` to a two-node cluster (``ray start
--head`` plus a node joined with ``ray start --address``, 1 CPU each, shared by this
module): its trials run on both nodes, and it gives what the same sweep gives on one node
(:mod:`cluster_runs`).

The job's driver runs on the head and reads the input folders; trials on the other node
get the inputs through Ray's object store. Each test starts the single-node run first, to
go on beside the job: both wait on Ray's processes about as much as they compute.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_runs import (
    FIGURE1,
    FIGURE2,
    assert_ran_on_nodes,
    assert_same_results,
    table1,
    table2,
)
from clusters import submit, trial_processes

from tuning.report import read_trials

pytestmark = pytest.mark.cluster


def submitted(job_cluster, storage: Path, *args: str) -> Path:
    """Submits ``imm-ray sweep ARGS --storage STORAGE`` as a job and waits for it; checks
    that its trials ran on both nodes, none failing on the way; returns its folder."""
    submit(job_cluster.job_address, "sweep", *args, "--storage", str(storage))
    (folder,) = [path for path in storage.iterdir() if path.is_dir()]
    assert_ran_on_nodes(folder, 2)
    # The two node ids are this cluster's nodes: the raylet that started each trial's
    # worker process (every node's IP is 127.0.0.1 here) is the head's or the other's.
    raylets = job_cluster.raylets_of_workers()
    started = {raylets.get(pid) for pids in trial_processes(folder).values() for pid in pids}
    assert started == set(job_cluster.raylet_pids()), started
    # A trial that failed and was retried (e.g. on the other node) leaves an error file.
    assert not list(folder.glob("*/error.txt"))
    return folder


@pytest.mark.parametrize(
    ("sweep", "trials"), [(FIGURE2, 2), (FIGURE1, 4)], ids=["figure2", "reduced-figure1"]
)
def test_a_sweep_as_a_job_runs_on_both_nodes_and_gives_the_single_node_results(
    job_cluster, single_node, tmp_path, sweep, trials
):
    single_node.start(*sweep)
    folder = submitted(job_cluster, tmp_path / "results", *sweep)
    assert len(read_trials(folder)) == trials
    assert_same_results(folder, single_node.folder(*sweep))


def test_an_rl_sweep_with_its_seeds_split_across_trials_runs_on_both_nodes_as_on_one(
    job_cluster, single_node, tmp_path
):
    # Two seeds a trial: 4 trials. A seed's values do not depend on how seeds are split,
    # so the single-node run to match is figure2's, unsplit.
    single_node.start(*FIGURE2)
    folder = submitted(job_cluster, tmp_path / "results", *FIGURE2, "--seeds-per-trial", "2")
    assert sorted(found.trial["seeds"] for found in read_trials(folder)) == [
        [0, 1],
        [0, 1],
        [2, 3],
        [2, 3],
    ]
    assert_same_results(folder, single_node.folder(*FIGURE2), same_trials=False)


def test_tiny_table1_as_a_job_runs_on_both_nodes_and_gives_the_single_node_results(
    job_cluster, single_node, lm_data, tmp_path
):
    single_node.start(*table1(lm_data))
    folder = submitted(job_cluster, tmp_path / "results", *table1(lm_data))
    assert len(read_trials(folder)) == 4
    assert_same_results(folder, single_node.folder(*table1(lm_data)))


def test_tiny_table2_as_a_job_runs_on_both_nodes_and_gives_the_single_node_results(
    job_cluster, single_node, bert_data, tmp_path
):
    single_node.start(*table2(*bert_data))
    folder = submitted(job_cluster, tmp_path / "results", *table2(*bert_data))
    assert len(read_trials(folder)) == 3
    assert_same_results(folder, single_node.folder(*table2(*bert_data)))
