"""Checks that the supervised kinds' tests share (``test_lm_experiments.py``,
``test_bert_experiments.py``): of an experiment's plan, and of a tiny sweep's summary."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from tuning.kinds import experiment_from_dict


def assert_plans_two_seeds_imm_first(experiment: Any, count: int, **config: Any) -> None:
    """``experiment``, overridden to 2 seeds and 2 epochs, plans ``count`` trials: one per
    setting and seed, the IMM ones first, each with the values ``config`` in its config, its
    sizes the epochs 1 and 2; and it comes back the same from its dict."""
    trials = experiment.trials()
    assert len(trials) == count
    assert [t["config"]["method"] for t in trials[:2]] == ["imm", "imm"]
    assert {(t["setting"], t["seed"]) for t in trials} == {
        (s.label, seed) for s in experiment.settings for seed in (0, 1)
    }
    assert all(t["config"]["epochs"] == 2 for t in trials)
    assert all(t["config"][key] == value for t in trials for key, value in config.items())
    assert trials[0]["sizes"] == [1, 2]
    assert experiment_from_dict(experiment.to_dict()) == experiment


def summary_rows(folder: Path, experiment: Any) -> dict[tuple[str, str], dict[str, str]]:
    """The rows of the sweep's ``summary.csv`` in ``folder`` by (setting, epochs), once
    checked to hold every curve of ``experiment`` and nothing else."""
    with open(folder / "summary.csv") as handle:
        rows = {(r["setting"], r["epochs"]): r for r in csv.DictReader(handle)}
    assert {setting for setting, _ in rows} == set(experiment.curves())
    return rows
