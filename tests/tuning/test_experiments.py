"""Named experiments as data, and how they become Tune trials."""

from __future__ import annotations

import pytest

from imm_ray.rl import paper_lambda
from tuning.rl import EXPERIMENTS, PAPER_EPOCHS, Experiment, Setting, run_trial, trial_plan


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
    # One trial per setting. No IMM: one run to 500 epochs; the λ rule switches at 200
    # epochs: two λ groups, one run per seed each, in the same trial.
    assert len(no_imm) == 1 and no_imm[0]["epochs"] == list(PAPER_EPOCHS)
    assert no_imm[0]["groups"] == [{"lam": 0.0, "epochs": list(PAPER_EPOCHS)}]
    assert no_imm[0]["seeds"] == list(range(30))
    assert len(imm) == 1 and imm[0]["seeds"] == list(range(30))
    assert [g["lam"] for g in imm[0]["groups"]] == [paper_lambda(10), paper_lambda(500)]
    assert [e for g in imm[0]["groups"] for e in g["epochs"]] == list(PAPER_EPOCHS)
    assert imm[0]["epochs"] == imm[0]["sizes"] == list(PAPER_EPOCHS)
    assert imm[0]["tag"] == "lam0.25+0.111_seeds0-29"


def test_a_rule_settings_one_trial_reports_what_one_trial_per_lambda_did(ray_session):
    """The λ groups of one trial give every seed the figures that separate trials, one per
    λ, give."""
    rule = Setting("IMM")  # λ = 0.25 up to 175 epochs, 0.111 from 200 on
    experiment = Experiment("x", (rule,), epochs=(20, 175, 200, 230), seeds=(1, 4))
    (trial,) = trial_plan(experiment)
    assert [g["lam"] for g in trial["groups"]] == [paper_lambda(20), paper_lambda(200)]
    merged = run_trial(trial)
    assert sorted(merged) == [20, 175, 200, 230]
    for group in trial["groups"]:
        separate = run_trial({**trial, "groups": [group], "epochs": group["epochs"]})
        assert sorted(separate) == group["epochs"]
        for epochs, values in separate.items():
            assert list(merged[epochs]) == [1, 4]
            assert merged[epochs] == pytest.approx(values, rel=1e-5)


def test_seeds_per_trial_splits_the_seeds_into_chunks():
    experiment = Experiment(
        "x", (Setting("a", imm=False),), epochs=(5,), seeds=7, seeds_per_trial=3
    )
    assert [t["seeds"] for t in trial_plan(experiment)] == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_seeds_values_are_the_same_bits_however_its_setting_is_split_into_trials(
    ray_session,
):
    """Each seed trains alone inside the seed-vectorized algorithm: its values do not depend
    on which other seeds share its trial (checked bit for bit here, at 3 and 6 epochs; a
    probe found the same at 100 and 300 epochs, λ rule, 8 seeds in chunks of 1, 2 and 3)."""
    settings = (Setting("no", imm=False), Setting("imm", lam=0.5))
    runs = {}
    for size in (None, 1, 3):
        experiment = Experiment("x", settings, epochs=(3, 6), seeds=4, seeds_per_trial=size)
        values: dict[tuple[str, int], dict[int, float]] = {}
        for trial in trial_plan(experiment):
            for epochs, by_seed in run_trial(trial).items():
                values.setdefault((trial["setting"], epochs), {}).update(by_seed)
        runs[size] = values
    assert runs[1] == runs[None] and runs[3] == runs[None]
    assert all(list(v) == [0, 1, 2, 3] for v in runs[None].values())


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
