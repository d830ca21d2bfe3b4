"""Tune searches over IMM's weight: λ, or r = λ/(1+λ), found by a search algorithm,
stopped early by ASHA, or changed mid-training by population-based training (PBT).

A :class:`Search` is an experiment of a searchable kind (one IMM setting, whose λ it
varies: :meth:`~tuning.base.ExperimentBase.search_trial`) and a :class:`SearchSpace`: the
parameter and its range, the metric and its mode, the algorithm (random or Optuna's TPE,
both seeded) and the scheduler (FIFO, ASHA, PBT). :func:`run_search` runs it on Ray Tune,
resumably; :func:`write_search_report` writes what it found: every trial's metric
(``trials.csv``), the best setting (``best.json``) and, for PBT, the best member's λ
schedule beside its reward (``schedule.csv``, ``schedule.png``).

Reproducible by construction: a trial's result depends only on its λ (or, under PBT, on
its λ schedule), and every decision that could depend on the order in which concurrent
trials report is made on a fixed order instead (:mod:`tuning.search_algorithms`): Optuna
sees results a batch of ``max_concurrent`` trials at a time, ASHA compares a trial with the
trials of earlier batches, and synchronous PBT draws from its own seeded stream at each
perturbation. The same ``seed`` and ``max_concurrent`` give the same trials and results on
any cluster, and a driver killed mid-search continues with ``resume`` to the same result.

This module imports neither Ray nor torch: a search is checked (:meth:`Search.validate`)
before Ray starts.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from imm_ray import checks
from imm_ray.checks import ConfigError
from imm_ray.imm.weighting import lambda_to_ratio, ratio_to_lambda
from tuning.base import SweepExperiment
from tuning.storage import Location, resolve

#: What a search may vary: IMM's weight λ, or r = λ/(1+λ) (the paper's RL rule's axis).
PARAMS = ("lambda", "r")
ALGORITHMS = ("random", "optuna")
SCHEDULERS = ("fifo", "asha", "pbt")
MODES = ("min", "max")

#: Files a search's folder gets besides Tune's (written by :func:`write_search_report`).
SEARCH_FILE = "experiment.json"
TRIALS_CSV = "trials.csv"
BEST_FILE = "best.json"
SCHEDULE_CSV = "schedule.csv"
SCHEDULE_PLOT = "schedule.png"


@dataclass(frozen=True)
class SearchSpace:
    """What a search varies and how: a sweep file's ``search:`` section, or a named
    search's, with the command line's options over it."""

    param: str = "r"
    """``lambda`` or ``r`` = λ/(1+λ)."""
    low: float = 0.0
    high: float = 0.9
    """The range, ``low < high``: λ ≥ 0, r in [0, 1)."""
    log: bool = False
    """Sample log-uniformly (``low > 0``); otherwise uniformly."""
    metric: str | None = None
    """What the search optimizes; ``None``: the experiment's first search metric."""
    mode: str | None = None
    """``min`` or ``max``; ``None``: the metric's own direction (reward: max, perplexity:
    min)."""
    algorithm: str | None = None
    """``random`` (uniform or log-uniform draws) or ``optuna`` (Optuna's TPE sampler),
    both seeded; ``None``: ``optuna``, or ``random`` for PBT's initial population (Tune's
    PBT takes no search algorithm)."""
    scheduler: str = "fifo"
    """``fifo`` (every trial runs to the end), ``asha`` or ``pbt``."""
    num_samples: int = 12
    """Trials (under PBT: the population)."""
    max_concurrent: int | None = None
    """Trials live at once, and the batch Optuna and ASHA see results in (part of what
    the results depend on, so a fixed default, 4, rather than the cluster's size). Not for
    PBT, whose whole population is live at once (Ray runs as many members at a time as its
    resources allow)."""
    seed: int = 0
    """Seeds the algorithm's sampler and PBT's choices."""
    reduction_factor: float = 3.0
    """ASHA keeps the best 1/reduction_factor of the trials at each rung."""
    grace_period: int | None = None
    """ASHA's first rung (a trial is never stopped before it); ``None``: the first
    evaluation point."""
    perturbation_interval: int | None = None
    """PBT exploits and explores every this many time units (epochs); ``None``: at every
    evaluation point."""
    quantile_fraction: float = 0.25
    """PBT: the bottom fraction of the population copies the top fraction."""
    resample_probability: float = 0.25
    """PBT: how often explore draws a fresh value instead of scaling by 0.8 or 1.2."""

    def __post_init__(self) -> None:
        checks.one_of("param", self.param, PARAMS)
        checks.number("low", self.low)
        checks.number("high", self.high)
        if self.param == "r":
            checks.number("low", self.low, at_least=0, below=1)
            checks.number("high", self.high, at_least=0, below=1)
        else:
            checks.number("low", self.low, at_least=0)
        if not self.low < self.high:
            raise ConfigError(
                "high",
                f"the range of {self.param} is empty or inverted: low {self.low:g} must be "
                f"below high {self.high:g}",
            )
        if not isinstance(self.log, bool):
            checks.fail("log", self.log, "true or false")
        if self.log:
            checks.number("low", self.low, above=0, allowed="a number > 0 with log: true")
        if self.mode is not None:
            checks.one_of("mode", self.mode, MODES)
        if self.metric is not None and not (isinstance(self.metric, str) and self.metric):
            checks.fail("metric", self.metric, "a metric's name")
        checks.one_of("scheduler", self.scheduler, SCHEDULERS)
        if self.algorithm is not None:
            checks.one_of("algorithm", self.algorithm, ALGORITHMS)
            if self.scheduler == "pbt" and self.algorithm != "random":
                raise ConfigError(
                    "algorithm",
                    f"algorithm {self.algorithm} cannot draw PBT's population (Tune's PBT "
                    "takes no search algorithm; PBT itself searches): use random",
                )
        checks.integer("num_samples", self.num_samples, 1)
        if self.scheduler == "pbt":
            checks.integer(
                "num_samples", self.num_samples, 2, allowed="an integer >= 2 (a population)"
            )
        checks.integer("max_concurrent", self.max_concurrent, 1, optional=True)
        if self.scheduler == "pbt" and self.max_concurrent is not None:
            raise ConfigError(
                "max_concurrent",
                "max_concurrent does not apply to PBT: its whole population (num_samples) is "
                "live at once, and Ray runs as many members at a time as its resources allow",
            )
        checks.integer("seed", self.seed, 0)
        checks.number("reduction_factor", self.reduction_factor, above=1)
        checks.integer("grace_period", self.grace_period, 1, optional=True)
        checks.integer("perturbation_interval", self.perturbation_interval, 1, optional=True)
        checks.number("quantile_fraction", self.quantile_fraction, above=0, at_most=0.5)
        checks.number("resample_probability", self.resample_probability, at_least=0, at_most=1)

    @property
    def sampler(self) -> str:
        """The algorithm in effect: :attr:`algorithm`, or its default."""
        if self.algorithm is not None:
            return self.algorithm
        return "random" if self.scheduler == "pbt" else "optuna"

    def population(self) -> list[float]:
        """PBT's initial values: ``num_samples`` draws from the seeded generator, uniform
        (or log-uniform) over the range."""
        import numpy as np

        rng = np.random.default_rng(self.seed)
        if self.log:
            draws = np.exp(rng.uniform(math.log(self.low), math.log(self.high), self.num_samples))
        else:
            draws = rng.uniform(self.low, self.high, self.num_samples)
        return [float(v) for v in draws]

    @property
    def live(self) -> int:
        """Trials live at once (and the batch): :attr:`max_concurrent`, or 4."""
        return 4 if self.max_concurrent is None else self.max_concurrent

    def clip(self, value: float) -> float:
        """``value`` within the range (PBT's perturbations scale past it)."""
        return min(max(float(value), self.low), self.high)


