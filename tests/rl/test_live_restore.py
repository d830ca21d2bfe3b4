"""A state set into a live algorithm takes effect, on every RLlib path imm-ray builds.

RLlib's learners and env runners take a state's module weights only when its weight
sequence number is newer than theirs: an earlier state of the same algorithm (or, under
population-based training, another member's at the same epoch) left the learner with its
own weights under the restored optimizer, and the env runner sampling with the weights it
had. Every path restores here: weights on the learner and on the runner it samples with.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from imm_ray.rl.imm_ppo import IMMPPOConfig
from imm_ray.rl.reinforce import ReinforceConfig
from imm_ray.rl.seeds import SeedReinforceConfig

PATHS = {
    "single-seed REINFORCE": lambda: ReinforceConfig().debugging(seed=3).imm(lam=0.25),
    # Small batches: the restore is what is tested, not PPO's learning.
    "PPO": lambda: (
        IMMPPOConfig()
        .debugging(seed=1)
        .env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=100, minibatch_size=50, num_epochs=1)
        .imm(lam=1.0)
    ),
    "seed-vectorized": lambda: SeedReinforceConfig().training(seeds=[2, 6]).imm(lam=0.25),
}


def _module(module):
    return (
        module[DEFAULT_MODULE_ID]
        if DEFAULT_MODULE_ID in getattr(module, "keys", list)()
        else module
    )


def _learner_weights(algo) -> dict[str, torch.Tensor]:
    module = _module(algo.learner_group._learner.module)
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _runner_weights(algo) -> dict[str, torch.Tensor]:
    """The runner's module (PPO's is inference-only: the policy without the value head)."""
    module = _module(algo.env_runner.module)
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Equal on every parameter ``b`` has (all of them for two learners)."""
    return bool(b) and all(name in a and torch.equal(a[name], b[name]) for name in b)


@pytest.mark.parametrize("path", PATHS)
def test_an_earlier_state_set_into_a_live_algorithm_restores_its_weights(ray_session, path):
    algo = PATHS[path]().build_algo()
    try:
        algo.train()
        earlier = algo.get_state()
        learner, runner = _learner_weights(algo), _runner_weights(algo)
        assert _same(learner, runner)  # the runner samples with the learner's weights
        for _ in range(2):
            algo.train()
        assert not _same(learner, _learner_weights(algo))
        algo.set_state(earlier)
        assert _same(learner, _learner_weights(algo))
        assert _same(learner, _runner_weights(algo))
        # And training goes on from there: the next sync reaches the runner.
        algo.train()
        assert _same(_learner_weights(algo), _runner_weights(algo))
        assert np.isfinite([p.sum().item() for p in _learner_weights(algo).values()]).all()
    finally:
        algo.stop()
