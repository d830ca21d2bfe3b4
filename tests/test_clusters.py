"""The test suite's multi-node clusters (:mod:`clusters`) are what they claim: nodes and
resources as declared, on loopback only, drivers that join and reach every worker node,
a killed node declared dead within seconds, and nothing of theirs left running after."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from clusters import (
    NODE_DEATH_S,
    alive,
    descendants,
    driver_env,
    listening,
    start_cluster,
    start_job_cluster,
)

pytestmark = pytest.mark.cluster

DRIVER = """
import json, os, sys, time, ray
ray.init(address=sys.argv[1])

@ray.remote(num_cpus=1)
def where():
    time.sleep(0.5)  # keeps both CPUs busy, so the four tasks spread over both nodes
    return ray.get_runtime_context().get_node_id(), os.getpid()

print(json.dumps(ray.get([where.remote() for _ in range(4)])))
"""


def resources(cluster) -> dict[str, dict[str, float]]:
    """Node id → its declared resources, as the head's GCS has them."""
    return {row["NodeID"]: row["Resources"] for row in cluster._cluster.global_state.node_table()}


def loopback_only(pids: set[int]) -> bool:
    addresses = {ip.removeprefix("::ffff:") for ip, _ in listening(pids)}
    return addresses == {"127.0.0.1"}


def test_a_cluster_has_a_head_without_cpus_and_its_worker_nodes_on_loopback(cluster):
    head, workers = cluster.head, cluster.workers
    assert len(workers) == 2
    assert cluster.alive_node_ids() == {head.node_id} | {w.node_id for w in workers}
    declared = resources(cluster)
    assert "CPU" not in declared[head.node_id]
    for worker in workers:
        assert declared[worker.node_id]["CPU"] == 1 and "GPU" not in declared[worker.node_id]
    assert len({head.raylet_pid} | {w.raylet_pid for w in workers}) == 3
    assert loopback_only(cluster.processes())


def test_a_driver_subprocess_joins_and_its_tasks_run_on_both_worker_nodes(cluster):
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, cluster.address],
        capture_output=True,
        text=True,
        timeout=120,
        env=driver_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ran = json.loads(result.stdout.strip().splitlines()[-1])
    assert {node for node, _ in ran} == {w.node_id for w in cluster.workers}
    # The raylets' logs tell the same story (what the sweep tests use to place trials).
    assert all(cluster.node_of_worker_process(pid) == node for node, pid in ran)


def test_a_worker_node_whose_raylet_is_killed_is_declared_dead_within_seconds():
    """On a cluster of its own (with a logical GPU): afterwards none of its processes run."""
    with start_cluster(workers=1, cpus=1, gpus=1) as cluster:
        (worker,) = cluster.workers
        assert resources(cluster)[worker.node_id]["GPU"] == 1
        processes = cluster.processes()
        under_raylet = descendants([worker.raylet_pid])  # its agents (and any workers)
        assert under_raylet
        killed = cluster.kill(worker)
        cluster.wait_until_dead(worker, timeout=NODE_DEATH_S)
        assert time.monotonic() - killed < NODE_DEATH_S
        assert cluster.alive_node_ids() == {cluster.head.node_id}
        # Whatever the raylet started exits with it.
        while alive(under_raylet) and time.monotonic() - killed < NODE_DEATH_S:
            time.sleep(0.1)
        assert not alive(under_raylet)
    assert not alive(processes)
    assert not cluster.temp_dir.exists()


def test_a_ray_start_cluster_joins_a_second_node_on_loopback_and_stops_cleanly():
    with start_job_cluster() as job_cluster:
        raylets = job_cluster.raylet_pids()
        assert len(set(raylets)) == 2
        processes = job_cluster.processes()
        assert set(raylets) <= processes
        assert loopback_only(processes)
    assert not alive(processes)
    assert not any(path.exists() for path in job_cluster.temp_dirs)
