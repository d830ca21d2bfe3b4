"""Real multi-node Ray clusters on this machine, for the tests (and the cluster benchmark).

Two kinds, everything on 127.0.0.1, each stopped by whoever started it:

- :func:`start_cluster` / the module-scoped ``cluster`` fixture: Ray's own test cluster
  (``ray.cluster_utils.Cluster``) in this process, a head with no CPUs (so no trial runs
  beside the driver) plus worker nodes with few CPUs (and logical GPUs) each. The head
  notices a dead worker node within about 2 s (:data:`FAST_NODE_DEATH`). Drivers are
  subprocesses (``python -m imm_ray.cli sweep ... --address cluster.address``) run with
  :func:`driver_env`.
- :func:`start_job_cluster` / the module-scoped ``job_cluster`` fixture: ``ray start
  --head`` plus a second node joined with ``ray start --address``, for ``ray job submit``
  (:func:`submit`), as a user's cluster is started.

Every node runs in Ray's single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
which ``tests/conftest.py`` sets for this process): a node whose address is 127.0.0.1
binds its servers to 127.0.0.1 alone (:func:`listening` checks it). In cluster mode Ray
replaces 127.0.0.1, wherever a user writes it, by the machine's routable address
(``resolve_ip_for_localhost``: "make sure localhost isn't resolved to the loopback ip"),
where nothing of a loopback cluster listens: a driver then dials the GCS at that address
and hangs in ``ray.init``, and so does ``ray start --address`` (in
``Node._init_gcs_client``). A driver therefore joins with the switch at 0; ``ray start
--address``, which refuses to start a node in single-machine mode, is run by
:data:`JOIN_LOOPBACK` (see there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from imm_ray.cluster import SINGLE_MACHINE_SWITCH

LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")

#: The head's ``_system_config`` for a test cluster: the GCS asks each raylet every
#: 0.5 s whether it lives and marks its node dead after 4 failed asks in a row, so a
#: raylet killed by SIGKILL (whose connection is refused at once) is dead in about 2 s
#: (Ray's defaults, every 3 s and 5 in a row after a 5 s grace, take about 15 s). A raylet
#: that is only slow is not declared dead: each ask may take Ray's default 10 s.
FAST_NODE_DEATH = MappingProxyType(
    {
        "health_check_initial_delay_ms": 0,
        "health_check_period_ms": 500,
        "health_check_failure_threshold": 4,
    }
)
#: Upper bound on :data:`FAST_NODE_DEATH`'s detection time, with room for busy cores.
NODE_DEATH_S = 10.0

#: Runs Ray's own ``ray start`` (its arguments follow) for a node that joins a loopback
#: cluster. ``ray start --address`` refuses to run in Ray's single-machine mode, and in
#: cluster mode rewrites both ``--address=127.0.0.1:PORT`` and ``--node-ip-address=
#: 127.0.0.1`` to the machine's routable address, so the node dials a GCS that is not
#: there. Here the command's own process sees cluster mode (past the refusal), keeps
#: 127.0.0.1 as written, and starts the node's processes in single-machine mode (so they
#: bind 127.0.0.1 alone, as the head's do).
JOIN_LOOPBACK = f"""
import os, sys
os.environ["{SINGLE_MACHINE_SWITCH}"] = "1"
from ray._private import services
from ray.scripts.scripts import main
os.environ["{SINGLE_MACHINE_SWITCH}"] = "0"
services.resolve_ip_for_localhost = lambda host: host
sys.exit(main())
"""

#: The title Ray gives a worker process while it runs a Tune trial's ``train`` (a trial
#: trains within that call; between two calls it is ``ray::ImplicitFunc``).
TRAINING = "ray::ImplicitFunc.train"

#: A raylet's log line for each worker process it starts: ``[time I <raylet pid> <tid>]
#: (raylet) worker_pool.cc:NNN: Started worker process with pid <pid> ...``.
_STARTED_WORKER = re.compile(
    r"^\[[^\]]* (\d+) \d+\] \(raylet\) \S+ Started worker process with pid (\d+)", re.M
)


def sigint_default() -> None:
    """``preexec_fn`` of a command a test interrupts: SIGINT as a terminal's child gets it.

    A test runner started with SIGINT ignored (``pytest &`` from a non-interactive shell,
    ``nohup``) passes that on to its children, and Python turns SIGINT into
    ``KeyboardInterrupt`` only where it was not ignored when the process started.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def driver_env(**extra: str) -> dict[str, str]:
    """The environment for a driver subprocess that joins a test cluster by its address:
    this one, in Ray's single-machine mode (without it, ``ray.init`` swaps 127.0.0.1 for
    the machine's routable address and hangs), without ``RAY_ADDRESS``, sending the token
    every test cluster asks for (``RAY_AUTH_MODE``: ``tests/conftest.py``); ``extra`` on
    top."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env[SINGLE_MACHINE_SWITCH] = "0"
    env.update(extra)
    return env


@dataclasses.dataclass(frozen=True)
class Node:
    """One node of a test cluster."""

    node_id: str
    """Ray's node id (hex), as ``ray.get_runtime_context().get_node_id()`` gives it."""
    raylet_pid: int
    """The node's raylet: SIGKILL it and the node dies (its workers and agents exit too)."""
    cpus: float
    gpus: float


