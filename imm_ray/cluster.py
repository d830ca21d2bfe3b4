"""Starting or joining Ray, the same way for every ``imm-ray`` command.

With no address (and no ``RAY_ADDRESS``), an embedded single-machine Ray starts on
loopback only and without the dashboard: nothing listens beyond this machine. Ray has one
switch for that, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (its single-machine mode, the
default on Windows and macOS), under which the node's address is 127.0.0.1 and the GCS,
raylet, object manager and workers bind it alone. Ray reads the switch when it is first
imported, so :func:`prefer_loopback` sets it before that (``imm-ray`` does so right after
parsing its arguments); a user's own setting wins. Token authentication stays Ray's
default.

With an address, the command joins that cluster, which is what ``ray job submit --
imm-ray ...`` does (Ray sets ``RAY_ADDRESS`` in a job); the switch is left alone. The
cluster is probed first (:func:`check_reachable`): ``ray.init`` itself waits on an address
where no Ray answers for minutes, logging its retries. Once Ray is up, a request per trial
that no node of a fixed cluster can hold fails at once (:func:`check_request`) rather than
waiting for a node that never comes.

An embedded Ray takes about 2 s to start, most of it waiting for Ray's own processes to
come up, and took 1.4 s to stop, most of that a fixed wait (:func:`shutdown_ray` skips
it); :func:`shutdown_ray_during` runs work, such as writing a report, while Ray stops.

The driver prints what its workers print (a sweep's trial lines) as Ray forwards it, plain
(:func:`plain_worker_lines`): one line for each line printed, and no escape codes where
the console is not a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from imm_ray import _compat

T = TypeVar("T")

#: Ray's switch between cluster mode and single-machine (loopback) mode.
SINGLE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Seconds a cluster's GCS gets for each step of :func:`check_reachable`'s probe.
REACH_TIMEOUT_S = 5.0
#: Where Ray reads the token of a cluster with token authentication, first found first.
TOKEN_SOURCES = "$RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"


class ClusterError(ValueError):
    """A cluster that cannot be joined, or cannot run a trial; the message names the option."""


def joins_cluster(address: str | None) -> bool:
    """Whether Ray will join a running cluster rather than start an embedded one."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def prefer_loopback(address: str | None = None) -> None:
    """Asks for Ray's single-machine mode unless a cluster is to be joined. Takes effect
    only in a process that has not imported Ray yet."""
    if not joins_cluster(address):
        os.environ.setdefault(SINGLE_MACHINE_SWITCH, "0")