@dataclass(frozen=True)
class Search:
    """A named search (:data:`tuning.searches.SEARCHES`) or a sweep file with a ``search:``
    section: an experiment whose one IMM setting's λ the search varies."""

    name: str
    experiment: SweepExperiment
    space: SearchSpace

    kind: ClassVar[str] = "search"

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            checks.fail("name", self.name, "a non-empty word without '/', '\\' or spaces")

    @property
    def metric(self) -> str:
        """The metric optimized: the space's, else the experiment's first."""
        metrics = self.experiment.search_metrics
        if self.space.metric is not None:
            return self.space.metric
        if not metrics:
            raise ConfigError("experiment", self._not_searchable())
        return next(iter(metrics))

    @property
    def mode(self) -> str:
        return self.space.mode or self.experiment.search_metrics.get(self.metric, "max")

    @property
    def cpus_per_trial(self) -> float:
        return self.experiment.cpus_per_trial

    @property
    def gpus_per_trial(self) -> float:
        return self.experiment.gpus_per_trial

    def _not_searchable(self) -> str:
        return f"{self.experiment.kind} experiments cannot be searched (no metric to optimize)"

    def validate(self) -> None:
        """Everything a search needs, checked before Ray starts (a :class:`ConfigError`
        naming the field): the metric is one the experiment reports, the scheduler one it
        supports, and the experiment and its one searched trial are sound."""
        experiment = self.experiment
        metrics = experiment.search_metrics
        if not metrics:
            raise ConfigError("experiment", self._not_searchable())
        if self.metric not in metrics:
            checks.fail(
                "metric",
                self.metric,
                f"a metric {experiment.kind} trials report: " + ", ".join(metrics),
            )
        scheduler = self.space.scheduler
        if scheduler == "pbt" and not experiment.search_checkpoints:
            raise ConfigError(
                "scheduler",
                f"scheduler pbt needs trials that checkpoint, and {experiment.kind} trials "
                "do not (they report once); use fifo",
            )
        if scheduler == "asha" and len(self.points()) < 2:
            raise ConfigError(
                "scheduler",
                f"scheduler asha needs trials that report more than once, and this "
                f"{experiment.kind} search's trials report once; use fifo",
            )
        experiment.validate()
        self.trial()
        points = self.points()
        if self.space.grace_period is not None and self.space.grace_period > points[-1]:
            checks.fail(
                "grace_period",
                self.space.grace_period,
                f"an integer in [1, {points[-1]}] (the last evaluation point)",
            )

    def trial(self) -> dict[str, Any]:
        """The trial every sample trains, λ aside (the experiment's one IMM setting)."""
        return self.experiment.search_trial()

    def points(self) -> list[int]:
        """When a trial reports: its evaluation points (epochs), in order."""
        return self.experiment.search_points()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "experiment": self.experiment.to_dict(),
            "space": dataclasses.asdict(self.space),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Search:
        from tuning.kinds import experiment_from_dict

        return cls(
            data["name"], experiment_from_dict(data["experiment"]), SearchSpace(**data["space"])
        )

    def with_budget(self, budget: int | None) -> Search:
        """This search with its trials trained ``budget`` epochs (None: unchanged)."""
        if budget is None:
            return self
        return dataclasses.replace(self, experiment=self.experiment.search_budget(budget))

    def split(self) -> list[Search]:
        """The searches this one runs as: itself, or one per part its experiment searches
        apart (:meth:`~tuning.base.ExperimentBase.search_split`), each named by its part
        and stored in this search's folder."""
        parts = self.experiment.search_split()
        if len(parts) == 1 and not parts[0][0]:
            return [self]
        return [dataclasses.replace(self, name=label, experiment=part) for label, part in parts]

    def with_space(self, **options: Any) -> Search:
        """This search with some of its space's fields replaced (None values ignored)."""
        changes = {k: v for k, v in options.items() if v is not None}
        return dataclasses.replace(self, space=dataclasses.replace(self.space, **changes))