class LocalCluster:
    """A running ``ray.cluster_utils.Cluster``: a head with 0 CPUs and worker nodes.

    Made by :func:`start_cluster`; ``address`` is the GCS address a driver joins,
    ``workers`` the worker nodes in the order they were added.
    """

    def __init__(self, temp_dir: Path, system_config: Mapping[str, Any]) -> None:
        from ray.cluster_utils import Cluster

        self.temp_dir = temp_dir
        with _ray_address_file_kept(), _drivers_kv_kept():
            self._cluster = Cluster(
                initialize_head=True,
                head_node_args={
                    "num_cpus": 0,
                    "temp_dir": str(temp_dir),
                    "include_dashboard": False,
                    # Ray's fixed defaults (8265, 52365) may be another Ray's on this machine.
                    "dashboard_port": free_port(),
                    "dashboard_agent_listen_port": free_port(),
                    # A copy: Ray adds this session's object-spilling folder to the dict
                    # it is given, and a later cluster given the same dict spilled there.
                    "_system_config": dict(system_config),
                },
            )
        self.address: str = self._cluster.address
        self.workers: list[Node] = []

    def add_worker(self, cpus: float = 1, gpus: float = 0, **node_args: Any) -> Node:
        """Starts one more worker node (``gpus`` logical GPUs: no device behind them) and
        waits until it has joined.

        Each node has a temp dir of its own, as on separate machines: what a trial writes
        to Ray's session folders (Tune's trial folder, runtime envs) on one node is not
        there on another. ``node_args`` go to ``Cluster.add_node``.
        """
        node_args.setdefault("temp_dir", str(self.temp_dir / f"node{len(self.workers) + 1}"))
        with _drivers_kv_kept():
            node = self._cluster.add_node(num_cpus=cpus, num_gpus=gpus, **node_args)
        worker = Node(node.node_id, _raylet(node).pid, cpus, gpus)
        self.workers.append(worker)
        return worker

    @property
    def head(self) -> Node:
        node = self._cluster.head_node
        return Node(node.node_id, _raylet(node).pid, 0, 0)

    def alive_node_ids(self) -> set[str]:
        """Ids of the nodes the head's GCS counts as alive."""
        return {row["NodeID"] for row in self._cluster.global_state.node_table() if row["Alive"]}

    def kill(self, worker: Node) -> float:
        """SIGKILLs ``worker``'s raylet; returns when (``time.monotonic()``)."""
        os.kill(worker.raylet_pid, signal.SIGKILL)
        return time.monotonic()

    def wait_until_dead(self, worker: Node, timeout: float = NODE_DEATH_S) -> None:
        """Returns once the GCS counts ``worker`` as dead; ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while worker.node_id in self.alive_node_ids():
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {worker.node_id} still alive after {timeout} s")
            time.sleep(0.05)

    def training(self, worker: Node) -> int:
        """How many Tune trials train on ``worker`` now: its worker processes that run a
        trial's ``train`` (Ray titles them :data:`TRAINING`)."""
        return process_titles(descendants([worker.raylet_pid])).count(TRAINING)

    def node_of_worker_process(self, pid: int) -> str | None:
        """The id of the node whose raylet started worker process ``pid`` (None: not ours)."""
        logs = [Path(node.get_logs_dir_path()) for node in self._cluster.list_all_nodes()]
        raylets = raylets_of_workers(logs)
        by_raylet = {n.raylet_pid: n.node_id for n in [self.head, *self.workers]}
        return by_raylet.get(raylets.get(pid))

    def nodes_of_trials(self, folder: Path) -> dict[str, set[str | None]]:
        """Trial folder name → the ids of the nodes that reported its results (more than
        one if it was restarted elsewhere), for a sweep's results ``folder``, from the
        ``node_id`` its rows carry (:mod:`tuning.placement`). (Every node's IP is 127.0.0.1
        here, so ``node_ip`` tells nothing; :func:`trial_processes` gives the worker
        processes, to check the ids against the raylets that started them.)"""
        from tuning.report import read_trials

        return {
            found.folder: {row.get("node_id") for row in found.rows}
            for found in read_trials(folder)
        }

    def processes(self) -> set[int]:
        """PIDs of every process this cluster runs now (Ray's and their workers)."""
        roots = [
            info.process.pid
            for node in self._cluster.list_all_nodes()
            for infos in node.all_processes.values()
            for info in infos
        ]
        return set(roots) | descendants(roots)

    def shutdown(self) -> None:
        """Stops every node, worker nodes first.

        Not ``Cluster.shutdown``: that also resets this process's Ray internal-KV client
        (an embedded Ray of the same test process would lose it) and deletes
        ``/tmp/ray/ray_current_cluster`` whoever wrote it.
        """
        cluster = self._cluster
        running = _identities(self.processes())
        for node in list(cluster.worker_nodes):
            # A raylet killed by a test is already dead: stop what remains.
            node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
            cluster.worker_nodes.discard(node)
        if cluster.head_node is not None:
            # The autoscaler monitor first: stopped after the GCS, it would sit out a
            # second's grace trying to report its exit (see imm_ray.cluster.shutdown_ray).
            cluster.head_node.kill_monitor(check_alive=False)
            cluster.head_node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
            cluster.head_node = None
        # Ray waits for the processes it started itself, not for what the raylets started
        # (workers, agents), which exit on their own soon after their raylet.
        _wait_gone(running)


