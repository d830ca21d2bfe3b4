"""Running an experiment (:class:`~tuning.base.SweepExperiment`) on Ray Tune, resumably.

Every trial trains what its kind's :meth:`~tuning.base.SweepExperiment.trials` plan says
(for RL: one setting with all its λ groups side by side, over its seeds, or a chunk of
them when ``seeds_per_trial`` splits them; for the logistic experiments: one or more
settings at a group of dataset sizes with all their Monte Carlo runs; for LM and BERT: one
setting and one seed) and reports rows ``{"size": n, "values": {seed or run: value}}``,
with ``"setting"`` added where a trial reports several curves.
Results land under ``storage/<experiment name>/`` (Tune's experiment state plus one folder
per trial), where ``storage`` is a local folder or an object-store URI (:mod:`tuning.storage`);
:mod:`tuning.report` turns them into the CSV, the markdown table and the plot.

A small sweep is mostly start-up and shutdown: Tune is imported only once the sweep's
input has been checked and Ray is up, the first trials run on the workers Ray prestarts
as the driver connects (they start while the driver imports Tune), the TensorBoard
logger (which imports PyTorch into the driver) loads only on request, and
:func:`run_sweep_and_report` writes the report while Ray stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from imm_ray.cluster import check_request, init_ray, shutdown_ray, shutdown_ray_during
from tuning.base import SweepExperiment
from tuning.report import EXPERIMENT_FILE, Report, save_experiment, write_report
from tuning.resume import (
    STATE_PREFIX,
    check_state,
    forget_deleted_checkpoints,
    mend_before_resume,
)
from tuning.storage import Location, check_writable, resolve
from tuning.tracking import SweepTracking, check_beside, check_tracking, open_tracking

#: How often Tune retries a crashed trial before marking it errored.
MAX_FAILURES = 2
#: Checkpoints Tune keeps per trial (the newest ones).
CHECKPOINTS_KEPT = 2

T = TypeVar("T")


class SweepError(ValueError):
    """A sweep that cannot start (e.g. results already there without ``--resume``)."""


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by SIGINT (Ctrl+C) before all its trials had finished.

    ``resumable``: Tune's state was saved and ``--resume`` continues the sweep; otherwise
    nothing was kept and the sweep starts again as it was started. ``report``: what the
    sweep's report function returned for the trials that had finished (None if none had).
    """

    def __init__(self, folder: Location, resumable: bool, report: Any = None) -> None:
        super().__init__(f"sweep in {folder} interrupted")
        self.folder, self.resumable, self.report = folder, resumable, report


def run_sweep_and_report(
    experiment: SweepExperiment, storage: str | Path | Location, **options: Any
) -> Report:
    """:func:`run_sweep` (the same options), then :func:`~tuning.report.write_report` on its
    results, written while an embedded Ray shuts down; returns the report."""
    return run_sweep(experiment, storage, then=write_report, **options)


