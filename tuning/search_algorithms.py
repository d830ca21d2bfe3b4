"""The Tune search algorithm and schedulers of :mod:`tuning.search`, made to decide on a
fixed order rather than on the order concurrent trials happen to report in.

* :class:`OrderedSearch` numbers the configurations a searcher suggests (``"index"``) and,
  for a searcher that learns from results (Optuna's TPE), hands them over a batch of
  ``live`` trials at a time, in index order, once the whole batch has ended: the n-th
  suggestion depends on the batches before it, not on which trial finished first. Its
  state, and its inner searcher's, is therefore a function of the trials alone: on
  ``--resume`` it is rebuilt from the trials Tune's experiment state holds, by replaying
  their suggestions and results in that order, rather than read from searcher files that
  Tune copies to the storage apart from the experiment state (a killed driver may leave
  the two out of step), so a resumed search suggests what the interrupted one would have.
* :class:`BatchASHA` is asynchronous successive halving whose rungs compare a trial with
  the trials of earlier batches only, which have all ended by the time it runs: a trial is
  stopped at a rung when its metric there falls below the (1 − 1/η) quantile of theirs.
  The decision is a function of reported values alone, so it is the same on a rerun and
  after ``--resume`` (the rung records are rebuilt from the trials' reported curves).
* :class:`SeededPBT` is Tune's synchronous population-based training drawing from its own
  stream, seeded by the search's seed and the perturbation's time, with ties in the
  ranking broken by index, and a member keeping its own index when it copies another.
  Tune keeps PBT's state (each member's score and times, the next perturbation) only in
  memory; here each member's is written onto its Tune trial, which Tune saves in its
  experiment state with the trial's status, config and checkpoint, so that ``--resume``
  continues the population as it was: a member that was waiting at a perturbation waits
  again, paused, and the rest train on to it.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import Searcher

from tuning.progress import ProgressLines
from tuning.resume import ERROR, FINISHED, newest_state
from tuning.storage import Location, resolve

#: The key of a search trial's config that holds its place in suggestion order.
INDEX = "index"


class OrderedSearch(Searcher):
    """Wraps a searcher: numbered suggestions, at most ``live`` trials at once and, with
    ``batches``, results passed on a batch at a time (see the module's docstring).

    The wrapped searcher is ``inner``, not ``searcher``: Tune saves and restores the
    innermost of a chain of ``searcher`` attributes on its own, and this one it must not
    (:meth:`restore_from_dir` rebuilds it)."""

    def __init__(self, searcher: Searcher, live: int, batches: bool) -> None:
        super().__init__()
        self.inner = searcher
        self.live = live
        self.batches = batches
        self.count = 0
        self.batch_end = live
        self.running: dict[str, int] = {}
        self.ended: dict[int, tuple[str, dict | None, bool]] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec):
        self._metric, self._mode = metric, mode
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        if len(self.running) >= self.live or (self.batches and self.count >= self.batch_end):
            return None
        config = self.inner.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        self.running[trial_id] = self.count
        self.count += 1
        return {**config, INDEX: self.running[trial_id]}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        index = self.running.pop(trial_id, None)
        if index is None:
            return
        if not self.batches:
            self.inner.on_trial_complete(trial_id, result=result, error=error)
            return
        self.ended[index] = (trial_id, result, error)
        if not self.running and self.count >= self.batch_end:
            for index in sorted(self.ended):
                ended_id, ended_result, ended_error = self.ended[index]
                self.inner.on_trial_complete(ended_id, result=ended_result, error=ended_error)
            self.ended.clear()
            self.batch_end = self.count + self.live

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.inner.on_trial_result(trial_id, result)

    def replay(self, trials: list[StoredTrial]) -> None:
        """Brings a fresh search (and its fresh inner searcher) to where the run that
        created ``trials`` had it: each trial suggested again, in index order, under its
        own id, and each ended one's result handed over as Tune did, a batch of them
        before the next batch is suggested. A suggestion that is not the stored trial's
        configuration (a searcher that is not deterministic) is a ``RuntimeError``."""
        if self.count:
            raise RuntimeError("OrderedSearch.replay: this search has suggested already")
        ended: list[StoredTrial] = []
        for trial in sorted(trials, key=lambda trial: trial.index):
            if trial.index != self.count:
                raise RuntimeError(
                    f"--resume: Tune's stored trials skip index {self.count} "
                    f"(found {trial.index}); the run cannot be replayed"
                )
            if self.batches and self.count >= self.batch_end:
                for done in ended:
                    self.on_trial_complete(done.trial_id, done.result, done.error)
                ended.clear()
                if self.count >= self.batch_end:
                    raise RuntimeError(
                        f"--resume: Tune's stored trial {trial.index} was suggested before "
                        "its batch's predecessors had ended; the run cannot be replayed"
                    )
            config = self.inner.suggest(trial.trial_id)
            if not isinstance(config, dict) or not _within(config, trial.config):
                raise RuntimeError(
                    f"--resume: the searcher suggests {config} as trial {trial.index}, "
                    f"which the stopped run ran with {trial.config}: it is not "
                    "deterministic, and the search cannot be continued as it was"
                )
            self.running[trial.trial_id] = self.count
            self.count += 1
            if trial.ended:
                ended.append(trial)
        for done in ended:
            self.on_trial_complete(done.trial_id, done.result, done.error)

    # Tune saves a base searcher's state beside its experiment state and restores it on
    # --resume. This one's is the trials', which the experiment state holds already.
    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        pass

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        self.replay(stored_search_trials(checkpoint_dir))


@dataclass(frozen=True)
class StoredTrial:
    """A search trial as Tune's experiment state holds it: what
    :meth:`OrderedSearch.replay` needs."""

    trial_id: str
    index: int
    config: dict[str, Any]
    status: str
    last_result: dict[str, Any]

    @property
    def ended(self) -> bool:
        return self.status in (FINISHED, ERROR)

    @property
    def error(self) -> bool:
        return self.status == ERROR

    @property
    def result(self) -> dict[str, Any] | None:
        """What Tune handed the searcher when the trial ended (its last result, flat)."""
        from ray.tune.utils import flatten_dict

        return flatten_dict(self.last_result) if self.last_result and not self.error else None


def stored_search_trials(folder: str | Path | Location) -> list[StoredTrial]:
    """The trials of the newest experiment state in ``folder`` (a local path, as Tune's
    staging folder is, or a location), in index order; a ``RuntimeError`` where there is
    none or it cannot be read."""
    location = resolve(folder, None)
    newest = newest_state(location)
    if newest is None:
        raise RuntimeError(f"--resume: no Tune experiment state in {location}")
    try:
        entries = json.loads(newest.read_text())["trial_data"]
        trials = []
        for trial_text, meta_text in entries:
            trial, meta = json.loads(trial_text), json.loads(meta_text)
            trials.append(
                StoredTrial(
                    trial_id=trial["trial_id"],
                    index=int(trial["config"][INDEX]),
                    config=trial["config"],
                    status=trial["status"],
                    last_result=meta.get("last_result") or {},
                )
            )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise RuntimeError(f"--resume: Tune's state {newest} cannot be read ({error})") from None
    return sorted(trials, key=lambda trial: trial.index)


def _within(suggested: dict, config: dict) -> bool:
    """Whether every value of ``suggested`` (nested) is ``config``'s at the same key."""
    for key, value in suggested.items():
        if isinstance(value, dict):
            if not isinstance(config.get(key), dict) or not _within(value, config[key]):
                return False
        elif key not in config or config[key] != value:
            return False
    return True


class BatchASHA(FIFOScheduler):
    """Successive halving over rungs at ``grace_period``·η^k (< ``max_t``) of
    ``time_attr``, comparing each trial with earlier batches' trials (batches of
    ``batch`` consecutive indices)."""

    def __init__(
        self,
        *,
        time_attr: str,
        batch: int,
        grace_period: float,
        max_t: float,
        reduction_factor: float,
    ) -> None:
        super().__init__()
        self.time_attr = time_attr
        self.batch = batch
        self.reduction_factor = reduction_factor
        self.rungs: list[float] = []
        milestone = float(grace_period)
        while milestone < max_t:
            self.rungs.append(milestone)
            milestone *= reduction_factor
        self.records: dict[float, dict[int, float]] = {m: {} for m in self.rungs}
        self.index: dict[str, int] = {}
        self.sign = 1.0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if self._metric is not None and metric is not None:
            return False
        self._metric, self._mode = metric, mode
        self.sign = -1.0 if mode == "min" else 1.0
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        index = int(trial.config[INDEX])
        self.index[trial.trial_id] = index
        # A trial restored by --resume: its curve so far, as reported before the stop.
        curve = (trial.last_result or {}).get("curves", {}).get(self._metric, [])
        for time, value in curve:
            self._record(index, time, value)

    def _record(self, index: int, time: float, value: float) -> None:
        for milestone in self.rungs:
            if time >= milestone:
                self.records[milestone].setdefault(index, self.sign * float(value))

    def cutoff(self, milestone: float, index: int) -> float | None:
        """The value a trial must reach at ``milestone``: the (1 − 1/η) quantile of the
        earlier batches' values there, or ``None`` when they have none."""
        earlier = [
            value
            for other, value in self.records[milestone].items()
            if other // self.batch < index // self.batch
        ]
        if not earlier:
            return None
        return float(np.nanpercentile(earlier, (1 - 1 / self.reduction_factor) * 100))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self.time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        index = self.index[trial.trial_id]
        self._record(index, result[self.time_attr], result[self._metric])
        for milestone in self.rungs:
            own = self.records[milestone].get(index)
            cutoff = self.cutoff(milestone, index)
            if own is not None and cutoff is not None and own < cutoff:
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if result and self.time_attr in result and self._metric in result:
            self._record(self.index[trial.trial_id], result[self.time_attr], result[self._metric])

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        pass

    def debug_string(self) -> str:
        return f"BatchASHA: rungs {self.rungs}, batches of {self.batch}"


class SeededPBT(PopulationBasedTraining):
    """Synchronous PBT whose random choices come from ``(seed, time)`` (see the module)."""

    def __init__(self, *, seed: int, **options: Any) -> None:
        super().__init__(synch=True, log_config=False, **options)
        self.seed = seed

    @contextmanager
    def _stream(self, time: Any) -> Iterator[None]:
        """Python's and NumPy's global generators (what Tune's PBT and its search domains
        draw from) seeded from (seed, time) within the block, then put back."""
        saved = random.getstate(), np.random.get_state()
        key = f"imm-ray pbt {self.seed} {time}"
        random.seed(key)
        np.random.seed(zlib.crc32(key.encode()))
        try:
            yield
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])

    def _quantiles(self) -> tuple[list, list]:
        """The bottom and top ``quantile_fraction`` of the live members with a score,
        ranked by score, then index (a tie never depends on the order trials were added)."""
        ranked = sorted(
            (
                trial
                for trial, state in self._trial_state.items()
                if state.last_score is not None
                and not np.isnan(state.last_score)
                and not trial.is_finished()
            ),
            key=lambda trial: (self._trial_state[trial].last_score, -int(trial.config[INDEX])),
        )
        if len(ranked) < 2:
            return [], []
        count = min(int(np.ceil(len(ranked) * self._quantile_fraction)), len(ranked) // 2)
        return ranked[:count], ranked[len(ranked) - count :]

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
        config, operations = super()._get_new_config(trial, trial_to_clone)
        config[INDEX] = trial.config[INDEX]  # a member keeps its own place
        return config, operations

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        with self._stream(result.get(self._time_attr)):
            decision = super().on_trial_result(tune_controller, trial, result)
        self._keep_state(tune_controller)
        return decision

    #: The attribute of a Tune trial that carries its member's PBT state.
    KEPT = "imm_ray_pbt"
    _FIELDS = ("last_score", "last_train_time", "last_perturbation_time")

    def _keep_state(self, tune_controller: Any) -> None:
        """Writes every member's PBT state (and the next perturbation's time) onto its Tune
        trial, whose attributes Tune saves in its experiment state: in the same file, at
        the same moment, as the trial's status, config and checkpoint.

        Tune saves a trial's state again only when its own status or result changed, from
        caches (the trial's JSON, its run metadata's): a paused member that a perturbation
        changed (its config, the checkpoint it copies, its PBT state) was saved as before
        the perturbation until it ran again. Every member is marked to be saved afresh,
        where the private path is allowed (:func:`imm_ray._compat.tune_saves_pbt_members`)."""
        from imm_ray import _compat

        controller = getattr(tune_controller, "_tune_controller", tune_controller)
        mark = getattr(controller, "_mark_trial_to_checkpoint", None)
        for trial, state in self._trial_state.items():
            kept = {key: getattr(state, key) for key in self._FIELDS}
            kept["next_sync"] = self._next_perturbation_sync
            setattr(trial, self.KEPT, kept)
            if _compat.tune_saves_pbt_members() and mark is not None:
                trial.invalidate_json_state()
                trial.run_metadata.invalidate_cache()
                mark(trial)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        kept = getattr(trial, self.KEPT, None)
        if kept is None:  # a new trial, not one restored by --resume
            return
        state = self._trial_state[trial]
        for key in self._FIELDS:
            setattr(state, key, kept[key])
        state.last_result = trial.last_result
        self._next_perturbation_sync = max(self._next_perturbation_sync, kept["next_sync"])
        # A member killed after it reported, but before its checkpoint there was kept,
        # starts again from its last kept checkpoint and reports that time again.
        done = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
        done_at = (done.metrics or {}).get(self._time_attr, 0) if done is not None else 0
        state.last_train_time = min(state.last_train_time, done_at)
        # Tune requeues every unfinished trial as pending; one that had reached the next
        # perturbation was paused there, waiting for the others, and waits again.
        if trial.status == Trial.PENDING and state.last_train_time >= kept["next_sync"]:
            trial.set_status(Trial.PAUSED)


class SearchProgress(ProgressLines):
    """:class:`~tuning.progress.ProgressLines` for a search: a finished trial's line gives
    its metric and where it stopped."""

    def __init__(
        self,
        total: int,
        max_failures: int,
        metric: str,
        time_attr: str,
        end: int,
        when: Callable[[str, float], str],
    ):
        super().__init__(total, max_failures)
        self.metric, self.time_attr, self.end = metric, time_attr, end
        self.when = when  # "after 3 epochs" (tuning.search.when)

    def outcome(self, trial: Any) -> str:
        result = trial.last_result or {}
        if self.metric not in result or self.time_attr not in result:
            return ""
        time = result[self.time_attr]
        stopped = " (stopped early)" if time < self.end else ""
        return f"{self.metric} {result[self.metric]:.4g} {self.when(self.time_attr, time)}{stopped}"
