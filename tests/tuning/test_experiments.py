"""Named experiments as data, and how they become Tune trials."""

from __future__ import annotations

import pytest

from imm_ray.rl import paper_lambda
from tuning.rl import EXPERIMENTS, PAPER_EPOCHS, Experiment, Setting, trial_plan


def test_figure2_is_no_imm_vs_imm_argmax_over_the_paper_epochs_and_30_seeds():
    figure2 = EXPERIMENTS["figure2"]
    assert [s.imm for s in figure2.settings] == [False, True]
    assert figure2.settings[1].target.kind == "argmax" and figure2.settings[1].lam is None
    assert (
        figure2.epochs
        == PAPER_EPOCHS
        == (
            10,
            20,
            50,
            75,
            100,
            125,
            150,
            175,
            200,
            250,
            300,
            350,
            400,
            450,
            500,
        )
    )
    assert figure2.seeds == 30


def test_figure9_adds_softmax_targets_at_two_temperatures():
    kinds = [(s.target.kind, s.target.temperature) for s in EXPERIMENTS["figure9"].settings[1:]]
    assert kinds == [("argmax", 1.0), ("softmax", 0.5), ("softmax", 1.0)]


def test_lambda_search_covers_ratios_0_to_0_9_at_three_sizes():
    search = EXPERIMENTS["lambda-search"]
    assert search.epochs == (50, 200, 400)
    assert [round(s.lambda_ratio, 6) for s in search.settings] == [r / 10 for r in range(10)]


def test_rule_settings_train_one_run_per_lambda_with_all_seeds_side_by_side():
    trials = trial_plan(EXPERIMENTS["figure2"])
    no_imm = [t for t in trials if not t["imm"]]
    imm = [t for t in trials if t["imm"]]
    # No IMM: one run to 500 epochs; the λ rule switches at 200 epochs: two IMM runs.
    assert len(no_imm) == 1 and no_imm[0]["epochs"] == list(PAPER_EPOCHS)
    assert no_imm[0]["seeds"] == list(range(30))
    assert len(imm) == 2
    assert {t["lam"] for t in imm} == {paper_lambda(10), paper_lambda(500)}
    assert sorted(e for t in imm for e in t["epochs"]) == list(PAPER_EPOCHS)


def test_seeds_per_trial_splits_the_seeds_into_chunks():
    experiment = Experiment(
        "x", (Setting("a", imm=False),), epochs=(5,), seeds=7, seeds_per_trial=3
    )
    assert [t["seeds"] for t in trial_plan(experiment)] == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": 0}, "seeds must be a count >= 1 or a list of seeds, got 0"),
        ({"seeds": (1, 1)}, "seeds must be a count >= 1 or a non-empty list of distinct"),
        ({"epochs": ()}, "epochs must be a non-empty list"),
        ({"epochs": (10, 0)}, "epochs must be a non-empty list of integers >= 1"),
        ({"gpus_per_trial": -0.5}, "gpus_per_trial must be a number >= 0"),
        ({"cpus_per_trial": 0}, "cpus_per_trial must be a number > 0"),
        ({"settings": (Setting("a"), Setting("a"))}, "labels must be unique, repeated: a"),
        ({"x_axis": "time"}, "x_axis must be one of epochs, lambda_ratio"),
        ({"seeds_per_trial": 0}, "seeds_per_trial must be an integer >= 1"),
    ],
)
def test_bad_experiments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Experiment(**{"name": "x", "settings": (Setting("a"),), **kwargs})
