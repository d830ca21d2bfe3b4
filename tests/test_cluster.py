"""The embedded Ray that ``imm-ray`` starts listens on loopback only, without a dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from clusters import free_port, processes_under, start_cluster, start_job_cluster

from imm_ray.cluster import SINGLE_MACHINE_SWITCH

PROBE = """
from imm_ray.cluster import init_ray
init_ray(num_cpus=1)  # as imm-ray does: before anything else imports Ray

import json, os, sys, ray

sys.path.insert(0, TESTS)  # for tests/clusters.py
from clusters import descendants, listening

ray.get(ray.remote(lambda: 0).remote())  # a worker is up too
listening = sorted(listening(descendants({os.getpid()})))
print(json.dumps({
    "gcs": ray.get_runtime_context().gcs_address,
    "node": ray.nodes()[0]["NodeManagerAddress"],
    "dashboard": ray._private.worker.get_dashboard_url(),
    "listening": listening,
}))
ray.shutdown()
""".replace("TESTS", repr(str(Path(__file__).resolve().parent)))


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


def test_shutdown_on_another_ray_is_plain_ray_shutdown_and_stops_every_process():
    # Node.kill_monitor is private: on a Ray other than the tested one (forced here) the
    # monitor is left to ray.shutdown(), which stops it with the rest, gracefully.
    forced = "from imm_ray import _compat\n_compat.ray_kill_monitor = lambda: False\n"
    _, last = run_probe(forced + SHUTDOWN_PROBE)
    seen = json.loads(last)
    assert seen["result"] == "report written"
    assert not seen["initialized"]
    stops = dict(seen["stops"])
    assert stops["monitor"] is True and seen["stops"][0][0] != "monitor", seen["stops"]
    assert {"raylet", "gcs_server"} <= set(stops)
    assert set(seen["codes"]) == set(stops)
    assert seen["raised"] == "ZeroDivisionError"


# --- Joining a cluster, or not ------------------------------------------------------------

TINY_SWEEP = """\
name: tiny
epochs: [2]
seeds: 1
settings:
  - label: No IMM
    imm: false
"""


@pytest.fixture
def ray_tmpdir():
    """A private Ray temp dir ($RAY_TMPDIR): where a Ray started with it keeps its session,
    and where ``auto`` looks for the cluster ``ray start`` recorded. Short: Ray's unix
    socket paths under it must stay below ~107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="immray-", dir="/tmp"))
    (path / "ray").mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def imm_ray(*args: str, env: dict | None = None, timeout: float = 300):
    """``imm-ray ARGS`` in a subprocess; returns it and its wall time in seconds."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "imm_ray.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return result, time.monotonic() - start


def environment(ray_tmpdir: Path, **values: str) -> dict:
    """This process's environment, without a cluster address or an authentication mode
    (``ray.init`` in this process, the ``ray_session`` fixture's, sets ``RAY_AUTH_MODE``
    here), with ``ray_tmpdir`` as Ray's temp dir and ``values`` set."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    return {**env, "RAY_TMPDIR": str(ray_tmpdir), **values}


def sessions(ray_tmpdir: Path) -> set[str]:
    return {path.name for path in (ray_tmpdir / "ray").glob("session_2*")}