@contextlib.contextmanager
def start_cluster(
    workers: int = 2,
    cpus: float = 1,
    gpus: float = 0,
    system_config: Mapping[str, Any] | None = None,
) -> Iterator[LocalCluster]:
    """A :class:`LocalCluster` with ``workers`` worker nodes of ``cpus`` CPUs and ``gpus``
    logical GPUs each (more, of other shapes, with ``add_worker``), the head's
    ``_system_config`` being :data:`FAST_NODE_DEATH` unless given; stopped on exit."""
    # Ray's unix sockets live under the temp dir, and socket paths are limited to ~107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="immray-", dir="/tmp"))
    cluster = None
    try:
        config = FAST_NODE_DEATH if system_config is None else system_config
        cluster = LocalCluster(temp_dir, config)
        for _ in range(workers):
            cluster.add_worker(cpus, gpus)
        yield cluster
    finally:
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """One :func:`start_cluster` (2 worker nodes of 1 CPU) shared by a test module. A test
    that kills a node starts its own."""
    with start_cluster() as started:
        yield started


@contextlib.contextmanager
def _ray_address_file_kept() -> Iterator[None]:
    """Puts back ``/tmp/ray/ray_current_cluster`` as it was: ``Cluster`` writes its head's
    address there (where a plain ``ray.init()`` of another test or user would find it)."""
    from ray._common.utils import get_ray_address_file

    path = Path(get_ray_address_file(None))
    before = path.read_text() if path.is_file() else None
    try:
        yield
    finally:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(before)


