"""Running an experiment (:class:`~tuning.base.SweepExperiment`) on Ray Tune, resumably.

Every trial trains what its kind's trainable says (for RL: one λ and a chunk of seeds;
for the logistic experiments: a group of dataset sizes with all their Monte Carlo runs)
and reports once per dataset size: ``{"size": n, "values": {seed or run: value}}``.
Results land under ``storage/<experiment name>/`` (Tune's experiment state plus one folder
per trial); :mod:`tuning.report` turns them into the CSV, the markdown table and the plot.

A small sweep is mostly start-up and shutdown: Tune is imported only once the sweep's
input has been checked and Ray is up, the first trials run on the workers Ray prestarts
as the driver connects (they start while the driver imports Tune), the TensorBoard
logger (which imports PyTorch into the driver) loads only on request, and
:func:`run_sweep_and_report` writes the report while Ray stops.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from imm_ray.cluster import check_request, init_ray, shutdown_ray, shutdown_ray_during
from tuning.base import SweepExperiment
from tuning.report import save_experiment, write_report

#: How often Tune retries a crashed trial before marking it errored.
MAX_FAILURES = 2
#: Checkpoints Tune keeps per trial (the newest ones).
CHECKPOINTS_KEPT = 2

T = TypeVar("T")


class SweepError(ValueError):
    """A sweep that cannot start (e.g. results already there without ``--resume``)."""


def run_sweep(
    experiment: SweepExperiment,
    storage: Path,
    *,
    resume: bool = False,
    address: str | None = None,
    verbose: bool = False,
    tensorboard: bool = False,
) -> Path:
    """Runs (or with ``resume`` continues) ``experiment``; returns its results folder.

    A request per trial that no node of the cluster can hold fails before any trial
    starts (:class:`~imm_ray.cluster.ClusterError`).

    ``address`` joins a running cluster (default: ``$RAY_ADDRESS``, else an embedded Ray).
    By default the console gets one line per trial (:class:`~tuning.progress.ProgressLines`);
    ``verbose`` shows Tune's own status tables instead. Tune's JSON and CSV results are
    written for every trial; ``tensorboard`` adds its TensorBoard event files (whose
    writer imports PyTorch into the driver: about a second and a half).
    """
    return _run(experiment, storage, lambda folder: folder, resume, address, verbose, tensorboard)


def run_sweep_and_report(
    experiment: SweepExperiment,
    storage: Path,
    *,
    resume: bool = False,
    address: str | None = None,
    verbose: bool = False,
    tensorboard: bool = False,
) -> dict[str, Path]:
    """:func:`run_sweep`, then :func:`~tuning.report.write_report` on its results, written
    while an embedded Ray shuts down; returns the report's paths."""
    return _run(experiment, storage, write_report, resume, address, verbose, tensorboard)


def _run(
    experiment: SweepExperiment,
    storage: Path,
    then: Callable[[Path], T],
    resume: bool,
    address: str | None,
    verbose: bool,
    tensorboard: bool,
) -> T:
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
    # An embedded Ray prestarts one worker per CPU as the driver connects; the first
    # trials run on them (see _trials_on_prestarted_workers) and find Ray imported.
    started = init_ray(address)
    try:
        check_request(experiment.cpus_per_trial, experiment.gpus_per_trial)
        with _trials_on_prestarted_workers():
            _fit(
                experiment, storage, folder, resume=resume, verbose=verbose, tensorboard=tensorboard
            )
    except BaseException:
        if started:
            shutdown_ray()
        raise
    if started:
        return shutdown_ray_during(lambda: then(folder))
    return then(folder)


@contextlib.contextmanager
def _trials_on_prestarted_workers() -> Iterator[None]:
    """Lets Tune's trial actors run on the idle workers an embedded Ray prestarts.

    Ray starts one worker per CPU as the driver connects, while the driver still imports
    Tune and builds its Tuner, but only tasks and actors without a runtime env may use
    them. Tune gives every trial actor one, ``{"env_vars": {"PL_DISABLE_FORK": "1"}}`` (a
    PyTorch Lightning workaround, ray-project/ray#28197; no imm-ray trainable uses
    Lightning), so each first trial waited for a fresh worker to start and import Ray
    (≈ 0.7 s) while the prestarted ones idled. Within this block Tune's default
    environment lacks that variable. Tune also passes a few of the driver's own variables
    on (cloud credentials, some of Ray Train's settings): with any of those set, its
    actors keep a runtime env and start their own workers, as before.
    """
    try:
        from ray.tune.execution import class_cache

        defaults = class_cache.DEFAULT_ENV_VARS
    except (ImportError, AttributeError):  # another Tune: trials keep their runtime env
        defaults = None
    if not isinstance(defaults, dict):
        yield
        return
    saved = dict(defaults)
    defaults.pop("PL_DISABLE_FORK", None)
    try:
        yield
    finally:
        defaults.clear()
        defaults.update(saved)


def _fit(
    experiment: SweepExperiment,
    storage: Path,
    folder: Path,
    *,
    resume: bool,
    verbose: bool,
    tensorboard: bool,
) -> None:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    from tuning.progress import ProgressLines

    trainable = tune.with_resources(
        experiment.trainable(),
        {"cpu": experiment.cpus_per_trial, "gpu": experiment.gpus_per_trial},
    )
    if resume:
        # A restored sweep keeps the callbacks it was started with; Tune adds its default
        # loggers (TensorBoard's among them) to a sweep stored without them.
        tuner = tune.Tuner.restore(
            str(folder), trainable, resume_unfinished=True, resume_errored=True
        )
        tuner.fit()
        return
    folder.mkdir(parents=True, exist_ok=True)
    save_experiment(folder, experiment)
    trials = experiment.trials()
    # Tune's default loggers are JSON (result.json, which tuning.report reads), CSV and
    # TensorBoard; they are given explicitly and Tune's automatic ones switched off, so
    # that the TensorBoard writer (and PyTorch with it) loads only when asked for.
    loggers = [JsonLoggerCallback(), CSVLoggerCallback()]
    if tensorboard:
        loggers.append(TBXLoggerCallback())
    progress = [] if verbose else [ProgressLines(len(trials), MAX_FAILURES)]
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
            callbacks=loggers + progress,
        ),
        tune_config=tune.TuneConfig(trial_dirname_creator=_trial_dirname, reuse_actors=True),
    )
    with _environment(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"):
        tuner.fit()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Sets environment variables for a ``with`` block, then restores them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def __getattr__(name: str) -> Any:
    # Sweeps stored before ProgressLines moved to tuning.progress pickled it as
    # tuning.sweep.ProgressLines; --resume unpickles their Tuner.
    if name == "ProgressLines":
        from tuning.progress import ProgressLines

        return ProgressLines
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _trial_dirname(trial: Any) -> str:
    spec = trial.config["trial"]
    label = "".join(c if c.isalnum() else "_" for c in spec["setting"])[:40]
    return f"{trial.trial_id}_{label}_{spec['tag']}"
