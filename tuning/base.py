"""What every experiment kind offers the sweep and report machinery, and the checks they
share. A leaf: it imports nothing from ``tuning`` (and neither RLlib nor torch)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self

from imm_ray import checks
from imm_ray.checks import ConfigError


class SweepExperiment(Protocol):
    """What :func:`~tuning.sweep.run_sweep` and :func:`~tuning.report.write_report` need.

    Every trial dict carries ``"setting"`` (a setting's label, or the joined labels of the
    settings it trains), ``"sizes"`` (the dataset sizes it reports, in order) and ``"tag"``
    (a short name for its folder). Its trainable reports ``{"size": n, "values": {seed or
    run: value}}`` once per size, with ``"setting"`` added when one trial trains several.
    ``settings`` (each with a ``label``) orders the CSV; ``notes()`` are lines the user
    should read before the sweep runs (e.g. where IMM is off). Every row also says where the
    trial ran (``node_id``, ``device``: :mod:`tuning.placement`).

    :class:`ExperimentBase` gives every kind the members most kinds share (the stored dict
    format, no notes, no gap, no spread, no baselines).
    """

    kind: ClassVar[str]
    name: str
    settings: tuple[Any, ...]
    cpus_per_trial: float
    gpus_per_trial: float
    size_name: ClassVar[str]
    """Column name of the dataset size in the CSV (``epochs``, ``n``)."""
    repeats_name: ClassVar[str]
    """What the table calls the repetitions it averages over (``seeds``, ``runs``)."""
    y_label: ClassVar[str]
    spread: ClassVar[str | None]
    """``"std"``: the CSV and table add the standard deviation across seeds (Table 2's ±
    spread); ``None``: percentiles only."""
    gap: tuple[str, str] | None
    """Two curves whose mean difference the table adds as a column (Table 4), or ``None``."""

    def trials(self) -> list[dict[str, Any]]: ...
    def validate(self) -> None: ...
    def load_inputs(self) -> dict[str, Any]:
        """Everything the trials read (a corpus, a checkpoint, solved restricted policies),
        read and checked once on the driver (bad input: ``ValueError``); the sweep hands it
        to every trial through Ray's object store, so no trial opens a driver's path."""
        ...

    def notes(self) -> list[str]: ...
    def trainable(self) -> Callable[[dict[str, Any], dict[str, Any]], None]:
        """A Tune function trainable ``f(config, inputs)``: ``config["trial"]`` is one of
        :meth:`trials`, ``inputs`` what :meth:`load_inputs` returned."""
        ...

    def curves(self) -> list[str]: ...
    def point(self, setting: str, size: int) -> tuple[str, float]: ...
    def x_label(self) -> str: ...
    def baselines(self) -> dict[str, float]:
        """``{label: value}`` drawn beside the curves, computed without training (e.g. the
        restricted policy alone); empty when the experiment has none."""
        ...

    def with_overrides(self, **overrides: Any) -> SweepExperiment: ...
    def to_dict(self) -> dict[str, Any]: ...
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepExperiment: ...


class ExperimentBase:
    """What the experiment kinds (frozen dataclasses) share: the dict an experiment is
    stored as (``experiment.json``: its ``kind`` and its fields, nested dataclasses as dicts)
    and read back from, and the neutral value of each optional :class:`SweepExperiment`
    member. A kind overrides only what it has (RL's baselines, BERT's spread, ...)."""

    repeats_name: ClassVar[str] = "runs"
    spread: ClassVar[str | None] = None
    gap: tuple[str, str] | None = None

    search_metrics: ClassVar[dict[str, str]] = {}
    """What a search (:mod:`tuning.search`) may optimize, each with the mode it is best
    in (``{"reward": "max"}``); empty: the kind cannot be searched."""
    search_time: ClassVar[str] = "size"
    """The key of a search trial's results that says how far it has trained."""
    search_checkpoints: ClassVar[bool] = False
    """Whether a search trial checkpoints at every evaluation point (what PBT needs)."""

    def notes(self) -> list[str]:
        return []

    def baselines(self) -> dict[str, float]:
        return {}

    def search_trial(self) -> dict[str, Any]:
        """The trial a search trains at each λ: the experiment's one IMM setting."""
        raise ConfigError("experiment", f"{self.kind} experiments cannot be searched")  # type: ignore[attr-defined]

    def search_points(self) -> list[int]:
        """When a search trial reports (:attr:`search_time`), in order."""
        raise ConfigError("experiment", f"{self.kind} experiments cannot be searched")  # type: ignore[attr-defined]

    def search_split(self) -> list[tuple[str, Any]]:
        """The searches one search of this experiment is: ``[(label, experiment)]``, one
        per part searched apart (the logistic kind: one per dataset size), or the
        experiment itself, unlabelled."""
        return [("", self)]

    def search_budget(self, budget: int) -> Any:
        """This experiment trained ``budget`` epochs in a search (``--epochs``), at the
        same evaluation interval."""
        raise ConfigError("epochs", f"a search of a {self.kind} experiment takes no --epochs")  # type: ignore[attr-defined]

    def search_trainable(self) -> Any:
        """The Tune trainable of a search trial: its config holds ``trial`` (what
        :meth:`search_trial` gave), the searched ``lambda`` or ``r``, and ``index``."""
        raise ConfigError("experiment", f"{self.kind} experiments cannot be searched")  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}  # type: ignore[attr-defined, call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The experiment :meth:`to_dict` gave (after a JSON round trip): the ``kind`` key
        dropped, each field rebuilt from its annotation (lists → tuples, dicts → the
        dataclasses their fields name); a wrong key is a ``TypeError``."""
        return _decode(cls, {k: v for k, v in data.items() if k != "kind"})


def _decode(annotation: Any, value: Any) -> Any:
    """``value`` (JSON: lists, dicts, scalars) as the type ``annotation`` names, where that
    is a dataclass, a tuple or a union of them with other types; anything else unchanged."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            if (isinstance(value, dict) and dataclasses.is_dataclass(option)) or (
                isinstance(value, list | tuple) and typing.get_origin(option) is tuple
            ):
                return _decode(option, value)
        return value
    if origin is tuple and isinstance(value, list | tuple):
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item) for item in value)
        if len(args) == len(value):
            return tuple(_decode(arg, item) for arg, item in zip(args, value, strict=True))
        return tuple(value)  # the wrong length: the class's own checks say so
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            return value
        hints = typing.get_type_hints(annotation)
        return annotation(**{k: _decode(hints.get(k, Any), v) for k, v in value.items()})
    return value


