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
imm-ray ...`` does (Ray sets ``RAY_ADDRESS`` in a job); the switch is left alone.

An embedded Ray takes about 2 s to start, most of it waiting for Ray's own processes to
come up, and took 1.4 s to stop, most of that a fixed wait (:func:`shutdown_ray` skips
it); :func:`shutdown_ray_during` runs work, such as writing a report, while Ray stops.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Ray's switch between cluster mode and single-machine (loopback) mode.
SINGLE_MACHINE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def joins_cluster(address: str | None) -> bool:
    """Whether Ray will join a running cluster rather than start an embedded one."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def prefer_loopback(address: str | None = None) -> None:
    """Asks for Ray's single-machine mode unless a cluster is to be joined. Takes effect
    only in a process that has not imported Ray yet."""
    if not joins_cluster(address):
        os.environ.setdefault(SINGLE_MACHINE_SWITCH, "0")


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
    import ray

    if ray.is_initialized():
        return False
    kwargs.setdefault("logging_level", logging.WARNING)
    if joins_cluster(address):
        ray.init(address=address, **kwargs)
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
        ray.init(address="local", include_dashboard=False, **kwargs)
    return True


def shutdown_ray() -> None:
    """``ray.shutdown()``, without its one-second wait on an embedded Ray's autoscaler
    monitor.

    Ray stops its processes one after the other, each with up to a second's grace after
    SIGTERM, and the monitor comes after the GCS: its SIGTERM handler then tries to tell
    the stopped GCS of its exit and sits out the whole second. A single-machine Ray has
    nothing to autoscale, so the monitor this process started is killed first (Ray's own
    ``Node.kill_monitor``, where that exists); then Ray shuts down as usual. A driver
    that joined a cluster started no monitor, and leaves the cluster's alone.
    """
    import ray

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
