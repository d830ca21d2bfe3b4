"""Tune's ``MLflowLoggerCallback`` as a sweep uses it (:mod:`tuning.tracking`): a run per
trial under the sweep's parent run, named after its setting and tag, its trial dict as
parameters, and each reported row's metrics at step = the row's size.

Importing it imports Tune and MLflow: a tracked sweep's driver does once Ray is up.
"""

from __future__ import annotations

import math
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS

from imm_ray import tracking

#: A row's numbers that are Tune's bookkeeping, not a trial's metrics; ``size`` is the step.
NOT_METRICS = frozenset({*AUTO_RESULT_KEYS, "done", "size"})
#: A row's words of where its trial ran (:mod:`tuning.placement`): the run's tags.
PLACEMENT = ("node_id", "device")


def run_name(trial: dict[str, Any]) -> str:
    return f"{trial['setting']} {trial['tag']}"


def curve_metric(setting: str, curve: str | None) -> str:
    """The metric of a row's mean value: ``value`` for the trial's own setting,
    ``value/<curve>`` for another curve, without the setting's label where the curve's
    name starts with it (an LM's ``IMM, valid`` → ``value/valid``)."""
    if curve is None or curve == setting:
        return "value"
    return "value/" + tracking.metric_name(curve.removeprefix(f"{setting}, ").replace("/", "_"))


def row_metrics(trial: dict[str, Any], row: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """``(step, metrics)`` of a reported row (see the module)."""
    step = int(row.get("size", row.get("training_iteration", 0)))
    metrics = {key: value for key, value in row.items() if key not in NOT_METRICS}
    values = metrics.pop("values", None)
    if isinstance(values, dict) and values:
        finite = [float(v) for v in values.values() if math.isfinite(float(v))]
        mean = sum(finite) / len(finite) if finite else math.nan
        metrics[curve_metric(trial["setting"], row.get("setting"))] = mean
    return step, metrics


class TrialRuns(MLflowLoggerCallback):
    """Tune's MLflow logger with a sweep's names: a run per trial under the sweep's parent
    run, its trial dict as parameters, its rows' metrics at step = size (see the module),
    each logged in one batch, a metric once per step."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str) -> None:
        super().__init__(
            tracking_uri=uri,
            experiment_name=experiment,
            tags={tracking.PARENT_TAG: parent_run_id},
        )

    def setup(self, *args: Any, **kwargs: Any) -> None:
        tracking.quiet_mlflow()
        super().setup(*args, **kwargs)
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        self._runs: dict[Any, tracking.Run] = {}
        self._placed: set[Any] = set()

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._runs:  # a trial retried after a failure keeps its run
            return
        spec = trial.config["trial"]
        tags = {**self.tags, "trial_name": str(trial)}
        created = self._client.create_run(
            self.mlflow_util.experiment_id, run_name=run_name(spec), tags=tags
        )
        run = tracking.Run(self._client, created.info.run_id)
        self._runs[trial] = run
        self._trial_runs[trial] = run.run_id
        run.log_params(tracking.trial_params(spec))

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step, metrics = row_metrics(trial.config["trial"], result)
        run = self._runs[trial]
        run.log_metrics(metrics, step)
        where = {key: result[key] for key in PLACEMENT if isinstance(result.get(key), str)}
        if where and trial not in self._placed:  # where it ran, once
            self._placed.add(trial)
            run.set_tags(where)