def when(time_attr: str, time: float) -> str:
    """Where a trial's metric was taken, in words: "after 3 epochs", "at n = 10"."""
    if time_attr in ("epoch", "epochs"):
        return f"after {time:g} epoch{'' if time == 1 else 's'}"
    return f"at {time_attr} = {time:g}"


def searched_lambda(config: dict[str, Any]) -> float:
    """λ of a search trial's config: its ``lambda``, or λ of its ``r``."""
    if "lambda" in config:
        return float(config["lambda"])
    return ratio_to_lambda(float(config["r"]))


def load_search(folder: str | Path | Location) -> Search:
    """The search stored in ``folder`` (its ``experiment.json``)."""
    folder = resolve(folder, option=None)
    try:
        data = json.loads((folder / SEARCH_FILE).read_text())
    except FileNotFoundError:
        raise ValueError(f"{folder} holds no search (no {SEARCH_FILE})") from None
    if data.get("kind") != Search.kind:
        raise ValueError(f"{folder} holds a sweep, not a search: use imm-ray report")
    return Search.from_dict(data)


@dataclass(frozen=True)
class TrialSummary:
    """One trial of a search, from its stored results."""

    index: int
    """Its place in the order the algorithm suggested trials (0, 1, ...)."""
    lam: float
    """λ it started with."""
    final_lam: float
    """λ at its last evaluation point: under PBT, what exploit and explore made it."""
    time: int
    """The last evaluation point it reached (epochs)."""
    value: float
    """The metric there."""
    spread: float | None
    """The metric's standard error across the trial's seeds, where it has seeds."""
    schedule: list[list[float]]
    """``[[epoch, λ], ...]``: λ from each epoch on (one entry without PBT)."""
    curve: list[list[float]]
    """``[[epoch, metric], ...]`` along the trial's own history (under PBT, along the
    lineage of checkpoints it continued from)."""
    folder: str


