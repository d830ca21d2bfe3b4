"""The ``taxi`` sweep: three curves over episodes on Taxi, with the POMDP policy alone."""

from __future__ import annotations

import pytest

from imm_ray.rl.imm_config import TargetSpec
from tuning.aggregate import Summary
from tuning.report import markdown_table
from tuning.rl import EXPERIMENTS, TAXI_EPISODES, TAXI_LAMBDA, Experiment, trial_config, trial_plan


def test_taxi_is_no_imm_against_argmax_and_softmax_imm_over_30_seeds():
    taxi = EXPERIMENTS["taxi"]
    assert taxi.env == "imm_ray/Taxi-v0" and taxi.seeds == 30 and taxi.epochs == TAXI_EPISODES
    assert [(s.imm, s.target.kind) for s in taxi.settings] == [
        (False, "argmax"),
        (True, "argmax"),
        (True, "softmax"),
    ]
    trials = trial_plan(taxi)
    # A fixed λ: one run per setting with all 30 seeds side by side, evaluated at every size.
    assert len(trials) == 3 and all(t["seeds"] == list(range(30)) for t in trials)
    lams = [[g["lam"] for g in t["groups"]] for t in trials]
    assert lams == [[0.0], [TAXI_LAMBDA], [TAXI_LAMBDA]]
    config = trial_config(trials[1])
    assert config.gamma == 0.99 and config.env == "imm_ray/Taxi-v0"
    taxi.validate()


def test_taxi_reports_the_restricted_policy_alone():
    taxi = EXPERIMENTS["taxi"]
    baselines = taxi.baselines()
    assert list(baselines) == [
        "POMDP policy alone (IMM (argmax))",
        "POMDP policy alone (IMM (softmax T=1))",
    ]
    # The memoryless argmax dispatcher loops at a wrong stand (tests/restricted).
    assert baselines["POMDP policy alone (IMM (argmax))"] == pytest.approx(-200.0)
    assert -200 < baselines["POMDP policy alone (IMM (softmax T=1))"] < -100
    table = markdown_table([Summary("No IMM", 10, -700.0, -800.0, -600.0, 30)], taxi)
    assert "- POMDP policy alone (IMM (argmax)): -200.000 (exact, no training)" in table
    assert EXPERIMENTS["figure2"].baselines() == {}


def test_gamma_round_trips_and_is_checked():
    taxi = EXPERIMENTS["taxi"]
    assert Experiment.from_dict(taxi.to_dict()) == taxi
    with pytest.raises(ValueError, match=r"gamma must be a number in \[0, 1\], got 1.5"):
        Experiment(name="x", settings=taxi.settings, gamma=1.5)
    assert trial_config({**trial_plan(EXPERIMENTS["figure2"])[0]}).gamma == 0.9
    assert TargetSpec() == taxi.settings[1].target
