"""Experiment tracking with MLflow: what ``--mlflow [URI]`` of ``imm-ray sweep`` and the
``train`` commands opens, and how a run's parameters and metrics are written.

MLflow is an optional extra (``pip install 'imm-ray[tracking]'``): this module imports it
only when a store is opened, and :func:`require_mlflow` turns its absence into one line
that names the extra. Without a URI the store is a SQLite file, ``mlflow.db``, in the
folder that holds the command's results, and the runs' artifacts go to ``mlartifacts``
beside it (never to ``./mlruns``); a ``sqlite:`` URI given keeps its artifacts beside its
database file the same way, and any other URI (``file:``, ``http://HOST:PORT``) keeps the
store's own.

A command opens its :class:`Store` before any work, so that a store that cannot be opened
stops it with exit status 2; Tune's sweeps log through :mod:`tuning.tracking`, the
transformers trainers through transformers' own ``MLflowCallback``
(:func:`training_callback`), the others through :class:`Run`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

#: How to install what ``--mlflow`` needs.
EXTRA = "pip install 'imm-ray[tracking]'"
#: The default store's database and the folder of its artifacts, in the results' folder.
STORE_FILE = "mlflow.db"
ARTIFACTS_FOLDER = "mlartifacts"
#: ``--mlflow`` without a URI: the default store, beside the results.
BESIDE = ""
#: The tag of a run that names the folder its command writes, and of a run of ``--resume``
#: that names the run it continues (each invocation is a run of its own).
OUTPUT_TAG = "imm_ray.output"
RESUMES_TAG = "imm_ray.resumes"
#: In a sweep's folder: its store and parent run (what ``--resume`` continues).
SWEEP_RECORD = "mlflow.json"
#: MLflow's tag of a child run: its parent's id.
PARENT_TAG = "mlflow.parentRunId"
#: MLflow's limits: a parameter's value, and entries per ``log_batch``.
MAX_PARAM_LENGTH = 6000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: What MLflow takes in a parameter or metric name, slashes aside (which nest names).
_NAME_CHARACTERS = re.compile(r"[^\w.\- ]+")


class TrackingError(ValueError):
    """MLflow missing, or a store that cannot be opened: a usage error (exit status 2)."""


def require_mlflow(why: str = "--mlflow") -> None:
    """A :class:`TrackingError` naming the extra unless MLflow can be imported; ``why`` is
    what needs it."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError(f"{why} needs MLflow: {EXTRA}") from None


def tracking_uri(text: str) -> str:
    """``--mlflow URI``'s check: a URI with a scheme (``sqlite:///PATH``, ``file:PATH``,
    ``http://HOST:PORT``), so that a word after ``--mlflow`` (``sweep --mlflow figure2``)
    is not taken for a store; :data:`BESIDE` (the option without a URI) as it is."""
    if text != BESIDE and not _SCHEME.match(text):
        raise TrackingError(
            f"--mlflow must be a tracking URI such as sqlite:///PATH, file:PATH or "
            f"http://HOST:PORT, got {text!r} (without a URI, put --mlflow after the other "
            "arguments: its store is then beside the results)"
        )
    return text