@dataclass(frozen=True)
class SearchReport:
    """What :func:`write_search_report` wrote and found."""

    table: str
    best: dict[str, Any]
    paths: dict[str, str]
    trials: list[TrialSummary]


def read_search(folder: str | Path | Location) -> tuple[Search, list[TrialSummary]]:
    """The search in ``folder`` and a summary of each of its trials that reported, by index."""
    from tuning.report import read_trials

    folder = resolve(folder, option=None)
    search = load_search(folder)
    metric, time = search.metric, search.experiment.search_time
    summaries = []
    for trial in read_trials(folder):
        rows = [row for row in trial.rows if metric in row and time in row]
        if not rows:
            continue
        first, last = rows[0], rows[-1]
        params = trial.params
        summaries.append(
            TrialSummary(
                # A PBT member's params.json holds its latest config; its first row, the
                # value it started with.
                index=int(first.get("index", params["index"])),
                lam=float(first.get("lambda", searched_lambda(params))),
                final_lam=float(last.get("lambda", searched_lambda(params))),
                time=int(last[time]),
                value=float(last[metric]),
                spread=last.get(f"{metric}_se"),
                schedule=last.get("schedule") or [[0, searched_lambda(params)]],
                curve=last.get("curves", {}).get(metric) or [[r[time], r[metric]] for r in rows],
                folder=trial.folder,
            )
        )
    summaries.sort(key=lambda t: t.index)
    return search, summaries


def best_trial(search: Search, trials: list[TrialSummary]) -> TrialSummary:
    """The best trial among those that reached the last evaluation point (trials ASHA
    stopped were measured after fewer epochs, so their metric is not comparable); ties go
    to the earlier trial."""
    end = search.points()[-1]
    finished = [t for t in trials if t.time >= end and math.isfinite(t.value)]
    pool = finished or [t for t in trials if math.isfinite(t.value)]
    if not pool:
        raise ValueError("no trial of the search has reported a finite metric yet")
    sign = 1 if search.mode == "max" else -1
    return max(pool, key=lambda t: (sign * t.value, -t.index))


