"""The embedded Ray that ``imm-ray`` starts listens on loopback only, without a dashboard."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from imm_ray.cluster import SINGLE_MACHINE_SWITCH

PROBE = """
from imm_ray.cluster import init_ray
init_ray(num_cpus=1)  # as imm-ray does: before anything else imports Ray

import json, os, pathlib, socket, ray

def descendants(root):
    parent = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found

def listening(pids):
    inodes = set()
    for pid in pids:
        try:
            for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    seen = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in pathlib.Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = cols[1].split(":")
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            seen.add((socket.inet_ntop(family, raw), int(port, 16)))
    return sorted(seen)

ray.get(ray.remote(lambda: 0).remote())  # a worker is up too
listening = listening(descendants(os.getpid()))
print(json.dumps({
    "gcs": ray.get_runtime_context().gcs_address,
    "node": ray.nodes()[0]["NodeManagerAddress"],
    "dashboard": ray._private.worker.get_dashboard_url(),
    "listening": listening,
}))
ray.shutdown()
"""


def test_the_embedded_ray_binds_loopback_only_and_starts_no_dashboard():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", SINGLE_MACHINE_SWITCH)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["gcs"].startswith("127.0.0.1:")
    assert seen["node"] == "127.0.0.1"
    assert not seen["dashboard"]
    assert seen["listening"], "Ray's processes listen somewhere"
    addresses = {ip.removeprefix("::ffff:") for ip, _ in seen["listening"]}
    assert addresses == {"127.0.0.1"}, seen["listening"]


def test_a_sweeps_embedded_ray_prestarts_no_worker_that_its_trials_cannot_use():
    probe = """
import re, time
from imm_ray.cluster import init_ray
init_ray(num_cpus=2, prestart_workers=False)
import ray
time.sleep(3)  # Ray prestarts on the driver's registration, right after init
logs = ray._private.worker._global_node.get_logs_dir_path()
print(len(re.findall("Started worker process", open(logs + "/raylet.out").read())))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", SINGLE_MACHINE_SWITCH)}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