def store_uri(option: str, folder: str | os.PathLike[str]) -> str:
    """The store of ``--mlflow`` (``option``: its URI, or :data:`BESIDE`): without a URI,
    ``sqlite:///<folder>/mlflow.db``, ``folder`` the one that holds the results."""
    if option != BESIDE:
        return option
    return f"sqlite:///{Path(folder).resolve() / STORE_FILE}"


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of store ``uri`` keeps its artifacts: ``mlartifacts`` beside
    a SQLite database (MLflow's own default would be ``./mlruns``); the store's own
    default (None) for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    return (database.resolve().parent / ARTIFACTS_FOLDER).as_uri()


class Store:
    """An MLflow tracking store and one experiment in it (made if missing, or restored if
    deleted), opened at once: a :class:`TrackingError` naming ``--mlflow`` if it cannot be."""

    def __init__(self, uri: str, experiment: str) -> None:
        require_mlflow()
        quiet_mlflow()
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.uri, self.experiment = uri, experiment
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked for; a file: URI given asks.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).resolve().parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=artifact_location(uri)
                )
            else:
                self.experiment_id = found.experiment_id
                if found.lifecycle_stage == "deleted":
                    self.client.restore_experiment(found.experiment_id)
        except (MlflowException, OSError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise TrackingError(f"--mlflow {uri}: cannot open the store: {first}") from None

    def start_run(
        self,
        name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
    ) -> Run:
        """A new run of the experiment named ``name``, with ``params`` (flattened,
        :func:`flat_params`) and ``tags``."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags or {}))
        tracked = Run(self.client, run.info.run_id)
        tracked.log_params(params)
        return tracked

    def command_run(
        self,
        output: str | os.PathLike[str],
        name: str,
        params: Mapping[str, Any],
        resume: bool = False,
    ) -> Run:
        """A new run of a command that writes ``output`` (tagged :data:`OUTPUT_TAG`); with
        ``resume``, tagged :data:`RESUMES_TAG` with the newest earlier run of that folder,
        whose steps it goes on from."""
        where = str(Path(output).resolve())
        tags = {OUTPUT_TAG: where}
        if resume:
            quoted = where.replace("'", "\\'")
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{OUTPUT_TAG}` = '{quoted}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found:
                tags[RESUMES_TAG] = found[0].info.run_id
        return self.start_run(name, params, tags)


def open_store(option: str | None, folder: str | os.PathLike[str], experiment: str) -> Store | None:
    """A command's store: None without ``--mlflow`` (``option`` None); else ``option``'s
    store (:func:`store_uri`, beside ``folder`` without a URI), opened before any work."""
    if option is None:
        return None
    return Store(store_uri(option, folder), experiment)


class Run:
    """One MLflow run, written through ``client``; a metric is logged once per step (a
    second value for the same step is dropped)."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self._logged: set[tuple[str, int]] = set()

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, value) for key, value in flat_params(params).items()]
        for start in range(0, len(entries), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=entries[start : start + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Logs the numbers of ``metrics`` (NaN included; bools and other values left out)
        at ``step``, under names MLflow takes (:func:`metric_name`)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = []
        for key, value in metrics.items():
            if not _is_number(value):
                continue
            name = metric_name(key)
            if (name, step) not in self._logged:
                self._logged.add((name, step))
                entries.append(Metric(name, float(value), now, step))
        for start in range(0, len(entries), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=entries[start : start + METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike[str]) -> None:
        self.client.log_artifact(self.run_id, os.fspath(path))

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def end(self, status: str = "FINISHED") -> None:
        """Ends the run: ``FINISHED``, ``FAILED`` or ``KILLED`` (interrupted)."""
        self.client.set_terminated(self.run_id, status=status)


@contextlib.contextmanager
def running(run: Run | None, active_uri: str | None = None) -> Iterator[Run | None]:
    """Ends ``run`` (if any) as the block ends: ``FINISHED``, ``KILLED`` on SIGINT,
    ``FAILED`` on an error. With ``active_uri`` (its store's) the run is MLflow's active
    run within the block, where transformers' callback logs (:func:`training_callback`)."""
    if run is None:
        yield None
        return
    if active_uri is not None:
        import mlflow

        mlflow.set_tracking_uri(active_uri)
        mlflow.start_run(run_id=run.run_id)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if active_uri is not None:
            import mlflow

            mlflow.end_run(status)  # after the callback's queued metrics are written
        else:
            run.end(status)


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``values`` as MLflow parameters: nested mappings as ``outer/inner``, lists and empty
    mappings as JSON, anything else as ``str``; a value longer than MLflow takes is cut,
    ending in ``…``."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = prefix + _name_part(str(key))
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, name + "/"))
            continue
        if isinstance(value, list | tuple | Mapping):
            text = json.dumps(value, ensure_ascii=False, default=str)
        else:
            text = str(value)
        if len(text) > MAX_PARAM_LENGTH:
            text = text[: MAX_PARAM_LENGTH - 1] + "…"
        flat[name] = text
    return flat


def seeds_text(seeds: Iterable[int]) -> str:
    """Seeds as ``--seeds`` writes them: runs of consecutive seeds as ``A-B``, joined by
    commas (``0-9``, ``1,4,7``, ``0-4,9``)."""
    ordered = sorted(set(seeds))
    parts: list[str] = []
    start = previous = None
    for seed in [*ordered, None]:
        if seed is not None and previous is not None and seed == previous + 1:
            previous = seed
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = seed
    return ",".join(parts)


def trial_params(trial: dict[str, Any]) -> dict[str, Any]:
    """A trial dict (or an experiment's) as a run's parameters: a list of seeds as
    ``--seeds`` writes it."""
    if isinstance(trial.get("seeds"), list | tuple):
        trial = {**trial, "seeds": seeds_text(trial["seeds"])}
    return trial


def metric_name(key: str) -> str:
    """``key`` as MLflow takes a metric's name: a dash for an en or em dash, `` - `` for a
    comma, and each run of other characters than letters, digits, ``_ - . /`` and spaces
    as one ``_`` (``Kneser–Ney bigram, bigram test`` → ``Kneser-Ney bigram - bigram
    test``)."""
    return "/".join(_name_part(part) for part in key.split("/"))


def _name_part(text: str) -> str:
    text = re.sub(r"\s*,\s*", " - ", text.replace("\u2013", "-").replace("\u2014", "-"))
    return _NAME_CHARACTERS.sub("_", text).strip() or "_"


def _is_number(value: Any) -> bool:
    """A number MLflow can log (NumPy's and one-element tensors too), not a bool or text."""
    if isinstance(value, bool | str):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def quiet_mlflow() -> None:
    """Once MLflow is imported: its notices that a new SQLite store is being made (each a
    line on the console) are dropped (:mod:`imm_ray.console`), and the schema migrations
    that make it are logged only from warnings up (MLflow before 3.17 gives alembic's
    logger a handler at INFO as it is imported: some sixty lines a new store). (Runs are
    made through ``MlflowClient``, which looks up no Git version: MLflow's warning where
    Git is missing never comes.)"""
    from imm_ray.console import quiet_library_logs

    quiet_library_logs()
    migrations = logging.getLogger("alembic")
    if migrations.getEffectiveLevel() < logging.WARNING:
        migrations.setLevel(logging.WARNING)


def training_callback():
    """transformers' own ``MLflowCallback``, for the training only: it logs Trainer's
    arguments and the model's configuration as parameters and every logged step's
    metrics to the active run; evaluations after ``train()`` (a fine-tuning's dev and test
    scores, which Trainer would log as ``eval_*`` again) are the command's to log, under
    their own names."""
    from transformers.integrations import MLflowCallback

    class TrainingOnly(MLflowCallback):
        def __init__(self) -> None:
            super().__init__()
            self.trained = False

        def on_log(self, args, state, control, logs, model=None, **kwargs):
            if not self.trained:
                super().on_log(args, state, control, logs, model=model, **kwargs)

        def on_train_end(self, args, state, control, **kwargs):
            self.trained = True
            super().on_train_end(args, state, control, **kwargs)

    return TrainingOnly()
