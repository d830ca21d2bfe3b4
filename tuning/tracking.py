"""A sweep in MLflow (``imm-ray sweep NAME --mlflow [URI]``): a parent run named after the
sweep, and under it one run per Tune trial, logged by Tune's ``MLflowLoggerCallback`` on
the driver as the trials report (:class:`tuning.mlflow_trials.TrialRuns`).

- A trial's run is named after its setting and tag (as its folder is); its parameters are
  its trial dict (:meth:`~tuning.base.SweepExperiment.trials`): ``setting``, ``seed`` (LM,
  BERT) or ``seeds`` (RL, as ``--seeds`` writes them: ``0-9``), and the rest, nested
  fields as ``outer/inner``.
- Its metrics are logged at step = the row's size (RL epochs, an LM's or BERT's epoch,
  the logistic n): the row's own numbers under their names (an LM's ``train_ppl``,
  ``valid_ppl``, ...; Tune's bookkeeping left out) and the mean of its ``values`` over its
  seeds or runs as ``value`` — ``value/<curve>`` where the row names a curve other than
  the trial's setting (``value/valid``, ``value/test`` for an LM; ``value/dev`` for BERT;
  one per setting of a logistic trial).
- The parent run holds the experiment (``experiment.json``'s fields) as parameters and,
  once the report is written, ``summary.csv``, ``summary.md``, ``figure.png`` and
  ``experiment.json`` as artifacts.

The parent run's store and id are kept in the sweep's folder (``mlflow.json``): ``--resume``
continues the sweep as it was started, logging to the same parent, as Tune's restored
callback logs the trials it reruns.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from imm_ray import tracking
from tuning.base import SweepExperiment
from tuning.report import CSV_NAME, EXPERIMENT_FILE, PLOT_NAME, TABLE_NAME
from tuning.storage import Location

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: The parent run's artifacts, as the report writes them.
ARTIFACTS = (CSV_NAME, TABLE_NAME, PLOT_NAME, EXPERIMENT_FILE)


@dataclasses.dataclass
class SweepTracking:
    """A sweep's parent run in its store (see the module)."""

    store: tracking.Store
    parent: tracking.Run

    @property
    def uri(self) -> str:
        return self.store.uri

    def trial_callbacks(self) -> list[Any]:
        """The Tune callback that logs the trials' runs under the parent (it imports Tune
        and MLflow: called once Ray is up)."""
        from tuning.mlflow_trials import TrialRuns

        return [TrialRuns(self.store.uri, self.store.experiment, self.parent.run_id)]

    def end(self, status: str, folder: Location | None = None) -> None:
        """Logs the report's files found in ``folder`` (a local folder or a storage URI)
        as the parent's artifacts, then ends it with ``status``."""
        if folder is not None:
            with tempfile.TemporaryDirectory(prefix="imm-ray-mlflow-") as staging:
                for name in ARTIFACTS:
                    found = folder / name
                    if not found.is_file():
                        continue
                    if not found.local:  # an object store's file, copied here first
                        copy = Path(staging) / name
                        copy.write_bytes(found.read_bytes())
                        found = copy
                    self.parent.log_artifact(found)
        if status != "FINISHED":
            self.end_trials(status)
        self.parent.end(status)

    def end_trials(self, status: str) -> None:
        """Ends the parent's trial runs still running (those a stopped sweep's trials
        left) with ``status``."""
        running = self.store.client.search_runs(
            [self.store.experiment_id],
            filter_string=f"tags.`{tracking.PARENT_TAG}` = '{self.parent.run_id}' "
            "and attributes.status = 'RUNNING'",
        )
        for run in running:
            self.store.client.set_terminated(run.info.run_id, status=status)

    def forget(self, folder: Location) -> None:
        """Removes the sweep's record from ``folder``: a sweep that failed before Tune
        saved anything leaves nothing to resume."""
        record = folder / tracking.SWEEP_RECORD
        if record.is_file():
            record.unlink()


def check_tracking(
    storage: Location, folder: Location, mlflow: str | None, resume: bool
) -> dict[str, str] | None:
    """Checks ``--mlflow``'s value ``mlflow`` (None: not given; :data:`~imm_ray.tracking.BESIDE`:
    the default store, ``STORAGE/mlflow.db``) against a resumed sweep's record in
    ``folder``, before anything is written: ``--resume`` continues a sweep's tracking as it
    was started, so an ``mlflow`` that differs is a :class:`~imm_ray.tracking.TrackingError`.
    Returns the record (None where the sweep was started without ``--mlflow``, or for a
    new sweep)."""
    if not resume:
        return None
    record = folder / tracking.SWEEP_RECORD
    stored = json.loads(record.read_text()) if record.is_file() else None
    if stored is None:
        if mlflow is not None:
            raise tracking.TrackingError(
                f"--mlflow: the sweep in {folder} was started without --mlflow, and "
                "--resume continues it as it was started; drop --mlflow to resume it"
            )
        return None
    uri = stored["tracking_uri"]
    if mlflow is not None and _store(mlflow, storage) != uri:
        raise tracking.TrackingError(
            f"--mlflow: the sweep in {folder} logs to MLflow at {uri}, and --resume "
            "continues it as it was started; drop --mlflow (or give that URI) to resume it"
        )
    tracking.require_mlflow(f"the sweep in {folder} logs to MLflow at {uri}: resuming it")
    return stored


def open_tracking(
    experiment: SweepExperiment,
    storage: Location,
    folder: Location,
    mlflow: str | None,
    resume: bool,
) -> SweepTracking | None:
    """The sweep's tracking (:func:`check_tracking` says what ``mlflow`` may be), opened
    before Ray starts; None without it. A new sweep starts its parent run here and records
    it in ``folder``; a resumed one continues the recorded run."""
    if resume:
        stored = check_tracking(storage, folder, mlflow, resume)
        if stored is None:
            return None
        store = tracking.Store(stored["tracking_uri"], stored["experiment"])
        parent = tracking.Run(store.client, stored["run_id"])
        store.client.update_run(parent.run_id, status="RUNNING")
        resumed = SweepTracking(store, parent)
        resumed.end_trials("KILLED")  # a killed driver's: Tune reruns them, each a new run
        return resumed
    if mlflow is None:
        return None
    store = tracking.Store(_store(mlflow, storage), experiment.name)
    parent = store.start_run(
        experiment.name,
        tracking.trial_params(experiment.to_dict()),
        {tracking.OUTPUT_TAG: str(folder)},
    )
    (folder / tracking.SWEEP_RECORD).write_text(
        json.dumps(
            {"tracking_uri": store.uri, "experiment": store.experiment, "run_id": parent.run_id},
            indent=2,
        )
    )
    return SweepTracking(store, parent)


def check_beside(storage: str | os.PathLike[str] | Location, mlflow: str | None) -> None:
    """``--mlflow`` without a URI keeps its store beside the results, which needs a local
    ``storage``: checked on the storage's text, before it is opened (a
    :class:`~imm_ray.tracking.TrackingError` otherwise)."""
    if mlflow != tracking.BESIDE:
        return
    if isinstance(storage, Location):
        local = storage.local
    else:
        scheme = _SCHEME.match(os.fspath(storage))
        local = scheme is None or scheme.group(1).lower() == "file"
    if not local:
        raise tracking.TrackingError(
            f"--mlflow: without a URI its store is a SQLite file beside the results, and "
            f"--storage {storage} is not a local folder; give a tracking URI (--mlflow URI)"
        )


def _store(mlflow: str, storage: Location) -> str:
    check_beside(storage, mlflow)
    return tracking.store_uri(mlflow, storage.path)
