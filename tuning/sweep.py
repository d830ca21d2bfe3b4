"""Running an experiment (:class:`~tuning.base.SweepExperiment`) on Ray Tune, resumably.

Every trial trains what its kind's trainable says (for RL: one λ and a chunk of seeds;
for the logistic experiments: a group of dataset sizes with all their Monte Carlo runs)
and reports once per dataset size: ``{"size": n, "values": {seed or run: value}}``.
Results land under ``storage/<experiment name>/`` (Tune's experiment state plus one folder
per trial); :mod:`tuning.report` turns them into the CSV, the markdown table and the plot.
"""

from __future__ import annotations

import os
import sys
import time
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


class ProgressLines(tune.Callback):
    """One line per finished, retried or failed trial, with the count and an ETA.

    Stands in for Tune's status tables (``verbose=0``); ``run_sweep(verbose=True)``
    brings those back instead.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.finished = 0
        self.start = time.monotonic()

    def _line(self, trial: Any, what: str) -> None:
        elapsed = time.monotonic() - self.start
        left = self.total - self.finished
        eta = f", ETA {elapsed / self.finished * left:.0f}s" if self.finished and left else ""
        spec = trial.config["trial"]
        print(
            f"[{self.finished}/{self.total} trials, {elapsed:.0f}s{eta}] {what}: "
            f"{spec['setting']} ({spec['tag']})",
            file=sys.stderr,
            flush=True,
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        self._line(trial, "done")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "failed, retrying")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        self._line(trial, f"errored after {MAX_FAILURES} retries")


def run_sweep(
    experiment: SweepExperiment,
    storage: Path,
    *,
    resume: bool = False,
    address: str | None = None,
    verbose: bool = False,
) -> Path:
    """Runs (or with ``resume`` continues) ``experiment``; returns its results folder.

    ``address`` joins a running cluster (default: ``$RAY_ADDRESS``, else an embedded Ray).
    By default the console gets one line per trial (:class:`ProgressLines`); ``verbose``
    shows Tune's own status tables instead.
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
    if not verbose:
        # Tune's newer console output prints its start banner even at verbose=0; the
        # classic reporter is silent there, and ProgressLines speaks instead.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    trainable = tune.with_resources(
        experiment.trainable(),
        {"cpu": experiment.cpus_per_trial, "gpu": experiment.gpus_per_trial},
    )
    # Trials run on Tune's own actors, never on workers Ray would prestart for tasks.
    started = init_ray(address, prestart_workers=False)
    try:
        _fit(experiment, trainable, storage, folder, resume=resume, verbose=verbose)
    finally:
        if started:
            import ray

            ray.shutdown()
    return folder


def _fit(
    experiment: SweepExperiment,
    trainable: Any,
    storage: Path,
    folder: Path,
    *,
    resume: bool,
    verbose: bool,
) -> None:
    if resume:
        tuner = tune.Tuner.restore(
            str(folder), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        save_experiment(folder, experiment)
        trials = experiment.trials()
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trials)},
            run_config=tune.RunConfig(
                name=experiment.name,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                # Language-model trials checkpoint every epoch; a restart needs the last one.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                verbose=2 if verbose else 0,
                callbacks=[] if verbose else [ProgressLines(len(trials))],
            ),
            tune_config=tune.TuneConfig(trial_dirname_creator=_trial_dirname, reuse_actors=True),
        )
    tuner.fit()


def _trial_dirname(trial: Any) -> str:
    spec = trial.config["trial"]
    label = "".join(c if c.isalnum() else "_" for c in spec["setting"])[:40]
    return f"{trial.trial_id}_{label}_{spec['tag']}"