class _NotRay(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(1024)  # accepts and reads, never answers


@pytest.fixture
def not_ray():
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a port where
    something other than Ray listens."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _NotRay) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


COMMANDS = {
    "train rl": ["train", "rl", "--epochs", "2", "--seeds", "1"],
    "sweep": ["sweep", "tiny.yaml", "--storage", "results"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("--address 127.0.0.1:1", "at 127.0.0.1:1: connection refused"),
        ("RAY_ADDRESS=127.0.0.1:1", "at 127.0.0.1:1 ($RAY_ADDRESS): connection refused"),
        ("--address auto", "at auto: no cluster started by `ray start` is recorded in"),
        ("--address auto, dead", "at auto, which `ray start` recorded as 127.0.0.1:1:"),
        ("--address NOT_RAY", "something listens there, but it does not answer as Ray does"),
    ],
)
def test_an_unreachable_cluster_stops_at_once_with_exit_2(
    command, how, reason, ray_tmpdir, not_ray, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_SWEEP)
    env = environment(ray_tmpdir)
    args = list(COMMANDS[command])
    if how.startswith("RAY_ADDRESS="):
        env["RAY_ADDRESS"] = how.partition("=")[2]
    else:
        args += ["--address", how.split()[1].rstrip(",").replace("NOT_RAY", not_ray)]
    if how.endswith("dead"):  # a leftover record of a cluster that is gone
        (ray_tmpdir / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
    result, seconds = imm_ray(*args, env=env, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert seconds < 30
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("imm-ray: error: --address: cannot reach a Ray cluster at ")
    assert reason in lines[-1]
    # Nothing but the error: no traceback, none of Ray's connection warnings.
    assert len(lines) == 1, result.stderr
    assert not (tmp_path / "results").exists()
    assert not sessions(ray_tmpdir)


@pytest.fixture(scope="module")
def own_head():
    """One's own ``ray start --head`` (1 CPU, no dashboard: :func:`clusters.start_job_cluster`),
    recorded as ``auto`` in a private Ray temp dir; yields that dir."""
    with start_job_cluster(worker_cpus=None, jobs=False) as head:
        yield head.ray_tmpdir


@pytest.mark.cluster
def test_without_an_address_commands_start_their_own_ray_beside_a_running_cluster(
    own_head, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_SWEEP)
    env = environment(own_head)
    head = sessions(own_head)
    assert len(head) == 1
    seen = set(head)
    for name, args in COMMANDS.items():
        result, _ = imm_ray(*args, env=env)
        assert result.returncode == 0, (name, result.stderr[-3000:])
        assert "Traceback" not in result.stderr
        started = sessions(own_head) - seen
        assert len(started) == 1, (name, started)  # a Ray of its own, not the head's
        seen |= started
    assert (tmp_path / "results" / "tiny" / "summary.csv").is_file()
    # Each stopped its own Ray; the head runs on.
    for session in seen - head:
        assert not processes_under(own_head / "ray" / session)
    assert processes_under(own_head / "ray" / head.pop())


@pytest.mark.cluster
def test_address_auto_joins_the_cluster_ray_start_recorded(own_head, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sessions(own_head)
    result, _ = imm_ray(*COMMANDS["train rl"], "--address", "auto", env=environment(own_head))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sessions(own_head) == before  # joined, started nothing


TOKEN_SOURCES = "$RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("auth", "refused"),
    [
        ({}, f"asks for a token: set RAY_AUTH_MODE=token (Ray reads {TOKEN_SOURCES})"),
        (
            {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32},
            f"refuses this driver's token (from {TOKEN_SOURCES})",
        ),
        ({"RAY_AUTH_MODE": "token"}, None),
    ],
)
def test_an_explicit_address_joins_with_the_token_only_when_told_to_send_it(
    own_head, auth, refused, tmp_path, monkeypatch
):
    # Ray sends its token (~/.ray/auth_token) by itself only for no address or "auto".
    monkeypatch.chdir(tmp_path)
    address = (own_head / "ray" / "ray_current_cluster").read_text().strip()
    args = [*COMMANDS["train rl"], "--address", address]
    result, seconds = imm_ray(*args, env=environment(own_head, **auth))
    if refused is None:
        assert result.returncode == 0, result.stderr[-3000:]
        return
    assert result.returncode == 2, result.stderr[-3000:]
    assert seconds < 30
    assert result.stderr.splitlines() == [
        f"imm-ray: error: --address: the Ray cluster at {address} {refused}"
    ]


def test_a_leftover_record_of_a_dead_cluster_does_not_stop_an_embedded_ray(
    ray_tmpdir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_SWEEP)
    (ray_tmpdir / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    for name, args in COMMANDS.items():
        result, _ = imm_ray(*args, env=environment(ray_tmpdir))
        assert result.returncode == 0, (name, result.stderr[-3000:])
    assert len(sessions(ray_tmpdir)) == 2
    assert not processes_under(ray_tmpdir)


# --- Requests no node can meet --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--cpus-per-trial", "--cpus-per-trial 64: no node of this cluster has that many CPUs"),
        ("--gpus-per-trial", "--gpus-per-trial 64: no node of this cluster has that many GPUs"),
    ],
)
def test_a_trial_no_node_can_hold_stops_before_it_starts_on_the_embedded_ray(
    option, message, ray_tmpdir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_SWEEP)
    result, seconds = imm_ray(*COMMANDS["sweep"], option, "64", env=environment(ray_tmpdir))
    assert result.returncode == 2, result.stderr[-3000:]
    assert seconds < 60
    [line] = result.stderr.splitlines()
    largest = "; the largest has [1-9][0-9]* CPUs? and 0 GPUs"
    assert re.fullmatch(f"imm-ray: error: {re.escape(message)}{largest}", line), line
    assert not (tmp_path / "results" / "tiny").exists()
    assert len(sessions(ray_tmpdir)) == 1 and not processes_under(ray_tmpdir)  # Ray stopped


@pytest.fixture(scope="module")
def three_nodes():
    """A :func:`clusters.start_cluster`: a head with 0 CPUs, a worker with 2 CPUs and one
    with 1 CPU and 1 (logical) GPU. Yields the cluster's address."""
    with start_cluster(workers=0) as cluster:
        cluster.add_worker(cpus=2)
        cluster.add_worker(cpus=1, gpus=1)
        yield cluster.address


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            ["--cpus-per-trial", "3"],
            "--cpus-per-trial 3: no node of this cluster has that many CPUs; the largest has "
            "2 CPUs and 0 GPUs",
        ),
        (
            ["--gpus-per-trial", "2"],
            "--gpus-per-trial 2: no node of this cluster has that many GPUs; the largest has "
            "1 CPU and 1 GPU",
        ),
        (
            ["--cpus-per-trial", "2", "--gpus-per-trial", "0.5"],
            "--cpus-per-trial 2 with --gpus-per-trial 0.5: no node of this cluster has both; "
            "its nodes have 2 CPUs and 0 GPUs, 1 CPU and 1 GPU, 0 CPUs and 0 GPUs",
        ),
    ],
)
def test_a_trial_no_node_can_hold_stops_before_it_starts_on_a_cluster(
    request_, message, three_nodes, ray_tmpdir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_SWEEP)
    result, seconds = imm_ray(
        *COMMANDS["sweep"],
        *request_,
        "--address",
        three_nodes,
        env=environment(ray_tmpdir, RAY_AUTH_MODE="token"),
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert seconds < 60
    assert result.stderr.splitlines() == [f"imm-ray: error: {message}"]
    assert not (tmp_path / "results" / "tiny").exists()