def run_sweep(
    experiment: SweepExperiment,
    storage: str | Path | Location,
    *,
    resume: bool = False,
    address: str | None = None,
    verbose: bool = False,
    tensorboard: bool = False,
    mlflow: str | None = None,
    inputs: dict[str, Any] | None = None,
    then: Callable[[Location], T] = lambda folder: folder,
    fit: Callable[..., bool] | None = None,
) -> T:
    """Runs (or with ``resume`` continues) ``experiment``; returns its results folder, or
    what ``then`` returns for it (called while an embedded Ray shuts down).

    ``storage`` is a local folder or a storage URI (``file://``, ``s3://``, ``gs://``):
    one that cannot be written fails with :class:`~tuning.storage.StorageError` before Ray
    starts.

    SIGINT stops the sweep once Tune has saved its state, and raises
    :class:`SweepInterrupted`. A request per trial that no node of the cluster can
    hold fails before any trial starts (:class:`~imm_ray.cluster.ClusterError`).

    ``address`` joins a running cluster (default: ``$RAY_ADDRESS``, else an embedded Ray).
    By default the console gets one line per trial (:class:`~tuning.progress.ProgressLines`);
    ``verbose`` shows Tune's own status tables instead. Tune's JSON and CSV results are
    written for every trial; ``tensorboard`` adds its TensorBoard event files (whose
    writer imports PyTorch into the driver: about a second and a half).

    ``mlflow`` logs the sweep to MLflow (:mod:`tuning.tracking`): the store's URI, or
    :data:`~imm_ray.tracking.BESIDE` for ``STORAGE/mlflow.db``; a sweep started so goes on
    logging there when resumed. A :class:`~tuning.report.Report` that ``then`` returns
    names the store (``paths["mlflow"]``).

    ``inputs`` are what the trials read (``experiment.load_inputs()``: a corpus, a
    checkpoint, restricted policies); by default the driver reads them here, before Ray
    starts. Trials get them through Ray's object store, never from the driver's paths.

    ``fit`` runs Tune once Ray is up (default: the sweep's grid of trials; a search
    passes its own, :func:`tuning.search.run_search`), with :func:`_fit`'s arguments, and
    returns whether SIGINT stopped it.
    """
    check_beside(storage, mlflow)  # before the storage is opened
    storage = resolve(storage)
    folder = _sweep_folder(experiment, storage, resume, mlflow)
    # Tune records finished trials in its experiment state every 10 s by default; a killed
    # sweep reruns whatever finished since. Our state is small: save it every second.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if not verbose:
        # Tune's newer console output prints its start banner even at verbose=0; the
        # classic reporter is silent there, and ProgressLines speaks instead.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if inputs is None:  # a bad input is a ValueError here, before Ray starts
        inputs = experiment.load_inputs()
    tracking = open_tracking(experiment, storage, folder, mlflow, resume)
    # An embedded Ray prestarts one worker per CPU as the driver connects; the first
    # trials run on them (see _trials_on_prestarted_workers) and find Ray imported.
    started = False
    try:
        started = init_ray(address)
        check_request(experiment.cpus_per_trial, experiment.gpus_per_trial)
        with _trials_on_prestarted_workers():
            interrupted = (fit or _fit)(
                experiment,
                storage,
                folder,
                inputs,
                resume=resume,
                verbose=verbose,
                tensorboard=tensorboard,
                # A resumed sweep's callbacks are those Tune stored as it started.
                callbacks=tracking.trial_callbacks() if tracking and not resume else (),
            )
    except KeyboardInterrupt:
        # Tune catches the first SIGINT of its run; this is one that came before (held
        # back while Ray started, see init_ray), or a second one while Tune saved its state.
        if started:
            shutdown_ray()
        resumable = _holds_state(folder)
        if not resumable and not resume:
            # Checked empty above: everything in it is this run's, and without Tune's
            # state it would only stop the same command from starting again.
            folder.remove()
        if tracking is not None:
            tracking.end("KILLED")
        raise SweepInterrupted(folder, resumable) from None
    except BaseException:
        if started:
            shutdown_ray()
        if tracking is not None:
            tracking.end("FAILED")
            if not resume and not _holds_state(folder):
                tracking.forget(folder)  # nothing to resume: the same command may start again
        raise
    # Tune leaves garbage that holds Ray object references (more of it when stopped
    # early): collected once Ray has stopped, during the report that runs beside the
    # shutdown, it freed them, and Ray's core worker ended the driver with exit status 1
    # ("The core worker has already been shutdown"; 2 of 4 interrupted sweeps, and one
    # finished sweep of the suite's in a CI run). Collected here, while Ray is up.
    gc.collect()
    report = functools.partial(_report, then, folder, interrupted, tracking)
    try:
        result = shutdown_ray_during(report) if started else report()
    except KeyboardInterrupt:
        # Tune's state is saved: --resume reruns nothing that ended, then reports.
        raise SweepInterrupted(folder, resumable=True) from None
    if interrupted:
        raise SweepInterrupted(folder, resumable=True, report=result)
    return result