class ConfigSweepExperiment(ExperimentBase):
    """An experiment whose settings share one trainer configuration (``overrides``: a
    config class's fields) and ``seeds`` (LM, BERT): :meth:`with_overrides` sets the
    experiment's own :attr:`own_options`, and merges every other option into
    ``overrides``."""

    own_options: ClassVar[tuple[str, ...]] = ()
    """Options that are fields of the experiment itself (``data``, ``preset``, ...)."""

    def with_overrides(
        self,
        seeds: int | list[int] | None = None,
        cpus_per_trial: float | None = None,
        gpus_per_trial: float | None = None,
        **options: Any,
    ) -> Self:
        """``seeds``: a count (0 … N−1) or a list; ``options``: the experiment's
        :attr:`own_options` and the trainer's config fields such as ``epochs`` (None values
        are ignored)."""
        changes: dict[str, Any] = {
            "cpus_per_trial": cpus_per_trial,
            "gpus_per_trial": gpus_per_trial,
            **{key: options.pop(key, None) for key in self.own_options},
        }
        if seeds is not None:
            changes["seeds"] = tuple(check_seeds(seeds))
        config = {k: v for k, v in options.items() if v is not None}
        if config:
            changes["overrides"] = {**self.overrides, **config}  # type: ignore[attr-defined]
        return dataclasses.replace(  # type: ignore[type-var]
            self, **{k: v for k, v in changes.items() if v is not None}
        )

    def trials(self) -> list[dict[str, Any]]:
        """One trial per setting and seed, a size per epoch, with the curves of
        :meth:`trial_curves`; IMM trials come first: they are the long ones, so the cheap
        ones fill the gaps."""
        trials = []
        for setting in self.settings:  # type: ignore[attr-defined]
            for seed in self.seeds:  # type: ignore[attr-defined]
                config = self.config(setting, seed)  # type: ignore[attr-defined]
                trials.append(
                    {
                        "setting": setting.label,
                        "sizes": list(range(1, config.epochs + 1)),
                        "tag": f"seed{seed}",
                        "seed": seed,
                        "config": dataclasses.asdict(config),
                        **self.trial_curves(setting.label),
                        "cpus": self.cpus_per_trial,  # type: ignore[attr-defined]
                    }
                )
        trials.sort(key=lambda t: t["config"]["method"] != "imm")
        return trials

    def trial_curves(self, label: str) -> dict[str, dict[str, str]]:
        """The curves a trial of the setting ``label`` reports under each key of its results:
        ``{"curves": {key: curve}}``, and any more a kind adds."""
        raise NotImplementedError


def check_name_and_labels(name: str, labels: list[str]) -> None:
    """An experiment's name is a folder name; its settings' labels are its curves: unique."""
    if not name or any(c in name for c in "/\\ "):
        checks.fail("name", name, "a non-empty word without '/', '\\' or spaces")
    if not labels:
        raise ConfigError("settings", "settings must list at least one setting")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(
            "settings", f"settings labels must be unique, repeated: {', '.join(repeated)}"
        )


def check_resources(cpus_per_trial: object, gpus_per_trial: object) -> None:
    """CPUs per trial must be a number > 0, GPUs a number >= 0 (fractions allowed)."""
    checks.number("cpus_per_trial", cpus_per_trial, above=0)
    checks.number("gpus_per_trial", gpus_per_trial, at_least=0)


def check_seeds(seeds: object) -> list[int]:
    """A seed count N (→ seeds 0 … N−1) or a non-empty list of distinct seeds >= 0."""
    if checks.is_integer(seeds):
        if seeds < 1:
            checks.fail("seeds", seeds, "a count >= 1 or a list of seeds")
        return list(range(seeds))
    if isinstance(seeds, list | tuple) and seeds:
        if all(checks.is_integer(s) and s >= 0 for s in seeds):
            if len(set(seeds)) == len(seeds):
                return [int(s) for s in seeds]
    checks.fail("seeds", seeds, "a count >= 1 or a non-empty list of distinct integers >= 0")


@dataclass(frozen=True)
class MethodSetting:
    """One curve or column of a supervised sweep: a label, a training method and its
    overrides of the experiment's configuration (e.g. ``{"lam": 0.5}``)."""

    label: str
    method: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.label:
            raise ValueError("label must be a non-empty string")