@contextlib.contextmanager
def _drivers_kv_kept() -> Iterator[None]:
    """Keeps this process's Ray internal-KV client as it was: every ``Node`` that Ray
    starts in-process points that module-wide client at its own GCS
    (``Node._init_gcs_client``), so an embedded Ray of the same test process (the
    ``ray_session`` fixture) would talk to the test cluster's GCS, and its core worker exit
    the process once that cluster is stopped."""
    from ray.experimental import internal_kv

    client, initialized = internal_kv.global_gcs_client, internal_kv._initialized
    try:
        yield
    finally:
        internal_kv.global_gcs_client, internal_kv._initialized = client, initialized


def _raylet(node: Any) -> Any:
    return node.all_processes["raylet"][0].process


# ``ray start`` clusters, for ``ray job submit``.


@dataclasses.dataclass
class JobCluster:
    """``ray start --head`` plus one node joined with ``ray start --address``."""

    job_address: str | None
    """The head's dashboard, where ``ray job submit --address`` sends jobs (None: started
    without one)."""
    address: str
    """The GCS address (``ray start --address`` / ``--address`` of a driver)."""
    starts: list[subprocess.Popen]
    """The ``ray start --block`` processes: the head's, then the worker node's (if any)."""
    temp_dirs: list[Path]
    """Each node's temp dir (its own, as on separate machines); the head's is
    ``ray_tmpdir / "ray"``."""
    ray_tmpdir: Path
    """A ``RAY_TMPDIR`` under which ``--address auto`` finds this cluster: ``ray start
    --head`` records its address in its temp dir's ``ray_current_cluster``, as in
    ``/tmp/ray`` by default. Nothing else runs there: an embedded Ray started with it
    (``RAY_TMPDIR`` set) keeps its session beside the head's."""

    def raylet_pids(self) -> list[int]:
        """The head's raylet, then the worker node's (if any)."""
        return [_child_named(start.pid, "raylet") for start in self.starts]

    def raylets_of_workers(self) -> dict[int, int]:
        """Worker process PID → the PID of the raylet that started it, on either node."""
        return raylets_of_workers(d / "session_latest" / "logs" for d in self.temp_dirs)

    def processes(self) -> set[int]:
        """PIDs of the ``ray start`` processes and everything under them."""
        roots = [start.pid for start in self.starts]
        return set(roots) | descendants(roots)