def write_search_report(folder: str | Path | Location) -> SearchReport:
    """Writes ``trials.csv``, ``best.json`` and, for PBT, ``schedule.csv`` and
    ``schedule.png`` in a search's folder, from its trials' stored results (no Ray
    needed); returns them with a markdown table of the trials."""
    folder = resolve(folder, option=None)
    search, trials = read_search(folder)
    best = best_trial(search, trials)
    metric, time = search.metric, search.experiment.search_time
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    pbt = search.space.scheduler == "pbt"
    final = ["final_lambda"] if pbt else []
    writer.writerow(
        ["trial", "lambda", "r", *final, time, metric, f"{metric}_se", "best", "folder"]
    )
    for t in trials:
        writer.writerow(
            [
                t.index,
                _g(t.lam),
                _g(lambda_to_ratio(t.lam)),
                *([_g(t.final_lam)] if pbt else []),
                t.time,
                _g(t.value),
                "" if t.spread is None else _g(t.spread),
                int(t is best),
                t.folder,
            ]
        )
    (folder / TRIALS_CSV).write_text(out.getvalue())
    paths = {"trials": str(folder / TRIALS_CSV), "best": str(folder / BEST_FILE)}
    found = {
        "search": search.name,
        "metric": metric,
        "mode": search.mode,
        "trial": best.index,
        "lambda": best.final_lam,
        "r": lambda_to_ratio(best.final_lam),
        time: best.time,
        metric: best.value,
        f"{metric}_se": best.spread,
        "trials": len(trials),
    }
    if search.space.scheduler == "pbt":
        found["schedule"] = best.schedule
        found["curve"] = best.curve
        (folder / SCHEDULE_CSV).write_text(schedule_csv(best, time, metric, search.points()))
        (folder / SCHEDULE_PLOT).write_bytes(schedule_plot(best, time, metric))
        paths.update(schedule=str(folder / SCHEDULE_CSV), plot=str(folder / SCHEDULE_PLOT))
    (folder / BEST_FILE).write_text(json.dumps(found, indent=2) + "\n")
    return SearchReport(_table(search, trials, best), found, paths, trials)


def lambda_at(schedule: list[list[float]], epoch: float) -> float:
    """λ a schedule ``[[from_epoch, λ], ...]`` trains epoch ``epoch`` (1-based) with: the
    last entry that starts before it."""
    lam = schedule[0][1]
    for start, value in schedule:
        if start < epoch:
            lam = value
    return float(lam)


def schedule_csv(best: TrialSummary, time: str, metric: str, points: list[int]) -> str:
    """The best member's schedule, one row per evaluation point: λ (and r) over the
    epochs leading to it, and the metric there along its lineage."""
    values = {int(t): v for t, v in best.curve}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([time, "lambda", "r", metric])
    for point in points:
        lam = lambda_at(best.schedule, point)
        value = "" if values.get(point) is None else _g(values[point])
        writer.writerow([point, _g(lam), _g(lambda_to_ratio(lam)), value])
    return out.getvalue()


