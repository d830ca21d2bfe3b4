"""Tune's JSON and CSV result loggers, keeping what the driver has already written.

As a trial with a checkpoint starts again (a PBT member after every perturbation, a trial
retried after a failure), Tune's loggers copy its ``result.json`` and ``progress.csv``
back from the storage over the driver's own copies, so that a resumed run appends to
what the storage holds. The storage's copy is synced from the driver's a while later,
so it may lack the latest rows: a PBT member's epoch-50 row was gone from its
``result.json`` after the member resumed at 50. Here the copy is made only where the
driver has no file of its own (a run resumed by a new driver, whose staging folder is
empty): the driver's file is never older than the storage's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback


class _KeepsDriverFiles:
    def _restore_from_remote(self, file_name: str, trial: Any) -> None:
        if (Path(trial.local_path) / file_name).exists():
            return
        super()._restore_from_remote(file_name, trial)  # type: ignore[misc]


class JsonResults(_KeepsDriverFiles, JsonLoggerCallback):
    """Tune's ``result.json`` (and ``params.json``) writer."""


class CsvResults(_KeepsDriverFiles, CSVLoggerCallback):
    """Tune's ``progress.csv`` writer."""


def result_loggers(tensorboard: bool) -> list[Any]:
    """The loggers of a sweep or a search: JSON and CSV, TensorBoard's when asked for
    (its writer imports PyTorch into the driver)."""
    loggers: list[Any] = [JsonResults(), CsvResults()]
    if tensorboard:
        loggers.append(TBXLoggerCallback())
    return loggers