@contextlib.contextmanager
def start_job_cluster(
    head_cpus: float = 1, worker_cpus: float | None = 1, jobs: bool = True
) -> Iterator[JobCluster]:
    """A :class:`JobCluster`, both nodes up and registered; stopped on exit (the worker
    node first), its temp dirs removed.

    ``worker_cpus=None`` starts the head alone, and ``jobs=False`` without its dashboard
    (so without ``ray job submit``): one's own ``ray start --head`` at its cheapest.

    Token authentication is on, as ``ray start`` has it by default (the token is
    ``~/.ray/auth_token``): the joining node and any client need ``RAY_AUTH_MODE=token``.
    A job inherits the head's environment: ``PATH`` leads to this environment's
    ``imm-ray``, and the single-machine switch lets its driver join on 127.0.0.1.
    """
    ray_tmpdir = Path(tempfile.mkdtemp(prefix="immray-", dir="/tmp"))
    temp_dirs = [ray_tmpdir / "ray"]
    if worker_cpus is not None:
        temp_dirs.append(Path(tempfile.mkdtemp(prefix="immray-", dir="/tmp")))
    port, dashboard = free_port(), free_port()
    if jobs:
        head_dashboard = [f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dashboard}"]
    else:
        head_dashboard = ["--include-dashboard=false"]
    env = {
        **driver_env(),
        "PATH": f"{RAY.parent}{os.pathsep}{os.environ['PATH']}",
        # `ray start --block` drains its node for up to 30 s on SIGTERM (for Ray Serve).
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    common = ["--block", f"--node-ip-address={LOOPBACK}", "--disable-usage-stats"]
    starts: list[subprocess.Popen] = []
    try:
        starts.append(
            _ray_start(
                [str(RAY), "start", "--head", *common, f"--port={port}", *head_dashboard]
                + [f"--num-cpus={head_cpus}", f"--temp-dir={temp_dirs[0]}"]
                + [f"--dashboard-agent-listen-port={free_port()}"],
                env,
            )
        )
        if worker_cpus is not None:
            starts.append(
                _ray_start(
                    [sys.executable, "-c", JOIN_LOOPBACK, "start", *common]
                    + [f"--address={LOOPBACK}:{port}", f"--num-cpus={worker_cpus}"]
                    + [f"--temp-dir={temp_dirs[1]}"]
                    + [f"--dashboard-agent-listen-port={free_port()}"],
                    env,
                )
            )
        address = f"{LOOPBACK}:{port}"
        _wait_for_nodes(address, len(starts), env)
        job_address = f"http://{LOOPBACK}:{dashboard}" if jobs else None
        yield JobCluster(job_address, address, starts, temp_dirs, ray_tmpdir)
    finally:
        roots = [start.pid for start in starts]
        running = _identities(set(roots) | descendants(roots))
        for start in reversed(starts):
            _stop(start)
        _wait_gone(running)
        for temp_dir in (ray_tmpdir, *temp_dirs[1:]):
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def job_cluster() -> Iterator[JobCluster]:
    """One :func:`start_job_cluster` (two nodes of 1 CPU) shared by a test module."""
    with start_job_cluster() as started:
        yield started


def _ray_start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Starts ``ray start --block ...`` in its own process group; returns once it says the
    node runs (``TimeoutError`` after 60 s, ``RuntimeError`` if it exits)."""
    log = tempfile.TemporaryFile(mode="w+")
    start = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while True:
        log.seek(0)
        output = log.read()
        if "Ray runtime started" in output:
            return start
        if start.poll() is not None or time.monotonic() > deadline:
            _stop(start)
            raise RuntimeError(f"{' '.join(command[:3])} did not start:\n{output[-3000:]}")
        time.sleep(0.1)


def _wait_for_nodes(address: str, count: int, env: dict[str, str], timeout: float = 60) -> None:
    """Waits until the GCS at ``address`` counts ``count`` alive nodes."""
    probe = f"""
import time
from ray._raylet import GcsClient
client = GcsClient(address="{address}")
deadline = time.monotonic() + {timeout}
while sum(n.state == 0 for n in client.get_all_node_info().values()) < {count}:
    if time.monotonic() > deadline:
        raise SystemExit("fewer than {count} nodes alive after {timeout} s")
    time.sleep(0.2)
"""
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=timeout + 30)


def _child_named(pid: int, name: str) -> int:
    """The PID of ``pid``'s child process whose command is ``name``."""
    for child, parent in _parents().items():
        with contextlib.suppress(OSError):
            if parent == pid and Path(f"/proc/{child}/comm").read_text().strip() == name:
                return child
    raise LookupError(f"process {pid} has no child named {name!r}")


def _stop(start: subprocess.Popen) -> None:
    """SIGTERM to a ``ray start --block`` process group (Ray stops its node's processes),
    SIGKILL after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(start.pid, signal.SIGTERM)
    try:
        start.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(start.pid, signal.SIGKILL)
        start.wait(timeout=30)


def submit(
    address: str,
    *imm_ray_args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> str:
    """Runs ``ray job submit --address ADDRESS --working-dir <repo> -- imm-ray ARGS`` and
    returns what it printed (stdout, then stderr). With ``check``, a failed submission or
    job fails the test with the output's tail.

    The job agent takes a few seconds to come up after ``ray start``: until then the
    submission fails with "No available agent" or "Failed to connect", and is retried for
    up to 2 minutes.
    """
    command = [str(RAY), "job", "submit", "--address", address, "--working-dir", str(REPO)]
    command += ["--", "imm-ray", *imm_ray_args]
    # The client reads the cluster's token from ~/.ray/auth_token in token mode.
    env = {**driver_env(), **(env or {})}
    deadline = time.monotonic() + 120
    while True:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        output = result.stdout + result.stderr
        agent_not_up = "No available agent" in output or "Failed to connect" in output
        if result.returncode == 0 or not agent_not_up or time.monotonic() > deadline:
            break
        time.sleep(3)
    if check:
        assert result.returncode == 0 and "succeeded" in output, output[-3000:]
    return output


# Processes, listeners and where trials ran.


def descendants(roots: Iterable[int]) -> set[int]:
    """PIDs of every living descendant of ``roots`` (not the roots themselves)."""
    parent = _parents()
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def _parents() -> dict[int, int]:
    """PID → parent PID of every process on the machine."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    return parent


def process_titles(pids: Iterable[int]) -> list[str]:
    """The titles (first word of the command line) of those of ``pids`` that run."""
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode())
        except OSError:
            continue
    return found


