"""Starting or joining Ray, the same way for every ``imm-ray`` command.

With no address (and no ``RAY_ADDRESS``), an embedded single-machine Ray starts on
loopback only (its GCS, raylet and workers bind 127.0.0.1) and without the dashboard:
nothing listens beyond this machine. With an address, the command joins that cluster,
which is what ``ray job submit -- imm-ray ...`` does (Ray sets ``RAY_ADDRESS`` in a job).
"""

from __future__ import annotations

import logging
import os

#: The address an embedded Ray binds to.
LOOPBACK = "127.0.0.1"


def init_ray(address: str | None = None, **kwargs) -> None:
    """Joins ``address`` (or ``$RAY_ADDRESS``), else starts an embedded loopback Ray.

    Does nothing if Ray is already initialized in this process. ``kwargs`` go to
    ``ray.init`` (e.g. ``log_to_driver``).
    """
    import ray

    if ray.is_initialized():
        return
    kwargs.setdefault("logging_level", logging.WARNING)
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **kwargs)
    else:
        ray.init(_node_ip_address=LOOPBACK, include_dashboard=False, **kwargs)