def schedule_plot(best: TrialSummary, time: str, metric: str) -> bytes:
    """λ against epochs (a step plot) above the metric along the lineage, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(t for t, _ in best.curve)
    starts = [s for s, _ in best.schedule] + [end]
    lams = [lam for _, lam in best.schedule]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 5.5))
    top.stairs(lams, starts, baseline=None, linewidth=2)
    top.set_ylabel("λ")
    top.set_title(f"Best member's λ schedule (trial {best.index})")
    top.grid(alpha=0.3)
    bottom.plot([t for t, _ in best.curve], [v for _, v in best.curve], marker="o")
    bottom.set_xlabel(f"Number of {time}")
    bottom.set_ylabel(metric)
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def _g(value: float) -> str:
    return f"{value:.6g}"


def _table(search: Search, trials: list[TrialSummary], best: TrialSummary) -> str:
    metric, time = search.metric, search.experiment.search_time
    end = search.points()[-1]
    pbt = search.space.scheduler == "pbt"
    final = " λ at the end |" if pbt else ""
    lines = [
        f"| trial | λ | r |{final} {time} | {metric} |",
        "|---:|---:|---:|---:|---:|" + ("---:|" if pbt else ""),
    ]
    for t in trials:
        value = f"{t.value:.4g}" + ("" if t.spread is None else f" ± {t.spread:.2g}")
        mark = " **best**" if t is best else (" (stopped)" if t.time < end else "")
        ended = f" {t.final_lam:.4g} |" if pbt else ""
        lines.append(
            f"| {t.index} | {t.lam:.4g} | {lambda_to_ratio(t.lam):.3f} |{ended} {t.time} | "
            f"{value}{mark} |"
        )
    found = (
        f"\nBest: λ = {best.final_lam:.4g} (r = {lambda_to_ratio(best.final_lam):.3f}), {metric} "
        f"{best.value:.4g} {when(time, best.time)} (trial {best.index} of {len(trials)})"
    )
    if search.space.scheduler == "pbt":
        steps = ", ".join(f"{lam:.3g} from {int(s)}" for s, lam in best.schedule)
        found += f"\nIts λ schedule: {steps}"
    return "\n".join(lines) + found


def run_searches(
    search: Search,
    storage: str | Path | Location,
    *,
    resume: bool = False,
    address: str | None = None,
    verbose: bool = False,
) -> list[SearchReport]:
    """Runs ``search``: one :func:`run_search`, or (for an experiment searched part by
    part, :meth:`Search.split`) one per part in ``storage/<name>/<part>/``, and then
    ``best.csv`` there, the best setting of each part. Every part is checked before the
    first starts."""
    parts = search.split()
    for part in parts:
        part.validate()
    if parts == [search]:
        return [run_search(search, storage, resume=resume, address=address, verbose=verbose)]
    folder = resolve(storage) / search.name
    reports = []
    for part in parts:
        started = (folder / part.name).exists() and any(
            True for _ in (folder / part.name).iterdir()
        )
        # On --resume, a part not started yet starts; one that finished reruns nothing.
        reports.append(
            run_search(part, folder, resume=resume and started, address=address, verbose=verbose)
        )
    (folder / BEST_CSV).write_text(parts_csv(parts, reports))
    return reports


#: A search run part by part: each part's best setting, one row per part.
BEST_CSV = "best.csv"


def parts_csv(parts: list[Search], reports: list[SearchReport]) -> str:
    """One row per part: its name, the best λ and r, and the metric there."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    metric = parts[0].metric
    writer.writerow(["part", "lambda", "r", metric, f"{metric}_se", "trials"])
    for part, report in zip(parts, reports, strict=True):
        best = report.best
        spread = best.get(f"{metric}_se")
        writer.writerow(
            [
                part.name,
                _g(best["lambda"]),
                _g(best["r"]),
                _g(best[metric]),
                "" if spread is None else _g(spread),
                best["trials"],
            ]
        )
    return out.getvalue()


def run_search(
    search: Search,
    storage: str | Path | Location,
    *,
    resume: bool = False,
    address: str | None = None,
    verbose: bool = False,
    inputs: dict[str, Any] | None = None,
) -> SearchReport:
    """Runs (or with ``resume`` continues) ``search`` on Ray Tune under
    ``storage/<name>/`` and writes its report (:func:`write_search_report`), while an
    embedded Ray shuts down. Storage, ``address``, SIGINT and ``resume`` behave as for a
    sweep (:func:`tuning.sweep.run_sweep`): a bad search is a ``ValueError`` before Ray
    starts, and an interrupted one raises :class:`~tuning.sweep.SweepInterrupted`."""
    from tuning.sweep import run_sweep

    search.validate()
    return run_sweep(
        _Searched(search),  # type: ignore[arg-type]
        storage,
        resume=resume,
        address=address,
        verbose=verbose,
        inputs=inputs,
        then=write_search_report,
        fit=_fit_search,
    )