def plain_worker_lines() -> None:
    """Ray's driver prints every line its workers print (with ``log_to_driver``, Ray's
    default) after a ``(name pid=N)`` prefix. By default Ray 2.60 wraps that prefix in
    colour escape codes whatever the console (only ``RAY_COLOR_PREFIX=0`` leaves them
    out), and folds lines that several workers print alike (up to their numbers) within 5
    s into the first, printing ``[repeated Nx across cluster]`` later, with a notice on how
    to turn that off (``RAY_DEDUP_LOGS=0``, which Ray reads when it is first imported).

    Asks for every line as it was printed, and for no colour unless both stdout and stderr
    are terminals; a user's own setting of either variable wins. Takes effect for the
    folding only in a process that has not imported Ray yet.
    """
    from imm_ray.progress import is_terminal

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not (is_terminal(sys.stdout) and is_terminal(sys.stderr)):
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def init_ray(address: str | None = None, *, prestart_workers: bool = True, **kwargs) -> bool:
    """Joins ``address`` (or ``$RAY_ADDRESS``), else starts an embedded loopback Ray.

    Does nothing if Ray is already initialized in this process. ``kwargs`` go to
    ``ray.init`` (e.g. ``num_cpus``, ``log_to_driver``). Returns whether this call started
    (or joined) Ray, i.e. whether its caller should :func:`shutdown_ray` when done: an
    explicit shutdown skips the half second that Ray's exit hook waits for log lines.

    An embedded Ray starts one idle worker per CPU as soon as the driver connects (Ray's
    ``prestart_worker_first_driver``), for tasks and actors without a runtime env.
    ``prestart_workers=False`` skips them where nothing would use them (their start-up,
    ≈ 0.5 CPU-second each, would only compete with the work): Tune's trial actors have a
    runtime env unless :mod:`tuning.sweep` takes it off.
    """
    prefer_loopback(address)
    plain_worker_lines()
    import ray

    if ray.is_initialized():
        return False
    kwargs.setdefault("logging_level", logging.WARNING)
    named = None
    if joins_cluster(address):
        named = check_reachable(address)
    else:
        config = kwargs.setdefault("_system_config", {})
        if not prestart_workers:
            config.setdefault("prestart_worker_first_driver", False)
        # The raylet connects to its own object store as the store starts, and Ray
        # retries a failed connection once a second (10 tries): on a busy machine about
        # half the starts waited a whole second. The same 10 s of patience, in 50 ms
        # steps.
        config.setdefault("raylet_client_connect_timeout_milliseconds", 50)
        config.setdefault("raylet_client_num_connect_attempts", 200)
        # "local" starts a new Ray even where another one runs on this machine: without
        # it, ray.init() joins the cluster that `ray start` (or a leftover
        # /tmp/ray/ray_current_cluster file) names, and refuses the _system_config above.
        address = "local"
        kwargs.setdefault("include_dashboard", False)
    try:
        with _sigint_held():
            ray.init(address=address, **kwargs)
    except ConnectionError as err:
        if named is None:
            raise
        raise ClusterError(
            f"--address: cannot join the Ray cluster at {named}: {_join_failure(err)}"
        ) from None
    except KeyboardInterrupt:
        if ray.is_initialized():
            shutdown_ray()
        raise
    return True


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Holds SIGINT back from this thread, and from the threads and processes Ray starts
    from it, for a ``with`` block; one that came meanwhile is delivered on the way out.

    A SIGINT inside ``ray.init`` (sent 5 s into a sweep, as Ray started) once left the
    driver waiting forever for its GCS, in C++ where Python cannot stop it; delivered
    after, it raises KeyboardInterrupt with Ray up, to be shut down.
    """
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def check_reachable(address: str | None) -> str:
    """Raises :class:`ClusterError` unless a Ray GCS answers where ``ray.init(address)``
    would connect, and would let this driver in; returns how the cluster is named in
    messages.

    The address is resolved as Ray resolves it: ``$RAY_ADDRESS`` stands in for no address
    or ``"auto"``, and a loopback host becomes this node's address in cluster mode. ``auto``
    is the cluster that the last ``ray start`` on this machine recorded in
    ``ray_current_cluster`` under Ray's temp dir (``$RAY_TMPDIR``, else ``$TMPDIR``, else
    /tmp, plus ``/ray``). Where that file is missing, Ray would join any raylet it finds
    among this machine's processes, another program's embedded Ray included; imm-ray
    refuses instead. The probe takes at most three times :data:`REACH_TIMEOUT_S`: a TCP
    connection, a gRPC handshake, then the request for the cluster's id that a joining
    driver makes first (Ray retries it for minutes where nothing answers, and for 20 s,
    logging each try, where the cluster refuses the driver's token).
    """
    from ray._common.utils import get_ray_address_file
    from ray._private.services import canonicalize_bootstrap_address
    from ray._private.utils import read_ray_address

    # ray.init sends the token it finds only when given no address or "auto".
    sends_token_itself = address in (None, "", "auto")
    from_env = os.environ.get("RAY_ADDRESS") or None
    if sends_token_itself and from_env:
        address, named = from_env, f"{from_env} ($RAY_ADDRESS)"
    else:
        named = str(address)
    if address == "auto":
        recorded = read_ray_address()
        if not recorded:
            raise ClusterError(
                f"--address: cannot reach a Ray cluster at {named}: no cluster started by "
                f"`ray start` is recorded in {get_ray_address_file(None)}"
            )
        address, named = recorded, f"{named}, which `ray start` recorded as {recorded}"
    client = address.startswith("ray://")
    if client:
        target = address.removeprefix("ray://")
    else:
        try:
            target = canonicalize_bootstrap_address(address)
        except ValueError:
            hint = " (an http:// address is for `ray job submit`)" if "://" in address else ""
            raise ClusterError(
                f"--address must be 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}{hint}"
            ) from None
        if target != address:
            named = f"{named}, which Ray reaches as {target}"
    why = _unreachable(target)
    if why:
        raise ClusterError(f"--address: cannot reach a Ray cluster at {named}: {why}")
    if not client:
        refused = _refused(target, sends_token_itself)
        if refused:
            raise ClusterError(f"--address: the Ray cluster at {named} {refused}")
    return named


def _unreachable(target: str) -> str | None:
    """Why nothing answers gRPC at ``host:port`` (a GCS, or a Ray Client server); None if
    something does."""
    import grpc
    from ray._private.grpc_utils import init_grpc_channel

    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), REACH_TIMEOUT_S).close()
    except TimeoutError:
        return f"no answer within {REACH_TIMEOUT_S:g} s"
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or str(err)
        return why[:1].lower() + why[1:]
    channel = init_grpc_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=REACH_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        return "something listens there, but it does not answer as Ray does"
    finally:
        channel.close()
    return None


def _refused(target: str, sends_token_itself: bool) -> str | None:
    """Why the GCS at ``target`` would not let this driver join; None if it would.

    Asks for the cluster's id, as a joining driver first does, with the token this process
    sends now. A driver given no address or ``auto`` finds and sends its token only inside
    ``ray.init``, which then settles the matter itself.
    """
    import grpc
    from ray._private.authentication.authentication_utils import is_token_auth_enabled
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = init_grpc_channel(target)
    try:
        gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
            gcs_service_pb2.GetClusterIdRequest(), timeout=REACH_TIMEOUT_S
        )
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.UNAUTHENTICATED:
            return f"does not answer as Ray's GCS does ({err.code().name})"
        if is_token_auth_enabled():
            return f"refuses this driver's token (from {TOKEN_SOURCES})"
        if not sends_token_itself:
            return f"asks for a token: set RAY_AUTH_MODE=token (Ray reads {TOKEN_SOURCES})"
    finally:
        channel.close()
    return None


def _join_failure(err: ConnectionError) -> str:
    """The reason a ``ray.init`` that was to join a cluster failed, from its causes."""
    cause: BaseException | None = err
    while cause is not None:
        if "AuthenticationError" in f"{type(cause).__name__} {cause}":
            return f"it refused this driver's token (RAY_AUTH_MODE=token sends {TOKEN_SOURCES})"
        cause = cause.__cause__
    return str(err)


def check_request(cpus: float, gpus: float) -> None:
    """Raises :class:`ClusterError` unless some node of the running Ray can hold a trial
    of ``cpus`` CPUs and ``gpus`` GPUs (the ``--cpus-per-trial`` and ``--gpus-per-trial``
    of a sweep).

    Without it such a trial waits forever while Ray's autoscaler repeats "No available node
    types can fulfill resource request". A cluster whose autoscaler publishes node types
    that it may still start (KubeRay's) is left to decide for itself.
    """
    import ray

    try:
        cluster_config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - e.g. a Ray Client driver, which has no GCS accessor
        cluster_config = None
    if cluster_config is not None and cluster_config.node_group_configs:
        return
    nodes = [
        (node["Resources"].get("CPU", 0.0), node["Resources"].get("GPU", 0.0))
        for node in ray.nodes()
        if node["Alive"]
    ]
    if any(cpu >= cpus and gpu >= gpus for cpu, gpu in nodes):
        return
    if not any(cpu >= cpus for cpu, _ in nodes):
        largest = max(nodes, default=(0.0, 0.0))
        asked, what = f"--cpus-per-trial {cpus:g}", "that many CPUs"
    elif not any(gpu >= gpus for _, gpu in nodes):
        largest = max(nodes, key=lambda node: node[::-1], default=(0.0, 0.0))
        asked, what = f"--gpus-per-trial {gpus:g}", "that many GPUs"
    else:
        shapes = ", ".join(_shape(*node) for node in sorted(set(nodes), reverse=True))
        raise ClusterError(
            f"--cpus-per-trial {cpus:g} with --gpus-per-trial {gpus:g}: no node of this "
            f"cluster has both; its nodes have {shapes}"
        )
    raise ClusterError(
        f"{asked}: no node of this cluster has {what}; the largest has {_shape(*largest)}"
    )


def _shape(cpus: float, gpus: float) -> str:
    def count(value: float, unit: str) -> str:
        return f"{value:g} {unit}" + ("" if value == 1 else "s")

    return f"{count(cpus, 'CPU')} and {count(gpus, 'GPU')}"


def shutdown_ray() -> None:
    """``ray.shutdown()``, without its one-second wait on an embedded Ray's autoscaler
    monitor.

    Ray stops its processes one after the other, each with up to a second's grace after
    SIGTERM, and the monitor comes after the GCS: its SIGTERM handler then tries to tell
    the stopped GCS of its exit and sits out the whole second. A single-machine Ray has
    nothing to autoscale, so the monitor this process started is killed first (Ray's own
    ``Node.kill_monitor``, a private API: only on the Ray it was tested on,
    :func:`imm_ray._compat.ray_kill_monitor`); then Ray shuts down as usual. A driver
    that joined a cluster started no monitor, and leaves the cluster's alone. On another
    Ray this is plain ``ray.shutdown()``, a second slower.
    """
    import ray

    if not _compat.ray_kill_monitor():
        ray.shutdown()
        return
    node = getattr(ray._private.worker, "_global_node", None)
    kill_monitor = getattr(node, "kill_monitor", None)
    if getattr(node, "head", False) and kill_monitor is not None:
        try:
            kill_monitor(check_alive=False)
        except Exception:  # noqa: BLE001 - ray.shutdown() below stops it the slow way
            pass
    ray.shutdown()


def shutdown_ray_during(work: Callable[[], T]) -> T:
    """Returns ``work()``, run on this thread while :func:`shutdown_ray` runs on a helper
    one; returns (or raises ``work``'s error) only once Ray is down."""
    stopper = threading.Thread(target=shutdown_ray, name="imm-ray-shutdown", daemon=True)
    stopper.start()
    try:
        return work()
    finally:
        stopper.join()
