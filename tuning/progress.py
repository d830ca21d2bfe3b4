"""The sweep's console: one line per trial instead of Tune's status tables."""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from ray import tune
from ray.tune.experiment import Trial


class ProgressLines(tune.Callback):
    """One line per finished, retried or failed trial, with the count and an ETA; a failed
    run's line says what ended it (:func:`failure_reason`), and a trial that errors for good
    names its ``error.txt``. Tune's own traceback of each failure is dropped from the console
    (:mod:`imm_ray.console`): it is in that file.

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
        if self.left is None:
            done = sum(trial.status in (Trial.TERMINATED, Trial.ERROR) for trial in trials)
            self.left = self.total - done

    def _line(self, trial: Any, what: str, reason: str = "") -> None:
        elapsed = time.monotonic() - self.start
        # Before this run's first step, the sweep's whole count.
        total = self.total if self.left is None else self.left
        left = total - self.finished
        eta = f", ETA {elapsed / self.finished * left:.0f}s" if self.finished and left else ""
        print(
            f"[{self.finished}/{total} trials, {elapsed:.0f}s{eta}] {what}: "
            f"{self.describe(trial)}{f': {reason}' if reason else ''}",
            file=sys.stderr,
            flush=True,
        )

    def describe(self, trial: Any) -> str:
        return describe(trial)

    def outcome(self, trial: Any) -> str:
        """What a finished trial's line adds after its name (nothing for a sweep)."""
        return ""

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        self._line(trial, "done", self.outcome(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "failed, retrying", failure_reason(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        reason = failure_reason(trial)
        folder = getattr(getattr(trial, "storage", None), "trial_dir_name", None)
        if folder:
            reason = "; ".join(filter(None, (reason, f"traceback in {folder}/error.txt")))
        self._line(trial, f"errored after {self.max_failures} retries", reason)


def describe(trial: Any) -> str:
    """How the console names a trial: a sweep trial by its setting and tag, a search trial
    (:mod:`tuning.search`) by its index and sampled value."""
    config = trial.config
    if "index" in config:
        param = "lambda" if "lambda" in config else "r"
        symbol = "λ" if param == "lambda" else "r"
        return f"trial {config['index']} ({symbol} = {config[param]:.4g})"
    spec = config["trial"]
    return f"{spec['setting']} ({spec['tag']})"


#: Where Tune's error file starts the record of each failure of a trial.
_FAILURE_HEADER = re.compile(r"^Failure # \d+ \(occurred at [^)]*\)$", re.M)
#: The line of a Ray actor error that says why the actor died ("The actor died because its
#: node has died. ...", "The actor is dead because its worker process has died. ...").
_ACTOR_DIED = re.compile(r"^The actor (?:died|is dead) because .*$", re.M)
#: How much of a reason a progress line shows: whole sentences up to this many characters.
REASON_CHARS = 120


def failure_reason(trial: Any) -> str:
    """One line saying what ended the trial's latest failed run, from the ``error.txt`` Tune
    appends each failure to (``""`` where there is none): for a trial whose actor died, Ray's
    line giving the cause ("... because its node has died. Node Id: ..."); for an exception
    in the trainable, its last line ("ValueError: ..."); whole sentences of it, up to
    :data:`REASON_CHARS` characters."""
    path = getattr(trial, "error_file", None)
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return ""
    latest = _FAILURE_HEADER.split(text)[-1]
    died = _ACTOR_DIED.search(latest)
    lines = [line.strip() for line in latest.splitlines() if line.strip()]
    if not died and not lines:
        return ""
    first, *rest = re.split(r"(?<=\.) ", died.group(0).strip() if died else lines[-1])
    reason = first if len(first) <= REASON_CHARS else first[: REASON_CHARS - 1] + "…"
    for sentence in rest:
        if len(reason) + 1 + len(sentence) > REASON_CHARS:
            break
        reason = f"{reason} {sentence}"
    return reason


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
        node = result.get("node_id", "?")
        ip = result.get("node_ip")
        print(
            f"imm-ray: warning: trial {describe(trial)} was given a GPU on "
            f"node {node}{f' ({ip})' if ip else ''} that torch cannot use (no CUDA device "
            "there); it trains on CPU",
            file=sys.stderr,
            flush=True,
        )
