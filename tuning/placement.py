"""Where a trial trains: its Ray node and its torch device, added to every result row.

A trial that asks for GPUs (``gpus_per_trial``) gets a share of some node's GPUs from Ray,
but a node may declare GPUs that torch cannot use there (a logical GPU given to
``ray start --num-gpus``, or a CPU build of torch). Such a trial trains on CPU, and its
rows say so with ``gpu_unusable``; the driver warns once per trial
(:class:`~tuning.progress.GpuWarnings`). A trial given a share of a GPU (``0.25``) trains
on the GPU Ray assigned it, which torch sees as ``cuda:0`` (Ray sets
``CUDA_VISIBLE_DEVICES`` for the trial's worker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

#: File in a trial's folder holding the PID of the process that trains it.
PID_FILE = "trial.pid"


@dataclass(frozen=True)
class Placement:
    """A trial's node and device, and whether it was given a GPU that it cannot use."""

    node_id: str
    """Ray's id of the node the trial runs on (hex)."""
    device: str
    """The torch device it trains on: ``cpu`` or ``cuda:N``."""
    gpu_unusable: bool
    """It asked for a GPU, but torch finds no CUDA device on its node: it trains on CPU."""

    @classmethod
    def of_trial(cls, wants_gpu: bool) -> Placement:
        """The calling trial's placement: the first CUDA device Ray made visible to it when
        it asked for a GPU and torch can use one, else the CPU."""
        device = "cpu"
        if wants_gpu:
            import torch

            if torch.cuda.is_available():
                device = f"cuda:{torch.cuda.current_device()}"
        return cls(node_id(), device, wants_gpu and device == "cpu")

    @property
    def on_gpu(self) -> bool:
        return self.device != "cpu"

    def row(self) -> dict[str, Any]:
        """The keys every result row of the trial carries."""
        return {"node_id": self.node_id, "device": self.device, "gpu_unusable": self.gpu_unusable}


def node_id() -> str:
    """Ray's id of the node this process runs on (hex)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def start_trial() -> str:
    """The calling trial's folder, made if missing, with the trial's PID written to
    :data:`PID_FILE` in it (so an operator, or a test, can find the process that trains it).

    The folder is Tune's driver staging folder for the trial, the one its ``result.json``
    is written to and that Tune copies to the storage. ``tune.get_context().get_trial_dir()``
    is not it: Ray Tune (2.60) gives a function trainable that folder when its actor starts,
    but a reused actor (``reuse_actors``) the trial's working directory instead, which is
    never copied to the storage, so the PID of every trial after an actor's first was lost.

    On any node but the driver's the folder does not exist until made here, and what is
    written there stays on that node. The worker's console stays quiet as Ray stops it
    (:func:`~imm_ray.console.quiet_exit_in_finalizers`).
    """
    from ray import tune

    from imm_ray.console import quiet_exit_in_finalizers

    quiet_exit_in_finalizers()

    folder = tune.get_context().get_storage().trial_driver_staging_path
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, PID_FILE), "w") as handle:
        handle.write(f"{os.getpid()}\n")
    return folder
