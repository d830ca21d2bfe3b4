"""The embedded Ray that ``imm-ray`` starts listens on loopback only, without a dashboard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

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


def run_probe(source: str) -> tuple[subprocess.CompletedProcess, str]:
    """Runs ``source`` in a fresh Python as ``imm-ray`` would (no cluster address, Ray's
    single-machine switch unset); returns the process and its last line of output."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", SINGLE_MACHINE_SWITCH)}
    result = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=180, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, result.stdout.strip().splitlines()[-1]


def test_the_embedded_ray_binds_loopback_only_and_starts_no_dashboard():
    _, last = run_probe(PROBE)
    seen = json.loads(last)
    assert seen["gcs"].startswith("127.0.0.1:")
    assert seen["node"] == "127.0.0.1"
    assert not seen["dashboard"]
    assert seen["listening"], "Ray's processes listen somewhere"
    addresses = {ip.removeprefix("::ffff:") for ip, _ in seen["listening"]}
    assert addresses == {"127.0.0.1"}, seen["listening"]


@pytest.mark.parametrize(("prestart", "workers"), [(True, 2), (False, 0)])
def test_an_embedded_ray_prestarts_one_idle_worker_per_cpu_unless_told_not_to(prestart, workers):
    probe = f"""
import re, time
from imm_ray.cluster import init_ray
init_ray(num_cpus=2, prestart_workers={prestart})
import ray
time.sleep(3)  # Ray prestarts on the driver's registration, right after init
logs = ray._private.worker._global_node.get_logs_dir_path()
print(len(re.findall("Started worker process", open(logs + "/raylet.out").read())))
"""
    _, last = run_probe(probe)
    assert last == str(workers)


SHUTDOWN_PROBE = """
import json, os, signal, sys
from imm_ray.cluster import init_ray, shutdown_ray_during
init_ray(num_cpus=1, prestart_workers=False)
import ray

node = ray._private.worker._global_node
processes = {kind: [info.process for info in infos] for kind, infos in node.all_processes.items()}
connect_ms = ray._private.state.state.get_system_config()[
    "raylet_client_connect_timeout_milliseconds"
]
# Records the order in which Ray is asked to stop its processes (and passes each on).
stops = []
kill = node._kill_process_type
def recorded(kind, *args, **kwargs):
    stops.append([kind, bool(kwargs.get("allow_graceful"))])
    return kill(kind, *args, **kwargs)
node._kill_process_type = recorded

result = shutdown_ray_during(lambda: "report written")
codes = {kind: [p.wait(timeout=30) for p in procs] for kind, procs in processes.items()}
try:
    shutdown_ray_during(lambda: 1 / 0)
    raised = None
except ZeroDivisionError as err:
    raised = type(err).__name__
print(json.dumps({
    "result": result,
    "initialized": ray.is_initialized(),
    "stops": stops,
    "codes": codes,
    "raised": raised,
    "connect_ms": connect_ms,
}))
"""


def test_shutdown_stops_every_ray_process_killing_the_idle_monitor_first():
    result, last = run_probe(SHUTDOWN_PROBE)
    seen = json.loads(last)
    # The work ran on this thread while Ray stopped, and its result came back.
    assert seen["result"] == "report written"
    assert not seen["initialized"]
    # The autoscaler monitor is killed outright, first: after the GCS has stopped, its
    # SIGTERM handler would sit out Ray's whole second of grace reporting to the GCS.
    stops = seen["stops"]
    assert stops[0] == ["monitor", False], stops
    assert seen["codes"]["monitor"] == [-signal.SIGKILL]
    # Then Ray stops the rest as usual, each asked to exit (SIGTERM) first ...
    later = dict(stops[1:])
    assert {"raylet", "gcs_server"} <= set(later) and all(later.values()), stops
    assert "monitor" not in later
    # ... and every process it started has exited (each was waited on above).
    assert set(seen["codes"]) == {kind for kind, _ in stops}
    # The monitor's death reached no one: no error about the autoscaler on the console.
    assert "autoscaler" not in result.stderr.lower(), result.stderr
    # With Ray already down, the work still runs and its error still propagates.
    assert seen["raised"] == "ZeroDivisionError"
    # The raylet polls for its object store every 50 ms rather than every second.
    assert seen["connect_ms"] == 50
