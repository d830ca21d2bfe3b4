"""The sweep's console: one line per trial instead of Tune's status tables."""

from __future__ import annotations

import sys
import time
from typing import Any

from ray import tune
from ray.tune.experiment import Trial


class ProgressLines(tune.Callback):
    """One line per finished, retried or failed trial, with the count and an ETA.

    Stands in for Tune's status tables (``verbose=0``); ``run_sweep(verbose=True)``
    brings those back instead. Its own module, so that importing :mod:`tuning.sweep`
    does not import Tune (:func:`~tuning.sweep.run_sweep` imports it once Ray is up).

    Tune pickles the callback with the sweep as the sweep starts and unpickles it on
    ``--resume``; each run (the first, or a resumed one) counts the trials it has left
    and times itself from its own start.
    """

    def __init__(self, total: int, max_failures: int) -> None:
        self.total = total
        self.max_failures = max_failures
        self.finished = 0
        self.start = time.monotonic()
        self.left: int | None = total

    def setup(self, **info: Any) -> None:
        # Tune calls this as a run starts, before its first step; a resumed run's trials
        # are restored by then, and the first step counts those already done.
        self.start = time.monotonic()
        self.finished = 0
        self.left = None

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if getattr(self, "left", 0) is None:
            done = sum(trial.status in (Trial.TERMINATED, Trial.ERROR) for trial in trials)
            self.left = self.total - done

    def _line(self, trial: Any, what: str) -> None:
        elapsed = time.monotonic() - self.start
        # Before this run's first step (or in a callback stored before runs counted their
        # own trials), the sweep's whole count.
        total = getattr(self, "left", None)
        total = self.total if total is None else total
        left = total - self.finished
        eta = f", ETA {elapsed / self.finished * left:.0f}s" if self.finished and left else ""
        spec = trial.config["trial"]
        print(
            f"[{self.finished}/{total} trials, {elapsed:.0f}s{eta}] {what}: "
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
        # A sweep stored before the count was kept here resumes without it.
        retries = getattr(self, "max_failures", None)
        self._line(trial, f"errored after {retries if retries is not None else 'its'} retries")


class GpuWarnings(tune.Callback):
    """One ``imm-ray: warning: ...`` per trial that was given a GPU torch cannot use on its
    node (its rows carry ``gpu_unusable``, :mod:`tuning.placement`): it trains on CPU."""

    def __init__(self) -> None:
        self.warned: set[str] = set()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if not result.get("gpu_unusable") or trial.trial_id in self.warned:
            return
        self.warned.add(trial.trial_id)
        spec = trial.config["trial"]
        node = result.get("node_id", "?")
        ip = result.get("node_ip")
        print(
            f"imm-ray: warning: trial {spec['setting']} ({spec['tag']}) was given a GPU on "
            f"node {node}{f' ({ip})' if ip else ''} that torch cannot use (no CUDA device "
            "there); it trains on CPU",
            file=sys.stderr,
            flush=True,
        )
