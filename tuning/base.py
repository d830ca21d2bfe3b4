"""What every experiment kind offers the sweep and report machinery, and the checks they
share. A leaf: it imports nothing from ``tuning`` (and neither RLlib nor torch)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


class SweepExperiment(Protocol):
    """What :func:`~tuning.sweep.run_sweep` and :func:`~tuning.report.write_report` need.

    Every trial dict carries ``"setting"`` (a setting's label, or the joined labels of the
    settings it trains), ``"sizes"`` (the dataset sizes it reports, in order) and ``"tag"``
    (a short name for its folder). Its trainable reports ``{"size": n, "values": {seed or
    run: value}}`` once per size, with ``"setting"`` added when one trial trains several.
    ``settings`` (each with a ``label``) orders the CSV; an optional ``gap`` names two
    curves whose difference the table adds; ``notes()`` are lines the user should read
    before the sweep runs (e.g. where IMM is off). Every row also says where the trial ran
    (``node_id``, ``device``: :mod:`tuning.placement`).
    """

    kind: ClassVar[str]
    name: str
    settings: tuple[Any, ...]
    cpus_per_trial: float
    gpus_per_trial: float
    size_name: ClassVar[str]
    """Column name of the dataset size in the CSV (``epochs``, ``n``)."""
    y_label: ClassVar[str]

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
    def with_overrides(self, **overrides: Any) -> SweepExperiment: ...
    def to_dict(self) -> dict[str, Any]: ...


def check_name_and_labels(name: str, labels: list[str]) -> None:
    """An experiment's name is a folder name; its settings' labels are its curves: unique."""
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name must be a non-empty word without '/', '\\' or spaces, got {name!r}")
    if not labels:
        raise ValueError("settings must list at least one setting")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"settings labels must be unique, repeated: {', '.join(repeated)}")


def check_resources(cpus_per_trial: object, gpus_per_trial: object) -> None:
    """CPUs per trial must be a number > 0, GPUs a number >= 0 (fractions allowed)."""
    for name, value, positive in (
        ("cpus_per_trial", cpus_per_trial, True),
        ("gpus_per_trial", gpus_per_trial, False),
    ):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(
                f"{name} must be a number {'> 0' if positive else '>= 0'}, got {value!r}"
            )


def check_seeds(seeds: object) -> list[int]:
    """A seed count N (→ seeds 0 … N−1) or a non-empty list of distinct seeds >= 0."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a count >= 1 or a list of seeds, got {seeds!r}")
        return list(range(seeds))
    if isinstance(seeds, list | tuple) and seeds:
        if all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            if len(set(seeds)) == len(seeds):
                return [int(s) for s in seeds]
    raise ValueError(
        f"seeds must be a count >= 1 or a non-empty list of distinct integers >= 0, got {seeds!r}"
    )


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