@dataclass(frozen=True)
class _Searched:
    """A search as :func:`~tuning.sweep.run_sweep` handles it: its folder's name, what is
    stored (and compared on ``--resume``), the resources per trial and the inputs."""

    search: Search

    @property
    def name(self) -> str:
        return self.search.name

    @property
    def cpus_per_trial(self) -> float:
        return self.search.cpus_per_trial

    @property
    def gpus_per_trial(self) -> float:
        return self.search.gpus_per_trial

    def to_dict(self) -> dict[str, Any]:
        return self.search.to_dict()

    def load_inputs(self) -> dict[str, Any]:
        return self.search.experiment.load_inputs()

    def mend(self, folder: Location) -> list[str]:
        from tuning.resume import (
            count_generated_trials,
            mend_search_before_resume,
            set_aside_untracked_trials,
        )

        if self.search.space.scheduler != "pbt":  # PBT's trials are Tune's variants
            count_generated_trials(folder)
            set_aside_untracked_trials(folder)
        return mend_search_before_resume(folder)


def _fit_search(
    searched: _Searched,
    storage: Location,
    folder: Location,
    inputs: dict[str, Any],
    *,
    resume: bool,
    verbose: bool,
    tensorboard: bool,
    callbacks: Sequence[Any] = (),
) -> bool:
    """Tune's run of a search (what :func:`tuning.sweep._fit` is to a sweep)."""
    from ray import tune

    from tuning.loggers import result_loggers
    from tuning.progress import GpuWarnings
    from tuning.report import save_experiment
    from tuning.search_algorithms import SearchProgress
    from tuning.sweep import (
        CHECKPOINTS_KEPT,
        MAX_FAILURES,
        _environment,
        _fit_restored,
        _TuneInterrupt,
    )

    search = searched.search
    experiment = search.experiment
    trainable_class = experiment.search_trainable()
    trainable = tune.with_resources(
        tune.with_parameters(trainable_class, inputs=inputs),
        {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial},
    )
    if resume:
        return _fit_restored(folder, trainable)
    folder.mkdir()
    save_experiment(folder, searched)
    loggers = result_loggers(tensorboard)
    points = search.points()
    progress = (
        []
        if verbose
        else [
            SearchProgress(
                search.space.num_samples,
                MAX_FAILURES,
                search.metric,
                experiment.search_time,
                points[-1],
                when,
            )
        ]
    )
    # A class trainable checkpoints at every evaluation point (what PBT copies, and what a
    # resumed trial continues from); a function trainable passes its own to tune.report.
    is_class = isinstance(trainable_class, type) and issubclass(trainable_class, tune.Trainable)
    every = 1 if is_class else 0
    space = {"trial": search.trial()}
    if search.space.scheduler == "pbt":
        # Tune's PBT takes only its own variant generator: the population is a grid of
        # indices, each member's value drawn beforehand (SearchSpace.population).
        values = search.space.population()
        space.update(
            index=tune.grid_search(list(range(len(values)))),
            **{search.space.param: tune.sample_from(_Member(values))},
        )
    scheduler = make_scheduler(search)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.mode,
            search_alg=make_search_algorithm(search),
            scheduler=scheduler,
            num_samples=1 if search.space.scheduler == "pbt" else search.space.num_samples,
            # A class trainable is reset in place (a PBT member continues on the same
            # worker); a function trainable that Tune stops early trains on for a while
            # before Tune gives up reusing its worker, so it gets a fresh one.
            reuse_actors=is_class,
            trial_dirname_creator=_search_dirname,
        ),
        run_config=tune.RunConfig(
            name=search.name,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem,
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            # PBT copies a member's latest checkpoint: its earlier ones are kept a while
            # longer, so none is gone before a member that copied it has restored it.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=CHECKPOINTS_KEPT + (2 if search.space.scheduler == "pbt" else 0),
                checkpoint_frequency=every,
            ),
            verbose=2 if verbose else 0,
            callbacks=[*loggers, *progress, GpuWarnings(), *callbacks],
        ),
    )
    with (
        _environment(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"),
        warnings.catch_warnings(),
        _TuneInterrupt() as interrupt,
    ):
        # Tune's advice to reuse workers under PBT: a function trainable's are not, above.
        warnings.filterwarnings("ignore", message="Consider boosting PBT performance")
        tuner.fit()
    return interrupt.caught


def make_search_algorithm(search: Search) -> Any:
    """The search's algorithm: Optuna's TPE or uniform (random) sampler, seeded, over the
    parameter's range, in an :class:`~tuning.search_algorithms.OrderedSearch`."""
    space = search.space
    if space.scheduler == "pbt":
        return None  # Tune's own variant generator: see _fit_search
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from tuning.search_algorithms import OrderedSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if space.sampler == "optuna":
        # TPE's first trials are drawn at random; a third of a small budget, not Optuna's 10.
        sampler = optuna.samplers.TPESampler(
            seed=space.seed, n_startup_trials=max(2, min(10, space.num_samples // 3))
        )
    else:
        sampler = optuna.samplers.RandomSampler(seed=space.seed)
    distribution = optuna.distributions.FloatDistribution(space.low, space.high, log=space.log)
    inner = OptunaSearch(
        space={space.param: distribution},
        metric=search.metric,
        mode=search.mode,
        sampler=sampler,
    )
    batches = space.sampler == "optuna" or space.scheduler == "asha"
    return OrderedSearch(inner, live=space.live, batches=batches)


def make_scheduler(search: Search) -> Any:
    """FIFO, :class:`~tuning.search_algorithms.BatchASHA` or
    :class:`~tuning.search_algorithms.SeededPBT`, timed by the experiment's evaluation
    points."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from tuning.search_algorithms import BatchASHA, SeededPBT

    space, points = search.space, search.points()
    time_attr = search.experiment.search_time
    if space.scheduler == "asha":
        return BatchASHA(
            time_attr=time_attr,
            batch=space.live,
            grace_period=space.grace_period or points[0],
            max_t=points[-1],
            reduction_factor=space.reduction_factor,
        )
    if space.scheduler == "pbt":
        domain = (tune.loguniform if space.log else tune.uniform)(space.low, space.high)
        return SeededPBT(
            seed=space.seed,
            time_attr=time_attr,
            perturbation_interval=space.perturbation_interval or points[0],
            hyperparam_mutations={space.param: domain},
            quantile_fraction=space.quantile_fraction,
            resample_probability=space.resample_probability,
            custom_explore_fn=_Clip(space),
        )
    return FIFOScheduler()


@dataclass(frozen=True)
class _Member:
    """The value of PBT member ``index`` (Tune's ``sample_from``)."""

    values: list[float]

    def __call__(self, config: dict[str, Any]) -> float:
        return self.values[config["index"]]


@dataclass(frozen=True)
class _Clip:
    """PBT's explore step, then the parameter put back within its range."""

    space: SearchSpace

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, self.space.param: self.space.clip(config[self.space.param])}


def _search_dirname(trial: Any) -> str:
    config = trial.config
    param = "lambda" if "lambda" in config else "r"
    value = config.get(param)
    # A PBT member's value is still Tune's placeholder when its folder is named.
    named = f"_{param}{value:.4g}" if isinstance(value, float | int) else ""
    return f"{trial.trial_id}_{int(config['index']):03d}{named}"