def _report(
    then: Callable[[Location], T],
    folder: Location,
    interrupted: bool,
    tracking: SweepTracking | None,
) -> T | None:
    """``then(folder)`` (:func:`_partial` where SIGINT stopped the sweep); for a tracked
    sweep, its files then logged as the parent run's artifacts as the run ends, and a
    :class:`Report` names the store."""
    if tracking is None:
        return _partial(then, folder) if interrupted else then(folder)
    try:
        result = _partial(then, folder) if interrupted else then(folder)
    except BaseException:
        tracking.end("FAILED")
        raise
    tracking.end("KILLED" if interrupted else "FINISHED", folder)
    if isinstance(result, Report):
        result = dataclasses.replace(result, paths={**result.paths, "mlflow": tracking.uri})
    return result


def _sweep_folder(
    experiment: SweepExperiment, storage: Location, resume: bool, mlflow: str | None = None
) -> Location:
    """The sweep's folder in ``storage``: empty for a new sweep, holding Tune's state (and
    the same sweep, tracked as it was started, mended) for ``resume``."""
    check_writable(storage)
    folder = storage / experiment.name
    if resume and not _holds_state(folder):
        raise SweepError(f"--resume: no sweep to resume at {folder}")
    if not resume and any(True for _ in folder.iterdir()):
        raise SweepError(
            f"{folder} already holds results; pass --resume to continue that sweep, or "
            "choose another --storage"
        )
    if resume:
        check_same_sweep(folder, experiment)
        check_tracking(storage, folder, mlflow, resume)
        check_state(folder)
        forget_deleted_checkpoints(folder)
        # A search mends its stored rows its own way (tuning.search._Searched.mend).
        getattr(experiment, "mend", mend_before_resume)(folder)
    return folder


