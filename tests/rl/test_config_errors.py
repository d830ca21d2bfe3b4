"""Bad RL settings fail when they are set, naming the field and the allowed range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imm_ray.rl import ReinforceConfig, TargetSpec


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lam": -0.5}, "imm_lambda must be a finite number >= 0, got -0.5"),
        ({"lam": math.inf}, "imm_lambda must be a finite number >= 0"),
        ({"lam": math.nan}, "imm_lambda must be a finite number >= 0"),
        ({"num_samples": 0}, "imm_num_samples must be None or an integer >= 1"),
        ({"target": np.full((11, 4), 0.3)}, "imm_target rows must sum to 1, row 0"),
        ({"target": np.full((11,), 0.25)}, "imm_target must be a [n_contexts, n_actions] table"),
        ({"view": "grid"}, "imm_view must be a PomdpMdpPair or None"),
    ],
)
def test_imm_settings_fail_when_set(settings, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ReinforceConfig().imm(**settings)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": -1.0}, "temperature must be > 0"),
        ({"epsilon": 1.5}, r"epsilon must be in \[0, 1\]"),
        ({"epsilon": -0.1}, r"epsilon must be in \[0, 1\]"),
        ({"kind": "max"}, "kind must be one of argmax, softmax"),
        ({"solver": "sarsop"}, "solver must be one of fib, qmdp"),
        ({"discount": 1.0}, r"discount must be in \(0, 1\)"),
    ],
)
def test_target_spec_fails_at_construction(spec, message):
    with pytest.raises(ValueError, match=message):
        TargetSpec(**spec)


def test_target_table_of_the_wrong_shape_for_the_env_fails_validation():
    config = ReinforceConfig().imm(target=np.full((5, 4), 0.25))
    with pytest.raises(ValueError, match=r"imm_target must have shape \(11, 4\), got \(5, 4\)"):
        config.validate()


def test_grid_size_below_two_fails_validation():
    config = ReinforceConfig().environment(env_config={"size": 1})
    with pytest.raises(ValueError, match="size must be an integer >= 2, got 1"):
        config.validate()


def test_unknown_env_id_fails_validation():
    config = ReinforceConfig().environment(env="imm_ray/Nope-v0")
    with pytest.raises(ValueError, match="unknown env id 'imm_ray/Nope-v0'; known imm-ray ids"):
        config.validate()


@pytest.mark.parametrize(
    ("section", "kwargs", "message"),
    [
        ("training", {"num_episodes_per_train_batch": 0}, "num_episodes_per_train_batch"),
        ("evaluation", {"evaluation_num_rollouts": 0}, "evaluation_num_rollouts"),
        ("evaluation", {"evaluation_horizon": -3}, "evaluation_horizon"),
    ],
)
def test_reinforce_settings_fail_when_set(section, kwargs, message):
    with pytest.raises(ValueError, match=f"{message} must be an integer >= 1"):
        getattr(ReinforceConfig(), section)(**kwargs)