def alive(pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` that still run (zombies, exited but not yet reaped, do not)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def _identities(pids: Iterable[int]) -> dict[int, str]:
    """PID → its start time (since boot), for the processes of ``pids`` that run: a PID
    with the same start time later is the same process."""
    found = {}
    for pid in pids:
        try:
            found[pid] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            continue
    return found


def _wait_gone(processes: dict[int, str], timeout: float = 10) -> None:
    """Waits until none of ``processes`` (from :func:`_identities`) runs; SIGKILLs what
    still does after ``timeout``. A temp dir removed while one of them runs can be
    written into again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(processes):
            return
        time.sleep(0.1)
    for pid, started in _identities(alive(processes)).items():
        if started == processes[pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def listening(pids: Iterable[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that the processes ``pids`` listen on."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    seen = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = cols[1].split(":")
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            seen.add((socket.inet_ntop(family, raw), int(port, 16)))
    return seen


def processes_under(folder: Path) -> list[int]:
    """PIDs of the processes whose command line names ``folder`` (Ray's, for its temp dir)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(folder).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def raylets_of_workers(logs_dirs: Iterable[Path]) -> dict[int, int]:
    """Worker process PID → the PID of the raylet that started it, from the raylets' logs
    in ``logs_dirs`` (a session's ``logs`` folders; nodes sharing one each have their own
    ``raylet*.out``)."""
    found = {}
    for logs in logs_dirs:
        for log in Path(logs).glob("raylet*.out"):
            for raylet, worker in _STARTED_WORKER.findall(log.read_text(errors="replace")):
                found[int(worker)] = int(raylet)
    return found


def trial_processes(folder: Path) -> dict[str, set[int]]:
    """Trial folder name → the PIDs of the worker processes that reported its results (Tune
    writes each result's ``pid`` to ``result.json``; a trial's ``trial.pid`` file stays on
    the node that ran it unless that node is the driver's)."""
    from tuning.report import parse_rows

    found: dict[str, set[int]] = {}
    for result in Path(folder).glob("*/result.json"):
        found[result.parent.name] = {row["pid"] for row in parse_rows(result.read_text())}
    return found