def check_same_sweep(folder: Location, experiment: SweepExperiment) -> None:
    """``--resume`` continues the sweep in ``folder`` as it was started (Tune restores its
    trials as stored), so options that would change it are refused, not ignored: a
    :class:`SweepError` names each field whose stored value differs from ``experiment``'s
    (``--seeds 5`` on a 10-seed sweep; ``--seeds 10`` is the same as seeds 0-9). Fields one
    of the two does not have (a sweep stored by an older version, or without its
    ``experiment.json``) are not compared."""
    try:
        stored = json.loads((folder / EXPERIMENT_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # stopped before it was written
        return
    given = json.loads(json.dumps(experiment.to_dict()))

    def same(key: str) -> bool:
        a, b = given[key], stored[key]
        if key == "seeds":  # a count N means seeds 0 … N-1, as --seeds says
            a, b = (list(range(v)) if isinstance(v, int) else v for v in (a, b))
        return a == b

    changed = [key for key in given if key in stored and not same(key)]
    if not changed:
        return

    def shown(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 40 else "another value"

    differences = "; ".join(
        f"{key}: {shown(stored[key])} there, {shown(given[key])} now" for key in changed
    )
    raise SweepError(
        f"--resume continues the sweep in {folder} as it was started, and these options would "
        f"change it ({differences}); drop them to resume, or start a new sweep in another "
        "--storage"
    )


def _holds_state(folder: Location) -> bool:
    """Whether Tune has saved a sweep's state in ``folder`` (what ``--resume`` needs)."""
    names = (entry.name for entry in folder.iterdir())
    return any(n.startswith(STATE_PREFIX) and n.endswith(".json") for n in names)


def _partial(then: Callable[[Location], T], folder: Location) -> T | None:
    """``then(folder)`` for an interrupted sweep; None where no trial has finished yet."""
    try:
        return then(folder)
    except ValueError:
        return None


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

    Tune has no public setting for that default, so this edits a private module's dict:
    only on the Ray it was tested on (:func:`imm_ray._compat.tune_default_env_vars`). On
    any other, Tune's environment is left alone, and the trials start their own workers.
    """
    from imm_ray import _compat

    if not _compat.tune_default_env_vars():
        yield
        return
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
    storage: Location,
    folder: Location,
    inputs: dict[str, Any],
    *,
    resume: bool,
    verbose: bool,
    tensorboard: bool,
    callbacks: Sequence[Any] = (),
) -> bool:
    """Runs the sweep on Tune; returns whether Tune stopped it early on SIGINT (it stops
    its trials, saves its state one last time and returns as if done). ``callbacks`` are
    more of Tune's (a tracked sweep's MLflow logger)."""
    from ray import tune

    from tuning.loggers import result_loggers
    from tuning.progress import GpuWarnings, ProgressLines

    # The inputs go into Ray's object store once; every trial reads them from there.
    trainable = tune.with_resources(
        tune.with_parameters(experiment.trainable(), inputs=inputs),
        {"cpu": experiment.cpus_per_trial, "gpu": experiment.gpus_per_trial},
    )
    if resume:
        return _fit_restored(folder, trainable)
    folder.mkdir()
    save_experiment(folder, experiment)
    trials = experiment.trials()
    # Tune's default loggers are JSON (result.json, which tuning.report reads), CSV and
    # TensorBoard; they are given explicitly and Tune's automatic ones switched off, so
    # that the TensorBoard writer (and PyTorch with it) loads only when asked for.
    loggers = result_loggers(tensorboard)
    progress = [] if verbose else [ProgressLines(len(trials), MAX_FAILURES)]
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(trials)},
        run_config=tune.RunConfig(
            name=experiment.name,
            storage_path=storage.path,
            # The filesystem, pickled with its options (an S3 endpoint among them, not its
            # credentials), is what every trial writes through, on whichever node.
            storage_filesystem=storage.filesystem,
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            # Language-model trials checkpoint every epoch; a restart needs the last one.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            verbose=2 if verbose else 0,
            callbacks=[*loggers, *progress, GpuWarnings(), *callbacks],
        ),
        tune_config=tune.TuneConfig(trial_dirname_creator=_trial_dirname, reuse_actors=True),
    )
    with _environment(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"), _TuneInterrupt() as interrupt:
        tuner.fit()
    return interrupt.caught


def _fit_restored(folder: Location, trainable: Any) -> bool:
    """Continues the Tune run stored in ``folder``; returns whether SIGINT stopped it.

    A restored run keeps the callbacks, search algorithm and scheduler it was started
    with; Tune adds its default loggers (TensorBoard's among them) to a run stored
    without them."""
    from ray import tune

    tuner = tune.Tuner.restore(
        folder.path,
        trainable,
        resume_unfinished=True,
        resume_errored=True,
        storage_filesystem=folder.filesystem,
    )
    with _TuneInterrupt() as interrupt:
        tuner.fit()
    return interrupt.caught


class _TuneInterrupt:
    """Tells whether Tune stopped early on SIGINT (or SIGUSR1) within a ``with`` block.

    Tune gives its run a SIGINT handler of its own; the first SIGINT (or SIGUSR1) sets its
    stop event and puts back the handler it found, and Tune then saves its state and
    returns as if done, marking its running trials terminated. The handler it finds is
    the one installed here, so finding it still in place afterwards means Tune was
    stopped. A SIGINT that comes before Tune's handler (or a second one) raises
    KeyboardInterrupt, as Python's default does. Outside the main thread, where neither
    can install a handler, nothing is caught.
    """

    caught = False

    @staticmethod
    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def __enter__(self) -> _TuneInterrupt:
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is None:
            return
        # Tune leaves its handler installed after a run that was not interrupted.
        tune_catches = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") == "0"
        self.caught = tune_catches and signal.getsignal(signal.SIGINT) is self._interrupt
        signal.signal(signal.SIGINT, self._previous)


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


def _trial_dirname(trial: Any) -> str:
    spec = trial.config["trial"]
    label = "".join(c if c.isalnum() else "_" for c in spec["setting"])[:40]
    return f"{trial.trial_id}_{label}_{spec['tag']}"
