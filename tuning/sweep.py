"""Running an experiment (:class:`~tuning.base.SweepExperiment`) on Ray Tune, resumably.

Every trial trains one setting (for RL: one λ and a chunk of seeds; for the logistic
experiments: a group of dataset sizes with all their Monte Carlo runs) and reports once
per dataset size: ``{"size": n, "values": {seed or run: value}}``. Results land under
``storage/<experiment name>/`` (Tune's experiment state plus one folder per trial);
:mod:`tuning.report` turns them into the CSV, the markdown table and the plot.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ray import tune

from tuning.base import SweepExperiment
from tuning.report import save_experiment

#: How often Tune retries a crashed trial before marking it errored.
MAX_FAILURES = 2


class SweepError(ValueError):
    """A sweep that cannot start (e.g. results already there without ``--resume``)."""


def trial_runs(trial: dict[str, Any]) -> Any:
    """What a trial trains: one seed-vectorized ``SeedReinforceConfig`` for all its seeds,
    or, for a sampled extension (which the vectorized path leaves out), a list of per-seed
    ``RunSpec``s."""
    from imm_ray.rl.imm_config import TargetSpec
    from imm_ray.rl.runs import IMM, NO_IMM, RunSpec
    from imm_ray.rl.seeds import SeedReinforceConfig

    target = TargetSpec(**trial["target"])
    if trial["num_samples"] is not None:
        return [
            RunSpec(
                method=IMM if trial["imm"] else NO_IMM,
                seed=seed,
                lam=trial["lam"],
                eval_epochs=tuple(trial["epochs"]),
                target=target,
                num_samples=trial["num_samples"],
                env=trial["env"],
                env_config=trial["env_config"],
                num_gpus=trial["gpus"],
            )
            for seed in trial["seeds"]
        ]
    config = (
        SeedReinforceConfig()
        .environment(env=trial["env"], env_config=dict(trial["env_config"]))
        .training(seeds=trial["seeds"])
        .imm(lam=trial["lam"], target=target if trial["imm"] else None)
    )
    if trial["gpus"] > 0:
        config.learners(num_gpus_per_learner=trial["gpus"])
    return config


def validate_trial(trial: dict[str, Any]) -> None:
    """Checks a trial's settings against its env (target solved, shapes) without Ray."""
    runs = trial_runs(trial)
    for config in [run.config() for run in runs] if isinstance(runs, list) else [runs]:
        config.validate()


def rl_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable: one setting × one λ × its seeds, evaluated along the way."""
    from imm_ray.rl.runs import train_and_evaluate
    from imm_ray.rl.seeds import train_and_evaluate_seeds

    trial = config["trial"]
    runs = trial_runs(trial)
    if isinstance(runs, list):
        per_seed = {run.seed: train_and_evaluate(run) for run in runs}
        rewards = {e: {s: r[e] for s, r in per_seed.items()} for e in trial["epochs"]}
    else:
        per_epoch = train_and_evaluate_seeds(runs, trial["epochs"])
        rewards = {
            e: dict(zip(trial["seeds"], values.tolist(), strict=True))
            for e, values in per_epoch.items()
        }
    for epoch in trial["epochs"]:
        tune.report({"size": epoch, "values": {str(s): v for s, v in rewards[epoch].items()}})


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
    import ray

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
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING)
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
