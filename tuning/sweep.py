"""Running an experiment (:class:`~tuning.base.SweepExperiment`) on Ray Tune, resumably.

Every trial trains what its kind's trainable says (for RL: one λ and a chunk of seeds;
for the logistic experiments: a group of dataset sizes with all their Monte Carlo runs)
and reports once per dataset size: ``{"size": n, "values": {seed or run: value}}``.
Results land under ``storage/<experiment name>/`` (Tune's experiment state plus one folder
per trial); :mod:`tuning.report` turns them into the CSV, the markdown table and the plot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import tune

from imm_ray.cluster import init_ray
from tuning.base import SweepExperiment
from tuning.report import save_experiment

#: How often Tune retries a crashed trial before marking it errored.
MAX_FAILURES = 2
#: Checkpoints Tune keeps per trial (the newest ones).
CHECKPOINTS_KEPT = 2


class SweepError(ValueError):
    """A sweep that cannot start (e.g. results already there without ``--resume``)."""


def run_sweep(
    experiment: SweepExperiment,
    storage: Path,
    *,
    resume: bool = False,
    address: str | None = None,
    verbose: int = 1,
) -> Path:
    """Runs (or with ``resume`` continues) ``experiment``; returns its results folder.

    ``address`` joins a running cluster (default: ``$RAY_ADDRESS``, else an embedded Ray).
    """
    storage = storage.expanduser().resolve()
    folder = storage / experiment.name
    state_exists = any(folder.glob("experiment_state*.json")) if folder.is_dir() else False
    if resume and not state_exists:
        raise SweepError(f"--resume: no sweep to resume at {folder}")
    if not resume and folder.exists() and any(folder.iterdir()):
        raise SweepError(
            f"{folder} already holds results; pass --resume to continue that sweep, or "
            "choose another --storage"
        )
    # Tune records finished trials in its experiment state every 10 s by default; a killed
    # sweep reruns whatever finished since. Our state is small: save it every second.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    trainable = tune.with_resources(
        experiment.trainable(),
        {"cpu": experiment.cpus_per_trial, "gpu": experiment.gpus_per_trial},
    )
    init_ray(address)
    if resume:
        tuner = tune.Tuner.restore(
            str(folder), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        save_experiment(folder, experiment)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(experiment.trials())},
            run_config=tune.RunConfig(
                name=experiment.name,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                # Language-model trials checkpoint every epoch; a restart needs the last one.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                verbose=verbose,
            ),
            tune_config=tune.TuneConfig(trial_dirname_creator=_trial_dirname, reuse_actors=True),
        )
    tuner.fit()
    return folder


def _trial_dirname(trial: Any) -> str:
    spec = trial.config["trial"]
    label = "".join(c if c.isalnum() else "_" for c in spec["setting"])[:40]
    return f"{trial.trial_id}_{label}_{spec['tag']}"
