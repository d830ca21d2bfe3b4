"""A readable console: library log lines that a user of imm-ray cannot act on are dropped
at their source, by logging filters on the loggers that emit them (never by hiding stderr).

Each entry names the logger and a fragment of the one message dropped; everything else
those loggers say still shows. Dropped:

- RLlib's "You are running X on the new API stack!": the new stack is the only one here;
- RLlib's ``RLModuleConfig`` deprecation notice, which RLlib 2.60 logs from inside every
  ``RLModule.__init__`` (it builds the deprecated config object itself, for old
  subclasses), even for modules built with the new keyword constructor, as ours are;
- Tune's "Install gputil for GPU system monitoring": Tune's own optional dependency;
- Ray's notice that a new local cluster uses token authentication by default: the
  embedded Ray listens on loopback only and keeps that default (``RAY_AUTH_MODE`` is the
  user's to set; the notice for auth turned *off* still shows);
- Ray Train's "Checkpoint successfully created at: …", one line per reported checkpoint
  of every trial (LSTM and BERT trials report one per epoch); the trial folders hold them;
- transformers' "The following layers were not sharded", which it logs on every save of a
  model that declares a tensor-parallel plan (BERT does) when no tensor parallelism is in use;
- on SIGINT, Tune's "Stop signal received …", "Experiment has been interrupted … Resume
  experiment with: Tuner.restore(…)" (a Python call; ``imm-ray`` prints its own ``--resume``
  command instead) and "Failed to fetch metrics for N trial(s)", one line per trial that
  had not reported yet (the partial report names what is missing);
- Tune's "Trial task failed for trial …" and its traceback, logged at every failure of a
  trial (a trial that is retried twice prints three): the sweep's progress line for that
  failure says what ended the run, in one line, and the traceback is in the trial's
  ``error.txt`` (:class:`tuning.progress.ProgressLines`);
- Tune's "Experiment state snapshotting has been triggered multiple times in the last 5.0
  seconds", which it logs when trials checkpoint faster than every 5 s (tiny LSTM and BERT
  presets do, every epoch): with ``CheckpointConfig(num_to_keep)`` set, as imm-ray sets it
  so that a restarted trial finds its last epoch, each checkpoint forces a snapshot, and
  the advice it gives (keep more checkpoints, checkpoint less often) is imm-ray's to take,
  not the user's. Tune's warning that saving the state itself is slow still shows;
- transformers' "mtime may not be reliable on this filesystem, falling back to numerical
  ordering", which its Trainer logs (once per process) when it keeps one checkpoint (as a
  BERT trial does) and two were saved within a second of each other, as a tiny model's
  epochs are: it then orders them by step number, which is right on every filesystem.
- MLflow's "Creating initial MLflow database tables" and "Updating database tables", as
  ``--mlflow`` makes its SQLite store (:mod:`imm_ray.tracking`): nothing to act on.

:func:`quiet_transformers` also turns off transformers' own progress bars (weights loaded
and written): the BERT commands print one progress line of their own.

:func:`quiet_library_logs` is idempotent; the CLI calls it in the driver, and trainables
and trial tasks call it in their workers.
"""

from __future__ import annotations

import logging
import sys

#: (logger name, message fragment) of each dropped line.
DROPPED = (
    ("ray.rllib.algorithms.algorithm_config", "on the new API stack!"),
    ("ray._common.deprecation", "RLModule(config=[RLModuleConfig object])"),
    ("ray.tune.utils.util", "Install gputil for GPU system monitoring"),
    (
        "ray._private.authentication.authentication_token_setup",
        "Token authentication is enabled for this Ray cluster",
    ),
    ("transformers.distributed.tensor_parallel", "layers were not sharded"),
    ("ray.train._internal.storage", "Checkpoint successfully created at"),
    ("ray.train.v2._internal.execution.storage", "Checkpoint successfully created at"),
    ("ray.tune.tune", "Stop signal received (e.g. via SIGINT/Ctrl+C)"),
    ("ray.tune.tune", "Experiment has been interrupted, but the most recent state was saved"),
    ("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics for"),
    ("ray.tune.execution.tune_controller", "Trial task failed for trial"),
    (
        "ray.tune.execution.experiment_state",
        "Experiment state snapshotting has been triggered multiple times",
    ),
    # A trial starting again with nothing stored yet (tuning.loggers): nothing to restore.
    ("ray.tune.logger.logger", "Remote file not found: "),
    # A class trainable (a search trial) continuing from a checkpoint: under PBT, every
    # member at every perturbation.
    ("ray.tune.trainable.trainable", "from checkpoint: Checkpoint("),
    ("transformers.trainer_utils", "mtime may not be reliable on this filesystem"),
    # A new SQLite store of --mlflow being made: two lines, one per command's first run.
    ("mlflow.store.db.utils", "Creating initial MLflow database tables"),
    ("mlflow.store.db.utils", "Updating database tables"),
)


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl+C) in a command that keeps its state on disk: ``resumable`` says whether
    the same command with ``--resume`` continues it; if not, nothing was kept and the same
    command starts over. ``imm-ray`` ends with one line saying which (:mod:`imm_ray.cli`)."""

    def __init__(self, resumable: bool) -> None:
        super().__init__("interrupted")
        self.resumable = resumable


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_library_logs() -> None:
    """Installs the filters of :data:`DROPPED` (once per process)."""
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, fragment in DROPPED:
        by_logger[name] = (*by_logger.get(name, ()), fragment)
    for name, fragments in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))


def quiet_exit_in_finalizers() -> None:
    """In a trial's worker process: a ``SystemExit`` raised inside a finalizer or a weakref
    callback is dropped without Python's "Exception ignored in ..." traceback.

    Ray stops a worker with SIGTERM as a sweep ends, and its handler raises ``SystemExit``
    wherever the worker is; inside a finalizer (a garbage collection) Python cannot raise
    it and prints a traceback instead, which Ray forwards to the sweep's console after the
    table. Nothing is lost: Ray ends the worker all the same. Every other unraisable
    exception is reported as before.
    """
    if getattr(sys.unraisablehook, "_imm_ray", False):
        return
    report = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            report(unraisable)

    hook._imm_ray = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def quiet_transformers() -> None:
    """transformers at warning level, without its progress bars, and :data:`DROPPED` filters."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    quiet_library_logs()
